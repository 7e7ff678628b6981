"""The AWS Batch entry point: its pure decisions, the array-job submission, and whole runs as a process.

End-to-end runs use moto's S3 server (config and inputs uploaded under ``jobs/<name>/`` as a user would),
the oracle LLM server and the tiny random-init BERT as ``training.model_path``; the sharded run also uses
moto's Batch (simple mode) to receive the prediction array job and the report job that depends on it;
the test then plays Batch, running the children and the report job's command as processes.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from core.config import config_fingerprint, load_settings
from core.errors import ConfigError, ObjectNotFound, PermanentError, RetryableError
from core.run.layout import CHECKPOINTS, CLASSIFIERS, PREDICTING
from core.storage.backends import LocalStorage, open_storage
from handlers.batch_errors import batch_error
from handlers.batch_job import (
    ARRAY_MARKER_KEY,
    DEADLINE_ENV,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RETRY,
    REPORT_MARKER_KEY,
    array_request,
    array_size,
    array_target,
    attempt_deadline,
    config_uri_from,
    loop_settings,
    main,
    predict_job_name,
    report_request,
    stop_condition,
    submit_prediction_array,
    submit_prediction_jobs,
    submit_report_job,
)
from tests.batch_helpers import BatchTarget, create_batch_target, jobs_in, moto_client
from tests.fixtures.llm_server import OracleHandle, shared_data_dir
from tests.fixtures.s3_server import free_port
from tests.pipeline_helpers import (
    cli_env,
    job_config,
    run_with_failing_step,
    sample_rows,
    start_batch_job,
    wait_for,
    write_yaml,
)
from tests.prediction_helpers import finished_run

SMS = ["ham", "spam"]
BASE = "classification: {classes: [ham, spam], desc: Spam or not.}\n"


def _settings(**training: Any) -> Any:
    return load_settings(BASE + (f"training: {json.dumps(training)}\n" if training else ""), {})


# --- pure decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(("arg", "environ", "expected"), [
    ("s3://b/jobs/a/config.yaml", {}, "s3://b/jobs/a/config.yaml"),
    (None, {"BOOTSTRAPPER_CONFIG_URI": "s3://b/env.yaml"}, "s3://b/env.yaml"),
    ("Ref::config_uri", {"BOOTSTRAPPER_CONFIG_URI": "s3://b/env.yaml"}, "s3://b/env.yaml"),
], ids=["argument", "environment", "unsubstituted-batch-parameter"])
def test_config_uri_from(arg: str | None, environ: dict[str, str], expected: str) -> None:
    assert config_uri_from(arg, environ) == expected


@pytest.mark.parametrize("arg", [None, "Ref::config_uri", ""], ids=["none", "unsubstituted", "empty"])
def test_missing_config_uri_is_a_config_error(arg: str | None) -> None:
    with pytest.raises(ConfigError, match="config_uri"):
        config_uri_from(arg, {})


def test_attempt_deadline_counts_from_the_start_of_the_attempt() -> None:
    assert attempt_deadline({}, 100.0) is None
    assert attempt_deadline({DEADLINE_ENV: ""}, 100.0) is None
    assert attempt_deadline({DEADLINE_ENV: "43080"}, 100.0) == 43180.0
    assert attempt_deadline({DEADLINE_ENV: " 2.5 "}, 100.0) == 102.5


@pytest.mark.parametrize("raw", ["soon", "0", "-120", "inf", "nan"])
def test_a_bad_attempt_deadline_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match=DEADLINE_ENV):
        attempt_deadline({DEADLINE_ENV: raw}, 0.0)


def test_stop_condition_is_a_signal_or_the_deadline() -> None:
    now = [0.0]
    flag = [False]
    should_stop = stop_condition(flag, deadline=10.0, clock=lambda: now[0])
    assert not should_stop()
    now[0] = 9.99
    assert not should_stop()
    now[0] = 10.0
    assert should_stop() and should_stop(), "and it stays stopped"
    without = stop_condition(flag, deadline=None, clock=lambda: 1e12)
    assert not without()
    flag[0] = True
    assert without(), "a signal stops it too"


@pytest.mark.parametrize(("yaml_extra", "size"), [
    ("", 0),
    ("training: {predict_shards: 4}\n", 4),
    (("training: {predict_shards: 4}\nclassification: {classes: [a, b], desc: d, "
      "predict_on_whole_set_at_the_end: false}\n"), 0),
], ids=["one-shard", "four-shards", "no-final-prediction"])
def test_array_size(yaml_extra: str, size: int) -> None:
    text = yaml_extra if "classification" in yaml_extra else BASE + yaml_extra
    assert array_size(load_settings(text, {})) == size


def test_array_size_beyond_batch_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="predict_shards"):
        array_size(_settings(predict_shards=10_001))


def test_loop_settings_skip_in_process_prediction_without_changing_the_fingerprint() -> None:
    settings = _settings(predict_shards=3)
    looped = loop_settings(settings, 3)
    assert looped.classification.predict_on_whole_set_at_the_end is False
    assert settings.classification.predict_on_whole_set_at_the_end is True
    assert config_fingerprint(looped) == config_fingerprint(settings)
    assert loop_settings(settings, 0) is settings


@pytest.mark.parametrize(("environ", "expected"), [
    ({"AWS_BATCH_JQ_NAME": "own-queue", "BOOTSTRAPPER_JOB_DEFINITION": "def"}, ("own-queue", "def")),
    ({"AWS_BATCH_JQ_NAME": "own", "BOOTSTRAPPER_JOB_QUEUE": "other", "BOOTSTRAPPER_JOB_DEFINITION": "def"},
     ("other", "def")),
], ids=["queue-of-this-job", "explicit-queue"])
def test_array_target(environ: dict[str, str], expected: tuple[str, str]) -> None:
    assert array_target(environ) == expected


def test_array_target_missing_definition_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="BOOTSTRAPPER_JOB_DEFINITION"):
        array_target({"AWS_BATCH_JQ_NAME": "q"})


def test_array_request() -> None:
    uri = "s3://bucket/jobs/Réunion notes/config.yaml"
    assert array_request(uri, 4, "q", "d") == {
        "jobName": predict_job_name(uri), "jobQueue": "q", "jobDefinition": "d", "arrayProperties": {"size": 4},
        "parameters": {"config_uri": uri},
        "containerOverrides": {"command": ["predict-shard", uri, "--shards", "4"]},
    }
    assert predict_job_name("s3://b/jobs/spam/config.yaml") == "bootstrapper-spam-predict"
    assert predict_job_name(uri).startswith("bootstrapper-Reunion-notes-") and len(predict_job_name("x" * 300)) <= 128


# --- array submission (local storage, stubbed Batch) ---------------------------------------------


def test_prediction_array_is_submitted_once(tmp_path: Path) -> None:
    output = LocalStorage(tmp_path / "out")
    batch = moto_client("batch", "http://127.0.0.1:9")  # the Stubber answers; nothing is contacted
    request = array_request("s3://b/jobs/spam/config.yaml", 3, "q", "d")
    with Stubber(batch) as stub:
        stub.add_response("submit_job", {"jobName": request["jobName"], "jobId": "array-1"}, request)
        assert submit_prediction_array(output, batch, request, "parent-1") == "array-1"
        assert submit_prediction_array(output, batch, request, "parent-1") is None  # no second call
        stub.assert_no_pending_responses()
    marker = json.loads(output.read_text(ARRAY_MARKER_KEY))
    assert marker["job_id"] == "array-1" and marker["size"] == 3 and marker["parent_job_id"] == "parent-1"


@pytest.mark.parametrize(("code", "status", "expected"), [
    ("ClientException", 400, PermanentError),  # exit 1: a bad queue or definition stays bad
    ("TooManyRequestsException", 429, RetryableError),  # exit 3: throttled even after botocore's retries
], ids=["client-exception", "throttled"])
def test_failed_array_submission_releases_the_marker(tmp_path: Path, code: str, status: int,
                                                     expected: type[Exception]) -> None:
    output = LocalStorage(tmp_path / "out")
    batch = moto_client("batch", "http://127.0.0.1:9")
    request = array_request("s3://b/jobs/spam/config.yaml", 3, "q", "d")
    with Stubber(batch) as stub:
        stub.add_client_error("submit_job", service_error_code=code, http_status_code=status)
        with pytest.raises(expected, match="prediction array job"):
            submit_prediction_array(output, batch, request, "parent-1")
    assert not output.exists(ARRAY_MARKER_KEY), "the next attempt submits it"


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "SubmitJob")


@pytest.mark.parametrize(("exc", "expected"), [
    (_client_error("TooManyRequestsException", 429), RetryableError),
    (_client_error("ThrottlingException", 400), RetryableError),
    (_client_error("ServerException", 500), RetryableError),
    (_client_error("SomethingNew", 503), RetryableError),
    (_client_error("SomethingNew", 429), RetryableError),
    (_client_error("ClientException", 400), PermanentError),
    (_client_error("AccessDeniedException", 403), PermanentError),
    (_client_error("SomethingNew", 400), PermanentError),
    (EndpointConnectionError(endpoint_url="https://batch.us-east-1.amazonaws.com"), RetryableError),
    (ConnectTimeoutError(endpoint_url="https://batch.us-east-1.amazonaws.com"), RetryableError),
    (ReadTimeoutError(endpoint_url="https://batch.us-east-1.amazonaws.com"), RetryableError),
    (ParamValidationError(report="Invalid type for parameter arrayProperties.size"), PermanentError),
    (NoRegionError(), PermanentError),
], ids=["too-many-requests", "throttling", "server-exception", "unknown-5xx", "unknown-429", "client-exception",
        "access-denied", "unknown-4xx", "connection-refused", "connect-timeout", "read-timeout", "param-validation",
        "no-region"])
def test_batch_errors_translate_by_one_table(exc: Exception, expected: type[Exception]) -> None:
    got = batch_error(exc, "submitting the report job")  # type: ignore[arg-type]
    assert type(got) is expected
    assert str(got).startswith("submitting the report job failed: ")


def test_report_request_depends_on_the_array_job() -> None:
    uri = "s3://bucket/jobs/spam/config.yaml"
    assert report_request(uri, 4, "q", "d", "array-1") == {
        "jobName": "bootstrapper-spam-report", "jobQueue": "q", "jobDefinition": "d",
        "dependsOn": [{"jobId": "array-1"}], "parameters": {"config_uri": uri},
        "containerOverrides": {"command": ["report", uri, "--shards", "4"]},
    }


@pytest.mark.parametrize(("report_definition", "used"), [("", "d"), ("d-report", "d-report")],
                         ids=["array-definition", "own-definition"])
def test_array_and_report_jobs_are_each_submitted_once(tmp_path: Path, report_definition: str, used: str) -> None:
    output = LocalStorage(tmp_path / "out")
    batch = moto_client("batch", "http://127.0.0.1:9")
    uri = "s3://b/jobs/spam/config.yaml"
    array = array_request(uri, 3, "q", "d")
    report = report_request(uri, 3, "q", used, "array-1")  # the report job's own, smaller definition if given
    with Stubber(batch) as stub:
        stub.add_response("submit_job", {"jobName": array["jobName"], "jobId": "array-1"}, array)
        stub.add_response("submit_job", {"jobName": report["jobName"], "jobId": "report-1"}, report)
        assert submit_prediction_jobs(output, batch, uri, 3, ("q", "d"), "parent-1",
                                      report_definition) == {"array": "array-1", "report": "report-1"}
        assert submit_prediction_jobs(output, batch, uri, 3, ("q", "d"), "parent-1") == {}  # a repeated run
        stub.assert_no_pending_responses()
    marker = json.loads(output.read_text(REPORT_MARKER_KEY))
    assert marker["job_id"] == "report-1" and marker["depends_on"] == ["array-1"]


def test_a_retry_after_the_array_submits_only_the_report_job(tmp_path: Path) -> None:
    """The first attempt died between the two submissions: the retry must not submit a second array job."""
    output = LocalStorage(tmp_path / "out")
    output.write_text(ARRAY_MARKER_KEY, json.dumps({"parent_job_id": "parent-1", "size": 3, "job_id": "array-7"}))
    batch = moto_client("batch", "http://127.0.0.1:9")
    uri = "s3://b/jobs/spam/config.yaml"
    report = report_request(uri, 3, "q", "d", "array-7")
    with Stubber(batch) as stub:
        stub.add_response("submit_job", {"jobName": report["jobName"], "jobId": "report-2"}, report)
        assert submit_prediction_jobs(output, batch, uri, 3, ("q", "d"), "parent-1") == {"report": "report-2"}
        stub.assert_no_pending_responses()


def test_failed_report_submission_releases_its_marker(tmp_path: Path) -> None:
    output = LocalStorage(tmp_path / "out")
    batch = moto_client("batch", "http://127.0.0.1:9")
    with Stubber(batch) as stub:
        stub.add_client_error("submit_job", service_error_code="ClientException", http_status_code=400)
        with pytest.raises(PermanentError, match="report job"):
            submit_report_job(output, batch, report_request("s3://b/k.yaml", 2, "q", "d", "a-1"), "parent-1")
    assert not output.exists(REPORT_MARKER_KEY)


# --- exit codes without a pipeline ---------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``main`` configures the root logger as a process would; put pytest's set-up back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_exit_2_without_a_config(tmp_path: Path) -> None:
    assert main(["run"], {}) == EXIT_CONFIG
    assert main(["run", str(tmp_path / "missing.yaml")], {}) == EXIT_CONFIG
    bad = tmp_path / "bad.yaml"
    bad.write_text("classification: {classes: [only-one], desc: x}\n")
    assert main(["run", str(bad)], {}) == EXIT_CONFIG


@pytest.mark.usefixtures("root_logging")
def test_exit_2_on_a_bad_attempt_deadline_before_anything_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE)
    assert main(["run", str(cfg)], {DEADLINE_ENV: "12h"}) == EXIT_CONFIG
    assert not (tmp_path / "output").exists()


@pytest.mark.usefixtures("root_logging")
def test_exit_2_when_sharded_without_a_job_definition(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE + "training: {predict_shards: 2}\n")
    assert main(["run", str(cfg)], {}) == EXIT_CONFIG
    assert not (tmp_path / "output" / "state.json").exists(), "refused before anything started"


@pytest.mark.usefixtures("root_logging")
def test_predict_shard_needs_an_index(tmp_path: Path) -> None:
    assert main(["predict-shard", str(tmp_path / "c.yaml"), "--shards", "3"], {}) == EXIT_CONFIG


@pytest.mark.slow  # botocore's own retries of a refused connection take ~10 s before the error reaches us
def test_predict_shard_exits_3_when_storage_is_unavailable(tmp_path: Path) -> None:
    """An array child that cannot reach S3 asks Batch for a retry (3), not for the end (1)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE + "path: {input: s3://absent/in, output: s3://absent/out}\n")
    env = cli_env("http://127.0.0.1:9", {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})  # nothing listens
    log = tmp_path / "shard.log"
    assert _finish(["predict-shard", str(cfg), "--shards", "2", "--index", "0"], env, log, timeout=120) == EXIT_RETRY
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(x["message"].startswith("StorageUnavailable: read s3://absent/out/state.json") for x in lines), lines


