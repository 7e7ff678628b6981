"""The engine's protocol-neutral request and reply, so one engine serves every wire protocol.

Each protocol module in ``oracle.protocols`` parses its provider's request JSON into a ``ChatRequest`` and
renders the engine's ``Completion`` or ``Failure`` back in that provider's shape. These are plain values:
nothing here knows HTTP, a provider, or how a label is chosen. The oracle they serve is a stand-in that
answers from human labels, not a language model.

    >>> Usage(prompt_tokens=1200, completion_tokens=20, cache_read=1024).uncached_prompt_tokens
    176
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from oracle import answers


class ErrorKind(enum.Enum):
    """What went wrong, before a protocol picks its own status, code and wording for it."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"


@dataclass(frozen=True)
class Failure:
    """An error reply. ``message`` None means the protocol's own wording for ``kind``; ``code`` overrides the
    protocol's default error code for ``kind`` (Bedrock's ``InvalidSignatureException`` is one 403 of several)."""

    kind: ErrorKind
    message: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class Structure:
    """The reply shape a request asked for.

    ``kind``: "text", "json" (any JSON object) or "schema" (a JSON schema, whose label enum is ``classes``).
    ``form``: how the request asked, in the provider's own terms ("response_format.json_schema",
    "output_format", "toolConfig.toolChoice", ...), recorded in /stats so tests can see it.
    ``tool``: the forced tool the answer must come back through (Anthropic ``tool_use``, Bedrock ``toolUse``).
    """

    kind: str = "text"
    classes: tuple[str, ...] | None = None
    form: str = "none"
    tool: str | None = None

    @property
    def as_json(self) -> bool:
        return self.kind != "text"


@dataclass(frozen=True)
class ChatRequest:
    """One chat call, whatever protocol carried it.

    ``segments``: every prompt text in the provider's order (system parts first), one per content block, so
    token counts and the prefix cache see what the provider would. ``cache_marks``: explicit cache breakpoints
    (Anthropic ``cache_control``, Bedrock ``cachePoint``), each the number of leading segments it closes.
    ``prompt``: the last user message, which the data lookup reads.
    """

    model: str
    prompt: str
    segments: tuple[str, ...]
    structure: Structure = field(default_factory=Structure)
    max_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    cache_marks: tuple[int, ...] = ()


@dataclass(frozen=True)
class Usage:
    """Token counts. ``prompt_tokens`` includes cached and cache-written tokens, ``completion_tokens`` the
    hidden reasoning ones; protocols that report them apart (Anthropic, Bedrock, Gemini) subtract."""

    prompt_tokens: int
    completion_tokens: int
    cache_read: int = 0
    cache_write: int = 0
    reasoning_tokens: int = 0

    @property
    def uncached_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cache_read - self.cache_write

    @property
    def visible_completion_tokens(self) -> int:
        return self.completion_tokens - self.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    """A successful answer. ``finish`` is "stop" or "length" (cut off by the completion budget).

    ``parts`` splits a labeling reply around its label, so logprobs can point at the label token.
    """

    content: str
    finish: str
    usage: Usage
    parts: tuple[str, str, str] | None = None
    label_prob: float = answers.LABEL_PROB
    classes: tuple[str, ...] = ()

    def logprob_tokens(self, top_k: int) -> list[dict[str, Any]]:
        """OpenAI-shaped ``logprobs.content`` entries; other protocols convert them to their own form."""
        if self.parts is not None and "".join(self.parts) == self.content:
            return answers.logprobs_content(self.parts, self.label_prob, self.classes, top_k)
        return answers.filler_logprobs(self.content, top_k)

    def json_object(self) -> dict[str, Any] | None:
        """The content as a JSON object, or None (malformed or truncated replies, rules, plain text)."""
        try:
            value = json.loads(self.content)
        except (json.JSONDecodeError, ValueError):
            return None
        return value if isinstance(value, dict) else None
