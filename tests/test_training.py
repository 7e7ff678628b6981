"""core.model.training: tokenization and batching pieces, the config from settings, then real training of a
tiny random-init BERT.

The tiny model must actually learn the synthetic alpha/beta/gamma task; the slow test trains the bundled
MiniLM on human-labeled SMS spam and checks accuracy against the gold labels.
"""

from __future__ import annotations

import doctest
import json
import random
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from core.config import load_settings
from core.errors import ConfigError, TrainingError
from core.model import training
from core.model.classifier import load_classifier
from core.model.encoding import encode, resolve_base_model, special_token_frame, truncate_ids
from core.model.metrics import evaluate
from core.model.training import (
    META_FILE,
    TrainConfig,
    class_weights,
    length_grouped_batches,
    parameter_groups,
    plan_epochs,
    train_classifier,
)
from tests.fixtures.models import CLASSES, FILLER, synthetic_task, tiny_train_config

SMS = Path("/work/shared/data/sms_spam.jsonl")


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert_dir))


# --- pure pieces ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "budget", "kind", "expected"),
    [
        (5, 6, "head-tail", [0, 1, 2, 3, 4]),
        (6, 6, "head", [0, 1, 2, 3, 4, 5]),
        (10, 6, "head", [0, 1, 2, 3, 4, 5]),
        (10, 6, "head-tail", [0, 1, 6, 7, 8, 9]),
        (100, 9, "head-tail", [0, 1, 2, 94, 95, 96, 97, 98, 99]),
        (10, 1, "head-tail", [9]),
    ],
    ids=["short-untouched", "exact-fit", "head", "head-tail", "head-tail-thirds", "budget-one-keeps-last"],
)
def test_truncate_ids(n: int, budget: int, kind: str, expected: list[int]) -> None:
    assert truncate_ids(list(range(n)), budget, kind) == expected


def test_special_token_frame_of_a_bert_tokenizer(tokenizer: object) -> None:
    assert special_token_frame(tokenizer) == ([101], [102])  # [CLS] ... [SEP]


def test_head_tail_encoding_keeps_the_end_of_a_long_text(tokenizer: object) -> None:
    words = [f"w{i}" for i in range(300)]
    text = "opening " + " ".join(words) + " closing"
    (ids,) = encode(tokenizer, [text], max_length=32, truncation_type="head-tail")
    tokens = tokenizer.convert_ids_to_tokens(ids)  # type: ignore[attr-defined]
    assert len(ids) == 32
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1] == "opening"
    assert tokens[-2] == "closing"
    # a third of the 30-token budget from the start, two thirds from the end
    assert tokenizer.decode(ids[11:31]).endswith("w299 closing")  # type: ignore[attr-defined]


def test_head_encoding_equals_the_tokenizers_own_truncation(tokenizer: object) -> None:
    text = " ".join(f"word{i}" for i in range(200))
    (ids,) = encode(tokenizer, [text], max_length=40, truncation_type="head")
    assert ids == tokenizer(text, truncation=True, max_length=40)["input_ids"]  # type: ignore[operator]


def test_short_texts_are_not_padded_or_cut(tokenizer: object) -> None:
    short, empty = encode(tokenizer, ["hello world", ""], max_length=128, truncation_type="head-tail")
    assert short == tokenizer("hello world")["input_ids"]  # type: ignore[operator]
    assert empty == [101, 102]


def test_length_grouped_batches_cover_every_index_once_in_similar_length_batches() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 200) for _ in range(500)]
    batches = length_grouped_batches(lengths, 16, random.Random(1))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(500))
    assert all(1 <= len(b) <= 16 for b in batches)

    def padded_tokens(bs: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in bs)

    shuffled = list(range(500))
    random.Random(1).shuffle(shuffled)
    random_batches = [shuffled[i : i + 16] for i in range(0, 500, 16)]
    assert padded_tokens(batches) < 0.75 * padded_tokens(random_batches)


def test_length_grouped_batches_depend_only_on_the_seed() -> None:
    lengths = list(range(100))
    assert length_grouped_batches(lengths, 8, random.Random(3)) == length_grouped_batches(
        lengths, 8, random.Random(3)
    )
    assert length_grouped_batches(lengths, 8, random.Random(3)) != length_grouped_batches(
        lengths, 8, random.Random(4)
    )