@pytest.mark.slow
def test_an_exception_outside_our_tree_exits_1_in_one_log_line_with_the_state_saved(tmp_path: Path) -> None:
    """A bug in a step: exit 1 (Batch does not retry it), one JSON log line with the traceback, state on disk."""
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", 60)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_yaml(tmp_path / "config.yaml", job_config(classes=SMS, input_="in", output="out",
                                                          model_path="bundled:all-MiniLM-L6-v2"))
    done = run_with_failing_step("batch_job", "split", ["run", str(cfg)], cli_env("http://127.0.0.1:9"))
    assert done.returncode == EXIT_FAILED, done.stderr[-3000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), "JSON log lines only: no bare traceback"
    (error,) = [r for r in map(json.loads, lines) if r["level"] == "ERROR"]
    assert error["message"].startswith("unexpected ValueError: simulated failure outside the exception tree "
                                       "second line (")
    assert error["exc"].startswith("Traceback") and "in fail" in error["exc"]
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert (state["step"], state["status"]) == ("split", "running"), "saved at the failing step"
    assert "ingest" in state["step_seconds"] and (tmp_path / "out" / "chunks.jsonl").is_file()
    assert not (tmp_path / "out" / "lease.json").exists(), "the lease is released"


# --- the report job: counting the shards' predictions ---------------------------------------------


