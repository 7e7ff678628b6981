"""Run report: state, metrics and the cost ledger rendered as report.md, metrics.json and two PNG plots,
and as report.html (``core.report.html``) from the same metrics.json document.

Pure functions build each piece (``metrics_document``, ``render_report_md``, ``format_status``, and
``learning_curve_png`` / ``confusion_matrix_png``, which live in ``core.report.plots`` and are re-exported here);
``write_report`` is the only function that touches storage.
Nothing here computes a metric or prices a call: it renders what ``State`` (per-iteration ``Metrics`` dicts),
``core.llm.ledger.totals`` and the ingestion and labeling summaries already hold.

The dict inputs, and the keys read from them (any may be missing):
- ``settings_summary``: ``Settings.redacted_dict()``; reads classification.classes,
  system.required_accuracy, api.large_model / api.small_model and path.output.
- ``ingest_report``: top-level numbers are counts (``{"files": 12, "chunks": 900, ...}``), and ``"skipped"``
  is a list of ``SkippedInput.to_dict()`` (``line`` is set for a bad .jsonl line, None for a whole file).
- ``state.counters.predictions``: the final prediction's count (``core.run.final_prediction``
  ``PredictionSummary.to_dict()``: totals per predicted label and per shard, missing shards named), or
  ``{"status": "pending", "shards": N, "jobs": {...}}`` while an array job predicts; absent when nothing counted.
- ``label_summary``: top-level numbers are label counts (``{"test_labels_ok": 195, "test_labels_failed": 5}``)
  and ``"failed_examples"`` is a list of failed ``Label.to_dict()``. Counts whose key ends in ``_failed`` are
  failures; failures of training labels are taken from the iteration records, not from this dict.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from core.llm.ledger import totals as ledger_totals
from core.report.formats import acc_ci, money, pct, seconds, share
from core.report.html import render_report_html, review_rows
from core.report.plots import confusion_matrix_png, learning_curve_png
from core.run import layout
from core.run.state import IterationRecord, State, best_iteration
from core.schema import CallRecord, Metrics

if TYPE_CHECKING:
    from core.storage.backends import Storage

FAILED_SAMPLES = 5
MAX_LINE_SKIPS_SHOWN = 50  # a broken .jsonl can skip thousands of lines; the count is always complete
REPORT_KEY = layout.REPORT
REPORT_HTML_KEY = layout.REPORT_HTML
METRICS_KEY = layout.METRICS
LEARNING_CURVE_KEY = layout.LEARNING_CURVE
CONFUSION_KEY = layout.CONFUSION


@dataclass(frozen=True)
class ReportNotes:
    """What the report says that only the caller knows: where the labels came from, how to fetch and recount.

    Each command is a template the report fills in: ``fetch`` gets ``{src}`` (a folder of the output location)
    and ``{dst}`` (a local folder); ``recount`` gets ``{shards}``. An empty one is left out of the report.
    """

    stand_in_llm: str = ""  # non-empty when the "LLM" was a stand-in: the notice the report shows about it
    fetch: str = ""  # e.g. "aws s3 cp --recursive {src} {dst}" for an s3:// output; empty for a local one
    recount: str = "`bootstrapper report CONFIG`"  # markdown: the command(s) in backticks


def classifier_dir(n: int) -> str:
    return layout.classifier(n)


def _best(state: State) -> int | None:
    return state.best_iteration if state.best_iteration is not None else best_iteration(state.iterations)


def _record(state: State, n: int | None) -> IterationRecord | None:
    return next((it for it in state.iterations if it.n == n), None)


def _required_accuracy(settings_summary: Mapping[str, Any]) -> float | None:
    value = (settings_summary.get("system") or {}).get("required_accuracy")
    return float(value) if value is not None else None


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(map(_cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return lines


def _counts(d: Mapping[str, Any]) -> dict[str, int | float]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def label_failures(state: State, label_summary: Mapping[str, Any]) -> dict[str, Any]:
    """Failed-label counts: per ``*_failed`` count of the summary, per training iteration, and in total."""
    by_count = {k: v for k, v in _counts(label_summary).items() if k.endswith("_failed")}
    training = {str(it.n): it.failed_labels for it in state.iterations}
    return {"by_count": by_count, "training_by_iteration": training,
            "total": int(sum(by_count.values()) + sum(training.values()))}


def metrics_document(state: State, *, settings_summary: Mapping[str, Any], totals: Mapping[str, Any],
                     ingest_report: Mapping[str, Any], label_summary: Mapping[str, Any],
                     notes: ReportNotes = ReportNotes()) -> dict[str, Any]:
    """Everything machine-readable about the run, in one JSON-ready dict."""
    best = _best(state)
    return {
        "status": state.status,
        "step": state.step.value,
        "stop_reason": state.stop_reason,
        "required_accuracy": _required_accuracy(settings_summary),
        "best_iteration": best,
        "best_classifier": classifier_dir(best) if best is not None else None,
        "iterations": [asdict(it) for it in state.iterations],
        "llm": dict(totals),
        "labels_from_oracle": bool(notes.stand_in_llm),
        "ingestion": dict(ingest_report),
        "labels": dict(label_summary),
        "label_failures": label_failures(state, label_summary),
        "predictions": state.counters.predictions,
        "step_seconds": dict(state.step_seconds),
    }


def _status_section(state: State, settings_summary: Mapping[str, Any], stand_in: str) -> list[str]:
    required = _required_accuracy(settings_summary)
    lines = ["# Classifier bootstrapper report", ""]
    status = "finished" if state.status == "done" else f"in progress (step `{state.step.value}`)"
    lines.append(f"- **Status:** {status}, after {len(state.iterations)} training iteration(s).")
    why = state.stop_reason or "it has not stopped yet"
    lines.append(f"- **Why the loop stopped:** {why}")
    classes = (settings_summary.get("classification") or {}).get("classes")
    if classes:
        lines.append(f"- **Classes:** {', '.join(classes)}.")
    if required is not None:
        lines.append(f"- **Required accuracy:** {pct(required)}.")
    api = settings_summary.get("api") or {}
    if api:
        lines.append(f"- **Models:** rules and test labels by `{api.get('large_model')}`, training labels by "
                     f"`{api.get('small_model')}`.")
    lines.append("")
    if stand_in:
        lines += [f"> **The labels in this run did not come from an LLM.** {stand_in}", ""]
    lines.append("Accuracy is agreement with the large model's labels on the held-out test set (95% Wilson "
                 "interval in brackets).")
    if any(it.gold_metrics for it in state.iterations):
        lines.append("The input carried human labels: *gold accuracy* compares with those instead.")
    return [*lines, ""]


def _best_section(state: State, settings_summary: Mapping[str, Any], fetch: str) -> list[str]:
    best = _best(state)
    if best is None:
        return ["## Best classifier", "", "No classifier has been evaluated yet.", ""]
    rec = _record(state, best)
    path = classifier_dir(best)
    output = str((settings_summary.get("path") or {}).get("output") or "OUTPUT").rstrip("/")
    lines = ["## Best classifier", "", f"Iteration {best}: `{path}` in the output location"
             + (f", accuracy {acc_ci(rec.metrics)} on {rec.metrics['n']} test labels." if rec and rec.metrics
                else ".")]
    if fetch:
        local = f"./classifier_{best}"
        lines += ["", f"Copy it locally first: `{fetch.format(src=f'{output}/{path}', dst=local + '/')}`"]
    else:
        local = f"{output}/{path}".rstrip("/")
    lines += ["", "Load it with transformers:", "", "```python", "from transformers import pipeline", "",
              f'clf = pipeline("text-classification", model="{local}", top_k=None)',
              'print(clf("some text to classify"))  # every class with its probability', "```", ""]
    return lines


def _iterations_section(state: State) -> list[str]:
    best = _best(state)
    gold = any(it.gold_metrics for it in state.iterations)
    headers = ["iteration", "new chunks (chosen by)", "training examples", "accuracy (95% CI)", "macro-F1",
               "test n"]
    headers += ["gold accuracy (95% CI)"] if gold else []
    headers += ["train time"]
    rows = []
    for it in state.iterations:
        m = it.metrics
        chosen = f"{it.train_ids} ({it.selection})" if it.selection else it.train_ids
        row: list[Any] = [f"{it.n} (best)" if it.n == best else it.n, chosen, it.train_examples,
                          acc_ci(m) if m else "—", f"{m['macro_f1']:.3f}" if m else "—", m["n"] if m else "—"]
        if gold:
            row.append(acc_ci(it.gold_metrics) + f", n={it.gold_metrics['n']}" if it.gold_metrics else "—")
        row.append(seconds(it.train_seconds))
        rows.append(row)
    if not rows:
        return ["## Iterations", "", "No training iteration has run yet.", ""]
    return ["## Iterations", "", *_table(headers, rows), ""]


def _best_details_section(state: State) -> list[str]:
    rec = _record(state, _best(state))
    if rec is None or not rec.metrics:
        return []
    m = Metrics.from_dict(rec.metrics)
    per_class = [[c, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", s.support]
                 for c, s in m.per_class.items()]
    confusion = [[f"**{true}**", *row] for true, row in zip(m.labels, m.confusion)]
    return ["## Per-class scores of the best classifier", "",
            *_table(["class", "precision", "recall", "F1", "support"], per_class), "",
            "Confusion matrix (rows: test label, columns: prediction):", "",
            *_table(["label \\ predicted", *m.labels], confusion), ""]


def _spend_section(totals: Mapping[str, Any]) -> list[str]:
    overall = totals.get("overall")
    if not overall or not overall.get("calls"):
        return ["## LLM spend", "", "No LLM calls recorded.", ""]
    headers = ["calls", "cache hits", "failures", "tokens in", "tokens out", "cost"]

    def rows(group: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
        return [[name, b["calls"], b["cache_hits"], b["failures"], b["tokens_in"], b["tokens_out"], money(b)]
                for name, b in group.items()]

    lines = ["## LLM spend", "", *_table(["model", *headers], rows(totals.get("by_model", {}))), "",
             *_table(["stage", *headers], rows(totals.get("by_stage", {}))), "",
             f"Total: {overall['calls']} calls ({overall['cache_hits']} served from the cache at no cost), "
             f"{money(overall)}."]
    if overall.get("unknown_cost_models"):
        lines.append(f"\\* litellm's cost map does not price {', '.join(overall['unknown_cost_models'])}: "
                     "those calls are missing from the cost.")
    return [*lines, *_cache_and_retry_lines(totals), ""]


def _net_saving(bucket: Mapping[str, Any]) -> float:
    """The cache's saving less what padding the prefix for it cost (both against the full input rate).

    >>> _net_saving({"cache_saving_usd": 0.5, "padding_cost_usd": 0.2})
    0.3
    """
    return round(bucket.get("cache_saving_usd", 0.0) - bucket.get("padding_cost_usd", 0.0), 10)


def _cache_and_retry_lines(totals: Mapping[str, Any]) -> list[str]:
    """What the provider's prompt cache saved, per model, and the calls asked again for reasons not the label's."""
    overall = totals["overall"]
    lines: list[str] = []
    cached = {m: b for m, b in totals.get("by_model", {}).items()
              if b.get("cached_tokens") or b.get("cache_write_tokens")}
    if cached:
        lines += ["", "Prompt caching (the rules and instructions, the same for every label, read from the provider's "
                  "cache at its cached-input rate):", "",
                  *_table(["model", "input tokens", "read from cache", "written to cache", "saved"],
                          [[m, b["tokens_in"], f"{b['cached_tokens']} ({share(b['cached_tokens'], b['tokens_in'])})",
                            b["cache_write_tokens"], f"${_net_saving(b):.4f}"] for m, b in cached.items()]),
                  "", f"The prompt cache saved ${_net_saving(overall):.4f} against the full input price"
                  + (f", net of ${overall['padding_cost_usd']:.4f} the padding that made the prefix cacheable "
                     "added" if overall.get("padding_cost_usd") else "") + "."]
    if overall.get("cut_off"):
        lines += ["", f"{overall['cut_off']} replies were cut off by the length limit (a reasoning model can spend "
                  "its budget thinking); each without a usable label was asked again once with a larger budget."]
    if overall.get("param_refused"):
        lines += ["", f"{overall['param_refused']} calls were refused for an optional parameter the model does not "
                  "take (such as logprobs); it was dropped for that model and the call asked again, not counted as "
                  "a failure."]
    return lines


def _ingestion_section(ingest_report: Mapping[str, Any]) -> list[str]:
    counts = _counts(ingest_report)
    skipped = list(ingest_report.get("skipped") or [])
    files = [s for s in skipped if s.get("line") is None]
    lines_ = [s for s in skipped if s.get("line") is not None]
    out = ["## Ingestion", ""]
    out += [f"- {k.replace('_', ' ')}: {v}" for k, v in counts.items()] or ["- no counts recorded"]
    out += ["", f"Skipped files: {len(files)}."]
    out += [f"- `{s['source']}`: {s['reason']}" for s in files]
    if lines_:
        out += ["", f"Skipped .jsonl lines: {len(lines_)}."]
        out += [f"- `{s['source']}` line {s['line']}: {s['reason']}" for s in lines_[:MAX_LINE_SKIPS_SHOWN]]
        if len(lines_) > MAX_LINE_SKIPS_SHOWN:
            out.append(f"- … and {len(lines_) - MAX_LINE_SKIPS_SHOWN} more (all listed in metrics.json).")
    decoded = ingest_report.get("decoded_as") or {}
    if decoded:  # files that were not plain UTF-8: a guessed encoding is worth a look
        out += ["", f"Files not in UTF-8: {len(decoded)}."]
        out += [f"- `{k}`: read as {v}" for k, v in list(decoded.items())[:MAX_LINE_SKIPS_SHOWN]]
    return [*out, ""]


def _labels_section(state: State, label_summary: Mapping[str, Any]) -> list[str]:
    failures = label_failures(state, label_summary)
    out = ["## Labels", ""]
    out += [f"- {k.replace('_', ' ')}: {v}" for k, v in _counts(label_summary).items()]
    if failures["training_by_iteration"]:
        out.append("- training labels failed, per iteration: "
                   + ", ".join(f"{n}: {k}" for n, k in failures["training_by_iteration"].items()))
    out += ["", f"Failed labels: {failures['total']}. A failed label is recorded, never guessed, and its chunk "
            "is left out of training and evaluation."]
    if state.best_iteration is not None and state.step.value == "done":
        out += ["", f"To review: `classifiers/review.csv` lists the {state.counters.review_disagreements} test chunks "
                f"where classifier_{state.best_iteration} and the large model disagree, the classifier's most "
                "confident first (where label errors and gaps in the rules show up first); "
                "`classifiers/labels.jsonl` has every label with its model, reason and input."]
    samples = label_summary.get("failed_examples") or []
    if samples:
        out += ["", "First failed labels:", ""]
        for s in samples[:FAILED_SAMPLES]:
            reply = (s.get("raw") or "(no reply)")[:200].replace("`", "'")
            out.append(f"- `{s.get('chunk_id', '?')}` ({s.get('model', '')}: {s.get('error', '')}): "
                       f"reply `{_cell(reply)}`")
    return [*out, ""]


def _predictions_section(state: State, recount: str) -> list[str]:
    p = state.counters.predictions
    out = ["## Final prediction", ""]
    if not p:
        return [*out, "No final prediction is counted in this run: `classification.predict_on_whole_set_at_the_end` "
                "is off, or the prediction runs as shards (`bootstrapper predict CONFIG --shard I/N`); "
                "`bootstrapper report CONFIG` counts them here once they have finished.", ""]
    if p.get("status") == "pending":
        jobs = p.get("jobs") or {}
        return [*out, f"Pending: {p['shards']} shards predict in AWS Batch array job `{jobs.get('array', '?')}`; "
                f"job `{jobs.get('report', '?')}` re-renders this report with their counts once every shard "
                "has succeeded. Batch runs a dependent job only when all its dependencies succeed: if a shard "
                "fails for good, that job fails without running. Then re-run the shard and count again with "
                f"{recount.format(shards=p['shards'])}; the count names any shard still missing.", ""]
    expected = p.get("expected")
    shards = p.get("shards", 1)
    where = f" (in {shards} shards)" if shards > 1 else ""
    out.append(f"{p['predicted']} of the {expected} chunks the loop left unlabeled were predicted{where}."
               if expected is not None else f"{p['predicted']} chunks were predicted{where}.")
    if p.get("status") != "complete":
        out += ["", f"**Incomplete:** {len(p.get('problems') or [])} shard(s) did not deliver; the counts below "
                "cover only the shards found. Re-run each one named here "
                "(`bootstrapper predict CONFIG --shard I/N`), then `bootstrapper report CONFIG`:", ""]
        out += [f"- {_cell(problem)}" for problem in p.get("problems") or []]
    by_label = p.get("by_label") or {}
    total = max(p["predicted"], 1)
    if by_label:
        out += ["", *_table(["predicted label", "chunks", "share"],
                            [[label, n, pct(n / total)] for label, n in by_label.items()])]
    if shards > 1:
        out += ["", *_table(["shard", "file", "predicted", "expected", "status"],
                            [[s["index"], f"`{s['key']}`", s["predicted"], "?" if s["expected"] is None
                              else s["expected"], s["status"]] for s in p.get("per_shard") or []])]
    return [*out, ""]


def _timings_section(state: State) -> list[str]:
    if not state.step_seconds:
        return []
    rows = [[step, seconds(s)] for step, s in state.step_seconds.items()]
    rows.append(["**total**", seconds(sum(state.step_seconds.values()))])
    return ["## Step timings", "", *_table(["step", "time"], rows), ""]


def render_report_md(state: State, *, settings_summary: Mapping[str, Any], totals: Mapping[str, Any],
                     ingest_report: Mapping[str, Any], label_summary: Mapping[str, Any],
                     plot_keys: Iterable[str] = (), notes: ReportNotes = ReportNotes()) -> str:
    parts = [
        *_status_section(state, settings_summary, notes.stand_in_llm),
        *_best_section(state, settings_summary, notes.fetch),
        *_iterations_section(state),
        *_best_details_section(state),
        *_spend_section(totals),
        *_ingestion_section(ingest_report),
        *_labels_section(state, label_summary),
        *_predictions_section(state, notes.recount),
        *_timings_section(state),
    ]
    plot_keys = list(plot_keys)
    if plot_keys:
        parts += ["## Plots", "", *[f"![{k}]({k})\n" for k in plot_keys]]
    return "\n".join(parts)


def format_status(state: State, totals: Mapping[str, Any]) -> str:
    """A few lines for ``bootstrapper status OUTPUT``."""
    lines = [f"status: {state.status}   step: {state.step.value}   iteration: {state.iteration}"]
    for it in state.iterations:
        if it.metrics:
            m = it.metrics
            gold = f", gold {pct(it.gold_metrics['accuracy'])}" if it.gold_metrics else ""
            lines.append(f"  iteration {it.n}: accuracy {acc_ci(m)}, macro-F1 {m['macro_f1']:.3f}, "
                         f"{it.train_examples} training examples{gold}")
        else:
            lines.append(f"  iteration {it.n}: not evaluated yet ({it.train_examples} training examples)")
    best = _best(state)
    lines.append(f"best classifier: {classifier_dir(best) if best is not None else 'none yet'}")
    overall = totals.get("overall") or {}
    if overall.get("calls"):
        unknown = overall.get("unknown_cost_models") or []
        lines.append(f"LLM spend so far: {money(overall).rstrip('*')} over {overall['calls']} calls "
                     f"({overall['cache_hits']} cache hits, {overall['failures']} failures)"
                     + (f"; cost unknown for {', '.join(unknown)}" if unknown else ""))
    else:
        lines.append("LLM spend so far: no calls")
    if state.stop_reason:
        lines.append(f"stopped because: {state.stop_reason}")
    return "\n".join(lines)


def write_report(storage: Storage, state: State, *, settings_summary: dict, ledger_records: list[CallRecord],
                 ingest_report: dict, label_summary: dict, plots: bool = True,
                 notes: ReportNotes = ReportNotes(), padding_cost: Mapping[str, float] | None = None) -> list[str]:
    """Write metrics.json, the PNG plots (when ``plots``), report.md and report.html; returns the keys written.

    ``padding_cost``: per model, what padding the prompt for caching added at the full input rate; the cache's
    saving is shown net of it.
    """
    totals = ledger_totals(ledger_records)
    for model, cost in (padding_cost or {}).items():
        for bucket in (totals["by_model"].get(model), totals["overall"]):
            if bucket is not None:
                bucket["padding_cost_usd"] = round(bucket.get("padding_cost_usd", 0.0) + cost, 10)
    doc = metrics_document(state, settings_summary=settings_summary, totals=totals, ingest_report=ingest_report,
                           label_summary=label_summary, notes=notes)
    storage.write_text(METRICS_KEY, json.dumps(doc, indent=2, ensure_ascii=False))
    pngs: dict[str, bytes] = {}
    if plots:
        curve = learning_curve_png(state, _required_accuracy(settings_summary))
        if curve is not None:
            pngs[LEARNING_CURVE_KEY] = curve
        rec = _record(state, _best(state))
        if rec is not None and rec.metrics:
            pngs[CONFUSION_KEY] = confusion_matrix_png(Metrics.from_dict(rec.metrics),
                                                       f"Classifier {rec.n} vs LLM test labels")
    for key, png in pngs.items():
        storage.write_bytes(key, png)
    storage.write_text(REPORT_KEY, render_report_md(state, settings_summary=settings_summary, totals=totals,
                                                    ingest_report=ingest_report, label_summary=label_summary,
                                                    plot_keys=list(pngs), notes=notes))
    # review.csv is written just before the report by the report step (core.run.exports); absent before that.
    review = review_rows(storage.read_text(layout.REVIEW_CSV)) if storage.exists(layout.REVIEW_CSV) else []
    storage.write_text(REPORT_HTML_KEY, render_report_html(doc, settings_summary=settings_summary, plots=pngs,
                                                           review=review, stand_in=notes.stand_in_llm))
    return [METRICS_KEY, *pngs, REPORT_KEY, REPORT_HTML_KEY]
