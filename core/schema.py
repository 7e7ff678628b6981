"""Value objects passed between the modules of ``core``.

Plain frozen dataclasses with ``to_dict``/``from_dict`` for JSON lines. No I/O, no behaviour beyond
(de)serialisation: the modules that make and consume these values own the logic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """One unit to classify. ``id`` is stable across re-runs (hash of source, position and text)."""

    id: str
    text: str
    source: str  # key of the input object relative to the input root, e.g. "docs/a.pdf"
    position: int  # index of the chunk within its source (record index for .jsonl)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chunk:
        return cls(
            id=d["id"],
            text=d["text"],
            source=d["source"],
            position=int(d["position"]),
            metadata=dict(d.get("metadata") or {}),
        )


@dataclass(frozen=True)
class SkippedInput:
    """An input file (or one line of it) that was not used, and why."""

    source: str
    reason: str
    line: int | None = None  # 1-based line for .jsonl problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Label:
    """The outcome of one labeling call for one chunk.

    ``status`` is ``"ok"`` (``label`` is one of the classes) or ``"failed"`` (``label`` is None, ``error``
    says why and ``raw`` keeps the model's last reply). Failed labels are recorded, never guessed.
    """

    chunk_id: str
    label: str | None
    status: str  # "ok" | "failed"
    model: str
    reason: str = ""
    confidence: float | None = None  # label probability when the provider returned logprobs
    raw: str = ""
    error: str = ""
    retryable: bool = False  # failed only because the provider was unavailable: a resume tries again
    length_retried: bool = False  # the first reply was cut off by the length limit; asked again with more room

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Label:
        return cls(
            chunk_id=d["chunk_id"],
            label=d.get("label"),
            status=d["status"],
            model=d.get("model", ""),
            reason=d.get("reason", ""),
            confidence=d.get("confidence"),
            raw=d.get("raw", ""),
            error=d.get("error", ""),
            retryable=bool(d.get("retryable", False)),
            length_retried=bool(d.get("length_retried", False)),
        )


@dataclass(frozen=True)
class LLMReply:
    """What one completed chat call returned, provider-neutral."""

    text: str
    model: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    cost_usd: float
    cost_known: bool  # False when the model is missing from litellm's cost map (cost_usd is then 0)
    logprobs: list[dict[str, Any]] | None = None  # [{"token": str, "logprob": float}, ...] when returned
    cached: bool = False  # served from the response cache: no money spent
    finish_reason: str = ""  # "stop", "length" (cut off by max_tokens), ... as litellm reports it
    cached_tokens: int = 0  # prompt tokens read from the provider's prompt cache (part of tokens_in)
    cache_write_tokens: int = 0  # prompt tokens written to it (Anthropic, Bedrock)
    reasoning_tokens: int = 0  # hidden thinking (part of tokens_out)
    retried_errors: tuple[str, ...] = ()  # failed attempts before this reply (each one is a ledger line)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("retried_errors")  # per-call history, not part of the cached reply
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LLMReply:
        return cls(**{k: v for k, v in d.items() if k != "retried_errors"})


@dataclass(frozen=True)
class CallRecord:
    """One line of the cost ledger ``llm_calls.jsonl``: every call attempt, cached or paid, ok or not."""

    ts: float
    stage: str  # "rules" | "test_labels" | "train_labels" | ...
    model: str
    cache_key: str
    outcome: str  # "ok" | "cache_hit" | "retryable_error" | "permanent_error" | "unparseable"
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    cost_note: str = ""
    error: str = ""
    chunk_id: str = ""
    cached_tokens: int = 0  # of tokens_in, read from the provider's prompt cache
    cache_write_tokens: int = 0  # of tokens_in, written to it
    finish_reason: str = ""  # "length": cut off by max_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallRecord:
        return cls(**d)


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """Evaluation of one classifier against one set of reference labels."""

    n: int
    accuracy: float
    accuracy_ci95: tuple[float, float]  # Wilson score interval
    macro_f1: float
    per_class: dict[str, ClassScores]
    labels: list[str]  # order of rows/columns of ``confusion``
    confusion: list[list[int]]  # confusion[true][pred]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracy_ci95"] = list(self.accuracy_ci95)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        return cls(
            n=int(d["n"]),
            accuracy=float(d["accuracy"]),
            accuracy_ci95=(float(d["accuracy_ci95"][0]), float(d["accuracy_ci95"][1])),
            macro_f1=float(d["macro_f1"]),
            per_class={k: ClassScores(**v) for k, v in d["per_class"].items()},
            labels=list(d["labels"]),
            confusion=[list(map(int, row)) for row in d["confusion"]],
        )
