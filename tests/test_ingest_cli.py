"""``bootstrapper ingest`` on the bundled mixed example, from a local folder and from the S3 server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from core.storage.backends import open_storage
from tests.pipeline_helpers import REPO, cli, cli_env

MIXED = REPO / "examples" / "mixed"
EXPECTED_SKIPS = {"exports/customers.csv", "logs/crash-dump.txt", "reports/draft-damaged.docx",
                  "scans/signed-contract.pdf", "tickets/chat-export.jsonl"}


def _config(input_: str, output: str) -> str:
    cfg = yaml.safe_load((REPO / "examples" / "mixed.yaml").read_text())
    cfg["path"] = {"input": input_, "output": output}
    return yaml.safe_dump(cfg)


def _ids(chunks_jsonl: str) -> list[tuple[str, str, int]]:
    rows = [json.loads(line) for line in chunks_jsonl.splitlines()]
    return [(r["id"], r["source"], r["position"]) for r in rows]


def test_same_chunk_ids_locally_and_on_s3(tmp_path: Path, s3_server: Any, s3_client: Any, s3_bucket: str) -> None:
    shutil.copytree(MIXED, tmp_path / "input")
    (tmp_path / "config.yaml").write_text(_config("input", "output"))
    local = cli(["ingest", str(tmp_path / "config.yaml")], cli_env("http://127.0.0.1:9"))
    assert local.returncode == 0, local.stderr
    local_ids = _ids((tmp_path / "output" / "chunks.jsonl").read_text())
    local_report = json.loads((tmp_path / "output" / "ingest_report.json").read_text())

    for path in MIXED.rglob("*"):
        if path.is_file():
            key = f"jobs/mixed/input/{path.relative_to(MIXED).as_posix()}"
            s3_client.put_object(Bucket=s3_bucket, Key=key, Body=path.read_bytes())
    s3_client.put_object(Bucket=s3_bucket, Key="jobs/mixed/config.yaml", Body=_config("input", "output").encode())
    remote = cli(["ingest", f"s3://{s3_bucket}/jobs/mixed/config.yaml"],
                 cli_env("http://127.0.0.1:9", {"AWS_ENDPOINT_URL": s3_server.endpoint_url}))
    assert remote.returncode == 0, remote.stderr
    out = open_storage(f"s3://{s3_bucket}/jobs/mixed/output", s3_client=s3_client)
    assert _ids(out.read_text("chunks.jsonl")) == local_ids
    s3_report = json.loads(out.read_text("ingest_report.json"))
    assert s3_report == local_report

    assert len(local_ids) > 10
    assert {s["source"] for s in local_report["skipped"]} == EXPECTED_SKIPS
    assert all(s["reason"] for s in local_report["skipped"])
    for source in EXPECTED_SKIPS:
        assert source in local.stderr, "every skipped input is logged"
    sources = {s for _, s, _ in local_ids}
    assert {".txt", ".md", ".pdf", ".docx", ".jsonl"} <= {Path(s).suffix for s in sources}
