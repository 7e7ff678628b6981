"""Request counters behind the oracle's ``GET /stats``: totals, per model, per outcome, and every prompt seen.

A prompt is keyed by (model, full message list), so tests can prove that no call was made twice (and see
which one was, if any). ``ok`` counts the replies that carried an answer, so a retried 429 shows up as two
requests with one ok. Per request it also counts how the caller authenticated (the header's name and scheme,
never its value), in which form it asked for structured output, why the reply finished, and the prompt
tokens the simulated cache read and wrote. Thread-safe; knows nothing of HTTP. The oracle is a stand-in
answering from human labels, not an LLM.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ANSWERED_OUTCOMES = frozenset({"label", "rules", "unknown_text", "malformed", "badlabel"})


def prompt_key(model: str, messages: Any) -> str:
    canonical = json.dumps([model, messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class RequestFacts:
    """What a request showed about the client, for tests to assert on; every field optional."""

    auth: str | None = None  # e.g. "x-api-key", "authorization: AWS4-HMAC-SHA256"
    structure: str | None = None  # e.g. "output_format", "toolConfig.toolChoice"
    finish: str | None = None  # "stop" or "length"
    logprobs: bool = False
    cache_read: int = 0
    cache_write: int = 0
    extras: tuple[str, ...] = field(default=())  # provider-specific observations, e.g. "anthropic-beta"


@dataclass
class PromptRecord:
    model: str
    text: str
    count: int = 0
    ok: int = 0


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._total = 0
            self._by_model: Counter[str] = Counter()
            self._by_outcome: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._prompts: dict[str, PromptRecord] = {}
            self._by_auth: Counter[str] = Counter()
            self._by_structure: Counter[str] = Counter()
            self._by_finish: Counter[str] = Counter()
            self._extras: Counter[str] = Counter()
            self._logprobs_requests = 0
            self._cache_read = 0
            self._cache_write = 0

    def record(
        self, model: str, messages: Any, summary: str, outcome: str, status: int, facts: RequestFacts | None = None
    ) -> None:
        """Count one chat request; ``summary`` is the labeled text or the prompt's start, for humans reading stats."""
        key = prompt_key(model, messages)
        facts = facts or RequestFacts()
        with self._lock:
            self._total += 1
            self._by_model[model] += 1
            self._by_outcome[outcome] += 1
            self._by_status[str(status)] += 1
            self._by_auth[facts.auth or "none"] += 1
            if facts.structure is not None:
                self._by_structure[facts.structure] += 1
            if facts.finish is not None:
                self._by_finish[facts.finish] += 1
            self._extras.update(facts.extras)
            self._logprobs_requests += int(facts.logprobs)
            self._cache_read += facts.cache_read
            self._cache_write += facts.cache_write
            entry = self._prompts.setdefault(key, PromptRecord(model=model, text=summary))
            entry.count += 1
            entry.ok += int(outcome in ANSWERED_OUTCOMES and status == 200)

    def snapshot(self, include_prompts: bool = True) -> dict[str, Any]:
        with self._lock:
            prompts = list(self._prompts.items())
            result: dict[str, Any] = {
                "total_requests": self._total,
                "by_model": dict(self._by_model),
                "by_outcome": dict(self._by_outcome),
                "by_status": dict(self._by_status),
                "distinct_prompts": len(prompts),
                "repeated_prompts": sum(1 for _, entry in prompts if entry.count > 1),
                "repeated_ok_prompts": sum(1 for _, entry in prompts if entry.ok > 1),
                "by_auth": dict(self._by_auth),
                "by_structure": dict(self._by_structure),
                "by_finish": dict(self._by_finish),
                "extras": dict(self._extras),
                "logprobs_requests": self._logprobs_requests,
                "cache_read_tokens": self._cache_read,
                "cache_write_tokens": self._cache_write,
            }
        if include_prompts:
            result["prompts"] = [
                {"key": key, "model": entry.model, "count": entry.count, "ok": entry.ok, "text": entry.text}
                for key, entry in prompts
            ]
        return result