@pytest.mark.usefixtures("root_logging")
def test_report_counts_every_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = finished_run(tmp_path, {})
    written = sum(run.write_shard(i, 3) for i in range(3))
    assert written == len(run.remaining) == 30
    assert main(["report", str(run.config), "--shards", "3"], {}) == EXIT_OK
    state = json.loads(run.output.read_text("state.json"))
    assert state["schema_version"] == 1 and state["step"] == "done"
    counted = state["counters"]["predictions"]
    assert state["counters"]["predicted_chunks"] == 30
    assert counted["status"] == "complete" and counted["by_label"] == run.expected_by_label()
    assert [s["predicted"] for s in counted["per_shard"]] == [len(run.shard_rows(i, 3)) for i in range(3)]
    md = run.output.read_text("report.md")
    assert "30 of the 30 chunks the loop left unlabeled were predicted (in 3 shards)." in md
    assert f"| ham | {run.expected_by_label()['ham']} |" in md
    assert json.loads(run.output.read_text("metrics.json"))["predictions"] == counted
    assert not run.output.exists("lease.json"), "the lease is released"
    assert "INCOMPLETE" not in capsys.readouterr().err


@pytest.mark.usefixtures("root_logging")
def test_report_names_a_missing_shard_and_still_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = finished_run(tmp_path, {})
    kept = run.write_shard(0, 3) + run.write_shard(2, 3)
    assert main(["report", str(run.config), "--shards", "3"], {}) == EXIT_OK
    counted = json.loads(run.output.read_text("state.json"))["counters"]["predictions"]
    assert counted["status"] == "incomplete" and counted["missing_shards"] == [1]
    assert counted["predicted"] == kept and counted["expected"] == 30
    missing = "classifiers/final_classifier_output/predictions-part-00001-of-00003.jsonl"
    assert f"- shard 1/3 ({missing}): no prediction file" in run.output.read_text("report.md")
    log = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert any(x["level"] == "WARNING" and f"shard 1/3 ({missing})" in x["message"] for x in log)
    assert any("INCOMPLETE, 1 shard(s)" in x["message"] for x in log)


