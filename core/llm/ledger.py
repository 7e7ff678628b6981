"""Cost ledger: one ``CallRecord`` per LLM call attempt (paid, cached or failed), kept on storage.

Records are buffered and written as part objects through ``core.storage.jsonl_log.LogWriter`` (S3 has no append),
so a kill loses at most one flush interval. ``write_combined`` folds every part of every run into the single
``llm_calls.jsonl`` users read, and ``totals`` sums records per model, per stage and overall. ``cost_of``
prices tokens with litellm's cost map, cached and cache-write tokens at the provider's cached rates, and
``cache_saving`` is what the prompt cache saved against paying every input token in full. The ledger does not make calls or decide what a call costs beyond that
lookup; the gateway fills in each record.

Buffered records reach storage when ``flush_interval_s`` has passed at the next ``record``, when 200 are
buffered, or on ``flush``/``close``; callers flush at step boundaries so a long idle step loses nothing.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=256)  # totals() asks once per record; the map does not change in a run
def rates(model: str) -> dict[str, float] | None:
    """Per-token list prices of ``model`` from litellm's map: ``input``, ``output``, ``cache_read`` and
    ``cache_write`` (a provider without a cached rate is charged the input rate); None for an unknown model.

    >>> round(rates("anthropic/claude-haiku-4-5")["cache_read"] * 1e6, 4)
    0.1
    """
    try:
        info = litellm_module().get_model_info(model=model)
    except Exception:  # noqa: BLE001
        # litellm signals "not in the map" with several unrelated types (ModelNotMappedError,
        # BadRequestError for a provider it cannot infer, plain Exception in older releases).
        return None
    price_in = float(info.get("input_cost_per_token") or 0.0)
    return {"input": price_in, "output": float(info.get("output_cost_per_token") or 0.0),
            "cache_read": float(info.get("cache_read_input_token_cost") or price_in),
            "cache_write": float(info.get("cache_creation_input_token_cost") or price_in)}


def cost_of(model: str, tokens_in: int, tokens_out: int, cached: int = 0, written: int = 0) -> tuple[float, bool]:
    """``(usd, known)``; ``tokens_in`` includes ``cached`` (read from the prompt cache) and ``written`` (to it).

    >>> round(cost_of("anthropic/claude-haiku-4-5", 2000, 100, cached=1500)[0] * 1e6, 2)
    1150.0
    """
    price = rates(model)
    if price is None:
        return 0.0, False
    plain = max(0, tokens_in - cached - written)
    return (plain * price["input"] + cached * price["cache_read"] + written * price["cache_write"]
            + tokens_out * price["output"]), True


def cache_saving(model: str, cached: int, written: int) -> float:
    """USD the prompt cache saved on these tokens against the full input rate (a write premium counts
    against it); 0 for a model litellm cannot price.

    >>> round(cache_saving("anthropic/claude-haiku-4-5", 9000, 1000) * 1e6, 2)
    7850.0
    """
    price = rates(model)
    if price is None:
        return 0.0
    return cached * (price["input"] - price["cache_read"]) - written * (price["cache_write"] - price["input"])


def _empty_bucket() -> dict[str, Any]:
    return {"calls": 0, "paid_calls": 0, "cache_hits": 0, "failures": 0, "tokens_in": 0, "tokens_out": 0,
            "cost_usd": 0.0, "unknown_cost_models": [], "cached_tokens": 0, "cache_write_tokens": 0,
            "cache_saving_usd": 0.0, "cut_off": 0, "param_refused": 0}


def _add(bucket: dict[str, Any], rec: CallRecord) -> None:
    bucket["calls"] += 1
    bucket["paid_calls"] += rec.outcome == "ok"
    bucket["cache_hits"] += rec.outcome == "cache_hit"
    bucket["failures"] += rec.outcome in FAILURE_OUTCOMES
    bucket["tokens_in"] += rec.tokens_in
    bucket["tokens_out"] += rec.tokens_out
    bucket["cost_usd"] += rec.cost_usd
    bucket["param_refused"] += rec.outcome == "param_refused"
    if rec.outcome == "ok":
        bucket["cached_tokens"] += rec.cached_tokens
        bucket["cache_write_tokens"] += rec.cache_write_tokens
        bucket["cut_off"] += rec.finish_reason == "length"
        if rec.cached_tokens or rec.cache_write_tokens:
            bucket["cache_saving_usd"] += cache_saving(rec.model, rec.cached_tokens, rec.cache_write_tokens)
    if rec.cost_note == COST_UNKNOWN_NOTE and rec.model not in bucket["unknown_cost_models"]:
        bucket["unknown_cost_models"].append(rec.model)


def totals(records: Iterable[CallRecord]) -> dict[str, Any]:
    """``{"by_model": {m: bucket}, "by_stage": {s: bucket}, "overall": bucket}``.

    A bucket counts every record as a call; ``paid_calls`` are outcome "ok", ``failures`` are errors and
    unparseable replies (a ``param_refused`` 400 is counted apart: it is asked again at once). Of the paid calls,
    ``cached_tokens``/``cache_write_tokens`` were read from / written to the provider's prompt cache, saving
    ``cache_saving_usd``, and ``cut_off`` replies ended at the length limit. ``unknown_cost_models`` lists models whose spend is missing from ``cost_usd``.
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
        bucket["cache_saving_usd"] = round(bucket["cache_saving_usd"], 10)
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
