"""Settings of one oracle server, validated once when built. No parsing of argv or environment here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from oracle.faults import FaultRates

MALFORMED_MODES = ("content", "body")
UNKNOWN_TEXT_MODES = ("guess", "error")


@dataclass(frozen=True)
class OracleConfig:
    """``malformed_mode``: "content" sends a well-formed response whose content is not what was asked for
    (broken JSON when JSON was requested); "body" sends an HTTP body that is not JSON at all.

    ``unknown_text``: what to do when a prompt marks a ``<text>`` that is not in the data. "guess" answers
    with a hash-chosen class (counted as outcome ``unknown_text``), as a real LLM would answer anything;
    "error" replies 400 so a test can insist every text is known.
    """

    data: Path
    host: str = "127.0.0.1"
    port: int = 0
    noise: float = 0.1
    latency_ms: float = 200.0
    jitter_ms: float = 0.0
    seed: int = 0
    faults: FaultRates = field(default_factory=FaultRates)
    hang_s: float = 30.0
    malformed_mode: str = "content"
    unknown_text: str = "guess"
    verbose: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be within [0, 1], got {self.noise}")
        for name in ("latency_ms", "jitter_ms", "hang_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.malformed_mode not in MALFORMED_MODES:
            raise ValueError(f"malformed_mode must be one of {MALFORMED_MODES}, got {self.malformed_mode!r}")
        if self.unknown_text not in UNKNOWN_TEXT_MODES:
            raise ValueError(f"unknown_text must be one of {UNKNOWN_TEXT_MODES}, got {self.unknown_text!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within [0, 65535], got {self.port}")
