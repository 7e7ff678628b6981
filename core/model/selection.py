"""Which unlabeled chunks to send to the LLM next: the label budget is the money a user spends.

Pure functions over ids, texts and the current classifier's class probabilities:

- ``random``: the next chunks of the seeded pool order (the baseline, and Augmentoolkit's behaviour);
- ``uncertainty``: the chunks the current classifier is least sure about (smallest margin between its two
  most probable classes), spread over the classes it assigns them to (rarer labeled classes get more), and
  skipping near-duplicates so one template of spam cannot eat the whole increment;
- ``balanced``: an equal share of the increment per class, each share filled with the chunks the classifier
  most confidently assigns to that class, so skewed data (SMS spam is 12% spam) still yields examples of the
  rare classes; unfilled shares fall back to uncertainty.

Before any classifier exists, both classifier-guided strategies start from ``representatives``: the chunk
nearest each k-means centroid of the candidates' base-model embeddings, so the first training set covers the
kinds of text in the input instead of repeating its commonest kind.

Nothing here trains, predicts or touches storage; the pipeline scores the candidates and stores the choice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

STRATEGIES = ("random", "uncertainty", "balanced")
# uncertainty fills each class's share from the 2k lowest margins only: on TREC at 10% noise (3 seeds) this
# gave 0.900 gold accuracy at 600 labels vs 0.891 with no shortlist (benchmarks/RESULTS.md)
SHORTLIST = 2.0
_DIGITS = re.compile(r"\d+")
_NON_WORD = re.compile(r"[^\w]+")


def near_duplicate_key(text: str, prefix_words: int = 12) -> str:
    """Texts equal after lower-casing, masking numbers and dropping punctuation, on their first words.

    >>> near_duplicate_key("WIN a prize! Call 0800 123") == near_duplicate_key("win a PRIZE, call 0900 999")
    True
    """
    words = _NON_WORD.sub(" ", _DIGITS.sub("0", text.lower())).split()
    return " ".join(words[:prefix_words])


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row: 0 is a coin flip, 1 is certainty."""
    if probs.shape[1] < 2:
        return np.ones(probs.shape[0])
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _take(order: Sequence[int], ids: Sequence[str], texts: Sequence[str], k: int, taken: set[str],
          seen_keys: set[str]) -> list[str]:
    out: list[str] = []
    for i in order:
        if len(out) >= k:
            break
        if ids[i] in taken:
            continue
        key = near_duplicate_key(texts[i])
        if key in seen_keys:
            continue
        seen_keys.add(key)
        taken.add(ids[i])
        out.append(ids[i])
    return out


def select_uncertain(ids: Sequence[str], texts: Sequence[str], probs: np.ndarray, k: int,
                     classes: Sequence[str] | None = None, counts: dict[str, int] | None = None,
                     shortlist: float = SHORTLIST) -> list[str]:
    """The ``k`` lowest-margin candidates, at most one per near-duplicate group (ties keep pool order).

    With ``classes`` and ``counts`` (labels so far per class), the increment is first split per class as
    ``class_shares`` does, and each share is filled from the ``shortlist * k`` lowest-margin candidates that
    the classifier assigns to that class; what the shares leave unfilled goes to the lowest margins overall.
    Plain margin ranking spends most of a batch on the one or two class boundaries the model finds hardest; the
    shares spread it over every class's boundary, toward the classes with fewest labels, and the shortlist
    keeps a rare class's share from buying labels for chunks the classifier is already sure about.
    """
    order = np.argsort(margins(probs), kind="stable").tolist()
    taken: set[str] = set()
    seen: set[str] = set()
    chosen: list[str] = []
    if classes is not None and counts is not None:
        predicted = probs.argmax(axis=1)
        uncertain = order[: int(shortlist * k)]
        for col, share in enumerate(class_shares(k, counts, classes).values()):
            if share:
                chosen += _take([i for i in uncertain if predicted[i] == col], ids, texts, share, taken, seen)
    chosen += _take(order, ids, texts, k - len(chosen), taken, seen)
    if len(chosen) < k:  # too many near-duplicates: fill with the rest, duplicates allowed
        chosen += [ids[i] for i in order if ids[i] not in taken][: k - len(chosen)]
    return chosen


