"""Tests of core.llm: pure helpers, and LiteLLMClient through litellm over HTTP to the oracle server.

No litellm mocking: every call goes through litellm and the openai SDK to a real local server process
whose faults (429, 500, hangs, 401 for key "sk-bad", 400s) are injected by seeded rates. Only ``sleep`` is
injected where a test needs to see the backoff delays without waiting them out.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from core.errors import LLMAuthError, LLMBadRequest, LLMRateLimited, LLMUnavailable
from core.llm.client import (
    LLM,
    Endpoint,
    LiteLLMClient,
    LLMOptions,
    backoff_delay,
    label_schema,
    response_format_mode,
)
from core.llm.litellm_edge import litellm_errors, litellm_module, parse_retry_after, scrub, translate_error
from tests.fixtures.llm_server import REPO_ROOT, OracleHandle, shared_data_dir

# litellm lazily imports provider modules whose TypedDicts make pydantic warn ("... using the `ReadOnly`
# qualifier"); harmless, but an error under filterwarnings=error, and which call trips it depends on order.
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")

SMS = shared_data_dir() / "sms_spam.jsonl"
MODEL = "openai/oracle-large"
KEY = "sk-test-not-secret"
HELLO = [{"role": "user", "content": "Write classification rules for spam versus ham."}]


def first_rows(path: Path, n: int) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def label_prompt(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You label SMS messages as spam or ham."},
        {"role": "user", "content": f"Label this message.\n<text>\n{text}\n</text>"},
    ]


class RecordingSleep:
    """Stands in for asyncio.sleep: records the requested delays and yields without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def endpoint(server: OracleHandle, key: str | None = KEY) -> Endpoint:
    return Endpoint(model=MODEL, base_url=server.base_url, api_key=key)


def status_count(server: OracleHandle, status: int) -> int:
    return int(server.stats(prompts=False)["by_status"].get(str(status), 0))


# ---------------------------------------------------------------- pure helpers


def test_label_schema_shape() -> None:
    fmt = label_schema(["spam", "ham"])
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "label"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == {
        "type": "object",
        "properties": {"reason": {"type": "string"}, "label": {"type": "string", "enum": ["spam", "ham"]}},
        "required": ["reason", "label"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "2"}, 2.0, id="seconds"),
        pytest.param({"retry-after": "0.25"}, 0.25, id="fractional-seconds"),
        pytest.param({"Retry-After": "9", "retry-after-ms": "150"}, 0.15, id="ms-wins"),
        pytest.param({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0, id="http-date"),
        pytest.param({"Retry-After": "-3"}, 0.0, id="negative-clamped"),
        pytest.param({"Retry-After": "soon"}, None, id="garbage"),
        pytest.param({}, None, id="absent"),
        pytest.param(None, None, id="no-headers"),
    ],
)
def test_parse_retry_after(headers: dict[str, str] | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == expected


def test_backoff_full_jitter_grows_and_caps() -> None:
    options = LLMOptions(backoff_base_s=0.5, backoff_max_s=3.0)
    rng = random.Random(7)
    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (10, 3.0)]:
        draws = [backoff_delay(attempt, options, rng, None) for _ in range(400)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > 0.8 * cap  # full jitter spans the range, not a fixed delay
        assert min(draws) < 0.2 * cap


def test_backoff_honours_retry_after_with_small_jitter_and_ceiling() -> None:
    options = LLMOptions(backoff_base_s=0.5, backoff_max_s=3.0)
    rng = random.Random(7)
    draws = [backoff_delay(0, options, rng, 12.0) for _ in range(200)]
    assert all(12.0 <= d <= 13.2 for d in draws)
    assert len(set(draws)) > 1
    assert 300.0 <= backoff_delay(0, options, rng, 10_000.0) <= 330.0


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        pytest.param("Incorrect API key provided: sk-bad.", "sk-bad", "Incorrect API key provided: ***.", id="exact-key"),
        pytest.param("key sk-abc123XYZ leaked", None, "key sk-*** leaked", id="key-shaped"),
        pytest.param("Authorization: Bearer abc.def", None, "Authorization: Bearer ***", id="bearer"),
        pytest.param("a task-based prompt", None, "a task-based prompt", id="no-false-positive"),
    ],
)
def test_scrub(text: str, secret: str | None, expected: str) -> None:
    assert scrub(text, secret) == expected


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("POST", "http://llm.test/v1/chat"))


