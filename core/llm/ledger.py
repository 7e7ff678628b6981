"""Cost ledger: one ``CallRecord`` per LLM call attempt (paid, cached or failed), kept on storage.

Records are buffered and written as part objects through ``core.storage.jsonl_log.LogWriter`` (S3 has no append),
so a kill loses at most one flush interval. ``write_combined`` folds every part of every run into the single
``llm_calls.jsonl`` users read, and ``totals`` sums records per model, per stage and overall. ``cost_of``
prices tokens with litellm's cost map. The ledger does not make calls or decide what a call costs beyond that
lookup; the gateway fills in each record.

Buffered records reach storage when ``flush_interval_s`` has passed at the next ``record``, when 200 are
buffered, or on ``flush``/``close``; callers flush at step boundaries so a long idle step loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from core.llm.litellm_edge import litellm_module
from core.schema import CallRecord
from core.storage.jsonl_log import LogWriter, read_log, write_jsonl

if TYPE_CHECKING:
    from core.storage.backends import Storage

MAX_BUFFER = 200
COST_UNKNOWN_NOTE = "cost unknown: model not in litellm's cost map"
FAILURE_OUTCOMES = frozenset({"retryable_error", "permanent_error", "unparseable"})


def cost_of(model: str, tokens_in: int, tokens_out: int) -> tuple[float, bool]:
    """``(usd, known)`` from litellm's cost map; a model it does not know costs ``(0.0, False)``."""
    try:
        cost_in, cost_out = litellm_module().cost_per_token(model=model, prompt_tokens=tokens_in,
                                                            completion_tokens=tokens_out)
    except Exception:  # noqa: BLE001
        # litellm signals "not in the map" with several unrelated types (ModelNotMappedError,
        # BadRequestError for a provider it cannot infer, plain Exception in older releases).
        return 0.0, False
    return float(cost_in) + float(cost_out), True


def _empty_bucket() -> dict[str, Any]:
    return {"calls": 0, "paid_calls": 0, "cache_hits": 0, "failures": 0, "tokens_in": 0, "tokens_out": 0,
            "cost_usd": 0.0, "unknown_cost_models": []}


def _add(bucket: dict[str, Any], rec: CallRecord) -> None:
    bucket["calls"] += 1
    bucket["paid_calls"] += rec.outcome == "ok"
    bucket["cache_hits"] += rec.outcome == "cache_hit"
    bucket["failures"] += rec.outcome in FAILURE_OUTCOMES
    bucket["tokens_in"] += rec.tokens_in
    bucket["tokens_out"] += rec.tokens_out
    bucket["cost_usd"] += rec.cost_usd
    if rec.cost_note == COST_UNKNOWN_NOTE and rec.model not in bucket["unknown_cost_models"]:
        bucket["unknown_cost_models"].append(rec.model)


def totals(records: Iterable[CallRecord]) -> dict[str, Any]:
    """``{"by_model": {m: bucket}, "by_stage": {s: bucket}, "overall": bucket}``.

    A bucket counts every record as a call; ``paid_calls`` are outcome "ok", ``failures`` are errors and
    unparseable replies. ``unknown_cost_models`` lists models whose spend is missing from ``cost_usd``.
    """
    by_model: dict[str, dict[str, Any]] = {}
    by_stage: dict[str, dict[str, Any]] = {}
    overall = _empty_bucket()
    for rec in records:
        _add(by_model.setdefault(rec.model, _empty_bucket()), rec)
        _add(by_stage.setdefault(rec.stage, _empty_bucket()), rec)
        _add(overall, rec)
    for bucket in [overall, *by_model.values(), *by_stage.values()]:
        bucket["cost_usd"] = round(bucket["cost_usd"], 10)  # keep float noise out of the report
        bucket["unknown_cost_models"].sort()
    return {"by_model": dict(sorted(by_model.items())), "by_stage": dict(sorted(by_stage.items())),
            "overall": overall}


class Ledger:
    """Buffers ``CallRecord``s of this run and writes them as parts ``<prefix><run_id>-<seq>.jsonl``."""

    def __init__(
        self,
        storage: Storage,
        prefix: str = "ledger/",
        flush_interval_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        run_id: str | None = None,
    ) -> None:
        self._storage = storage
        self._prefix = prefix
        self._writer = LogWriter(storage, prefix, flush_interval_s=flush_interval_s, max_buffer=MAX_BUFFER,
                                   clock=clock, run_id=run_id)

    def record(self, rec: CallRecord) -> None:
        self._writer.append(rec.to_dict())

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def load_all(self) -> list[CallRecord]:
        """Every record on storage (all runs), parts in key order. Unflushed records are not included."""
        return [CallRecord.from_dict(d) for d in read_log(self._storage, self._prefix)]

    def write_combined(self, key: str = "llm_calls.jsonl") -> list[CallRecord]:
        """Flush, then write every record of every run as one JSONL object at ``key``; returns them."""
        self.flush()
        records = self.load_all()
        write_jsonl(self._storage, key, (r.to_dict() for r in records))
        return records
