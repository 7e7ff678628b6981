"""JSON lines on object storage: the one reader and writer of JSONL files, and append-only logs of parts.

``write_jsonl``/``read_jsonl`` are the only JSONL writer and reader of the output location (chunks, datasets,
predictions, the ledger's combined file); ``read_jsonl`` streams in 1 MiB blocks, so memory stays flat and a
line is split on ``\\n`` only (a JSON string may hold a raw U+2028, which ``str.splitlines`` would cut at).

Append-only logs:

S3 has no append, so a log is a folder of parts: each flush writes one new object
``<prefix><run_id>-<seq>.jsonl`` holding the records buffered since the last flush. A kill loses at most the
records buffered since the last flush (bounded by ``flush_interval_s`` and ``max_buffer``); a reader
concatenates every part in key order. Used for label results and the cost ledger.

This module knows nothing about what the records mean.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from core.errors import StorageError

if TYPE_CHECKING:
    from core.storage.backends import Storage


READ_BLOCK = 1 << 20


def jsonl_line(record: Mapping[str, Any]) -> str:
    """One record as one line (UTF-8 kept as is, not escaped).

    >>> jsonl_line({"id": "a", "text": "ü"})
    '{"id": "a", "text": "ü"}\\n'
    """
    return json.dumps(record, ensure_ascii=False) + "\n"


def dumps_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(jsonl_line(r) for r in rows)


def write_jsonl(storage: Storage, key: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """All of ``rows`` as one object at ``key``, written atomically (a reader sees the old or the new file)."""
    storage.write_text(key, dumps_jsonl(rows))


def iter_lines(fh: IO[bytes], block: int = READ_BLOCK) -> Iterator[bytes]:
    """The lines of a binary stream without their ``\\n``, read ``block`` bytes at a time.

    >>> import io
    >>> list(iter_lines(io.BytesIO(b"a\\nbc\\n\\nd"), block=2))
    [b'a', b'bc', b'', b'd']
    """
    rest = b""
    while chunk := fh.read(block):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def read_jsonl(storage: Storage, key: str, *,
               on_bad_line: Callable[[int, str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Every record of the JSONL object at ``key``, in file order; blank lines are skipped.

    A line that is not a JSON object goes to ``on_bad_line(line_number, reason)`` when given, else raises
    ``StorageError`` naming the key and line: files this job wrote itself are never expected to hold one.
    """
    with storage.open_read(key) as fh:
        for n, raw in enumerate(iter_lines(fh), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                if on_bad_line is None:
                    raise StorageError(f"{storage.uri(key)} line {n} is not a JSON object: {exc}") from exc
                on_bad_line(n, str(exc))
                continue
            yield record


def new_run_id(clock: Callable[[], float] = time.time) -> str:
    """Sortable and unique: parts of a later run sort after those of an earlier one."""
    return f"{int(clock() * 1000):013d}-{uuid.uuid4().hex[:8]}"


class LogWriter:
    """Buffers dict records and writes them as new part objects under ``prefix``."""

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
        write_jsonl(self._storage, f"{self._prefix}{self._run_id}-{self._seq:06d}.jsonl", self._buffer)
        self._seq += 1
        self._buffer = []

    def close(self) -> None:
        self.flush()


def read_log(storage: Storage, prefix: str) -> Iterator[dict[str, Any]]:
    """Every record of every part under ``prefix``, parts in key order, lines in file order.

    A torn last line (possible only with a non-atomic backend) is skipped rather than failing the resume.
    """
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    for key in storage.list(prefix):
        if not key.endswith(".jsonl"):
            continue
        yield from read_jsonl(storage, key, on_bad_line=lambda _n, _why: None)
