"""The report step's gathering: what ``core.report`` renders, collected from the output location and the state.

``render_report`` folds the ledger into ``llm_calls.jsonl`` and hands the state, the settings, the ingestion and
labeling summaries and the handler's notes to ``core.report.write_report``; ``count_predictions`` checks the
final prediction's files against the chunks each shard had to predict; ``write_meta_dataset`` rebuilds the
meta dataset's examples from the cache and the label logs (no call is repeated).

Does not: render anything itself (``core.report``), run the pipeline, or save the state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from core.llm import labeling
from core.llm.client import Endpoint
from core.llm.rules import RulesResult
from core.report import meta_dataset, render
from core.run import final_prediction, layout
from core.run.context import RunContext
from core.run.data import RunData
from core.run.final_prediction import PredictionSummary
from core.run.state import State
from core.schema import CallRecord, LLMReply

log = logging.getLogger("bootstrapper")
FAILED_EXAMPLES = 5


def render_report(ctx: RunContext, state: State) -> list[str]:
    """report.md, metrics.json and the plots for ``state``, through ``core.report.write_report``."""
    records: list[CallRecord] = ctx.ledger.write_combined(layout.LLM_CALLS)
    ingest = json.loads(ctx.output.read_text(layout.INGEST_REPORT))
    label_summary = {**state.counters.labels(), "failed_examples": _failed_examples(ctx)}
    summary = ctx.settings.redacted_dict()
    summary["path"] = {"input": ctx.input.root_uri, "output": ctx.output.root_uri}  # resolved, not as written
    return render.write_report(ctx.output, state, settings_summary=summary, ledger_records=records,
                               ingest_report=ingest, label_summary=label_summary, notes=ctx.notes,
                               padding_cost=padding_cost(ctx, records))


LABEL_STAGES = ("test_labels", "train_labels")


def padding_cost(ctx: RunContext, records: list[CallRecord]) -> dict[str, float]:
    """USD per model that the prompt-cache padding added to the paid label calls, at the full input rate (the
    cache's saving counts the padding's discount, so the report nets this off)."""
    from core.llm.ledger import rates

    if not ctx.output.exists(layout.PROMPT_PADDING):
        return {}
    added = {m: int(v.get("tokens", 0)) for m, v in json.loads(ctx.output.read_text(layout.PROMPT_PADDING)).items()}
    out: dict[str, float] = {}
    for rec in records:
        tokens = added.get(rec.model, 0)
        price = rates(rec.model) if tokens else None
        if price is not None and rec.outcome == "ok" and rec.stage in LABEL_STAGES:
            out[rec.model] = out.get(rec.model, 0.0) + tokens * price["input"]
    return out


def count_predictions(ctx: RunContext, data: RunData, shards: int) -> PredictionSummary:
    """Read the N-shard prediction files and check each against the chunks its shard has to predict."""
    expected = final_prediction.expected_per_shard(data.remaining_ids(), shards)
    return final_prediction.gather(ctx.output, shards, expected)


def record_predictions(state: State, summary: PredictionSummary) -> None:
    state.counters.predicted_chunks = summary.predicted
    state.counters.predictions = summary.to_dict()
    for problem in summary.problems():
        log.warning("final prediction incomplete: %s", problem)


def write_meta_dataset(ctx: RunContext, data: RunData,
                       prompt_for: Callable[[Endpoint], labeling.LabelPrompt]) -> None:
    s = ctx.settings
    examples = meta_dataset.build_meta_examples(
        s.meta_datagen.meta_datagen_keys, s.meta_datagen.meta_datagen_extras, _rules_result(ctx),
        _label_calls(ctx, data, prompt_for), classes=s.classification.classes, desc=s.classification.desc)
    meta_dataset.write_meta_dataset(ctx.output, examples)


def _rules_result(ctx: RunContext) -> RulesResult:
    d = json.loads(ctx.output.read_text(layout.RULES))
    reply = LLMReply(text=d["text"], model=d["model"], tokens_in=0, tokens_out=0, latency_s=0.0, cost_usd=0.0,
                     cost_known=False)
    return RulesResult(text=d["text"], messages=d["messages"], reply=reply)


def _label_calls(ctx: RunContext, data: RunData,
                 prompt_for: Callable[[Endpoint], labeling.LabelPrompt]) -> list[tuple[list[dict], str]]:
    """(messages, raw reply) of every successful label, rebuilt from the label logs: no call is repeated."""
    out: list[tuple[list[dict], str]] = []
    for prefix, endpoint in ((layout.TEST_LABELS, ctx.large), (layout.TRAIN_LABELS, ctx.small)):
        prompt = prompt_for(endpoint)
        for cid, lab in labeling.load_labels(ctx.output, prefix).items():
            if lab.ok and cid in data.chunks:
                answer = json.dumps({"reason": lab.reason, "label": lab.label})
                if prompt.format_mode == "none":
                    answer = f"Reason: {lab.reason}\nFinal label: {lab.label}"
                out.append((prompt.messages(data.chunks[cid].text), answer))
    return out


def _failed_examples(ctx: RunContext, limit: int = FAILED_EXAMPLES) -> list[dict]:
    failed = []
    for prefix in (layout.TEST_LABELS, layout.TRAIN_LABELS):
        failed += [lab.to_dict() for lab in labeling.load_labels(ctx.output, prefix).values() if not lab.ok]
    return failed[:limit]
