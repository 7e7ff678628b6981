"""core.model.metrics: hand-computed confusion matrices and Wilson intervals, empty classes, invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.model.metrics import evaluate, wilson_interval
from core.schema import Metrics


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        # p = 0.8, z = 1.96: centre 0.992080/1.38416, half-width 1.96*sqrt(0.025604)/1.38416
        (8, 10, (0.490156, 0.943319)),
        # k = 0: the lower bound is 0 and the upper is 2*(z^2/2n)/(1+z^2/n) = 0.384160/1.38416
        (0, 10, (0.0, 0.277540)),
        (10, 10, (0.722460, 1.0)),
        (50, 100, (0.403830, 0.596170)),
    ],
    ids=["8-of-10", "0-of-10", "10-of-10", "50-of-100"],
)
def test_wilson_interval_matches_hand_computed_values(k: int, n: int, expected: tuple[float, float]) -> None:
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected[0], abs=1e-6)
    assert high == pytest.approx(expected[1], abs=1e-6)


def test_wilson_interval_without_trials_says_nothing_is_known() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("k", "n"), [(-1, 5), (6, 5), (0, -1)], ids=["negative-k", "k-above-n", "negative-n"])
def test_wilson_interval_rejects_impossible_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n)


@given(n=st.integers(1, 500), data=st.data())
def test_wilson_interval_contains_the_observed_rate(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_known_confusion_and_per_class_scores() -> None:
    labels = ["cat", "dog", "fish"]
    y_true = ["cat", "cat", "cat", "dog", "dog", "fish"]
    y_pred = ["cat", "cat", "dog", "dog", "fish", "fish"]
    m = evaluate(y_true, y_pred, labels)

    assert m.labels == labels
    assert m.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m.n == 6
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.accuracy_ci95 == pytest.approx(wilson_interval(4, 6))
    cat, dog, fish = (m.per_class[c] for c in labels)
    assert (cat.precision, cat.recall, cat.support) == (1.0, pytest.approx(2 / 3), 3)
    assert cat.f1 == pytest.approx(0.8)
    assert (dog.precision, dog.recall, dog.f1, dog.support) == (0.5, 0.5, 0.5, 2)
    assert (fish.precision, fish.recall, fish.support) == (0.5, 1.0, 1)
    assert fish.f1 == pytest.approx(2 / 3)
    assert m.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_class_never_seen_scores_zero_and_still_counts_in_macro_f1() -> None:
    m = evaluate(["a", "a", "b"], ["a", "a", "b"], labels=["a", "b", "c"])
    c = m.per_class["c"]
    assert (c.precision, c.recall, c.f1, c.support) == (0.0, 0.0, 0.0, 0)
    assert m.accuracy == 1.0
    assert m.macro_f1 == pytest.approx(2 / 3)


def test_class_predicted_but_never_true_has_zero_precision_and_recall() -> None:
    m = evaluate(["a", "a"], ["b", "a"], labels=["a", "b"])
    b = m.per_class["b"]
    assert (b.precision, b.recall, b.f1, b.support) == (0.0, 0.0, 0.0, 0)
    assert m.per_class["a"].precision == 1.0
    assert m.per_class["a"].recall == 0.5


def test_no_items_gives_zero_accuracy_and_an_uninformative_interval() -> None:
    m = evaluate([], [], labels=["a", "b"])
    assert (m.n, m.accuracy, m.accuracy_ci95, m.macro_f1) == (0, 0.0, (0.0, 1.0), 0.0)
    assert m.confusion == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    ("y_true", "y_pred", "labels"),
    [
        (["a"], ["a", "b"], ["a", "b"]),
        (["a", "z"], ["a", "b"], ["a", "b"]),
        (["a"], ["z"], ["a", "b"]),
        (["a"], ["a"], ["a", "a"]),
    ],
    ids=["length-mismatch", "unknown-true-label", "unknown-predicted-label", "duplicate-labels"],
)
def test_bad_inputs_are_rejected(y_true: list[str], y_pred: list[str], labels: list[str]) -> None:
    with pytest.raises(ValueError):
        evaluate(y_true, y_pred, labels)


@given(pairs=st.lists(st.tuples(st.sampled_from("xyz"), st.sampled_from("xyz")), max_size=60))
def test_confusion_rows_are_supports_and_diagonal_is_accuracy(pairs: list[tuple[str, str]]) -> None:
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    m = evaluate(y_true, y_pred, labels=["x", "y", "z"])
    assert sum(map(sum, m.confusion)) == len(pairs)
    for i, label in enumerate(m.labels):
        assert sum(m.confusion[i]) == m.per_class[label].support == y_true.count(label)
    correct = sum(t == p for t, p in pairs)
    assert m.accuracy == (correct / len(pairs) if pairs else 0.0)
    assert 0.0 <= m.macro_f1 <= 1.0


def test_metrics_survive_a_json_round_trip() -> None:
    m = evaluate(["a", "b", "b"], ["a", "b", "a"], labels=["a", "b"])
    assert Metrics.from_dict(m.to_dict()) == m