def test_class_weights_are_inverse_frequency_with_mean_one() -> None:
    ids = [0, 0, 0, 1]
    weights = class_weights(ids, 3)
    assert weights[0] == pytest.approx(4 / 6)
    assert weights[1] == pytest.approx(2.0)
    assert weights[2] == 1.0  # absent class: unused
    assert sum(weights[i] for i in ids) / len(ids) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("n", "batch_size", "epochs", "min_steps", "expected"),
    [
        (200, 16, 3, 100, 8),  # 13 batches an epoch: 8 epochs reach 104 steps
        (1000, 16, 3, 100, 3),  # 63 batches an epoch: the floor is already met
        (200, 16, 3, 0, 3),
        (10, 16, 2, 5, 5),  # one batch an epoch
        (208, 16, 1, 13, 1),  # exactly met
    ],
    ids=["small-set-raised", "large-set-unchanged", "no-floor", "one-batch", "exactly-met"],
)
def test_plan_epochs_raises_epochs_only_for_small_sets(
    n: int, batch_size: int, epochs: int, min_steps: int, expected: int
) -> None:
    assert plan_epochs(n, batch_size, epochs, min_steps) == expected


@pytest.mark.parametrize(("power", "ratio"), [(1.0, 9.0), (0.5, 3.0), (0.0, 1.0)], ids=["inverse", "sqrt", "off"])
def test_class_weight_power_tempers_the_rare_class_weight(power: float, ratio: float) -> None:
    ids = [0] * 9 + [1]
    weights = class_weights(ids, 2, power)
    assert weights[1] / weights[0] == pytest.approx(ratio)
    assert sum(weights[i] for i in ids) / len(ids) == pytest.approx(1.0)


def test_resolve_base_model() -> None:
    bundled = resolve_base_model("bundled:all-MiniLM-L6-v2")
    assert (Path(bundled) / "config.json").is_file()
    assert resolve_base_model("") == bundled
    assert resolve_base_model("/models/mine") == "/models/mine"


# --- the config, from the run's settings ---------------------------------------------------------------------


