"""Tests of core.config: validation errors, environment overrides, secret handling, fingerprint, the example."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from core.config import Settings, config_fingerprint, load_settings
from core.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "config.yaml"
SECRET = "sk-test-0123456789-do-not-leak"

BASE: dict[str, Any] = {"classification": {"classes": ["ham", "spam"], "desc": "Is this SMS spam?"}}


def with_(section: str, **fields: Any) -> str:
    """YAML text of BASE with ``fields`` set in ``section``."""
    data = json.loads(json.dumps(BASE))
    data.setdefault(section, {}).update(fields)
    return yaml.safe_dump(data)


def load_error(yaml_text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(yaml_text, environ, source="test.yaml")
    return info.value


# --- validation errors -------------------------------------------------------------------------------

INVALID: list[Any] = [
    pytest.param(with_("classification", classes=["ham"]), "classification.classes", ["at least 2", "['ham']"],
                 id="one-class"),
    pytest.param(with_("classification", classes=[]), "classification.classes", ["at least 2"], id="no-classes"),
    pytest.param(with_("classification", classes=["ham", "spam", "ham"]), "classification.classes",
                 ["duplicate", "'ham'"], id="duplicate-class"),
    pytest.param(with_("classification", classes=["ham", "Spam", "spam"]), "classification.classes",
                 ["duplicate", "'spam'", "'Spam'"], id="duplicate-class-ignoring-case"),
    pytest.param(with_("classification", classes=["ham", ""]), "classification.classes", ["empty", "['ham', '']"],
                 id="empty-class-name"),
    pytest.param(with_("classification", classes=["ham", "   "]), "classification.classes", ["empty"],
                 id="blank-class-name"),
    pytest.param(with_("classification", classes="ham,spam"), "classification.classes", ["list", "'ham,spam'"],
                 id="classes-not-a-list"),
    pytest.param(with_("classification", desc="  "), "classification.desc", ["empty"], id="blank-desc"),
    pytest.param(with_("system", required_accuracy=0), "system.required_accuracy", ["greater than 0", "got 0"],
                 id="accuracy-zero"),
    pytest.param(with_("system", required_accuracy=1.5), "system.required_accuracy", ["less than or equal to 1",
                 "got 1.5"], id="accuracy-above-one"),
    pytest.param(with_("system", required_accuracy=-0.2), "system.required_accuracy", ["got -0.2"],
                 id="accuracy-negative"),
    pytest.param(with_("system", label_processes=0), "system.label_processes", ["greater than or equal to 1",
                 "got 0"], id="no-label-processes"),
    pytest.param(with_("system", label_processes=64), "system.label_processes", ["less than or equal to 32"],
                 id="too-many-label-processes"),
    pytest.param(with_("training", truncation_type="tail"), "training.truncation_type", ["'head'", "'head-tail'",
                 "got 'tail'"], id="unknown-truncation"),
    pytest.param(with_("training", truncation_type="head_tail"), "training.truncation_type",
                 ["got 'head_tail' (did you mean 'head-tail'?)"], id="misspelt-truncation"),
    pytest.param(with_("training", selection="smart"), "training.selection", ["got 'smart'"], id="unknown-selection"),
    pytest.param(with_("training", selection="uncertain"), "training.selection",
                 ["got 'uncertain' (did you mean 'uncertainty'?)"], id="misspelt-selection"),
    pytest.param(with_("training", predict_precision="fp16"), "training.predict_precision",
                 ["'auto', 'fp32', 'bf16' or 'int8'", "got 'fp16'"], id="unknown-precision"),
    pytest.param(with_("training", model_path="bundled:bert-huge"), "training.model_path",
                 ["unknown bundled model", "'bundled:all-MiniLM-L6-v2'", "got 'bundled:bert-huge'"],
                 id="unknown-bundled-model"),
    pytest.param(with_("meta_datagen", meta_datagen_keys=["rules_creation_details", "label_detials"]),
                 "meta_datagen.meta_datagen_keys[1]",
                 ["'rules_creation_details' or 'label_details'", "got 'label_detials' (did you mean 'label_details'?)"],
                 id="misspelt-meta-datagen-key"),
    pytest.param(with_("meta_datagen", meta_datagen_keys=["Label_Details"]), "meta_datagen.meta_datagen_keys[0]",
                 ["got 'Label_Details'"], id="wrong-case-meta-datagen-key"),
    pytest.param(with_("system", chunk_size=True), "system.chunk_size", ["not a boolean", "got True"],
                 id="boolean-chunk-size"),
    pytest.param(with_("system", torch_threads=True), "system.torch_threads", ["not a boolean"],
                 id="boolean-torch-threads"),
    pytest.param(with_("training", learning_rate=True), "training.learning_rate", ["not a boolean"],
                 id="boolean-learning-rate"),
    pytest.param(with_("training", max_iter=3), "training.max_iter", ["unknown field", "max_iters"],
                 id="typo-nested-key"),
    pytest.param(with_("classification", clases=["a", "b"]), "classification.clases", ["unknown field"],
                 id="typo-in-classification"),
    pytest.param(with_("trainng", max_iters=3), "trainng", ["unknown field", "'training'"], id="typo-section"),
    pytest.param(with_("Training", max_iters=3), "Training", ["unknown field"], id="wrong-case-section"),
    pytest.param(with_("training", learning_rate=0), "training.learning_rate", ["greater than 0"],
                 id="zero-learning-rate"),
    pytest.param(with_("training", warmup_ratio=1.0), "training.warmup_ratio", ["less than 1"], id="warmup-ratio-1"),
    pytest.param(with_("training", min_steps=-1), "training.min_steps", ["greater than or equal to 0", "got -1"],
                 id="negative-min-steps"),
    pytest.param(with_("training", head_learning_rate=0), "training.head_learning_rate", ["greater than 0"],
                 id="zero-head-learning-rate"),
    pytest.param(with_("training", label_smoothing=1.0), "training.label_smoothing", ["less than 1", "got 1.0"],
                 id="label-smoothing-1"),
    pytest.param(with_("training", class_weight_power=2), "training.class_weight_power",
                 ["less than or equal to 1", "got 2"], id="class-weight-power-2"),
    pytest.param(yaml.safe_dump(BASE) + "system: {llm_timeout_s: .inf}\n", "system.llm_timeout_s", ["finite"],
                 id="infinite-timeout"),
    pytest.param(with_("training", model_path=""), "training.model_path", ["at least 1 character"],
                 id="empty-model-path"),
    pytest.param(with_("path", output=""), "path.output", ["at least 1 character"], id="empty-output"),
    pytest.param("system: {}\n", "classification", ["required field is missing"], id="missing-classification"),
    pytest.param("", "classification", ["required field is missing"], id="empty-file"),
    pytest.param(with_("training", max_iters="many"), "training.max_iters", ["integer", "'many'"],
                 id="not-an-int"),
    pytest.param("classification: [ham, spam\n", "", ["invalid YAML", "test.yaml", "line 2"], id="invalid-yaml"),
    pytest.param("- ham\n- spam\n", "", ["mapping", "list"], id="yaml-is-a-list"),
    pytest.param("just a string\n", "", ["mapping", "str"], id="yaml-is-a-scalar"),
    pytest.param(yaml.safe_dump(BASE) + "classification: {}\n", "", ["duplicate key 'classification'"],
                 id="duplicate-yaml-key"),
]

SIZES = [
    ("system", "chunk_size"), ("system", "concurrency_limit"), ("system", "lease_ttl_s"),
    ("system", "torch_threads"), ("training", "max_iters"), ("training", "test_set_size"),
    ("training", "train_set_size"), ("training", "train_set_increment"), ("training", "epochs"),
    ("training", "batch_size"), ("training", "max_length"), ("training", "predict_batch_size"),
    ("training", "predict_shards"), ("api", "max_tokens"), ("api", "rules_max_tokens"),
]


@pytest.mark.parametrize(("yaml_text", "field", "fragments"), INVALID)
def test_invalid_config_names_field_and_problem(yaml_text: str, field: str, fragments: list[str]) -> None:
    error = load_error(yaml_text)
    assert error.field == field
    for fragment in fragments:
        assert fragment in str(error)


@pytest.mark.parametrize(("section", "name"), SIZES, ids=[f"{s}.{n}" for s, n in SIZES])
@pytest.mark.parametrize("value", [0, -3], ids=["zero", "negative"])
def test_every_size_must_be_at_least_one(section: str, name: str, value: int) -> None:
    error = load_error(with_(section, **{name: value}))
    assert error.field == f"{section}.{name}"
    assert "greater than or equal to 1" in str(error) and f"got {value}" in str(error)


def test_typo_message_reads_like_a_sentence() -> None:
    assert str(load_error(with_("training", max_iter=3))).startswith("training.max_iter: unknown field")


@pytest.mark.parametrize("name", ["large_api_key", "small_api_key"])
def test_api_key_in_file_is_rejected_without_echoing_it(name: str) -> None:
    error = load_error(with_("api", **{name: SECRET}))
    assert error.field == f"api.{name}"
    assert f"BOOTSTRAPPER_API__{name.upper()}" in str(error)
    assert SECRET not in str(error)


def test_all_errors_are_reported_and_field_is_the_first() -> None:
    text = yaml.safe_dump(
        {
            "classification": {"classes": ["ham"], "desc": "d"},
            "training": {"max_iter": 2, "truncation_type": "tail", "test_set_size": 0},
            "api": {"large_api_key": SECRET},
        }
    )
    error = load_error(text)
    message = str(error)
    assert error.field == "api.large_api_key"
    for fragment in ["classification.classes", "training.max_iter: unknown field", "training.truncation_type",
                     "training.test_set_size"]:
        assert fragment in message
    assert SECRET not in message


# --- environment ---------------------------------------------------------------------------------------


def test_env_overrides_nested_field_and_coerces_it() -> None:
    settings = load_settings(yaml.safe_dump(BASE), {"BOOTSTRAPPER_TRAINING__MAX_ITERS": "3"})
    assert settings.training.max_iters == 3


def test_env_overrides_a_list_given_as_json() -> None:
    environ = {"BOOTSTRAPPER_CLASSIFICATION__CLASSES": '["a", "b", "c"]'}
    assert load_settings(yaml.safe_dump(BASE), environ).classification.classes == ["a", "b", "c"]


def test_env_wins_over_file_and_keeps_the_rest_of_the_section() -> None:
    text = with_("training", max_iters=4, epochs=7)
    settings = load_settings(text, {"BOOTSTRAPPER_TRAINING__MAX_ITERS": "2"})
    assert (settings.training.max_iters, settings.training.epochs) == (2, 7)


def test_env_alone_can_supply_required_fields() -> None:
    environ = {"BOOTSTRAPPER_CLASSIFICATION__CLASSES": '["x","y"]', "BOOTSTRAPPER_CLASSIFICATION__DESC": "d"}
    assert load_settings("", environ).classification.classes == ["x", "y"]


def test_env_names_are_case_insensitive_and_unrelated_variables_ignored() -> None:
    environ = {"bootstrapper_system__seed": "7", "BOOTSTRAPPER_CONFIG": "/somewhere.yaml", "HOME": "/root",
               "SEED": "9"}
    assert load_settings(yaml.safe_dump(BASE), environ).system.seed == 7


@pytest.mark.parametrize(
    ("environ", "field", "fragments"),
    [
        pytest.param({"BOOTSTRAPPER_TRAINING__MAX_ITER": "3"}, "training.max_iter",
                     ["unknown field", "BOOTSTRAPPER_TRAINING__MAX_ITER"], id="typo-in-env-name"),
        pytest.param({"BOOTSTRAPPER_CLASSIFICATION__CLASSES": "ham,spam"}, "classification.classes",
                     ["BOOTSTRAPPER_CLASSIFICATION__CLASSES", "JSON", "'ham,spam'"], id="list-not-json"),
        pytest.param({"BOOTSTRAPPER_SYSTEM__REQUIRED_ACCURACY": "95"}, "system.required_accuracy",
                     ["got '95'", "from environment BOOTSTRAPPER_SYSTEM__REQUIRED_ACCURACY"], id="bad-value"),
    ],
)
def test_invalid_env_values_are_reported_with_their_variable(
    environ: dict[str, str], field: str, fragments: list[str]
) -> None:
    error = load_error(yaml.safe_dump(BASE), environ)
    assert error.field == field
    for fragment in fragments:
        assert fragment in str(error)


def test_empty_env_value_means_unset() -> None:
    environ = {"BOOTSTRAPPER_TRAINING__MAX_ITERS": "", "BOOTSTRAPPER_API__LARGE_API_KEY": ""}
    settings = load_settings(with_("training", max_iters=4), environ)
    assert settings.training.max_iters == 4 and settings.api.large_api_key is None


def test_core_never_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOTSTRAPPER_TRAINING__MAX_ITERS", "1")
    monkeypatch.setenv("BOOTSTRAPPER_API__LARGE_API_KEY", SECRET)
    settings = load_settings(yaml.safe_dump(BASE))
    assert settings.training.max_iters == 5 and settings.api.large_api_key is None
    direct = Settings(classification={"classes": ["a", "b"], "desc": "d"})  # type: ignore[arg-type]
    assert direct.training.max_iters == 5


def test_api_keys_from_env_are_usable_but_never_shown() -> None:
    environ = {"BOOTSTRAPPER_API__LARGE_API_KEY": SECRET, "BOOTSTRAPPER_API__SMALL_API_KEY": SECRET + "-small"}
    settings = load_settings(yaml.safe_dump(BASE), environ)
    assert settings.api.large_api_key is not None and settings.api.small_api_key is not None
    assert settings.api.large_api_key.get_secret_value() == SECRET
    assert settings.api.small_api_key.get_secret_value() == SECRET + "-small"
    redacted = settings.redacted_dict()
    assert redacted["api"]["large_api_key"] == "***" and redacted["api"]["small_api_key"] == "***"
    for shown in (json.dumps(redacted), repr(settings), str(settings), repr(settings.api)):
        assert SECRET not in shown


def test_redacted_dict_keeps_absent_keys_absent_and_is_json() -> None:
    redacted = load_settings(yaml.safe_dump(BASE)).redacted_dict()
    assert redacted["api"]["large_api_key"] is None
    assert json.loads(json.dumps(redacted))["classification"]["classes"] == ["ham", "spam"]


def test_settings_are_immutable() -> None:
    settings = load_settings(yaml.safe_dump(BASE))
    with pytest.raises(ValidationError):
        settings.training.max_iters = 9  # type: ignore[misc]


def test_meta_datagen_keys_from_the_environment_are_checked_too() -> None:
    environ = {"BOOTSTRAPPER_META_DATAGEN__META_DATAGEN_KEYS": '["label_detail"]'}
    error = load_error(yaml.safe_dump(BASE), environ)
    assert error.field == "meta_datagen.meta_datagen_keys[0]"
    assert "did you mean 'label_details'?" in str(error)
    assert "from environment BOOTSTRAPPER_META_DATAGEN__META_DATAGEN_KEYS" in str(error)


def test_every_meta_datagen_kind_is_accepted_and_the_report_uses_the_same_names() -> None:
    from core.config import META_DATAGEN_KEYS
    from core.report.meta_dataset import META_KEYS

    settings = load_settings(with_("meta_datagen", meta_datagen_keys=list(META_DATAGEN_KEYS)))
    assert settings.meta_datagen.meta_datagen_keys == list(META_DATAGEN_KEYS) == list(META_KEYS)


def test_booleans_stay_accepted_where_a_boolean_is_meant() -> None:
    settings = load_settings(with_("training", class_weighted_loss=False), {"BOOTSTRAPPER_SYSTEM__CHUNK_SIZE": "12"})
    assert settings.training.class_weighted_loss is False and settings.system.chunk_size == 12


# --- fingerprint -----------------------------------------------------------------------------------------

# (section, field, a non-default value, whether changing it changes finished work)
FINGERPRINT_CASES: list[tuple[str, str, Any, bool]] = [
    ("classification", "classes", ["spam", "ham"], True),
    ("classification", "desc", "Another description.", True),
    ("classification", "predict_on_whole_set_at_the_end", False, False),
    ("system", "required_accuracy", 0.5, False),
    ("system", "chunk_size", 999, True),
    ("system", "concurrency_limit", 3, False),
    ("system", "label_processes", 1, False),
    ("system", "llm_timeout_s", 5.0, False),
    ("system", "llm_max_retries", 0, False),
    ("system", "seed", 7, True),
    ("system", "torch_threads", 2, False),
    ("system", "flush_interval_s", 9.0, False),
    ("system", "lease_ttl_s", 60, False),
    ("training", "max_iters", 9, False),
    ("training", "model_path", "/models/other", True),
    ("training", "test_set_size", 50, True),
    ("training", "train_set_increment", 50, True),
    ("training", "train_set_size", 50, True),
    ("training", "truncation_type", "head", True),
    ("training", "epochs", 1, True),
    ("training", "learning_rate", 1e-3, True),
    ("training", "batch_size", 8, True),
    ("training", "max_length", 64, True),
    ("training", "warmup_ratio", 0.0, True),
    ("training", "weight_decay", 0.0, True),
    ("training", "class_weighted_loss", False, True),
    ("training", "min_steps", 0, True),
    ("training", "class_weight_power", 0.25, True),
    ("training", "head_learning_rate", 1e-3, True),
    ("training", "label_smoothing", 0.1, True),
    ("training", "selection", "balanced", True),
    ("training", "predict_batch_size", 8, False),
    ("training", "predict_shards", 4, False),
    ("training", "predict_precision", "fp32", False),
    ("meta_datagen", "do_meta_datagen", True, True),
    ("meta_datagen", "meta_datagen_keys", ["label_details"], True),
    ("meta_datagen", "meta_datagen_extras", ["x"], True),
    ("api", "large_model", "openai/other-large", True),
    ("api", "small_model", "openai/other-small", True),
    ("api", "large_base_url", "http://127.0.0.1:1/v1", False),
    ("api", "small_base_url", "http://127.0.0.1:2/v1", False),
    ("api", "temperature", 0.7, True),
    ("api", "max_tokens", 10, True),
    ("api", "rules_max_tokens", 10, True),
    ("api", "large_api_key", "sk-other", False),
    ("api", "small_api_key", "sk-other", False),
    ("api", "large_params", {"reasoning_effort": "low"}, True),  # can change every label
    ("api", "small_params", {"api_version": "2024-10-21"}, False),  # only where the call goes
    ("path", "input", "s3://bucket/elsewhere", False),
    ("path", "output", "s3://bucket/out", False),
]


def _settings_with(section: str, name: str, value: Any) -> Settings:
    if name.endswith("_api_key"):
        return load_settings(yaml.safe_dump(BASE), {f"BOOTSTRAPPER_{section}__{name}".upper(): value})
    return load_settings(with_(section, **{name: value}))


def test_fingerprint_is_hex_sha256_and_stable_across_formatting() -> None:
    one = load_settings(yaml.safe_dump(BASE))
    two = load_settings("classification:\n  desc: Is this SMS spam?\n  classes:\n    - ham\n    - spam\n")
    assert re.fullmatch(r"[0-9a-f]{64}", config_fingerprint(one))
    assert config_fingerprint(one) == config_fingerprint(two)


@pytest.mark.parametrize(
    ("section", "name", "value", "changes"),
    FINGERPRINT_CASES,
    ids=[f"{s}.{n}" for s, n, _, _ in FINGERPRINT_CASES],
)
def test_fingerprint_changes_only_for_work_changing_fields(section: str, name: str, value: Any, changes: bool) -> None:
    base = load_settings(yaml.safe_dump(BASE))
    edited = _settings_with(section, name, value)
    assert getattr(getattr(edited, section), name) != getattr(getattr(base, section), name)
    assert (config_fingerprint(edited) != config_fingerprint(base)) is changes


def test_fingerprint_cases_cover_every_field() -> None:
    # A new setting must be classified here as work-changing or not.
    every = {
        (section, name)
        for section, info in Settings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        for name in info.annotation.model_fields
    }
    assert every == {(s, n) for s, n, _, _ in FINGERPRINT_CASES}


# --- the shipped example -----------------------------------------------------------------------------------


def test_example_config_loads_with_documented_values() -> None:
    settings = load_settings(EXAMPLE.read_text(encoding="utf-8"), {}, source=str(EXAMPLE))
    assert settings.classification.classes == ["ham", "spam"]
    assert len(settings.classification.desc) > 200
    assert (settings.path.input, settings.path.output) == ("sms", "../output/sms")
    assert (settings.api.large_model, settings.api.small_model) == ("openai/oracle-large", "openai/oracle-small")
    assert settings.api.large_base_url is None and settings.api.small_base_url is None
    t = settings.training
    assert (t.test_set_size, t.train_set_size, t.train_set_increment, t.max_iters) == (200, 200, 200, 3)
    assert settings.system.required_accuracy == 0.90


def test_example_config_documents_every_field() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for section, info in Settings.model_fields.items():
        assert re.search(rf"^{section}:", text, re.MULTILINE), section
        assert isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        for name in info.annotation.model_fields:
            if name.endswith("_api_key"):
                assert f"BOOTSTRAPPER_API__{name.upper()}" in text
            else:
                assert re.search(rf"^\s+#?\s*{name}:", text, re.MULTILINE), f"{section}.{name}"
