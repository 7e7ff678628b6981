"""One small interface over a local folder and an S3 prefix.

Keys are relative posix paths ("runs/state.json") under a storage's root. Two backends:
``LocalStorage`` (atomic writes: temp file next to the target, then ``os.replace``) and ``S3Storage``
(boto3 client injected; object bodies stream through smart-open, listing and conditional puts go
through boto3). ``read_with_etag`` and ``replace_if`` are a compare-and-swap: a write that succeeds only if
the object is still the version read (S3 ``PutObject`` with ``IfMatch``; locally a read-compare-rename under
an ``flock`` of the folder). The file-like objects that ``open_read``/``open_write`` return live in
``core.storage.streams``. ``open_storage("s3://bucket/prefix" | "/some/dir")`` picks one.

Library errors are translated at this edge: every library call runs inside ``s3_errors`` or ``local_errors``,
whose tables (``core.storage.errors``) make a missing object ``ObjectNotFound``, throttling and network faults
``StorageUnavailable`` (retryable) and anything else ``StorageError``. Keys that would escape the root are
refused.

``list(prefix)`` treats the prefix as a folder: ``list("a")`` and ``list("a/")`` both return the keys
under ``a/`` and never ``ab/x``. Empty key segments ("a//b") and "." are refused too, because S3 would
keep them as distinct keys where a file system collapses them.

Not here: retry loops (callers catch ``RetryableError``), settings or environment variables (the
handler passes the endpoint in), and any knowledge of what the objects contain.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

import boto3
import botocore.config
import botocore.exceptions
import smart_open.s3

from core.errors import AlreadyExists, ObjectNotFound, StorageError
from core.storage.errors import local_errors, s3_errors
from core.storage.streams import TMP_SUFFIX, AtomicFile, GuardedStream, open_new, tmp_path


class Storage(Protocol):
    """Objects under a root. Every method raises ``StorageError`` (or a subclass) or ``StorageUnavailable``."""

    root_uri: str  # "/abs/path" or "s3://bucket/prefix"

    def uri(self, key: str) -> str: ...
    def read_bytes(self, key: str) -> bytes: ...  # ObjectNotFound if missing
    def write_bytes(self, key: str, data: bytes) -> None: ...  # replaces whole, never half-written
    def read_text(self, key: str) -> str: ...  # UTF-8
    def write_text(self, key: str, text: str) -> None: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...  # keys under the folder, sorted, recursive
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...  # a missing key is fine
    def create_if_absent(self, key: str, data: bytes) -> bool: ...  # False: someone else created it first
    def read_with_etag(self, key: str) -> tuple[bytes, str]: ...  # the body and a token of this version
    def replace_if(self, key: str, etag: str, data: bytes) -> bool: ...  # False: changed or gone since ``etag``
    def open_read(self, key: str) -> BinaryIO: ...
    def open_write(self, key: str) -> BinaryIO: ...  # appears on close; an exception in ``with`` discards it


# --- pure helpers -------------------------------------------------------------------------------


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative posix path, else raise ``StorageError``.

    >>> check_key("models/v1/config.json")
    'models/v1/config.json'
    """
    if not isinstance(key, str) or not key:
        raise StorageError(f"invalid key {key!r}: must be a non-empty string")
    if key.startswith("/") or "\x00" in key:
        raise StorageError(f"invalid key {key!r}: must be relative and free of NUL")
    bad = [part for part in key.split("/") if part in ("", ".", "..")]
    if bad:
        raise StorageError(f"invalid key {key!r}: empty, '.' or '..' segment would escape or alias the root")
    return key


def _folder(prefix: str) -> str:
    """Normalise a listing prefix to "" or "some/folder/"."""
    stripped = prefix.rstrip("/")
    return check_key(stripped) + "/" if stripped else ""


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StorageError(f"invalid S3 URI {uri!r}: no bucket")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"{what}: not UTF-8 text ({exc})") from exc


# --- backends -----------------------------------------------------------------------------------


