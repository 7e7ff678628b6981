"""The LLM port of the pipeline and its litellm adapter.

What it does: defines the ``LLM`` protocol the prompting modules (rules, labeling) call, and
``LiteLLMClient``, the one implementation, which sends chat completions through litellm with a
concurrency limit, a per-call timeout, its own retry loop (exponential backoff with full jitter,
honouring ``Retry-After``) and translation of every litellm exception into ``core.errors`` (by the
table in ``core.llm.litellm_edge``). It also builds the ``response_format`` payloads the prompting
modules ask for.

What it does not do: build prompts, parse labels, cache replies or write the cost ledger (callers
do that with the ``LLMReply`` they get back), or read settings: the handler maps config fields into
``Endpoint`` and ``LLMOptions``.

litellm itself is reached through ``core.llm.litellm_edge.litellm_module``, which imports it on first
use, offline, so importing this module costs nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from core.errors import LLMBadRequest, LLMParamRefused, LLMRateLimited, LLMUnavailable, RetryableError, map_exceptions
from core.llm import providers
from core.llm.capabilities import OPTIONAL_PARAMS, refused_param
from core.llm.litellm_edge import litellm_module, translate_error
from core.schema import LLMReply

ResponseFormatMode = Literal["json_schema", "json_object", "none"]
Sleep = Callable[[float], Awaitable[Any]]

# A provider asking for a longer pause is still retried after this long: a bogus header must not
# stall a batch job for hours.
_RETRY_AFTER_CEILING_S = 300.0
# Concurrent callers told the same Retry-After would otherwise all come back in the same instant.
_RETRY_AFTER_JITTER = 0.1
# OpenAI-compatible providers: with a custom base_url they are vLLM, the oracle server, LM Studio
# and the like, which all accept a json_schema response_format (guided decoding).
_OPENAI_COMPATIBLE = frozenset(name for name, row in providers.PROVIDERS.items() if row.auth == "self_hosted")


@dataclass(frozen=True)
class Endpoint:
    """Where to send a chat call: a litellm model string, optional base URL and key, and the per-model litellm
    parameters of the config (``api.large_params``: ``reasoning_effort``, ``api_version``, ...), sent as they are.

    ``label_params`` are the ones that can change a reply (part of the response-cache key); ``reasoning``: the
    model thinks before answering, so it gets a larger completion budget; ``mark_cache``: its provider caches
    only prompt prefixes marked with ``cache_control``.
    """

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    params: Mapping[str, Any] = field(default_factory=dict)
    label_params: Mapping[str, Any] = field(default_factory=dict)
    reasoning: bool = False
    mark_cache: bool = False


@dataclass(frozen=True)
class LLMOptions:
    concurrency_limit: int = 50
    timeout_s: float = 60
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0


@runtime_checkable
class LLM(Protocol):
    async def chat(
        self,
        endpoint: Endpoint,
        messages: list[dict[str, str]],
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int = 400,
        temperature: float | None = 0.0,
        logprobs: bool = False,
    ) -> LLMReply: ...

    def supports_response_format(self, endpoint: Endpoint) -> str: ...


# ---------------------------------------------------------------- pure helpers


def label_schema(classes: list[str]) -> dict[str, Any]:
    """OpenAI ``response_format`` forcing ``{"reason": str, "label": one of classes}``.

    >>> label_schema(["spam", "ham"])["json_schema"]["schema"]["properties"]["label"]
    {'type': 'string', 'enum': ['spam', 'ham']}
    """
    schema = {
        "type": "object",
        "properties": {"reason": {"type": "string"}, "label": {"type": "string", "enum": list(classes)}},
        "required": ["reason", "label"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "label", "strict": True, "schema": schema}}


def backoff_delay(attempt: int, options: LLMOptions, rng: random.Random, retry_after: float | None) -> float:
    """Delay before retry number ``attempt + 1``: the provider's Retry-After when it sent one (plus a
    little jitter), else full jitter, ``uniform(0, min(max, base * 2**attempt))``."""
    if retry_after is not None:
        wait = min(retry_after, _RETRY_AFTER_CEILING_S)
        return wait + rng.uniform(0.0, wait * _RETRY_AFTER_JITTER)
    cap = min(options.backoff_max_s, options.backoff_base_s * (2.0**attempt))
    return rng.uniform(0.0, cap)


def response_format_mode(
    provider: str | None, has_base_url: bool, schema_supported: bool, params: list[str] | None,
    provider_schema: bool = False,
) -> ResponseFormatMode:
    """The decision table behind ``LiteLLMClient.supports_response_format``.

    ============================================  ===============
    case (first match wins)                        mode
    ============================================  ===============
    provider unknown to litellm                    ``none``
    OpenAI-compatible provider + custom base_url   ``json_schema``  (vLLM, oracle, LM Studio)
    litellm turns a schema into the provider's     ``json_schema``  (Azure, Anthropic, Bedrock, Gemini,
    own form for any of its models                                   Vertex, Ollama: ``core.llm.providers``)
    litellm says the model supports schemas        ``json_schema``  (gpt-4o-mini, ...)
    provider accepts ``response_format``           ``json_object``  (unmapped openai, ...)
    anything else                                  ``none``         (prompt only)
    ============================================  ===============

    litellm's schema flag comes from its bundled model map, so a model served under a custom name (the
    oracle's "openai/oracle-large", a vLLM deployment, an Azure deployment) is unknown there; the base_url
    and provider rows cover those.
    """
    if provider is None:
        return "none"
    if has_base_url and provider in _OPENAI_COMPATIBLE:
        return "json_schema"
    if provider_schema or schema_supported:
        return "json_schema"
    if params is not None and "response_format" in params:
        return "json_object"
    return "none"


# ---------------------------------------------------------------- litellm's replies


def _where(endpoint: Endpoint) -> str:
    return f"model {endpoint.model!r}" + (f" at {endpoint.base_url}" if endpoint.base_url else "")


def _get(obj: Any, name: str) -> Any:
    """Attribute or key access: litellm hands back pydantic objects whose nested parts may be dicts."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _logprobs_of(choice: Any) -> list[dict[str, Any]] | None:
    content = _get(_get(choice, "logprobs"), "content")
    if not content:
        return None
    return [{"token": _get(item, "token"), "logprob": float(_get(item, "logprob"))} for item in content]


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def usage_counts(usage: Any) -> dict[str, int]:
    """Token counts from litellm's (OpenAI-shaped) usage, whatever the provider.

    ``cached_tokens``: prompt tokens read from the provider's prompt cache (OpenAI, Azure and Gemini report
    ``prompt_tokens_details.cached_tokens``; litellm also copies Anthropic's and Bedrock's
    ``cache_read_input_tokens`` there). ``cache_write_tokens``: tokens written to it (Anthropic, Bedrock bill
    them at a premium). ``reasoning_tokens``: hidden thinking, part of ``completion_tokens``.

    >>> usage_counts({"prompt_tokens": 1200, "completion_tokens": 30,
    ...               "prompt_tokens_details": {"cached_tokens": 1024}})["cached_tokens"]
    1024
    """
    details = _get(usage, "prompt_tokens_details")
    done = _get(usage, "completion_tokens_details")
    return {
        "tokens_in": _int(_get(usage, "prompt_tokens")),
        "tokens_out": _int(_get(usage, "completion_tokens")),
        "cached_tokens": _int(_get(details, "cached_tokens")) or _int(_get(usage, "cache_read_input_tokens")),
        "cache_write_tokens": (_int(_get(usage, "cache_creation_input_tokens"))
                               or _int(_get(details, "cache_creation_tokens"))),
        "reasoning_tokens": _int(_get(done, "reasoning_tokens")),
    }


