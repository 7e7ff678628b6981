"""The predict step's precision check, end to end: a job through the CLI with the oracle LLM and the tiny BERT.

The step converts the best classifier to ``training.predict_precision``, scores both it and float32 on the
LLM-labeled test set, predicts with the reduced one only when it is within 0.5 points, and records why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.llm_server import OracleHandle, shared_data_dir
from tests.pipeline_helpers import cli, cli_env, job_config, sample_rows, write_yaml

pytestmark = pytest.mark.slow


def _job(tmp_path: Path, tiny_bert_dir: Path) -> tuple[Path, Path]:
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", 160)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = job_config(classes=["ham", "spam"], input_="in", output="out", model_path=str(tiny_bert_dir),
                     training__max_iters=1, training__predict_precision="int8")
    return write_yaml(tmp_path / "config.yaml", cfg), tmp_path / "out"


def test_predict_step_checks_the_reduced_model_and_records_the_decision(
    tmp_path: Path, tiny_bert_dir: Path, sms_oracle: OracleHandle
) -> None:
    cfg, out = _job(tmp_path, tiny_bert_dir)
    result = cli(["run", str(cfg)], cli_env(sms_oracle.base_url))
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    check = state["counters"]["predict_precision"]
    assert check["requested"] == "int8" and check["checked_on"] == state["counters"]["test_labels_ok"] == 40
    drop = check["fp32_accuracy"] - check["reduced_accuracy"]
    assert check["used"] == ("int8" if drop <= 0.005 + 1e-9 else "fp32"), check
    # the float32 accuracy the guard measured is the one the evaluate step recorded for the best classifier
    best = state["iterations"][state["best_iteration"] - 1]
    assert check["fp32_accuracy"] == pytest.approx(best["metrics"]["accuracy"])
    preds = (out / "classifiers/final_classifier_output/predictions.jsonl").read_text().splitlines()
    assert len(preds) == 160 - 40 - 60
    assert "predicting at" in result.stderr

    # The CLI predict command with float32 forced (an environment override): no check, and it says so.
    again = cli(["predict", str(cfg)], cli_env(sms_oracle.base_url, {"BOOTSTRAPPER_TRAINING__PREDICT_PRECISION": "fp32"}))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "60 chunks predicted at fp32 (float32 requested)" in again.stdout
