"""Labeling across worker processes (core.llm.fanout) through litellm against the oracle server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import ConfigError, LLMAuthError, RetryableError, StorageUnavailable
from core.llm.cache import ResponseCache
from core.llm.client import Endpoint, LiteLLMClient, LLMOptions
from core.llm.fanout import LabelWorker, label_in_processes, plan_processes, split_evenly
from core.llm.gateway import LLMGateway
from core.llm.labeling import LabelPrompt, load_labels
from core.llm.ledger import Ledger
from core.schema import Chunk
from core.storage.backends import LocalStorage
from tests.fixtures.llm_server import OracleHandle, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
SMS = ["ham", "spam"]
PROMPT = LabelPrompt(SMS, "Spam is unsolicited commercial messaging; everything else is ham.", "json_schema")


def _chunks(n: int) -> tuple[list[Chunk], dict[str, str]]:
    chunks, gold = [], {}
    with (shared_data_dir() / "sms_spam.jsonl").open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= n:
                break
            row = json.loads(line)
            chunks.append(Chunk(id=f"c{i}", text=row["text"], source="sms", position=i))
            gold[f"c{i}"] = row["label"]
    return chunks, gold


def _factory(root: Path) -> Callable[[int], LabelWorker]:
    def make(concurrency: int) -> LabelWorker:
        storage = LocalStorage(root)
        ledger = Ledger(storage, "ledger/", flush_interval_s=0.2)
        llm = LiteLLMClient(LLMOptions(concurrency_limit=concurrency, timeout_s=5, max_retries=2,
                                       backoff_base_s=0.05, backoff_max_s=0.2))
        return LabelWorker(chat=LLMGateway(llm, ResponseCache(storage, "cache/"), ledger), storage=storage,
                           close=ledger.close)

    return make


def _run(root: Path, oracle: OracleHandle, chunks: list[Chunk], *, key: str = "sk-test", **kw: object) -> list:
    endpoint = Endpoint("openai/oracle-small", oracle.base_url, key)
    opts = {"processes": 2, "workers": 10, "flush_interval_s": 0.2, **kw}
    return label_in_processes(_factory(root), endpoint, PROMPT, chunks, stage="train_labels", prefix="labels/",
                              **opts)  # type: ignore[arg-type]


# --- pure helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "parts", "expected"), [(50, 2, [25, 25]), (7, 3, [3, 2, 2]), (1, 1, [1])],
                         ids=["even", "remainder", "one"])
def test_split_evenly(total: int, parts: int, expected: list[int]) -> None:
    assert split_evenly(total, parts) == expected


@pytest.mark.parametrize(("n", "requested", "concurrency", "expected"),
                         [(1000, 2, 50, 2), (150, 2, 50, 1), (1000, 1, 50, 1), (1000, 8, 3, 3), (1000, 4, 50, 4)],
                         ids=["big-batch", "small-batch-stays-home", "one-requested", "capped-by-slots", "four"])
def test_plan_processes(n: int, requested: int, concurrency: int, expected: int) -> None:
    assert plan_processes(n, requested, concurrency) == expected


# --- against the oracle server --------------------------------------------------------------------------


def test_two_processes_label_everything_and_account_for_every_call(
        tmp_path: Path, oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=20)
    chunks, gold = _chunks(240)
    seen: list[str] = []
    labels = _run(tmp_path, oracle, chunks, on_done=lambda lab: seen.append(lab.chunk_id))
    assert sorted(lab.chunk_id for lab in labels) == sorted(c.id for c in chunks)
    assert sorted(seen) == sorted(c.id for c in chunks)  # progress reached the parent for every label
    assert all(lab.ok and lab.label == gold[lab.chunk_id] for lab in labels)
    storage = LocalStorage(tmp_path)
    assert set(load_labels(storage, "labels/")) == {c.id for c in chunks}
    records = Ledger(storage, "ledger/").load_all()
    assert sorted(r.chunk_id for r in records if r.outcome == "ok") == sorted(c.id for c in chunks)
    writers = {key.rsplit("/", 1)[1].rsplit("-", 1)[0] for key in storage.list("labels/")}
    assert len(writers) == 2  # each child wrote its own shards

    # A second run over the same chunks is served from the cache: nothing is paid twice.
    again = _run(tmp_path, oracle, chunks)
    assert len(again) == 240
    records = Ledger(storage, "ledger/").load_all()
    assert sum(r.outcome == "ok" for r in records) == 240
    assert sum(r.outcome == "cache_hit" for r in records) == 240


def test_auth_error_in_a_child_is_raised_in_the_parent(tmp_path: Path,
                                                       oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=0)
    chunks, _ = _chunks(40)
    with pytest.raises(LLMAuthError):
        _run(tmp_path, oracle, chunks, key="sk-bad")


def test_stop_request_stops_the_children(tmp_path: Path, oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=300)
    chunks, _ = _chunks(400)
    started = time.monotonic()
    labels = _run(tmp_path, oracle, chunks, should_stop=lambda: time.monotonic() - started > 0.5)
    # Calls in flight finish and are recorded; no new ones start (400 chunks would take 12 s at 10 in flight).
    assert 0 < len(labels) < 100
    assert set(load_labels(LocalStorage(tmp_path), "labels/")) == {lab.chunk_id for lab in labels}


def test_a_child_failing_to_start_raises(tmp_path: Path, oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=0)
    chunks, _ = _chunks(20)

    def broken(concurrency: int) -> LabelWorker:
        raise StorageUnavailable("bucket unreachable")

    with pytest.raises(StorageUnavailable, match="bucket unreachable"):
        label_in_processes(broken, Endpoint("openai/oracle-small", oracle.base_url, "sk-test"), PROMPT, chunks,
                           stage="s", prefix="labels/", processes=2, workers=4)


def test_an_error_with_its_own_constructor_reaches_the_parent_whole(
        tmp_path: Path, oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=0)
    chunks, _ = _chunks(20)

    def misconfigured(concurrency: int) -> LabelWorker:
        raise ConfigError("api.small_model", "unknown provider")

    with pytest.raises(ConfigError, match="api.small_model: unknown provider") as info:
        label_in_processes(misconfigured, Endpoint("openai/oracle-small", oracle.base_url, "sk-test"), PROMPT,
                           chunks, stage="s", prefix="labels/", processes=2, workers=4)
    assert info.value.field == "api.small_model"


def test_an_error_that_cannot_cross_is_still_raised(tmp_path: Path,
                                                    oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=0)
    chunks, _ = _chunks(20)

    class Local(Exception):  # a class defined in a function does not pickle
        pass

    def broken(concurrency: int) -> LabelWorker:
        raise Local("a library error nobody translated")

    with pytest.raises(RetryableError, match="without saying why"):
        label_in_processes(broken, Endpoint("openai/oracle-small", oracle.base_url, "sk-test"), PROMPT, chunks,
                           stage="s", prefix="labels/", processes=2, workers=4)


def test_a_child_that_dies_silently_raises_retryable(tmp_path: Path,
                                                     oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=0)
    chunks, _ = _chunks(20)

    def dies(concurrency: int) -> LabelWorker:
        os._exit(9)  # what an OOM kill looks like from the parent: no message, a bad exit code

    with pytest.raises(RetryableError, match="died"):
        label_in_processes(dies, Endpoint("openai/oracle-small", oracle.base_url, "sk-test"), PROMPT, chunks,
                           stage="s", prefix="labels/", processes=2, workers=4)


KILL_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from tests.test_workers import PROMPT, _chunks, _factory
    from core.llm.client import Endpoint
    from core.llm.fanout import label_in_processes
    chunks, _ = _chunks(400)
    print(os.getpid(), flush=True)
    label_in_processes(_factory(Path({out!r})), Endpoint("openai/oracle-small", {url!r}, "sk-test"), PROMPT,
                       chunks, stage="s", prefix="labels/", processes=2, workers=6, flush_interval_s=0.2)
""")


