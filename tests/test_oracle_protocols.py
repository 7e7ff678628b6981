"""The oracle's protocol servers (stand-ins answering from human labels), called through litellm as a user would.

For every provider family, a server is started as a process with ``--protocol`` and reached with the
provider's own litellm model string and base-URL setting, sending what the pipeline sends (system + user
message, a strict label schema, ``max_tokens=400``, ``logprobs=True``, ``drop_params=True``). The tests check
what arrives (the provider's key header, structured output in the provider's form, via /stats) and what
litellm makes of the reply (the label, usage and cached tokens, finish reason, and which exception class each
provider error becomes). Numbers in the expectations follow the oracle's documented rules: tokens are
characters / 4, OpenAI caches prefixes of 1,024+ tokens in steps of 128, the others cache whole marked or
seen prefixes of 1,024+ tokens.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import litellm
import pytest

from oracle.process import OracleHandle, start_oracle
from tests.fixtures.llm_server import shared_data_dir

pytestmark = pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")

CLASSES = ["ham", "spam"]
AWS = {"aws_access_key_id": "AKIDORACLETEST", "aws_secret_access_key": "oracle-test-secret", "aws_region_name": "us-east-1"}
SYSTEM = "You label texts for a text classifier. Follow the rules. "


@dataclass(frozen=True)
class Provider:
    """One litellm provider family against its oracle protocol: how litellm is called, what should arrive."""

    id: str
    protocol: str
    model: str
    credentials: dict[str, Any]  # litellm kwargs carrying the key
    wrong_credentials: dict[str, Any]
    auth_seen: str  # /stats ``by_auth`` entry: the header's name and scheme
    structure: str  # /stats ``by_structure`` entry: the provider's structured-output form
    server: dict[str, Any] = field(default_factory=dict)  # server options: the key it insists on
    explicit_cache: bool = False  # cache_control breakpoints (Anthropic, Bedrock) instead of automatic caching


PROVIDERS = [
    Provider("openai", "openai", "openai/gpt-4o-mini", {"api_key": "sk-oracle"}, {"api_key": "sk-wrong"},
             "authorization: Bearer", "response_format.json_schema", {"api_key": "sk-oracle"}),
    Provider("azure", "azure", "azure/labeler", {"api_key": "az-oracle", "api_version": "2024-10-21"},
             {"api_key": "az-wrong", "api_version": "2024-10-21"}, "api-key", "response_format.json_schema",
             {"api_key": "az-oracle"}),
    Provider("anthropic", "anthropic", "anthropic/claude-haiku-4-5", {"api_key": "sk-ant-oracle"},
             {"api_key": "sk-ant-wrong"}, "x-api-key", "output_format", {"api_key": "sk-ant-oracle"}, True),
    Provider("anthropic-tool", "anthropic", "anthropic/claude-3-5-haiku-20241022", {"api_key": "sk-ant-oracle"},
             {"api_key": "sk-ant-wrong"}, "x-api-key", "tool_choice.tool", {"api_key": "sk-ant-oracle"}, True),
    Provider("bedrock", "bedrock", "bedrock/converse/us.anthropic.claude-haiku-4-5-20251001-v1:0", AWS,
             AWS | {"aws_access_key_id": "AKIDWRONG"}, "authorization: AWS4-HMAC-SHA256", "outputConfig.textFormat",
             {"api_key": AWS["aws_access_key_id"], "aws_secret_access_key": AWS["aws_secret_access_key"]}, True),
    Provider("bedrock-tool", "bedrock", "bedrock/converse/amazon.nova-lite-v1:0", AWS,
             AWS | {"aws_access_key_id": "AKIDWRONG"}, "authorization: AWS4-HMAC-SHA256", "toolConfig.toolChoice",
             {"api_key": AWS["aws_access_key_id"], "aws_secret_access_key": AWS["aws_secret_access_key"]}, True),
    Provider("gemini", "gemini", "gemini/gemini-2.5-flash", {"api_key": "g-oracle"}, {"api_key": "g-wrong"},
             "x-goog-api-key", "generationConfig.responseJsonSchema", {"api_key": "g-oracle"}),
    Provider("ollama", "ollama", "ollama_chat/llama3", {"api_key": "ol-oracle"}, {"api_key": "ol-wrong"},
             "authorization: Bearer", "format.schema", {"api_key": "ol-oracle"}),
]  # fmt: skip
BY_ID = {provider.id: provider for provider in PROVIDERS}
ONE_PER_PROTOCOL = [BY_ID[name] for name in ("openai", "azure", "anthropic", "bedrock", "gemini", "ollama")]


def label_schema(classes: list[str]) -> dict[str, Any]:
    """The pipeline's strict ``{"reason", "label"}`` response format (as core.llm builds it)."""
    schema = {
        "type": "object",
        "properties": {"reason": {"type": "string"}, "label": {"type": "string", "enum": classes}},
        "required": ["reason", "label"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "label", "strict": True, "schema": schema}}


