"""Labeling fan-out through the gateway and litellm against the oracle server: faults, accounting, resume."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.llm.cache import ResponseCache
from core.llm.client import Endpoint, LiteLLMClient, LLMOptions
from core.llm.gateway import LLMGateway
from core.llm.labeling import LabelPrompt, label_many, load_labels, needs_label
from core.llm.ledger import Ledger
from core.schema import Chunk
from core.storage.backends import LocalStorage, Storage
from core.storage.jsonl_log import LogWriter
from tests.fixtures.llm_server import OracleHandle, shared_data_dir

SMS = ["ham", "spam"]
TREC = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def _chunks(dataset: str, n: int) -> tuple[list[Chunk], dict[str, str]]:
    chunks, gold = [], {}
    with (shared_data_dir() / dataset).open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= n:
                break
            row = json.loads(line)
            chunks.append(Chunk(id=f"c{i}", text=row["text"], source=dataset, position=i))
            gold[f"c{i}"] = row["label"]
    return chunks, gold


def _label(storage: Storage, oracle: OracleHandle, chunks: list[Chunk], classes: list[str], *,
           mode: str = "json_schema", options: LLMOptions | None = None, model: str = "openai/oracle-small",
           ) -> tuple[list, Ledger]:
    ledger = Ledger(storage, "ledger/", flush_interval_s=0.2)
    llm = LiteLLMClient(options or LLMOptions(concurrency_limit=10, timeout_s=5, max_retries=3,
                                              backoff_base_s=0.05, backoff_max_s=0.2))
    gateway = LLMGateway(llm, ResponseCache(storage, "cache/"), ledger)
    prompt = LabelPrompt(classes, "Label by the obvious intent of the text.", mode)
    sink = LogWriter(storage, "labels/", flush_interval_s=0.2)
    endpoint = Endpoint(model, oracle.base_url, "sk-test")
    todo = [c for c in chunks if needs_label(load_labels(storage, "labels/").get(c.id))]
    labels = asyncio.run(label_many(gateway, endpoint, prompt, todo, stage="train_labels", sink=sink, workers=10))
    ledger.close()
    return labels, ledger


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "none"])
def test_multiclass_labels_match_oracle_in_every_format(tmp_path: Path, mode: str,
                                                         oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "trec6.jsonl", noise=0.0, latency_ms=0)
    chunks, gold = _chunks("trec6.jsonl", 60)
    labels, _ = _label(LocalStorage(tmp_path), oracle, chunks, TREC, mode=mode)
    assert len(labels) == 60 and all(lab.ok for lab in labels)
    assert all(lab.label == gold[lab.chunk_id] for lab in labels)
    assert all(lab.reason for lab in labels)


@pytest.mark.slow
def test_twenty_percent_faults_every_chunk_accounted(tmp_path: Path,
                                                     oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=5, seed=11, rate_429=0.05,
                           rate_500=0.05, rate_hang=0.02, hang_s=3, rate_malformed=0.04, rate_badlabel=0.04)
    chunks, gold = _chunks("sms_spam.jsonl", 200)
    storage = LocalStorage(tmp_path)
    options = LLMOptions(concurrency_limit=20, timeout_s=1.0, max_retries=2, backoff_base_s=0.02,
                         backoff_max_s=0.1)
    labels, ledger = _label(storage, oracle, chunks, SMS, options=options)
    by_id = {lab.chunk_id: lab for lab in labels}
    assert set(by_id) == {c.id for c in chunks}, "every chunk ends labeled or recorded as failed"
    for lab in labels:
        if lab.ok:
            assert lab.label == gold[lab.chunk_id]
        else:
            assert lab.error, "a failure always says why"
            if "names no class" in lab.error:
                assert lab.raw, "the raw reply is kept"
    assert sum(lab.ok for lab in labels) >= 180
    records = ledger.load_all()
    stats = oracle.stats(prompts=False)
    # Every HTTP request the server saw is one ledger line (cache hits never reach the server).
    assert len([r for r in records if r.outcome != "cache_hit"]) == stats["total_requests"]
    assert {r.outcome for r in records} >= {"ok", "retryable_error"}
    shard_labels = load_labels(storage, "labels/")
    assert set(shard_labels) == set(by_id), "every outcome is in the shard log"


@pytest.mark.slow
def test_rerun_after_partial_run_pays_for_nothing_twice(tmp_path: Path,
                                                         oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.1, latency_ms=20, seed=5)
    chunks, _ = _chunks("sms_spam.jsonl", 120)
    storage = LocalStorage(tmp_path)
    first, _ = _label(storage, oracle, chunks[:70], SMS)  # "killed" after 70
    assert len(first) == 70
    second, ledger = _label(storage, oracle, chunks, SMS)  # the resumed run skips the 70 done
    assert len(second) == 50
    stats = oracle.stats(prompts=False)
    assert stats["repeated_ok_prompts"] == 0 and stats["total_requests"] == 120
    paid = [r.cache_key for r in ledger.load_all() if r.outcome == "ok"]
    assert len(paid) == len(set(paid)) == 120
    # Even relabeling everything from scratch (labels lost, cache kept) costs nothing.
    for key in list(storage.list("labels/")):
        storage.delete(key)
    third, ledger = _label(storage, oracle, chunks, SMS)
    assert len(third) == 120 and oracle.stats(prompts=False)["total_requests"] == 120
    assert sum(r.outcome == "cache_hit" for r in ledger.load_all()) == 120


def test_recover_ledger_lines_lost_to_a_kill(tmp_path: Path, oracle_server: Callable[..., OracleHandle]) -> None:
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=0)
    chunks, _ = _chunks("sms_spam.jsonl", 30)
    storage = LocalStorage(tmp_path)
    _label(storage, oracle, chunks, SMS)
    shards = list(storage.list("ledger/"))
    kept = storage.read_text(shards[0]).splitlines()[:5]  # lose most lines, as an unflushed buffer would
    for key in shards:
        storage.delete(key)
    storage.write_text(shards[0], "".join(line + "\n" for line in kept))
    ledger = Ledger(storage, "ledger/")
    gateway = LLMGateway(LiteLLMClient(LLMOptions()), ResponseCache(storage, "cache/"), ledger)
    assert gateway.recover_unrecorded() > 0
    paid = [r for r in ledger.load_all() if r.outcome == "ok"]
    assert len({r.cache_key for r in paid}) == len(paid) == 30
    assert all(r.stage == "train_labels" and r.chunk_id for r in paid)
    assert gateway.recover_unrecorded() == 0


def test_recovery_leaves_out_replies_cached_before_the_run(tmp_path: Path,
                                                           oracle_server: Callable[..., OracleHandle]) -> None:
    # What --restart leaves behind: the cache of an earlier run, and a new, empty ledger.
    oracle = oracle_server(shared_data_dir() / "sms_spam.jsonl", noise=0.0, latency_ms=0)
    chunks, _ = _chunks("sms_spam.jsonl", 12)
    storage = LocalStorage(tmp_path)
    _label(storage, oracle, chunks, SMS)
    restarted_at = time.time()
    for key in list(storage.list("ledger/")):
        storage.delete(key)
    ledger = Ledger(storage, "ledger/")
    gateway = LLMGateway(LiteLLMClient(LLMOptions()), ResponseCache(storage, "cache/"), ledger)
    assert gateway.recover_unrecorded(since=restarted_at) == 0
    assert gateway.recover_unrecorded(since=restarted_at - 3600) == 12  # the run that paid for them


def test_calls_in_flight_at_a_stop_get_a_grace_then_are_cancelled(tmp_path: Path) -> None:
    from core.schema import LLMReply

    stop = [False]

    class HangingAfterFour:
        calls = 0

        async def chat(self, **_kw: object) -> LLMReply:
            self.calls += 1
            if self.calls > 4:
                stop[0] = True  # a SIGTERM while these calls hang
                await asyncio.sleep(3600)
            return LLMReply(text='{"label": "ham", "reason": "r"}', model="m", tokens_in=1, tokens_out=1,
                            latency_s=0.0, cost_usd=0.0, cost_known=True)

    chunks = [Chunk(id=f"c{i}", text=f"text {i}", source="s", position=i) for i in range(20)]
    storage = LocalStorage(tmp_path)
    sink = LogWriter(storage, "labels/train/", flush_interval_s=0.1)
    started = time.monotonic()
    labels = asyncio.run(label_many(HangingAfterFour(), Endpoint("openai/x"), LabelPrompt(["ham", "spam"], "", "none"),
                                    chunks, stage="train_labels", sink=sink, workers=2,
                                    should_stop=lambda: stop[0], grace_s=0.5))
    took = time.monotonic() - started
    assert 0.5 <= took < 3, took
    assert [lab.chunk_id for lab in labels] == ["c0", "c1", "c2", "c3"]
    assert sorted(load_labels(storage, "labels/train/")) == ["c0", "c1", "c2", "c3"], "what finished is kept"
