"""Content-addressed cache of LLM replies, so a re-run or a resumed run never pays twice for one call.

A call is identified by ``cache_key``: the sha256 of the canonical JSON of the model string, the messages
and the parameters that change the reply (response_format, max_tokens, temperature, logprobs, the per-model
parameters of the config that can change a reply, such as ``reasoning_effort``, and, for a deliberate fresh
retry, ``attempt``). The API key and base URL are not part of the key: rotating a key or
moving a proxy must not invalidate paid work, and a key must never be written anywhere.

Each reply is one small JSON object at ``<prefix><key[:2]>/<key>.json``, written the moment it arrives, so a
kill loses only calls still in flight. This module does not call models, count cost or decide what to cache;
``core.llm.gateway`` does.

    >>> k = request_key("openai/gpt-4o-mini", [{"role": "user", "content": "hi"}])
    >>> len(k), k == request_key("openai/gpt-4o-mini", [{"role": "user", "content": "hi"}], attempt=0)
    (64, True)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from core.errors import ObjectNotFound
from core.schema import LLMReply

if TYPE_CHECKING:
    from core.storage.backends import Storage

log = logging.getLogger(__name__)


def _jsonable(obj: Any) -> Any:
    # A pydantic model class passed as response_format is keyed by its JSON schema.
    schema = getattr(obj, "model_json_schema", None)
    if callable(schema):
        return {"pydantic_schema": schema()}
    raise TypeError(f"cannot build a cache key from a {type(obj).__name__}")


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, unicode kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def cache_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """sha256 hex of the request's canonical JSON. ``params`` must not hold credentials or URLs."""
    payload = canonical_json({"model": model, "messages": messages, "params": params})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def call_params(
    *,
    response_format: Any = None,
    max_tokens: int = 400,
    temperature: float | None = 0.0,
    logprobs: bool = False,
    attempt: int = 0,
    model_params: Any = None,
) -> dict[str, Any]:
    """The reply-shaping parameters of a call, as they enter the key.

    ``attempt`` is only present when > 0, so attempt 0 has the same key as a plain call and each fresh retry
    of an unusable reply gets its own (still resumable) entry; ``model_params`` only when there are some, so
    a config without them keeps the keys it always had. ``temperature`` None: not sent (the model refused it).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    params: dict[str, Any] = {
        "response_format": response_format,
        "max_tokens": max_tokens,
        "temperature": None if temperature is None else float(temperature),
        "logprobs": bool(logprobs),
    }
    if model_params:
        params["model_params"] = dict(model_params)
    if attempt:
        params["attempt"] = attempt
    return params


def request_key(model: str, messages: list[dict[str, Any]], **params: Any) -> str:
    """``cache_key`` of a call given the same arguments as ``LLMGateway.chat`` (``params`` as ``call_params``)."""
    return cache_key(model, messages, call_params(**params))


class ResponseCache:
    """Replies by key, on storage and memoised in memory for the life of this object."""

    def __init__(self, storage: Storage, prefix: str = "cache/") -> None:
        self._storage = storage
        self._prefix = prefix
        self._memory: dict[str, LLMReply] = {}

    def path(self, key: str) -> str:
        # Two-character fan-out keeps local folders small and spreads S3 key prefixes.
        return f"{self._prefix}{key[:2]}/{key}.json"

    def get(self, key: str) -> LLMReply | None:
        hit = self._memory.get(key)
        if hit is not None:
            return hit
        found = self.read_entry(key)
        if found is None:
            return None
        self._memory[key] = found[0]
        return found[0]

    def read_entry(self, key: str) -> tuple[LLMReply, dict[str, Any]] | None:
        """The stored reply and the metadata of the call that paid for it (stage, chunk_id, ts)."""
        try:
            raw = self._storage.read_bytes(self.path(key))
        except ObjectNotFound:
            return None
        try:
            doc = json.loads(raw)
            meta = doc.pop("_meta", None) or {}
            return LLMReply.from_dict(doc), meta
        except (ValueError, TypeError, KeyError) as exc:
            # A torn or foreign entry is a miss: the call is made again and the entry overwritten.
            log.warning("ignoring unreadable cache entry %s: %s", self.path(key), exc)
            return None

    def keys(self) -> Iterator[str]:
        """Every key with a stored entry."""
        for path in self._storage.list(self._prefix):
            name = path.rsplit("/", 1)[-1]
            if name.endswith(".json"):
                yield name[: -len(".json")]

    def put(self, key: str, reply: LLMReply, meta: dict[str, Any] | None = None) -> None:
        # Stored as a fresh reply; whoever serves it from the cache marks it cached. ``meta`` lets a later run
        # account for a paid call whose ledger line a kill lost.
        stored = LLMReply.from_dict({**reply.to_dict(), "cached": False})
        doc = stored.to_dict()
        if meta:
            doc["_meta"] = meta
        self._storage.write_bytes(self.path(key), canonical_json(doc).encode("utf-8"))
        self._memory[key] = stored
