"""AWS Lambda handler: uploading ``jobs/<name>/config.yaml`` submits one AWS Batch job for that job folder.

The convention: a user uploads documents under ``jobs/<name>/input/`` first, then ``jobs/<name>/config.yaml``
(whose relative ``path.input``/``path.output``, ``input`` and ``output`` by default, resolve against that
folder). The config upload is the trigger; document uploads start nothing.

    S3 event ─► parse_event() ─► job_folder(key)? ─► claim marker ─► batch.submit_job ─► job id in marker

Does: wrap the raw event in small typed records (keys URL-decoded here, once), ignore S3's ``s3:TestEvent``
and every object that is not ``jobs/<name>/config.yaml``, claim each config object *version* with a
conditional put (``IfNoneMatch="*"``) of ``triggers/<sha256>.json``, submit one Batch job whose parameter
``config_uri`` names the config, write the job id into the marker, return a summary and log JSON lines.

A later delivery of the same upload (S3 and Lambda both deliver at least once) reads the marker: one that
names a job is a duplicate and submits nothing. One without a job id is a claim whose invocation is still
submitting, or died doing so (Lambda kills an invocation at its timeout, whatever it was doing): younger than
``RECLAIM_AFTER_S`` the delivery fails, so that Lambda retries it later; older, it is abandoned, and the
delivery takes it over with a put conditional on the marker's ETag (``IfMatch``), so that of two retries
racing for it exactly one wins and submits. An upload is never lost to a killed invocation; at worst (a
SubmitJob that reached Batch just before the kill) a second job starts, which the run's lease and resume
make harmless. When every retry fails, the event goes to the function's on-failure queue (serverless.yml).

Does not: read or validate the config (the Batch job does and exits 2 on a bad one), retry Batch calls
itself beyond botocore's standard mode (Lambda's asynchronous retries do; a failed submit releases its
marker first), or import anything heavier than boto3 and ``core.errors`` (the deployment zip holds just
those files; a cold start stays fast).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError, RetryableError

JOBS_PREFIX = "jobs/"
CONFIG_NAME = "config.yaml"
MARKER_PREFIX = "triggers/"
CONFIG_URI_PARAMETER = "config_uri"  # the job definition's command refers to it as Ref::config_uri
JOB_NAME_PREFIX = "bootstrapper-"
MAX_JOB_NAME = 128
QUEUE_ENV = "BOOTSTRAPPER_JOB_QUEUE"
DEFINITION_ENV = "BOOTSTRAPPER_JOB_DEFINITION"
_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
# Twice the function's 60 s timeout (serverless.yml): an invocation that wrote a claim is dead by then. Lambda
# retries a failed event after 1 and then 2 more minutes, so the second retry always finds such a claim abandoned.
RECLAIM_AFTER_S = 120.0
# Per call at most 3 x (2 + 5) s plus ~3 s of backoff, well inside the function's timeout; botocore's defaults
# (60 s to connect, 60 s to read, and retries on top) outlast it, and Lambda would kill the invocation mid-call.
CONNECT_TIMEOUT_S, READ_TIMEOUT_S, MAX_ATTEMPTS = 2, 5, 3  # attempts in all, the first included
SUBMITTED, CLAIMED, ABANDONED = "submitted", "claimed", "abandoned"

log = logging.getLogger("bootstrapper.trigger")


# --- typed event ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Record:
    """One record of an S3 event notification, key already URL-decoded."""

    event_name: str
    bucket: str
    key: str
    etag: str
    sequencer: str
    version_id: str | None  # None on an unversioned bucket

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def identity(self) -> str:
        """Names this object version: the version id, else ETag plus sequencer.

        On an unversioned bucket the sequencer tells a second upload of identical bytes (a deliberate re-run,
        same ETag) from a duplicate delivery of one upload (same sequencer too).
        """
        return self.version_id or f"{self.etag}:{self.sequencer}"

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> S3Record:
        s3 = record["s3"]
        obj = s3["object"]
        return cls(event_name=record.get("eventName", ""), bucket=s3["bucket"]["name"],
                   # S3 form-encodes keys in notifications: "+" is a space, "%C3%A9" is "é".
                   key=urllib.parse.unquote_plus(obj["key"]), etag=obj.get("eTag", ""),
                   sequencer=obj.get("sequencer", ""), version_id=obj.get("versionId") or None)


def parse_event(event: Mapping[str, Any]) -> list[S3Record]:
    """The event's records; ``[]`` for the ``s3:TestEvent`` S3 sends when a notification is configured."""
    if event.get("Event") == "s3:TestEvent":
        return []
    return [S3Record.from_dict(r) for r in event.get("Records", []) if r.get("eventSource") == "aws:s3"]


