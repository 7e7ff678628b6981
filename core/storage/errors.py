"""How the storage backends' library errors become ours: one table per backend and the blocks that apply them.

``S3_ERRORS`` maps what boto3 and smart-open raise (a ``ClientError`` by the error code S3 sent, anything else by
its class) and ``LOCAL_ERRORS`` maps ``OSError`` subclasses to the ``core.errors`` classes, first match wins:
a missing object is ``ObjectNotFound``; throttling, 5xx, timeouts and connection failures are
``StorageUnavailable`` (retryable); a lost conditional put is ``AlreadyExists``; anything else, including a
missing bucket or denied access, is ``StorageError``. ``s3_errors(what)`` and ``local_errors(what)`` wrap a
block of backend code so that those errors leave it as ours, ``from`` the library's, the message naming the
operation and the key.

Not here: the backends themselves (``core.storage.backends``), retries (callers catch ``RetryableError``), or
the errors of our own checks (an invalid key is a ``StorageError`` raised where it is checked).
"""

from __future__ import annotations

import contextlib
import functools

import botocore.exceptions
import urllib3.exceptions

from core.errors import (
    AlreadyExists,
    BootstrapperError,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    causes,
    lookup,
    map_exceptions,
)

# What each S3 failure becomes. A ClientError is looked up by the error code S3 sent (the string rows; a code
# not listed goes by its HTTP status, see _s3_class); any other exception by the first class row it is an
# instance of, on each link of its cause chain in turn, because smart-open wraps botocore's errors in OSError.
S3_ERRORS: dict[type[BaseException] | str, type[BootstrapperError]] = {
    "NoSuchKey": ObjectNotFound,
    "NotFound": ObjectNotFound,
    "404": ObjectNotFound,  # a HEAD response has no body to name the code, so botocore uses the status
    "PreconditionFailed": AlreadyExists,  # a conditional put (IfNoneMatch="*") lost the race
    "ConditionalRequestConflict": AlreadyExists,
    "SlowDown": StorageUnavailable,
    "RequestTimeout": StorageUnavailable,
    "InternalError": StorageUnavailable,
    "ServiceUnavailable": StorageUnavailable,
    "Throttling": StorageUnavailable,
    "ThrottlingException": StorageUnavailable,
    "RequestLimitExceeded": StorageUnavailable,
    "TooManyRequests": StorageUnavailable,
    "500": StorageUnavailable,
    "502": StorageUnavailable,
    "503": StorageUnavailable,
    "504": StorageUnavailable,
    botocore.exceptions.ConnectionError: StorageUnavailable,
    botocore.exceptions.HTTPClientError: StorageUnavailable,
    urllib3.exceptions.HTTPError: StorageUnavailable,
    ConnectionError: StorageUnavailable,
    TimeoutError: StorageUnavailable,
    botocore.exceptions.BotoCoreError: StorageError,  # no credentials, a bad parameter, ...
}

# What each local file-system error becomes, first match wins: a missing file, or a path through a file, is a
# missing object. The path is in ``what`` already, so a missing object's message keeps only the reason.
LOCAL_ERRORS: dict[type[BaseException], tuple[type[StorageError], str]] = {
    FileNotFoundError: (ObjectNotFound, "{what}: {exc.strerror}"),
    IsADirectoryError: (ObjectNotFound, "{what}: {exc.strerror}"),
    NotADirectoryError: (ObjectNotFound, "{what}: {exc.strerror}"),
    OSError: (StorageError, "{what}: {exc}"),
}


def _s3_class(exc: BaseException) -> type[BootstrapperError] | None:
    if not isinstance(exc, botocore.exceptions.ClientError):
        return lookup(S3_ERRORS, exc)
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in S3_ERRORS:
        return S3_ERRORS[code]
    if "throttl" in code.lower() or status >= 500 or status == 429:
        return StorageUnavailable
    return StorageError


def translate_s3_error(exc: BaseException, what: str) -> BootstrapperError | None:
    """Our error for an exception from boto3 or smart-open, by ``S3_ERRORS``; None if it is no storage failure."""
    for link in causes(exc):
        ours = _s3_class(link)
        if ours is not None:
            return ours(f"{what}: {link}")
    if isinstance(exc, OSError):  # smart-open's own retries gave up on a network fault
        return StorageUnavailable(f"{what}: {exc}")
    return None


def translate_local_error(exc: BaseException, what: str) -> BootstrapperError | None:
    """Our error for a file-system exception, by ``LOCAL_ERRORS``; None if it is not an ``OSError``."""
    row = lookup(LOCAL_ERRORS, exc)
    if row is None:
        return None
    ours, message = row
    return ours(message.format(what=what, exc=exc))


def s3_errors(what: str) -> contextlib.AbstractContextManager[None]:
    """Inside the block, boto3 and smart-open errors are raised as ours, their message prefixed by ``what``."""
    return map_exceptions(functools.partial(translate_s3_error, what=what))


def local_errors(what: str) -> contextlib.AbstractContextManager[None]:
    """Inside the block, ``OSError`` is raised as ours, its message prefixed by ``what`` ("read /some/file")."""
    return map_exceptions(functools.partial(translate_local_error, what=what))
