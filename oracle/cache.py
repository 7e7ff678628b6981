"""A simulated provider prompt cache: which tokens of a request's prefix a provider would bill as cached.

Providers cache the leading part of a prompt they have seen before and report it in the usage block. Two
styles exist: automatic (OpenAI, Azure, Gemini's implicit cache), where any previously seen prefix of at
least ``min_tokens`` is read from cache; and explicit (Anthropic ``cache_control``, Bedrock ``cachePoint``),
where only prefixes ending at a marked breakpoint are cached, the first request writes them and later ones
read. Prefixes are compared at content-block boundaries, not token by token, and tokens are estimated as
characters / 4 as everywhere in the oracle. Entries never expire (real caches keep them 5 minutes to an
hour); nothing is cached across server restarts. The oracle is a stand-in answering from human labels.

    >>> cache, policy = PrefixCache(), CachePolicy("explicit", min_tokens=10)
    >>> cache.use("m", ("x" * 80, "question one"), (1,), policy)
    CacheUse(read=0, write=20)
    >>> cache.use("m", ("x" * 80, "question two"), (1,), policy)
    CacheUse(read=20, write=0)
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

CACHE_MODES = ("auto", "explicit", "none")


@dataclass(frozen=True)
class CachePolicy:
    """``granule``: cache hits are reported in steps of this many tokens past ``min_tokens`` (OpenAI: 128)."""

    mode: str
    min_tokens: int
    granule: int = 1

    def __post_init__(self) -> None:
        if self.mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {CACHE_MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class CacheUse:
    read: int = 0
    write: int = 0


def prefix_tokens(segments: Sequence[str], count: int) -> int:
    return math.ceil(sum(len(segment) for segment in segments[:count]) / 4)


def _key(model: str, segments: Sequence[str], count: int) -> bytes:
    digest = hashlib.sha256(model.encode("utf-8"))
    for segment in segments[:count]:
        # The length first, so ("ab", "c") and ("a", "bc") differ.
        digest.update(f"\x00{len(segment)}\x00".encode() + segment.encode("utf-8"))
    return digest.digest()


class PrefixCache:
    """Prefixes seen per model; thread-safe, one per server."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()

    def use(self, model: str, segments: Sequence[str], marks: Sequence[int], policy: CachePolicy) -> CacheUse:
        """Tokens read from and written to the cache by this request, and remember its cacheable prefixes."""
        if policy.mode == "none":
            return CacheUse()
        candidates = sorted(set(marks)) if policy.mode == "explicit" else list(range(1, len(segments) + 1))
        sizes = {count: prefix_tokens(segments, count) for count in candidates if 0 < count <= len(segments)}
        cacheable = [count for count, tokens in sizes.items() if tokens >= max(policy.min_tokens, 1)]
        if not cacheable:
            return CacheUse()
        keys = {count: _key(model, segments, count) for count in cacheable}
        with self._lock:
            hits = [count for count in cacheable if keys[count] in self._seen]
            self._seen.update(keys.values())
        read = sizes[max(hits)] if hits else 0
        if policy.mode == "auto":
            steps = (read - policy.min_tokens) // policy.granule if read else 0
            return CacheUse(read=policy.min_tokens + steps * policy.granule if read else 0)
        longest = max(cacheable)
        write = sizes[longest] - read if not hits or max(hits) < longest else 0
        return CacheUse(read=read, write=write)
