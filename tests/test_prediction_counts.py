"""core.run.final_prediction: counting a final prediction per label and per shard, naming what is missing.

The pure ``summarize`` is tested case by case; ``gather`` against a real ``LocalStorage`` holding part files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.model.predict import shard_of
from core.run.final_prediction import (
    EMPTY,
    EXTRA,
    MISSING,
    OK,
    SHORT,
    UNREADABLE,
    ShardFile,
    expected_per_shard,
    gather,
    shard_status,
    shards_from_keys,
    summarize,
)
from core.run import layout
from core.storage.backends import LocalStorage


@pytest.mark.parametrize(("file", "expected", "status"), [
    (ShardFile(found=False), 5, MISSING),
    (ShardFile(found=True), 5, EMPTY),
    (ShardFile(found=True), 0, OK),
    (ShardFile(found=True, by_label={"ham": 3}), 5, SHORT),
    (ShardFile(found=True, by_label={"ham": 3, "spam": 2}), 5, OK),
    (ShardFile(found=True, by_label={"ham": 6}), 5, EXTRA),
    (ShardFile(found=True, by_label={"ham": 5}, bad_lines=1), 5, UNREADABLE),
    (ShardFile(found=True, by_label={"ham": 1}), None, OK),
    (ShardFile(found=True), None, EMPTY),
], ids=["missing", "empty", "empty-shard-expected-empty", "short", "ok", "extra", "bad-line", "ok-unknown-size",
        "empty-unknown-size"])
def test_shard_status(file: ShardFile, expected: int | None, status: str) -> None:
    assert shard_status(file, expected) == status


def test_summarize_all_present_is_complete() -> None:
    files = {0: ShardFile(True, {"ham": 4, "spam": 1}), 1: ShardFile(True, {"spam": 3})}
    summary = summarize(files, 2, {0: 5, 1: 3})
    assert summary.complete and summary.problems() == []
    assert summary.predicted == 8 and summary.expected == 8
    assert summary.by_label == {"ham": 4, "spam": 4}
    doc = summary.to_dict()
    assert doc["status"] == "complete" and doc["missing_shards"] == [] and doc["per_shard"][1]["predicted"] == 3


def test_summarize_names_the_missing_shard_and_counts_the_rest() -> None:
    files = {0: ShardFile(True, {"ham": 4, "spam": 1}), 2: ShardFile(True, {"spam": 2})}
    summary = summarize(files, 3, {0: 5, 1: 4, 2: 2})
    assert not summary.complete
    assert summary.predicted == 7 and summary.expected == 11 and summary.by_label == {"ham": 4, "spam": 3}
    (problem,) = summary.problems()
    assert problem.startswith(f"shard 1/3 ({layout.predictions(1, 3)}): no prediction file")
    assert "0 predicted, 4 expected" in problem
    assert summary.to_dict()["missing_shards"] == [1] and summary.to_dict()["status"] == "incomplete"


@pytest.mark.parametrize(("keys", "shards"), [
    ([], None),
    ([layout.predictions(0, 1)], 1),
    ([layout.predictions(i, 3) for i in (0, 2)], 3),
    ([layout.predictions(0, 1), layout.predictions(1, 4)], 4),
    (["classifiers/final_classifier_output/notes.txt"], None),
], ids=["none", "single-file", "parts", "parts-win-over-single", "unrelated"])
def test_shards_from_keys(keys: list[str], shards: int | None) -> None:
    assert shards_from_keys(keys) == shards


def test_shards_from_keys_refuses_two_shardings() -> None:
    with pytest.raises(ConfigError, match="--shards"):
        shards_from_keys([layout.predictions(0, 2), layout.predictions(0, 3)])


def test_expected_per_shard_is_the_split_predict_makes() -> None:
    ids = [f"chunk-{n}" for n in range(200)]
    expected = expected_per_shard(ids, 4)
    assert sum(expected.values()) == 200 and set(expected) == {0, 1, 2, 3}
    assert expected[2] == sum(1 for i in ids if shard_of(i, 4) == 2)
    assert expected_per_shard(iter(ids), 1) == {0: 200}


def test_gather_reads_part_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_text(layout.predictions(0, 3), '{"id": "a", "label": "spam"}\n{"id": "b", "label": "ham"}\n')
    storage.write_text(layout.predictions(1, 3), '{"id": "c", "label": "spam"}\n{"id": "d", "lab')  # cut off
    summary = gather(storage, 3, {0: 2, 1: 2, 2: 1})
    assert [s.status for s in summary.per_shard] == [OK, UNREADABLE, MISSING]
    assert summary.predicted == 3 and summary.by_label == {"spam": 2, "ham": 1}
    assert len(summary.problems()) == 2


def test_in_process_prediction_is_counted_by_the_report_step(tmp_path: Path) -> None:
    """predict_shards 1: the pipeline's own report step records the same summary the report command does."""
    import json

    from core.pipeline import run
    from core.run.state import Step, load_state, save_state
    from handlers import wiring
    from tests.prediction_helpers import finished_run

    done = finished_run(tmp_path, {})
    state = load_state(done.output)
    assert state is not None
    state.step, state.status = Step.REPORT, "running"  # PREDICT has just written predictions.jsonl
    save_state(done.output, state)
    done.write_shard(0, 1)
    # The run only reports (no model is called), but run checks credentials first: the oracle needs none.
    outcome = run(wiring.build_context(wiring.load_job(str(done.config), {}), llm_calls=False))
    counted = outcome.state.counters.predictions
    assert outcome.state.step is Step.DONE and counted["status"] == "complete" and counted["shards"] == 1
    assert counted["by_label"] == done.expected_by_label() and counted["predicted"] == len(done.remaining)
    assert json.loads(done.output.read_text("metrics.json"))["predictions"] == counted
    assert "| predicted label | chunks | share |" in done.output.read_text("report.md")