def _pids_running(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                status = (entry / "status").read_text()
            except OSError:
                continue
            if marker.encode() in cmdline and "State:\tZ" not in status:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_killing_the_parent_kills_its_workers(tmp_path: Path, oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=200)
    out = tmp_path / "out"
    script = tmp_path / "kill_me_workers.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT), out=str(out), url=oracle.base_url))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    parent = int(proc.stdout.readline())
    storage = LocalStorage(out)
    deadline = time.monotonic() + 60
    while not (out / "labels").exists() or not list(storage.list("labels/")):  # a bare generator is always truthy
        assert time.monotonic() < deadline and proc.poll() is None, "no labels were written"
        time.sleep(0.1)
    assert len(_pids_running(str(script))) == 3  # the parent and two workers
    os.kill(parent, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _pids_running(str(script)):
        assert time.monotonic() < deadline, "workers outlived their killed parent"
        time.sleep(0.1)
    done = len(load_labels(storage, "labels/"))
    assert 0 < done < 400
    time.sleep(1.0)  # nothing keeps labeling after the kill
    assert len(load_labels(storage, "labels/")) == done


# --- the job with worker processes: a stop and a kill mid-labeling, then a resume -------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_job_with_worker_processes_resumes_and_pays_once(how: signal.Signals, tmp_path: Path, tiny_bert_dir: Path,
                                                         oracle_server: Callable[..., OracleHandle]) -> None:
    from tests.pipeline_helpers import cli, cli_env, job_config, sample_rows, start_cli, wait_for, write_yaml

    data = shared_data_dir() / "sms_spam.jsonl"
    (tmp_path / "in").mkdir()
    rows = sample_rows(data, 700)
    (tmp_path / "in" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    oracle = oracle_server(data, noise=0.1, latency_ms=100, seed=4)
    cfg = write_yaml(tmp_path / "c.yaml", job_config(
        classes=SMS, input_="in", output="out", model_path=str(tiny_bert_dir), training__max_iters=2,
        training__test_set_size=40, training__train_set_size=400, training__train_set_increment=200,
        system__concurrency_limit=8,
        system__label_processes=2, classification__predict_on_whole_set_at_the_end=False))
    out, log = tmp_path / "out", tmp_path / "run.log"
    proc = start_cli(["run", str(cfg)], cli_env(oracle.base_url), log)
    assert wait_for(lambda: len(list(out.glob("labels/train/*.jsonl"))) >= 2, proc)
    proc.send_signal(how)
    proc.wait(timeout=60)
    assert not _pids_running(str(cfg)), "labeling workers outlived the job"
    storage = LocalStorage(out)
    partial = len(load_labels(storage, "labels/train/"))
    writers = {key.rsplit("/", 1)[1].rsplit("-", 1)[0] for key in storage.list("labels/train/")}
    assert len(writers) == 2, "the training labels came from two worker processes"
    assert 0 < partial < 400, log.read_text()[-2000:]
    finish = cli(["run", str(cfg)], cli_env(oracle.base_url))
    assert finish.returncode == 0, finish.stderr[-3000:]
    # Iteration 2's 200 labels were also made by forked workers, after the job had trained with torch.
    assert len(load_labels(storage, "labels/train/")) == 600
    # A SIGTERM lets calls in flight finish and be recorded; a SIGKILL loses at most those in flight.
    in_flight = 0 if how == signal.SIGTERM else 8
    assert oracle.stats(prompts=False)["repeated_ok_prompts"] <= in_flight
    ledger = [json.loads(x) for x in (out / "llm_calls.jsonl").read_text().splitlines()]
    paid = [r["cache_key"] for r in ledger if r["outcome"] == "ok"]
    assert len(paid) == len(set(paid)) >= 640
