"""Response cache keys and storage, and the sharded cost ledger, on local disk and on S3 (moto server)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import StorageUnavailable
from core.llm.cache import ResponseCache, cache_key, call_params, request_key
from core.llm.ledger import COST_UNKNOWN_NOTE, MAX_BUFFER, Ledger, cost_of, totals
from core.schema import CallRecord, LLMReply
from core.storage.backends import LocalStorage, Storage

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "label this"}]
PARAMS = call_params(response_format={"type": "json_object"}, max_tokens=400, temperature=0.0, logprobs=False)


def reply(text: str = "spam", **kw: Any) -> LLMReply:
    fields: dict[str, Any] = dict(text=text, model="openai/gpt-4o-mini", tokens_in=120, tokens_out=9,
                                  latency_s=0.42, cost_usd=0.0000234, cost_known=True,
                                  logprobs=[{"token": "spam", "logprob": -0.01}])
    fields.update(kw)
    return LLMReply(**fields)


def rec(stage: str = "test_labels", model: str = "m", outcome: str = "ok", **kw: Any) -> CallRecord:
    return CallRecord(ts=kw.pop("ts", 1.0), stage=stage, model=model, cache_key=kw.pop("cache_key", "k"),
                      outcome=outcome, **kw)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ----------------------------------------------------------------------------------------------- cache keys


def test_key_is_sha256_hex_and_ignores_dict_order() -> None:
    key = cache_key("openai/gpt-4o", MESSAGES, PARAMS)
    reordered_msgs = [{"content": m["content"], "role": m["role"]} for m in MESSAGES]
    reordered_params = dict(reversed(list(PARAMS.items())))
    assert len(key) == 64 and int(key, 16) >= 0
    assert cache_key("openai/gpt-4o", reordered_msgs, reordered_params) == key


def test_key_is_stable_across_processes() -> None:
    # A resumed run is a new process: the key must be a pure function of the request, not of hash seeds.
    expected = cache_key("m", [{"role": "user", "content": "x"}], {"a": 1})
    canonical = '{"messages":[{"content":"x","role":"user"}],"model":"m","params":{"a":1}}'
    assert expected == hashlib.sha256(canonical.encode()).hexdigest()


BASE = dict(model="openai/gpt-4o", messages=MESSAGES, response_format=None, max_tokens=400, temperature=0.0,
            logprobs=False, attempt=0)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "openai/gpt-4o-mini"},
        {"messages": [MESSAGES[0], {"role": "user", "content": "label this!"}]},
        {"messages": [{"role": "user", "content": "be brief"}, MESSAGES[1]]},
        {"messages": MESSAGES[1:]},
        {"response_format": {"type": "json_object"}},
        {"max_tokens": 401},
        {"temperature": 0.7},
        {"logprobs": True},
        {"attempt": 1},
    ],
    ids=["model", "content", "role", "message-count", "response_format", "max_tokens", "temperature",
         "logprobs", "attempt"],
)
def test_key_changes_with_every_reply_shaping_input(change: dict[str, Any]) -> None:
    base = dict(BASE)
    changed = {**base, **change}
    model, msgs = base.pop("model"), base.pop("messages")
    model2, msgs2 = changed.pop("model"), changed.pop("messages")
    assert request_key(model2, msgs2, **changed) != request_key(model, msgs, **base)


def test_attempts_get_distinct_keys_and_attempt_zero_is_the_plain_call() -> None:
    keys = {request_key("m", MESSAGES, attempt=a) for a in range(3)}
    assert len(keys) == 3
    assert request_key("m", MESSAGES, attempt=0) == cache_key("m", MESSAGES, call_params())
    assert request_key("m", MESSAGES, temperature=0) == request_key("m", MESSAGES, temperature=0.0)
    with pytest.raises(ValueError, match="attempt"):
        call_params(attempt=-1)


def test_key_has_no_place_for_credentials() -> None:
    assert set(call_params(attempt=2)) == {"response_format", "max_tokens", "temperature", "logprobs", "attempt"}


# ---------------------------------------------------------------------------------------------- cache store


def test_put_get_roundtrip_survives_a_new_instance(storage: Storage) -> None:
    key = request_key("openai/gpt-4o-mini", MESSAGES)
    original = reply()
    cache = ResponseCache(storage)
    assert cache.get(key) is None
    cache.put(key, original)
    assert cache.get(key) == original
    assert storage.exists(f"cache/{key[:2]}/{key}.json")

    resumed = ResponseCache(storage)  # a new run over the same output location
    assert resumed.get(key) == original
    assert resumed.get(request_key("openai/gpt-4o-mini", MESSAGES, attempt=1)) is None


def test_put_writes_one_small_json_object_per_key(storage: Storage) -> None:
    cache = ResponseCache(storage, prefix="c/")
    k1, k2 = request_key("m", MESSAGES), request_key("m", MESSAGES, attempt=1)
    cache.put(k1, reply("a"))
    cache.put(k2, reply("b", cached=True))
    assert sorted(storage.list("c/")) == sorted([f"c/{k1[:2]}/{k1}.json", f"c/{k2[:2]}/{k2}.json"])
    stored = json.loads(storage.read_text(f"c/{k2[:2]}/{k2}.json"))
    assert stored["text"] == "b" and stored["cached"] is False  # the stored form is the fresh reply


def test_repeated_gets_are_served_from_memory(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = request_key("m", MESSAGES)
    ResponseCache(storage).put(key, reply())
    cache = ResponseCache(storage)
    assert cache.get(key) is not None
    storage.delete(f"cache/{key[:2]}/{key}.json")
    assert cache.get(key) == reply()  # no second read
    assert ResponseCache(storage).get(key) is None


def test_unreadable_entry_is_a_miss_and_is_overwritten(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = request_key("m", MESSAGES)
    storage.write_text(f"cache/{key[:2]}/{key}.json", '{"text": "torn')
    cache = ResponseCache(storage)
    assert cache.get(key) is None
    cache.put(key, reply())
    assert ResponseCache(storage).get(key) == reply()


# --------------------------------------------------------------------------------------------------- ledger


def shard_keys(storage: Storage, prefix: str = "ledger/") -> list[str]:
    return list(storage.list(prefix))


def test_records_buffer_until_the_interval_passes(storage: Storage) -> None:
    clock = FakeClock()
    ledger = Ledger(storage, flush_interval_s=2.0, clock=clock, run_id="run1")
    ledger.record(rec(cache_key="a"))
    clock.t += 1.0
    ledger.record(rec(cache_key="b"))
    assert shard_keys(storage) == []
    clock.t += 1.5
    ledger.record(rec(cache_key="c"))
    assert shard_keys(storage) == ["ledger/run1-000000.jsonl"]
    assert [r.cache_key for r in ledger.load_all()] == ["a", "b", "c"]

    ledger.record(rec(cache_key="d"))  # interval restarted at the last flush
    assert len(shard_keys(storage)) == 1
    ledger.close()
    assert shard_keys(storage) == ["ledger/run1-000000.jsonl", "ledger/run1-000001.jsonl"]
    assert [r.cache_key for r in ledger.load_all()] == ["a", "b", "c", "d"]


def test_a_full_buffer_flushes_without_waiting(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    ledger = Ledger(storage, clock=FakeClock(), run_id="r")
    for i in range(MAX_BUFFER + 5):
        ledger.record(rec(cache_key=str(i)))
    assert shard_keys(storage) == ["ledger/r-000000.jsonl"]
    assert len(ledger.load_all()) == MAX_BUFFER
    ledger.flush()
    ledger.flush()  # nothing buffered: no empty shard
    assert len(shard_keys(storage)) == 2
    assert [r.cache_key for r in ledger.load_all()] == [str(i) for i in range(MAX_BUFFER + 5)]


def test_load_all_orders_runs_then_shards_then_lines(storage: Storage) -> None:
    clock = FakeClock()
    later = Ledger(storage, clock=clock, run_id="0002-b")
    earlier = Ledger(storage, clock=clock, run_id="0001-a")
    for i in range(3):
        later.record(rec(cache_key=f"later{i}"))
        later.flush()
    earlier.record(rec(cache_key="early0"))
    earlier.record(rec(cache_key="early1"))
    earlier.close()
    later.close()
    assert [r.cache_key for r in Ledger(storage).load_all()] == ["early0", "early1", "later0", "later1", "later2"]


def test_default_run_ids_do_not_collide(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for _ in range(2):
        ledger = Ledger(storage)
        ledger.record(rec())
        ledger.close()
    assert len(shard_keys(storage)) == 2
    assert len(Ledger(storage).load_all()) == 2


def test_write_combined_includes_unflushed_and_earlier_runs(storage: Storage) -> None:
    first = Ledger(storage, run_id="1")
    first.record(rec(cache_key="old", tokens_in=5))
    first.close()
    second = Ledger(storage, clock=FakeClock(), run_id="2")
    second.record(rec(cache_key="new", chunk_id="c1", error="x"))
    records = second.write_combined()
    lines = storage.read_text("llm_calls.jsonl").splitlines()
    assert [json.loads(line)["cache_key"] for line in lines] == ["old", "new"]
    assert [CallRecord.from_dict(json.loads(line)) for line in lines] == records


def test_a_failed_flush_keeps_the_records(tmp_path: Path) -> None:
    class Flaky(LocalStorage):
        fail = True

        def write_text(self, key: str, text: str) -> None:
            if self.fail:
                raise StorageUnavailable("throttled")
            super().write_text(key, text)

    storage = Flaky(tmp_path)
    ledger = Ledger(storage, clock=FakeClock(), run_id="r")
    ledger.record(rec(cache_key="kept"))
    with pytest.raises(StorageUnavailable):
        ledger.flush()
    storage.fail = False
    ledger.close()
    assert [r.cache_key for r in ledger.load_all()] == ["kept"]


# --------------------------------------------------------------------------------------------------- totals


NO_CACHE = {"cached_tokens": 0, "cache_write_tokens": 0, "cache_saving_usd": 0.0, "cut_off": 0, "param_refused": 0}


def test_totals_count_cached_tokens_cut_off_replies_and_refusals_apart() -> None:
    def rec(outcome: str, **kw: Any) -> CallRecord:
        return CallRecord(ts=0.0, stage="train_labels", model="anthropic/claude-haiku-4-5", cache_key="k",
                          outcome=outcome, **kw)

    t = totals([rec("ok", tokens_in=2000, tokens_out=20, cached_tokens=1500),
                rec("ok", tokens_in=2000, tokens_out=400, cache_write_tokens=1500, finish_reason="length"),
                rec("param_refused", error="LLMParamRefused: logprobs")])["overall"]
    assert (t["cached_tokens"], t["cache_write_tokens"], t["cut_off"], t["param_refused"]) == (1500, 1500, 1, 1)
    assert t["failures"] == 0, "a refused optional parameter is asked again at once: no failure"
    # Haiku 4.5: $1/M input, $0.10/M cached read, $1.25/M cache write: 1500 * 0.9 - 1500 * 0.25 = 975 micro-$.
    assert t["cache_saving_usd"] == pytest.approx(975e-6)


def test_totals_per_model_per_stage_and_overall() -> None:
    records = [
        rec("rules", "big", "ok", tokens_in=1000, tokens_out=500, cost_usd=0.01),
        rec("test_labels", "big", "ok", tokens_in=200, tokens_out=10, cost_usd=0.002),
        rec("test_labels", "big", "cache_hit"),
        rec("test_labels", "big", "retryable_error", error="503"),
        rec("train_labels", "small", "ok", tokens_in=300, tokens_out=20, cost_note=COST_UNKNOWN_NOTE),
        rec("train_labels", "small", "ok", tokens_in=100, tokens_out=5, cost_note=COST_UNKNOWN_NOTE),
        rec("train_labels", "small", "permanent_error"),
        rec("train_labels", "small", "unparseable"),
        rec("train_labels", "small", "cache_hit"),
    ]
    t = totals(records)
    assert t["overall"] == {"calls": 9, "paid_calls": 4, "cache_hits": 2, "failures": 3, "tokens_in": 1600,
                            "tokens_out": 535, "cost_usd": pytest.approx(0.012), "unknown_cost_models": ["small"],
                            **NO_CACHE}
    assert t["by_model"]["big"] == {"calls": 4, "paid_calls": 2, "cache_hits": 1, "failures": 1,
                                    "tokens_in": 1200, "tokens_out": 510, "cost_usd": pytest.approx(0.012),
                                    "unknown_cost_models": [], **NO_CACHE}
    assert t["by_model"]["small"]["unknown_cost_models"] == ["small"]
    assert t["by_model"]["small"]["cost_usd"] == 0
    assert list(t["by_stage"]) == ["rules", "test_labels", "train_labels"]
    assert t["by_stage"]["test_labels"]["calls"] == 3 and t["by_stage"]["test_labels"]["failures"] == 1
    assert t["by_stage"]["train_labels"]["paid_calls"] == 2
    assert totals([])["overall"]["calls"] == 0


# ------------------------------------------------------------------------------------------------- cost_of


@pytest.mark.parametrize("model", ["gpt-4o", "openai/gpt-4o", "gpt-4o-mini", "openai/gpt-4o-mini"])
def test_cost_of_known_models(model: str) -> None:
    cost, known = cost_of(model, 1_000_000, 1_000_000)
    assert known and cost > 0
    assert cost_of(model, 2_000_000, 2_000_000)[0] == pytest.approx(2 * cost)
    assert cost_of(model, 0, 0) == (0.0, True)


def test_mini_is_cheaper_than_full() -> None:
    assert cost_of("gpt-4o-mini", 1000, 1000)[0] < cost_of("gpt-4o", 1000, 1000)[0]


@pytest.mark.parametrize("model", ["openai/oracle-large", "oracle-large", "hosted_vllm/my-model"],
                         ids=["openai-prefix", "no-provider", "vllm"])
def test_cost_of_unknown_model_is_zero_and_quiet(model: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cost_of(model, 1000, 1000) == (0.0, False)
    assert capsys.readouterr().out == ""  # litellm's "Provider List" banner must not reach the CLI's stdout