def _raised_from(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def _litellm_failures() -> list[Any]:
    ll = litellm_module()
    return [
        pytest.param(ll.RateLimitError(f"slow down, {KEY}", "openai", MODEL,
                                       response=_response(429, {"retry-after": "2"})),
                     LLMRateLimited, "rate limited by model", id="rate-limited"),
        pytest.param(ll.AuthenticationError("Incorrect API key provided: sk-bad", "openai", MODEL),
                     LLMAuthError, "rejected the API key", id="auth"),
        pytest.param(ll.PermissionDeniedError("forbidden", "openai", MODEL, response=_response(403)),
                     LLMAuthError, "rejected the API key", id="denied"),
        pytest.param(TimeoutError(), LLMUnavailable, "did not answer in time: TimeoutError", id="our-timeout"),
        pytest.param(ll.Timeout("read timed out", MODEL, "openai"), LLMUnavailable, "did not answer in time",
                     id="litellm-timeout"),
        pytest.param(ll.APIConnectionError("connection refused", "openai", MODEL), LLMUnavailable, "is unavailable",
                     id="connection"),
        pytest.param(ll.ServiceUnavailableError("overloaded", "openai", MODEL), LLMUnavailable, "is unavailable",
                     id="503"),
        pytest.param(ll.BadRequestError("max_tokens too large", MODEL, "openai"), LLMBadRequest, "refused the request",
                     id="bad-request"),
        pytest.param(ll.NotFoundError("no such model", MODEL, "openai"), LLMBadRequest, "refused the request",
                     id="not-found"),
        pytest.param(ll.APIError(504, "gateway timeout", "openai", MODEL), LLMUnavailable, "failed (HTTP 504)",
                     id="unlisted-5xx"),
        pytest.param(ll.APIError(418, "teapot", "openai", MODEL), LLMBadRequest, "call failed (APIError) (HTTP 418)",
                     id="unlisted-4xx"),
        pytest.param(ValueError("odd"), LLMBadRequest, "call failed (ValueError): odd", id="unlisted-class"),
        pytest.param(_raised_from(ll.InternalServerError("boom", "openai", MODEL),
                                  openai.OpenAIError("The api_key client option must be set")),
                     LLMAuthError, "no request sent to model", id="no-key"),
        pytest.param(_raised_from(ll.InternalServerError("boom", "openai", MODEL), openai.OpenAIError("bad url")),
                     LLMBadRequest, "could not be built", id="not-built"),
    ]


@pytest.mark.parametrize(("exc", "expected", "says"), _litellm_failures())
def test_translate_error_by_table(exc: BaseException, expected: type[Exception], says: str) -> None:
    ours = translate_error(exc, f"model {MODEL!r} at http://llm.test/v1", secret=KEY)
    assert type(ours) is expected
    assert says in str(ours) and f"model {MODEL!r} at http://llm.test/v1" in str(ours)
    assert KEY not in str(ours) and "sk-bad" not in str(ours)
    if isinstance(ours, LLMRateLimited):
        assert ours.retry_after == 2.0


def test_every_table_row_is_ours_and_every_message_formats() -> None:
    fields = {"where": "w", "http": "", "detail": "d", "name": "n", "hint": "h", "module": "m", "install": "i"}
    for ours, message in litellm_errors().values():
        assert issubclass(ours, (LLMAuthError, LLMBadRequest, LLMRateLimited, LLMUnavailable))
        assert message.format(**fields)


def test_endpoint_repr_hides_key() -> None:
    ep = Endpoint(model=MODEL, base_url="http://127.0.0.1:1/v1", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(ep)
    assert "sk-very-secret" not in str(ep)


@pytest.mark.parametrize(
    ("provider", "has_base_url", "schema_ok", "params", "expected"),
    [
        pytest.param(None, True, False, None, "none", id="unknown-provider"),
        pytest.param("openai", True, False, ["response_format"], "json_schema", id="openai-compatible-server"),
        pytest.param("hosted_vllm", True, False, [], "json_schema", id="vllm"),
        pytest.param("openai", False, True, ["response_format"], "json_schema", id="schema-capable-model"),
        pytest.param("openai", False, False, ["response_format"], "json_object", id="openai-unmapped-model"),
        pytest.param("ollama", True, False, ["response_format"], "json_object", id="ollama"),
        pytest.param("ollama", False, False, ["temperature"], "none", id="no-response-format"),
        pytest.param("some_provider", False, False, None, "none", id="no-params-known"),
    ],
)
def test_response_format_mode_table(
    provider: str | None, has_base_url: bool, schema_ok: bool, params: list[str] | None, expected: str
) -> None:
    assert response_format_mode(provider, has_base_url, schema_ok, params) == expected


@pytest.mark.parametrize(
    ("ep", "expected"),
    [
        pytest.param(Endpoint(MODEL, "http://127.0.0.1:9/v1"), "json_schema", id="oracle-with-base-url"),
        pytest.param(Endpoint("openai/gpt-4o-mini"), "json_schema", id="gpt-4o-mini"),
        pytest.param(Endpoint(MODEL), "json_object", id="unmapped-openai-no-base-url"),
        # litellm sends Ollama a schema as its structured-output ``format``, so every Ollama model gets one.
        pytest.param(Endpoint("ollama/llama3"), "json_schema", id="ollama"),
        pytest.param(Endpoint("nosuchprovider/model-x"), "none", id="unknown-provider"),
        pytest.param(Endpoint("totally-unknown-model"), "none", id="unknown-model"),
    ],
)
def test_supports_response_format_uses_litellm_capabilities(ep: Endpoint, expected: str) -> None:
    assert LiteLLMClient(LLMOptions()).supports_response_format(ep) == expected


# ---------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def quick_oracle(oracle_server: Callable[..., OracleHandle]) -> OracleHandle:
    return oracle_server(SMS, noise=0, latency_ms=50, seed=1)


def test_client_implements_protocol() -> None:
    assert isinstance(LiteLLMClient(LLMOptions()), LLM)


def test_chat_returns_text_tokens_latency(quick_oracle: OracleHandle) -> None:
    client = LiteLLMClient(LLMOptions(timeout_s=10, max_retries=0))
    reply = asyncio.run(client.chat(endpoint(quick_oracle), HELLO, max_tokens=300))
    assert reply.text.strip()
    assert reply.model == MODEL
    assert reply.tokens_in > 0 and reply.tokens_out > 0
    assert 0.05 <= reply.latency_s < 10
    # "oracle-large" is in no cost map: cost unknown, not a made-up number.
    assert (reply.cost_usd, reply.cost_known) == (0.0, False)
    assert reply.logprobs is None
    assert not reply.cached


def test_structured_output_and_logprobs(quick_oracle: OracleHandle) -> None:
    client = LiteLLMClient(LLMOptions(timeout_s=10, max_retries=0))
    rows = first_rows(SMS, 6)
    ep = endpoint(quick_oracle)

    async def run() -> list[Any]:
        fmt = label_schema(["spam", "ham"])
        return await asyncio.gather(
            *(client.chat(ep, label_prompt(r["text"]), response_format=fmt, logprobs=True) for r in rows)
        )

    replies = asyncio.run(run())
    for row, reply in zip(rows, replies, strict=True):
        parsed = json.loads(reply.text)
        assert set(parsed) == {"reason", "label"}
        assert parsed["label"] == row["label"]  # noise=0: the oracle answers the human label
        assert reply.logprobs, "logprobs were requested and the server sends them"
        assert all(isinstance(t["token"], str) and t["logprob"] <= 0.0 for t in reply.logprobs)
        assert "".join(t["token"] for t in reply.logprobs) == reply.text


def test_client_is_reusable_across_event_loops(quick_oracle: OracleHandle) -> None:
    client = LiteLLMClient(LLMOptions(concurrency_limit=2, timeout_s=10, max_retries=0))
    for _ in range(2):
        assert asyncio.run(client.chat(endpoint(quick_oracle), HELLO)).text


def test_retries_on_429_honour_retry_after(oracle_server: Callable[..., OracleHandle]) -> None:
    server = oracle_server(SMS, noise=0, latency_ms=0, rate_429=0.5, seed=3)
    sleep = RecordingSleep()
    # A huge backoff base: a delay near the server's Retry-After (0.1 s) can only come from the header.
    options = LLMOptions(timeout_s=10, max_retries=12, backoff_base_s=50.0, backoff_max_s=100.0)
    client = LiteLLMClient(options, sleep=sleep, rng=random.Random(0))

    async def run() -> list[Any]:
        return [await client.chat(endpoint(server), HELLO) for _ in range(8)]

    replies = asyncio.run(run())
    assert all(r.text for r in replies)
    rate_limited = status_count(server, 429)
    assert rate_limited >= 3, "seeded rate 0.5 over 8+ requests must produce 429s"
    assert status_count(server, 200) == 8
    assert len(sleep.delays) == rate_limited
    assert all(0.1 <= d <= 0.11 for d in sleep.delays), sleep.delays


def test_retries_on_500_with_full_jitter(oracle_server: Callable[..., OracleHandle]) -> None:
    server = oracle_server(SMS, noise=0, latency_ms=0, rate_500=0.5, seed=3)
    sleep = RecordingSleep()
    options = LLMOptions(timeout_s=10, max_retries=12, backoff_base_s=0.5, backoff_max_s=2.0)
    client = LiteLLMClient(options, sleep=sleep, rng=random.Random(0))

    async def run() -> list[Any]:
        return [await client.chat(endpoint(server), HELLO) for _ in range(8)]

    assert all(r.text for r in asyncio.run(run()))
    failures = status_count(server, 500)
    assert failures >= 3
    assert status_count(server, 200) == 8
    assert len(sleep.delays) == failures
    assert all(0.0 <= d <= 2.0 for d in sleep.delays)


def test_retries_exhausted_reraise_last_error(oracle_server: Callable[..., OracleHandle]) -> None:
    server = oracle_server(SMS, latency_ms=0, rate_500=1.0)
    sleep = RecordingSleep()
    client = LiteLLMClient(LLMOptions(timeout_s=10, max_retries=2), sleep=sleep)
    with pytest.raises(LLMUnavailable, match="HTTP 500") as info:
        asyncio.run(client.chat(endpoint(server), HELLO))
    assert info.value.retryable
    assert server.stats(prompts=False)["total_requests"] == 3  # first try plus max_retries
    assert len(sleep.delays) == 2


def test_rate_limited_error_carries_retry_after(oracle_server: Callable[..., OracleHandle]) -> None:
    server = oracle_server(SMS, latency_ms=0, rate_429=1.0)
    client = LiteLLMClient(LLMOptions(timeout_s=10, max_retries=0))
    with pytest.raises(LLMRateLimited) as info:
        asyncio.run(client.chat(endpoint(server), HELLO))
    assert info.value.retry_after == pytest.approx(0.1)


@pytest.mark.slow
def test_hang_times_out_then_is_retried(oracle_server: Callable[..., OracleHandle]) -> None:
    always = oracle_server(SMS, latency_ms=0, rate_hang=1.0, hang_s=20)
    client = LiteLLMClient(LLMOptions(timeout_s=0.5, max_retries=1, backoff_base_s=0.01))
    started = time.perf_counter()
    with pytest.raises(LLMUnavailable, match="did not answer in time"):
        asyncio.run(client.chat(endpoint(always), HELLO))
    elapsed = time.perf_counter() - started
    assert 1.0 <= elapsed < 5.0  # two attempts of 0.5 s each, not the server's 20 s hang
    assert always.stats(prompts=False)["total_requests"] == 2

    sometimes = oracle_server(SMS, noise=0, latency_ms=0, rate_hang=0.5, hang_s=20, seed=11)
    client = LiteLLMClient(LLMOptions(timeout_s=0.5, max_retries=10, backoff_base_s=0.01))

    async def run() -> list[Any]:
        return [await client.chat(endpoint(sometimes), HELLO) for _ in range(4)]

    assert all(r.text for r in asyncio.run(run()))
    outcomes = sometimes.stats(prompts=False)["by_outcome"]
    assert outcomes.get("hang", 0) >= 1
    assert outcomes.get("rules", 0) == 4


def test_bad_key_is_auth_error_without_retry_or_key(oracle_server: Callable[..., OracleHandle]) -> None:
    server = oracle_server(SMS, latency_ms=0)
    sleep = RecordingSleep()
    client = LiteLLMClient(LLMOptions(timeout_s=10, max_retries=4), sleep=sleep)
    with pytest.raises(LLMAuthError) as info:
        asyncio.run(client.chat(endpoint(server, key="sk-bad"), HELLO))
    message = str(info.value)
    assert "sk-bad" not in message  # the server echoes the key; we must not
    assert "BOOTSTRAPPER_API__LARGE_API_KEY" in message and "api.large_api_key" in message
    assert not info.value.retryable
    assert server.stats(prompts=False)["total_requests"] == 1
    assert sleep.delays == []


def test_missing_key_is_auth_error_before_any_request(
    quick_oracle: OracleHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = quick_oracle.stats(prompts=False)["total_requests"]
    client = LiteLLMClient(LLMOptions(timeout_s=10, max_retries=4), sleep=RecordingSleep())
    with pytest.raises(LLMAuthError, match="no API key configured"):
        asyncio.run(client.chat(endpoint(quick_oracle, key=None), HELLO))
    assert quick_oracle.stats(prompts=False)["total_requests"] == before


def test_bad_request_is_permanent_and_not_retried(oracle_server: Callable[..., OracleHandle]) -> None:
    server = oracle_server(SMS, latency_ms=0, unknown_text="error")
    client = LiteLLMClient(LLMOptions(timeout_s=10, max_retries=4), sleep=RecordingSleep())
    with pytest.raises(LLMBadRequest, match="HTTP 400") as info:
        asyncio.run(client.chat(endpoint(server), label_prompt("a text the oracle has never seen 1234")))
    assert not info.value.retryable
    assert server.stats(prompts=False)["total_requests"] == 1


def test_malformed_body_is_retryable(oracle_server: Callable[..., OracleHandle]) -> None:
    server = oracle_server(SMS, latency_ms=0, rate_malformed=1.0, malformed_mode="body")
    client = LiteLLMClient(LLMOptions(timeout_s=10, max_retries=1), sleep=RecordingSleep())
    with pytest.raises(LLMUnavailable):
        asyncio.run(client.chat(endpoint(server), HELLO))
    assert server.stats(prompts=False)["total_requests"] == 2


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleep = RecordingSleep()
    client = LiteLLMClient(LLMOptions(timeout_s=5, max_retries=1), sleep=sleep)
    ep = Endpoint(MODEL, f"http://127.0.0.1:{port}/v1", KEY)
    with pytest.raises(LLMUnavailable):
        asyncio.run(client.chat(ep, HELLO))
    assert len(sleep.delays) == 1


@pytest.mark.slow
def test_concurrency_limit_is_respected(oracle_server: Callable[..., OracleHandle]) -> None:
    server = oracle_server(SMS, latency_ms=200)
    client = LiteLLMClient(LLMOptions(concurrency_limit=5, timeout_s=30, max_retries=0))

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(client.chat(endpoint(server), HELLO) for _ in range(20)))
        return time.perf_counter() - started

    # 20 calls of 200 ms, 5 at a time: at least 4 waves. Unlimited they would take about 0.2 s.
    assert asyncio.run(run()) >= 0.78
    assert server.stats(prompts=False)["total_requests"] == 20


def _without_litellm_switches(probe: str) -> str:
    """What ``probe`` prints, run in a fresh interpreter whose environment has no LITELLM_ variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_import_sets_offline_switches_and_reaches_no_network() -> None:
    # Importing litellm binds a socket to ::1 to probe for IPv6 (local, harmless); what must not happen
    # is a lookup or connection, e.g. fetching the model cost map.
    probe = (
        "import sys, time\n"
        "events = []\n"
        "outward = ('socket.connect', 'socket.getaddrinfo', 'socket.gethostbyname', 'socket.sendto')\n"
        "sys.addaudithook(lambda ev, args: events.append(ev) if ev in outward else None)\n"
        "import core.llm.litellm_edge, os\n"
        "t = time.perf_counter(); core.llm.litellm_edge.litellm_module(); took = time.perf_counter() - t\n"
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], os.environ['LITELLM_OFFLINE_MODE'], events, took)\n"
    )
    cost_map, offline, events, took = _without_litellm_switches(probe).split(maxsplit=3)
    assert (cost_map, offline, events) == ("True", "true", "[]")
    assert float(took) < 30


def test_importing_core_leaves_the_environment_alone() -> None:
    # Every module that reaches litellm, imported in a fresh interpreter without the switches set.
    probe = (
        "import os\n"
        "import core.llm.cache, core.llm.client, core.llm.fanout, core.llm.gateway, core.llm.labeling\n"
        "import core.llm.ledger, core.llm.litellm_edge, core.llm.rules, core.run.plan\n"
        "print(sorted(k for k in os.environ if k.startswith('LITELLM_')), 'litellm' in __import__('sys').modules)\n"
    )
    assert _without_litellm_switches(probe).split() == ["[]", "False"]


def test_offline_switches_never_overwrite_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    # litellm is imported already, so this only replays the switches; their names and values are asserted
    # by test_import_sets_offline_switches_and_reaches_no_network in a fresh interpreter.
    monkeypatch.setenv("LITELLM_OFFLINE_MODE", "users-own")
    monkeypatch.delenv("LITELLM_LOCAL_MODEL_COST_MAP", raising=False)
    litellm_module.__wrapped__()
    assert os.environ["LITELLM_OFFLINE_MODE"] == "users-own"
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
