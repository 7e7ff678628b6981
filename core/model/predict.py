"""Batch prediction over a stream of chunks, sharding of that stream, and scoring a classifier on labeled texts.

Does: read chunks a window at a time (memory stays flat however many chunks there are), run the classifier on
each window (shortest texts batched together), and yield one record per chunk in input order; split a chunk
stream into N stable shards so N jobs can share the work (``--shard I/N``); choose the precision to predict at
(bf16 or int8 only when it costs at most 0.5 accuracy points against float32 on labeled texts).

Does not: read or write storage, train, or decide which chunks to predict on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

from core.errors import ConfigError, TrainingError
from core.model.classifier import Classifier
from core.model.encoding import Interrupted
from core.model.metrics import evaluate
from core.schema import Chunk, Metrics

# The most accuracy (a fraction: 0.005 is 0.5 points) a reduced precision may lose against float32 on the
# labeled test set before prediction falls back to float32.
MAX_ACCURACY_DROP = 0.005


def shard_of(chunk_id: str, n: int) -> int:
    """Shard in ``[0, n)`` for a chunk id; the same on every machine and Python run (unlike ``hash``)."""
    if n < 1:
        raise ConfigError("shard", f"shard count must be >= 1, got {n}")
    digest = hashlib.sha256(chunk_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


def select_shard(chunks: Iterable[Chunk], index: int, count: int) -> Iterator[Chunk]:
    """The chunks of shard ``index`` out of ``count``: shards are disjoint and together cover every chunk."""
    if count < 1 or not 0 <= index < count:
        raise ConfigError("shard", f"need 0 <= index < count, got {index}/{count}")
    return (c for c in chunks if shard_of(c.id, count) == index)


def predict_stream(
    classifier: Classifier, chunks: Iterable[Chunk], batch_size: int = 64, window: int = 2048,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"id", "source", "label", "probs": {class: p}}`` per chunk, in input order.

    At most ``window`` chunks are held at once; inside a window texts are sorted by length before batching
    (by ``Classifier.predict_proba``), which is where the speed comes from on mixed-length corpora.
    ``batch_size`` is ``training.predict_batch_size``, checked by ``core.config`` at load. ``should_stop`` is
    asked before every batch: the stream then ends after the last whole window, a prefix of the input.
    """
    if window < 1:  # no setting feeds it; an empty window would end the stream silently, predicting nothing
        raise ValueError(f"window must be >= 1, got {window}")
    it = iter(chunks)
    while block := list(islice(it, window)):
        try:
            labels, probs = classifier.predict_proba([c.text for c in block], batch_size=batch_size,
                                                     should_stop=should_stop)
        except Interrupted:
            return
        for chunk, label, row in zip(block, labels, probs, strict=True):
            yield {
                "id": chunk.id,
                "source": chunk.source,
                "label": label,
                "probs": {name: round(float(p), 6) for name, p in zip(classifier.classes, row, strict=True)},
                # the input record's own keys (a .jsonl record's other fields), so a prediction joins back to it
                **({"metadata": chunk.metadata} if chunk.metadata else {}),
            }


def evaluate_classifier(
    classifier: Classifier, texts: Sequence[str], reference: Sequence[str], batch_size: int = 64
) -> Metrics:
    """Metrics of the classifier's predictions on ``texts`` against ``reference`` labels (LLM or gold)."""
    return evaluate(list(reference), classifier.predict(texts, batch_size), classifier.classes)


def keep_reduced(fp32_accuracy: float, reduced_accuracy: float, max_drop: float = MAX_ACCURACY_DROP) -> bool:
    """Whether a reduced-precision model loses at most ``max_drop`` accuracy against float32.

    >>> keep_reduced(0.990, 0.985), keep_reduced(0.990, 0.984)
    (True, False)
    """
    # The tolerance absorbs float rounding: on 200 texts one flipped prediction is exactly 0.005.
    return fp32_accuracy - reduced_accuracy <= max_drop + 1e-9


@dataclass(frozen=True)
class PrecisionCheck:
    """What ``choose_precision`` decided and why; recorded in the run state and logged."""

    requested: str  # the setting: auto, fp32, bf16 or int8
    used: str  # the precision predictions were made at
    reason: str
    checked_on: int = 0  # labeled texts both models were scored on
    fp32_accuracy: float | None = None
    reduced_accuracy: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def choose_precision(
    classifier: Classifier,
    requested: str,
    texts: Sequence[str],
    reference: Sequence[str],
    *,
    batch_size: int = 64,
    max_drop: float = MAX_ACCURACY_DROP,
    fp32_accuracy: float | None = None,
) -> tuple[Classifier, PrecisionCheck]:
    """The classifier to predict with: float32 ``classifier`` at the first precision ``requested`` allows (auto:
    int8, then bf16) that loses at most ``max_drop`` accuracy on ``texts`` against ``reference`` labels (the
    LLM-labeled test set), else float32 itself.

    ``fp32_accuracy``: the float32 classifier's accuracy on exactly these texts and labels when already known
    (the evaluate step measured it), which saves scoring them again. A precision this torch cannot provide,
    or no labeled texts to check on, also means float32: predictions are never made with an unchecked
    reduced model.
    """
    from core.model.precision import precision_candidates

    if len(texts) != len(reference):
        raise ConfigError("reference", f"{len(texts)} texts but {len(reference)} reference labels")
    wanted = precision_candidates(requested)
    if not wanted:
        return classifier, PrecisionCheck(requested, "fp32", "float32 requested")
    if not texts:
        return classifier, PrecisionCheck(requested, "fp32", f"no labeled texts to check {'/'.join(wanted)} against")
    fp32_acc = fp32_accuracy if fp32_accuracy is not None else evaluate_classifier(
        classifier, texts, reference, batch_size).accuracy
    notes: list[str] = []
    reduced_acc: float | None = None
    for precision in wanted:  # "auto" may offer two: int8 first, then bf16
        try:
            reduced = classifier.at_precision(precision)
        except TrainingError as exc:
            notes.append(f"{precision} unavailable: {exc}")
            continue
        reduced_acc = evaluate_classifier(reduced, texts, reference, batch_size).accuracy
        kept = keep_reduced(fp32_acc, reduced_acc, max_drop)
        notes.append(f"{precision} {'within' if kept else 'loses more than'} {100 * max_drop:.2g} accuracy points "
                     f"of float32 on {len(texts)} labeled texts ({reduced_acc:.3f} vs {fp32_acc:.3f})")
        if kept:
            return reduced, PrecisionCheck(requested, precision, "; ".join(notes), len(texts), fp32_acc, reduced_acc)
    return classifier, PrecisionCheck(requested, "fp32", "; ".join(notes), len(texts), fp32_acc, reduced_acc)