# --- pure rules ----------------------------------------------------------------------------------


def job_folder(key: str) -> str | None:
    """``"jobs/<name>/config.yaml"`` -> ``"<name>"``; any other key (documents, nested configs) -> None.

    >>> job_folder("jobs/spam filter/config.yaml"), job_folder("jobs/a/input/config.yaml")
    ('spam filter', None)
    """
    parts = key.split("/")
    if len(parts) == 3 and parts[0] + "/" == JOBS_PREFIX and parts[1] and parts[2] == CONFIG_NAME:
        return parts[1]
    return None


def batch_job_name(folder: str) -> str:
    """A valid AWS Batch job name for a job folder: letters, digits, ``-`` and ``_``, at most 128 characters.

    Accents are folded to ASCII and other runs of characters become ``-``; when that changed the name a short
    hash of the original keeps different folders apart ("日本" and "中国" would both fold to nothing), as it
    does when a long name is cut.

    >>> batch_job_name("spam_filter-2"), batch_job_name("Réunion notes")
    ('bootstrapper-spam_filter-2', 'bootstrapper-Reunion-notes-48f72fd6')
    """
    ascii_name = unicodedata.normalize("NFKD", folder).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_name).strip("-_")
    room = MAX_JOB_NAME - len(JOB_NAME_PREFIX)  # the prefix starts with a letter, as Batch requires
    if cleaned != folder or len(cleaned) > room:
        digest = hashlib.sha256(folder.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: room - 9]}-{digest}" if cleaned else digest
    return JOB_NAME_PREFIX + cleaned


def marker_key(record: S3Record) -> str:
    digest = hashlib.sha256(f"{record.bucket}\n{record.key}\n{record.identity}".encode()).hexdigest()
    return f"{MARKER_PREFIX}{digest}.json"


@dataclass(frozen=True)
class TriggerSettings:
    job_queue: str
    job_definition: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> TriggerSettings:
        missing = [name for name in (QUEUE_ENV, DEFINITION_ENV) if not environ.get(name)]
        if missing:
            raise ConfigError(missing[0], f"the trigger needs the environment variables {QUEUE_ENV} and "
                                          f"{DEFINITION_ENV} (serverless.yml sets both); missing {missing}")
        return cls(job_queue=environ[QUEUE_ENV], job_definition=environ[DEFINITION_ENV])


def marker_verdict(marker: Mapping[str, Any], now: float) -> str:
    """What an earlier delivery's marker says: ``submitted`` (it names a job), else ``claimed`` by an
    invocation that may still be submitting, or ``abandoned`` when older than ``RECLAIM_AFTER_S``.

    >>> marker_verdict({"claimed_at": 1000.0, "job_id": "j-1"}, 9999.0), marker_verdict({"claimed_at": 1000.0}, 1060.0)
    ('submitted', 'claimed')
    """
    if marker.get("job_id"):
        return SUBMITTED
    claimed_at = marker.get("claimed_at")
    if isinstance(claimed_at, (int, float)) and now - claimed_at < RECLAIM_AFTER_S:
        return CLAIMED
    return ABANDONED  # also a marker we cannot read: nothing in it proves a live claim


def submit_request(record: S3Record, settings: TriggerSettings) -> dict[str, Any]:
    """The SubmitJob request for one config upload."""
    folder = job_folder(record.key)
    if folder is None:
        raise ValueError(f"{record.key!r} is not a job config key")
    return {"jobName": batch_job_name(folder), "jobQueue": settings.job_queue,
            "jobDefinition": settings.job_definition, "parameters": {CONFIG_URI_PARAMETER: record.uri}}


# --- effects -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    key: str
    etag: str  # of the marker as this invocation wrote it: later writes are conditional on it
    body: Mapping[str, Any]


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _put_marker(s3: Any, record: S3Record, key: str, body: Mapping[str, Any], **condition: str) -> str | None:
    """Write the marker under ``condition`` (IfNoneMatch or IfMatch); its new ETag, None if another delivery won."""
    from botocore.exceptions import ClientError

    try:
        response = s3.put_object(Bucket=record.bucket, Key=key, Body=json.dumps(body).encode(),
                                 ContentType="application/json", **condition)
    except ClientError as exc:
        if _error_code(exc) in _LOST_RACE_CODES:
            return None
        raise
    return str(response["ETag"])


