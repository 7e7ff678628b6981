"""core.model.predict: streaming prediction keeps input order and reads lazily; shards partition the chunks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from core.config import load_settings
from core.errors import ConfigError
from core.model.classifier import Classifier, load_classifier
from core.model.predict import evaluate_classifier, predict_stream, select_shard, shard_of
from core.schema import Chunk
from tests.fixtures.models import CLASSES, synthetic_task


@pytest.fixture(scope="module")
def classifier(tiny_classifier_dir: Path) -> Classifier:
    return load_classifier(tiny_classifier_dir, threads=1)


def make_chunks(n: int, seed: int = 5) -> list[Chunk]:
    texts, _ = synthetic_task(n, seed=seed)
    # vary lengths a lot so that sorting inside a window really reorders
    texts = [t + " please" * (i * 7 % 23) for i, t in enumerate(texts)]
    return [Chunk(id=f"c{i:04d}", text=t, source=f"doc{i % 3}.txt", position=i) for i, t in enumerate(texts)]


def test_predict_stream_yields_every_chunk_in_input_order(classifier: Classifier) -> None:
    chunks = make_chunks(23)
    records = list(predict_stream(classifier, chunks, batch_size=3, window=5))

    assert [r["id"] for r in records] == [c.id for c in chunks]
    assert [r["source"] for r in records] == [c.source for c in chunks]
    assert [r["label"] for r in records] == classifier.predict([c.text for c in chunks], batch_size=64)
    for r in records:
        assert list(r["probs"]) == list(CLASSES)
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == max(r["probs"], key=r["probs"].get)


def test_a_stop_ends_the_stream_after_the_last_whole_window(classifier: Classifier) -> None:
    chunks = make_chunks(23)
    asked = [0]

    def should_stop() -> bool:  # asked before every batch: 2 batches a window of 5 at batch size 3
        asked[0] += 1
        return asked[0] > 5  # mid-way through the third window

    records = list(predict_stream(classifier, chunks, batch_size=3, window=5, should_stop=should_stop))
    assert [r["id"] for r in records] == [c.id for c in chunks[:10]]
    rest = list(predict_stream(classifier, chunks[10:], batch_size=3, window=5))
    assert records + rest == list(predict_stream(classifier, chunks, batch_size=3, window=5))


def test_predict_stream_reads_one_window_at_a_time(classifier: Classifier) -> None:
    pulled = 0

    def source() -> Iterator[Chunk]:
        nonlocal pulled
        for chunk in make_chunks(50):
            pulled += 1
            yield chunk

    stream = predict_stream(classifier, source(), batch_size=4, window=8)
    assert pulled == 0  # nothing happens until asked
    next(stream)
    assert pulled == 8
    for _ in range(7):
        next(stream)
    assert pulled == 8
    next(stream)
    assert pulled == 16
    assert len(list(stream)) == 50 - 9


def test_predict_stream_of_nothing_yields_nothing(classifier: Classifier) -> None:
    assert list(predict_stream(classifier, [])) == []


def test_batching_and_length_sorting_do_not_change_probabilities(classifier: Classifier) -> None:
    texts = [c.text for c in make_chunks(17)]
    labels_one, one_by_one = classifier.predict_proba(texts, batch_size=1)
    labels_all, all_at_once = classifier.predict_proba(texts, batch_size=64)
    assert labels_one == labels_all
    np.testing.assert_allclose(one_by_one, all_at_once, atol=1e-5)


def test_predict_proba_of_no_texts(classifier: Classifier) -> None:
    labels, probs = classifier.predict_proba([])
    assert labels == [] and probs.shape == (0, len(CLASSES))


def test_evaluate_classifier_against_reference_labels(classifier: Classifier) -> None:
    texts, labels = synthetic_task(60, seed=9)
    metrics = evaluate_classifier(classifier, texts, labels)
    assert metrics.labels == list(CLASSES)
    assert metrics.n == 60
    assert metrics.accuracy > 0.9


def test_an_empty_prediction_batch_is_refused_at_load() -> None:
    base = {"classification": {"classes": ["ham", "spam"], "desc": "Is this SMS spam?"}}
    with pytest.raises(ConfigError) as info:
        load_settings(yaml.safe_dump({**base, "training": {"predict_batch_size": 0}}))
    assert info.value.field == "training.predict_batch_size"


def test_predict_stream_rejects_an_empty_window(classifier: Classifier) -> None:
    # no setting feeds the window, so this is a caller's mistake, not a config error; it must not predict nothing
    with pytest.raises(ValueError, match="window"):
        next(predict_stream(classifier, make_chunks(2), batch_size=4, window=0))


# --- sharding ------------------------------------------------------------------------------------------------


def test_shard_of_is_a_fixed_function_of_the_id() -> None:
    # Pinned values: a change would send chunks to other shards than those of a run already under way.
    assert [shard_of(f"chunk-{i}", 4) for i in range(8)] == [0, 2, 1, 0, 0, 1, 2, 2]
    assert shard_of("abc", 1) == 0
    assert shard_of("abc", 1000) == int.from_bytes(bytes.fromhex("ba7816bf8f01cfea"), "big") % 1000


@given(ids=st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=80), count=st.integers(1, 9))
def test_shards_partition_the_chunks(ids: list[str], count: int) -> None:
    chunks = [Chunk(id=i, text="t", source="s", position=n) for n, i in enumerate(ids)]
    shards = [list(select_shard(chunks, index, count)) for index in range(count)]
    seen = [c.id for shard in shards for c in shard]
    assert sorted(seen) == sorted(ids)  # every chunk exactly once
    for shard in shards:  # each shard keeps the input order
        positions = [c.position for c in shard]
        assert positions == sorted(positions)


def test_shards_are_roughly_balanced() -> None:
    chunks = make_chunks(600)
    sizes = [len(list(select_shard(chunks, i, 3))) for i in range(3)]
    assert sum(sizes) == 600
    assert min(sizes) > 150


@pytest.mark.parametrize(("index", "count"), [(0, 0), (3, 3), (-1, 2)], ids=["no-shards", "index-too-big", "negative"])
def test_bad_shard_spec_is_a_config_error(index: int, count: int) -> None:
    with pytest.raises(ConfigError):
        list(select_shard(make_chunks(2), index, count))
