"""``bootstrapper plan``: how many LLM calls, tokens and dollars a run will take, before any is spent.

Counts the calls the pipeline makes (one rules call and the test labels on the large model, training labels on
the small one), sizes each prompt from the real prompt builders in ``core.llm.rules`` and ``core.llm.labeling`` plus
the mean chunk length, and prices the tokens with litellm's cost map. Two scenarios bound the spend: *min*
stops after the first iteration, *max* runs every iteration. Each label stage is priced twice: at the full
input rate, and as the run will pay it with the provider's prompt caching (``core.llm.prompt_cache``: the
stable system prefix, padded past the provider's minimum where ``padding_pays`` says so, read at the cached
rate). It makes no call and reads no storage; the numbers are an estimate, and every assumption behind them
is listed in ``PlanEstimate.assumptions``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from core.errors import NoUsableChunks
from core.llm.labeling import LabelPrompt
from core.llm.ledger import cost_of
from core.llm.prompt_cache import HIT_RATE, cache_rule, padding_pays, prefix_cost
from core.llm.rules import build_rules_messages
from core.run.splits import test_size_for
from core.schema import Chunk

if TYPE_CHECKING:
    from core.config import Settings

LABEL_TOKENS_OUT = 60  # a JSON reason sentence plus the label
RULES_SAMPLES = 5  # sample chunks shown to the rules prompt
TOKEN_SAMPLE = 1000  # chunks measured for the mean length; enough for a stable mean, fast on any input
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators per chat message
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    model: str
    calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: float  # every input token at the full rate
    cost_known: bool
    # With the provider's prompt caching, as the run sends it (the prefix padded where that pays); equal to
    # cost_usd where nothing is cached.
    cached_cost_usd: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    stages: tuple[StageEstimate, ...]

    @property
    def totals(self) -> dict[str, Any]:
        return {
            "calls": sum(s.calls for s in self.stages),
            "tokens_in": sum(s.tokens_in for s in self.stages),
            "tokens_out": sum(s.tokens_out for s in self.stages),
            "cost_usd": sum(s.cost_usd for s in self.stages),
            "cost_known": all(s.cost_known for s in self.stages),
            "cached_cost_usd": sum(s.cached_cost_usd for s in self.stages),
        }


@dataclass(frozen=True)
class PlanEstimate:
    n_chunks: int
    minimum: Scenario  # stops after iteration 1
    maximum: Scenario  # runs all training.max_iters iterations
    assumptions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_chunks": self.n_chunks,
            **{sc.name: {"stages": [asdict(s) for s in sc.stages], "totals": sc.totals}
               for sc in (self.minimum, self.maximum)},
            "assumptions": list(self.assumptions),
        }


def label_counts(n_chunks: int, test_set_size: int, train_set_size: int, train_set_increment: int,
                 max_iters: int) -> tuple[int, int, int]:
    """``(test, train_min, train_max)`` label calls; the test set is held out of the training pool.

    >>> label_counts(1000, 200, 200, 100, 5)
    (200, 200, 600)
    >>> label_counts(300, 200, 200, 100, 5)
    (150, 150, 150)
    """
    test = test_size_for(n_chunks, test_set_size)
    pool = n_chunks - test
    wanted_max = train_set_size + (max_iters - 1) * train_set_increment
    return test, min(train_set_size, pool), min(wanted_max, pool)


def even_sample(items: list[Chunk], k: int) -> list[Chunk]:
    """Up to ``k`` items spread evenly over the list (deterministic, covers every source in order)."""
    if len(items) <= k:
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


class _TokenCounter:
    """Tokens per model: litellm's tokenizer for models in its cost map, characters/4 otherwise."""

    def __init__(self) -> None:
        self.fallback_models: set[str] = set()
        self._known: dict[str, bool] = {}

    def __call__(self, model: str, text: str) -> int:
        if model not in self._known:
            self._known[model] = cost_of(model, 0, 0)[1]
        if model not in self.fallback_models and self._known[model]:
            from core.llm.litellm_edge import litellm_module

            try:
                return int(litellm_module().token_counter(model=model, text=text))
            except Exception:  # noqa: BLE001 - tokenizers that need a download fail offline, variously
                pass
        self.fallback_models.add(model)
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def messages(self, model: str, messages: list[dict[str, str]]) -> int:
        return sum(self(model, m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def _stage(stage: str, model: str, calls: int, in_per_call: float, out_per_call: float,
           prefix: CachedPrefix | None = None) -> StageEstimate:
    tokens_in = round(calls * in_per_call)
    tokens_out = round(calls * out_per_call)
    cost, known = cost_of(model, tokens_in, tokens_out)
    cached = cost
    if prefix is not None and calls:
        # The run's prompt: the prefix as sent (padded or not) under the cache, the rest at the full rate.
        rest, _ = cost_of(model, round(calls * (in_per_call - prefix.tokens)), tokens_out)
        priced = prefix_cost(model, prefix.sent, calls)
        cached = rest + priced if priced is not None else cost
    return StageEstimate(stage, model, calls, tokens_in, tokens_out, cost, known, cached)


@dataclass(frozen=True)
class CachedPrefix:
    """A label stage's stable system prefix: its tokens, and the tokens sent once padded (== tokens unpadded)."""

    tokens: int
    sent: int

    @classmethod
    def of(cls, model: str, tokens: int, padding_calls: int) -> CachedPrefix:
        """Padded as ``core.llm.labeling.pad_for_caching`` pads it (over a test set's worth of calls).

        >>> CachedPrefix.of("openai/gpt-4.1", 409, 200), CachedPrefix.of("openai/gpt-4o", 409, 200)
        (CachedPrefix(tokens=409, sent=1045), CachedPrefix(tokens=409, sent=409))
        """
        return cls(tokens, padding_pays(model, tokens, padding_calls) or tokens)


def _caching_note(model: str, prefix: CachedPrefix) -> str:
    rule = cache_rule(model)
    if rule is None:
        return f"{model}: no prompt caching assumed (its provider's caching is not known here)"
    if prefix.sent >= rule.min_tokens:
        padded = (f", padded to ~{prefix.sent} tokens because the cached rate makes that cheaper (the run decides "
                  "again from the real rules' length)" if prefix.sent > prefix.tokens else "")
        return (f"{model}: the ~{prefix.tokens}-token system prefix is cached{padded} (the provider caches "
                f"{rule.min_tokens}+ tokens); 'with caching' assumes {HIT_RATE:.0%} of warm calls hit it")
    return (f"{model}: the ~{prefix.tokens}-token system prefix is below the provider's {rule.min_tokens}-token "
            "caching minimum, and padding it would not pay: not cached (the run decides again from the real "
            "rules' length)")


def estimate(settings: Settings, chunks: list[Chunk], rules_prompt_tokens: int | None = None) -> PlanEstimate:
    """Calls, tokens and cost of a fresh run over ``chunks`` (nothing in the cache yet).

    ``rules_prompt_tokens`` is the length of the written rules when known (a resumed run has them);
    otherwise half of ``api.rules_max_tokens`` is assumed.
    """
    if not chunks:
        raise NoUsableChunks("nothing to plan: the input produced no chunks")
    api, training, cls = settings.api, settings.training, settings.classification
    count = _TokenCounter()
    rules_tokens = rules_prompt_tokens if rules_prompt_tokens is not None else api.rules_max_tokens // 2
    label_out = min(LABEL_TOKENS_OUT, api.max_tokens)
    measured = even_sample(chunks, TOKEN_SAMPLE)

    prompt = LabelPrompt(classes=list(cls.classes), rules="", format_mode="json_schema")

    def label_in(model: str) -> float:
        # The real label prompt with empty rules and text, plus the schema the provider also reads.
        scaffold = count.messages(model, prompt.messages("")) + count(model, json.dumps(prompt.response_format()))
        mean_chunk = sum(count(model, c.text) for c in measured) / len(measured)
        return scaffold + rules_tokens + mean_chunk

    def prefix_of(model: str, padding_calls: int) -> CachedPrefix:
        return CachedPrefix.of(model, count(model, prompt.system_message()) + rules_tokens, padding_calls)

    samples = [c.text for c in even_sample(chunks, RULES_SAMPLES)]
    rules_in = count.messages(api.large_model, build_rules_messages(list(cls.classes), cls.desc, samples))
    test, train_min, train_max = label_counts(len(chunks), training.test_set_size, training.train_set_size,
                                              training.train_set_increment, training.max_iters)
    large_label_in = label_in(api.large_model)
    small_label_in = label_in(api.small_model)
    # The run pads (or not) by the test set's size, for both models: see steps.label_prompt.
    prefixes = {m: prefix_of(m, test) for m in (api.large_model, api.small_model)}
    rules = _stage("rules", api.large_model, 1, rules_in, rules_tokens)
    test_stage = _stage("test_labels", api.large_model, test, large_label_in, label_out, prefixes[api.large_model])

    def scenario(name: str, train_calls: int) -> Scenario:
        train = _stage("train_labels", api.small_model, train_calls, small_label_in, label_out,
                       prefixes[api.small_model])
        return Scenario(name, (rules, test_stage, train))

    return PlanEstimate(
        n_chunks=len(chunks),
        minimum=scenario("min", train_min),
        maximum=scenario("max", train_max),
        assumptions=(*_assumptions(settings, len(chunks), len(measured), rules_prompt_tokens, rules_tokens,
                                   label_out, count.fallback_models),
                     *(_caching_note(m, p) for m, p in sorted(prefixes.items()))),
    )


def _assumptions(settings: Settings, n_chunks: int, n_measured: int, given_rules: int | None,
                 rules_tokens: int, label_out: int, fallback_models: set[str]) -> list[str]:
    training = settings.training
    notes = [
        f"{n_chunks} chunks; the test set ({training.test_set_size} wanted) is held out, so training labels "
        f"are capped at the chunks left over",
        "min: the run reaches the required accuracy after iteration 1; max: all "
        f"{training.max_iters} iterations run ({training.train_set_size} + "
        f"{training.max_iters - 1} x {training.train_set_increment} training labels wanted)",
        (f"written rules are {given_rules} tokens (given)" if given_rules is not None else
         f"written rules are ~{rules_tokens} tokens (half of api.rules_max_tokens)"),
        f"rules prompt shows {RULES_SAMPLES} sample chunks; each label reply is ~{label_out} tokens",
        f"chunk length is the mean over {n_measured} of {n_chunks} chunks, evenly spaced",
        "excludes the one fresh retry of an unusable reply and provider-side retries; a resumed run pays "
        "only for calls not already in the response cache",
    ]
    models = sorted({settings.api.large_model, settings.api.small_model})
    for model in models:
        if not cost_of(model, 0, 0)[1]:
            notes.append(f"{model}: not in litellm's cost map, so its cost is shown as 0 (unknown)")
    for model in sorted(fallback_models):
        notes.append(f"{model}: tokens estimated as characters/{CHARS_PER_TOKEN} (no tokenizer available)")
    return notes


def _money(value: float, known: bool) -> str:
    return f"{value:.4f}" if known else "unknown"


def format_plan(est: PlanEstimate) -> str:
    """A fixed-width table of both scenarios, then the assumptions, for the CLI."""
    header = ("scenario", "stage", "model", "calls", "tokens in", "tokens out", "cost USD", "with caching")
    rows: list[tuple[str, ...]] = []
    for sc in (est.minimum, est.maximum):
        for s in sc.stages:
            rows.append((sc.name, s.stage, s.model, f"{s.calls:,}", f"{s.tokens_in:,}", f"{s.tokens_out:,}",
                         _money(s.cost_usd, s.cost_known), _money(s.cached_cost_usd, s.cost_known)))
        t = sc.totals
        prefix = "" if t["cost_known"] else ">= "
        rows.append((sc.name, "TOTAL", "", f"{t['calls']:,}", f"{t['tokens_in']:,}", f"{t['tokens_out']:,}",
                     f"{prefix}{t['cost_usd']:.4f}", f"{prefix}{t['cached_cost_usd']:.4f}"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {3, 4, 5, 6, 7}

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) if i in numeric else v.ljust(w)
                         for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    out = [f"Plan for {est.n_chunks:,} chunks (estimate; min = stops after iteration 1, max = all iterations)",
           line(header), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    saving = est.maximum.totals["cost_usd"] - est.maximum.totals["cached_cost_usd"]
    if saving >= 0.00005:  # what the table's 4 decimals show; below that it is float noise
        out += ["", f"Prompt caching saves ~${saving:.4f} of the max scenario (see the assumptions)."]
    out += ["", "Assumptions:"] + [f"- {a}" for a in est.assumptions]
    return "\n".join(out)