def messages_for(text: str, provider: Provider, system: str = SYSTEM) -> list[dict[str, Any]]:
    """System + user as the pipeline sends them; the system prefix marked for caching where the provider needs it."""
    content: Any = system
    if provider.explicit_cache:
        content = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    return [{"role": "system", "content": content}, {"role": "user", "content": f"<text>\n{text}\n</text>"}]


async def acall(provider: Provider, handle: OracleHandle, text: str, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "model": provider.model,
        "api_base": handle.base_url,
        "messages": messages_for(text, provider),
        "response_format": label_schema(CLASSES),
        "max_tokens": 400,
        "temperature": 0,
        "logprobs": True,
        "drop_params": True,
        "num_retries": 0,
        "max_retries": 0,
        "timeout": 5,
        **provider.credentials,
    }
    return await litellm.acompletion(**(kwargs | overrides))


def call(provider: Provider, handle: OracleHandle, text: str, **overrides: Any) -> Any:
    return asyncio.run(acall(provider, handle, text, **overrides))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    lines = (shared_data_dir() / "sms_spam.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]]) -> Iterator[Callable[..., OracleHandle]]:
    """``get(provider, **options)``: a server for the provider's protocol and key, one per distinct option set."""
    workdir = tmp_path_factory.mktemp("oracle-protocols")
    data = workdir / "sms60.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    started: dict[str, OracleHandle] = {}

    def get(provider: Provider, **options: Any) -> OracleHandle:
        settings = {"latency_ms": 0, "noise": 0, "verbose": True, **provider.server, **options}
        key = json.dumps([provider.protocol, settings], sort_keys=True)
        if key not in started:
            started[key] = start_oracle(data, workdir, protocol=provider.protocol, **settings)
        return started[key]

    yield get
    for handle in started.values():
        handle.process.terminate()  # all at once: stopping thirty servers one by one takes seconds
    for handle in started.values():
        handle.stop()


def reply_label(response: Any) -> str:
    return json.loads(response.choices[0].message.content)["label"]


def answer_tokens(response: Any) -> int:
    """The answer's tokens as the server counted them: litellm re-serialises a tool's input with ASCII escapes."""
    answer = json.loads(response.choices[0].message.content)
    return math.ceil(len(json.dumps(answer, ensure_ascii=False)) / 4)


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.id)
def test_label_key_and_structure_arrive_the_providers_way(
    provider: Provider, servers: Callable[..., OracleHandle], rows: list[dict[str, str]]
) -> None:
    handle = servers(provider, unknown_text="error")
    handle.reset_stats()
    picked = [row for row in rows if row["label"] == "spam"][:3] + [row for row in rows if row["label"] == "ham"][:3]

    async def run() -> list[Any]:
        return await asyncio.gather(*(acall(provider, handle, row["text"]) for row in picked))

    for row, response in zip(picked, asyncio.run(run()), strict=True):
        assert reply_label(response) == row["label"]
        assert response.choices[0].finish_reason == "stop"
        assert response.usage.prompt_tokens >= math.ceil(len(SYSTEM + row["text"]) / 4)
        assert response.usage.completion_tokens == answer_tokens(response)
    stats = handle.stats(prompts=False)
    assert stats["by_auth"] == {provider.auth_seen: 6}
    assert stats["by_structure"] == {provider.structure: 6}
    assert stats["by_outcome"] == {"label": 6}
    for name in ("api_key", "aws_secret_access_key"):
        if name in provider.credentials:
            assert provider.credentials[name] not in handle.log(), f"the {name} reached the server's (verbose) log"


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.id)
def test_cached_tokens_parse_in_litellm(
    provider: Provider, servers: Callable[..., OracleHandle], rows: list[dict[str, str]]
) -> None:
    """A 1,100-token system prefix: the first call writes (or misses) the cache, the second reads it."""
    handle = servers(provider)
    system = ("Rule: label by the sender's purpose. " * 200)[:4400]
    first, second = (
        call(provider, handle, row["text"], messages=messages_for(row["text"], provider, system)) for row in rows[:2]
    )
    read = {"openai": 1024, "azure": 1024, "ollama": 0}.get(provider.protocol, 1100)  # OpenAI: 1024 + k * 128
    details = [response.usage.prompt_tokens_details for response in (first, second)]
    assert [getattr(d, "cached_tokens", None) or 0 for d in details] == [0, read]
    if provider.explicit_cache:
        assert [response.usage.cache_creation_input_tokens for response in (first, second)] == [1100, 0]
    for response, row in zip((first, second), rows[:2], strict=True):
        # prompt_tokens counts cached and cache-written tokens too, whichever way the provider reports them.
        assert response.usage.prompt_tokens == math.ceil((len(system) + len(f"<text>\n{row['text']}\n</text>")) / 4)
    assert handle.stats(prompts=False)["cache_read_tokens"] >= read


