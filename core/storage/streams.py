"""The file-like objects behind ``Storage.open_read`` and ``Storage.open_write``.

``GuardedStream`` wraps a backend's stream (a local file, ``AtomicFile`` or a smart-open S3 stream) so that
its library errors surface as ours, through an error-translating context manager the backend passes in, and
so that an exception inside ``with`` discards a write instead of publishing it. ``AtomicFile`` is the local
write: a temporary file beside the target (named by ``tmp_path``, ending in ``TMP_SUFFIX`` so listings can
hide it), renamed into place on close.

Not here: which errors map to which of ours (``core.storage.errors`` owns that), keys, listing, or S3 calls.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TMP_SUFFIX = ".partial"  # in-progress local writes; list() hides them


def tmp_path(target: Path) -> Path:
    """A fresh hidden name beside ``target``; the random part keeps concurrent writers apart."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


def open_new(path: Path) -> BinaryIO:
    # O_EXCL: never clobber another writer's file; mode 0o666 lets the umask decide as open() would.
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")


class GuardedStream(io.BufferedIOBase):
    """Delegates to a library stream, re-raising its errors as ours; a failed ``with`` discards writes."""

    def __init__(self, inner: Any, errors: Callable[[], contextlib.AbstractContextManager[None]]) -> None:
        self._inner = inner
        self._errors = errors

    def readable(self) -> bool:
        return bool(self._inner.readable())

    def writable(self) -> bool:
        return bool(self._inner.writable())

    def seekable(self) -> bool:
        return bool(self._inner.seekable())

    def read(self, size: int | None = -1) -> bytes:
        with self._errors():
            return bytes(self._inner.read(-1 if size is None else size))

    def write(self, data: Any) -> int:
        with self._errors():
            return int(self._inner.write(data))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._errors():
            return int(self._inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self._inner.tell())

    def flush(self) -> None:
        if not self.closed and not self._inner.closed:
            with self._errors():
                self._inner.flush()

    def close(self) -> None:
        self._finish(self._inner.close)

    def terminate(self) -> None:
        """Close without publishing: the object is not created (or replaced)."""
        self._finish(getattr(self._inner, "terminate", self._inner.close))

    def _finish(self, action: Any) -> None:
        if self.closed:
            return
        try:
            with self._errors():
                action()
        finally:
            super().close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self._inner.writable():
            self.terminate()
        else:
            self.close()


class AtomicFile(io.BufferedIOBase):
    """A file written under a temporary name beside ``target`` and renamed into place on close."""

    def __init__(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self._target = target
        self._tmp = tmp_path(target)
        self._fh = open_new(self._tmp)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._fh.write(data)

    def flush(self) -> None:
        if not self._fh.closed:
            self._fh.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._fh.close()
            os.replace(self._tmp, self._target)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        finally:
            super().close()

    def terminate(self) -> None:
        if self.closed:
            return
        try:
            self._fh.close()
        finally:
            self._tmp.unlink(missing_ok=True)
            super().close()
