"""Cost of labeling per provider family, with and without prompt caching, and whether padding the stable
prefix pays (issue #12).

(A) For each family whose cached rates are in litellm's cost map (OpenAI gpt-4o / gpt-4o-mini, Anthropic
claude-sonnet-4-5 / claude-haiku-4-5, Gemini 2.5 Pro / Flash, Claude Sonnet / Haiku 4.5 on Bedrock), the
1,000-label job (200 test labels by the large model, 800 training labels by the small one, plus the rules
call) is actually run: the product's ``LabelPrompt`` and gateway (``label_many``, 50 workers, response cache,
ledger) through litellm against the oracle stand-in server speaking that provider's protocol, whose simulated
prompt cache follows the provider's rule (OpenAI: automatic, 1,024+ tokens in 128-token steps; Anthropic and
Bedrock: only the ``cache_control``-marked system message, a first call writes it; Gemini: automatic), with the
model's documented minimum (``core.llm.prompt_cache.cache_rule``). Tokens, cached and cache-written tokens
are what the ledger recorded from the usage the server returned: the oracle counts tokens as characters / 4,
so the litellm tokenizer's count of the prefix is shown beside it. Prices are litellm's cost-map list prices
(``core.llm.ledger.cost_of``): "with caching" as the ledger priced each call, "without" the same tokens all at
the input rate. Two prompt variants: ``unpadded`` (the prompt before #12) and ``as shipped``
(``labeling.pad_for_caching``, which pads only where ``padding_pays`` says so). The rules call is priced from
the tokenizer's count (no cache). Baseline in the same run: ``core.run.plan.estimate`` for the same job.

(B) Padding decision: for each model, per 1,000 calls, what the ~409-token prefix costs unpadded and padded
past the minimum (``prompt_cache.prefix_cost``: the first 2 calls miss, then 90% hit), the break-even number of
calls and hit rate, and ``padding_pays``'s answer for 200 calls; for the six OpenAI models the 200 calls are
also run against the oracle, unpadded and padded, and the ledger's price compared.

    .venv/bin/python benchmarks/bench_cost.py [--no-write]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

from benchmarks.common import append_result, shared_data  # noqa: E402
from core.llm.cache import ResponseCache  # noqa: E402
from core.llm.client import Endpoint, LiteLLMClient, LLMOptions  # noqa: E402
from core.llm.gateway import LLMGateway  # noqa: E402
from core.llm.labeling import LabelPrompt, label_many, pad_for_caching, pad_to_tokens, prompt_tokens  # noqa: E402
from core.llm.ledger import Ledger, cost_of, rates, totals  # noqa: E402
from core.llm.litellm_edge import litellm_module  # noqa: E402
from core.llm.prompt_cache import (  # noqa: E402
    COLD_CALLS,
    HIT_RATE,
    break_even_hit_rate,
    cache_rule,
    padding_pays,
    prefix_cost,
)
from core.llm.providers import facts, provider_of  # noqa: E402
from core.llm.rules import build_rules_messages  # noqa: E402
from core.schema import Chunk  # noqa: E402
from core.storage.backends import LocalStorage  # noqa: E402
from core.storage.jsonl_log import LogWriter  # noqa: E402
from oracle.process import OracleHandle, start_oracle  # noqa: E402

CLASSES = ["ham", "spam"]
DESC = ("Classify an SMS message: 'spam' is unsolicited commercial or fraudulent messaging; 'ham' is any genuine "
        "personal or service message.")
AWS = {"aws_access_key_id": "AKIDBENCH", "aws_secret_access_key": "bench-secret", "aws_region_name": "us-east-1"}
FAMILIES = [  # (family, oracle protocol, large model, small model, key)
    ("OpenAI", "openai", "openai/gpt-4o", "openai/gpt-4o-mini", "sk-bench"),
    ("Anthropic", "anthropic", "anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5", "sk-ant-bench"),
    ("Gemini", "gemini", "gemini/gemini-2.5-pro", "gemini/gemini-2.5-flash", "g-bench"),
    ("Bedrock", "bedrock", "bedrock/converse/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
     "bedrock/converse/us.anthropic.claude-haiku-4-5-20251001-v1:0", None),
]
PADDING_MODELS = ["openai/gpt-4o", "openai/gpt-4o-mini", "openai/gpt-4.1", "openai/gpt-4.1-mini", "openai/gpt-5",
                  "openai/gpt-5-mini", "anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5",
                  "gemini/gemini-2.5-pro", "gemini/gemini-2.5-flash"]
TEST_CALLS, TRAIN_CALLS = 200, 800
WORKERS = 50


def has_cached_rate(model: str) -> bool:
    try:
        return bool(litellm_module().get_model_info(model=model).get("cache_read_input_token_cost"))
    except Exception:  # noqa: BLE001
        return False


class Servers:
    """One oracle per (protocol, cache minimum): the simulated cache takes one minimum per server."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.started = workdir, {}  # type: ignore[var-annotated]

    def get(self, protocol: str, model: str) -> OracleHandle:
        rule = cache_rule(model)
        key = (protocol, rule.min_tokens if rule else None)
        if key not in self.started:
            self.started[key] = start_oracle(shared_data() / "sms_spam.jsonl", self.workdir, protocol=protocol,
                                             latency_ms=0, noise=0.1, cache_min_tokens=key[1])
        return self.started[key]

    def stop(self) -> None:
        for handle in self.started.values():
            handle.stop()


