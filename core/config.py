"""Run settings: one YAML text plus ``BOOTSTRAPPER_*`` environment overrides, validated once.

``load_settings(yaml_text, environ)`` is the only way in. Values from ``environ`` win over the file; nested
fields use ``__`` (``BOOTSTRAPPER_TRAINING__MAX_ITERS=3``) and lists are JSON
(``BOOTSTRAPPER_CLASSIFICATION__CLASSES='["ham","spam"]'``). Every problem found (bad YAML, unknown keys,
out-of-range values, API keys written into the file) is gathered into one ``ConfigError`` whose ``field`` is
the dotted path of the first, so a run fails before any work starts; a misspelt field name or value gets a
"did you mean" suggestion. Every value is checked here and only here: the modules that use a setting trust it,
except for what only the base model can tell (whether ``training.max_length`` fits it).

This module does not read files or ``os.environ`` (the handler passes both in), and does not resolve relative
paths: ``path.input``/``path.output`` are returned exactly as written.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from core.errors import ConfigError

ENV_PREFIX = "BOOTSTRAPPER_"
ENV_NESTED_DELIMITER = "__"
# (section, field) pairs that may only come from the environment and never appear in dumps.
SECRET_FIELDS: tuple[tuple[str, str], ...] = (("api", "large_api_key"), ("api", "small_api_key"))

# The allowed values of settings that other modules branch on, defined here once for those modules to import, so
# that what the config accepts and what the code handles cannot drift apart.
BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"
TruncationType = Literal["head", "head-tail"]
TRUNCATION_TYPES: tuple[str, ...] = get_args(TruncationType)
Precision = Literal["fp32", "bf16", "int8"]  # what a classifier can predict at
PrecisionSetting = Literal["auto", Precision]
MetaDatagenKey = Literal["rules_creation_details", "label_details"]  # kinds of core.report.meta_dataset examples
META_DATAGEN_KEYS: tuple[str, ...] = get_args(MetaDatagenKey)

Size = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML reads `yes`/`true` as a boolean, which pydantic would take for 1 (`chunk_size: true` is a
        # one-character chunk); JSON in an environment variable can say `true` too.
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and {int, float} & _plain_types(annotation):
            raise ValueError("must be a number, not a boolean")
        return value


def _plain_types(annotation: Any) -> set[Any]:
    """``int | None`` -> {int, None}; ``Annotated[int, ...]`` -> {int}; ``float`` -> {float}."""
    if get_origin(annotation) is Annotated:
        return _plain_types(get_args(annotation)[0])
    args = get_args(annotation)
    return set().union(*map(_plain_types, args)) if args and get_origin(annotation) is not Literal else {annotation}


class ClassificationSettings(_Section):
    classes: list[str]
    desc: str
    predict_on_whole_set_at_the_end: bool = True

    @field_validator("classes")
    @classmethod
    def _classes_are_distinct(cls, classes: list[str]) -> list[str]:
        if len(classes) < 2:
            raise ValueError("at least 2 classes are needed")
        if any(not name.strip() for name in classes):
            raise ValueError("class names must not be empty")
        # "Spam" and "spam" would be one label to an LLM but two to the classifier.
        seen: dict[str, str] = {}
        for name in classes:
            key = name.strip().casefold()
            if key in seen:
                raise ValueError(f"duplicate class {name!r} (same as {seen[key]!r}, ignoring case)")
            seen[key] = name
        return classes

    @field_validator("desc")
    @classmethod
    def _desc_not_blank(cls, desc: str) -> str:
        if not desc.strip():
            raise ValueError("the description must not be empty")
        return desc


class SystemSettings(_Section):
    required_accuracy: float = Field(0.90, gt=0, le=1)
    chunk_size: Size = 2000
    concurrency_limit: Size = 50
    # Processes the labeling calls are spread over (each takes a share of concurrency_limit): litellm's
    # ~3 ms of CPU per call saturates one core at ~300 calls/s. 1 keeps labeling in the job's own process.
    label_processes: int = Field(2, ge=1, le=32)
    llm_timeout_s: PositiveFloat = 60.0
    llm_max_retries: int = Field(4, ge=0)
    seed: int = Field(42, ge=0)
    torch_threads: Size | None = None
    flush_interval_s: PositiveFloat = 2.0
    lease_ttl_s: Size = 900


class TrainingSettings(_Section):
    """How the classifier is trained, selected for and predicted with.

    These defaults are the only ones: ``core.model.training.TrainConfig`` reads its own from here.
    """

    max_iters: Size = 5
    model_path: NonEmptyStr = BUNDLED_MODEL
    test_set_size: Size = 200
    train_set_increment: Size = 200
    train_set_size: Size = 200
    truncation_type: TruncationType = "head-tail"
    # Measured on SMS spam and TREC with the bundled MiniLM (benchmarks/RESULTS.md, label efficiency): at 5e-5 a
    # few hundred examples leave it under-trained (TREC, 200 labels: 0.42 gold accuracy vs 0.87).
    epochs: Size = 3
    learning_rate: PositiveFloat = 2e-4
    batch_size: Size = 16
    max_length: Size = 128  # a limit of the base model itself is checked once it is loaded
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False)
    class_weighted_loss: bool = True
    # 1 = inverse class frequency. Below 1 tempers it: with a noisy labeler, the few examples wrongly given a
    # rare class would otherwise weigh as much as its many right ones (10% noise on SMS spam: ~40% of "spam").
    class_weight_power: float = Field(0.5, ge=0, le=1)
    # Small sets get extra epochs until the run has at least this many optimizer steps
    # (core.model.training.plan_epochs).
    min_steps: int = Field(100, ge=0)
    # Opt-in knobs, measured without a gain for the bundled MiniLM (TREC, 1,000 labels at 10% noise: 0.900 with a
    # head rate of 1e-3, 0.894 with smoothing 0.1, vs 0.904 without), kept for other base models.
    # Peak learning rate of the freshly initialised classification head; None means ``learning_rate``.
    head_learning_rate: PositiveFloat | None = None
    label_smoothing: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    # uncertainty: the fewest labels to reach random's final gold accuracy, and the best final accuracy, at 10%
    # label noise on SMS spam and TREC (benchmarks/RESULTS.md)
    selection: Literal["random", "uncertainty", "balanced"] = "uncertainty"
    predict_batch_size: Size = 64
    predict_shards: Size = 1
    # auto: int8, else bf16 (where the CPU has bf16 instructions), else fp32; a reduced one is used only when it
    # costs at most 0.5 accuracy points against fp32 on the test set (core.model.predict.choose_precision)
    predict_precision: PrecisionSetting = "auto"

    @field_validator("model_path")
    @classmethod
    def _known_bundled_model(cls, model_path: str) -> str:
        if model_path.startswith("bundled:") and model_path != BUNDLED_MODEL:
            raise ValueError(f"unknown bundled model; the one bundled is {BUNDLED_MODEL!r}")
        return model_path


class MetaDatagenSettings(_Section):
    do_meta_datagen: bool = False
    meta_datagen_keys: list[MetaDatagenKey] = list(META_DATAGEN_KEYS)
    meta_datagen_extras: list[str] = []


# Per-model litellm parameters that choose where and how a call goes but not what it answers: left out of the config
# fingerprint and of the response-cache key (moving a deployment to another region must not re-buy its labels).
TRANSPORT_PARAMS = frozenset({
    "api_version", "base_model", "aws_region_name", "aws_bedrock_runtime_endpoint", "aws_profile_name",
    "aws_role_name", "aws_session_name", "vertex_project", "vertex_location", "organization", "extra_headers",
    "timeout",
})
# What the job sets itself on every call: a per-model mapping may not override it.
CALL_PARAMS = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "logprobs",
                         "response_format", "api_base", "base_url", "num_retries", "max_retries", "drop_params",
                         "stream", "n"})
# A credential in a per-model mapping would be written to the run's config dump; keys come from the environment.
# ("budget_tokens", "max_tokens" are counts, not tokens of the secret kind.)
_SECRET_NAME = re.compile(r"key|secret|password|credential|token(?!s)", re.IGNORECASE)


def secret_names(params: Any, where: str) -> list[str]:
    """Dotted names in a (nested) mapping that look like credentials.

    >>> secret_names({"thinking": {"budget_tokens": 1024}, "aws_session_token": "x"}, "api.large_params")
    ['api.large_params.aws_session_token']
    """
    found: list[str] = []
    if isinstance(params, Mapping):
        for name, value in params.items():
            dotted = f"{where}.{name}"
            if _SECRET_NAME.search(str(name)):
                found.append(dotted)
            found += secret_names(value, dotted)
    return found


class ApiSettings(_Section):
    large_model: NonEmptyStr = "openai/oracle-large"
    small_model: NonEmptyStr = "openai/oracle-small"
    large_base_url: str | None = None
    small_base_url: str | None = None
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: Size = 400
    rules_max_tokens: Size = 1500
    large_api_key: SecretStr | None = None
    small_api_key: SecretStr | None = None
    # Passed to litellm as they are, per model: reasoning_effort, thinking, api_version, aws_region_name, ...
    large_params: dict[str, Any] = {}
    small_params: dict[str, Any] = {}

    @field_validator("large_params", "small_params", mode="before")
    @classmethod
    def _params_are_plain_options(cls, params: Any, info: ValidationInfo) -> Any:
        if params is None:
            return {}
        if not isinstance(params, Mapping):
            raise ValueError("must be a mapping of litellm parameters, e.g. {reasoning_effort: low}")
        secrets = secret_names(params, f"api.{info.field_name}")
        if secrets:
            raise ValueError(f"{', '.join(secrets)} looks like a credential; set API keys through the environment "
                             "(BOOTSTRAPPER_API__LARGE_API_KEY / the provider's own variable), never in the config")
        ours = sorted(CALL_PARAMS & set(map(str, params)))
        if ours:
            raise ValueError(f"{', '.join(ours)} is set by the job itself (use api.max_tokens, api.temperature, "
                             "api.*_base_url)")
        return params


class PathSettings(_Section):
    input: NonEmptyStr = "input"
    output: NonEmptyStr = "output"


class Settings(BaseSettings):
    """All settings of one run. Build it with ``load_settings``; it is immutable afterwards."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
    )

    classification: ClassificationSettings
    system: SystemSettings = SystemSettings()
    training: TrainingSettings = TrainingSettings()
    meta_datagen: MetaDatagenSettings = MetaDatagenSettings()
    api: ApiSettings = ApiSettings()
    path: PathSettings = PathSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only explicit values: load_settings merges the file and the caller's environ itself, so
        # constructing Settings never reads os.environ or a .env file behind the caller's back.
        return (init_settings,)

    def redacted_dict(self) -> dict[str, Any]:
        """JSON-ready dump safe to log or write next to results: API keys become ``"***"`` (or None)."""
        data = self.model_dump(mode="json")
        for section, name in SECRET_FIELDS:
            data[section][name] = None if getattr(getattr(self, section), name) is None else "***"
        return data


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source reading a given mapping instead of ``os.environ``.

    Overriding ``_load_env_vars`` is how pydantic-settings' own AWS and GCP sources feed it other mappings.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Names lower-cased because the settings are case-insensitive; empty values dropped so that
        # `VAR=` (a common way to "unset" in compose files) falls back to the file or the default.
        return {name.lower(): value for name, value in self._environ.items() if value != ""}