@pytest.mark.usefixtures("root_logging")
def test_report_before_the_run_finished_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = finished_run(tmp_path, {})
    state = json.loads(run.output.read_text("state.json"))
    run.output.write_text("state.json", json.dumps({**state, "step": "train", "status": "running"}))
    assert main(["report", str(run.config), "--shards", "3"], {}) == EXIT_FAILED
    assert "has not finished with a classifier (step train)" in capsys.readouterr().err
    assert not run.output.exists("report.md") and not run.output.exists("lease.json")


# --- end to end, as a process against moto S3 and the oracle -------------------------------------


def _upload_job(s3_client: Any, bucket: str, name: str, model_path: Path, n_rows: int, **overrides: Any) -> str:
    """Documents first, then the config (the trigger), as a user would; returns the config URI."""
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", n_rows)
    s3_client.put_object(Bucket=bucket, Key=f"jobs/{name}/input/messages.jsonl",
                         Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    cfg = job_config(classes=SMS, input_="input", output="output", model_path=str(model_path), **overrides)
    s3_client.put_object(Bucket=bucket, Key=f"jobs/{name}/config.yaml", Body=yaml.safe_dump(cfg).encode())
    return f"s3://{bucket}/jobs/{name}/config.yaml"


_entry = start_batch_job


def _finish(args: list[str], env: dict[str, str], log: Path, timeout: float = 600) -> int:
    return _entry(args, env, log).wait(timeout=timeout)


def _state(out: Any) -> dict[str, Any]:
    return json.loads(out.read_text("state.json"))


def _at_step(out: Any, step: str) -> bool:
    try:
        return _state(out)["step"] == step
    except ObjectNotFound:  # not started yet
        return False


def _at_label_test_with_labels(out: Any) -> bool:
    try:
        return _state(out)["step"] == "label_test" and bool(list(out.list("labels/test/")))
    except ObjectNotFound:  # not started yet
        return False


@pytest.fixture(scope="module")
def sms_oracle(oracle_server: Callable[..., OracleHandle]) -> OracleHandle:
    return oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.1, latency_ms=120, seed=4)


