"""Reduced-precision prediction: core.model.precision conversions, the accuracy guard in core.model.predict,
the setting.

Runs the tiny random-init BERT fine-tuned on the synthetic task (tests/fixtures/models.py) at bf16 and int8.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from core.config import load_settings
from core.errors import ConfigError
from core.model.classifier import Classifier, load_classifier
from core.model.precision import at_precision, int8_available, native_bf16, precision_candidates, resolve_precision
from core.model.predict import MAX_ACCURACY_DROP, PrecisionCheck, choose_precision, evaluate_classifier, keep_reduced
from tests.fixtures.models import CLASSES, synthetic_task

REDUCED = ["bf16", "int8"]


@pytest.fixture(scope="module")
def fp32(tiny_classifier_dir: Path) -> Classifier:
    return load_classifier(tiny_classifier_dir, threads=1)


@pytest.fixture(scope="module")
def task() -> tuple[list[str], list[str]]:
    return synthetic_task(90, seed=11)


# --- resolving the setting -------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "int8", "bf16", "expected"), [
    ("auto", True, True, "int8"), ("auto", False, True, "bf16"), ("auto", False, False, "fp32"),
    ("fp32", True, True, "fp32"), ("bf16", True, False, "bf16"), ("int8", False, False, "int8"),
], ids=["auto-int8", "auto-no-int8-bf16-cpu", "auto-neither", "fp32", "bf16-forced", "int8-forced"])
def test_resolve_precision(setting: str, int8: bool, bf16: bool, expected: str) -> None:
    assert resolve_precision(setting, int8=int8, bf16_in_hardware=bf16) == expected


@pytest.mark.parametrize(("setting", "int8", "bf16", "expected"), [
    ("auto", True, True, ["int8", "bf16"]), ("auto", True, False, ["int8"]), ("auto", False, False, []),
    ("fp32", True, True, []), ("bf16", True, True, ["bf16"]),
], ids=["auto-both", "auto-int8-only", "auto-neither", "fp32", "bf16"])
def test_precision_candidates(setting: str, int8: bool, bf16: bool, expected: list[str]) -> None:
    assert precision_candidates(setting, int8=int8, bf16_in_hardware=bf16) == expected


def test_auto_follows_this_machine() -> None:
    expected = "int8" if int8_available() else ("bf16" if native_bf16() else "fp32")
    assert resolve_precision("auto") == expected
    assert int8_available()  # the torch this project pins has it; the day it does not, "auto" changes


@pytest.mark.parametrize("setting", ["fp16", "", "INT8"], ids=["fp16", "empty", "upper-case"])
def test_unknown_precision_names_the_setting(setting: str) -> None:
    # refused when the settings are loaded, before anything is trained; the prediction step trusts the value
    base = {"classification": {"classes": ["ham", "spam"], "desc": "Is this SMS spam?"}}
    with pytest.raises(ConfigError) as info:
        load_settings(yaml.safe_dump({**base, "training": {"predict_precision": setting}}))
    assert info.value.field == "training.predict_precision"
    assert repr(setting) in str(info.value)


def test_config_validates_predict_precision() -> None:
    base = {"classification": {"classes": ["ham", "spam"], "desc": "Is this SMS spam?"}}
    assert load_settings(yaml.safe_dump(base)).training.predict_precision == "auto"
    bad = {**base, "training": {"predict_precision": "fp16"}}
    with pytest.raises(ConfigError) as info:
        load_settings(yaml.safe_dump(bad), source="job.yaml")
    assert info.value.field == "training.predict_precision"
    assert "fp16" in str(info.value)
    env = load_settings(yaml.safe_dump(base), {"BOOTSTRAPPER_TRAINING__PREDICT_PRECISION": "int8"})
    assert env.training.predict_precision == "int8"


# --- converting a model ----------------------------------------------------------------------------------


def test_bf16_converts_a_copy(fp32: Classifier) -> None:
    model = fp32._model
    reduced = at_precision(model, "bf16")
    assert reduced is not model
    assert {p.dtype for p in reduced.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the original is untouched


def test_int8_quantizes_every_linear_layer_of_a_copy(fp32: Classifier) -> None:
    model = fp32._model
    reduced = at_precision(model, "int8")
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    quantized = {n for n, m in reduced.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)}
    assert linear and set(linear) == quantized
    assert all(isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if n in quantized)


def test_fp32_is_the_model_itself(fp32: Classifier) -> None:
    assert at_precision(fp32._model, "fp32") is fp32._model
    assert fp32.at_precision("fp32") is fp32


@pytest.mark.parametrize("precision", REDUCED)
def test_reduced_classifier_predicts_like_float32(fp32: Classifier, precision: str,
                                                  task: tuple[list[str], list[str]]) -> None:
    texts, labels = task
    reduced = fp32.at_precision(precision)
    assert (reduced.precision, fp32.precision) == (precision, "fp32")
    assert reduced.classes == fp32.classes == list(CLASSES)
    predicted, probs = reduced.predict_proba(texts, batch_size=16)
    _, fp32_probs = fp32.predict_proba(texts, batch_size=16)
    assert probs.dtype == fp32_probs.dtype and probs.shape == (len(texts), len(CLASSES))
    assert probs.sum(axis=1) == pytest.approx(1.0, abs=1e-4)
    assert abs(probs - fp32_probs).max() < 0.1  # close to float32, yet not the same computation
    assert abs(probs - fp32_probs).max() > 0
    assert evaluate_classifier(reduced, texts, labels).accuracy > 0.9  # it still does the task


def test_only_a_float32_classifier_is_converted(fp32: Classifier) -> None:
    from core.errors import TrainingError

    with pytest.raises(TrainingError, match="float32"):
        fp32.at_precision("bf16").at_precision("int8")


def test_load_classifier_at_a_precision(tiny_classifier_dir: Path) -> None:
    assert load_classifier(tiny_classifier_dir, precision="int8").precision == "int8"
    assert load_classifier(tiny_classifier_dir).precision == "fp32"


# --- the accuracy guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fp32_acc", "reduced_acc", "kept"), [
    (0.990, 0.990, True), (0.990, 0.995, True), (0.990, 0.985, True), (0.990, 0.984, False), (1.0, 0.5, False),
], ids=["equal", "better", "exactly-half-a-point", "just-over", "far-worse"])
def test_keep_reduced(fp32_acc: float, reduced_acc: float, kept: bool) -> None:
    assert keep_reduced(fp32_acc, reduced_acc) is kept


def test_one_flip_in_200_is_within_the_allowance() -> None:
    # the float subtraction 199/200 - 198/200 is a hair above 0.005; the guard must still allow it
    assert keep_reduced(199 / 200, 198 / 200, MAX_ACCURACY_DROP)
    assert not keep_reduced(200 / 200, 198 / 200, MAX_ACCURACY_DROP)


@pytest.mark.parametrize("precision", REDUCED)
def test_guard_keeps_a_reduced_model_that_is_accurate_enough(fp32: Classifier, precision: str,
                                                             task: tuple[list[str], list[str]]) -> None:
    texts, labels = task
    chosen, check = choose_precision(fp32, precision, texts, labels, batch_size=16, max_drop=1.0)
    assert chosen.precision == check.used == precision
    assert check.requested == precision and check.checked_on == len(texts)
    assert check.fp32_accuracy == evaluate_classifier(fp32, texts, labels).accuracy
    assert check.reduced_accuracy == evaluate_classifier(chosen, texts, labels).accuracy


@pytest.mark.parametrize("precision", REDUCED)
def test_guard_falls_back_to_float32_when_the_drop_is_too_big(fp32: Classifier, precision: str,
                                                              task: tuple[list[str], list[str]]) -> None:
    texts, labels = task
    # A negative allowance demands the reduced model beat float32 by over 5 points, which it cannot here.
    chosen, check = choose_precision(fp32, precision, texts, labels, max_drop=-0.05)
    assert chosen is fp32
    assert check.used == "fp32" and check.requested == precision
    assert "loses more than" in check.reason
    assert check.fp32_accuracy is not None and check.reduced_accuracy is not None


def test_guard_falls_back_when_reduced_labels_are_worse(fp32: Classifier) -> None:
    # Reference labels that float32 matches exactly: any prediction int8 changes costs accuracy. Texts with
    # no class keyword leave the tiny model unsure, which is where int8 rounding flips answers.
    texts = [" ".join(["budget", "coffee", "notes", "monday", "team"][: 1 + i % 5]) + f" {i}" for i in range(120)]
    reference = fp32.predict(texts)
    reduced_labels = fp32.at_precision("int8").predict(texts)
    flips = sum(a != b for a, b in zip(reference, reduced_labels))
    chosen, check = choose_precision(fp32, "int8", texts, reference)
    assert check.fp32_accuracy == 1.0
    assert check.reduced_accuracy == pytest.approx(1 - flips / len(texts))
    assert (check.used == "int8") is (flips / len(texts) <= MAX_ACCURACY_DROP)
    assert chosen.precision == check.used


def test_guard_needs_labeled_texts(fp32: Classifier) -> None:
    chosen, check = choose_precision(fp32, "int8", [], [])
    assert chosen is fp32 and check.used == "fp32" and "no labeled texts" in check.reason


def test_float32_requested_skips_the_check(fp32: Classifier) -> None:
    chosen, check = choose_precision(fp32, "fp32", ["a"], ["alpha"])
    assert chosen is fp32
    assert check == PrecisionCheck("fp32", "fp32", "float32 requested")
    assert check.to_dict()["used"] == "fp32"


def test_guard_rejects_mismatched_reference(fp32: Classifier) -> None:
    with pytest.raises(ConfigError):
        choose_precision(fp32, "bf16", ["a", "b"], ["alpha"])


def test_guard_uses_a_known_float32_accuracy(fp32: Classifier, task: tuple[list[str], list[str]]) -> None:
    texts, labels = task
    measured = evaluate_classifier(fp32, texts, labels).accuracy
    _, reused = choose_precision(fp32, "bf16", texts, labels, fp32_accuracy=measured, max_drop=1.0)
    _, fresh = choose_precision(fp32, "bf16", texts, labels, max_drop=1.0)
    assert reused == fresh
    # a float32 figure far above what bf16 reaches (as if measured elsewhere) is taken as given and rejects it
    chosen, check = choose_precision(fp32, "bf16", texts, labels, fp32_accuracy=measured + 0.5)
    assert check.fp32_accuracy == measured + 0.5 and check.used == "fp32" and chosen is fp32


def test_auto_tries_each_candidate_before_float32(fp32: Classifier, task: tuple[list[str], list[str]]) -> None:
    texts, labels = task
    chosen, check = choose_precision(fp32, "auto", texts, labels, max_drop=-0.05)
    assert chosen is fp32 and check.used == "fp32"
    tried = precision_candidates("auto")
    assert tried and all(f"{p} loses more than" in check.reason for p in tried)
    chosen, check = choose_precision(fp32, "auto", texts, labels, max_drop=1.0)
    assert check.used == chosen.precision == tried[0]
