"""Which chunks each iteration sends to the LLM: chosen once, stored, and re-read on resume.

Iteration 1 takes the split's initial training set (``random``) or representatives of base-model embeddings;
later iterations take the next pool chunks (``random``) or let the previous classifier score up to
``SELECTION_CANDIDATES`` of them (``uncertainty``, ``balanced``). The choice itself is ``core.model.selection``'s.

Does not: label, train, or change state.
"""

from __future__ import annotations

import json

from core.run import layout
from core.run.context import RunContext, classifier_dir, train_config
from core.run.data import RunData
from core.storage.jsonl_log import read_jsonl

SELECTION_CANDIDATES = 4000  # chunks scored per iteration for uncertainty/balanced (a seeded sample of the pool)


def selected_ids(ctx: RunContext, data: RunData, n: int) -> list[str]:
    """The chunks iteration ``n`` adds; chosen once and stored, so a resume labels exactly the same ones."""
    stored = data.pick(n)
    if stored is not None:
        return stored
    splits = data.splits
    strategy = ctx.settings.training.selection
    if n == 1 and strategy == "random":
        ids = splits["train"]
    elif n == 1:
        # no classifier yet: cover the input's kinds of text (train + pool, so no chunk is left out)
        candidates = (splits["train"] + splits["pool"])[:SELECTION_CANDIDATES]
        ids = _representatives(ctx, data, candidates, len(splits["train"]))
        strategy = "representative"
    else:
        k = ctx.settings.training.train_set_increment
        used = set(data.picked_until(n - 1))
        remaining = [i for i in splits["train"] + splits["pool"] if i not in used]
        if strategy == "random" or len(remaining) <= k:
            ids = remaining[:k]
        else:
            ids = _select_with_classifier(ctx, data, n - 1, remaining[:SELECTION_CANDIDATES], k, strategy)
    ctx.output.write_text(layout.iteration_choice(n), json.dumps({"iteration": n, "ids": ids, "strategy": strategy}))
    data.remember_pick(n, ids)
    return ids


def _representatives(ctx: RunContext, data: RunData, candidates: list[str], k: int) -> list[str]:
    from core.model import selection
    from core.model.embeddings import embed_texts

    if k >= len(candidates):
        return candidates
    t = ctx.settings.training
    texts = data.texts(candidates)
    tick = ctx.progress("embedding candidates for the first training set", len(texts))
    vectors = embed_texts(train_config(ctx).model_path, texts, max_length=t.max_length,
                          truncation_type=t.truncation_type, threads=ctx.settings.system.torch_threads,
                          batch_size=t.predict_batch_size)
    tick(len(texts))
    return selection.representatives(candidates, texts, vectors, k, seed=ctx.settings.system.seed)


def _select_with_classifier(ctx: RunContext, data: RunData, previous: int, candidates: list[str], k: int,
                            strategy: str) -> list[str]:
    from core.model import selection
    from core.model.classifier import load_classifier

    classes = ctx.settings.classification.classes
    texts = data.texts(candidates)
    clf = load_classifier(classifier_dir(ctx, previous))
    _, probs = clf.predict_proba(texts, batch_size=ctx.settings.training.predict_batch_size)
    counts: dict[str, int] = {}
    for row in read_jsonl(ctx.output, layout.dataset(previous)):
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    if strategy == "uncertainty":
        return selection.select_uncertain(candidates, texts, probs, k, classes, counts)
    return selection.select_balanced(candidates, texts, probs, k, classes, counts)
