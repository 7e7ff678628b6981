"""litellm at arm's length: the one module that imports it, and where its exceptions become ours.

``litellm_module()`` imports litellm on first use, because its import costs seconds and modules that only
need the ``LLM`` protocol should not pay for it. Just before, it switches litellm to the model cost map
bundled in the wheel and to offline mode, so litellm never fetches anything: those switches are environment
variables litellm reads at import, set only where the user has not set them, and only when litellm is first
needed, so importing core leaves the environment alone.

``translate_error`` turns whatever a litellm call raised into one of ``core.errors`` by one table,
``litellm_errors()``, which also holds every message: each names the model (and base URL) and carries the
provider's own words with the API key, and anything shaped like a key, scrubbed out (``scrub``). A rate limit
keeps the provider's ``Retry-After`` (``parse_retry_after``).

Not here: chat calls and retries (``core.llm.client``), pricing a token count (``core.llm.ledger.cost_of``).
"""

from __future__ import annotations

import email.utils
import functools
import os
import re
import time
from collections.abc import Mapping
from types import ModuleType

from core.errors import (
    BootstrapperError,
    LLMAuthError,
    LLMBadRequest,
    LLMRateLimited,
    LLMSetupError,
    LLMUnavailable,
    causes,
    lookup,
)

# The environment variables litellm reads at import, and the values that keep it offline.
OFFLINE_SWITCHES = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}

_MAX_DETAIL_CHARS = 500
_KEY_HINT = (
    "check the API key: the provider's own variable (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, "
    "AZURE_API_KEY, ...; AWS credentials for Bedrock), or config fields api.large_api_key / api.small_api_key, "
    "set only through BOOTSTRAPPER_API__LARGE_API_KEY / BOOTSTRAPPER_API__SMALL_API_KEY, which take precedence"
)
_SECRET_PATTERN = re.compile(r"\b(sk-|Bearer\s+|api[_-]?key[=:]\s*)[^\s'\",}]+", re.IGNORECASE)

# The rows of litellm_errors() for failures litellm gives no class of their own (see _row).
_NO_KEY, _NOT_BUILT, _SERVER_FAULT, _OTHER = "no API key", "request not built", "HTTP 5xx or 408", "other"
_NO_SDK = "provider SDK not installed"
_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")

Row = tuple[type[BootstrapperError], str]


@functools.cache
def litellm_module() -> ModuleType:
    """The litellm module, imported offline and quiet on the first call."""
    for name, value in OFFLINE_SWITCHES.items():
        os.environ.setdefault(name, value)
    import litellm

    # Stops litellm printing "Provider List: ..." banners to stdout when a capability check meets an
    # unknown model; the exception still carries the information.
    litellm.suppress_debug_info = True
    return litellm


@functools.cache
def litellm_errors() -> dict[type[BaseException] | str, Row]:
    """What each failure of a litellm call becomes: ``(our class, message)``.

    Class rows are tried in order, first match wins, so a class comes before its bases. The string rows are
    the situations litellm has no class for (``_row`` says when each applies). In a message,
    ``{where}`` names the model and base URL, ``{http}`` is " (HTTP 503)" or "", ``{detail}`` the provider's
    message and ``{name}`` the exception's class.
    """
    ll = litellm_module()
    rejected_key = (LLMAuthError, "{where} rejected the API key{http}: {hint}. Provider said: {detail}")
    timed_out = (LLMUnavailable, "{where} did not answer in time: {detail}")
    unavailable = (LLMUnavailable, "{where} is unavailable{http}: {detail}")
    refused = (LLMBadRequest, "{where} refused the request{http}: {detail}")
    return {
        # The openai SDK refused to build the request, so nothing was sent; litellm reports that as a
        # server error, which would make a missing key look retryable.
        _NO_KEY: (LLMAuthError, "no request sent to {where}: no API key configured; {hint}. ({detail})"),
        _NOT_BUILT: (LLMBadRequest, "the request to {where} could not be built: {detail}"),
        # litellm imports some provider SDKs lazily and wraps the ImportError as a connection error, which
        # would be retried as if the provider were down.
        _NO_SDK: (LLMSetupError, "no request sent to {where}: the package {module} is not installed; {install}"),
        ll.RateLimitError: (LLMRateLimited, "rate limited by {where}{http}: {detail}"),
        ll.AuthenticationError: rejected_key,
        ll.PermissionDeniedError: rejected_key,
        TimeoutError: timed_out,  # our asyncio.wait_for around the call
        ll.Timeout: timed_out,  # litellm's, when the openai SDK's own timeout fires first
        ll.APIConnectionError: unavailable,
        ll.InternalServerError: unavailable,
        ll.ServiceUnavailableError: unavailable,
        ll.BadGatewayError: unavailable,
        ll.BadRequestError: refused,
        ll.NotFoundError: refused,
        ll.UnprocessableEntityError: refused,
        # A class not listed above, by its HTTP status.
        _SERVER_FAULT: (LLMUnavailable, "{where} failed{http}: {detail}"),
        _OTHER: (LLMBadRequest, "{where} call failed ({name}){http}: {detail}"),
    }