@pytest.mark.parametrize("provider", [BY_ID["openai"], BY_ID["anthropic"]], ids=lambda p: p.id)
def test_a_short_prefix_is_never_cached(
    provider: Provider, servers: Callable[..., OracleHandle], rows: list[dict[str, str]]
) -> None:
    """Below the providers' 1,024-token minimum (the pipeline's ~409-token prefix) nothing is cached."""
    handle = servers(provider)
    system = SYSTEM * 28  # ~400 tokens
    for row in rows[2:5]:
        usage = call(provider, handle, row["text"], messages=messages_for(row["text"], provider, system)).usage
        assert (getattr(usage.prompt_tokens_details, "cached_tokens", None) or 0) == 0
        assert (getattr(usage, "cache_creation_input_tokens", None) or 0) == 0


FAULTS = {"429": {"rate_429": 1}, "500": {"rate_500": 1}, "overloaded": {"rate_overloaded": 1}}
# (provider, fault) -> (litellm's exception class, the status the server sent, a provider marker in the error).
ERRORS = {
    ("openai", "429"): (litellm.RateLimitError, 429, "Rate limit"),
    ("openai", "500"): (litellm.InternalServerError, 500, "server had an error"),
    ("openai", "overloaded"): (litellm.ServiceUnavailableError, 503, "overloaded"),
    ("openai", "wrong-key"): (litellm.AuthenticationError, 401, "Incorrect API key"),
    ("azure", "429"): (litellm.RateLimitError, 429, "S0 pricing tier"),
    ("azure", "500"): (litellm.APIError, 500, "server had an error"),  # litellm maps no Azure 500 to its 5xx classes
    ("azure", "overloaded"): (litellm.ServiceUnavailableError, 503, "temporarily unable"),
    ("azure", "wrong-key"): (litellm.AuthenticationError, 401, "Access denied"),
    ("anthropic", "429"): (litellm.RateLimitError, 429, "rate_limit_error"),
    ("anthropic", "500"): (litellm.InternalServerError, 500, "api_error"),
    ("anthropic", "overloaded"): (litellm.InternalServerError, 529, "overloaded_error"),
    ("anthropic", "wrong-key"): (litellm.AuthenticationError, 401, "authentication_error"),
    ("bedrock", "429"): (litellm.RateLimitError, 429, "Too many requests"),
    ("bedrock", "500"): (litellm.ServiceUnavailableError, 500, "internal error"),  # litellm: Bedrock 500 -> 503 class
    ("bedrock", "overloaded"): (litellm.ServiceUnavailableError, 503, "unable to process"),
    ("bedrock", "wrong-key"): (litellm.AuthenticationError, 403, "security token included in the request is invalid"),
    ("gemini", "429"): (litellm.RateLimitError, 429, "RESOURCE_EXHAUSTED"),
    ("gemini", "500"): (litellm.InternalServerError, 500, "INTERNAL"),
    ("gemini", "overloaded"): (litellm.InternalServerError, 503, "UNAVAILABLE"),
    ("gemini", "wrong-key"): (litellm.AuthenticationError, 400, "API_KEY_INVALID"),  # Gemini: a bad key is a 400
    ("ollama", "429"): (litellm.RateLimitError, 429, '{"error": "too many requests'),
    ("ollama", "500"): (litellm.InternalServerError, 500, '{"error": "an internal error'),
    ("ollama", "overloaded"): (litellm.ServiceUnavailableError, 503, "server busy"),
    ("ollama", "wrong-key"): (litellm.AuthenticationError, 401, '{"error": "unauthorized"}'),
}
ERROR_CASES = [pytest.param(p, fault, id=f"{p.id}-{fault}") for p in ONE_PER_PROTOCOL for fault in (*FAULTS, "wrong-key")]


