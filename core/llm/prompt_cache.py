"""Provider prompt caching as the labeling bill sees it, and whether padding the stable prefix pays.

Every labeling call starts with the same system message (the rules, the classes, the answer format): about
80 tokens plus the rules, 409 with the SMS example's rules. Providers bill a repeated prefix at a cached rate only once it reaches a
minimum length, so a short prefix is never cached. Padding it past the minimum makes every later call read
the (longer) prefix at the cached rate: cheaper when ``min_tokens * cached_rate`` is below ``prefix *
input_rate``, which depends on the model's discount (litellm's cost map):

- OpenAI (and Azure): automatic, prefixes of 1,024+ tokens, hits counted in steps of 128 tokens; no write
  premium. gpt-4o and gpt-4o-mini read at 50% of the input rate (padding 409 -> 1,024 tokens never pays; from
  ~585 tokens of prefix it does),
  gpt-4.1 at 25% and gpt-5 at 10% (it pays within a few dozen calls).
- Anthropic (and Claude on Bedrock): only prefixes marked ``cache_control`` (``LabelPrompt.mark_cache``);
  the minimum is per model (1,024 tokens for Sonnet 4.5, 4,096 for Haiku 4.5 and Opus 4.5, 2,048 for Haiku
  3/3.5, per Anthropic's prompt-caching docs); a miss writes the prefix at the cache-write rate (1.25x).
- Gemini 2.5: implicit caching, automatic; Google's docs have listed 1,024 or 2,048 tokens for 2.5 Flash and
  2,048 or 4,096 for 2.5 Pro, so the larger is taken. No write premium.

``prefix_cost`` prices the stable prefix over a number of calls under an explicit, unmeasured assumption: the
first ``COLD_CALLS`` calls miss (the gateway sends a model's first call alone in each of the default two
labeling processes), and afterwards a call hits with probability ``HIT_RATE`` (real providers route by prefix
and evict after minutes of disuse; no real provider is reachable here to measure it). ``padding_pays`` is the
decision ``LabelPrompt`` padding follows. Pure: no call is made, nothing is read but litellm's cost map.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from core.llm.ledger import rates
from core.llm.providers import provider_of

COLD_CALLS = 2  # first calls that find no cache: one per labeling process (system.label_processes default)
HIT_RATE = 0.9  # share of the later calls that read the cache (an assumption; see the module doc)


@dataclass(frozen=True)
class CacheRule:
    """How a provider caches a prompt prefix: ``auto`` (any repeated prefix) or ``explicit`` (marked ones);
    the shortest prefix it caches, and the step in which cached tokens are counted past that minimum.
    ``margin``: how far past the minimum padding aims, as a share of it, because the tokens are counted with
    litellm's tokenizer (OpenAI's own; for the other providers a stand-in that can undercount theirs)."""

    style: Literal["auto", "explicit"]
    min_tokens: int
    granule: int = 1
    margin: float = 0.15

    @property
    def pad_target(self) -> int:
        return math.ceil(self.min_tokens * (1 + self.margin))


_OPENAI = CacheRule("auto", 1024, granule=128, margin=0.02)
# Claude model ids by family, most specific first (Anthropic's prompt-caching docs' minimums).
_CLAUDE_MINIMUMS = (
    (re.compile(r"haiku-4|opus-4-[56]"), 4096),
    (re.compile(r"3-5-haiku|3-haiku|haiku-3"), 2048),
    (re.compile(r"sonnet|opus-4|3-opus"), 1024),
)
_GEMINI_MINIMUMS = ((re.compile(r"gemini-2\.5-pro"), 4096), (re.compile(r"gemini-2\.5-flash"), 2048))


def cache_rule(model: str) -> CacheRule | None:
    """The caching rule of ``model``'s provider, or None where it is unknown (then nothing is assumed cached).

    >>> cache_rule("openai/gpt-4.1").min_tokens, cache_rule("anthropic/claude-haiku-4-5").min_tokens
    (1024, 4096)
    >>> cache_rule("ollama_chat/llama3") is None
    True
    """
    provider = provider_of(model) or ""
    if provider in ("openai", "azure"):
        return _OPENAI
    table = {"anthropic": _CLAUDE_MINIMUMS, "bedrock": _CLAUDE_MINIMUMS,
             "gemini": _GEMINI_MINIMUMS, "vertex_ai": _GEMINI_MINIMUMS}.get(provider)
    if table is None or (provider == "bedrock" and "anthropic." not in model):
        return None
    for pattern, minimum in table:
        if pattern.search(model):
            return CacheRule("explicit" if table is _CLAUDE_MINIMUMS else "auto", minimum)
    return None


def cached_part(rule: CacheRule | None, prefix_tokens: int) -> int:
    """Tokens of a ``prefix_tokens`` stable prefix billed as cached on a hit.

    >>> cached_part(cache_rule("openai/gpt-4o"), 1300), cached_part(cache_rule("openai/gpt-4o"), 409)
    (1280, 0)
    """
    if rule is None or prefix_tokens < rule.min_tokens:
        return 0
    return rule.min_tokens + (prefix_tokens - rule.min_tokens) // rule.granule * rule.granule


def prefix_cost(model: str, prefix_tokens: int, calls: int, *, cold_calls: int = COLD_CALLS,
                hit_rate: float = HIT_RATE) -> float | None:
    """USD the stable prefix costs over ``calls`` calls with the provider's caching (module doc's assumption);
    None when litellm cannot price ``model``."""
    price = rates(model)
    if price is None:
        return None
    rule = cache_rule(model)
    cached = cached_part(rule, prefix_tokens)
    full = prefix_tokens * price["input"]
    if not cached or rule is None:
        return calls * full
    rest = (prefix_tokens - cached) * price["input"]
    # A miss on a marked prefix writes it (at the cache-write rate); an automatic cache charges no premium.
    miss = prefix_tokens * price["cache_write"] if rule.style == "explicit" else full
    hit = cached * price["cache_read"] + rest
    cold = min(calls, cold_calls)
    return cold * miss + (calls - cold) * (hit_rate * hit + (1 - hit_rate) * miss)


def padding_pays(model: str, prefix_tokens: int, calls: int, *, cold_calls: int = COLD_CALLS,
                 hit_rate: float = HIT_RATE) -> int | None:
    """The token length to pad a ``prefix_tokens`` stable prefix to when that is cheaper over ``calls``
    calls; None when it is not, when the prefix is cached already, or when the model's rates or caching are
    unknown.

    Worked example, the ~409-token prefix of the SMS rules over 200 calls. gpt-4.1 ($2.00 in, $0.50 cached
    per million tokens): unpadded 409 x $2.00 = $818 per million calls; padded to 1,045 tokens a hit pays
    1,024 x $0.50 + 21 x $2.00 = $554, a miss 1,045 x $2.00 = $2,090, so 0.9 x 554 + 0.1 x 2,090 = $708 per
    million warm calls: it pays. gpt-4o ($2.50 in, $1.25 cached): 1,024 x $1.25 = $1,280 already exceeds
    409 x $2.50 = $1,023, so it never does.

    >>> padding_pays("openai/gpt-4.1", 409, 200), padding_pays("openai/gpt-4o", 409, 200)
    (1045, None)
    >>> padding_pays("openai/gpt-4.1", 409, 3), padding_pays("openai/gpt-4.1", 1100, 200)
    (None, None)
    """
    rule = cache_rule(model)
    if rule is None or prefix_tokens >= rule.min_tokens or calls <= 0:
        return None
    plain = prefix_cost(model, prefix_tokens, calls, cold_calls=cold_calls, hit_rate=hit_rate)
    padded = prefix_cost(model, rule.pad_target, calls, cold_calls=cold_calls, hit_rate=hit_rate)
    if plain is None or padded is None or padded >= plain:
        return None
    return rule.pad_target


def break_even_hit_rate(model: str, prefix_tokens: int, calls: int, *, cold_calls: int = COLD_CALLS,
                        padded_tokens: int | None = None) -> float | None:
    """The smallest share of warm calls that must hit for padding (to ``padded_tokens``, by default the rule's
    target) to pay over ``calls`` calls (None: never, or unknown), found by bisection on ``prefix_cost``."""
    rule = cache_rule(model)
    if rule is None or prefix_tokens >= rule.min_tokens:
        return None
    padded_to = padded_tokens or rule.pad_target

    def gain(h: float) -> float:
        plain = prefix_cost(model, prefix_tokens, calls, cold_calls=cold_calls, hit_rate=h)
        padded = prefix_cost(model, padded_to, calls, cold_calls=cold_calls, hit_rate=h)
        return (plain or 0.0) - (padded or 0.0)

    if rates(model) is None or gain(1.0) <= 0:
        return None
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if gain(mid) <= 0 else (low, mid)
    return high