def translate_error(exc: BaseException, where: str, secret: str | None = None) -> BootstrapperError:
    """Our error for what a litellm call (or the timeout around it) raised, by ``litellm_errors()``.

    ``where`` names the call's target ("model 'gpt-4o' at http://..."); ``secret`` is the API key, which never
    reaches the message.
    """
    status = _status_of(exc)
    missing = missing_module(exc)
    ours, message = litellm_errors()[_NO_SDK] if missing else _row(exc, status)
    text = message.format(
        module=missing or "",
        install=install_hint(missing or ""),
        where=scrub(where, secret),
        http=f" (HTTP {status})" if status is not None else "",
        detail=scrub(str(exc) or type(exc).__name__, secret)[:_MAX_DETAIL_CHARS],
        name=type(exc).__name__,
        hint=_KEY_HINT,
    )
    if ours is LLMRateLimited:
        return LLMRateLimited(text, retry_after=parse_retry_after(_headers_of(exc)))
    return ours(text)


def _row(exc: BaseException, status: int | None) -> Row:
    """A request that never left is told by its cause, whatever class litellm gave it; then the class rows
    apply; a class they do not list goes by its HTTP status."""
    table = litellm_errors()
    not_built = _client_side_error(exc)
    if not_built is not None:
        no_key = re.search(r"api[_ ]?key|credential", str(not_built), re.IGNORECASE)
        return table[_NO_KEY if no_key else _NOT_BUILT]
    row = lookup(table, exc)
    if row is not None:
        return row
    return table[_SERVER_FAULT if status is not None and (status >= 500 or status == 408) else _OTHER]


def missing_module(exc: BaseException) -> str | None:
    """The module a failed lazy import named, anywhere in the exception's chain or message.

    >>> missing_module(RuntimeError("litellm.APIConnectionError: No module named 'google'"))
    'google'
    """
    for cause in causes(exc):
        if isinstance(cause, ImportError) and getattr(cause, "name", None):
            return str(cause.name)
        found = _MISSING_MODULE.search(str(cause))
        if found:
            return found.group(1)
    return None


# The pip extras of classifier-bootstrapper that install an SDK litellm imports lazily, and the module each one
# provides (its presence says the extra is installed).
EXTRAS: dict[str, str] = {"vertex": "google.auth"}


def install_hint(module: str) -> str:
    """The pip command that installs the SDK ``module`` belongs to.

    >>> install_hint("google.auth")
    "pip install 'classifier-bootstrapper[vertex]'"
    """
    top = module.split(".")[0]
    extra = next((name for name, provided in EXTRAS.items() if provided.split(".")[0] == top), None)
    return f"pip install 'classifier-bootstrapper[{extra}]'" if extra else f"pip install {top}"


def scrub(text: str, secret: str | None) -> str:
    """Remove the API key, and anything shaped like one, from text bound for an error message."""
    if secret:
        text = text.replace(secret, "***")
    return _SECRET_PATTERN.sub(r"\1***", text)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date).

    >>> parse_retry_after({"Retry-After": "2.5"})
    2.5
    >>> parse_retry_after({"retry-after-ms": "150"})
    0.15
    """
    if not headers:
        return None
    lower = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _status_of(exc: BaseException) -> int | None:
    # litellm sometimes stores the status as a string ("500"); a connection error has none.
    response = getattr(exc, "response", None)
    for status in (getattr(exc, "status_code", None), getattr(response, "status_code", None)):
        try:
            return int(status)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return None


def _client_side_error(exc: BaseException) -> BaseException | None:
    """The openai SDK's own error (raised before any request left, e.g. no API key), if that is the root."""
    import openai

    return next((cause for cause in causes(exc) if type(cause) is openai.OpenAIError), None)


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    # litellm copies the provider's headers onto the exception as ``litellm_response_headers``; the
    # httpx response it wraps keeps them too.
    headers = getattr(exc, "litellm_response_headers", None)
    if headers:
        return headers
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None) or None
