"""The one exception tree of classifier-bootstrapper.

Every failure the pipeline can see is one of these. Adapters (storage, llm, training) catch library
exceptions at their edge and re-raise one of ours with ``raise ... from exc`` so that botocore, litellm or
torch exceptions never leak into the pipeline. Each adapter keeps one table, an ordered mapping of library
exception class (or error code) to our class, as httpx maps httpcore's exceptions; ``lookup`` reads such a
table and ``map_exceptions`` applies an adapter's translation to a block of code.

    BootstrapperError
    ├── RetryableError            the same call may succeed later (throttling, 5xx, timeouts, network)
    │   ├── StorageUnavailable
    │   ├── LLMRateLimited        carries retry_after seconds when the provider said so
    │   ├── LLMUnavailable        5xx, timeout, connection refused
    │   └── HubUnavailable        the Hugging Face Hub (an export) answered 429/5xx or could not be reached
    └── PermanentError            retrying the same call cannot help; fix the input or the config
        ├── ConfigError           names the offending field
        ├── StorageError
        │   ├── ObjectNotFound
        │   └── AlreadyExists     create-if-absent lost the race
        ├── LLMAuthError          401/403: bad or missing API key; stops the run
        ├── LLMBadRequest         400/404/422 from the provider
        ├── NoUsableChunks        ingestion produced nothing to label
        ├── StateError            unreadable state, schema mismatch, config changed under a run
        │   ├── LeaseHeld         another runner owns the output location
        │   └── LeaseLost         another runner took this run's lease over: stop, write nothing more
        ├── TrainingError
        └── HubError              the Hub refused an export (bad token, no right to the repo, bad request)

The split between retryable and permanent is what callers act on: retry loops catch
``RetryableError`` only; handlers map ``ConfigError`` to exit code 2, ``LeaseLost`` to 3 and everything else to 1.

Every error here pickles to an equal one (same class, message and attributes), whatever its constructor
takes, so a labeling worker process can hand its error to the parent as it is (``core.llm.fanout``).
"""

from __future__ import annotations

import contextlib
import copyreg
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class BootstrapperError(Exception):
    """Base of every error this project raises on purpose."""

    retryable: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own __reduce__ rebuilds by calling cls(*self.args), which breaks for a constructor that
        # takes other arguments than the message it stores (ConfigError(field, message)). Rebuild without
        # __init__ instead: the same args, then the attributes (field, retry_after, attempt_errors, notes).
        return (copyreg.__newobj__, (type(self), *self.args), self.__dict__ or None)


class RetryableError(BootstrapperError):
    retryable = True
    # Earlier failed attempts of the same call, when an adapter retried before giving up (for the ledger).
    attempt_errors: tuple[str, ...] = ()


class PermanentError(BootstrapperError):
    retryable = False


class StorageUnavailable(RetryableError):
    """Object store throttled us, timed out, or is unreachable."""


class LLMRateLimited(RetryableError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LLMUnavailable(RetryableError):
    """Provider 5xx, timeout or connection failure."""


class ConfigError(PermanentError):
    """A bad config value. ``field`` is the dotted path, e.g. ``training.truncation_type``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class StorageError(PermanentError):
    pass


class ObjectNotFound(StorageError):
    pass


class AlreadyExists(StorageError):
    pass


class LLMAuthError(PermanentError):
    """The provider cannot be called as configured (a rejected or missing key): the run stops."""


class LLMSetupError(LLMAuthError):
    """A provider SDK that litellm imports lazily is not installed: stops the run like a bad key, never retried."""


class LLMBadRequest(PermanentError):
    pass


class LLMParamRefused(LLMBadRequest):
    """The provider refused an optional parameter (``param``, e.g. "logprobs"): ask again without it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class NoUsableChunks(PermanentError):
    """``result`` is the ingestion result (every skipped input and why), for the caller to report.

    It is plain data (a ``core.ingest.chunking.IngestResult``), so it crosses a process boundary with the error.
    """

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class StateError(PermanentError):
    pass


class LeaseHeld(StateError):
    pass


class LeaseLost(StateError):
    """The lease renewal found another runner's lease: this run stopped without saving its state again."""


class TrainingError(PermanentError):
    pass


class HubUnavailable(RetryableError):
    """The Hugging Face Hub could not take an export now (429, 5xx, network)."""


class HubError(PermanentError):
    """The Hugging Face Hub refused an export: a bad or read-only token, a repo the token may not write, a bad
    request."""


# ---------------------------------------------------------------- translating library errors


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then the exception it was raised from (or while handling), and so on; each one once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def lookup(table: Mapping[Any, T], exc: BaseException) -> T | None:
    """The value of the first row of ``table`` keyed by a class that ``exc`` is an instance of, else None.

    Rows are tried in order, so a subclass must come before its base. Rows keyed by anything but a class (an
    adapter's error codes) are the adapter's to look up by key.

    >>> lookup({FileNotFoundError: "missing", OSError: "broken"}, IsADirectoryError())
    'broken'
    """
    for key, value in table.items():
        if isinstance(key, type) and isinstance(exc, key):
            return value
    return None


@contextlib.contextmanager
def map_exceptions(translate: Callable[[Exception], BootstrapperError | None]) -> Iterator[None]:
    """Re-raise an exception of the block as what ``translate`` makes of it, ``from`` the original.

    Our own errors pass unchanged, and so does an exception ``translate`` returns None for (a bug, not a
    failure of the library).
    """
    try:
        yield
    except BootstrapperError:
        raise
    except Exception as exc:
        ours = translate(exc)
        if ours is None:
            raise
        raise ours from exc