def _cost_of(response: Any) -> tuple[float, bool]:
    """litellm prices every response it returns (``_hidden_params["response_cost"]``, None when the model is
    not in its cost map); reuse that rather than pricing the response a second time, which costs ~1 ms."""
    hidden = getattr(response, "_hidden_params", None) or {}
    if isinstance(hidden, dict) and "response_cost" in hidden:
        cost = hidden["response_cost"]
        return (float(cost), True) if cost is not None else (0.0, False)
    try:
        cost = litellm_module().completion_cost(completion_response=response)
    except Exception:  # noqa: BLE001 - litellm raises plain Exception subclasses for unmapped models
        return 0.0, False
    return float(cost or 0.0), True


def _reply_from(response: Any, endpoint: Endpoint, latency_s: float) -> LLMReply:
    if not getattr(response, "choices", None):
        raise LLMUnavailable(f"model {endpoint.model!r} sent a reply without choices")
    choice = response.choices[0]
    cost, cost_known = _cost_of(response)
    return LLMReply(
        text=_get(_get(choice, "message"), "content") or "",
        model=endpoint.model,
        latency_s=latency_s,
        cost_usd=cost,
        cost_known=cost_known,
        logprobs=_logprobs_of(choice),
        finish_reason=str(_get(choice, "finish_reason") or ""),
        **usage_counts(_get(response, "usage")),
    )


