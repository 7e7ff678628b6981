"""Selection strategies: pure behaviour on hand-made probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from core.selection import class_shares, margins, near_duplicate_key, select_balanced, select_uncertain


def test_margins() -> None:
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.3, 0.5]][:2])
    assert margins(probs).tolist() == pytest.approx([0.0, 0.8])
    assert margins(np.array([[0.2, 0.3, 0.5]])).tolist() == pytest.approx([0.2])


def test_uncertain_takes_lowest_margin_and_skips_near_duplicates() -> None:
    ids = ["a", "b", "c", "d", "e"]
    texts = ["WIN cash now 123", "win CASH now 456!", "hello mum", "meeting at 5", "free prize"]
    probs = np.array([[0.5, 0.5], [0.51, 0.49], [0.9, 0.1], [0.6, 0.4], [0.7, 0.3]])
    assert select_uncertain(ids, texts, probs, 3) == ["a", "d", "e"]  # "b" is a near-duplicate of "a"


def test_uncertain_fills_with_duplicates_when_it_must() -> None:
    ids = ["a", "b"]
    assert select_uncertain(ids, ["same text", "same text"], np.array([[0.5, 0.5], [0.6, 0.4]]), 2) == ["a", "b"]


@pytest.mark.parametrize("k,counts,expected", [
    (10, {"ham": 90, "spam": 10}, {"ham": 0, "spam": 10}),
    (10, {"ham": 10, "spam": 10}, {"ham": 5, "spam": 5}),
    (7, {}, {"a": 3, "b": 2, "c": 2}),
    (4, {"a": 5, "b": 1, "c": 0}, {"a": 0, "b": 1, "c": 3}),
], ids=["skewed", "even", "rounding", "three-way"])
def test_class_shares(k: int, counts: dict, expected: dict) -> None:
    shares = class_shares(k, counts, list(expected))
    assert shares == expected and sum(shares.values()) == k


def test_balanced_favours_the_rare_class() -> None:
    ids = [f"c{i}" for i in range(10)]
    texts = [f"text number {w}" for w in "abcdefghij"]
    p_spam = np.array([0.05, 0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.95, 0.4, 0.6])
    probs = np.stack([1 - p_spam, p_spam], axis=1)
    chosen = select_balanced(ids, texts, probs, ["ham", "spam"], {"ham": 50, "spam": 2}, 4)
    assert chosen == ["c7", "c1", "c3", "c5"]  # the most confident spam, most confident first
    assert len(set(select_balanced(ids, texts, probs, ["ham", "spam"], {}, 10))) == 10


def test_near_duplicate_key_ignores_case_numbers_punctuation() -> None:
    assert near_duplicate_key("Call 0800-123 NOW!!") == near_duplicate_key("call 0900 999 now")
    assert near_duplicate_key("hello there") != near_duplicate_key("hello where")