# Fields that never change finished work (scheduling, limits, credentials, locations, stop criteria), so a
# run may resume after they are edited. Everything else is fingerprinted: a field added later counts as
# work-changing until it is listed here, which errs on the side of refusing a resume.
NOT_FINGERPRINTED: dict[str, frozenset[str]] = {
    "classification": frozenset({"predict_on_whole_set_at_the_end"}),
    "system": frozenset(
        {"required_accuracy", "concurrency_limit", "label_processes", "llm_timeout_s", "llm_max_retries",
         "torch_threads", "flush_interval_s", "lease_ttl_s"}
    ),
    "training": frozenset({"max_iters", "predict_batch_size", "predict_shards", "predict_precision"}),
    "api": frozenset({"large_base_url", "small_base_url", "large_api_key", "small_api_key"}),
    # Input identity is carried by chunk ids (content hashes), not by where the input lives.
    "path": frozenset({"input", "output"}),
}


def label_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The per-model parameters that can change a reply (all but ``TRANSPORT_PARAMS``).

    >>> label_params({"reasoning_effort": "low", "api_version": "2024-10-21"})
    {'reasoning_effort': 'low'}
    """
    return {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS}


def config_fingerprint(settings: Settings) -> str:
    """Hex sha256 of the settings that shape labels, rules and models; equal for a resumable edit."""
    data = settings.model_dump(mode="json", exclude={k: set(v) for k, v in NOT_FINGERPRINTED.items()})
    for name in ("large_params", "small_params"):
        data["api"][name] = label_params(data["api"][name])
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _env_var_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p).upper() for p in loc if isinstance(p, str))


def _has_path(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(part, str) or not isinstance(node, Mapping) or part not in node:
            return isinstance(part, int)  # a list item: the whole list came from here
        node = node[part]
    return True


def _annotation(loc: tuple[int | str, ...]) -> Any:
    """The type at ``loc`` in ``Settings``: a section model, a field's type, or a list field's item type."""
    node: Any = Settings
    for part in loc:
        if isinstance(part, int):
            node = next(iter(get_args(node)), None)  # list[X] -> X
        elif isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        else:
            return None
    return node


def _choices(loc: tuple[int | str, ...]) -> list[str]:
    """What may stand at ``loc``: the field names of a section, or the values of a ``Literal`` setting."""
    node = _annotation(loc)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return [str(value) for value in get_args(node)] if get_origin(node) is Literal else []


def _did_you_mean(word: object, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        return "unknown field" + _did_you_mean(loc[-1], _choices(loc[:-1]))
    if error["type"] == "missing":
        return "required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    hint = _did_you_mean(error["input"], _choices(loc)) if error["type"] == "literal_error" else ""
    secret = any(loc[: len(s)] == s for s in SECRET_FIELDS)
    return f"{message}; got {'<redacted>' if secret else _short(error['input'])}{hint}"


def _parse_yaml(yaml_text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.load(yaml_text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else str(exc)
        raise ConfigError("", f"invalid YAML in {source}{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{source} must be a YAML mapping of sections, got {type(data).__name__}: {_short(data)}")
    return data


def _file_problems(data: dict[str, Any], source: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Strip and report what the file must not hold: unknown sections and API keys."""
    problems: list[tuple[str, str]] = []
    clean: dict[str, Any] = {}
    for key, value in data.items():
        # Checked here because pydantic-settings matches top-level names case-insensitively and would
        # silently drop "Training:" next to "training:".
        if key not in Settings.model_fields:
            problems.append((str(key), "unknown field" + _did_you_mean(key, _choices(())) + f" (in {source})"))
        else:
            clean[key] = value
    for section, name in SECRET_FIELDS:
        block = clean.get(section)
        if isinstance(block, dict) and name in block:
            var = _env_var_name((section, name))
            problems.append(
                (f"{section}.{name}", f"API keys must not be written in {source}; set the environment variable {var}")
            )
            clean[section] = {k: v for k, v in block.items() if k != name}
    return clean, problems