class LiteLLMClient:
    """``LLM`` over litellm. One instance may serve several event loops, one after another."""

    def __init__(
        self, options: LLMOptions, *, sleep: Sleep = asyncio.sleep, rng: random.Random | None = None
    ) -> None:
        self._options = options
        self._sleep = sleep
        self._rng = rng or random.Random()
        # asyncio primitives are bound to the loop they are first used on, so keep one per loop.
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = asyncio.Semaphore(self._options.concurrency_limit)
            self._semaphores[loop] = sem
        return sem

    async def chat(
        self,
        endpoint: Endpoint,
        messages: list[dict[str, str]],
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int = 400,
        temperature: float | None = 0.0,
        logprobs: bool = False,
    ) -> LLMReply:
        kwargs: dict[str, Any] = {
            **endpoint.params,  # config-time validation keeps these off the keys set below
            "model": endpoint.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "timeout": self._options.timeout_s,
            # We retry ourselves (with Retry-After and our error split); litellm and the openai SDK
            # beneath it must not retry as well, or one call becomes up to 25 requests.
            "num_retries": 0,
            # A provider without some parameter (logprobs on Anthropic, say) gets the call without it.
            "drop_params": True,
            "max_retries": 0,
        }
        if temperature is not None:  # None: the model takes only its default
            kwargs["temperature"] = temperature
        if endpoint.base_url:
            kwargs["api_base"] = endpoint.base_url
        if endpoint.api_key:
            kwargs["api_key"] = endpoint.api_key
        if response_format is not None:
            kwargs["response_format"] = response_format
        if logprobs:
            kwargs["logprobs"] = True

        attempt = 0
        failed: list[str] = []  # every failed attempt is reported, so the ledger can show each request
        while True:
            try:
                reply = await self._attempt(endpoint, kwargs)
                return dataclasses.replace(reply, retried_errors=tuple(failed)) if failed else reply
            except RetryableError as err:
                if attempt >= self._options.max_retries:
                    err.attempt_errors = tuple(failed)
                    raise
                failed.append(f"{type(err).__name__}: {err}"[:300])
                retry_after = err.retry_after if isinstance(err, LLMRateLimited) else None
                await self._sleep(backoff_delay(attempt, self._options, self._rng, retry_after))
                attempt += 1

    async def _attempt(self, endpoint: Endpoint, kwargs: dict[str, Any]) -> LLMReply:
        ll = litellm_module()
        # The slot is held for one attempt only, so a call waiting out a backoff frees it for others.
        async with self._semaphore():
            started = time.perf_counter()
            try:
                with map_exceptions(lambda exc: translate_error(exc, _where(endpoint), endpoint.api_key)):
                    # httpx's timeout is per read, so a server that trickles bytes can outlast it; the
                    # wait_for is the hard wall.
                    response = await asyncio.wait_for(ll.acompletion(**kwargs), self._options.timeout_s)
            except LLMBadRequest as err:
                # A 400 naming an optional parameter we added: the caller asks again without it.
                param = refused_param(str(err), [p for p in OPTIONAL_PARAMS if p in kwargs])
                if param is None or isinstance(err, LLMParamRefused):
                    raise
                raise LLMParamRefused(str(err), param) from err
            return _reply_from(response, endpoint, time.perf_counter() - started)

    def supports_response_format(self, endpoint: Endpoint) -> str:
        """Which ``response_format`` to send: see ``response_format_mode`` for the table."""
        ll = litellm_module()
        try:
            _, provider, _, _ = ll.get_llm_provider(model=endpoint.model)
        except Exception:  # noqa: BLE001 - unknown model or provider
            return response_format_mode(None, bool(endpoint.base_url), False, None)
        try:
            schema_ok = bool(ll.supports_response_schema(model=endpoint.model, custom_llm_provider=provider))
        except Exception:  # noqa: BLE001 - model missing from the capability map
            schema_ok = False
        try:
            params = ll.get_supported_openai_params(model=endpoint.model, custom_llm_provider=provider)
        except Exception:  # noqa: BLE001
            params = None
        provider_schema = providers.facts(endpoint.model).structured == "json_schema"
        return response_format_mode(provider, bool(endpoint.base_url), schema_ok, params, provider_schema)
