"""Request counters behind the oracle's ``GET /stats``: totals, per model, per outcome, and every prompt seen.

A prompt is keyed by (model, full message list), so tests can prove that no call was made twice (and see
which one was, if any). ``ok`` counts the replies that carried an answer, so a retried 429 shows up as two
requests with one ok. Thread-safe; knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

ANSWERED_OUTCOMES = frozenset({"label", "rules", "unknown_text", "malformed", "badlabel"})


def prompt_key(model: str, messages: Any) -> str:
    canonical = json.dumps([model, messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


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

    def record(self, model: str, messages: Any, summary: str, outcome: str, status: int) -> None:
        """Count one chat request; ``summary`` is the labeled text or the prompt's start, for humans reading stats."""
        key = prompt_key(model, messages)
        with self._lock:
            self._total += 1
            self._by_model[model] += 1
            self._by_outcome[outcome] += 1
            self._by_status[str(status)] += 1
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
            }
        if include_prompts:
            result["prompts"] = [
                {"key": key, "model": entry.model, "count": entry.count, "ok": entry.ok, "text": entry.text}
                for key, entry in prompts
            ]
        return result
