"""report.html: the run report as one self-contained page, for a person rather than a diff.

It shows the key figures, the learning curve, the best classifier's per-class scores and confusion matrix, the
LLM spend, and the first disagreements of ``classifiers/review.csv`` (the classifier's most confident first, the
file's own order). Everything comes from what report.md is rendered from: ``render.metrics_document``'s dict
(what metrics.json holds), the PNG bytes ``render.write_report`` drew, and the review file's rows; numbers are
worded by ``core.report.formats``, as in report.md.

The page needs nothing but itself, so it opens the same from a local folder, an S3 download or a mail: images
are ``data:`` URIs, the style is inline, and there are no external scripts, styles or fonts. Every value is
escaped with ``html.escape``. One inline script records on ``<html>``, once the page has loaded, how many of its
images decoded (``data-images-loaded="2/2"``), so a headless browser can tell a broken image from a good one.

Does not: read or write storage (``render.write_report`` does), compute a metric, or repeat what only report.md
needs (ingestion, failed labels, the final prediction's shards, step timings, how to load the classifier).
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from core.report.formats import acc_ci, money, pct
from core.run import layout

REVIEW_SHOWN = 20
REVIEW_TEXT_CHARS = 300  # the whole text is in review.csv

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;max-width:1100px;margin:2em auto;
padding:0 1em}
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #d8dce3;padding-bottom:.2em}
.figures{display:flex;flex-wrap:wrap;gap:.8em;margin:1.2em 0}
.figures div{border:1px solid #d8dce3;border-radius:6px;padding:.6em 1em;min-width:10em;background:#f7f8fa}
.figures dt{font-size:.8em;color:#5a6272;text-transform:uppercase;letter-spacing:.04em}
.figures dd{margin:0;font-size:1.35em;font-weight:600}.figures small{display:block;font-weight:400;font-size:.6em}
table{border-collapse:collapse;margin:.8em 0}th,td{border:1px solid #d8dce3;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.diag{background:#e3efe3;font-weight:600}img{max-width:100%;height:auto}
.notice{border-left:4px solid #c77700;background:#fff6e6;padding:.6em 1em}.review td.text{max-width:32em}
"""

# Runs once the page (and so every data: image) has loaded; the browser test reads the attribute back.
IMAGES_SCRIPT = """addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  document.documentElement.dataset.imagesLoaded = `${loaded}/${images.length}`;
});"""


def review_rows(csv_text: str) -> list[dict[str, str]]:
    """The rows of a ``review.csv`` (``core.run.exports.review_csv``), in the file's order.

    >>> review_rows('id,llm_label,text\\nc1,ham,"two\\nlines"\\n')
    [{'id': 'c1', 'llm_label': 'ham', 'text': 'two\\nlines'}]
    """
    return list(csv.DictReader(io.StringIO(csv_text)))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str) -> str:
    """An HTML table; numbers right-aligned, a cell given as ``(value, css class)`` gets that class."""
    def cell(value: Any) -> str:
        value, css = value if isinstance(value, tuple) else (value, "num" if isinstance(value, (int, float)) else "")
        attr = f' class="{css}"' if css else ""
        return f"<td{attr}>{escape(str(value))}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(map(cell, row)) + "</tr>\n" for row in rows)
    return f'<table class="{escape(cls)}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>'


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return "<p>No plot: plots are turned off, or nothing has been evaluated yet.</p>"
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{escape(alt)}">'


