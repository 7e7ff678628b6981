"""core.run.data: what a step is handed, read once; and a whole run in-process, counting each step's reads.

The run uses the tiny random-init BERT and the oracle LLM server (a stand-in answering from human labels).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.run import layout
from core.run.data import RunData, gold_label
from core.schema import Chunk
from core.storage.backends import LocalStorage, Storage
from core.storage.jsonl_log import write_jsonl
from tests.fixtures.llm_server import OracleHandle, shared_data_dir
from tests.pipeline_helpers import job_config, sample_rows, write_yaml


class CountingStorage:
    """A real storage that logs each read of a key and each state it is given, in order."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def open_read(self, key: str) -> Any:
        self.events.append(("read", key))
        return self._inner.open_read(key)

    def read_text(self, key: str) -> str:
        self.events.append(("read", key))
        return self._inner.read_text(key)

    def read_bytes(self, key: str) -> bytes:
        self.events.append(("read", key))
        return self._inner.read_bytes(key)

    def write_text(self, key: str, text: str) -> None:
        if key == layout.STATE:
            self.events.append(("state", json.loads(text)["step"]))
        self._inner.write_text(key, text)


def reads_per_step(events: list[tuple[str, str]], key: str) -> dict[str, list[int]]:
    """How often each run of each step read ``key``: {step: [reads in its first run, in its second, ...]}."""
    out: dict[str, list[int]] = {}
    step = None
    for kind, value in events:
        if kind == "state":
            step = value
            out.setdefault(step, []).append(0)
        elif step is not None and value == key:
            out[step][-1] += 1
    return out


def _chunks(n: int) -> list[Chunk]:
    return [Chunk(id=f"c{i}", text=f"text {i}", source="a.jsonl", position=i,
                  metadata={"label": "spam" if i % 3 == 0 else "ham"}) for i in range(n)]


@pytest.fixture
def stored(tmp_path: Path) -> CountingStorage:
    storage = LocalStorage(tmp_path)
    write_jsonl(storage, layout.CHUNKS, (c.to_dict() for c in _chunks(10)))
    storage.write_text(layout.SPLITS, json.dumps({"test": ["c0", "c1"], "train": ["c2", "c3"],
                                                  "pool": [f"c{i}" for i in range(4, 10)]}))
    storage.write_text(layout.iteration_choice(1), json.dumps({"ids": ["c2", "c3"]}))
    storage.write_text(layout.iteration_choice(2), json.dumps({"ids": ["c7"]}))
    return CountingStorage(storage)


def test_chunks_and_splits_are_read_once(stored: CountingStorage) -> None:
    data = RunData(stored)  # type: ignore[arg-type]
    assert data.texts(["c3", "c1"]) == ["text 3", "text 1"]
    assert data.texts(data.splits["pool"][:2]) == ["text 4", "text 5"]
    assert data.subset(["c9"])["c9"].text == "text 9"
    assert stored.events.count(("read", layout.CHUNKS)) == 1
    assert stored.events.count(("read", layout.SPLITS)) == 1


def test_subset_reads_only_what_is_asked_when_nothing_is_loaded(stored: CountingStorage) -> None:
    data = RunData(stored)  # type: ignore[arg-type]
    assert sorted(data.subset(["c1", "c8", "missing"])) == ["c1", "c8"]
    assert "chunks" not in data.__dict__  # not every chunk was kept in memory


def test_remaining_ids_come_from_the_ids_alone(stored: CountingStorage) -> None:
    data = RunData(stored)  # type: ignore[arg-type]
    assert data.remaining_ids() == ["c4", "c5", "c6", "c8", "c9"]
    assert ("read", layout.CHUNKS) not in stored.events
    assert [c.id for c in data.stream(exclude=data.used_ids())] == data.remaining_ids()


def test_picks(stored: CountingStorage) -> None:
    data = RunData(stored)  # type: ignore[arg-type]
    assert data.pick(3) is None
    assert data.picked_until(3) == ["c2", "c3", "c7"]
    data.remember_pick(3, ["c9"])
    assert data.picked_until(3) == ["c2", "c3", "c7", "c9"]


def test_gold_label_only_names_a_class() -> None:
    chunk = _chunks(1)[0]
    assert gold_label(chunk, ["ham", "spam"]) == "spam"
    assert gold_label(chunk, ["a", "b"]) is None


@pytest.mark.slow
def test_each_step_reads_the_chunks_at_most_once(tmp_path: Path, tiny_bert_dir: Path,
                                                 oracle_server: Callable[..., OracleHandle]) -> None:
    """A whole run in-process: LABEL_TRAIN (and every step but PREDICT) parses chunks.jsonl at most once."""
    from core.pipeline import run
    from handlers import wiring

    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0, latency_ms=0)
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", 220)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = job_config(classes=["ham", "spam"], input_=str(tmp_path / "in"), output=str(tmp_path / "out"),
                     model_path=str(tiny_bert_dir), training__max_iters=2, training__selection="uncertainty")
    config = write_yaml(tmp_path / "config.yaml", cfg)
    environ = {"BOOTSTRAPPER_API__LARGE_BASE_URL": oracle.base_url, "BOOTSTRAPPER_API__SMALL_BASE_URL": oracle.base_url}
    ctx = wiring.build_context(wiring.load_job(str(config), environ))
    counting = CountingStorage(ctx.output)
    ctx.output = counting
    outcome = run(ctx)
    assert outcome.state.step.value == "done" and len(outcome.state.iterations) == 2
    per_step = reads_per_step(counting.events, layout.CHUNKS)
    assert per_step["label_train"] == [1, 1], per_step  # one read per LABEL_TRAIN step, both iterations
    # PREDICT reads the test chunks for the precision check, then streams the rest: two passes, neither held.
    assert per_step.pop("predict") == [2], str(per_step)
    assert all(n <= 1 for runs in per_step.values() for n in runs), str(per_step)
    assert all(n <= 1 for runs in reads_per_step(counting.events, layout.SPLITS).values() for n in runs)