def settings_yaml(**sections: dict[str, Any]) -> str:
    """A config file with two classes and ``sections`` (e.g. ``training={"epochs": 4}``)."""
    data: dict[str, Any] = {"classification": {"classes": ["ham", "spam"], "desc": "Is this SMS spam?"}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return yaml.safe_dump(data)


def test_from_settings_with_default_settings_is_the_default_config() -> None:
    cfg = TrainConfig.from_settings(load_settings(settings_yaml()), "/models/base")
    assert cfg == TrainConfig(model_path="/models/base", classes=["ham", "spam"])


# A value other than the default for every setting a TrainConfig carries.
NON_DEFAULT = {
    "training": {"epochs": 4, "learning_rate": 1e-4, "batch_size": 8, "max_length": 64, "warmup_ratio": 0.2,
                 "weight_decay": 0.0, "class_weighted_loss": False, "class_weight_power": 1.0,
                 "truncation_type": "head", "min_steps": 5, "head_learning_rate": 1e-3, "label_smoothing": 0.1},
    "system": {"seed": 3, "torch_threads": 2},
}


def test_from_settings_carries_every_setting_of_the_same_name() -> None:
    settings = load_settings(settings_yaml(**NON_DEFAULT, classification={"classes": ["a", "b", "c"]}))
    cfg = TrainConfig.from_settings(settings, "/models/base")
    expected = {"model_path": "/models/base", "classes": ["a", "b", "c"], **NON_DEFAULT["training"],
                **NON_DEFAULT["system"]}
    assert asdict(cfg) == expected
    # a field added to TrainConfig without a setting behind it would be missing from NON_DEFAULT
    assert {f.name for f in fields(TrainConfig)} == set(expected)
    default = TrainConfig(model_path="m", classes=["a", "b"])
    assert all(getattr(default, name) != value for part in NON_DEFAULT.values() for name, value in part.items())


def test_training_module_worked_examples_run() -> None:
    results = doctest.testmod(training)
    assert results.failed == 0 and results.attempted >= 3


# Refused when the settings are loaded, before any work (TrainConfig used to re-check each at run time).
@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"classification": {"classes": ["only"]}}, "classification.classes"),
        ({"classification": {"classes": ["a", "a"]}}, "classification.classes"),
        ({"training": {"truncation_type": "tail"}}, "training.truncation_type"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"training": {"warmup_ratio": 1.5}}, "training.warmup_ratio"),
        ({"system": {"torch_threads": 0}}, "system.torch_threads"),
        ({"training": {"min_steps": -1}}, "training.min_steps"),
        ({"training": {"head_learning_rate": 0.0}}, "training.head_learning_rate"),
        ({"training": {"label_smoothing": 1.0}}, "training.label_smoothing"),
        ({"training": {"label_smoothing": -0.1}}, "training.label_smoothing"),
        ({"training": {"class_weight_power": 1.5}}, "training.class_weight_power"),
        ({"training": {"model_path": "bundled:bert-huge"}}, "training.model_path"),
    ],
    ids=["one-class", "duplicate-classes", "bad-truncation", "zero-epochs", "warmup-above-one", "zero-threads",
         "negative-min-steps", "zero-head-lr", "smoothing-one", "smoothing-negative", "weight-power-above-one",
         "unknown-bundled-model"],
)
def test_bad_config_names_the_field(sections: dict[str, dict[str, Any]], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(settings_yaml(**sections))
    assert info.value.field == field


# --- training the tiny model ---------------------------------------------------------------------------------


def test_tiny_model_learns_the_synthetic_task(tiny_classifier_dir: Path) -> None:
    texts, labels = synthetic_task(90, seed=2)
    classifier = load_classifier(tiny_classifier_dir, threads=1)
    metrics = evaluate(labels, classifier.predict(texts), list(CLASSES))
    assert metrics.accuracy > 0.9, metrics
    assert all(metrics.per_class[c].recall > 0.8 for c in CLASSES)


def test_saved_folder_has_safetensors_tokenizer_labels_and_metadata(tiny_classifier_dir: Path) -> None:
    assert (tiny_classifier_dir / "model.safetensors").is_file()
    assert (tiny_classifier_dir / "tokenizer_config.json").is_file()
    config = json.loads((tiny_classifier_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "alpha", "1": "beta", "2": "gamma"}
    assert config["label2id"] == {"alpha": 0, "beta": 1, "gamma": 2}
    meta = json.loads((tiny_classifier_dir / META_FILE).read_text())
    assert (meta["classes"], meta["truncation_type"], meta["max_length"]) == (list(CLASSES), "head-tail", 32)


def test_transformers_pipeline_loads_it_and_returns_class_names(tiny_classifier_dir: Path) -> None:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(tiny_classifier_dir))
    texts = ["we shall review gamma numbers", "the alpha report", "bring beta notes to lunch"]
    out = classify(texts)
    assert [o["label"] for o in out] == ["gamma", "alpha", "beta"]
    assert load_classifier(tiny_classifier_dir, threads=1).predict(texts) == ["gamma", "alpha", "beta"]


def test_pipeline_with_truncation_agrees_with_our_prediction_for_a_head_classifier(
        tiny_bert_dir: Path, tmp_path: Path) -> None:
    """transformers.pipeline(truncation=True) on a head-truncated classifier: the same labels (and, at fp32, the
    same probabilities) as load_classifier().predict, for short texts and for texts 10-40 times max_length."""
    from transformers import pipeline

    texts, labels = synthetic_task(96, seed=1)
    out = tmp_path / "head"
    train_classifier(texts, labels, tiny_train_config(tiny_bert_dir, truncation_type="head"), out)
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert (tokenizer_config["model_max_length"], tokenizer_config["truncation_side"]) == (32, "right")

    rng = random.Random(4)
    filler = " ".join(rng.choices(FILLER, k=600))
    short, _ = synthetic_task(12, seed=8)
    long = [f"{c} {filler[: 300 * (i + 1)]}" for i, c in enumerate(CLASSES)]  # the class word survives the cut
    long += [f"{filler} {c}" for c in CLASSES]  # ...and here it is cut off: both sides must lose it alike
    classify = pipeline("text-classification", model=str(out), truncation=True, top_k=None)
    ours = load_classifier(out, threads=1, precision="fp32")
    for batch in (short, long):
        got = classify(batch)
        our_labels, our_probs = ours.predict_proba(batch)
        assert [max(o, key=lambda d: d["score"])["label"] for o in got] == our_labels
        for row, probs in zip(got, our_probs, strict=True):
            by_label = {d["label"]: d["score"] for d in row}
            assert [by_label[c] for c in ours.classes] == pytest.approx(list(probs), abs=1e-4)
    assert our_labels[:3] == list(CLASSES)  # the long texts were really classified by their head


def test_training_is_deterministic_under_the_seed(tiny_bert_dir: Path, tmp_path: Path) -> None:
    texts, labels = synthetic_task(40, seed=3)
    runs = {}
    for name, seed in [("a", 11), ("b", 11), ("c", 12)]:
        cfg = tiny_train_config(tiny_bert_dir, epochs=2, seed=seed)
        train_classifier(texts, labels, cfg, tmp_path / name)
        runs[name] = load_file(tmp_path / name / "model.safetensors")
    assert runs["a"].keys() == runs["b"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_any_number_of_classes_and_progress_reports(tiny_bert_dir: Path, tmp_path: Path) -> None:
    classes = ["c0", "c1", "c2", "c3", "c4"]
    texts = [f"item {i} of kind {classes[i % 5]}" for i in range(20)]
    labels = [classes[i % 5] for i in range(20)]
    calls: list[tuple[int, int]] = []
    cfg = tiny_train_config(tiny_bert_dir, classes=classes, epochs=2, batch_size=8)
    result = train_classifier(texts, labels, cfg, tmp_path / "five", progress=lambda s, t: calls.append((s, t)))

    assert result.steps == 6 and result.n_examples == 20
    assert calls == [(s, 6) for s in range(1, 7)]
    assert result.examples_per_s > 0 and result.final_loss > 0
    classifier = load_classifier(tmp_path / "five", threads=1)
    assert classifier.classes == classes
    predicted, probs = classifier.predict_proba(texts[:3])
    assert probs.shape == (3, 5) and set(predicted) <= set(classes)


def test_min_steps_adds_epochs_and_reports_them(tiny_bert_dir: Path, tmp_path: Path) -> None:
    texts, labels = synthetic_task(20, seed=4)
    calls: list[tuple[int, int]] = []
    cfg = tiny_train_config(tiny_bert_dir, epochs=2, batch_size=8, min_steps=10)
    result = train_classifier(texts, labels, cfg, tmp_path / "m", progress=lambda s, t: calls.append((s, t)))
    assert (result.epochs, result.steps) == (4, 12)  # 3 batches an epoch; 2 epochs would be only 6 steps
    assert calls[-1] == (12, 12)
    assert json.loads((tmp_path / "m" / META_FILE).read_text())["min_steps"] == 10


def test_head_learning_rate_applies_to_the_classification_head_only(tiny_bert_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_dir), num_labels=3)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = parameter_groups(model, 0.01, 1e-4, head_lr=1e-2)
    head = {names[id(p)] for g in groups if g["lr"] == 1e-2 for p in g["params"]}
    assert head == {"classifier.weight", "classifier.bias"}
    assert sum(len(g["params"]) for g in groups) == len(names)
    # decay stays off for biases and norm scales, in the head as elsewhere
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed and all(p.ndim >= 2 for p in decayed)
    assert {g["lr"] for g in parameter_groups(model, 0.01, 1e-4)} == {1e-4}


@pytest.mark.slow
def test_label_smoothing_keeps_the_model_less_certain(tiny_bert_dir: Path, tmp_path: Path) -> None:
    texts, labels = synthetic_task(60, seed=5)
    confidence = {}
    for smoothing in (0.0, 0.4):
        out = tmp_path / f"s{smoothing}"
        train_classifier(texts, labels, tiny_train_config(tiny_bert_dir, epochs=30, label_smoothing=smoothing), out)
        _, probs = load_classifier(out, threads=1).predict_proba(texts)
        confidence[smoothing] = float(probs.max(axis=1).mean())
    # with smoothing 0.4 over 3 classes the loss is lowest at a top probability of 0.73 (0.6 + 0.4 / 3)
    assert confidence[0.0] > 0.95
    assert confidence[0.4] == pytest.approx(0.6 + 0.4 / 3, abs=0.05)


def test_torch_threads_apply_during_training_only(tiny_bert_dir: Path, tmp_path: Path) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []
    try:
        cfg = tiny_train_config(tiny_bert_dir, epochs=1, torch_threads=1)
        record = lambda *_: seen.append(torch.get_num_threads())  # noqa: E731
        train_classifier(["alpha x", "beta y"], ["alpha", "beta"], cfg, tmp_path / "m", progress=record)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    assert seen == [1]
    assert after == 2


@pytest.mark.parametrize(
    ("texts", "labels", "match"),
    [
        (["a", "b"], ["alpha", "delta"], "delta"),
        (["a", "b"], ["alpha"], "2 texts but 1 labels"),
        ([], [], "no training examples"),
    ],
    ids=["label-not-a-class", "length-mismatch", "empty"],
)
def test_bad_training_data_raises_training_error(
    tiny_bert_dir: Path, tmp_path: Path, texts: list[str], labels: list[str], match: str
) -> None:
    with pytest.raises(TrainingError, match=match):
        train_classifier(texts, labels, tiny_train_config(tiny_bert_dir), tmp_path / "m")


def test_missing_base_model_raises_training_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="cannot load base model"):
        train_classifier(["alpha"], ["alpha"], tiny_train_config(tmp_path / "nothing-here"), tmp_path / "m")


