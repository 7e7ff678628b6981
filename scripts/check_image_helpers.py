"""Host-side helpers of scripts/check_image.sh: build arguments from this machine's pip, jobs in the S3 server, checks.

Run with the repository's .venv Python (boto3, pyyaml); it talks to the moto S3 server with plain boto3 and
imports nothing from core/ or handlers/, so restructuring those packages never breaks the image check.

    pip-build-args                       lines "volume PATH" and "arg OPTION" from `pip config list`
    free-port                            a free TCP port on 127.0.0.1
    wait-http TIMEOUT URL...             until every URL answers (any HTTP status)
    oracle-reset ORACLE_URL / oracle-repeated ORACLE_URL   the oracle's call counters: reset, calls paid twice
    upload ENDPOINT BUCKET NAME ROWS     documents, then the config, under jobs/NAME/ (a small real job)
    upload-bad ENDPOINT BUCKET NAME      a config with a misspelt section (exit 2 expected)
    wait-labeling ENDPOINT BUCKET NAME TIMEOUT CMD...   until the job labels its test set (a mid-run moment),
                                         failing early once CMD (e.g. `podman inspect ...`) no longer prints true
    check-stopped ENDPOINT BUCKET NAME   state saved at a labeling step, lease released
    check-done ENDPOINT BUCKET NAME ROWS state done, report, classifier, one prediction per unlabeled chunk
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.config
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "sms" / "sms_spam.jsonl"  # also the oracle's data: its labels answer the "LLM"
TEST_SET, TRAIN_SET = 40, 40


def fail(message: str) -> None:
    sys.exit(f"check_image: {message}")


# --- build arguments -----------------------------------------------------------------------------


def pip_build_args() -> None:
    """The local wheel directories, local indexes and CA bundle this machine's pip uses, as mounts and options.

    Each local path is mounted read-only at the same path in the build, so the options read as they do here;
    for a local index, the folder holding it (its pages link to files beside it).
    Remote indexes pass through unless they carry credentials (a build argument is no place for a secret).
    The constraint file is left out: it only caps versions this machine holds on disk.
    """
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    seen: set[str] = set()
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option not in ("find-links", "extra-index-url", "index-url", "cert"):
            continue
        for item in value.strip().strip("'\"").split():
            if (option, item) in seen:
                continue
            seen.add((option, item))  # type: ignore[arg-type]
            url = urlparse(item)
            if url.scheme in ("http", "https"):
                if url.username or url.password:
                    print(f"check_image: leaving out pip's {option} {url.hostname}: it carries credentials",
                          file=sys.stderr)
                    continue
                print(f"arg --{option} {item}")
                continue
            path = url.path if url.scheme == "file" else item
            if not os.path.exists(path):
                continue
            # A local index's pages link to files beside it (/opt/pypi/simple -> /opt/pypi/files): mount both.
            print(f"volume {os.path.dirname(path) if option.endswith('index-url') else path}")
            print(f"arg --{option} {item}")


def free_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        print(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def wait_http(timeout: str, *urls: str) -> None:
    deadline = time.monotonic() + float(timeout)
    for url in urls:
        while not _answers(url):
            if time.monotonic() > deadline:
                fail(f"{url} did not answer within {timeout} s")
            time.sleep(0.1)


def oracle_reset(root: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{root}/stats/reset", method="POST", data=b""), timeout=10).close()


def oracle_repeated(root: str) -> None:
    with urllib.request.urlopen(f"{root}/stats?prompts=0", timeout=10) as response:
        print(json.loads(response.read())["repeated_ok_prompts"])


# --- jobs in the S3 server -----------------------------------------------------------------------


def s3(endpoint: str) -> Any:
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                          aws_access_key_id="testing", aws_secret_access_key="testing",
                                          config=botocore.config.Config(s3={"addressing_style": "path"}))


def job_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """A small real job on the bundled base model: one iteration, one epoch, about a minute on 2 cores."""
    cfg: dict[str, Any] = {
        "classification": {"classes": ["ham", "spam"], "desc": "Spam: unsolicited advertising or scams. Ham: the rest.",
                           "predict_on_whole_set_at_the_end": True},
        "system": {"required_accuracy": 0.999, "concurrency_limit": 4, "seed": 3, "llm_timeout_s": 30,
                   "torch_threads": 2},
        "training": {"max_iters": 1, "test_set_size": TEST_SET, "train_set_size": TRAIN_SET, "epochs": 1,
                     "min_steps": 0, "batch_size": 16, "max_length": 64},
        "api": {"large_model": "openai/oracle-large", "small_model": "openai/oracle-small"},
        "path": {"input": "input", "output": "output"},
    }
    cfg.update(sections)
    return cfg


def _bucket(endpoint: str, bucket: str) -> Any:
    client = s3(endpoint)
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return client


def upload(endpoint: str, bucket: str, name: str, rows: str) -> None:
    client = _bucket(endpoint, bucket)
    lines = DATA.read_text(encoding="utf-8").splitlines()[: int(rows)]
    documents = "".join(json.dumps({"text": json.loads(line)["text"]}) + "\n" for line in lines)
    client.put_object(Bucket=bucket, Key=f"jobs/{name}/input/messages.jsonl", Body=documents.encode())
    client.put_object(Bucket=bucket, Key=f"jobs/{name}/config.yaml", Body=yaml.safe_dump(job_config()).encode())
    print(f"s3://{bucket}/jobs/{name}/config.yaml")


def upload_bad(endpoint: str, bucket: str, name: str) -> None:
    cfg = job_config()
    cfg["trainng"] = cfg.pop("training")
    client = _bucket(endpoint, bucket)
    client.put_object(Bucket=bucket, Key=f"jobs/{name}/config.yaml", Body=yaml.safe_dump(cfg).encode())
    print(f"s3://{bucket}/jobs/{name}/config.yaml")


def _state(client: Any, bucket: str, name: str) -> dict[str, Any] | None:
    try:
        body = client.get_object(Bucket=bucket, Key=f"jobs/{name}/output/state.json")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return dict(json.loads(body))


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def wait_labeling(endpoint: str, bucket: str, name: str, timeout: str, *running: str) -> None:
    """Return once the job is labeling its test set with some labels written: SIGTERM lands mid-step."""
    client = s3(endpoint)
    deadline = time.monotonic() + float(timeout)
    next_look = 0.0
    while time.monotonic() < deadline:
        if running and time.monotonic() > next_look:
            if subprocess.run(running, capture_output=True, text=True).stdout.strip() != "true":
                fail(f"job {name} ended before it reached label_test")
            next_look = time.monotonic() + 2.0
        state = _state(client, bucket, name)
        if state and state["step"] == "label_test" and _keys(client, bucket, f"jobs/{name}/output/labels/test/"):
            print(f"check_image: job {name} is at step label_test with test labels written", file=sys.stderr)
            return
        if state and state["step"] not in ("ingest", "split", "rules", "label_test"):
            fail(f"job {name} passed the test-set labeling (now {state['step']}) before it could be signalled")
        time.sleep(0.1)
    fail(f"job {name} did not reach label_test within {timeout} s")


def check_stopped(endpoint: str, bucket: str, name: str) -> None:
    client = s3(endpoint)
    state = _state(client, bucket, name)
    if state is None or state["step"] != "label_test" or state["status"] != "running":
        fail(f"after SIGTERM, state.json should be saved at label_test, running; got {state and state['step']}, "
             f"{state and state['status']}")
    if _keys(client, bucket, f"jobs/{name}/output/lease.json"):
        fail("after SIGTERM the lease should be released (lease.json is still there)")
    print(f"check_image: state saved at {state['step']}, lease released", file=sys.stderr)


def check_done(endpoint: str, bucket: str, name: str, rows: str) -> None:
    client = s3(endpoint)
    out = f"jobs/{name}/output/"
    state = _state(client, bucket, name)
    if state is None or state["step"] != "done":
        fail(f"state.json step should be done, is {state and state['step']}")
    keys = set(_keys(client, bucket, out))
    for required in ("report.md", "metrics.json", "classifiers/classifier_1/config.json"):
        if out + required not in keys:
            fail(f"{required} is missing from s3://{bucket}/{out}")
    if not any(k.startswith(out + "classifiers/classifier_1/") and k.endswith(".safetensors") for k in keys):
        fail(f"no safetensors weights under s3://{bucket}/{out}classifiers/classifier_1/")
    body = client.get_object(Bucket=bucket, Key=out + "classifiers/final_classifier_output/predictions.jsonl")["Body"]
    ids = [json.loads(line)["id"] for line in body.read().decode().splitlines()]
    expected = int(rows) - TEST_SET - TRAIN_SET
    if len(ids) != expected or len(set(ids)) != len(ids):
        fail(f"predictions.jsonl should hold {expected} distinct ids, holds {len(ids)} ({len(set(ids))} distinct)")
    accuracy = (state["iterations"][-1].get("metrics") or {}).get("accuracy") if state.get("iterations") else None
    print(f"check_image: job {name} done: report.md, classifier_1, {len(ids)} predictions in s3://{bucket}/{out} "
          f"(test accuracy {accuracy})", file=sys.stderr)


COMMANDS = {"pip-build-args": pip_build_args, "free-port": free_port, "wait-http": wait_http,
            "oracle-reset": oracle_reset, "oracle-repeated": oracle_repeated, "upload": upload, "upload-bad": upload_bad,
            "wait-labeling": wait_labeling, "check-stopped": check_stopped, "check-done": check_done}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail(f"usage: {sys.argv[0]} {{{','.join(COMMANDS)}}} ARGS...")
    COMMANDS[sys.argv[1]](*sys.argv[2:])