def run_stage(handle: OracleHandle, model: str, key: str | None, prompt: LabelPrompt, texts: list[str],
              stage: str) -> dict[str, Any]:
    """Label ``texts`` through the product's gateway against ``handle``; the ledger's bucket for the stage."""
    storage = LocalStorage(Path(tempfile.mkdtemp(prefix="bench-cost-")))
    ledger = Ledger(storage, "ledger/", flush_interval_s=0)
    gateway = LLMGateway(LiteLLMClient(LLMOptions(concurrency_limit=WORKERS, max_retries=2, timeout_s=30)),
                         ResponseCache(storage), ledger)
    params = dict(AWS) if provider_of(model) == "bedrock" else {}
    endpoint = Endpoint(model, handle.base_url, key, params=params, mark_cache=facts(model).marks_cache)
    chunks = [Chunk(id=f"{stage}{i}", text=t, source="sms", position=i) for i, t in enumerate(texts)]
    labels = asyncio.run(label_many(gateway, endpoint, prompt, chunks, stage=stage, sink=LogWriter(storage, "labels/"),
                                    workers=WORKERS, max_tokens=400, temperature=0.0, logprobs=True))
    ledger.flush()
    bucket = totals(ledger.load_all())["by_stage"][stage]
    bucket["ok"] = sum(lab.ok for lab in labels)
    bucket["no_cache_usd"] = cost_of(model, bucket["tokens_in"], bucket["tokens_out"])[0]
    ledger.close()
    return bucket


def plan_usd(large: str, small: str, rows: list[dict[str, str]], rules_tokens: int) -> float:
    from core.run.plan import estimate

    settings = SimpleNamespace(
        classification=SimpleNamespace(classes=CLASSES, desc=DESC),
        training=SimpleNamespace(test_set_size=TEST_CALLS, train_set_size=200, train_set_increment=200, max_iters=5),
        api=SimpleNamespace(large_model=large, small_model=small, rules_max_tokens=1500, max_tokens=400),
    )
    chunks = [Chunk(id=str(i), text=r["text"], source="sms", position=i) for i, r in enumerate(rows)]
    plan = estimate(settings, chunks, rules_prompt_tokens=rules_tokens)  # type: ignore[arg-type]
    return float(plan.maximum.totals["cost_usd"])


