"""Settings of one oracle server (a stand-in for a real LLM), validated once when built.

No parsing of argv or environment here. ``PROTOCOLS`` names the wire protocols a server can speak and
``API_BASE_PATHS`` what to append to the server's root URL to get litellm's ``api_base`` for each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from oracle.faults import FaultRates

MALFORMED_MODES = ("content", "body")
UNKNOWN_TEXT_MODES = ("guess", "error")
PROTOCOLS = ("openai", "anthropic", "bedrock", "gemini", "ollama", "azure")
# litellm appends the rest of each provider's path itself: "/chat/completions" to OpenAI's base, "/v1/messages"
# to Anthropic's, "/models/{model}:generateContent" to Gemini's, "/model/{id}/converse" to Bedrock's.
API_BASE_PATHS = {"openai": "/v1", "gemini": "/v1beta"}


@dataclass(frozen=True)
class OracleConfig:
    """``malformed_mode``: "content" sends a well-formed response whose content is not what was asked for
    (broken JSON when JSON was requested); "body" sends an HTTP body that is not JSON at all.

    ``unknown_text``: what to do when a prompt marks a ``<text>`` that is not in the data. "guess" answers
    with a hash-chosen class (counted as outcome ``unknown_text``), as a real LLM would answer anything;
    "error" replies 400 so a test can insist every text is known.

    ``api_key``: the key the server insists on, checked the protocol's way (for Bedrock, the access key id in
    the SigV4 credential); None accepts any key but ``sk-bad``, though protocols whose provider always needs a
    key still insist one arrives. ``aws_secret_access_key``: when set, Bedrock signatures are verified too.

    ``reasoning_tokens``: the answer comes after this many hidden "thinking" tokens, so a completion budget of
    at most this many yields an empty reply cut off by the length limit, as a reasoning model's does.
    ``refuse_logprobs``: a request asking for logprobs gets the provider's 400 (Gemini: "Logprobs is not
    enabled for models/..."). ``cache_min_tokens``: the shortest prefix the simulated prompt cache keeps;
    None means the protocol's documented default.
    """

    data: Path
    host: str = "127.0.0.1"
    port: int = 0
    noise: float = 0.1
    latency_ms: float = 200.0
    jitter_ms: float = 0.0
    seed: int = 0
    faults: FaultRates = field(default_factory=FaultRates)
    hang_s: float = 30.0
    malformed_mode: str = "content"
    unknown_text: str = "guess"
    verbose: bool = False
    protocol: str = "openai"
    api_key: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    reasoning_tokens: int = 0
    refuse_logprobs: bool = False
    cache_min_tokens: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be within [0, 1], got {self.noise}")
        for name in ("latency_ms", "jitter_ms", "hang_s", "reasoning_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.malformed_mode not in MALFORMED_MODES:
            raise ValueError(f"malformed_mode must be one of {MALFORMED_MODES}, got {self.malformed_mode!r}")
        if self.unknown_text not in UNKNOWN_TEXT_MODES:
            raise ValueError(f"unknown_text must be one of {UNKNOWN_TEXT_MODES}, got {self.unknown_text!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.cache_min_tokens is not None and self.cache_min_tokens < 0:
            raise ValueError(f"cache_min_tokens must not be negative, got {self.cache_min_tokens}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within [0, 65535], got {self.port}")
