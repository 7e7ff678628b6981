"""The classifier: encoding, CPU fine-tuning, loading and prediction, reduced precision, metrics, selection.

``encoding`` turns texts into token ids the same way for training, evaluation and prediction; ``training``
fine-tunes a BERT-family model; ``classifier`` loads a saved one and predicts; ``precision`` makes its int8/bf16
copies; ``predict`` streams predictions and checks a reduced precision against float32; ``metrics`` scores labels;
``embeddings`` and ``selection`` choose which chunks to label. Nothing here reads storage or settings.

Names load on first use (torch is imported only by code that needs it): ``from core.model import
load_classifier`` imports ``core.model.classifier`` then.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "TrainConfig": "training", "TrainResult": "training", "train_classifier": "training",
    "Classifier": "classifier", "load_classifier": "classifier", "Prediction": "classifier",
    "encode": "encoding", "resolve_base_model": "encoding", "BUNDLED_MODEL": "encoding",
    "embed_texts": "embeddings",
    "at_precision": "precision", "resolve_precision": "precision",
    "predict_stream": "predict", "select_shard": "predict", "shard_of": "predict", "choose_precision": "predict",
    "evaluate": "metrics",
    "select_uncertain": "selection", "select_balanced": "selection", "representatives": "selection",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'core.model' has no attribute {name!r}")
    return getattr(import_module(f"core.model.{_WHERE[name]}"), name)
