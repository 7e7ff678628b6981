"""The S3 -> AWS Batch trigger Lambda: event parsing, job naming, and submission against moto's server.

Recorded S3 notification payloads live in ``tests/events/``. Submission runs against moto's standalone
server (S3 for the idempotency markers, Batch for the jobs) and, for the exact request, botocore's Stubber.
A hanging Batch API is ``SilentEndpoint``: the handler killed mid-submit is a process killed while it waits.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ConfigError, RetryableError
from handlers import s3_trigger
from handlers.s3_trigger import (
    RECLAIM_AFTER_S,
    S3Record,
    TriggerSettings,
    batch_job_name,
    job_folder,
    marker_key,
    marker_verdict,
    parse_event,
    process,
)
from tests.batch_helpers import (
    BatchTarget,
    SilentEndpoint,
    create_batch_target,
    jobs_in,
    load_event,
    moto_client,
)
from tests.fixtures.s3_server import make_test_client
from tests.pipeline_helpers import REPO, wait_for

BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
HEAVY = ("torch", "transformers", "litellm", "pydantic", "pydantic_settings", "yaml", "smart_open", "numpy")


def test_importing_the_handler_loads_nothing_heavy() -> None:
    code = ("import json, sys; import handlers.s3_trigger; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "keys"), [
    ("config_put.json", ["jobs/spam-filter/config.yaml"]),
    ("document_put.json", ["jobs/spam-filter/input/messages.jsonl"]),
    ("encoded_key_unversioned.json", ["jobs/Réunion notes (2025)/config.yaml"]),
    ("multi_record.json", ["jobs/tickets/config.yaml", "jobs/invoices_2025/config.yaml",
                           "jobs/tickets/input/config.yaml"]),
    ("s3_test_event.json", []),
], ids=["config", "document", "url-encoded-key", "multi-record", "s3-test-event"])
def test_parse_event_decodes_keys_once(name: str, keys: list[str]) -> None:
    records = parse_event(load_event(name))
    assert [r.key for r in records] == keys
    assert all(r.bucket == "example-bucket" for r in records)


def test_identity_is_the_version_id_else_etag_and_sequencer() -> None:
    versioned = parse_event(load_event("config_put.json"))[0]
    assert versioned.identity == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    plain = parse_event(load_event("encoded_key_unversioned.json"))[0]
    assert plain.version_id is None
    assert plain.identity == "0b6c2f8e1a9d4c7b3e5f2a1d8c9b0e7f:0065660C94E21B0A77"
    # A duplicate delivery has the same marker; uploading identical bytes again (new sequencer) does not.
    again = S3Record(**{**plain.__dict__, "sequencer": "0065660D000000AAAA"})
    assert marker_key(plain) == marker_key(S3Record(**plain.__dict__))
    assert marker_key(again) != marker_key(plain)
    assert marker_key(plain).startswith("triggers/") and not marker_key(plain).startswith("jobs/")


@pytest.mark.parametrize(("key", "folder"), [
    ("jobs/spam/config.yaml", "spam"),
    ("jobs/Réunion notes/config.yaml", "Réunion notes"),
    ("jobs/spam/input/config.yaml", None),
    ("jobs/spam/myconfig.yaml", None),
    ("jobs//config.yaml", None),
    ("jobs/config.yaml", None),
    ("other/spam/config.yaml", None),
    ("jobs/spam/input/a.txt", None),
], ids=["job", "spaces-unicode", "nested-in-input", "other-name-same-suffix", "empty-name", "no-folder",
        "outside-jobs", "document"])
def test_job_folder(key: str, folder: str | None) -> None:
    assert job_folder(key) == folder


@pytest.mark.parametrize(("folder", "expected"), [
    ("spam-filter", "bootstrapper-spam-filter"),
    ("invoices_2025", "bootstrapper-invoices_2025"),
    ("Réunion notes (2025)", r"bootstrapper-Reunion-notes-2025-[0-9a-f]{8}"),
    ("日本語", r"bootstrapper-[0-9a-f]{8}"),
], ids=["plain", "underscore", "accents-spaces", "no-ascii"])
def test_batch_job_name(folder: str, expected: str) -> None:
    # Valid names are kept as they are; changed names carry a hash of the original.
    got = batch_job_name(folder)
    assert re.fullmatch(expected, got) and BATCH_NAME.match(got)


@given(st.text(min_size=1, max_size=300).filter(lambda s: "/" not in s))
def test_batch_job_names_are_always_valid(folder: str) -> None:
    assert BATCH_NAME.match(batch_job_name(folder))


@given(st.lists(st.text(min_size=1, max_size=200), min_size=2, max_size=2, unique=True))
def test_different_folders_get_different_names(pair: list[str]) -> None:
    assert batch_job_name(pair[0]) != batch_job_name(pair[1])


@pytest.mark.parametrize(("marker", "age", "verdict"), [
    ({"job_id": "j-1"}, 5.0, "submitted"),
    ({"job_id": "j-1"}, 3600.0, "submitted"),
    ({}, 1.0, "claimed"),
    ({}, RECLAIM_AFTER_S - 0.5, "claimed"),
    ({}, RECLAIM_AFTER_S, "abandoned"),
    ({"claimed_at": "yesterday"}, None, "abandoned"),
    ({"job_id": ""}, 1.0, "claimed"),
], ids=["submitted", "submitted-long-ago", "fresh-claim", "claim-just-young-enough", "claim-abandoned",
        "unreadable-claim", "empty-job-id"])
def test_marker_verdict(marker: dict[str, Any], age: float | None, verdict: str) -> None:
    now = 1_000_000.0
    if age is not None:
        marker = {**marker, "claimed_at": now - age}
    assert marker_verdict(marker, now) == verdict


def test_settings_come_from_the_environment() -> None:
    got = TriggerSettings.from_environ({"BOOTSTRAPPER_JOB_QUEUE": "q", "BOOTSTRAPPER_JOB_DEFINITION": "d"})
    assert got == TriggerSettings(job_queue="q", job_definition="d")
    with pytest.raises(ConfigError, match="BOOTSTRAPPER_JOB_DEFINITION"):
        TriggerSettings.from_environ({"BOOTSTRAPPER_JOB_QUEUE": "q"})


# --- against moto's server -----------------------------------------------------------------------


@pytest.fixture
def target(s3_server: Any) -> BatchTarget:
    if s3_server.pid is None:
        pytest.skip("needs moto's server for Batch; the external S3 endpoint in use has no Batch API")
    return create_batch_target(s3_server.endpoint_url)


@pytest.fixture
def batch(s3_server: Any) -> Any:
    return moto_client("batch", s3_server.endpoint_url)


def _settings(target: BatchTarget) -> TriggerSettings:
    return TriggerSettings(job_queue=target.queue_arn, job_definition=target.definition_arn)


def _markers(s3_client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="triggers/").get("Contents", [])]


def test_config_upload_submits_one_job_and_a_duplicate_delivery_none(
        target: BatchTarget, batch: Any, s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="jobs/spam-filter/config.yaml", Body=b"classification: {}\n")
    event = load_event("config_put.json", s3_bucket)

    first = process(event, _settings(target), s3_client, batch)
    assert [s["job_name"] for s in first["submitted"]] == ["bootstrapper-spam-filter"]
    jobs = jobs_in(batch, target.queue_arn)
    assert len(jobs) == 1
    job = jobs[0]
    assert job["jobId"] == first["submitted"][0]["job_id"]
    assert job["jobName"] == "bootstrapper-spam-filter"
    assert job["jobQueue"] == target.queue_arn
    assert job["jobDefinition"] == target.definition_arn
    assert job["parameters"]["config_uri"] == f"s3://{s3_bucket}/jobs/spam-filter/config.yaml"
    marker = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=_markers(s3_client, s3_bucket)[0])["Body"].read())
    assert marker["config_uri"] == job["parameters"]["config_uri"]
    assert marker["job_id"] == job["jobId"], "the marker names the job, so later deliveries are duplicates"

    second = process(event, _settings(target), s3_client, batch)
    assert second["submitted"] == [] and second["duplicates"] == [job["parameters"]["config_uri"]]
    assert len(jobs_in(batch, target.queue_arn)) == 1


def test_document_uploads_submit_nothing(target: BatchTarget, batch: Any, s3_client: Any, s3_bucket: str) -> None:
    summary = process(load_event("document_put.json", s3_bucket), _settings(target), s3_client, batch)
    assert summary["submitted"] == [] and len(summary["ignored"]) == 1
    assert jobs_in(batch, target.queue_arn) == []
    assert _markers(s3_client, s3_bucket) == []


def test_s3_test_event_submits_nothing(target: BatchTarget, batch: Any, s3_client: Any, s3_bucket: str) -> None:
    summary = process(load_event("s3_test_event.json"), _settings(target), s3_client, batch)
    assert summary == {"submitted": [], "duplicates": [], "ignored": []}
    assert jobs_in(batch, target.queue_arn) == []


def test_several_records_one_job_per_config(target: BatchTarget, batch: Any, s3_client: Any, s3_bucket: str) -> None:
    summary = process(load_event("multi_record.json", s3_bucket), _settings(target), s3_client, batch)
    assert sorted(s["job_name"] for s in summary["submitted"]) == ["bootstrapper-invoices_2025",
                                                                  "bootstrapper-tickets"]
    assert [i["key"] for i in summary["ignored"]] == ["jobs/tickets/input/config.yaml"]
    jobs = jobs_in(batch, target.queue_arn)
    assert sorted(j["parameters"]["config_uri"] for j in jobs) == [
        f"s3://{s3_bucket}/jobs/invoices_2025/config.yaml", f"s3://{s3_bucket}/jobs/tickets/config.yaml"]


def test_encoded_key_reaches_batch_decoded(target: BatchTarget, batch: Any, s3_client: Any, s3_bucket: str) -> None:
    summary = process(load_event("encoded_key_unversioned.json", s3_bucket), _settings(target), s3_client, batch)
    (job,) = jobs_in(batch, target.queue_arn)
    assert job["parameters"]["config_uri"] == f"s3://{s3_bucket}/jobs/Réunion notes (2025)/config.yaml"
    assert job["jobName"] == summary["submitted"][0]["job_name"]
    assert BATCH_NAME.match(job["jobName"]) and job["jobName"].startswith("bootstrapper-Reunion-notes-2025-")


def test_failed_submit_releases_the_claim_so_a_retry_submits(
        target: BatchTarget, batch: Any, s3_client: Any, s3_bucket: str) -> None:
    event = load_event("config_put.json", s3_bucket)
    with Stubber(batch) as stub:
        stub.add_client_error("submit_job", service_error_code="ServerException", http_status_code=500)
        with pytest.raises(ClientError):
            process(event, _settings(target), s3_client, batch)
    assert _markers(s3_client, s3_bucket) == []
    retry = process(event, _settings(target), s3_client, batch)
    assert len(retry["submitted"]) == 1 and len(jobs_in(batch, target.queue_arn)) == 1


def test_submit_job_request_is_exact(s3_client: Any, s3_bucket: str) -> None:
    batch = moto_client("batch", "http://127.0.0.1:9")  # never contacted: the Stubber answers
    settings = TriggerSettings(job_queue="arn:aws:batch:us-east-1:123456789012:job-queue/bootstrapper-dev",
                               job_definition="arn:aws:batch:us-east-1:123456789012:job-definition/bootstrapper-dev:3")
    expected = {"jobName": "bootstrapper-tickets", "jobQueue": settings.job_queue,
                "jobDefinition": settings.job_definition,
                "parameters": {"config_uri": f"s3://{s3_bucket}/jobs/tickets/config.yaml"}}
    with Stubber(batch) as stub:
        stub.add_response("submit_job", {"jobName": "bootstrapper-tickets", "jobId": "7d1c0b6e-job"}, expected)
        stub.add_response("submit_job", {"jobName": "bootstrapper-invoices_2025", "jobId": "8e2d1c7f-job"},
                          {**expected, "jobName": "bootstrapper-invoices_2025",
                           "parameters": {"config_uri": f"s3://{s3_bucket}/jobs/invoices_2025/config.yaml"}})
        summary = process(load_event("multi_record.json", s3_bucket), settings, s3_client, batch)
        stub.assert_no_pending_responses()
    assert [s["job_id"] for s in summary["submitted"]] == ["7d1c0b6e-job", "8e2d1c7f-job"]


def test_lambda_entry_point_reads_env_and_logs_json(
        target: BatchTarget, s3_server: Any, s3_bucket: str, batch: Any,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BOOTSTRAPPER_JOB_QUEUE", target.queue_name)
    monkeypatch.setenv("BOOTSTRAPPER_JOB_DEFINITION", target.definition_name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)  # boto3 reads it for every client
    monkeypatch.setattr(s3_trigger, "_clients", {})
    monkeypatch.setattr(s3_trigger.log, "handlers", [])  # the handler adds its own; restored afterwards
    monkeypatch.setattr(s3_trigger.log, "propagate", True)
    summary = s3_trigger.handler(load_event("config_put.json", s3_bucket), None)
    (job,) = jobs_in(batch, target.queue_arn)
    assert summary["submitted"][0]["job_id"] == job["jobId"]
    assert job["jobDefinition"] == target.definition_arn
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["message"], x["job_id"]) for x in lines] == [("submitted", job["jobId"])]


# --- a killed invocation never loses the upload ---------------------------------------------------

# The Lambda entry point as its own process, so that it can be killed like Lambda kills it at its timeout.
_HANDLER = "import json, sys; from handlers import s3_trigger; s3_trigger.handler(json.load(open(sys.argv[1])))"


def _marker(s3_client: Any, bucket: str) -> dict[str, Any]:
    (key,) = _markers(s3_client, bucket)
    return dict(json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()))


@pytest.mark.slow
def test_an_invocation_killed_mid_submit_loses_nothing_and_submits_once(
        target: BatchTarget, batch: Any, s3_server: Any, s3_client: Any, s3_bucket: str, tmp_path: Path) -> None:
    event = load_event("config_put.json", s3_bucket)
    (tmp_path / "event.json").write_text(json.dumps(event))
    with SilentEndpoint() as hanging_batch:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        env.update({"AWS_ENDPOINT_URL_S3": s3_server.endpoint_url, "AWS_ENDPOINT_URL_BATCH": hanging_batch.url,
                    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", s3_trigger.QUEUE_ENV: target.queue_name,
                    s3_trigger.DEFINITION_ENV: target.definition_name})
        proc = subprocess.Popen([sys.executable, "-c", _HANDLER, str(tmp_path / "event.json")], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            claimed = wait_for(lambda: bool(_markers(s3_client, s3_bucket)) and any(
                "/v1/submitjob" in r for r in hanging_batch.requests), proc, timeout=60)
            assert claimed, "the handler claimed the upload and called SubmitJob"
        finally:
            proc.send_signal(signal.SIGKILL)  # as Lambda does at the function's timeout
            proc.wait(timeout=10)
    assert "job_id" not in _marker(s3_client, s3_bucket) and jobs_in(batch, target.queue_arn) == []

    # Lambda's first retry, a minute later: the claim may still be live, so it fails and is retried again.
    with pytest.raises(RetryableError, match="a retry after 120 s takes it over"):
        process(event, _settings(target), s3_client, batch)
    assert jobs_in(batch, target.queue_arn) == []
    # The second retry, two minutes after that: the claim is abandoned; this delivery takes it over and submits.
    later = time.time() + RECLAIM_AFTER_S + 1
    summary = process(event, _settings(target), s3_client, batch, now=lambda: later)
    (job,) = jobs_in(batch, target.queue_arn)
    assert summary["submitted"] == [{"config_uri": job["parameters"]["config_uri"], "job_name": job["jobName"],
                                     "job_id": job["jobId"]}]
    assert _marker(s3_client, s3_bucket)["job_id"] == job["jobId"]
    # S3 delivering the event yet again, even much later: a duplicate.
    again = process(event, _settings(target), s3_client, batch, now=lambda: later + 3600)
    assert again["duplicates"] == [job["parameters"]["config_uri"]] and len(jobs_in(batch, target.queue_arn)) == 1


def _deliver(event: dict[str, Any], settings: TriggerSettings, s3: Any, batch: Any, start: threading.Barrier,
             outcomes: list[str]) -> None:
    start.wait()
    try:
        summary = process(event, settings, s3, batch)
        outcomes.append("submitted" if summary["submitted"] else "duplicate")
    except RetryableError:
        outcomes.append("retry")


def test_racing_retries_take_over_an_abandoned_claim_exactly_once(
        target: BatchTarget, s3_server: Any, s3_client: Any, s3_bucket: str) -> None:
    """Several deliveries meet one abandoned claim at once: the conditional put lets exactly one submit."""
    racers = 4
    s3s = [make_test_client(s3_server.endpoint_url) for _ in range(racers)]  # one client per "invocation"
    batches = [moto_client("batch", s3_server.endpoint_url) for _ in range(racers)]
    for round_ in range(8):
        event = load_event("config_put.json", s3_bucket)
        event["Records"][0]["s3"]["object"]["versionId"] = f"version-{round_}"  # a new upload each round
        record = parse_event(event)[0]
        abandoned = {"config_uri": record.uri, "claimed_at": time.time() - RECLAIM_AFTER_S - 5}
        s3_client.put_object(Bucket=s3_bucket, Key=marker_key(record), Body=json.dumps(abandoned).encode())
        start = threading.Barrier(racers)
        outcomes: list[str] = []
        threads = [threading.Thread(target=_deliver, args=(event, _settings(target), s3s[i], batches[i], start,
                                                           outcomes)) for i in range(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert outcomes.count("submitted") == 1 and len(outcomes) == racers, (round_, outcomes)
    assert len(jobs_in(moto_client("batch", s3_server.endpoint_url), target.queue_arn)) == 8


@pytest.mark.slow
def test_a_hanging_batch_api_costs_seconds_not_the_function_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's defaults would wait 60 s per attempt, past Lambda's 60 s: our clients give up in ~15 s."""
    from botocore.exceptions import ReadTimeoutError

    with SilentEndpoint() as hanging:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", hanging.url)
        monkeypatch.setattr(s3_trigger, "_clients", {})
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            s3_trigger._client("batch").submit_job(jobName="j", jobQueue="q", jobDefinition="d")
        took = time.monotonic() - started
    attempts, read = s3_trigger.MAX_ATTEMPTS, s3_trigger.READ_TIMEOUT_S
    assert len(hanging.requests) == attempts
    assert attempts * read <= took < attempts * read + 10, took  # three reads, backoff between them
