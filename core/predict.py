"""Batch prediction over a stream of chunks, sharding of that stream, and scoring a classifier on labeled texts.

Does: read chunks a window at a time (memory stays flat however many chunks there are), run the classifier on
each window (shortest texts batched together), and yield one record per chunk in input order; split a chunk
stream into N stable shards so N jobs can share the work (``--shard I/N``).

Does not: read or write storage, train, or decide which chunks to predict on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from core.errors import ConfigError
from core.metrics import evaluate
from core.schema import Chunk, Metrics
from core.training import Classifier


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
    classifier: Classifier, chunks: Iterable[Chunk], batch_size: int = 64, window: int = 2048
) -> Iterator[dict[str, Any]]:
    """Yield ``{"id", "source", "label", "probs": {class: p}}`` per chunk, in input order.

    At most ``window`` chunks are held at once; inside a window texts are sorted by length before batching
    (by ``Classifier.predict_proba``), which is where the speed comes from on mixed-length corpora.
    """
    if batch_size < 1 or window < 1:
        raise ConfigError("training.predict_batch_size", f"batch_size and window must be >= 1 ({batch_size}, {window})")
    it = iter(chunks)
    while block := list(islice(it, window)):
        labels, probs = classifier.predict_proba([c.text for c in block], batch_size=batch_size)
        for chunk, label, row in zip(block, labels, probs, strict=True):
            yield {
                "id": chunk.id,
                "source": chunk.source,
                "label": label,
                "probs": {name: round(float(p), 6) for name, p in zip(classifier.classes, row, strict=True)},
            }


def evaluate_classifier(
    classifier: Classifier, texts: Sequence[str], reference: Sequence[str], batch_size: int = 64
) -> Metrics:
    """Metrics of the classifier's predictions on ``texts`` against ``reference`` labels (LLM or gold)."""
    return evaluate(list(reference), classifier.predict(texts, batch_size), classifier.classes)
