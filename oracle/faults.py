"""Fault injection for the oracle (a stand-in for a real LLM): which fault, if any, a chat request suffers.

Each chat request draws one uniform number from a seeded RNG and the cumulative rates pick the fault, so a
run with the same seed and the same request order sees the same faults. This module only decides; the
server acts on the decision.

    >>> pick_fault(0.05, FaultRates(rate_429=0.1))
    <Fault.RATE_LIMIT: 'rate_limited'>
    >>> pick_fault(0.5, FaultRates(rate_429=0.1))
    <Fault.NONE: 'none'>
"""

from __future__ import annotations

import enum
import random
import threading
from dataclasses import dataclass, fields


class Fault(enum.Enum):
    NONE = "none"
    RATE_LIMIT = "rate_limited"
    SERVER_ERROR = "server_error"
    HANG = "hang"
    MALFORMED = "malformed"
    BAD_LABEL = "badlabel"
    OVERLOADED = "overloaded"  # the provider's "too busy for everyone" reply (Anthropic 529, Gemini 503, ...)


@dataclass(frozen=True)
class FaultRates:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_hang: float = 0.0
    rate_malformed: float = 0.0
    rate_badlabel: float = 0.0
    rate_overloaded: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be within [0, 1], got {value}")
        if self.total() > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {self.total()}, more than 1")

    def total(self) -> float:
        return float(sum(getattr(self, field.name) for field in fields(self)))

    def ordered(self) -> list[tuple[Fault, float]]:
        return [
            (Fault.RATE_LIMIT, self.rate_429),
            (Fault.SERVER_ERROR, self.rate_500),
            (Fault.HANG, self.rate_hang),
            (Fault.MALFORMED, self.rate_malformed),
            (Fault.BAD_LABEL, self.rate_badlabel),
            # Last, so adding it left every earlier fault's draws, and old seeds' runs, as they were.
            (Fault.OVERLOADED, self.rate_overloaded),
        ]


def pick_fault(draw: float, rates: FaultRates) -> Fault:
    threshold = 0.0
    for fault, rate in rates.ordered():
        threshold += rate
        if draw < threshold:
            return fault
    return Fault.NONE


class FaultDrawer:
    """A seeded RNG shared by the server's threads; one draw per request."""

    def __init__(self, rates: FaultRates, seed: int) -> None:
        self.rates = rates
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> Fault:
        with self._lock:
            value = self._rng.random()
        return pick_fault(value, self.rates)
