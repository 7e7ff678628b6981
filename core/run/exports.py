"""Labels a person can review, written by the report step: every LLM label with its provenance, and the test-set
chunks where the classifier and the large model disagree, most confident disagreements first.

- ``classifiers/test_labels.jsonl``: the large model's usable test labels (the ok rows of
  ``llm_classifications.yaml``, which also lists the failed ones) as JSONL, one object a line, loadable with
  ``datasets.load_dataset("json", ...)``.
- ``classifiers/labels.jsonl``: every usable label of the run, test and training, with ``source`` (``llm_test`` or
  ``llm_train``), the model, its reason and confidence, and the chunk's origin (input key, position, and the
  input record's own metadata, such as a ``.jsonl`` record's other keys).
- ``classifiers/review.csv``: the disagreements, for a spreadsheet. A confident classifier that disagrees with
  the large model is more often right than a hesitant one, so those rows are where label errors and gaps in the
  rules show up first.

Does not: call an LLM, change a label, or decide anything the run does.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from core.llm import labeling
from core.run import layout
from core.run.context import RunContext, load_run_classifier
from core.run.data import RunData
from core.run.state import State
from core.schema import Chunk, Label
from core.storage.jsonl_log import write_jsonl

log = logging.getLogger("bootstrapper")
REVIEW_COLUMNS = ("id", "llm_label", "classifier_label", "classifier_confidence", "llm_label_probability",
                  "llm_reason", "input", "text")


def label_row(chunk: Chunk, lab: Label, source: str) -> dict[str, Any]:
    """One line of ``labels.jsonl``: the label, who gave it and why, and where the text came from.

    >>> row = label_row(Chunk("c1", "Win a prize", "sms.jsonl", 3, {"sender": "x"}),
    ...                 Label("c1", "spam", "ok", "openai/gpt-4o", reason="prize claim"), "llm_test")
    >>> row["label"], row["source"], row["input"], row["metadata"]
    ('spam', 'llm_test', 'sms.jsonl', {'sender': 'x'})
    """
    return {"id": chunk.id, "text": chunk.text, "label": lab.label, "source": source, "model": lab.model,
            "reason": lab.reason, "confidence": lab.confidence, "input": chunk.source, "position": chunk.position,
            "metadata": dict(chunk.metadata)}


def disagreements(ids: Sequence[str], llm: Mapping[str, str], predicted: Sequence[str],
                  probs: Sequence[Sequence[float]], classes: Sequence[str]) -> list[tuple[str, str, float]]:
    """``(id, classifier label, its probability)`` where the classifier disagrees with the LLM, most confident
    first (ties in id order, so the file is stable).

    >>> disagreements(["a", "b", "c"], {"a": "ham", "b": "ham", "c": "spam"}, ["spam", "ham", "ham"],
    ...               [[0.3, 0.7], [0.9, 0.1], [0.95, 0.05]], ["ham", "spam"])
    [('c', 'ham', 0.95), ('a', 'spam', 0.7)]
    """
    out = [(i, p, round(float(row[classes.index(p)]), 4))
           for i, p, row in zip(ids, predicted, probs, strict=True) if llm[i] != p]
    return sorted(out, key=lambda r: (-r[2], r[0]))


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet will not run as a formula: one starting with = + - @ (or a tab or CR) gets a
    leading apostrophe, which spreadsheets hide (OWASP's CSV-injection advice). Numbers pass unchanged.

    >>> spreadsheet_safe("=HYPERLINK(\"http://x\")"), spreadsheet_safe("Win a prize"), spreadsheet_safe(0.9)
    ('\'=HYPERLINK("http://x")', 'Win a prize', 0.9)
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def review_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text with ``REVIEW_COLUMNS`` (quoted as a spreadsheet expects; texts keep their line breaks, and no
    cell from a document or an LLM can run as a formula)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REVIEW_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def write_label_exports(ctx: RunContext, data: RunData, state: State) -> int:
    """Write the three files above; the number of disagreements found (0 with no classifier yet)."""
    test = {i: lab for i, lab in labeling.load_labels(ctx.output, layout.TEST_LABELS).items() if lab.ok}
    train = {i: lab for i, lab in labeling.load_labels(ctx.output, layout.TRAIN_LABELS).items() if lab.ok}
    test_ids = [i for i in data.splits["test"] if i in test]
    chunks = data.subset([*test_ids, *train])
    write_jsonl(ctx.output, layout.TEST_LABELS_JSONL,
                (label_row(chunks[i], test[i], "llm_test") for i in test_ids if i in chunks))
    write_jsonl(ctx.output, layout.LABELS_JSONL,
                [*(label_row(chunks[i], test[i], "llm_test") for i in test_ids if i in chunks),
                 *(label_row(chunks[i], lab, "llm_train") for i, lab in sorted(train.items()) if i in chunks)])
    if state.best_iteration is None or not test_ids:
        ctx.output.write_text(layout.REVIEW_CSV, review_csv([]))
        return 0
    classes = list(ctx.settings.classification.classes)
    clf = load_run_classifier(ctx, state.best_iteration)
    ids = [i for i in test_ids if i in chunks]
    predicted, probs = clf.predict_proba([chunks[i].text for i in ids],
                                         batch_size=ctx.settings.training.predict_batch_size)
    found = disagreements(ids, {i: test[i].label or "" for i in ids}, list(predicted), probs.tolist(), classes)
    rows = [{"id": i, "llm_label": test[i].label, "classifier_label": label, "classifier_confidence": p,
             "llm_label_probability": test[i].confidence, "llm_reason": test[i].reason,
             "input": chunks[i].source, "text": chunks[i].text} for i, label, p in found]
    ctx.output.write_text(layout.REVIEW_CSV, review_csv(rows))
    log.info("review.csv: %d of %d test chunks where classifier_%d and the large model disagree", len(rows),
             len(ids), state.best_iteration)
    return len(rows)