def _env_values(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    ours = {k: v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)}
    try:
        return dict(_MappingEnvSource(Settings, ours)()), []
    except SettingsError:
        pass
    # pydantic-settings names only the section at fault: retry one variable at a time to name the culprit.
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for name in sorted(ours):
        try:
            values = _deep_merge(values, _MappingEnvSource(Settings, {name: ours[name]})())
        except SettingsError:
            field = ".".join(name[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER))
            shown = "<redacted>" if field.startswith("api") else _short(ours[name])
            problems.append((field, f"{name} must be JSON for lists and mappings (e.g. '[\"a\", \"b\"]'); got {shown}"))
    return values, problems


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _combined(problems: list[tuple[str, str]]) -> ConfigError:
    first_field, first_message = problems[0]
    rest = "; ".join(f"{field}: {message}" for field, message in problems[1:])
    return ConfigError(first_field, first_message + (f"; also {rest}" if rest else ""))


def load_settings(
    yaml_text: str, environ: Mapping[str, str] | None = None, source: str = "<config>"
) -> Settings:
    """Parse ``yaml_text``, apply ``BOOTSTRAPPER_*`` overrides from ``environ`` and validate.

    ``source`` names the file in error messages. Raises ``ConfigError`` listing every problem found.
    """
    file_data, problems = _file_problems(_parse_yaml(yaml_text, source), source)
    env_data, env_problems = _env_values(environ or {})
    problems += env_problems
    try:
        settings = Settings(**_deep_merge(file_data, env_data))
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            origin = f"from environment {_env_var_name(loc)}" if _has_path(env_data, loc) else f"in {source}"
            problems.append((_dotted(loc), f"{_describe(error)} ({origin})"))
        raise _combined(problems) from exc
    if problems:
        raise _combined(problems)
    return settings