def family_rows(servers: Servers, rows: list[dict[str, str]], base: LabelPrompt, rules: str) -> list[str]:
    test_texts = [r["text"] for r in rows[:TEST_CALLS]]
    train_texts = [r["text"] for r in rows[TEST_CALLS:TEST_CALLS + TRAIN_CALLS]]
    out = ["| family | prompt | test / train model | prefix tokens, tokenizer (oracle) | prompt / completion "
           "tokens per label, test; train | cached share of input (test; train) | cache-written tokens | labels ok | rules USD | "
           "USD without caching | USD with caching | plan estimate USD |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for family, protocol, large, small, key in FAMILIES:
        if not (has_cached_rate(large) and has_cached_rate(small)):
            skipped.append(family)
            continue
        rules_in = int(litellm_module().token_counter(
            model=large, messages=build_rules_messages(CLASSES, DESC, [r["text"] for r in rows[200:205]])))
        rules_out = int(litellm_module().token_counter(model=large, text=rules))
        rules_usd = cost_of(large, rules_in, rules_out)[0]
        prompt = LabelPrompt(CLASSES, rules, "json_schema", mark_cache=facts(large).marks_cache)
        measured: dict[tuple[str, int], dict[str, Any]] = {}
        for variant in ("unpadded", "as shipped"):
            stages = []
            for model, texts, stage in ((large, test_texts, "test_labels"), (small, train_texts, "train_labels")):
                p = prompt if variant == "unpadded" else pad_for_caching(prompt, model, TEST_CALLS)
                if (model, p.pad_blocks) not in measured:  # the same prompt again would find the oracle's cache warm
                    measured[(model, p.pad_blocks)] = run_stage(servers.get(protocol, model), model, key, p, texts,
                                                                stage)
                sys_text = p.system_message()
                stages.append((model, p, measured[(model, p.pad_blocks)], prompt_tokens(model, sys_text),
                               -(-len(sys_text) // 4)))
            t_in = sum(s[2]["tokens_in"] for s in stages)
            cached = sum(s[2]["cached_tokens"] for s in stages)
            shares = "; ".join(f"{s[2]['cached_tokens'] / s[2]['tokens_in']:.0%}" for s in stages)
            written = sum(s[2]["cache_write_tokens"] for s in stages)
            without = rules_usd + sum(s[2]["no_cache_usd"] for s in stages)
            with_cache = rules_usd + sum(s[2]["cost_usd"] for s in stages)
            per_label = "; ".join(f"{s[2]['tokens_in'] / s[2]['calls']:.0f} / {s[2]['tokens_out'] / s[2]['calls']:.0f}"
                                  for s in stages)
            prefixes = " / ".join(f"{s[3]} ({s[4]})" + (f" padded x{s[1].pad_blocks}" if s[1].pad_blocks else "")
                                  for s in stages)
            out.append(f"| {family} | {variant} | `{large.split('/')[-1]}` / `{small.split('/')[-1]}` | {prefixes} | "
                       f"{per_label} | {cached / t_in:.1%} ({shares}) | {written:,} | {sum(s[2]['ok'] for s in stages)} | "
                       f"{rules_usd:.4f} | {without:.4f} | **{with_cache:.4f}** | "
                       f"{plan_usd(large, small, rows, rules_out):.4f} |")
    if skipped:
        out.append(f"\nLeft out (no cached rate in litellm's cost map): {', '.join(skipped)}.")
    return out


def break_even_calls(model: str, prefix: int, target: int, hit_rate: float) -> int | None:
    for n in range(1, 5001):
        plain = prefix_cost(model, prefix, n, hit_rate=hit_rate)
        padded = prefix_cost(model, target, n, hit_rate=hit_rate)
        if plain is not None and padded is not None and padded < plain:
            return n
    return None


def padding_rows(servers: Servers, rows: list[dict[str, str]], rules: str) -> list[str]:
    texts = [r["text"] for r in rows[:TEST_CALLS]]
    out = ["| model | in / cached USD per M | min tokens | prefix tokens | padded to | unpadded USD per 1k calls | "
           "padded USD per 1k calls (all hit / 90% hit) | break-even calls (all hit / 90%) | break-even hit rate "
           "(200 calls) | padding_pays(200 calls) | measured on the oracle, 200 calls: unpadded -> padded USD, "
           "cached share |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in PADDING_MODELS:
        price, rule = rates(model), cache_rule(model)
        if price is None or rule is None:
            continue
        prompt = LabelPrompt(CLASSES, rules, "json_schema", mark_cache=facts(model).marks_cache)
        prefix = prompt_tokens(model, prompt.system_message())
        target = rule.pad_target
        padded_tokens = prompt_tokens(model, pad_to_tokens(prompt, model, target).system_message())
        plain_1k = prefix_cost(model, prefix, 1000) or 0.0
        all_hit = prefix_cost(model, padded_tokens, 1000, hit_rate=1.0) or 0.0
        most_hit = prefix_cost(model, padded_tokens, 1000) or 0.0
        even = [break_even_calls(model, prefix, padded_tokens, h) for h in (1.0, HIT_RATE)]
        even_h = break_even_hit_rate(model, prefix, TEST_CALLS, padded_tokens=padded_tokens)
        decision = padding_pays(model, prefix, TEST_CALLS)
        measured = ""
        if provider_of(model) == "openai":
            plain_run = run_stage(servers.get("openai", model), model, "sk-bench", prompt, texts, "plain")
            pad_run = run_stage(servers.get("openai", model), model, "sk-bench",
                                pad_to_tokens(prompt, model, target), texts, "padded")
            measured = (f"{plain_run['cost_usd']:.4f} -> {pad_run['cost_usd']:.4f} "
                        f"({pad_run['cost_usd'] / plain_run['cost_usd'] - 1:+.1%}), "
                        f"{pad_run['cached_tokens'] / pad_run['tokens_in']:.0%}")
        out.append(f"| `{model}` | {price['input'] * 1e6:.3f} / {price['cache_read'] * 1e6:.3f} | {rule.min_tokens:,} "
                   f"| {prefix} | {padded_tokens:,} | {plain_1k:.4f} | {all_hit:.4f} / {most_hit:.4f} | "
                   f"{even[0] or 'never'} / {even[1] or 'never'} | {f'{even_h:.0%}' if even_h else 'never'} | "
                   f"{'pad to ' + str(decision) if decision else 'no'} | {measured or '—'} |")
    return out


def main() -> None:
    started = time.perf_counter()
    rules = (Path(__file__).parent / "data" / "example_rules_sms.txt").read_text()
    rows = [json.loads(line) for line in (shared_data() / "sms_spam.jsonl").open(encoding="utf-8")][:1000]
    servers = Servers(Path(tempfile.mkdtemp(prefix="bench-cost-oracle-")))
    try:
        a = family_rows(servers, rows, LabelPrompt(CLASSES, rules, "json_schema"), rules)
        b = padding_rows(servers, rows, rules)
    finally:
        servers.stop()
    lines = [
        f"Labeler: the product's `LabelPrompt` (JSON-schema mode, the rules in `benchmarks/data/example_rules_sms.txt`) "
        f"and gateway (`label_many`, {WORKERS} workers) through litellm against the oracle stand-in server (answers "
        "from human labels, 10% noise, 0 ms latency) speaking each provider's protocol, its simulated prompt cache "
        "set to the model's documented minimum. Tokens are the usage the server returned (characters / 4), as the "
        "ledger recorded it; prices are litellm's cost-map list prices (not a bill). 200 test labels by the large "
        "model, 800 training labels by the small one, plus the rules call (tokenizer-counted, uncached). "
        "'as shipped' = `labeling.pad_for_caching` (pads only where `prompt_cache.padding_pays` says it pays over "
        "200 calls).", "", "(A) Price of the 1,000-label job per provider family:", "", *a, "",
        f"(B) Padding the stable prefix past the provider's minimum (assumption in `prompt_cache.prefix_cost`: the "
        f"first {COLD_CALLS} calls miss, then {HIT_RATE:.0%} of calls hit; a marked-prefix miss pays the "
        "1.25x write). Prefix and padded lengths are litellm's tokenizer counts; per 1k calls = the prefix's "
        "share of the bill only:", "", *b, "",
        f"Wall time {time.perf_counter() - started:.0f} s.",
    ]
    table = "\n".join(lines)
    print(table)
    if "--no-write" not in sys.argv:
        append_result("bench_cost", table)


if __name__ == "__main__":
    main()