@pytest.mark.slow
def test_sigterm_exits_3_and_the_retry_resumes_to_the_end(
        tmp_path: Path, tiny_bert_dir: Path, sms_oracle: OracleHandle, s3_server: Any, s3_client: Any,
        s3_bucket: str) -> None:
    config_uri = _upload_job(s3_client, s3_bucket, "sms spam", tiny_bert_dir, 240, training__max_iters=2)
    out = open_storage(f"s3://{s3_bucket}/jobs/sms spam/output", s3_client=s3_client)
    # The job definition passes the URI as an argument; here it comes from the environment instead.
    env = cli_env(sms_oracle.base_url, {"AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_BATCH_JOB_ID": "job-1",
                                        "BOOTSTRAPPER_CONFIG_URI": config_uri})
    log = tmp_path / "attempt.log"
    sms_oracle.reset_stats()

    first = _entry(["run", "Ref::config_uri"], env, log)
    assert wait_for(lambda: _at_label_test_with_labels(out), first, poll=0.1), log.read_text()[-3000:]
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == EXIT_RETRY, log.read_text()[-3000:]
    stopped = _state(out)
    assert stopped["step"] == "label_test" and stopped["status"] == "running"
    assert not out.exists("lease.json"), "the lease is released on a clean stop"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any("Batch retries" in x["message"] for x in lines), "JSON log lines say why it exits 3"

    # Batch's retry: same job id, same command.
    assert _finish(["run", "Ref::config_uri"], env, log) == EXIT_OK, log.read_text()[-3000:]
    done = _state(out)
    assert done["step"] == "done" and len(done["iterations"]) == 2
    predictions = out.read_text("classifiers/final_classifier_output/predictions.jsonl").splitlines()
    assert len(predictions) == 240 - 40 - 100
    assert out.exists("report.md") and not out.exists(ARRAY_MARKER_KEY)
    # Predicted in-process: the report counts them per label, as the sharded path's report job does.
    by_label: dict[str, int] = {}
    for line in predictions:
        by_label[json.loads(line)["label"]] = by_label.get(json.loads(line)["label"], 0) + 1
    counted = done["counters"]["predictions"]
    assert counted["status"] == "complete" and counted["shards"] == 1 and counted["by_label"] == by_label
    assert json.loads(out.read_text("metrics.json"))["predictions"] == counted
    assert "100 of the 100 chunks the loop left unlabeled were predicted." in out.read_text("report.md")
    assert sms_oracle.stats(prompts=False)["repeated_ok_prompts"] <= 4, "at most the calls in flight at SIGTERM"


