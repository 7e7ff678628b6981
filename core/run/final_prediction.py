"""Counting the final prediction: chunks per predicted label, per shard, and which shards are missing or short.

The final prediction is one JSONL file (``predictions.jsonl``, predicted in-process) or N part files, one per
shard (``bootstrapper predict CONFIG --shard I/N`` by hand, or the children of the AWS Batch array job). Each
line is one chunk: ``{"id", "source", "label", "probs", ...}``.

    expected = expected_per_shard(remaining_ids, 3)        # {0: 41, 1: 38, 2: 21}: chunks each shard must hold
    summary = gather(storage, 3, expected)                 # reads the three part files; never raises for a
    summary.predicted, summary.by_label, summary.problems()  # missing, empty or short shard: it is reported

``summarize`` is the pure core (counts in, summary out); ``gather`` is the only function that reads storage.
Does not: predict, decide which chunks are predicted (``core.run.steps.remaining_chunks`` and
``core.model.predict.shard_of`` do), store anything in the state (``core.pipeline`` does), or render (``core.report``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, ObjectNotFound
from core.run import layout
from core.storage.jsonl_log import read_jsonl

if TYPE_CHECKING:
    from core.storage.backends import Storage

# Shard statuses; every one but OK is a problem the report names.
OK, MISSING, EMPTY, SHORT, EXTRA, UNREADABLE = "ok", "missing", "empty", "short", "extra", "unreadable"
_PART = layout.PREDICTION_PART
_WHY = {
    MISSING: "no prediction file: its worker failed or has not run yet",
    EMPTY: "the prediction file is empty: its worker wrote nothing",
    SHORT: "the prediction file holds fewer chunks than the shard has",
    EXTRA: "the prediction file holds more chunks than the shard has (written for other chunks?)",
    UNREADABLE: "the prediction file has lines that are not JSON",
}


@dataclass(frozen=True)
class ShardFile:
    """What one shard's prediction file holds; ``found`` is False when the file does not exist."""

    found: bool
    by_label: dict[str, int] = field(default_factory=dict)
    bad_lines: int = 0

    @property
    def predicted(self) -> int:
        return sum(self.by_label.values())


@dataclass(frozen=True)
class ShardCount:
    index: int
    key: str
    status: str
    predicted: int
    expected: int | None  # None when the caller did not say how many chunks the shard has
    by_label: dict[str, int]
    bad_lines: int = 0


@dataclass(frozen=True)
class PredictionSummary:
    shards: int
    predicted: int
    by_label: dict[str, int]  # sorted by count, most predicted first
    per_shard: list[ShardCount]

    @property
    def complete(self) -> bool:
        return all(s.status == OK for s in self.per_shard)

    @property
    def expected(self) -> int | None:
        counts = [s.expected for s in self.per_shard]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    def problems(self) -> list[str]:
        """One sentence per shard that is not OK, naming the shard, its file and what is wrong."""
        out = []
        for s in self.per_shard:
            if s.status == OK:
                continue
            counts = f"{s.predicted} predicted" + (f", {s.expected} expected" if s.expected is not None else "")
            out.append(f"shard {s.index}/{self.shards} ({s.key}): {_WHY[s.status]} ({counts})")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``state.counters["predictions"]`` and metrics.json."""
        return {"status": "complete" if self.complete else "incomplete", "shards": self.shards,
                "predicted": self.predicted, "expected": self.expected, "by_label": dict(self.by_label),
                "missing_shards": [s.index for s in self.per_shard if s.status == MISSING],
                "problems": self.problems(), "per_shard": [asdict(s) for s in self.per_shard]}


def shard_status(file: ShardFile, expected: int | None) -> str:
    """OK when the file exists, parses, and holds as many chunks as the shard has (any number, if unknown)."""
    if not file.found:
        return MISSING
    if file.bad_lines:
        return UNREADABLE
    if expected is None:
        return OK if file.predicted else EMPTY
    if file.predicted == expected:
        return OK
    if file.predicted == 0:
        return EMPTY
    return SHORT if file.predicted < expected else EXTRA


def summarize(files: Mapping[int, ShardFile], shards: int,
              expected: Mapping[int, int] | None = None) -> PredictionSummary:
    """Per-shard statuses and the totals over every shard found; a shard absent from ``files`` is missing."""
    per_shard, total = [], Counter[str]()
    for index in range(shards):
        file = files.get(index, ShardFile(found=False))
        want = None if expected is None else int(expected.get(index, 0))
        per_shard.append(ShardCount(index=index, key=layout.predictions(index, shards), status=shard_status(file, want),
                                    predicted=file.predicted, expected=want, by_label=dict(file.by_label),
                                    bad_lines=file.bad_lines))
        total.update(file.by_label)
    return PredictionSummary(shards=shards, predicted=sum(total.values()), by_label=dict(total.most_common()),
                             per_shard=per_shard)


def expected_per_shard(chunk_ids: Iterable[str], shards: int) -> dict[int, int]:
    """How many of ``chunk_ids`` each shard predicts: the same split ``bootstrapper predict --shard`` makes."""
    if shards == 1:
        return {0: sum(1 for _ in chunk_ids)}
    from core.model.predict import shard_of

    counts = Counter(shard_of(i, shards) for i in chunk_ids)
    return {i: counts.get(i, 0) for i in range(shards)}


def shards_from_keys(keys: Iterable[str]) -> int | None:
    """The shard count the prediction files under ``classifiers/final_classifier_output/`` were written for.

    None when there are none; a ``ConfigError`` when part files of several counts lie side by side (a
    re-sharded prediction), since only the user knows which to count.
    """
    counts: set[int] = set()
    single = False
    for key in keys:
        m = _PART.search(key)
        if m and layout.predictions(int(m.group(1)), int(m.group(2))) == key:
            counts.add(int(m.group(2)))
        elif key == layout.predictions(0, 1):
            single = True
    if len(counts) > 1:
        raise ConfigError("--shards", f"prediction part files for {sorted(counts)} shards lie side by side; "
                                      "pass --shards N to say which to count (and delete the others)")
    if counts:
        return counts.pop()
    return 1 if single else None


def detect_shards(storage: Storage, default: int) -> int:
    """The shard count of the prediction files in ``storage``, else ``default`` (when there are none yet)."""
    return shards_from_keys(storage.list(layout.FINAL_OUTPUT)) or default


def read_shard(storage: Storage, key: str) -> ShardFile:
    """Count one prediction file; a line that is not a JSON object is counted as bad, never raised."""
    labels: Counter[str] = Counter()
    bad: list[int] = []
    try:
        for row in read_jsonl(storage, key, on_bad_line=lambda n, _why: bad.append(n)):
            labels[str(row.get("label"))] += 1
    except ObjectNotFound:
        return ShardFile(found=False)
    return ShardFile(found=True, by_label=dict(labels), bad_lines=len(bad))


def gather(storage: Storage, shards: int, expected: Mapping[int, int] | None = None) -> PredictionSummary:
    """Read every shard's prediction file of an N-shard prediction and summarize them."""
    if shards < 1:
        raise ConfigError("--shards", f"need at least 1 shard, got {shards}")
    return summarize({i: read_shard(storage, layout.predictions(i, shards)) for i in range(shards)}, shards, expected)
