"""How the report writes a number: percentages, accuracy with its interval, durations and dollars.

One place for these so that report.md and report.html show the same figure in the same words.

    >>> pct(0.855), acc_ci({"accuracy": 0.855, "accuracy_ci95": [0.8002, 0.8976]})
    ('85.5%', '85.5% (80.0%–89.8%)')
    >>> seconds(42.5), seconds(95.0), seconds(7200.0)
    ('42.5 s', '1.6 min', '2.00 h')
    >>> money({"cost_usd": 0.0134}), money({"cost_usd": 0.0, "unknown_cost_models": ["x/y"]})
    ('$0.0134', 'unknown*')
    >>> share(4251, 5669)
    '75%'

Does not: compute any of the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def acc_ci(m: Mapping[str, Any]) -> str:
    """A ``Metrics`` dict's accuracy with its 95% interval."""
    lo, hi = m["accuracy_ci95"]
    return f"{pct(m['accuracy'])} ({pct(lo)}–{pct(hi)})"


def seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def money(bucket: Mapping[str, Any]) -> str:
    """A ledger bucket's cost; ``*`` marks a bucket with calls litellm's cost map could not price."""
    cost, unknown = bucket.get("cost_usd", 0.0), bucket.get("unknown_cost_models")
    return (f"${cost:.4f} + unknown*" if cost else "unknown*") if unknown else f"${cost:.4f}"


def share(part: int, whole: int) -> str:
    """``part`` as a whole percentage of ``whole``."""
    return f"{100 * part / whole:.0f}%" if whole else "0%"