class _TextMixin:
    read_bytes: Callable[[str], bytes]
    write_bytes: Callable[[str, bytes], None]

    def read_text(self, key: str) -> str:
        return _decode(self.read_bytes(key), key)

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))


class LocalStorage(_TextMixin):
    """Keys are files under ``root``; the folder is created on first write."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).expanduser().absolute()
        self.root_uri = str(self._root)

    def __repr__(self) -> str:
        return f"LocalStorage({self.root_uri!r})"

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*check_key(key).split("/"))

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def read_bytes(self, key: str) -> bytes:
        with local_errors(f"read {self.uri(key)}"):
            return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        with self.open_write(key) as fh:
            fh.write(data)

    def list(self, prefix: str = "") -> Iterator[str]:
        folder = _folder(prefix)
        base = self._root.joinpath(*folder.rstrip("/").split("/")) if folder else self._root
        found: builtins.list[str] = []
        with local_errors(f"list {base}"):
            for dirpath, _dirs, files in os.walk(base):
                rel_dir = Path(dirpath).relative_to(self._root).as_posix()
                for name in files:
                    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
                        found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
        yield from sorted(found)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with local_errors(f"stat {path}"):
            return path.is_file()

    def delete(self, key: str) -> None:
        with local_errors(f"delete {self.uri(key)}"):
            self._path(key).unlink(missing_ok=True)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        with local_errors(f"create {path}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = tmp_path(path)
            _write_new(tmp, data)
            try:
                # link() fails if the target exists, and readers never see a half-written file.
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                return _create_exclusive(path, data)  # a file system without hard links
            finally:
                tmp.unlink(missing_ok=True)

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        with local_errors(f"read {path}"), path.open("rb") as fh:
            return _versioned(fh)

    def replace_if(self, key: str, etag: str, data: bytes) -> bool:
        path = self._path(key)
        with local_errors(f"replace {path}"), _folder_lock(path.parent):
            # Every replace_if on this folder waits here, so read-compare-rename is one step to the others;
            # a plain write or create_if_absent never holds the lock, but neither races a lease that exists.
            try:
                with path.open("rb") as fh:
                    _body, current = _versioned(fh)
            except FileNotFoundError:
                return False
            if current != etag:
                return False
            with AtomicFile(path) as fh:
                fh.write(data)
            return True

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        with local_errors(f"read {path}"):
            inner = path.open("rb")
        return cast(BinaryIO, GuardedStream(inner, functools.partial(local_errors, f"read {path}")))

    def open_write(self, key: str) -> BinaryIO:
        path = self._path(key)
        with local_errors(f"write {path}"):
            inner = AtomicFile(path)
        return cast(BinaryIO, GuardedStream(inner, functools.partial(local_errors, f"write {path}")))


def _write_new(path: Path, data: bytes) -> None:
    with open_new(path) as fh:
        fh.write(data)


def _versioned(fh: BinaryIO) -> tuple[bytes, str]:
    """The body of an open file and its version token: content, inode and mtime of that very file.

    Writes replace a file by renaming a new one into place, so every version has its own inode.
    """
    stat = os.fstat(fh.fileno())
    body = fh.read()
    token = hashlib.sha256(body + f"|{stat.st_ino}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    return body, token


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` itself, held across processes until the block ends."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _create_exclusive(path: Path, data: bytes) -> bool:
    try:
        _write_new(path, data)
    except FileExistsError:
        return False
    return True


class S3Storage(_TextMixin):
    """Keys are objects under ``s3://bucket/prefix/``."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self._client = client
        self.root_uri = f"s3://{_join(bucket, self.prefix)}"

    def __repr__(self) -> str:
        return f"S3Storage({self.root_uri!r})"

    def _key(self, key: str) -> str:
        return _join(self.prefix, check_key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    # smart_open.s3.open takes bucket and key apart, so a key holding "?versionId=" is not parsed
    # as a version, and no compression is inferred from a ".gz" suffix.
    def _open(self, key: str, mode: str, **params: Any) -> Any:
        return smart_open.s3.open(self.bucket, self._key(key), mode, client=self._client, **params)

    def read_bytes(self, key: str) -> bytes:
        with s3_errors(f"read {self.uri(key)}"), self._open(key, "rb") as fh:
            return bytes(fh.read())

    def write_bytes(self, key: str, data: bytes) -> None:
        with s3_errors(f"write {self.uri(key)}"), self._open(key, "wb", multipart_upload=False) as fh:
            fh.write(data)

    def list(self, prefix: str = "") -> Iterator[str]:
        full = _join(self.prefix, _folder(prefix))
        full = f"{full}/" if full else ""
        strip = len(f"{self.prefix}/") if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        with s3_errors(f"list s3://{self.bucket}/{full}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):  # folder markers made by consoles
                        yield obj["Key"][strip:]

    def exists(self, key: str) -> bool:
        try:
            with s3_errors(f"head {self.uri(key)}"):
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        with s3_errors(f"delete {self.uri(key)}"):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def create_if_absent(self, key: str, data: bytes) -> bool:
        try:  # S3 conditional write: the server refuses the put if the key exists
            with s3_errors(f"create {self.uri(key)}"):
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except AlreadyExists:
            return False
        return True

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        with s3_errors(f"read {self.uri(key)}"):
            reply = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(reply["Body"].read()), str(reply["ETag"])

    def replace_if(self, key: str, etag: str, data: bytes) -> bool:
        try:  # S3 conditional write: refused (412) unless the object still has this ETag, 404 if it is gone
            with s3_errors(f"replace {self.uri(key)}"):
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=etag)
        except (AlreadyExists, ObjectNotFound):
            return False
        return True

    def open_read(self, key: str) -> BinaryIO:
        what = f"read {self.uri(key)}"
        with s3_errors(what):
            inner = self._open(key, "rb")
        return cast(BinaryIO, GuardedStream(inner, functools.partial(s3_errors, what)))

    def open_write(self, key: str) -> BinaryIO:
        what = f"write {self.uri(key)}"
        with s3_errors(what):
            inner = self._open(key, "wb")  # multipart: large model files never sit whole in memory
        return cast(BinaryIO, GuardedStream(inner, functools.partial(s3_errors, what)))


# --- construction and folder helpers ------------------------------------------------------------


def make_s3_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    max_attempts: int = 5,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
) -> Any:
    """A boto3 S3 client; path-style addressing when an endpoint (MinIO, moto) is given."""
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def open_storage(uri: str, *, s3_client: Any = None) -> Storage:
    """``s3://bucket/prefix`` -> ``S3Storage``; anything else is a local folder (``file://`` allowed)."""
    if uri.startswith("s3://"):
        bucket, prefix = _parse_s3_uri(uri)
        return S3Storage(bucket, prefix, s3_client if s3_client is not None else make_s3_client())
    return LocalStorage(Path(uri.removeprefix("file://")))


def upload_dir(storage: Storage, local_dir: Path, prefix: str) -> builtins.list[str]:
    """Copy every file under ``local_dir`` to ``prefix/<relative path>``; returns the keys written."""
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"upload {root}: not a directory")
    keys = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = _folder(prefix) + path.relative_to(root).as_posix()
        with local_errors(f"read {path}"), path.open("rb") as src, storage.open_write(key) as dst:
            shutil.copyfileobj(src, dst)
        keys.append(key)
    return keys


def download_dir(storage: Storage, prefix: str, local_dir: Path) -> builtins.list[Path]:
    """Copy every object under ``prefix`` into ``local_dir`` (keeping relative paths); returns the files."""
    folder = _folder(prefix)
    target_root = LocalStorage(Path(local_dir))
    written = []
    for key in storage.list(folder):
        rel = key[len(folder):]
        with storage.open_read(key) as src, target_root.open_write(rel) as dst:
            shutil.copyfileobj(src, dst)
        written.append(Path(target_root.uri(rel)))
    return written