def class_shares(k: int, counts: dict[str, int], classes: Sequence[str]) -> dict[str, int]:
    """Split ``k`` so that the labeled counts per class move toward equal: rarer classes get more.

    >>> class_shares(10, {"ham": 90, "spam": 10}, ["ham", "spam"])
    {'ham': 0, 'spam': 10}
    >>> class_shares(9, {}, ["a", "b", "c"])
    {'a': 3, 'b': 3, 'c': 3}
    """
    target = (sum(counts.values()) + k) / len(classes)
    need = {c: max(0.0, target - counts.get(c, 0)) for c in classes}
    total = sum(need.values()) or 1.0
    shares = {c: int(k * need[c] / total) for c in classes}
    # hand out what rounding left, to the neediest classes first
    for c in sorted(classes, key=lambda c: -need[c])[: k - sum(shares.values())]:
        shares[c] += 1
    return shares


def select_balanced(ids: Sequence[str], texts: Sequence[str], probs: np.ndarray, classes: Sequence[str],
                    counts: dict[str, int], k: int) -> list[str]:
    """Per class, its share of the most confident candidates for that class; the remainder by uncertainty."""
    taken: set[str] = set()
    seen: set[str] = set()
    chosen: list[str] = []
    for c, share in class_shares(k, counts, classes).items():
        if share == 0:
            continue
        col = list(classes).index(c)
        order = np.argsort(-probs[:, col], kind="stable")
        # only candidates the classifier actually puts in this class
        order = [i for i in order.tolist() if int(np.argmax(probs[i])) == col]
        chosen += _take(order, ids, texts, share, taken, seen)
    if len(chosen) < k:
        order = np.argsort(margins(probs), kind="stable").tolist()
        chosen += _take(order, ids, texts, k - len(chosen), taken, seen)
    if len(chosen) < k:
        chosen += [i for i in ids if i not in taken][: k - len(chosen)]
    return chosen


def _kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to its squared distance."""
    centres = [x[int(rng.integers(len(x)))]]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = float(d2.sum())
        nxt = x[int(rng.choice(len(x), p=d2 / total))] if total > 0 else x[int(rng.integers(len(x)))]
        centres.append(nxt)
        d2 = np.minimum(d2, ((x - nxt) ** 2).sum(axis=1))
    return np.stack(centres)


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Centres (k, d) and each row's cluster, by Lloyd's algorithm on squared Euclidean distance."""
    rng = np.random.default_rng(seed)
    centres = _kmeans_pp_init(x, k, rng)
    assign = np.zeros(len(x), dtype=np.int64)
    for step in range(iterations):
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; the ||x||^2 term is the same for every centre
        dist = -2.0 * x @ centres.T + (centres**2).sum(axis=1)
        new = dist.argmin(axis=1)
        if step and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):  # an empty cluster keeps its centre
                centres[j] = members.mean(axis=0)
    return centres, assign


def representatives(ids: Sequence[str], texts: Sequence[str], embeddings: np.ndarray, k: int,
                    seed: int) -> list[str]:
    """``k`` candidates that cover the pool: the one nearest each k-means centre, largest clusters first.

    At most one per near-duplicate group; if clusters come up empty or duplicated, the rest is filled in pool
    order. Deterministic for a given ``seed``.
    """
    if k >= len(ids):
        return list(ids)
    if k <= 0:
        return []
    x = embeddings.astype(np.float64)
    centres, assign = kmeans(x, k, seed)
    dist = ((x - centres[assign]) ** 2).sum(axis=1)
    sizes = np.bincount(assign, minlength=k)
    nearest = []
    for j in sorted(range(k), key=lambda j: (-sizes[j], j)):
        members = np.flatnonzero(assign == j)
        if len(members):
            nearest.append(int(members[np.argmin(dist[members])]))
    taken: set[str] = set()
    seen: set[str] = set()
    chosen = _take(nearest, ids, texts, k, taken, seen)
    if len(chosen) < k:
        chosen += _take(range(len(ids)), ids, texts, k - len(chosen), taken, seen)
    if len(chosen) < k:
        chosen += [i for i in ids if i not in taken][: k - len(chosen)]
    return chosen
