"""AWS Batch errors translated into ours with one table, as httpx's ``_exceptions.py`` maps httpcore's.

A ``SubmitJob`` (the prediction array job, its ``report`` job) fails in two ways that call for opposite
answers: throttling, a Batch 5xx or a lost connection may succeed on the next attempt, so they become a
``RetryableError`` (the job exits 3, Batch retries it, and the create-if-absent markers keep the retry
from submitting twice); a ``ClientException`` (an unknown queue or job definition, a bad parameter) or a
request botocore itself rejects cannot, so they become a ``PermanentError`` (exit 1).

    >>> from botocore.exceptions import ClientError
    >>> throttled = ClientError({"Error": {"Code": "TooManyRequestsException"}}, "SubmitJob")
    >>> type(batch_error(throttled, "submitting the report job")).__name__
    'RetryableError'

Does not: retry (botocore's standard retry mode has already retried what it could by the time an error
arrives here), or translate S3 errors (``core.storage`` does). A ``BatchUnavailable`` class would name the
retryable case better than the bare ``RetryableError``; it belongs in ``core/errors.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import BootstrapperError, PermanentError, RetryableError

# A ClientError is looked up by its error code; any other botocore exception by the names of its classes, so
# that EndpointConnectionError and ConnectTimeoutError are found as ConnectionError.
_BY_NAME: Mapping[str, type[BootstrapperError]] = {
    # the two error codes the Batch API reference lists
    "ClientException": PermanentError,
    "ServerException": RetryableError,
    # throttling and timeouts, as botocore's standard retry mode recognises them
    "TooManyRequestsException": RetryableError,
    "ThrottlingException": RetryableError,
    "Throttling": RetryableError,
    "RequestLimitExceeded": RetryableError,
    "RequestTimeout": RetryableError,
    "RequestTimeoutException": RetryableError,
    # the role may not submit here: the stack's IAM policy needs fixing, not another try
    "AccessDeniedException": PermanentError,
    # botocore's own exceptions
    "ConnectionError": RetryableError,  # refused, connect timeout, proxy, TLS handshake
    "HTTPClientError": RetryableError,  # read timeout, connection closed mid-response
    "ParamValidationError": PermanentError,
    "NoCredentialsError": PermanentError,
    "NoRegionError": PermanentError,
}


def error_class(exc: BotoCoreError | ClientError) -> type[BootstrapperError]:
    """Our class for a botocore exception from a Batch call; an unknown HTTP 429 or 5xx counts as retryable."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _BY_NAME:
            return _BY_NAME[code]
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return RetryableError if status == 429 or status >= 500 else PermanentError
    for cls in type(exc).__mro__:
        if cls.__name__ in _BY_NAME:
            return _BY_NAME[cls.__name__]
    return PermanentError


def batch_error(exc: BotoCoreError | ClientError, what: str) -> BootstrapperError:
    """Ours for ``exc``, its message prefixed by ``what`` ("submitting the report job"); raise it ``from exc``."""
    return error_class(exc)(f"{what} failed: {exc}")