def _json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_sigterm_mid_training_and_mid_prediction_exits_3_and_the_retry_resumes_both(
        tmp_path: Path, tiny_bert_dir: Path, sms_oracle: OracleHandle, s3_server: Any, s3_client: Any,
        s3_bucket: str) -> None:
    """Through ``main`` (the container's entry point): a SIGTERM after an epoch's checkpoint, then one after a
    committed prediction part, each exits 3 within Batch's 30 s with the work kept in the bucket; the retry
    continues from the checkpoint and after the last part, to exactly one prediction per remaining chunk."""
    import time

    config_uri = _upload_job(s3_client, s3_bucket, "stops", tiny_bert_dir, 400, training__max_iters=1,
                             training__test_set_size=30, training__train_set_size=50, training__epochs=4,
                             training__batch_size=4, training__predict_batch_size=1,
                             training__predict_precision="fp32")
    out = open_storage(f"s3://{s3_bucket}/jobs/stops/output", s3_client=s3_client)
    env = cli_env(sms_oracle.base_url, {"AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_BATCH_JOB_ID": "job-5"})
    log = tmp_path / "attempts.log"
    # (step, the work an attempt keeps there: once it exists, the stop comes mid-step)
    moments = [("train", lambda: bool(list(out.list("checkpoints/classifier_1/")))),
               ("predict", lambda: bool(list(out.list("predicting/"))))]
    for step, kept in moments:
        attempt = _entry(["run", config_uri], env, log)
        assert wait_for(kept, attempt, poll=0.05), log.read_text()[-3000:]
        sent = time.monotonic()
        attempt.send_signal(signal.SIGTERM)
        assert attempt.wait(timeout=60) == EXIT_RETRY, log.read_text()[-3000:]
        assert time.monotonic() - sent < 30, f"{step}: Batch sends SIGKILL 30 s after SIGTERM"
        stopped = _state(out)
        assert stopped["step"] == step and stopped["status"] == "running"
        assert not out.exists("lease.json")
        assert kept(), f"{step}: the stopped attempt's work stays for the retry"
    assert not out.exists("classifiers/final_classifier_output/predictions.jsonl"), "stopped before the last part"
    assert _finish(["run", config_uri], env, log) == EXIT_OK, log.read_text()[-3000:]
    messages = [x["message"] for x in _json_lines(log)]
    assert any("training resumed from its checkpoint" in m for m in messages)
    assert any("prediction resumes after" in m for m in messages)
    ids = [json.loads(line)["id"] for line in
           out.read_text("classifiers/final_classifier_output/predictions.jsonl").splitlines()]
    assert len(ids) == len(set(ids)) == 400 - 30 - 50
    assert not list(out.list("predicting/")) and not list(out.list("checkpoints/"))


def _objects(out: Any, prefix: str) -> dict[str, bytes]:
    return {key: out.read_bytes(key) for key in out.list(prefix)}


