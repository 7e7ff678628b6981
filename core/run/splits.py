"""How chunks are divided: the held-out test set, the initial training set, then the pool, in a seeded order.

Pure functions only; the pipeline stores their results so a resumed run uses exactly the same split.
"""

from __future__ import annotations

import random


def test_size_for(n_chunks: int, test_set_size: int) -> int:
    """The test set never takes more than half the chunks, so a small input still leaves training data.

    >>> test_size_for(1000, 200), test_size_for(300, 200), test_size_for(1, 200)
    (200, 150, 1)
    """
    return min(test_set_size, max(1, n_chunks // 2))


def split_ids(ids: list[str], test_size: int, train_size: int, seed: int) -> dict[str, list[str]]:
    """Seeded and independent of input order: test set, initial training set, then the pool in selection order.

    >>> split_ids(["a", "b", "c", "d"], 1, 2, seed=0) == split_ids(["d", "c", "b", "a"], 1, 2, seed=0)
    True
    """
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return {"test": order[:test_size], "train": order[test_size:test_size + train_size],
            "pool": order[test_size + train_size:]}
