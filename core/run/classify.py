"""Classify new documents with a trained classifier, as the run's final prediction would have.

``classify_documents`` reads ``(key, bytes)`` inputs through the run's own readers and chunking (the chunk size
the classifier's run used, from its ``bootstrapper_run.json``), so a document the run saw gets the same chunk
ids, texts, and answers as in ``predictions.jsonl`` (ids hash the input key, so give the folder that was the
run's ``path.input``: a single file is keyed by its name); the classifier cuts each text as training did (head or
head-tail, the same token budget). Reading holds every chunk's text, as the run's ingest does; prediction then
runs in windows (``core.model.predict.predict_stream``). ``precision_for`` picks the precision the run's check
chose (``bootstrapper_precision.json``), else float32.

Does not: train, call an LLM, or write anything itself (the caller writes the rows it yields).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, NoUsableChunks
from core.ingest import chunking
from core.model.classifier import PRECISION_FILE, RUN_FILE, Classifier

log = logging.getLogger("bootstrapper")
DEFAULT_CHUNK_SIZE = 2000  # system.chunk_size's default: a folder from elsewhere has no RUN_FILE
WINDOW = 2048  # chunks held at once while predicting


@dataclass
class ClassifySummary:
    """What one classify call did: counts per label, and the inputs it could not read (with the reason)."""

    by_label: Counter[str] = field(default_factory=Counter)
    files_read: int = 0
    skipped: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_label.values())

    def lines(self) -> list[str]:
        """Human lines for the terminal.

        >>> ClassifySummary(Counter({"spam": 1, "ham": 3}), 2).lines()
        ['4 chunks from 2 files classified', '  ham   3 (75.0%)', '  spam  1 (25.0%)']
        """
        width = max((len(label) for label in self.by_label), default=0)
        out = [f"{self.total} chunks from {self.files_read} files classified"]
        out += [f"  {label.ljust(width)}  {n} ({100 * n / self.total:.1f}%)"
                for label, n in sorted(self.by_label.items())]
        out += [f"skipped {s}" for s in self.skipped]
        if self.duplicates_dropped:
            out.append(f"{self.duplicates_dropped} duplicate chunks classified once")
        return out


def run_info(model_dir: Path) -> dict[str, Any]:
    """The classifier's run facts (chunk size, classes, labelers), or {} for a folder from elsewhere."""
    path = Path(model_dir) / RUN_FILE
    if not path.exists():
        log.warning("%s has no %s (trained elsewhere or by an older version): documents are cut into chunks of "
                    "%d characters unless --chunk-size says otherwise", model_dir, RUN_FILE, DEFAULT_CHUNK_SIZE)
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def precision_for(model_dir: Path, requested: str | None) -> str:
    """``requested`` if given, else what the run's precision check chose for this classifier, else fp32.

    >>> precision_for(Path("/nonexistent"), None), precision_for(Path("/nonexistent"), "int8")
    ('fp32', 'int8')
    """
    if requested:
        return requested
    path = Path(model_dir) / PRECISION_FILE
    if not path.exists():
        return "fp32"
    return str(json.loads(path.read_text(encoding="utf-8")).get("used") or "fp32")


def classify_documents(classifier: Classifier, files: Iterable[tuple[str, bytes]], *, chunk_size: int,
                       truncation_type: str, batch_size: int = 64, probabilities: bool = False,
                       with_text: bool = False, progress: Callable[[str, int], Callable[[int], None]] | None = None,
                       summary: ClassifySummary | None = None) -> Iterator[dict[str, Any]]:
    """One row per chunk, in the run's chunk order: ``{"id", "source", "label"}`` plus ``probs`` (with
    ``probabilities``), ``text`` (with ``with_text``) and the input record's ``metadata``. ``summary`` is
    filled in as rows are produced; an unreadable input is skipped and named there, never raised.
    ``progress(stage, total)`` makes the tick counting chunks classified."""
    from core.model.predict import predict_stream

    if chunk_size < 1:
        raise ConfigError("--chunk-size", f"must be >= 1, got {chunk_size}")
    summary = summary if summary is not None else ClassifySummary()
    try:
        result = chunking.ingest(files, chunk_size=chunk_size, truncation_type=truncation_type)
    except NoUsableChunks as exc:
        partial = getattr(exc, "result", None)
        if partial is not None:
            summary.skipped = [f"{s.source}: {s.reason}" for s in partial.skipped]
        raise
    summary.files_read, summary.duplicates_dropped = result.files_read, result.duplicates_dropped
    summary.skipped = [f"{s.source}{f' line {s.line}' if s.line else ''}: {s.reason}" for s in result.skipped]
    for skipped in summary.skipped:
        log.warning("skipped input %s", skipped)
    texts = {c.id: c.text for c in result.chunks} if with_text else {}
    tick = progress("classifying", len(result.chunks)) if progress is not None else None
    for row in predict_stream(classifier, result.chunks, batch_size=batch_size, window=WINDOW):
        summary.by_label[row["label"]] += 1
        if not probabilities:
            row.pop("probs")
        if with_text:
            row["text"] = texts[row["id"]]
        if tick is not None:
            tick(1)
        yield row
