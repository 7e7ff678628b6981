"""Classification metrics: accuracy with a Wilson interval, macro-F1, per-class scores and a confusion matrix.

Pure Python on lists of label strings; no torch, no numpy, no I/O. The caller decides what the reference labels
are (LLM labels or human gold labels) and what to do with the numbers.

    >>> m = evaluate(["a", "a", "b"], ["a", "b", "b"], labels=["a", "b"])
    >>> m.accuracy, m.confusion
    (0.6666666666666666, [[1, 1], [0, 1]])
"""

from __future__ import annotations

import math

from core.schema import ClassScores, Metrics


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at k = 0 or k = n, which is
    what small LLM-labeled test sets produce. With no trials nothing is known, so the interval is (0, 1).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    # At k = 0 or k = n one bound is exactly 0 or 1; rounding would otherwise leave it a hair inside.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


def _ratio(num: int, den: int) -> float:
    # An empty denominator means the score is undefined; 0 keeps it in macro averages without raising.
    return num / den if den else 0.0


def confusion_matrix(y_true: list[str], y_pred: list[str], labels: list[str]) -> list[list[int]]:
    """``confusion[i][j]`` counts items whose true label is ``labels[i]`` and predicted label ``labels[j]``."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred, strict=True):
        for value in (t, p):
            if value not in index:
                raise ValueError(f"label {value!r} is not one of {labels}")
        matrix[index[t]][index[p]] += 1
    return matrix


def class_scores(confusion: list[list[int]], i: int) -> ClassScores:
    tp = confusion[i][i]
    predicted = sum(row[i] for row in confusion)
    support = sum(confusion[i])
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)  # equals 2PR/(P+R), without dividing by zero
    return ClassScores(precision=precision, recall=recall, f1=f1, support=support)


def evaluate(y_true: list[str], y_pred: list[str], labels: list[str]) -> Metrics:
    """Score predictions against reference labels; every label in either list must be one of ``labels``."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be non-empty and unique, got {labels}")
    confusion = confusion_matrix(y_true, y_pred, labels)
    n = len(y_true)
    correct = sum(confusion[i][i] for i in range(len(labels)))
    per_class = {label: class_scores(confusion, i) for i, label in enumerate(labels)}
    return Metrics(
        n=n,
        accuracy=_ratio(correct, n),
        accuracy_ci95=wilson_interval(correct, n),
        macro_f1=sum(s.f1 for s in per_class.values()) / len(labels),
        per_class=per_class,
        labels=list(labels),
        confusion=confusion,
    )