@pytest.mark.slow
@pytest.mark.parametrize("step", ["label_test", "train", "predict"])
def test_a_lease_taken_over_ends_the_attempt_with_exit_3_and_no_write_over_the_new_owner(
        step: str, tmp_path: Path, tiny_bert_dir: Path, sms_oracle: OracleHandle, s3_server: Any, s3_client: Any,
        s3_bucket: str) -> None:
    """A runner frozen past its lease's TTL (a paused container, a network partition) finds on waking that
    another runner took the lease over, by the same conditional write a real one uses: it exits 3 through
    ``main`` without writing state.json again, leaves the new owner's lease alone, and does not write the part
    of the test labels it holds, upload the training checkpoint or commit the prediction part it was about to
    (a SIGTERM would have kept them)."""
    import os
    import time

    from core.run.lease import Lease, acquire_lease

    name = f"stolen-{step}"
    config_uri = _upload_job(s3_client, s3_bucket, name, tiny_bert_dir, 240, training__max_iters=1,
                             training__epochs=6, system__lease_ttl_s=3, training__predict_batch_size=1,
                             training__predict_precision="fp32")
    out = open_storage(f"s3://{s3_bucket}/jobs/{name}/output", s3_client=s3_client)
    env = cli_env(sms_oracle.base_url, {"AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_BATCH_JOB_ID": "job-6"})
    log = tmp_path / "attempt.log"
    first = _entry(["run", config_uri], env, log)
    ready = {"label_test": lambda: _at_label_test_with_labels(out), "train": lambda: _at_step(out, "train"),
             "predict": lambda: _at_step(out, "predict") and bool(list(out.list("predicting/")))}[step]
    assert wait_for(ready, first, poll=0.05), log.read_text()[-3000:]
    first.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3.5)  # past the TTL: the frozen runner's lease is stale
        thief = Lease.new(900, pid=os.getpid(), job_id="job-7")
        acquire_lease(out, thief, pid_alive=lambda _pid: True)  # raises LeaseHeld unless it took the lease over
        before = out.read_bytes("state.json")
        kept = {prefix: _objects(out, prefix) for prefix in (CHECKPOINTS, PREDICTING, CLASSIFIERS)}
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=60) == EXIT_RETRY, log.read_text()[-3000:]
    assert out.read_bytes("state.json") == before, "no state written after the lease was lost"
    assert json.loads(out.read_text("lease.json"))["owner"] == thief.owner, "the new owner's lease is left alone"
    for prefix, objects in kept.items():
        assert _objects(out, prefix) == objects, f"{prefix}: nothing written after the lease was lost"
    assert any(x["level"] == "ERROR" and x["message"].startswith("LeaseLost") for x in _json_lines(log))


@pytest.mark.slow
def test_attempt_deadline_stops_the_run_with_exit_3_and_the_retry_finishes(
        tmp_path: Path, tiny_bert_dir: Path, sms_oracle: OracleHandle) -> None:
    """Batch would kill the attempt at its timeout and never retry it: the job stops itself first, state saved."""
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", 200)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_yaml(tmp_path / "config.yaml", job_config(classes=SMS, input_="in", output="out",
                                                          model_path=str(tiny_bert_dir), training__max_iters=1))
    env = cli_env(sms_oracle.base_url, {"AWS_BATCH_JOB_ID": "job-3"})
    log = tmp_path / "attempts.log"

    # 2 s pass here while the config loads and the adapters are built (the stop then comes before the first
    # step); a later deadline meets the same check between steps or in labeling, only at a time less certain.
    assert _finish(["run", str(cfg)], {**env, DEADLINE_ENV: "2"}, log) == EXIT_RETRY, log.read_text()[-3000:]
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(x["level"] == "WARNING" and DEADLINE_ENV in x["message"] for x in lines), "the log says why"
    stopped = json.loads((tmp_path / "out" / "state.json").read_text())
    assert stopped["status"] == "running" and stopped["step"] != "done"
    assert not (tmp_path / "out" / "lease.json").exists()

    # Batch's retry of exit 3, with a deadline that leaves room this time.
    assert _finish(["run", str(cfg)], {**env, DEADLINE_ENV: "600"}, log) == EXIT_OK, log.read_text()[-3000:]
    assert json.loads((tmp_path / "out" / "state.json").read_text())["step"] == "done"


@pytest.fixture
def target(s3_server: Any) -> BatchTarget:
    if s3_server.pid is None:
        pytest.skip("needs moto's server for Batch; the external S3 endpoint in use has no Batch API")
    return create_batch_target(s3_server.endpoint_url)


