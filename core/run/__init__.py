"""A run of the job: the output map, the state machine, the lease, the data each step works on, and the steps.

Two layers. Values that anything may read: ``layout`` (every output key), ``state`` (``Step``, ``State``, the pure
``next_step``), ``lease``, ``splits``. Above them the work: ``context`` (what the handler builds), ``data`` (the
chunks and splits a step is handed, read once), ``picks`` (which chunks an iteration labels), ``steps`` (one
function per step), ``reporting`` (what the report step gathers), ``final_prediction`` (counting shards),
``plan`` (the cost estimate). ``core.pipeline`` alone orders the steps and saves the state.

Names load on first use, so that ``core.report`` can read ``layout`` and ``state`` without a cycle.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "Step": "state", "State": "state", "IterationRecord": "state", "Counters": "state", "next_step": "state",
    "load_state": "state", "save_state": "state",
    "Lease": "lease",
    "RunContext": "context", "RunData": "data",
    "ingest_inputs": "steps",
    "PredictionSummary": "final_prediction",
    "estimate": "plan", "format_plan": "plan",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'core.run' has no attribute {name!r}")
    return getattr(import_module(f"core.run.{_WHERE[name]}"), name)
