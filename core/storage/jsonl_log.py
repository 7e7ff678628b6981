"""Append-only JSON-lines logs on object storage, written as numbered shard objects.

S3 has no append, so a log is a folder of shards: each flush writes one new object
``<prefix><run_id>-<seq>.jsonl`` holding the records buffered since the last flush. A kill loses at most the
records buffered since the last flush (bounded by ``flush_interval_s`` and ``max_buffer``); a reader
concatenates every shard in key order. Used for label results and the cost ledger.

This module knows nothing about what the records mean.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.storage.backends import Storage


def new_run_id(clock: Callable[[], float] = time.time) -> str:
    """Sortable and unique: shards of a later run sort after those of an earlier one."""
    return f"{int(clock() * 1000):013d}-{uuid.uuid4().hex[:8]}"


class ShardWriter:
    """Buffers dict records and writes them as new shard objects under ``prefix``."""

    def __init__(
        self,
        storage: Storage,
        prefix: str,
        *,
        flush_interval_s: float = 2.0,
        max_buffer: int = 200,
        clock: Callable[[], float] = time.monotonic,
        run_id: str | None = None,
    ) -> None:
        self._storage = storage
        self._prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._interval = flush_interval_s
        self._max_buffer = max_buffer
        self._clock = clock
        self._run_id = run_id or new_run_id()
        self._seq = 0
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = clock()

    def append(self, record: dict[str, Any]) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self._max_buffer or self._clock() - self._last_flush >= self._interval:
            self.flush()

    def flush(self) -> None:
        self._last_flush = self._clock()
        if not self._buffer:
            return
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._buffer)
        key = f"{self._prefix}{self._run_id}-{self._seq:06d}.jsonl"
        self._storage.write_text(key, body)
        self._seq += 1
        self._buffer = []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_shards(storage: Storage, prefix: str) -> Iterator[dict[str, Any]]:
    """Every record of every shard under ``prefix``, shards in key order, lines in file order.

    A torn last line (possible only with a non-atomic backend) is skipped rather than failing the resume.
    """
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    for key in storage.list(prefix):
        if not key.endswith(".jsonl"):
            continue
        for line in storage.read_text(key).splitlines():
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