def test_max_length_beyond_the_model_is_a_config_error(tiny_bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        train_classifier(["alpha"], ["alpha"], tiny_train_config(tiny_bert_dir, max_length=600), tmp_path / "m")
    assert info.value.field == "training.max_length"


def test_loading_a_folder_without_a_model_raises_training_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="cannot load classifier"):
        load_classifier(tmp_path)


# --- the real base model -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_minilm_learns_sms_spam_from_200_examples(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in SMS.read_text(encoding="utf-8").splitlines()]
    train, held_out = rows[:200], rows[200:700]
    # One thread: on a shared 2-core machine two threads contend and run several times slower.
    cfg = TrainConfig(model_path="bundled:all-MiniLM-L6-v2", classes=["ham", "spam"], torch_threads=1)
    result = train_classifier([r["text"] for r in train], [r["label"] for r in train], cfg, tmp_path / "sms")
    classifier = load_classifier(tmp_path / "sms", threads=1)
    predicted = classifier.predict([r["text"] for r in held_out])
    metrics = evaluate([r["label"] for r in held_out], predicted, ["ham", "spam"])
    assert (result.epochs, result.steps) == (8, 8 * 13)  # 200 examples: min_steps lifts 3 epochs to 8
    assert metrics.accuracy >= 0.93, metrics
    assert metrics.per_class["spam"].recall > 0.7, metrics