def _claim(s3: Any, record: S3Record, request: Mapping[str, Any], now: float) -> Claim | None:
    """Claim the record's marker, taking over an abandoned one; None when an earlier delivery submitted the job.

    Raises ``RetryableError`` while another invocation's claim is young, so that Lambda retries this event.
    """
    from botocore.exceptions import ClientError

    key = marker_key(record)
    body = {"config_uri": record.uri, "identity": record.identity, "job_name": request["jobName"],
            "claimed_at": round(now, 3)}
    etag = _put_marker(s3, record, key, body, IfNoneMatch="*")
    if etag is not None:
        return Claim(key, etag, body)
    try:
        held = s3.get_object(Bucket=record.bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchKey", "404"):  # released by a failed submit since our put
            raise RetryableError(f"{record.uri}: the claim {key} went away while being read; retry") from exc
        raise
    try:
        marker = json.loads(held["Body"].read())
    except ValueError:
        marker = {}
    verdict = marker_verdict(marker if isinstance(marker, dict) else {}, now)
    if verdict == SUBMITTED:
        return None
    if verdict == CLAIMED:
        raise RetryableError(f"{record.uri}: another invocation claimed it at {marker.get('claimed_at')} and has "
                             f"not recorded a job yet; a retry after {RECLAIM_AFTER_S:.0f} s takes it over")
    etag = _put_marker(s3, record, key, body, IfMatch=str(held["ETag"]))
    if etag is None:
        raise RetryableError(f"{record.uri}: another delivery took over the abandoned claim {key} first")
    _log("reclaimed", config_uri=record.uri, marker=key, abandoned=marker)
    return Claim(key, etag, body)


def _record_job(s3: Any, record: S3Record, claim: Claim, job_id: str, now: float) -> None:
    """Write the job id into the marker, so that later deliveries see a duplicate; never fails the invocation.

    The job is submitted already: failing now would only have Lambda retry into a second job.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    body = {**claim.body, "job_id": job_id, "submitted_at": round(now, 3)}
    try:
        written = _put_marker(s3, record, claim.key, body, IfMatch=claim.etag)
    except (BotoCoreError, ClientError) as exc:
        log.error("job %s submitted, but its marker %s was not updated: %s", job_id, claim.key, exc)
        return
    if written is None:  # taken over meanwhile: the taker records its own job
        log.warning("job %s submitted, but another delivery took over the claim %s meanwhile", job_id, claim.key)


def process(event: Mapping[str, Any], settings: TriggerSettings, s3: Any, batch: Any,
            now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Submit one job per new config upload in ``event``; returns what was submitted, skipped and ignored."""
    summary: dict[str, list[Any]] = {"submitted": [], "duplicates": [], "ignored": []}
    for record in parse_event(event):
        if not record.event_name.startswith("ObjectCreated:"):
            summary["ignored"].append({"key": record.key, "reason": f"event {record.event_name}"})
            continue
        if job_folder(record.key) is None:
            summary["ignored"].append({"key": record.key, "reason": f"not {JOBS_PREFIX}<name>/{CONFIG_NAME}"})
            continue
        request = submit_request(record, settings)
        claim = _claim(s3, record, request, now())
        if claim is None:
            _log("duplicate", config_uri=record.uri, identity=record.identity)
            summary["duplicates"].append(record.uri)
            continue
        try:
            response = batch.submit_job(**request)
        except Exception:
            # Release the claim so Lambda's retry of this event can submit; the error still fails this call.
            s3.delete_object(Bucket=record.bucket, Key=claim.key)
            raise
        _record_job(s3, record, claim, response["jobId"], now())
        _log("submitted", config_uri=record.uri, job_name=request["jobName"], job_id=response["jobId"],
             job_queue=settings.job_queue)
        summary["submitted"].append({"config_uri": record.uri, "job_name": request["jobName"],
                                     "job_id": response["jobId"]})
    for item in summary["ignored"]:
        _log("ignored", **item)
    return summary


# --- logging and the Lambda edge -----------------------------------------------------------------


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        return json.dumps({"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                           "message": record.getMessage(), **fields}, ensure_ascii=False)


def _log(message: str, **fields: Any) -> None:
    log.info(message, extra={"fields": fields})


def _configure_logging() -> None:
    # Our own stdout handler: Lambda's root handler would prefix each line and break the JSON.
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_JsonLines())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


_clients: dict[str, Any] = {}


def _client(service: str) -> Any:
    """One boto3 client per service and warm container (creating one costs tens of milliseconds)."""
    if service not in _clients:
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS})
        _clients[service] = boto3.client(service, config=config)
    return _clients[service]


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (``handlers/s3_trigger.handler``)."""
    _configure_logging()
    settings = TriggerSettings.from_environ(os.environ)
    return process(event, settings, _client("s3"), _client("batch"))
