"""Tests for core.report: report.md, metrics.json and the PNG plots rendered from a hand-built run (report.html:
tests/test_report_html.py, on the same run).

The run has two evaluated iterations (the second is best), gold labels on both, a ledger with two models
and three stages, and an ingestion report with skipped files and skipped .jsonl lines. Everything is written
to a real ``LocalStorage`` and read back.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from core.llm.ledger import COST_UNKNOWN_NOTE
from core.llm.ledger import totals as ledger_totals
from core.report.render import (
    CONFUSION_KEY,
    LEARNING_CURVE_KEY,
    METRICS_KEY,
    REPORT_HTML_KEY,
    REPORT_KEY,
    confusion_matrix_png,
    format_status,
    label_failures,
    learning_curve_png,
    write_report,
)
from core.run.state import IterationRecord, State, Step
from core.schema import CallRecord, ClassScores, Metrics
from core.storage.backends import LocalStorage
from handlers import wiring

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["ham", "spam"]


def metrics(correct: int, n: int, ci: tuple[float, float], confusion: list[list[int]], f1: float) -> Metrics:
    return Metrics(
        n=n, accuracy=correct / n, accuracy_ci95=ci, macro_f1=f1,
        per_class={"ham": ClassScores(0.9, 0.8, 0.847, 100), "spam": ClassScores(0.81, 0.9, 0.853, 100)},
        labels=CLASSES, confusion=confusion,
    )


M1 = metrics(150, 200, (0.6862, 0.8040), [[70, 30], [20, 80]], 0.749)
M2 = metrics(171, 200, (0.8002, 0.8976), [[83, 17], [12, 88]], 0.854)
GOLD1 = metrics(140, 200, (0.6330, 0.7596), [[65, 35], [25, 75]], 0.699)
GOLD2 = metrics(166, 200, (0.7714, 0.8745), [[80, 20], [14, 86]], 0.829)


def make_state(*, gold: bool = True, best: int | None = 2) -> State:
    return State(
        config_fingerprint="fp",
        step=Step.DONE,
        iteration=2,
        iterations=[
            IterationRecord(n=1, train_ids=200, selection="representative", train_examples=196, failed_labels=4, train_seconds=42.5,
                            examples_per_s=18.4, metrics=M1.to_dict(),
                            gold_metrics=GOLD1.to_dict() if gold else None),
            IterationRecord(n=2, train_ids=200, selection="uncertainty", train_examples=393, failed_labels=3, train_seconds=95.0,
                            examples_per_s=16.5, metrics=M2.to_dict(),
                            gold_metrics=GOLD2.to_dict() if gold else None),
        ],
        best_iteration=best,
        stop_reason="stopped at max_iters=2 below required_accuracy (best accuracy 0.855)",
        status="done",
        step_seconds={"ingest": 1.2, "label_test": 30.0, "train": 137.5},
    )


def settings_summary(large: str = "openai/oracle-large", small: str = "openai/oracle-small",
                     output: str = "/data/out") -> dict[str, Any]:
    return {
        "classification": {"classes": CLASSES, "desc": "spam or not"},
        "system": {"required_accuracy": 0.9},
        "api": {"large_model": large, "small_model": small, "large_api_key": None},
        "path": {"input": "/data/in", "output": output},
    }


def ledger(large: str = "openai/oracle-large", small: str = "openai/oracle-small") -> list[CallRecord]:
    return [
        CallRecord(ts=1.0, stage="rules", model=large, cache_key="r", outcome="ok", tokens_in=500,
                   tokens_out=300, cost_usd=0.01),
        *[CallRecord(ts=2.0, stage="test_labels", model=large, cache_key=f"t{i}", outcome="ok", tokens_in=100,
                     tokens_out=20, cost_usd=0.001) for i in range(3)],
        CallRecord(ts=3.0, stage="test_labels", model=large, cache_key="t0", outcome="cache_hit"),
        CallRecord(ts=4.0, stage="train_labels", model=small, cache_key="s0", outcome="ok", tokens_in=90,
                   tokens_out=15, cost_usd=0.0002),
        CallRecord(ts=5.0, stage="train_labels", model=small, cache_key="s1", outcome="unparseable",
                   tokens_in=90, tokens_out=40, cost_usd=0.0002),
    ]


INGEST = {
    "files_read": 3,
    "files_skipped": 2,
    "chunks_made": 640,
    "duplicates_dropped": 7,
    "per_source": {"a.txt": 400, "b.jsonl": 240},
    "skipped": [
        {"source": "scan.pdf", "reason": "no extractable text (scanned PDF?)", "line": None},
        {"source": "photo.png", "reason": "unsupported file type .png", "line": None},
        {"source": "b.jsonl", "reason": "not valid JSON", "line": 17},
    ],
}
LABELS = {
    "test_labels_ok": 195,
    "test_labels_failed": 5,
    "failed_examples": [
        {"chunk_id": "c-17", "label": None, "status": "failed", "model": "openai/oracle-large",
         "raw": "I cannot decide between these", "error": "reply names no class (after one retry)"},
    ],
}


def run_report(tmp_path: Path, state: State | None = None, plots: bool = False,
               **overrides: Any) -> tuple[LocalStorage, list[str]]:
    storage = LocalStorage(tmp_path)
    kwargs: dict[str, Any] = dict(settings_summary=settings_summary(), ledger_records=ledger(),
                                  ingest_report=INGEST, label_summary=LABELS)
    kwargs.update(overrides)
    keys = write_report(storage, state or make_state(), plots=plots, **kwargs)
    return storage, keys


def assert_png(data: bytes, min_bytes: int = 8_000) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    pixels = matplotlib.image.imread(io.BytesIO(data), format="png")  # decodes: not just a valid header
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0.01  # something was drawn
    return pixels.shape[0], pixels.shape[1]


def test_writes_every_output(tmp_path: Path) -> None:
    storage, keys = run_report(tmp_path, plots=True)
    assert keys == [METRICS_KEY, LEARNING_CURVE_KEY, CONFUSION_KEY, REPORT_KEY, REPORT_HTML_KEY]
    assert all(storage.exists(k) for k in keys)
    md = storage.read_text(REPORT_KEY)
    assert f"![{LEARNING_CURVE_KEY}]({LEARNING_CURVE_KEY})" in md


def test_iteration_table_rows(tmp_path: Path) -> None:
    md = run_report(tmp_path)[0].read_text(REPORT_KEY)
    assert "| iteration | new chunks (chosen by) | training examples | accuracy (95% CI) | macro-F1 | test n " \
           "| gold accuracy (95% CI) | train time |" in md
    assert "| 1 | 200 (representative) | 196 | 75.0% (68.6%–80.4%) | 0.749 | 200 | 70.0% (63.3%–76.0%), n=200 " \
           "| 42.5 s |" in md
    assert "| 2 (best) | 200 (uncertainty) | 393 | 85.5% (80.0%–89.8%) | 0.854 | 200 | 83.0% (77.1%–87.5%), " \
           "n=200 | 1.6 min |" in md


def test_no_gold_column_without_gold(tmp_path: Path) -> None:
    md = run_report(tmp_path, make_state(gold=False))[0].read_text(REPORT_KEY)
    assert "gold accuracy" not in md
    assert "| 1 | 200 (representative) | 196 | 75.0% (68.6%–80.4%) | 0.749 | 200 | 42.5 s |" in md


@pytest.mark.parametrize("best", [2, None], ids=["recorded-best", "best-derived-from-metrics"])
def test_best_classifier_path_and_loading(tmp_path: Path, best: int | None) -> None:
    md = run_report(tmp_path, make_state(best=best))[0].read_text(REPORT_KEY)
    assert "Iteration 2: `classifiers/classifier_2/`" in md
    assert 'pipeline("text-classification", model="/data/out/classifiers/classifier_2", top_k=None)' in md
    assert "classifier_1/" not in md


def test_s3_output_explains_download(tmp_path: Path) -> None:
    notes = wiring.report_notes(("openai/gpt-4o", "openai/gpt-4o-mini"), "s3://bkt/runs/a")
    storage, _ = run_report(tmp_path, settings_summary=settings_summary(output="s3://bkt/runs/a"), notes=notes)
    md = storage.read_text(REPORT_KEY)
    assert "aws s3 cp --recursive s3://bkt/runs/a/classifiers/classifier_2/ ./classifier_2/" in md
    assert 'model="./classifier_2"' in md


def test_best_classifier_details(tmp_path: Path) -> None:
    md = run_report(tmp_path)[0].read_text(REPORT_KEY)
    assert "| ham | 0.900 | 0.800 | 0.847 | 100 |" in md
    assert "| label \\ predicted | ham | spam |" in md
    assert "| **ham** | 83 | 17 |" in md and "| **spam** | 12 | 88 |" in md


def test_stop_reason_and_status(tmp_path: Path) -> None:
    md = run_report(tmp_path)[0].read_text(REPORT_KEY)
    assert "- **Status:** finished, after 2 training iteration(s)." in md
    assert "stopped at max_iters=2 below required_accuracy" in md
    assert "- **Required accuracy:** 90.0%." in md


def test_skipped_inputs_listed(tmp_path: Path) -> None:
    md = run_report(tmp_path)[0].read_text(REPORT_KEY)
    assert "Skipped files: 2." in md
    assert "- `scan.pdf`: no extractable text (scanned PDF?)" in md
    assert "- `photo.png`: unsupported file type .png" in md
    assert "- `b.jsonl` line 17: not valid JSON" in md
    assert "- chunks made: 640" in md and "- duplicates dropped: 7" in md
    assert "per source" not in md  # a dict, not a count
    assert "not in UTF-8" not in md


def test_guessed_encodings_are_listed(tmp_path: Path) -> None:
    ingest = {**INGEST, "decoded_as": {"ru.txt": "cp1251 (detected)", "notes.txt": "utf-16-le (no BOM)"}}
    md = run_report(tmp_path, ingest_report=ingest)[0].read_text(REPORT_KEY)
    assert "Files not in UTF-8: 2." in md and "- `ru.txt`: read as cp1251 (detected)" in md


def test_many_skipped_lines_are_capped_but_counted(tmp_path: Path) -> None:
    ingest = dict(INGEST, skipped=[{"source": "big.jsonl", "reason": "no text field", "line": i}
                                   for i in range(1, 131)])
    md = run_report(tmp_path, ingest_report=ingest)[0].read_text(REPORT_KEY)
    assert "Skipped .jsonl lines: 130." in md
    assert "line 50: no text field" in md and "line 51: no text field" not in md
    assert "and 80 more" in md


@pytest.mark.parametrize(
    ("large", "small", "disclaimer"),
    [
        ("openai/oracle-large", "openai/oracle-small", True),
        ("openai/gpt-4o", "openai/oracle-small", True),
        ("openai/gpt-4o", "openai/gpt-4o-mini", False),
    ],
    ids=["both-oracle", "one-oracle", "real-models"],
)
def test_oracle_disclaimer(tmp_path: Path, large: str, small: str, disclaimer: bool) -> None:
    notes = wiring.report_notes((large, small), "/data/out")
    storage, _ = run_report(tmp_path, settings_summary=settings_summary(large, small),
                            ledger_records=ledger(large, small), notes=notes)
    md = storage.read_text(REPORT_KEY)
    assert ("stand-in server that answers from the human labels" in md) is disclaimer
    assert json.loads(storage.read_text(METRICS_KEY))["labels_from_oracle"] is disclaimer


def test_spend_tables(tmp_path: Path) -> None:
    md = run_report(tmp_path)[0].read_text(REPORT_KEY)
    assert "| openai/oracle-large | 5 | 1 | 0 | 800 | 360 | $0.0130 |" in md
    assert "| openai/oracle-small | 2 | 0 | 1 | 180 | 55 | $0.0004 |" in md
    assert "| test_labels | 4 | 1 | 0 | 300 | 60 | $0.0030 |" in md
    assert "Total: 7 calls (1 served from the cache at no cost), $0.0134." in md
    assert "unknown" not in md



def test_prompt_cache_saving_cut_offs_and_refusals_are_reported(tmp_path: Path) -> None:
    """The spend section says what the prompt cache saved, priced at the model's cached rates from litellm's
    cost map, and counts replies cut off by the length limit and calls refused for an optional parameter apart."""
    from core.llm.ledger import cache_saving

    model = "anthropic/claude-haiku-4-5"
    records = [
        CallRecord(ts=1.0, stage="test_labels", model=model, cache_key="a", outcome="ok", tokens_in=1500,
                   tokens_out=20, cost_usd=0.001, cache_write_tokens=1200),
        CallRecord(ts=2.0, stage="test_labels", model=model, cache_key="b", outcome="ok", tokens_in=1500,
                   tokens_out=20, cost_usd=0.0003, cached_tokens=1200, finish_reason="length"),
        CallRecord(ts=3.0, stage="test_labels", model=model, cache_key="b", outcome="param_refused"),
    ]
    md = run_report(tmp_path, ledger_records=records)[0].read_text(REPORT_KEY)
    saved = cache_saving(model, 1200, 1200)
    assert saved > 0, "haiku's cached read is cheaper than its write premium costs"
    assert f"| {model} | 3000 | 1200 (40%) | 1200 | ${saved:.4f} |" in md
    assert f"The prompt cache saved ${saved:.4f} against the full input price." in md
    assert "1 replies were cut off by the length limit" in md
    assert "1 calls were refused for an optional parameter" in md
    padded = run_report(tmp_path / "padded", ledger_records=records,
                        padding_cost={model: 0.0001})[0].read_text(REPORT_KEY)
    assert f"| {model} | 3000 | 1200 (40%) | 1200 | ${saved - 0.0001:.4f} |" in padded
    assert f"saved ${saved - 0.0001:.4f} against the full input price, net of $0.0001 the padding" in padded
    plain = run_report(tmp_path / "plain")[0].read_text(REPORT_KEY)
    assert "Prompt caching" not in plain and "cut off" not in plain and "refused" not in plain

def test_unknown_cost_is_flagged(tmp_path: Path) -> None:
    records = [*ledger("openai/gpt-4o", "custom/local-llm"),
               CallRecord(ts=6.0, stage="train_labels", model="custom/local-llm", cache_key="s2", outcome="ok",
                          tokens_in=10, tokens_out=2, cost_note=COST_UNKNOWN_NOTE)]
    md = run_report(tmp_path, ledger_records=records)[0].read_text(REPORT_KEY)
    assert "| custom/local-llm | 3 | 0 | 1 | 190 | 57 | $0.0004 + unknown* |" in md
    assert "| openai/gpt-4o | 5 | 1 | 0 | 800 | 360 | $0.0130 |" in md
    assert "does not price custom/local-llm" in md


def test_failed_labels(tmp_path: Path) -> None:
    md = run_report(tmp_path)[0].read_text(REPORT_KEY)
    assert "Failed labels: 12." in md  # 5 test + 4 + 3 training
    assert "- training labels failed, per iteration: 1: 4, 2: 3" in md
    assert "`c-17`" in md and "I cannot decide between these" in md


def test_step_timings(tmp_path: Path) -> None:
    md = run_report(tmp_path)[0].read_text(REPORT_KEY)
    assert "| label_test | 30.0 s |" in md
    assert "| **total** | 2.8 min |" in md


def test_metrics_json_round_trip(tmp_path: Path) -> None:
    doc = json.loads(run_report(tmp_path)[0].read_text(METRICS_KEY))
    assert doc["status"] == "done" and doc["step"] == "done"
    assert doc["best_iteration"] == 2 and doc["best_classifier"] == "classifiers/classifier_2/"
    assert doc["required_accuracy"] == 0.9
    assert doc["stop_reason"].startswith("stopped at max_iters=2")
    its = doc["iterations"]
    assert [it["n"] for it in its] == [1, 2]
    assert [it["train_examples"] for it in its] == [196, 393]
    assert Metrics.from_dict(its[1]["metrics"]) == M2
    assert Metrics.from_dict(its[0]["gold_metrics"]) == GOLD1
    assert doc["llm"] == json.loads(json.dumps(ledger_totals(ledger())))
    assert doc["llm"]["by_stage"]["train_labels"]["failures"] == 1
    assert doc["ingestion"]["files_skipped"] == 2 and len(doc["ingestion"]["skipped"]) == 3
    assert doc["label_failures"] == {"by_count": {"test_labels_failed": 5},
                                     "training_by_iteration": {"1": 4, "2": 3}, "total": 12}
    assert doc["step_seconds"] == {"ingest": 1.2, "label_test": 30.0, "train": 137.5}


def test_pngs_are_real_images(tmp_path: Path) -> None:
    storage, _ = run_report(tmp_path, plots=True)
    assert_png(storage.read_bytes(LEARNING_CURVE_KEY))
    assert_png(storage.read_bytes(CONFUSION_KEY))


def test_confusion_png_grows_with_classes() -> None:
    names = [f"class {i}" for i in range(12)]
    many = Metrics(n=144, accuracy=0.5, accuracy_ci95=(0.4, 0.6), macro_f1=0.5, per_class={}, labels=names,
                   confusion=[[12 if i == j else 0 for j in range(12)] for i in range(12)])
    small = assert_png(confusion_matrix_png(M2))
    large = assert_png(confusion_matrix_png(many))
    assert large[0] > small[0] and large[1] > small[1]


def test_gold_curve_changes_the_plot() -> None:
    with_gold = learning_curve_png(make_state(gold=True), 0.9)
    without = learning_curve_png(make_state(gold=False), 0.9)
    assert with_gold is not None and without is not None and with_gold != without


def test_no_plots_when_disabled(tmp_path: Path) -> None:
    storage, keys = run_report(tmp_path, plots=False)  # the helper's default, stated because it is the point
    assert keys == [METRICS_KEY, REPORT_KEY, REPORT_HTML_KEY]
    assert not storage.exists(LEARNING_CURVE_KEY)
    assert "## Plots" not in storage.read_text(REPORT_KEY)


def test_report_before_any_evaluation(tmp_path: Path) -> None:
    state = State(config_fingerprint="fp", step=Step.LABEL_TEST)
    storage, keys = run_report(tmp_path, state, plots=True, ledger_records=[], label_summary={})
    assert keys == [METRICS_KEY, REPORT_KEY, REPORT_HTML_KEY]  # nothing to plot yet
    md = storage.read_text(REPORT_KEY)
    assert "in progress (step `label_test`)" in md
    assert "No classifier has been evaluated yet." in md
    assert "No LLM calls recorded." in md
    assert json.loads(storage.read_text(METRICS_KEY))["best_iteration"] is None


def test_format_status() -> None:
    text = format_status(make_state(), ledger_totals(ledger()))
    lines = text.splitlines()
    assert lines[0] == "status: done   step: done   iteration: 2"
    assert lines[1] == ("  iteration 1: accuracy 75.0% (68.6%–80.4%), macro-F1 0.749, 196 training examples, "
                        "gold 70.0%")
    assert lines[2].startswith("  iteration 2: accuracy 85.5% (80.0%–89.8%)")
    assert "best classifier: classifiers/classifier_2/" in lines
    assert "LLM spend so far: $0.0134 over 7 calls (1 cache hits, 1 failures)" in lines
    assert lines[-1].startswith("stopped because: stopped at max_iters=2")


def test_format_status_mid_run() -> None:
    state = State(config_fingerprint="fp", step=Step.TRAIN, iteration=1,
                  iterations=[IterationRecord(n=1, train_examples=180)])
    text = format_status(state, {})
    assert "status: running   step: train   iteration: 1" in text
    assert "iteration 1: not evaluated yet (180 training examples)" in text
    assert "best classifier: none yet" in text
    assert "LLM spend so far: no calls" in text
    assert "stopped because" not in text


def test_label_failures_without_iterations() -> None:
    state = State(config_fingerprint="fp")
    assert label_failures(state, {"test_labels_ok": 3, "test_labels_failed": 2}) == {
        "by_count": {"test_labels_failed": 2}, "training_by_iteration": {}, "total": 2}


# --- the final prediction's count ----------------------------------------------------------------


def _predictions(complete: bool) -> dict[str, Any]:
    from core.run.final_prediction import ShardFile, summarize

    files = {0: ShardFile(True, {"ham": 30, "spam": 10}), 1: ShardFile(True, {"ham": 25, "spam": 5})}
    if complete:
        files[2] = ShardFile(True, {"ham": 20, "spam": 10})
    return summarize(files, 3, {0: 40, 1: 30, 2: 30}).to_dict()


def _with_predictions(doc: dict[str, Any] | None) -> State:
    state = make_state()
    if doc is not None:
        state.counters.predictions = doc
    return state


def test_report_counts_the_final_prediction_per_label_and_shard(tmp_path: Path) -> None:
    storage, _ = run_report(tmp_path, _with_predictions(_predictions(complete=True)))
    md = storage.read_text(REPORT_KEY)
    section = md.split("## Final prediction", 1)[1].split("\n## ", 1)[0]
    assert "100 of the 100 chunks the loop left unlabeled were predicted (in 3 shards)." in section
    assert "| ham | 75 | 75.0% |" in section and "| spam | 25 | 25.0% |" in section
    assert "Incomplete" not in section
    assert "| 2 | `classifiers/final_classifier_output/predictions-part-00002-of-00003.jsonl` | 30 | 30 | ok |" \
        in section
    doc = json.loads(storage.read_text(METRICS_KEY))["predictions"]
    assert doc["status"] == "complete" and doc["by_label"] == {"ham": 75, "spam": 25}


def test_report_names_a_missing_shard(tmp_path: Path) -> None:
    storage, _ = run_report(tmp_path, _with_predictions(_predictions(complete=False)))
    section = storage.read_text(REPORT_KEY).split("## Final prediction", 1)[1].split("\n## ", 1)[0]
    assert "70 of the 100 chunks the loop left unlabeled were predicted (in 3 shards)." in section
    assert "**Incomplete:** 1 shard(s) did not deliver" in section
    assert "- shard 2/3 (classifiers/final_classifier_output/predictions-part-00002-of-00003.jsonl): no " \
           "prediction file" in section
    assert "| 2 | `classifiers/final_classifier_output/predictions-part-00002-of-00003.jsonl` | 0 | 30 | missing |" \
        in section
    assert json.loads(storage.read_text(METRICS_KEY))["predictions"]["missing_shards"] == [2]


@pytest.mark.parametrize(("doc", "expected"), [
    (None, "No final prediction is counted in this run"),
    ({"status": "pending", "shards": 4, "jobs": {"array": "arr-1", "report": "rep-1"}},
     "Pending: 4 shards predict in AWS Batch array job `arr-1`; job `rep-1` re-renders"),
], ids=["absent", "pending"])
def test_report_without_a_count(tmp_path: Path, doc: dict[str, Any] | None, expected: str) -> None:
    storage, _ = run_report(tmp_path, _with_predictions(doc))
    assert expected in storage.read_text(REPORT_KEY).split("## Final prediction", 1)[1]
    assert json.loads(storage.read_text(METRICS_KEY))["predictions"] == doc
