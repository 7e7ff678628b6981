"""Which chunks each iteration sends to the LLM: chosen once, stored, and re-read on resume.

Iteration 1 takes the split's initial training set (``random``) or representatives of base-model embeddings;
later iterations take the next pool chunks (``random``) or let the previous classifier score up to
``SELECTION_CANDIDATES`` of them (``uncertainty``, ``balanced``). The choice itself is ``core.model.selection``'s.

A stop request while candidates are scored (base-model embeddings, the previous classifier's probabilities;
asked every batch) stores nothing: the step returns and the pipeline saves the state at ``label_train``.

Does not: label, train, or change state.
"""

from __future__ import annotations

import json
import logging

from core.run import layout
from core.run.context import RunContext, load_run_classifier, train_config
from core.run.data import RunData
from core.storage.jsonl_log import read_jsonl

log = logging.getLogger("bootstrapper")

SELECTION_CANDIDATES = 4000  # chunks scored per iteration for uncertainty/balanced (a seeded sample of the pool)


def selected_ids(ctx: RunContext, data: RunData, n: int) -> list[str] | None:
    """The chunks iteration ``n`` adds; chosen once and stored, so a resume labels exactly the same ones.

    None when a stop request (``ctx.should_stop``) came while the base model or the previous classifier
    scored the candidates: nothing is stored, and the resumed run scores them again (the same seed and
    texts give the same choice).
    """
    from core.model.encoding import Interrupted

    stored = data.pick(n)
    if stored is not None:
        return stored
    try:
        ids, strategy = _choose(ctx, data, n)
    except Interrupted:
        log.info("stop requested while choosing the chunks of iteration %d: nothing stored; a resume chooses "
                 "again", n)
        return None
    ctx.output.write_text(layout.iteration_choice(n), json.dumps({"iteration": n, "ids": ids, "strategy": strategy}))
    data.remember_pick(n, ids)
    return ids


def _choose(ctx: RunContext, data: RunData, n: int) -> tuple[list[str], str]:
    """Iteration ``n``'s new chunks and the strategy that chose them; ``Interrupted`` by a stop request."""
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
    return ids, strategy


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
                          batch_size=t.predict_batch_size, should_stop=ctx.should_stop, progress=tick)
    return selection.representatives(candidates, texts, vectors, k, seed=ctx.settings.system.seed)


def _select_with_classifier(ctx: RunContext, data: RunData, previous: int, candidates: list[str], k: int,
                            strategy: str) -> list[str]:
    from core.model import selection

    classes = ctx.settings.classification.classes
    texts = data.texts(candidates)
    clf = load_run_classifier(ctx, previous)
    _, probs = clf.predict_proba(texts, batch_size=ctx.settings.training.predict_batch_size,
                                 should_stop=ctx.should_stop)
    counts: dict[str, int] = {}
    for row in read_jsonl(ctx.output, layout.dataset(previous)):
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    if strategy == "uncertainty":
        return selection.select_uncertain(candidates, texts, probs, k, classes, counts)
    return selection.select_balanced(candidates, texts, probs, k, classes, counts)