def test_training_stopped_and_resumed_from_its_checkpoint_ends_bit_for_bit_equal(tiny_bert_dir: Path,
                                                                                  tmp_path: Path) -> None:
    """Stop mid-epoch and again at an epoch boundary; each resume continues from the checkpoint, and the
    final weights equal an uninterrupted run's exactly (torch.equal on every tensor)."""
    texts, labels = synthetic_task(96, seed=1)
    cfg = tiny_train_config(tiny_bert_dir)
    straight = train_classifier(texts, labels, cfg, tmp_path / "straight")
    per_epoch = straight.steps // straight.epochs
    saves: list[int] = []
    ck_dir = tmp_path / "ck"
    for stop_at in (per_epoch // 2, per_epoch * 2):  # mid-epoch 1; the first batch of epoch 3
        asked, resumed_at = [0], saves[-1] if saves else 0

        def should_stop(stop_at: int = stop_at, resumed_at: int = resumed_at) -> bool:
            asked[0] += 1  # asked once before each optimizer step
            return asked[0] > stop_at - resumed_at

        ck = training.Checkpointing(ck_dir, should_stop=should_stop,
                                    on_save=lambda folder: saves.append(torch.load(
                                        folder / training.CHECKPOINT_FILE, weights_only=True)["position"]["step"]))
        stopped = train_classifier(texts, labels, cfg, tmp_path / "resumed", checkpoints=ck)
        assert stopped.stopped and stopped.steps == stop_at and saves[-1] == stop_at
        assert not (tmp_path / "resumed" / "model.safetensors").exists(), "a stopped run saves no classifier"
    resumed = train_classifier(texts, labels, cfg, tmp_path / "resumed", checkpoints=training.Checkpointing(ck_dir))
    assert not resumed.stopped and resumed.steps == straight.steps
    assert resumed.final_loss == straight.final_loss
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "bit-for-bit equal weights"


def test_a_checkpoint_for_other_examples_is_ignored(tiny_bert_dir: Path, tmp_path: Path) -> None:
    texts, labels = synthetic_task(48, seed=2)
    cfg = tiny_train_config(tiny_bert_dir)
    ck = training.Checkpointing(tmp_path / "ck", should_stop=lambda: True)
    assert train_classifier(texts, labels, cfg, tmp_path / "a", checkpoints=ck).stopped
    other = train_classifier(texts[1:], labels[1:], cfg, tmp_path / "b",
                             checkpoints=training.Checkpointing(tmp_path / "ck"))
    assert not other.stopped and other.steps == train_classifier(texts[1:], labels[1:], cfg, tmp_path / "c").steps