@pytest.mark.parametrize(("provider", "fault"), ERROR_CASES)
def test_provider_errors_map_to_litellm_exceptions(
    provider: Provider, fault: str, servers: Callable[..., OracleHandle], rows: list[dict[str, str]]
) -> None:
    expected, status, marker = ERRORS[(provider.id, fault)]
    handle = servers(provider, **FAULTS.get(fault, {}))
    handle.reset_stats()
    overrides = provider.wrong_credentials if fault == "wrong-key" else {}
    with pytest.raises(expected) as caught:
        call(provider, handle, rows[0]["text"], **overrides)
    assert type(caught.value) is expected, f"{type(caught.value).__name__}: {caught.value}"  # not a subclass
    assert marker in str(caught.value)
    assert handle.stats(prompts=False)["by_status"] == {str(status): 1}


@pytest.mark.parametrize("provider", ONE_PER_PROTOCOL, ids=lambda p: p.id)
def test_a_bad_request_is_a_bad_request(
    provider: Provider, servers: Callable[..., OracleHandle]
) -> None:
    handle = servers(provider, unknown_text="error")
    with pytest.raises(litellm.BadRequestError) as caught:
        call(provider, handle, "a text that is in no dataset at all")
    assert "no label for the text" in str(caught.value)


@pytest.mark.parametrize("provider", ONE_PER_PROTOCOL, ids=lambda p: p.id)
def test_reasoning_model_spends_a_small_budget_on_thinking(
    provider: Provider, servers: Callable[..., OracleHandle], rows: list[dict[str, str]]
) -> None:
    """500 hidden thinking tokens: a 400-token budget gives an empty reply cut off by the length limit."""
    handle = servers(provider, reasoning_tokens=500)
    cut = call(provider, handle, rows[0]["text"], max_tokens=400)
    assert cut.choices[0].finish_reason == "length"
    assert not cut.choices[0].message.content
    assert cut.usage.completion_tokens == 400
    whole = call(provider, handle, rows[0]["text"], max_tokens=1000)
    assert whole.choices[0].finish_reason == "stop" and reply_label(whole) == rows[0]["label"]
    assert whole.usage.completion_tokens == 500 + answer_tokens(whole)
    if provider.protocol in ("openai", "azure", "gemini"):  # the ones whose usage reports thinking apart
        assert cut.usage.completion_tokens_details.reasoning_tokens == 400
        assert whole.usage.completion_tokens_details.reasoning_tokens == 500


