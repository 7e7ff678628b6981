"""Which unlabeled chunks to send to the LLM next: the label budget is the money a user spends.

Pure functions over ids, texts and the current classifier's class probabilities:

- ``random``: the next chunks of the seeded pool order (the baseline, and Augmentoolkit's behaviour; the caller
  takes them, nothing here is needed);
- ``uncertainty`` (``select_uncertain``): the chunks the current classifier is least sure about (smallest margin
  between its two most probable classes), spread over the classes it assigns them to (rarer labeled classes get
  more), and skipping near-duplicates so one template of spam cannot eat the whole increment;
- ``balanced`` (``select_balanced``): an equal share of the increment per class, each share filled with the
  chunks the classifier most confidently assigns to that class, so skewed data (SMS spam is 12% spam) still
  yields examples of the rare classes; unfilled shares fall back to uncertainty.

Both take ``(ids, texts, probs, k, classes, counts)``. Before any classifier exists, both start from
``representatives``: the chunk nearest each k-means centroid of the candidates' base-model embeddings, so the
first training set covers the kinds of text in the input instead of repeating its commonest kind.

Every strategy picks through ``_pick_in_turn``: rankings walked one after another, at most one chunk per
near-duplicate group, then, when the pool has too few distinct texts, the rest in a fallback order.

The module reads top-down: the three strategies, then their building blocks (``class_shares``, ``margins``,
``near_duplicate_key``, ``kmeans``), then the private helpers. Nothing here trains, predicts or touches storage;
the pipeline scores the candidates and stores the choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

# uncertainty fills each class's share from the 2k lowest margins only: on TREC at 10% noise (3 seeds) this
# gave 0.900 gold accuracy at 600 labels vs 0.891 with no shortlist (benchmarks/RESULTS.md)
SHORTLIST = 2.0
_DIGITS = re.compile(r"\d+")
_NON_WORD = re.compile(r"[^\w]+")

# (positions into ids, in preference order; how many to take from them at most)
Ranking = tuple[Iterable[int], int]


# ---- the strategies ----------------------------------------------------------------------------------------


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

    >>> ids, texts = ["a", "b", "c", "d"], ["win cash 1", "win cash 2", "hello mum", "see you"]
    >>> probs = np.array([[0.5, 0.5], [0.55, 0.45], [0.9, 0.1], [0.3, 0.7]])
    >>> select_uncertain(ids, texts, probs, 2)  # "b" is nearly as unsure as "a", but a near-duplicate of it
    ['a', 'd']
    >>> select_uncertain(ids, texts, probs, 2, ["ham", "spam"], {"ham": 10, "spam": 0})  # spam's share first
    ['d', 'a']
    """
    order = _by_margin(probs)
    rankings: list[Ranking] = []
    if classes is not None and counts is not None:
        predicted = probs.argmax(axis=1)
        uncertain = order[: int(shortlist * k)]
        rankings = [([i for i in uncertain if predicted[i] == col], share)
                    for col, share in enumerate(class_shares(k, counts, classes).values()) if share]
    rankings.append((order, k))
    return _pick_in_turn(ids, texts, k, rankings, rest=order)


def select_balanced(ids: Sequence[str], texts: Sequence[str], probs: np.ndarray, k: int, classes: Sequence[str],
                    counts: dict[str, int]) -> list[str]:
    """Per class, its share (``class_shares``) of the candidates the classifier puts in that class, most
    confident first; what the shares leave unfilled goes to the lowest margins, then to pool order.

    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    >>> ids, texts = ["a", "b", "c", "d"], ["one", "two", "three", "four"]
    >>> select_balanced(ids, texts, probs, 2, ["ham", "spam"], {"ham": 5, "spam": 1})  # spam is short: both
    ['d', 'b']
    >>> select_balanced(ids, texts, probs, 2, ["ham", "spam"], {})  # one each
    ['a', 'd']
    """
    predicted = probs.argmax(axis=1)
    rankings: list[Ranking] = [
        ([i for i in np.argsort(-probs[:, col], kind="stable").tolist() if predicted[i] == col], share)
        for col, share in enumerate(class_shares(k, counts, classes).values()) if share
    ]
    rankings.append((_by_margin(probs), k))
    return _pick_in_turn(ids, texts, k, rankings, rest=range(len(ids)))


def representatives(ids: Sequence[str], texts: Sequence[str], embeddings: np.ndarray, k: int,
                    seed: int) -> list[str]:
    """``k`` candidates that cover the pool: the one nearest each k-means centre, largest clusters first.

    At most one per near-duplicate group; if clusters come up empty or duplicated, the rest is filled in pool
    order. Deterministic for a given ``seed``.

    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0]])
    >>> representatives(["a", "b", "c", "d", "e"], ["v", "w", "x", "y", "z"], x, 2, seed=0)
    ['a', 'd']
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
    pool_order = range(len(ids))
    return _pick_in_turn(ids, texts, k, [(nearest, k), (pool_order, k)], rest=pool_order)


# ---- building blocks ---------------------------------------------------------------------------------------


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


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row: 0 is a coin flip, 1 is certainty.

    >>> margins(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.7]])).round(2).tolist()
    [0.0, 0.8, 0.5]
    """
    if probs.shape[1] < 2:
        return np.ones(probs.shape[0])
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def near_duplicate_key(text: str, prefix_words: int = 12) -> str:
    """Texts equal after lower-casing, masking numbers and dropping punctuation, on their first words.

    >>> near_duplicate_key("WIN a prize! Call 0800 123") == near_duplicate_key("win a PRIZE, call 0900 999")
    True
    """
    words = _NON_WORD.sub(" ", _DIGITS.sub("0", text.lower())).split()
    return " ".join(words[:prefix_words])


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Centres (k, d) and each row's cluster, by Lloyd's algorithm on squared Euclidean distance.

    >>> centres, assign = kmeans(np.array([[0.0, 0.0], [0.0, 1.0], [9.0, 9.0], [9.0, 8.0]]), 2, seed=0)
    >>> bool(assign[0] == assign[1] != assign[2] == assign[3]), sorted(centres.tolist())
    (True, [[0.0, 0.5], [9.0, 8.5]])
    """
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


# ---- private helpers ---------------------------------------------------------------------------------------


def _pick_in_turn(ids: Sequence[str], texts: Sequence[str], k: int, rankings: Iterable[Ranking],
                  rest: Iterable[int]) -> list[str]:
    """Up to ``k`` ids: from each ranking in turn at most its quota, skipping ids already chosen and texts that
    are near-duplicates of a chosen one; then, if still short, the first unchosen ids of ``rest``.

    The fallback is the one place where near-duplicates are allowed: a pool of few distinct texts would
    otherwise leave the increment unfilled and the label budget unspent.
    """
    chosen: list[str] = []
    taken: set[str] = set()
    keys: set[str] = set()
    for order, quota in rankings:
        limit = len(chosen) + min(quota, k - len(chosen))
        for i in order:
            if len(chosen) >= limit:
                break
            if ids[i] in taken:
                continue
            key = near_duplicate_key(texts[i])
            if key in keys:
                continue
            keys.add(key)
            taken.add(ids[i])
            chosen.append(ids[i])
    chosen += [ids[i] for i in rest if ids[i] not in taken][: k - len(chosen)]
    return chosen


def _by_margin(probs: np.ndarray) -> list[int]:
    """Row positions from the lowest margin to the highest; ties keep pool order."""
    return np.argsort(margins(probs), kind="stable").tolist()


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