@pytest.mark.slow
def test_sharded_prediction_runs_as_an_array_job(
        tmp_path: Path, tiny_bert_dir: Path, sms_oracle: OracleHandle, s3_server: Any, s3_client: Any,
        s3_bucket: str, target: BatchTarget) -> None:
    config_uri = _upload_job(s3_client, s3_bucket, "sharded", tiny_bert_dir, 200, training__max_iters=1,
                             training__predict_shards=3)
    out = open_storage(f"s3://{s3_bucket}/jobs/sharded/output", s3_client=s3_client)
    env = cli_env(sms_oracle.base_url, {"AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_BATCH_JOB_ID": "parent-7",
                                        "AWS_BATCH_JQ_NAME": target.queue_name,
                                        "BOOTSTRAPPER_JOB_DEFINITION": target.definition_name})
    log = tmp_path / "parent.log"
    assert _finish(["run", config_uri], env, log) == EXIT_OK, log.read_text()[-3000:]
    assert _state(out)["step"] == "done"
    assert not list(out.list("classifiers/final_classifier_output/")), "the parent predicts nothing itself"

    batch = moto_client("batch", s3_server.endpoint_url)
    jobs = {j["jobName"]: j for j in jobs_in(batch, target.queue_arn) if ":" not in j["jobId"]}
    assert set(jobs) == {"bootstrapper-sharded-predict", "bootstrapper-sharded-report"}
    array, report = jobs["bootstrapper-sharded-predict"], jobs["bootstrapper-sharded-report"]
    assert array["jobName"] == "bootstrapper-sharded-predict"
    assert array["arrayProperties"]["size"] == 3
    assert array["jobDefinition"] == target.definition_arn and array["parameters"]["config_uri"] == config_uri
    assert array["container"]["command"] == ["predict-shard", config_uri, "--shards", "3"]
    assert json.loads(out.read_text(ARRAY_MARKER_KEY))["job_id"] == array["jobId"]
    # The report job: waits for the whole array job, then counts the shards.
    assert report["jobName"] == "bootstrapper-sharded-report"
    assert report["dependsOn"] == [{"jobId": array["jobId"]}]
    assert report["container"]["command"] == ["report", config_uri, "--shards", "3"]
    assert report["jobDefinition"] == target.definition_arn and report["jobQueue"] == target.queue_arn
    assert json.loads(out.read_text(REPORT_MARKER_KEY))["job_id"] == report["jobId"]
    pending = _state(out)["counters"]["predictions"]
    assert pending == {"status": "pending", "shards": 3, "jobs": {"array": array["jobId"], "report": report["jobId"]}}
    assert f"array job `{array['jobId']}`" in out.read_text("report.md")

    # Batch's children: the same command, each with its own AWS_BATCH_JOB_ARRAY_INDEX. Child 1 comes last.
    def child(index: int) -> int:
        child_env = {**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index), "AWS_BATCH_JOB_ID": f"{array['jobId']}:{index}"}
        return _finish(array["container"]["command"], child_env, log)

    report_env = {**env, "AWS_BATCH_JOB_ID": report["jobId"]}
    for index in (0, 2):
        assert child(index) == EXIT_OK, log.read_text()[-3000:]
    # A report run before child 1 delivered (by hand, after a failed child): counted, and child 1 named.
    assert _finish(report["container"]["command"], report_env, log) == EXIT_OK, log.read_text()[-3000:]
    partial = _state(out)["counters"]["predictions"]
    assert partial["status"] == "incomplete" and partial["missing_shards"] == [1]
    assert "- shard 1/3 (classifiers/final_classifier_output/predictions-part-00001-of-00003.jsonl): no prediction " \
           "file" in out.read_text("report.md")

    assert child(1) == EXIT_OK, log.read_text()[-3000:]
    parts = sorted(out.list("classifiers/final_classifier_output/"))
    assert parts == [f"classifiers/final_classifier_output/predictions-part-{i:05d}-of-00003.jsonl" for i in range(3)]
    rows = [json.loads(line) for key in parts for line in out.read_text(key).splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) == 200 - 40 - 60, "disjoint shards covering every chunk"

    assert _finish(report["container"]["command"], report_env, log) == EXIT_OK, log.read_text()[-3000:]
    done = _state(out)
    by_label: dict[str, int] = {}
    for r in rows:
        by_label[r["label"]] = by_label.get(r["label"], 0) + 1
    assert done["step"] == "done" and done["counters"]["predicted_chunks"] == 100
    assert done["counters"]["predictions"]["status"] == "complete"
    assert done["counters"]["predictions"]["by_label"] == by_label
    assert "100 of the 100 chunks the loop left unlabeled were predicted (in 3 shards)." in out.read_text("report.md")
    assert json.loads(out.read_text("metrics.json"))["predictions"]["by_label"] == by_label

    # A repeated run (a duplicate submission, a retry after the submit) submits neither job again, and
    # leaves the count alone.
    assert _finish(["run", config_uri], env, log) == EXIT_OK, log.read_text()[-3000:]
    assert len([j for j in jobs_in(batch, target.queue_arn) if ":" not in j["jobId"]]) == 2
    assert _state(out)["counters"]["predictions"]["status"] == "complete"
