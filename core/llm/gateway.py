"""The one path every LLM call takes: response cache first, then the model, and a ledger line either way.

``LLMGateway.chat`` looks the request up in the ``ResponseCache``; a hit costs nothing and is returned with
``cached=True``. A miss calls the ``LLM`` adapter, stores the reply in the cache before anything else (the
money is spent, the answer must survive a kill), then records tokens, cost and latency. Errors from the
adapter are recorded and re-raised unchanged; the gateway never retries (the adapter already has) and never
decides whether a reply is usable (rules and labeling do, asking again with ``attempt=1``, which is a
distinct, equally resumable cache entry). Concurrent identical requests are made once: the second waits for
the first and is then served from the cache.

An optional parameter the provider refuses (``LLMParamRefused``: logprobs on Gemini, temperature on a
reasoning model) is learned in ``refusals``, recorded as a ``param_refused`` line (a 400 is not billed and is
no failed label), and the call is made once more without it; later calls leave it out from the start. Until a
model has answered one call carrying a given parameter, its calls carrying it go one at a time, so a refusal
is met once, not once per concurrent worker (a call without logprobs answered first says nothing of logprobs).

Ledger error strings are scrubbed of the endpoint's API key and of anything shaped like one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from core.errors import LLMParamRefused, PermanentError, RetryableError
from core.llm.cache import ResponseCache, request_key
from core.llm.capabilities import ParamRefusals
from core.llm.client import LLM, Endpoint
from core.llm.ledger import COST_UNKNOWN_NOTE, Ledger
from core.llm.litellm_edge import scrub
from core.schema import CallRecord, LLMReply

MAX_ERROR_CHARS = 500
log = logging.getLogger("bootstrapper")


def ledger_error(exc: BaseException, api_key: str | None) -> str:
    """The exception as one short line for the ledger, with the key and key-shaped text removed.

    The adapter already scrubs its messages; this second pass guards errors raised anywhere else.
    """
    return scrub(f"{type(exc).__name__}: {exc}", api_key)[:MAX_ERROR_CHARS]


class LLMGateway:
    """Cached, ledgered chat calls over one ``LLM`` adapter."""

    def __init__(self, llm: LLM, cache: ResponseCache, ledger: Ledger, *,
                 clock: Callable[[], float] = time.time, refusals: ParamRefusals | None = None) -> None:
        self._llm = llm
        self.refusals = refusals if refusals is not None else ParamRefusals()
        self._cache = cache
        self._ledger = ledger
        self._clock = clock
        # key -> [lock, holders]; entries vanish when the last holder leaves so memory stays flat.
        self._locks: dict[str, list[Any]] = {}
        # Per model, the optional parameters a call it answered carried (so no refusal of those is coming). Per
        # parameter: an answered call without logprobs (the rules call) says nothing of logprobs.
        self._accepted: dict[str, set[str]] = {}
        self._probes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary())

    async def chat(
        self,
        *,
        stage: str,
        chunk_id: str,
        endpoint: Endpoint,
        messages: list[dict[str, Any]],
        response_format: dict[str, Any] | None = None,
        max_tokens: int = 400,
        temperature: float | None = 0.0,
        logprobs: bool = False,
        attempt: int = 0,
    ) -> LLMReply:
        """The reply for this request: from the cache when any run already paid for it, else from the model.

        ``attempt`` > 0 asks again with a different cache key (for a reply the caller could not use).
        Raises the adapter's ``RetryableError``/``PermanentError`` after recording it.
        """
        model = endpoint.model
        while True:
            # What the model refused before is left out, so the key is the one the successful call had.
            sent = self._optional(model, logprobs, temperature)
            call = functools.partial(self._chat_once, stage=stage, chunk_id=chunk_id, endpoint=endpoint,
                                     messages=messages, response_format=response_format, max_tokens=max_tokens,
                                     logprobs=sent[0], temperature=sent[1], attempt=attempt)
            carried = {name for name, on in (("logprobs", sent[0]), ("temperature", sent[1] is not None)) if on}
            try:
                if carried <= self._accepted.get(model, set()):
                    return await call()
                # Until one call with these parameters has gone through, calls to the model go one at a time:
                # fifty workers would otherwise all meet the same refusal at once.
                async with self._probe_lock(model):
                    if self._optional(model, logprobs, temperature) != sent:
                        continue  # learned a refusal while waiting: ask without it
                    reply = await call()
                    self._accepted.setdefault(model, set()).update(carried)
                    return reply
            except LLMParamRefused as exc:
                if self.refusals.learn(model, exc.param):
                    log.warning("%s refused %r: asking again without it, and leaving it out for the rest of the "
                                "run", model, exc.param)
                # Each refusal removes one of a handful of optional parameters, so this loop is short.

    def _optional(self, model: str, logprobs: bool, temperature: float | None) -> tuple[bool, float | None]:
        """(logprobs, temperature) as they can be sent to ``model``: without what it refused."""
        return (logprobs and self.refusals.allows(model, "logprobs"),
                temperature if self.refusals.allows(model, "temperature") else None)

    def _probe_lock(self, model: str) -> asyncio.Lock:
        # asyncio locks belong to the loop they are first used on; each step runs its own loop.
        locks = self._probes.setdefault(asyncio.get_running_loop(), {})
        return locks.setdefault(model, asyncio.Lock())

    async def _chat_once(self, *, stage: str, chunk_id: str, endpoint: Endpoint, messages: list[dict[str, Any]],
                         response_format: dict[str, Any] | None, max_tokens: int, temperature: float | None,
                         logprobs: bool, attempt: int) -> LLMReply:
        key = request_key(endpoint.model, messages, response_format=response_format, max_tokens=max_tokens,
                          temperature=temperature, logprobs=logprobs, attempt=attempt,
                          model_params=endpoint.label_params)
        entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                hit = await asyncio.to_thread(self._cache.get, key)
                if hit is not None:
                    self._ledger.record(CallRecord(ts=self._clock(), stage=stage, model=endpoint.model,
                                                   cache_key=key, outcome="cache_hit", chunk_id=chunk_id))
                    # No money was spent on this reply; report it that way to anyone summing replies.
                    return dataclasses.replace(hit, cached=True, cost_usd=0.0)
                return await self._call(key, stage=stage, chunk_id=chunk_id, endpoint=endpoint,
                                        messages=messages, response_format=response_format,
                                        max_tokens=max_tokens, temperature=temperature, logprobs=logprobs)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]

    async def _call(self, key: str, *, stage: str, chunk_id: str, endpoint: Endpoint,
                    messages: list[dict[str, Any]], response_format: dict[str, Any] | None,
                    max_tokens: int, temperature: float | None, logprobs: bool) -> LLMReply:
        started = time.monotonic()
        try:
            reply = await self._llm.chat(endpoint, messages, response_format=response_format,
                                         max_tokens=max_tokens, temperature=temperature, logprobs=logprobs)
        except (RetryableError, PermanentError) as exc:
            self._record_retries(key, stage, endpoint, chunk_id, getattr(exc, "attempt_errors", ()))
            outcome = ("param_refused" if isinstance(exc, LLMParamRefused)
                       else "retryable_error" if isinstance(exc, RetryableError) else "permanent_error")
            self._ledger.record(CallRecord(
                ts=self._clock(), stage=stage, model=endpoint.model, cache_key=key, outcome=outcome,
                latency_s=round(time.monotonic() - started, 4),
                error=ledger_error(exc, endpoint.api_key), chunk_id=chunk_id,
            ))
            raise
        self._record_retries(key, stage, endpoint, chunk_id, reply.retried_errors)
        try:
            await asyncio.to_thread(self._cache.put, key, reply,
                                    {"stage": stage, "chunk_id": chunk_id, "ts": self._clock()})
        finally:
            # The call was paid for even if storing it failed: the ledger must show it.
            self._ledger.record(CallRecord(
                ts=self._clock(), stage=stage, model=endpoint.model, cache_key=key, outcome="ok",
                tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, latency_s=reply.latency_s,
                cost_usd=reply.cost_usd, cost_note="" if reply.cost_known else COST_UNKNOWN_NOTE,
                chunk_id=chunk_id, cached_tokens=reply.cached_tokens, cache_write_tokens=reply.cache_write_tokens,
                finish_reason=reply.finish_reason,
            ))
        return dataclasses.replace(reply, cached=False)

    def _record_retries(self, key: str, stage: str, endpoint: Endpoint, chunk_id: str,
                        errors: tuple[str, ...]) -> None:
        """One ledger line per failed attempt the adapter retried: the ledger accounts for every request."""
        for error in errors:
            self._ledger.record(CallRecord(ts=self._clock(), stage=stage, model=endpoint.model, cache_key=key,
                                           outcome="retryable_error", error=scrub(error, endpoint.api_key),
                                           chunk_id=chunk_id))

    def recover_unrecorded(self, since: float | None = None) -> int:
        """Add a ledger line for every paid reply in the cache that no ledger line shows.

        A SIGKILL can lose the ledger's unflushed buffer while the replies it paid for are already cached;
        this makes the ledger whole again. Returns how many lines were recovered. ``since`` (the run's start)
        leaves out replies cached before it: a ``--restart`` keeps the cache but starts a new ledger, and
        what an earlier run paid is not this run's spend.
        """
        self._ledger.flush()
        recorded = {r.cache_key for r in self._ledger.load_all() if r.outcome == "ok"}
        recovered = 0
        for key in self._cache.keys():
            if key in recorded:
                continue
            entry = self._cache.read_entry(key)
            if entry is None:
                continue
            reply, meta = entry
            if since is not None and float(meta.get("ts", since)) < since:
                continue
            self._ledger.record(CallRecord(
                ts=float(meta.get("ts", self._clock())), stage=str(meta.get("stage", "unknown")),
                model=reply.model, cache_key=key, outcome="ok", tokens_in=reply.tokens_in,
                tokens_out=reply.tokens_out, latency_s=reply.latency_s, cost_usd=reply.cost_usd,
                cost_note="recovered from the response cache after an interrupted run"
                + ("" if reply.cost_known else "; " + COST_UNKNOWN_NOTE),
                chunk_id=str(meta.get("chunk_id", "")), cached_tokens=reply.cached_tokens,
                cache_write_tokens=reply.cache_write_tokens, finish_reason=reply.finish_reason,
            ))
            recovered += 1
        self._ledger.flush()
        return recovered
