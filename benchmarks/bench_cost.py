"""Cost of labeling: prompt and completion tokens per label (litellm's token counter) and the price of a
1,000-label job at list prices (litellm's cost map): 200 test labels by ``gpt-4o``, 800 training labels by
``gpt-4o-mini``, plus the one rules call.

Prompts are the product's own (``core.llm.labeling.LabelPrompt``, JSON-schema mode) over the first 1,000 SMS texts,
with ``benchmarks/data/example_rules_sms.txt`` standing in for the rules a large model writes (its length is
printed: rules a model writes may be longer or shorter). The reply is a typical
``{"reason": <12 words>, "label": ...}``. No call is made.

Baseline in the same run: ``bootstrapper plan``'s estimate for the same job (``core.run.plan.estimate``), so the
planner's accuracy is checked too. Prompt caching: the rules sit in a stable system-message prefix; the table
says whether that prefix reaches the 1,024 tokens OpenAI needs to cache it (if not, no discount is assumed).

    .venv/bin/python benchmarks/bench_cost.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

from benchmarks.common import append_result, shared_data  # noqa: E402
from core.llm.litellm_edge import litellm_module as _litellm
from core.llm.labeling import LabelPrompt
from core.llm.ledger import cost_of
from core.llm.rules import build_rules_messages
from core.schema import Chunk  # noqa: E402

LARGE, SMALL = "gpt-4o", "gpt-4o-mini"
CLASSES = ["ham", "spam"]
DESC = ("Classify an SMS message: 'spam' is unsolicited commercial or fraudulent messaging; 'ham' is any genuine "
        "personal or service message.")
REPLY = '{"reason": "a friend confirms plans for tonight with no commercial offer", "label": "ham"}'
TARGET_USD = 0.50


def tokens(model: str, messages: list[dict] | None = None, text: str | None = None) -> int:
    ll = _litellm()
    return int(ll.token_counter(model=model, messages=messages) if messages else ll.token_counter(model=model,
                                                                                                      text=text))


def main() -> None:
    rules = (Path(__file__).parent / "data" / "example_rules_sms.txt").read_text()
    prompt = LabelPrompt(CLASSES, rules, "json_schema")
    rows = [json.loads(line) for line in (shared_data() / "sms_spam.jsonl").open(encoding="utf-8")][:1000]
    prefix_tokens = tokens(LARGE, [{"role": "system", "content": prompt.system_message()}])
    out_tokens = tokens(LARGE, text=REPLY)
    total_cost, lines = 0.0, []
    per_stage = []
    rules_in = tokens(LARGE, build_rules_messages(CLASSES, DESC, [r["text"] for r in rows[200:205]]))
    rules_out = tokens(LARGE, text=rules)
    cost, _ = cost_of(LARGE, rules_in, rules_out)
    per_stage.append(("rules", LARGE, 1, rules_in, rules_out, cost))
    for stage, model, subset in (("test_labels", LARGE, rows[:200]), ("train_labels", SMALL, rows[200:])):
        t_in = sum(tokens(model, prompt.messages(r["text"])) for r in subset)
        t_out = out_tokens * len(subset)
        cost, _ = cost_of(model, t_in, t_out)
        per_stage.append((stage, model, len(subset), t_in, t_out, cost))
    total_cost = sum(s[5] for s in per_stage)
    lines += [f"Rules text: {tokens(LARGE, text=rules)} tokens; stable system prefix: {prefix_tokens} tokens "
              f"({'cacheable' if prefix_tokens >= 1024 else 'below the 1,024 tokens OpenAI caches: no discount assumed'});"
              f" reply: {out_tokens} tokens.", "",
              "| stage | model | calls | prompt tokens | completion tokens | per call (in/out) | cost USD |",
              "|---|---|---|---|---|---|---|"]
    for stage, model, calls, t_in, t_out, cost in per_stage:
        lines.append(f"| {stage} | {model} | {calls} | {t_in:,} | {t_out:,} | {t_in / calls:.0f} / {t_out / calls:.0f} |"
                     f" {cost:.4f} |")
    lines.append(f"| **total** | | {sum(s[2] for s in per_stage)} | {sum(s[3] for s in per_stage):,} | "
                 f"{sum(s[4] for s in per_stage):,} | | **{total_cost:.4f}** |")

    from core.run.plan import estimate

    settings = SimpleNamespace(
        classification=SimpleNamespace(classes=CLASSES, desc=DESC),
        training=SimpleNamespace(test_set_size=200, train_set_size=200, train_set_increment=200, max_iters=5),
        api=SimpleNamespace(large_model=LARGE, small_model=SMALL, rules_max_tokens=1500, max_tokens=400),
    )
    chunks = [Chunk(id=str(i), text=r["text"], source="sms", position=i) for i, r in enumerate(rows)]
    plan = estimate(settings, chunks, rules_prompt_tokens=tokens(LARGE, text=rules))
    planned = plan.maximum.totals["cost_usd"] if isinstance(plan.maximum.totals, dict) else plan.maximum.totals.cost_usd
    lines += ["", f"Target: at most ${TARGET_USD:.2f} -> {'met' if total_cost <= TARGET_USD else 'NOT met'} "
              f"(${total_cost:.4f}). Baseline, `bootstrapper plan`'s estimate for the same job: ${planned:.4f} "
              f"(measured / planned = {total_cost / planned:.2f})."]
    table = "\n".join(lines)
    print(table)
    if "--no-write" not in sys.argv:
        append_result("bench_cost", table)


if __name__ == "__main__":
    main()
