"""The run's state machine: steps, the versioned state record, the pure transition function, the lease.

    INGEST -> SPLIT -> RULES -> LABEL_TEST -> [LABEL_TRAIN -> TRAIN -> EVALUATE]* -> PREDICT -> REPORT -> DONE

``next_step`` is pure: it looks only at the state and the stopping limits. The pipeline runs the current
step, records its outcome in the state, saves it, and asks ``next_step`` where to go. Nothing here runs a
step. A ``schema_version`` guards loading a state written by another version; the config fingerprint guards
resuming with a config that would invalidate finished work.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from core.errors import ObjectNotFound, StateError
from core.run import layout

if TYPE_CHECKING:
    from core.storage.backends import Storage

SCHEMA_VERSION = 1
STATE_KEY = layout.STATE

class Step(str, Enum):
    INGEST = "ingest"
    SPLIT = "split"
    RULES = "rules"
    LABEL_TEST = "label_test"
    LABEL_TRAIN = "label_train"
    TRAIN = "train"
    EVALUATE = "evaluate"
    PREDICT = "predict"
    REPORT = "report"
    DONE = "done"


@dataclass
class IterationRecord:
    n: int
    train_ids: int = 0  # chunks sent for labeling in this iteration
    selection: str = ""  # how they were chosen: random, representative, uncertainty or balanced
    train_examples: int = 0  # cumulative usable (ok) training labels classifier n was trained on
    failed_labels: int = 0
    train_seconds: float = 0.0
    examples_per_s: float = 0.0
    metrics: dict[str, Any] | None = None  # Metrics.to_dict() vs the LLM's test labels
    gold_metrics: dict[str, Any] | None = None  # vs human labels found in the input, when present


@dataclass
class Counters:
    """What the steps counted, by name: the report and the handlers read these fields, never string keys."""

    files_read: int = 0  # ingest
    chunks: int = 0
    inputs_skipped: int = 0
    duplicates_dropped: int = 0
    test_chunks: int = 0  # split
    initial_train_chunks: int = 0
    pool_chunks: int = 0
    test_labels_ok: int = 0  # label_test
    test_labels_failed: int = 0
    predicted_chunks: int = 0  # predict (this process's shard), or the count over every shard
    predict_precision: dict[str, Any] | None = None  # core.model.predict.PrecisionCheck.to_dict()
    # The final prediction's count (core.run.final_prediction.PredictionSummary.to_dict()), or
    # {"status": "pending", "shards": N, "jobs": {...}} while an array job predicts; None when nothing counted.
    predictions: dict[str, Any] | None = None
    review_disagreements: int = 0  # report: review.csv's rows (core.run.exports)

    def labels(self) -> dict[str, int]:
        """The label counts the report lists."""
        return {"test_labels_ok": self.test_labels_ok, "test_labels_failed": self.test_labels_failed}


@dataclass
class Limits:
    """What ``next_step`` needs from the config to decide when the loop stops."""

    required_accuracy: float
    max_iters: int
    predict_at_end: bool


@dataclass
class State:
    config_fingerprint: str
    schema_version: int = SCHEMA_VERSION
    step: Step = Step.INGEST
    iteration: int = 0  # the training iteration in progress or last finished (1-based)
    iterations: list[IterationRecord] = field(default_factory=list)
    pool_remaining: int = 0
    best_iteration: int | None = None
    stop_reason: str = ""
    status: str = "running"  # running | done
    counters: Counters = field(default_factory=Counters)
    step_seconds: dict[str, float] = field(default_factory=dict)
    # Optional parameters each model refused with a 400 (core.llm.capabilities.ParamRefusals.to_json()): a resumed
    # run leaves them out from its first call.
    refused_params: dict[str, list[str]] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def current(self) -> IterationRecord | None:
        return self.iterations[-1] if self.iterations else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["step"] = self.step.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> State:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StateError(
                f"state.json has schema_version {version!r}, this version reads {SCHEMA_VERSION}; "
                "finish the run with the version that started it, or start over with --restart"
            )
        d = dict(d)
        d["step"] = Step(d["step"])
        d["iterations"] = [IterationRecord(**it) for it in d.get("iterations", [])]
        d["counters"] = Counters(**d.get("counters", {}))
        return cls(**d)


def best_iteration(iterations: list[IterationRecord]) -> int | None:
    """Highest accuracy vs the test labels; ties go to the later (larger) classifier."""
    scored = [(it.metrics["accuracy"], it.n) for it in iterations if it.metrics]
    return max(scored)[1] if scored else None


def next_step(state: State, limits: Limits) -> tuple[Step, str]:
    """Where to go after ``state.step`` finished, and (when the loop ends) why it ended."""
    after_loop = Step.PREDICT if limits.predict_at_end else Step.REPORT
    linear = {
        Step.INGEST: Step.SPLIT,
        Step.SPLIT: Step.RULES,
        Step.RULES: Step.LABEL_TEST,
        Step.LABEL_TEST: Step.LABEL_TRAIN,
        Step.LABEL_TRAIN: Step.TRAIN,
        Step.TRAIN: Step.EVALUATE,
        Step.PREDICT: Step.REPORT,
        Step.REPORT: Step.DONE,
        Step.DONE: Step.DONE,
    }
    if state.step is not Step.EVALUATE:
        return linear[state.step], state.stop_reason
    it = state.current()
    accuracy = it.metrics["accuracy"] if it and it.metrics else 0.0
    if accuracy >= limits.required_accuracy:
        return after_loop, f"reached required_accuracy {limits.required_accuracy:.3f} (accuracy {accuracy:.3f})"
    if state.iteration >= limits.max_iters:
        return after_loop, f"stopped at max_iters={limits.max_iters} below required_accuracy (best accuracy " \
                           f"{max((i.metrics or {}).get('accuracy', 0.0) for i in state.iterations):.3f})"
    if state.pool_remaining <= 0:
        return after_loop, "the pool of unlabeled chunks ran out before required_accuracy was reached"
    return Step.LABEL_TRAIN, ""


def load_state(storage: Storage) -> State | None:
    try:
        raw = storage.read_text(STATE_KEY)
    except ObjectNotFound:
        return None
    try:
        return State.from_dict(json.loads(raw))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(f"state.json is unreadable ({exc}); start over with --restart") from exc


def save_state(storage: Storage, state: State) -> None:
    state.updated_at = time.time()
    storage.write_text(STATE_KEY, json.dumps(state.to_dict(), indent=2, sort_keys=True))


def check_resumable(state: State, fingerprint: str) -> None:
    if state.config_fingerprint != fingerprint:
        raise StateError(
            "the config changed in a way that invalidates finished work (classes, description, models, sizes, "
            "chunking or training settings) since this output location's run started; re-run with --restart "
            "to start over there, or use a new path.output"
        )










