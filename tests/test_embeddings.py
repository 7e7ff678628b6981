"""Base-model sentence embeddings (core.model.embeddings) on the tiny random-init BERT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import TrainingError
from core.model.embeddings import embed_texts, mean_pool


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask)[0].tolist() == pytest.approx([1.0, 0.0])


def test_embeddings_are_unit_vectors_in_input_order(tiny_bert_dir: Path) -> None:
    texts = ["a much longer text about a meeting tomorrow at the office", "hi", "free prize, call now"]
    batched = embed_texts(str(tiny_bert_dir), texts, max_length=32, truncation_type="head", batch_size=2)
    assert batched.shape[0] == 3 and batched.dtype == np.float32
    assert np.linalg.norm(batched, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    one_by_one = np.stack([embed_texts(str(tiny_bert_dir), [t], max_length=32, truncation_type="head")[0]
                           for t in texts])
    # shortest-first batching with padding must not change any text's vector
    assert np.abs(batched - one_by_one).max() < 1e-4
    assert embed_texts(str(tiny_bert_dir), [], max_length=32, truncation_type="head").shape[0] == 0


def test_missing_model_is_a_training_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="cannot load the base model"):
        embed_texts(str(tmp_path / "nope"), ["x"], max_length=16, truncation_type="head")
