"""LLMGateway: cache hits cost nothing, misses are cached before they are ledgered, errors are recorded
and re-raised, and a second run over the same storage makes no model call at all.

The model is a small scripted fake (the gateway's contract is about caching and bookkeeping); the litellm
adapter against a real HTTP server is tested elsewhere.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.errors import (
    BootstrapperError,
    LLMAuthError,
    LLMBadRequest,
    LLMRateLimited,
    LLMUnavailable,
    StorageUnavailable,
)
from core.llm.cache import ResponseCache, request_key
from core.llm.client import Endpoint
from core.llm.gateway import LLMGateway
from core.llm.ledger import COST_UNKNOWN_NOTE, Ledger, totals
from core.schema import CallRecord, LLMReply
from core.storage.backends import LocalStorage, Storage

API_KEY = "sk-test-SECRET-0123456789abcdef"
ENDPOINT = Endpoint(model="openai/gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key=API_KEY)
MESSAGES = [{"role": "system", "content": "rules"}, {"role": "user", "content": "<text>win a prize</text>"}]


class FakeLLM:
    """Answers ``reply <n>`` for the n-th call; ``fail_with`` makes every call raise instead."""

    def __init__(self, fail_with: BaseException | None = None, cost_known: bool = True,
                 delay_s: float = 0.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_with = fail_with
        self.cost_known = cost_known
        self.delay_s = delay_s

    async def chat(self, endpoint: Endpoint, messages: list[dict[str, str]], *,
                   response_format: dict[str, Any] | None = None, max_tokens: int = 400,
                   temperature: float = 0.0, logprobs: bool = False) -> LLMReply:
        self.calls.append({"endpoint": endpoint, "messages": messages, "response_format": response_format,
                           "max_tokens": max_tokens, "temperature": temperature, "logprobs": logprobs})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        return LLMReply(text=f"reply {len(self.calls)}", model=endpoint.model, tokens_in=100 + len(self.calls),
                        tokens_out=7, latency_s=0.25, cost_usd=0.001 if self.cost_known else 0.0,
                        cost_known=self.cost_known)

    def supports_response_format(self, endpoint: Endpoint) -> str:
        return "json_schema"


def make(storage: Storage, llm: FakeLLM | None = None) -> tuple[LLMGateway, FakeLLM, Ledger]:
    llm = llm or FakeLLM()
    ledger = Ledger(storage, clock=lambda: 0.0)  # flushed explicitly by the tests
    return LLMGateway(llm, ResponseCache(storage), ledger, clock=lambda: 123.0), llm, ledger


def ask(gw: LLMGateway, *, messages: list[dict[str, str]] = MESSAGES, endpoint: Endpoint = ENDPOINT,
        chunk_id: str = "c1", **kw: Any) -> LLMReply:
    return asyncio.run(gw.chat(stage="test_labels", chunk_id=chunk_id, endpoint=endpoint, messages=messages, **kw))


def outcomes(ledger: Ledger) -> list[str]:
    ledger.flush()
    return [r.outcome for r in ledger.load_all()]


def test_miss_calls_the_model_then_the_same_request_is_a_free_hit(tmp_path: Path) -> None:
    gw, llm, ledger = make(LocalStorage(tmp_path))
    first = ask(gw, response_format={"type": "json_object"}, max_tokens=50, temperature=0.3, logprobs=True)
    assert first.text == "reply 1" and not first.cached and first.cost_usd == 0.001
    assert llm.calls[0]["max_tokens"] == 50 and llm.calls[0]["logprobs"] is True
    assert llm.calls[0]["response_format"] == {"type": "json_object"} and llm.calls[0]["temperature"] == 0.3

    again = ask(gw, response_format={"type": "json_object"}, max_tokens=50, temperature=0.3, logprobs=True)
    assert len(llm.calls) == 1
    assert again.text == "reply 1" and again.cached and again.cost_usd == 0.0
    assert again.tokens_in == first.tokens_in

    other = ask(gw, max_tokens=51, temperature=0.3, logprobs=True, response_format={"type": "json_object"})
    assert other.text == "reply 2" and len(llm.calls) == 2

    ledger.flush()
    ok, hit, ok2 = ledger.load_all()
    key = request_key(ENDPOINT.model, MESSAGES, response_format={"type": "json_object"}, max_tokens=50,
                      temperature=0.3, logprobs=True)
    assert ok == CallRecord(ts=123.0, stage="test_labels", model=ENDPOINT.model, cache_key=key, outcome="ok",
                            tokens_in=101, tokens_out=7, latency_s=0.25, cost_usd=0.001, chunk_id="c1")
    assert hit == CallRecord(ts=123.0, stage="test_labels", model=ENDPOINT.model, cache_key=key,
                             outcome="cache_hit", chunk_id="c1")
    assert ok2.outcome == "ok" and ok2.cache_key != key


def test_reply_is_cached_before_it_is_ledgered(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    cache = ResponseCache(storage)
    seen: list[bool] = []

    class CheckingLedger(Ledger):
        def record(self, rec: CallRecord) -> None:
            # A fresh cache instance reads storage, so this proves the entry was written, not just memoised.
            seen.append(ResponseCache(storage).get(rec.cache_key) is not None)
            super().record(rec)

    gw = LLMGateway(FakeLLM(), cache, CheckingLedger(storage))
    ask(gw)
    assert seen == [True]


def test_unknown_cost_is_noted_in_the_ledger(tmp_path: Path) -> None:
    gw, _, ledger = make(LocalStorage(tmp_path), FakeLLM(cost_known=False))
    ask(gw)
    ledger.flush()
    (record,) = ledger.load_all()
    assert record.cost_note == COST_UNKNOWN_NOTE and record.cost_usd == 0.0
    assert totals([record])["overall"]["unknown_cost_models"] == [ENDPOINT.model]


def test_attempts_are_fresh_calls_and_each_is_resumable(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    gw, llm, ledger = make(storage)
    texts = [ask(gw, attempt=a).text for a in (0, 1, 1, 0, 2)]
    assert texts == ["reply 1", "reply 2", "reply 2", "reply 1", "reply 3"]
    assert len(llm.calls) == 3
    assert outcomes(ledger) == ["ok", "ok", "cache_hit", "cache_hit", "ok"]
    assert len({r.cache_key for r in ledger.load_all()}) == 3

    resumed, llm2, _ = make(storage)
    assert [ask(resumed, attempt=a).text for a in (0, 1, 2)] == ["reply 1", "reply 2", "reply 3"]
    assert llm2.calls == []


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (LLMUnavailable(f"HTTP 503 from upstream (key {API_KEY})"), "retryable_error"),
        (LLMRateLimited("HTTP 429: slow down, Bearer sk-other-KEY-abcdefghijkl", retry_after=3.0),
         "retryable_error"),
        (LLMBadRequest(f"HTTP 400 invalid request api_key={API_KEY}"), "permanent_error"),
        (LLMAuthError(f"HTTP 401 Incorrect API key provided: {API_KEY}"), "permanent_error"),
    ],
    ids=["unavailable", "rate-limited", "bad-request", "auth"],
)
def test_errors_are_recorded_without_the_key_and_reraised(
    tmp_path: Path, error: BootstrapperError, outcome: str
) -> None:
    storage = LocalStorage(tmp_path)
    gw, llm, ledger = make(storage, FakeLLM(fail_with=error))
    with pytest.raises(type(error)) as raised:
        ask(gw)
    assert raised.value is error
    with pytest.raises(type(error)):
        ask(gw)  # nothing was cached: the model is asked again
    assert len(llm.calls) == 2
    assert outcomes(ledger) == [outcome, outcome]
    (first, _) = ledger.load_all()
    assert type(error).__name__ in first.error and "HTTP" in first.error
    assert first.cost_usd == 0 and first.tokens_in == 0 and first.chunk_id == "c1"
    ledger.write_combined()
    keys = list(storage.list(""))
    assert keys, "the ledger wrote something to look into"
    for key in keys:
        assert API_KEY not in storage.read_text(key)
        assert "sk-other-KEY" not in storage.read_text(key)


def test_api_key_and_base_url_are_not_part_of_the_key_and_never_stored(storage: Storage) -> None:
    gw, llm, ledger = make(storage)
    ask(gw)
    rotated = Endpoint(model=ENDPOINT.model, base_url="https://proxy.example/v1", api_key="sk-rotated-999999999")
    assert ask(gw, endpoint=rotated).cached
    assert len(llm.calls) == 1
    ledger.write_combined()
    keys = list(storage.list(""))
    assert any(key.startswith("cache/") for key in keys), "the cached reply is among what is looked into"
    for key in keys:
        body = storage.read_text(key)
        assert API_KEY not in body and "sk-rotated" not in body and "proxy.example" not in body


def test_a_second_run_over_the_same_storage_makes_no_model_calls(storage: Storage) -> None:
    requests = [([{"role": "user", "content": f"text {i}"}], f"chunk{i}") for i in range(6)]

    async def run(gw: LLMGateway) -> list[LLMReply]:
        return list(await asyncio.gather(*(
            gw.chat(stage="train_labels", chunk_id=cid, endpoint=ENDPOINT, messages=msgs, attempt=i % 2)
            for i, (msgs, cid) in enumerate(requests)
        )))

    gw1, llm1, ledger1 = make(storage)
    first = asyncio.run(run(gw1))
    ledger1.close()
    assert len(llm1.calls) == 6

    gw2, llm2, ledger2 = make(storage)  # new process: new cache object, new ledger, new model client
    second = asyncio.run(run(gw2))
    assert llm2.calls == []
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached for r in second)

    t = totals(ledger2.write_combined())
    assert t["overall"]["paid_calls"] == 6 and t["overall"]["cache_hits"] == 6
    assert t["overall"]["cost_usd"] == pytest.approx(0.006)
    assert t["by_stage"]["train_labels"]["calls"] == 12


def test_concurrent_identical_requests_are_paid_once(tmp_path: Path) -> None:
    gw, llm, ledger = make(LocalStorage(tmp_path), FakeLLM(delay_s=0.05))

    async def burst() -> list[LLMReply]:
        return list(await asyncio.gather(*(
            gw.chat(stage="test_labels", chunk_id=f"dup{i}", endpoint=ENDPOINT, messages=MESSAGES)
            for i in range(5)
        )))

    replies = asyncio.run(burst())
    assert len(llm.calls) == 1
    assert {r.text for r in replies} == {"reply 1"}
    assert sorted(outcomes(ledger)) == ["cache_hit"] * 4 + ["ok"]
    assert gw._locks == {}  # no per-key lock outlives its requests


def test_a_failed_cache_write_still_ledgers_the_paid_call(tmp_path: Path) -> None:
    class ReadOnlyCache(ResponseCache):
        def put(self, key: str, reply: LLMReply, meta: dict | None = None) -> None:
            raise StorageUnavailable("bucket throttled")

    storage = LocalStorage(tmp_path)
    ledger = Ledger(storage)
    gw = LLMGateway(FakeLLM(), ReadOnlyCache(storage), ledger)
    with pytest.raises(StorageUnavailable):
        ask(gw)
    assert outcomes(ledger) == ["ok"]
    assert ledger.load_all()[0].cost_usd == 0.001