def _best(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((it for it in doc.get("iterations") or [] if it["n"] == doc.get("best_iteration")), None)


def _figure(label: str, value: str, note: str = "") -> str:
    small = f"<small>{escape(note)}</small>" if note else ""
    return f"<div><dt>{escape(label)}</dt><dd>{escape(value)}{small}</dd></div>"


def _header(doc: Mapping[str, Any], settings_summary: Mapping[str, Any], stand_in: str) -> list[str]:
    status = "finished" if doc.get("status") == "done" else f"in progress (step {doc.get('step')})"
    items = [f"<b>Status:</b> {escape(status)}, after {len(doc.get('iterations') or [])} training iteration(s).",
             f"<b>Why the loop stopped:</b> {escape(doc.get('stop_reason') or 'it has not stopped yet')}"]
    classes = (settings_summary.get("classification") or {}).get("classes")
    if classes:
        items.append(f"<b>Classes:</b> {escape(', '.join(classes))}.")
    if doc.get("required_accuracy") is not None:
        items.append(f"<b>Required accuracy:</b> {pct(doc['required_accuracy'])}.")
    api = settings_summary.get("api") or {}
    if api:
        items.append(f"<b>Models:</b> rules and test labels by <code>{escape(str(api.get('large_model')))}</code>, "
                     f"training labels by <code>{escape(str(api.get('small_model')))}</code>.")
    out = ["<h1>Classifier bootstrapper report</h1>", "<ul>", *[f"<li>{i}</li>" for i in items], "</ul>"]
    if stand_in:
        out.append(f'<p class="notice"><b>The labels in this run did not come from an LLM.</b> {escape(stand_in)}</p>')
    return out


def _figures(doc: Mapping[str, Any], disagreements: int) -> list[str]:
    best, overall = _best(doc), (doc.get("llm") or {}).get("overall") or {}
    cards = []
    if best and best.get("metrics"):
        m = best["metrics"]
        cards += [_figure("Best classifier", f"classifier_{best['n']}", f"of {len(doc['iterations'])} iterations"),
                  _figure("Accuracy", acc_ci(m), f"vs the large model's labels, {m['n']} test chunks, 95% CI"),
                  _figure("Macro-F1", f"{m['macro_f1']:.3f}")]
        if best.get("gold_metrics"):
            g = best["gold_metrics"]
            cards.append(_figure("Gold accuracy", acc_ci(g), f"vs the input's human labels, n={g['n']}"))
    else:
        cards.append(_figure("Best classifier", "none yet"))
    if overall.get("calls"):
        cards.append(_figure("LLM spend", money(overall), f"{overall['calls']} calls, {overall['cache_hits']} from "
                             "the cache"))
    cards.append(_figure("To review", str(disagreements), "test chunks where classifier and large model disagree"))
    return ['<dl class="figures">', *cards, "</dl>"]


def _learning_curve(doc: Mapping[str, Any], png: bytes | None) -> list[str]:
    rows = []
    for it in doc.get("iterations") or []:
        m, g = it.get("metrics"), it.get("gold_metrics")
        rows.append([f"{it['n']} (best)" if it["n"] == doc.get("best_iteration") else it["n"],
                     it["train_examples"], acc_ci(m) if m else "—", (f"{m['macro_f1']:.3f}" if m else "—", "num"),
                     acc_ci(g) if g else "—"])
    table = _table(["iteration", "training examples", "accuracy (95% CI)", "macro-F1", "gold accuracy (95% CI)"],
                   rows, "iterations") if rows else "<p>No training iteration has run yet.</p>"
    return ["<h2>Learning curve</h2>", _img(png, "learning curve: accuracy vs labeled training examples"), table]


def _best_classifier(doc: Mapping[str, Any], png: bytes | None) -> list[str]:
    best = _best(doc)
    if not best or not best.get("metrics"):
        return ["<h2>Best classifier</h2>", "<p>No classifier has been evaluated yet.</p>"]
    m = best["metrics"]
    per_class = [[c, *[(f"{s[k]:.3f}", "num") for k in ("precision", "recall", "f1")], s["support"]]
                 for c, s in m["per_class"].items()]
    confusion = [[(true, ""), *[(n, "num diag" if i == j else "num") for j, n in enumerate(row)]]
                 for i, (true, row) in enumerate(zip(m["labels"], m["confusion"]))]
    return [f"<h2>Best classifier: classifier_{best['n']}</h2>", "<h3>Per-class scores</h3>",
            _table(["class", "precision", "recall", "F1", "support"], per_class, "per-class"),
            "<h3>Confusion matrix</h3><p>Rows: the large model's test label; columns: the classifier's prediction.</p>",
            _table(["label \\ predicted", *m["labels"]], confusion, "confusion"),
            _img(png, f"confusion matrix of classifier_{best['n']}")]


def _spend(llm: Mapping[str, Any]) -> list[str]:
    overall = llm.get("overall") or {}
    if not overall.get("calls"):
        return ["<h2>LLM spend</h2>", "<p>No LLM calls recorded.</p>"]
    headers = ["calls", "cache hits", "failures", "tokens in", "tokens out", "cost"]

    def rows(group: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
        return [[name, b["calls"], b["cache_hits"], b["failures"], b["tokens_in"], b["tokens_out"], (money(b), "num")]
                for name, b in group.items()]

    out = ["<h2>LLM spend</h2>", _table(["model", *headers], rows(llm.get("by_model") or {}), "spend"),
           _table(["stage", *headers], rows(llm.get("by_stage") or {}), "spend"),
           (f'<p class="total">Total: {overall["calls"]} calls ({overall["cache_hits"]} served from the cache at '
            f"no cost), {escape(money(overall))}.</p>")]
    if overall.get("unknown_cost_models"):
        out.append(f"<p>* litellm's cost map does not price {escape(', '.join(overall['unknown_cost_models']))}: "
                   "those calls are missing from the cost.</p>")
    return out


def _confidence(value: str) -> str:
    try:
        return pct(float(value))
    except ValueError:
        return value or "—"


def _review(review: Sequence[Mapping[str, str]]) -> list[str]:
    out = ["<h2>To review: where the classifier and the large model disagree</h2>"]
    if not review:
        return [*out, "<p>No disagreements on the test set (or no classifier yet).</p>"]
    shown = review[:REVIEW_SHOWN]
    rows = [[r.get("id", ""), r.get("llm_label", ""), r.get("classifier_label", ""),
             (_confidence(r.get("classifier_confidence", "")), "num"), r.get("llm_reason", ""),
             (_clip(r.get("text", "")), "text")] for r in shown]
    which = f"All {len(review)}" if len(shown) == len(review) else f"The {len(shown)} of {len(review)}"
    return [*out, (f"<p>{which} disagreements, the classifier's most confident first: where label errors and "
                   "gaps in the rules show up first. All of them are in <code>classifiers/review.csv</code>.</p>"),
            _table(["id", "large model says", "classifier says", "classifier confidence", "large model's reason",
                    "text"], rows, "review")]


def _clip(text: str) -> str:
    return text if len(text) <= REVIEW_TEXT_CHARS else text[:REVIEW_TEXT_CHARS - 1] + "…"


def render_report_html(doc: Mapping[str, Any], *, settings_summary: Mapping[str, Any], plots: Mapping[str, bytes],
                       review: Sequence[Mapping[str, str]] = (), stand_in: str = "") -> str:
    """The page for ``doc`` (``render.metrics_document``); ``plots`` maps a plot's key to its PNG bytes."""
    body = [*_header(doc, settings_summary, stand_in), *_figures(doc, len(review)),
            *_learning_curve(doc, plots.get(layout.LEARNING_CURVE)),
            *_best_classifier(doc, plots.get(layout.CONFUSION)),
            *_spend(doc.get("llm") or {}), *_review(review),
            ("<footer><p>Ingestion, failed labels, the final prediction and step timings are in "
             "<code>report.md</code>; every number here is in <code>metrics.json</code>.</p></footer>")]
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      "<title>Classifier bootstrapper report</title>", f"<style>{STYLE}</style>", "</head>",
                      "<body>", *body, f"<script>{IMAGES_SCRIPT}</script>", "</body>", "</html>", ""])
