"""Helpers for the AWS Batch tests: recorded S3 events, a job queue plus job definition in moto's server, and
an endpoint that never answers (a Batch API that hangs).

moto's Batch runs submitted jobs in Docker unless told otherwise; there is no Docker engine here, so
``batch_target`` switches the server to moto's "simple batch" backend (``POST /moto-api/config``), which
records jobs and marks them SUCCEEDED without running anything. ``describe_jobs`` then shows exactly what
was submitted, which is what these tests assert.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import boto3

EVENTS = Path(__file__).resolve().parent / "events"
RECORDED_BUCKET = "example-bucket"


def load_event(name: str, bucket: str | None = None) -> dict[str, Any]:
    """A recorded S3 event from ``tests/events/``, its bucket renamed to ``bucket`` when given."""
    event = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    if bucket is None:
        return event
    event = copy.deepcopy(event)
    for record in event.get("Records", []):
        record["s3"]["bucket"]["name"] = bucket
        record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    return event


def moto_client(service: str, endpoint_url: str) -> Any:
    return boto3.session.Session().client(service, endpoint_url=endpoint_url, region_name="us-east-1",
                                          aws_access_key_id="testing", aws_secret_access_key="testing")


@dataclass(frozen=True)
class BatchTarget:
    queue_arn: str
    queue_name: str
    definition_arn: str
    definition_name: str


def use_simple_batch(endpoint_url: str) -> None:
    request = urllib.request.Request(f"{endpoint_url}/moto-api/config", method="POST",
                                     data=json.dumps({"batch": {"use_docker": False}}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        if json.loads(response.read())["batch"]["use_docker"] is not False:
            raise RuntimeError("moto did not switch to its Docker-free Batch backend")


def create_batch_target(endpoint_url: str) -> BatchTarget:
    """A fresh compute environment, job queue and job definition shaped like serverless.yml's."""
    use_simple_batch(endpoint_url)
    uid = uuid.uuid4().hex[:10]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "batch.amazonaws.com"}}]}
    role = moto_client("iam", endpoint_url).create_role(RoleName=f"batch-service-{uid}",
                                                        AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    batch = moto_client("batch", endpoint_url)
    env = batch.create_compute_environment(computeEnvironmentName=f"ce-{uid}", type="UNMANAGED", state="ENABLED",
                                           serviceRole=role)
    queue = batch.create_job_queue(jobQueueName=f"queue-{uid}", state="ENABLED", priority=1,
                                   computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}])
    definition = batch.register_job_definition(
        jobDefinitionName=f"bootstrapper-{uid}", type="container",
        containerProperties={"image": "classifier-bootstrapper:test", "command": ["run", "Ref::config_uri"],
                             "resourceRequirements": [{"type": "VCPU", "value": "2"},
                                                      {"type": "MEMORY", "value": "4096"}]},
        retryStrategy={"attempts": 3, "evaluateOnExit": [{"onExitCode": "3", "action": "RETRY"},
                                                         {"onReason": "*", "action": "EXIT"}]})
    return BatchTarget(queue_arn=queue["jobQueueArn"], queue_name=queue["jobQueueName"],
                       definition_arn=definition["jobDefinitionArn"], definition_name=definition["jobDefinitionName"])


def jobs_in(batch: Any, queue: str) -> list[dict[str, Any]]:
    """Every job ever submitted to ``queue`` (moto's simple backend finishes them at once), described."""
    ids = [j["jobId"] for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
           for j in batch.list_jobs(jobQueue=queue, jobStatus=status)["jobSummaryList"]]
    return batch.describe_jobs(jobs=ids)["jobs"] if ids else []


class SilentEndpoint:
    """An HTTP endpoint that reads each request and never answers, until closed.

    What a client meets when a service hangs: the connection opens, the request goes out, no reply comes.
    ``requests`` holds the request line of each request read, e.g. ``POST /v1/submitjob HTTP/1.1``.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[str] = []
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
                self._open.append(conn)  # held open, unanswered
                head = conn.recv(65536)
            except OSError:  # closed
                return
            self.requests.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))

    def close(self) -> None:
        self._listener.close()
        for conn in self._open:
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
