"""Endpoints from the config and the environment: each provider's own key, checked before any money is spent.

``endpoints(settings, environ)`` builds the large and small ``Endpoint``: the model string, base URL, the
per-model litellm parameters (``api.large_params``), and the credential the provider expects, by
``core.llm.providers``:

=====================================  ==============================================================
provider                               credential
=====================================  ==============================================================
``openai``/``hosted_vllm``/``lm_studio``  with a base URL: the configured key, else a placeholder (a
/``openai_like``/``custom_openai``     self-hosted server wants some key); ``openai`` without one:
                                       ``OPENAI_API_KEY``
``azure``, ``anthropic``, ``gemini``,  the configured key (``BOOTSTRAPPER_API__LARGE_API_KEY``), else the
``mistral``, ...                       provider's own variable; neither is a ConfigError naming both
``ollama``/``ollama_chat``             ``OLLAMA_API_KEY`` when set (a local Ollama needs none)
``bedrock``, ``sagemaker``             no key: botocore's credential chain signs (SigV4); none found is a
                                       ConfigError, as is no region
``vertex_ai``                          Google application-default credentials; needs the ``vertex`` extra
=====================================  ==============================================================

A base URL never replaces a provider's key: Anthropic behind a proxy still gets ``x-api-key`` from
``ANTHROPIC_API_KEY``. Nothing here calls a model; a wrong key is found by the first call (LLMAuthError).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from core.config import Settings, label_params
from core.errors import ConfigError
from core.llm import providers
from core.llm.client import Endpoint
from core.llm.litellm_edge import EXTRAS

AWS_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_REGION_NAME")
# Model strings of the local oracle server (oracle/), the stand-in for an LLM that the demo, tests and benchmarks
# use; a run with one of them says in its report that its labels are human labels, not an LLM's.
ORACLE_MODEL_PREFIX = "openai/oracle"


def endpoints(settings: Settings, environ: Mapping[str, str], *, check: bool = True) -> tuple[Endpoint, Endpoint]:
    """(large, small) endpoints; with ``check``, raises ConfigError naming the field or variable a provider is
    missing (without, for commands that call no model, a missing key is left None)."""
    api = settings.api
    return (endpoint("large", api.large_model, api.large_base_url, api.large_api_key, api.large_params, environ,
                     check=check),
            endpoint("small", api.small_model, api.small_base_url, api.small_api_key, api.small_params, environ,
                     check=check))


def endpoint(which: str, model: str, base_url: str | None, configured: Any, params: Mapping[str, Any],
             environ: Mapping[str, str], *, check: bool = True) -> Endpoint:
    row = providers.facts(model)
    field = f"api.{which}_model"
    params = dict(params)
    try:
        key = api_key(which, model, base_url, configured, environ)
    except ConfigError:
        if check:
            raise
        key = None  # a command that never calls the model (predict, report) does not need its key
    if check:
        _check_not_a_forgotten_stand_in(which, model, base_url)
        if row.auth == "aws":
            _check_aws(field, model, params, environ)
        if row.auth == "gcp" or row.extra:
            _check_sdk(field, model, row.extra)
        if providers.provider_of(model) == "azure":
            _check_azure(which, model, base_url, params, environ)
    return Endpoint(model=model, base_url=base_url, api_key=key, params=params, label_params=label_params(params),
                    reasoning=providers.reasons(model, params), mark_cache=row.marks_cache)


def api_key(which: str, model: str, base_url: str | None, configured: Any, environ: Mapping[str, str]) -> str | None:
    """The key to send ``model``'s provider, or None for one that signs or needs none.

    >>> api_key("large", "openai/oracle-large", "http://127.0.0.1:8000/v1", None, {})
    'not-needed'
    >>> api_key("large", "anthropic/claude-haiku-4-5", "http://proxy", None, {"ANTHROPIC_API_KEY": "sk-ant-1"})
    'sk-ant-1'
    """
    if configured is not None:
        return str(configured.get_secret_value())
    row = providers.facts(model)
    if providers.needs_placeholder(model, bool(base_url)):
        return providers.PLACEHOLDER_KEY
    found = next((environ[v] for v in row.key_vars if environ.get(v)), None)
    if found is not None or row.auth in ("optional_key", "aws", "gcp"):
        return found
    wanted = " or ".join(f"${v}" for v in row.key_vars) or "the provider's key variable"
    raise ConfigError(f"api.{which}_api_key",
                      f"{model} needs an API key and none is set: set {wanted}, or "
                      f"$BOOTSTRAPPER_API__{which.upper()}_API_KEY (nothing was sent or spent)")


def _check_not_a_forgotten_stand_in(which: str, model: str, base_url: str | None) -> None:
    """The example's ``openai/oracle-*`` models are a local stand-in: without its URL the call would go to
    OpenAI itself, with a model that does not exist there (and a real key, if one is set)."""
    if model.startswith(ORACLE_MODEL_PREFIX) and not base_url:
        raise ConfigError(f"api.{which}_model",
                          f"{model} is the bundled local stand-in (oracle/), not a real model, and no "
                          f"api.{which}_base_url points at one: set api.{which}_model to your provider's model "
                          f"(e.g. openai/gpt-4o-mini or anthropic/claude-haiku-4-5; `bootstrapper init --provider "
                          f"...` writes a config), or start the stand-in (`bootstrapper demo` does) and set "
                          f"api.{which}_base_url to its URL")


def _check_aws(field: str, model: str, params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    if not (params.get("aws_region_name") or any(environ.get(v) for v in AWS_REGION_VARS)):
        raise ConfigError(field.replace("_model", "_params") + ".aws_region_name",
                          f"{model} needs an AWS region: set $AWS_REGION or aws_region_name in "
                          f"{field.replace('_model', '_params')}")
    if params.get("aws_profile_name") or params.get("aws_role_name"):
        return
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        return
    import botocore.session

    session = botocore.session.get_session()
    if session.get_credentials() is None:
        raise ConfigError(field, f"{model} signs its requests with AWS credentials and botocore found none "
                                 "($AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, $AWS_PROFILE, or the task's role)")


def _check_sdk(field: str, model: str, extra: str) -> None:
    module = EXTRAS.get(extra)
    try:
        present = module is None or importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package (google) is missing too
        present = False
    if not present:
        raise ConfigError(field, f"{model} needs the {module} package, which is not installed: "
                                 f"pip install 'classifier-bootstrapper[{extra}]'")


def _check_azure(which: str, model: str, base_url: str | None, params: Mapping[str, Any],
                 environ: Mapping[str, str]) -> None:
    if not (base_url or environ.get("AZURE_API_BASE")):
        raise ConfigError(f"api.{which}_base_url", f"{model} needs the resource's endpoint "
                                                   "(https://<resource>.openai.azure.com): set it here or $AZURE_API_BASE")
    if not (params.get("api_version") or environ.get("AZURE_API_VERSION")):
        raise ConfigError(f"api.{which}_params.api_version",
                          f"{model} needs an API version (e.g. 2024-10-21): set api_version in "
                          f"api.{which}_params or $AZURE_API_VERSION")
