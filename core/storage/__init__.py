"""Object storage: the ``Storage`` protocol with local-folder and S3 backends, and the JSON-lines files on it.

Keys are relative posix paths under a storage's root; every backend error is translated into ``core.errors``
(``ObjectNotFound``, ``StorageError``, the retryable ``StorageUnavailable``). ``read_jsonl``/``write_jsonl`` are the
one reader and writer of JSONL objects; ``LogWriter``/``read_log`` keep append-only logs as numbered parts,
since S3 has no append. Modules: ``backends`` (the protocol, ``LocalStorage``, ``S3Storage``, ``open_storage``),
``streams`` (atomic writes and guarded reads), ``jsonl_log`` (JSONL files and logs).
"""

from core.storage.backends import (
    LocalStorage,
    S3Storage,
    Storage,
    download_dir,
    make_s3_client,
    open_storage,
    upload_dir,
)
from core.storage.jsonl_log import LogWriter, dumps_jsonl, jsonl_line, read_jsonl, read_log, write_jsonl

__all__ = [
    "LocalStorage",
    "S3Storage",
    "LogWriter",
    "Storage",
    "download_dir",
    "dumps_jsonl",
    "jsonl_line",
    "make_s3_client",
    "open_storage",
    "read_jsonl",
    "read_log",
    "upload_dir",
    "write_jsonl",
]
