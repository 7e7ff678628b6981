"""Sentence embeddings from the base model, for choosing the first training set before any classifier exists.

Mean of the last hidden states over real tokens, L2-normalised: the pooling all-MiniLM-L6-v2 (the bundled base
model) was trained with, and a fair default for any BERT-family encoder. Texts are encoded and truncated as
``core.model.training`` does, run shortest first so batches pad little, and returned in input order.

Does not: choose anything (``core.model.selection.representatives`` does), read storage, or train.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from core.config import TruncationType
from core.errors import TrainingError
from core.model.encoding import intra_op_threads, shortest_first_batches


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where ``mask`` is 1, scaled to unit length (padding never counts)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(summed, dim=-1)


def embed_texts(model_path: str, texts: Sequence[str], *, max_length: int, truncation_type: TruncationType,
                threads: int | None = None, batch_size: int = 64, should_stop: Callable[[], bool] | None = None,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """An (n, hidden) float32 array of unit vectors, one per text, in input order.

    ``should_stop`` is asked before every batch, so a SIGTERM reaches a safe point within one batch however
    many texts there are: ``core.model.encoding.Interrupted`` when it says so.
    ``progress(k)`` is told each batch's size once it is embedded.
    """
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModel.from_pretrained(model_path).float().eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TrainingError(f"cannot load the base model from {model_path} to embed texts: {exc}") from exc
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not texts:
        return out
    try:
        batches = shortest_first_batches(tokenizer, texts, max_length, truncation_type, batch_size, should_stop)
        with intra_op_threads(threads), torch.inference_mode():
            for idx, batch in batches:
                hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                out[idx] = mean_pool(hidden, batch["attention_mask"]).numpy()
                if progress is not None:
                    progress(len(idx))
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"embedding texts with the base model failed: {exc}") from exc
    return out
