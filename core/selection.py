"""Which unlabeled chunks to send to the LLM next: the label budget is the money a user spends.

Pure functions over ids, texts and the current classifier's class probabilities:

- ``random``: the next chunks of the seeded pool order (the baseline, and Augmentoolkit's behaviour);
- ``uncertainty``: the chunks the current classifier is least sure about (smallest margin between its two
  most probable classes), skipping near-duplicates so one template of spam cannot eat the whole increment;
- ``balanced``: an equal share of the increment per class, each share filled with the chunks the classifier
  most confidently assigns to that class, so skewed data (SMS spam is 12% spam) still yields examples of the
  rare classes; unfilled shares fall back to uncertainty.

Nothing here trains, predicts or touches storage; the pipeline scores the candidates and stores the choice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

STRATEGIES = ("random", "uncertainty", "balanced")
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


def select_uncertain(ids: Sequence[str], texts: Sequence[str], probs: np.ndarray, k: int) -> list[str]:
    """The ``k`` lowest-margin candidates, at most one per near-duplicate group (ties keep pool order)."""
    order = np.argsort(margins(probs), kind="stable")
    chosen = _take(order.tolist(), ids, texts, k, set(), set())
    if len(chosen) < k:  # too many near-duplicates: fill with the rest, duplicates allowed
        rest = [ids[i] for i in order.tolist() if ids[i] not in set(chosen)]
        chosen += rest[:k - len(chosen)]
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
