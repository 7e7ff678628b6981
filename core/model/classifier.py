"""A trained classifier in memory: load one from its folder, turn texts into labels and class probabilities.

Texts are encoded and truncated exactly as ``core.model.training`` did for training, run shortest first so batches
pad little, and returned in input order. ``at_precision`` gives a bf16/int8 copy (see ``core.model.precision``).

Does not: train, choose which precision to use (``core.model.predict.choose_precision`` does), or read storage.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.config import PrecisionSetting, TruncationType
from core.errors import TrainingError
from core.model.encoding import intra_op_threads, shortest_first_batches
from core.model.training import META_FILE

# Written into a classifier's folder by the run's predict step: the precision its check chose (and why).
PRECISION_FILE = "bootstrapper_precision.json"
# Written by the run's train step: how the run cut documents into chunks, so new documents are cut alike.
RUN_FILE = "bootstrapper_run.json"


@dataclass(frozen=True)
class Prediction:
    """One text's answer: the most probable class and every class's probability."""

    label: str
    probs: dict[str, float]

    @property
    def confidence(self) -> float:
        return self.probs[self.label]


class Classifier:
    """A trained classifier in memory: texts in, labels and class probabilities out.

    ``load_classifier(folder).classify(["Win a free prize!"])`` -> ``[Prediction(label='spam', probs={...})]``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        max_length: int,
        truncation_type: TruncationType,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> None:
        self._model = model.eval()
        self._tokenizer = tokenizer
        self._max_length = max_length
        self._truncation_type = truncation_type
        self._threads = threads
        self.precision = precision  # what ``model`` holds: "fp32", "bf16" or "int8" (see core.model.precision)
        id2label = model.config.id2label
        self.classes: list[str] = [id2label[i] for i in range(len(id2label))]

    @property
    def truncation_type(self) -> TruncationType:
        """How a text longer than ``max_length`` tokens is cut (as in training): "head" or "head-tail"."""
        return self._truncation_type

    @property
    def max_length(self) -> int:
        return self._max_length

    def at_precision(self, precision: PrecisionSetting) -> Classifier:
        """This float32 classifier with its model converted to ``precision`` (``self`` is left unchanged)."""
        from core.model.precision import at_precision, resolve_precision

        if self.precision != "fp32":
            raise TrainingError(f"convert from the float32 classifier, not from a {self.precision} one")
        wanted = resolve_precision(precision)
        if wanted == "fp32":
            return self
        return Classifier(at_precision(self._model, wanted), self._tokenizer, max_length=self._max_length,
                          truncation_type=self._truncation_type, threads=self._threads, precision=wanted)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64,
                      should_stop: Callable[[], bool] | None = None) -> tuple[list[str], np.ndarray]:
        """Predicted label per text and an (n, len(classes)) probability array, both in input order.

        Texts are run shortest first so each batch pads little; results are put back in input order.
        ``should_stop`` is asked before every batch: ``core.model.encoding.Interrupted`` when it says so.
        """
        probs = np.zeros((len(texts), len(self.classes)), dtype=np.float32)
        if texts:
            try:
                batches = shortest_first_batches(self._tokenizer, texts, self._max_length, self._truncation_type,
                                                 batch_size, should_stop)
                with intra_op_threads(self._threads), torch.inference_mode():
                    for idx, batch in batches:
                        logits = self._model(**batch).logits
                        probs[idx] = torch.softmax(logits.float(), dim=-1).numpy()
            except (RuntimeError, ValueError) as exc:
                raise TrainingError(f"prediction failed: {exc}") from exc
        return [self.classes[j] for j in probs.argmax(axis=1)], probs

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[str]:
        return self.predict_proba(texts, batch_size)[0]

    def classify(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        """A ``Prediction`` per text, in input order, each text cut as in training (head or head-tail)."""
        labels, probs = self.predict_proba(texts, batch_size)
        return [Prediction(label, {c: float(p) for c, p in zip(self.classes, row, strict=True)})
                for label, row in zip(labels, probs, strict=True)]


def load_classifier(model_dir: Path | str, *, threads: int | None = None,
                    precision: PrecisionSetting = "fp32") -> Classifier:
    """Load a folder written by ``train_classifier`` (or any sequence-classification folder).

    ``precision`` ("fp32", "bf16", "int8" or "auto"; see ``core.model.precision``) converts the model after loading,
    unchecked: the predict step instead loads float32 and calls ``core.model.predict.choose_precision`` (and
    records the result in the folder's ``PRECISION_FILE``, which ``bootstrapper classify`` follows).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        meta_path = Path(model_dir) / META_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).float()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TrainingError(f"cannot load classifier from {model_dir}: {exc}") from exc
    # A folder from elsewhere has no metadata: fall back to plain truncation at the tokenizer's limit.
    max_length = int(meta.get("max_length") or min(tokenizer.model_max_length, 512))
    truncation_type = meta.get("truncation_type", "head")
    classifier = Classifier(model, tokenizer, max_length=max_length, truncation_type=truncation_type, threads=threads)
    return classifier.at_precision(precision)
