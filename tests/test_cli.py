"""The command line as a user meets it: exit codes, config errors before any spending, refusals, secrets."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.llm_server import OracleHandle, shared_data_dir
from tests.pipeline_helpers import (
    cli,
    cli_env,
    job_config,
    run_with_failing_step,
    sample_rows,
    write_yaml,
)

SMS = ["ham", "spam"]


def _job(tmp_path: Path, n: int = 200, **overrides: object) -> Path:
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", n)
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "sms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return write_yaml(tmp_path / "config.yaml", job_config(classes=SMS, input_="in", output="out",
                                                          model_path="bundled:all-MiniLM-L6-v2", **overrides))


@pytest.mark.parametrize("override,field", [
    ({"training__truncation_type": "middle"}, "training.truncation_type"),
    ({"system__required_accuracy": 1.5}, "system.required_accuracy"),
    ({"training__train_set_size": 0}, "training.train_set_size"),
    ({"training__max_iter": 3}, "training.max_iter"),
    ({"classification__classes": ["spam"]}, "classification.classes"),
], ids=["truncation", "accuracy", "size", "typo", "one-class"])
def test_bad_config_exits_2_naming_field_before_any_call(tmp_path: Path, override: dict, field: str,
                                                         sms_oracle: OracleHandle) -> None:
    cfg = _job(tmp_path, **override)
    sms_oracle.reset_stats()
    for command in ("run", "plan", "ingest"):
        result = cli([command, str(cfg)], cli_env(sms_oracle.base_url))
        assert result.returncode == 2, result.stderr
        assert field in result.stderr
    assert sms_oracle.stats(prompts=False)["total_requests"] == 0
    assert not (tmp_path / "out").exists()


def test_ingest_and_plan(tmp_path: Path) -> None:
    cfg = _job(tmp_path)
    result = cli(["ingest", str(cfg)], cli_env("http://127.0.0.1:9"))
    assert result.returncode == 0, result.stderr
    assert re.search(r"1 files read, 200 chunks", result.stdout)
    assert "reading inputs: 1/1" in result.stderr, "ingestion reports its progress in files"
    assert len((tmp_path / "out" / "chunks.jsonl").read_text().splitlines()) == 200
    plan = cli(["plan", str(cfg)], cli_env("http://127.0.0.1:9", {"BOOTSTRAPPER_API__LARGE_MODEL": "openai/gpt-4o",
                                                                   "BOOTSTRAPPER_API__SMALL_MODEL": "openai/gpt-4o-mini"}))
    assert plan.returncode == 0, plan.stderr
    assert "openai/gpt-4o-mini" in plan.stdout and "TOTAL" in plan.stdout


@pytest.mark.slow
def test_an_exception_outside_our_tree_exits_1_with_one_line_and_the_state_saved(tmp_path: Path) -> None:
    cfg = _job(tmp_path, n=60)
    done = run_with_failing_step("cli", "split", ["run", str(cfg)], cli_env("http://127.0.0.1:9"))
    assert done.returncode == 1, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: unexpected ValueError: simulated failure outside the exception tree "
                                "second line ("), lines[-1]
    assert all(line.startswith("{") for line in lines[:-1]), "log lines, no bare traceback"
    (error,) = [r for r in map(json.loads, lines[:-1]) if r["level"] == "ERROR"]
    assert error["exc"].startswith("Traceback") and "in fail" in error["exc"]
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert (state["step"], state["status"]) == ("split", "running"), "saved at the failing step"
    assert not (tmp_path / "out" / "lease.json").exists()


def test_changed_config_refused_then_restart(tmp_path: Path, sms_oracle: OracleHandle) -> None:
    cfg = _job(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "state.json").write_text(json.dumps({"schema_version": 1, "config_fingerprint": "another-config",
                                                "step": "label_test"}))
    result = cli(["run", str(cfg)], cli_env(sms_oracle.base_url))
    assert result.returncode == 1 and "--restart" in result.stderr


def test_second_runner_refused_by_lease(tmp_path: Path, sms_oracle: OracleHandle) -> None:
    cfg = _job(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "lease.json").write_text(json.dumps({"owner": "x", "expires_at": 9e12, "host": "another-host",
                                                "pid": 1, "job_id": ""}))
    result = cli(["run", str(cfg)], cli_env(sms_oracle.base_url))
    assert result.returncode == 1 and "another run holds" in result.stderr


def test_zero_usable_chunks_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.txt").write_text("")
    (tmp_path / "in" / "junk.bin").write_bytes(b"\x00\x01")
    cfg = write_yaml(tmp_path / "config.yaml", job_config(classes=SMS, input_="in", output="out",
                                                          model_path="bundled:all-MiniLM-L6-v2"))
    result = cli(["ingest", str(cfg)], cli_env("http://127.0.0.1:9"))
    assert result.returncode == 1 and "ingest_report" in result.stderr
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert {s["source"] for s in report["skipped"]} == {"empty.txt", "junk.bin"}


@pytest.mark.slow
def test_planted_api_key_never_written_anywhere(tmp_path: Path, tiny_bert_dir: Path,
                                                oracle_server: Callable[..., OracleHandle]) -> None:
    secret = "sk-PLANTED-7f3a9c1e5b2d4680"
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.1, latency_ms=0, rate_429=0.1,
                           rate_500=0.1, rate_badlabel=0.05)
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", 150)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_yaml(tmp_path / "config.yaml", job_config(classes=SMS, input_="in", output="out",
                                                          model_path=str(tiny_bert_dir), training__max_iters=1))
    env = cli_env(oracle.base_url, {"BOOTSTRAPPER_API__LARGE_API_KEY": secret,
                                    "BOOTSTRAPPER_API__SMALL_API_KEY": secret})
    result = cli(["run", str(cfg)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert secret not in result.stdout and secret not in result.stderr
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    # A provider rejecting the key stops a fresh run (nothing cached there) with a message naming the field.
    cfg2 = write_yaml(tmp_path / "config2.yaml", job_config(classes=SMS, input_="in", output="out2",
                                                            model_path=str(tiny_bert_dir)))
    bad = cli(["run", str(cfg2)], cli_env(oracle.base_url, {"BOOTSTRAPPER_API__LARGE_API_KEY": "sk-bad"}))
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "LARGE_API_KEY" in bad.stderr and "sk-bad" not in bad.stderr


@pytest.mark.slow  # two CLI processes (~8 s each here)
def test_report_counts_shards_predicted_by_hand(tmp_path: Path) -> None:
    """``bootstrapper predict --shard I/N`` run by hand, then ``bootstrapper report``: N read from the files."""
    from tests.prediction_helpers import finished_run

    env = cli_env("http://127.0.0.1:9")
    run = finished_run(tmp_path, env)
    run.write_shard(0, 3)
    run.write_shard(2, 3)
    missing = "classifiers/final_classifier_output/predictions-part-00001-of-00003.jsonl"

    first = cli(["report", str(run.config)], env)
    assert first.returncode == 0, first.stderr
    assert f"warning: shard 1/3 ({missing}): no prediction file" in first.stderr
    assert "bootstrapper predict" in first.stderr and "--shard I/3" in first.stderr
    assert f"- shard 1/3 ({missing})" in (tmp_path / "out" / "report.md").read_text()

    run.write_shard(1, 3)
    second = cli(["report", str(run.config)], env)
    assert second.returncode == 0, second.stderr
    expected = run.expected_by_label()
    assert f"30 chunks predicted in 3 shard(s): ham {expected['ham']}, spam {expected['spam']}" in second.stdout
    assert "warning" not in second.stderr
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["counters"]["predictions"]["status"] == "complete"
    assert state["counters"]["predictions"]["by_label"] == expected
    md = (tmp_path / "out" / "report.md").read_text()
    assert "30 of the 30 chunks the loop left unlabeled were predicted (in 3 shards)." in md

