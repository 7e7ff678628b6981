"""Base-model sentence embeddings (core.model.embeddings) on the tiny random-init BERT, and a stop request
that comes while a run embeds its candidates for the first training set (in-process, against the oracle).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import TrainingError
from core.model.embeddings import embed_texts, mean_pool
from core.model.encoding import Interrupted
from core.run import layout
from tests.fixtures.llm_server import OracleHandle, shared_data_dir
from tests.pipeline_helpers import job_config, sample_rows, write_yaml


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask)[0].tolist() == pytest.approx([1.0, 0.0])


def test_embeddings_are_unit_vectors_in_input_order(tiny_bert_dir: Path) -> None:
    texts = ["a much longer text about a meeting tomorrow at the office", "hi", "free prize, call now"]
    batched = embed_texts(str(tiny_bert_dir), texts, max_length=32, truncation_type="head", batch_size=2)
    assert batched.shape[0] == 3 and batched.dtype == np.float32
    assert np.linalg.norm(batched, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    one_by_one = np.stack([embed_texts(str(tiny_bert_dir), [t], max_length=32, truncation_type="head")[0]
                           for t in texts])
    # shortest-first batching with padding must not change any text's vector
    assert np.abs(batched - one_by_one).max() < 1e-4
    assert embed_texts(str(tiny_bert_dir), [], max_length=32, truncation_type="head").shape[0] == 0


def test_missing_model_is_a_training_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="cannot load the base model"):
        embed_texts(str(tmp_path / "nope"), ["x"], max_length=16, truncation_type="head")


def test_a_stop_request_ends_embedding_before_the_next_batch(tiny_bert_dir: Path) -> None:
    texts = [f"message number {i} " * (1 + i % 5) for i in range(10)]
    embedded: list[int] = []
    with pytest.raises(Interrupted):
        embed_texts(str(tiny_bert_dir), texts, max_length=32, truncation_type="head", batch_size=3,
                    should_stop=lambda: len(embedded) >= 2, progress=embedded.append)
    assert embedded == [3, 3], "asked before every batch: two batches ran, the third never began"
    everything: list[int] = []
    embed_texts(str(tiny_bert_dir), texts, max_length=32, truncation_type="head", batch_size=3,
                should_stop=lambda: False, progress=everything.append)
    assert everything == [3, 3, 3, 1]


@pytest.mark.slow
def test_a_stop_while_embedding_stores_no_choice_and_the_resume_chooses_the_same(
        tmp_path: Path, tiny_bert_dir: Path, oracle_server: Callable[..., OracleHandle]) -> None:
    """A stop mid-embedding leaves by the pipeline's stop path at ``label_train`` (state saved, nothing chosen or
    labeled for iteration 1), and the resumed run's choice and outputs equal an uninterrupted run's."""
    from core.pipeline import run
    from core.storage.backends import open_storage
    from handlers import wiring

    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0, latency_ms=0)
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", 220)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    environ = {"BOOTSTRAPPER_API__LARGE_BASE_URL": oracle.base_url, "BOOTSTRAPPER_API__SMALL_BASE_URL": oracle.base_url}

    def job(name: str) -> wiring.Job:
        cfg = job_config(classes=["ham", "spam"], input_=str(tmp_path / "in"), output=str(tmp_path / name),
                         model_path=str(tiny_bert_dir), training__max_iters=1, training__selection="balanced",
                         training__predict_batch_size=8, system__label_processes=1)
        return wiring.load_job(str(write_yaml(tmp_path / f"{name}.yaml", cfg)), environ)

    assert run(wiring.build_context(job("ref"))).state.step.value == "done"

    stop, embedded = [False], []
    ctx = wiring.build_context(job("stopped"), should_stop=lambda: stop[0])
    plain_progress = ctx.progress

    def progress(stage: str, total: int) -> Callable[[int], None]:
        if not stage.startswith("embedding"):
            return plain_progress(stage, total)

        def tick(n: int) -> None:  # the stop request comes once the first batch is embedded
            embedded.append(n)
            stop[0] = True
        return tick

    ctx.progress = progress
    outcome = run(ctx)
    out = tmp_path / "stopped"
    assert outcome.stopped_early and outcome.state.step.value == "label_train" and outcome.state.iteration == 1
    assert embedded == [8], "the stop ended the embedding at the next batch, out of 180 candidates"
    saved = json.loads((out / layout.STATE).read_text())
    assert saved["step"] == "label_train" and saved["status"] == "running"
    assert not (out / layout.iteration_choice(1)).exists(), "no choice stored from a partial embedding"
    assert not list(out.glob("labels/train/*")) and not (out / layout.dataset(1)).exists()

    resumed = run(wiring.build_context(job("stopped")))
    assert resumed.state.step.value == "done" and not resumed.stopped_early
    ref, got = open_storage(str(tmp_path / "ref")), open_storage(str(out))
    for key in (layout.iteration_choice(1), layout.dataset(1), layout.predictions(0, 1)):
        assert got.read_text(key) == ref.read_text(key), key
    assert json.loads(got.read_text(layout.iteration_choice(1)))["strategy"] == "representative"
