"""What differs between litellm's provider families, in one table: how each authenticates, which key variable
it reads, how it is asked for structured output, whether its prompt cache needs the prefix marked, and which
optional SDK it needs.

``provider_of(model)`` is litellm's own ``get_llm_provider`` (the prefix before the first ``/``, or litellm's
guess for a bare model name); ``facts(model)`` is that provider's row of ``PROVIDERS``, or ``UNLISTED`` for a
provider litellm knows and this table does not (litellm then reads its key from its own variable, and
structured output is litellm's capability flags' decision).

Why a table of our own: ``litellm.validate_environment`` knows the variable names too, but it reads
``os.environ`` itself, knows nothing of base URLs (an OpenAI-compatible vLLM needs no OpenAI key) or of
``BOOTSTRAPPER_API__*_API_KEY``, and says nothing of structured output or caching. The handler reads the
environment with this table (``handlers.wiring.endpoints``); nothing here reads it.

    >>> facts("anthropic/claude-haiku-4-5").key_vars, facts("bedrock/converse/amazon.nova-lite-v1:0").auth
    (('ANTHROPIC_API_KEY',), 'aws')
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.llm.capabilities import is_reasoning
from core.llm.litellm_edge import litellm_module

Auth = Literal["self_hosted", "key", "optional_key", "aws", "gcp"]
Structured = Literal["json_schema", "litellm"]
# What an OpenAI-compatible self-hosted server (vLLM, llama.cpp, LM Studio, the oracle) is sent as its key: it
# wants some key, any will do.
PLACEHOLDER_KEY = "not-needed"


@dataclass(frozen=True)
class ProviderFacts:
    """One provider family as this job treats it.

    ``auth``: ``self_hosted`` (OpenAI-compatible: with a base URL a placeholder key unless one is configured;
    without one, ``key_vars`` as for ``key``), ``key`` (a key from ``key_vars`` is required), ``optional_key``
    (sent when set: a local Ollama needs none), ``aws`` (the AWS credential chain; no key is passed) or ``gcp``
    (Google application-default credentials).
    ``structured``: ``json_schema`` when litellm turns OpenAI's strict ``json_schema`` into the provider's own
    form for any model of it (``form`` says which, as the provider receives it); ``litellm`` leaves it to
    litellm's per-model capability flags. ``marks_cache``: the provider caches only prefixes marked with
    ``cache_control`` (litellm maps that to Bedrock's ``cachePoint``); the others cache by themselves.
    """

    auth: Auth
    key_vars: tuple[str, ...] = ()
    structured: Structured = "litellm"
    form: str = ""
    marks_cache: bool = False
    thinks_unasked: bool = True  # a reasoning model of it thinks without being asked (Claude does not)
    extra: str = ""  # pip extra of classifier-bootstrapper that installs the SDK litellm imports for it


_SELF_HOSTED = ProviderFacts("self_hosted", structured="json_schema", form="response_format json_schema (guided "
                             "decoding)")
PROVIDERS: dict[str, ProviderFacts] = {
    "openai": ProviderFacts("self_hosted", ("OPENAI_API_KEY",), form="response_format json_schema"),
    "hosted_vllm": _SELF_HOSTED,
    "openai_like": _SELF_HOSTED,
    "custom_openai": _SELF_HOSTED,
    "lm_studio": _SELF_HOSTED,
    # Deployment names are not in litellm's model map, so its schema flag cannot speak for them.
    "azure": ProviderFacts("key", ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY"), "json_schema",
                           "response_format json_schema"),
    "anthropic": ProviderFacts("key", ("ANTHROPIC_API_KEY",), "json_schema",
                               "output_format (or a forced tool on older models)", marks_cache=True,
                               thinks_unasked=False),
    "bedrock": ProviderFacts("aws", structured="json_schema", form="outputConfig.textFormat (or a forced tool)",
                             marks_cache=True, thinks_unasked=False),
    "sagemaker": ProviderFacts("aws"),
    "sagemaker_chat": ProviderFacts("aws"),
    "gemini": ProviderFacts("key", ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "json_schema",
                            "generationConfig.responseJsonSchema"),
    "vertex_ai": ProviderFacts("gcp", structured="json_schema", form="generationConfig.responseJsonSchema",
                               extra="vertex"),
    "ollama_chat": ProviderFacts("optional_key", ("OLLAMA_API_KEY",), "json_schema", "format: <schema>"),
    "ollama": ProviderFacts("optional_key", ("OLLAMA_API_KEY",), "json_schema", "format: <schema>"),
    "mistral": ProviderFacts("key", ("MISTRAL_API_KEY",)),
    "groq": ProviderFacts("key", ("GROQ_API_KEY",)),
    "deepseek": ProviderFacts("key", ("DEEPSEEK_API_KEY",)),
    "openrouter": ProviderFacts("key", ("OPENROUTER_API_KEY",)),
    "xai": ProviderFacts("key", ("XAI_API_KEY",)),
    "together_ai": ProviderFacts("key", ("TOGETHERAI_API_KEY",)),
    "cohere_chat": ProviderFacts("key", ("COHERE_API_KEY",)),
}
UNLISTED = ProviderFacts("optional_key")


@functools.lru_cache(maxsize=256)
def provider_of(model: str) -> str | None:
    """litellm's provider for a model string, or None when litellm cannot tell."""
    try:
        return str(litellm_module().get_llm_provider(model=model)[1])
    except Exception:  # noqa: BLE001 - litellm raises a BadRequestError for an unknown provider
        return None


def facts(model: str) -> ProviderFacts:
    return PROVIDERS.get(provider_of(model) or "", UNLISTED)


def reasons(model: str, params: Mapping[str, Any]) -> bool:
    """True when ``model`` spends completion tokens thinking before it answers (see ``capabilities``)."""
    try:
        says = bool(litellm_module().supports_reasoning(model=model))
    except Exception:  # noqa: BLE001 - a model missing from litellm's map
        says = False
    return is_reasoning(params, says, facts(model).thinks_unasked)


def needs_placeholder(model: str, has_base_url: bool) -> bool:
    """True for an OpenAI-compatible self-hosted endpoint: the only case that gets ``PLACEHOLDER_KEY``."""
    row = facts(model)
    return row.auth == "self_hosted" and (has_base_url or not row.key_vars)