def test_gemini_refuses_logprobs_like_gemini(servers: Callable[..., OracleHandle], rows: list[dict[str, str]]) -> None:
    gemini = BY_ID["gemini"]
    refusing = servers(gemini, refuse_logprobs=True)
    with pytest.raises(litellm.BadRequestError) as caught:
        call(gemini, refusing, rows[0]["text"])
    assert "Logprobs is not enabled for models/gemini-2.5-flash" in str(caught.value)
    assert reply_label(call(gemini, refusing, rows[0]["text"], logprobs=False)) == rows[0]["label"]
    # A server that accepts them sends logprobsResult, which litellm turns into OpenAI-style logprobs.
    tokens = call(gemini, servers(gemini), rows[0]["text"]).choices[0].logprobs.content
    label_token = [token for token in tokens if token.token == rows[0]["label"]][-1]
    assert label_token.logprob == pytest.approx(math.log(0.9))


def test_bedrock_signature_is_verified(servers: Callable[..., OracleHandle], rows: list[dict[str, str]]) -> None:
    bedrock = BY_ID["bedrock"]
    handle = servers(bedrock)
    handle.reset_stats()
    with pytest.raises(litellm.PermissionDeniedError, match="signature we calculated does not match"):
        call(bedrock, handle, rows[0]["text"], aws_secret_access_key="not-the-secret")
    # What the config bug of issue 12 sent: a placeholder Bearer key instead of a SigV4 signature.
    bearer = {"api_key": "not-needed", "aws_access_key_id": None, "aws_secret_access_key": None}
    with pytest.raises(litellm.AuthenticationError):
        call(bedrock, handle, rows[0]["text"], **bearer)
    # litellm's Bedrock-specific endpoint setting reaches the same server, signed for another region.
    endpoint = {"api_base": None, "aws_bedrock_runtime_endpoint": handle.base_url, "aws_region_name": "eu-west-1"}
    assert reply_label(call(bedrock, handle, rows[0]["text"], **endpoint)) == rows[0]["label"]
    assert handle.stats(prompts=False)["by_auth"] == {"authorization: AWS4-HMAC-SHA256": 2, "authorization: Bearer": 1}


def test_a_local_ollama_needs_no_key(servers: Callable[..., OracleHandle], rows: list[dict[str, str]]) -> None:
    ollama = BY_ID["ollama"]
    local = servers(ollama, api_key=None)
    assert reply_label(call(ollama, local, rows[0]["text"], api_key=None)) == rows[0]["label"]
    assert local.stats(prompts=False)["by_auth"] == {"none": 1}


# How each provider receives the pipeline's fallback ``json_object`` mode. litellm sends Anthropic and Bedrock
# no structured-output field at all for it, so there the prompt alone asks for JSON.
JSON_OBJECT_FORMS = {
    "openai": "response_format.json_object",
    "azure": "response_format.json_object",
    "anthropic": "none",
    "bedrock": "none",
    "gemini": "generationConfig.responseMimeType",
    "ollama": "format.json",
}


@pytest.mark.parametrize("provider", ONE_PER_PROTOCOL, ids=lambda p: p.id)
def test_json_object_mode_in_each_providers_form(
    provider: Provider, servers: Callable[..., OracleHandle], rows: list[dict[str, str]]
) -> None:
    handle = servers(provider, unknown_text="error")
    handle.reset_stats()
    content = call(provider, handle, rows[0]["text"], response_format={"type": "json_object"}).choices[0].message.content
    form = JSON_OBJECT_FORMS[provider.protocol]
    assert handle.stats(prompts=False)["by_structure"] == {form: 1}
    if form == "none":
        assert content.endswith(f"Final label: {rows[0]['label']}")
    else:
        assert json.loads(content)["label"] == rows[0]["label"]
