"""``bootstrapper init [DIR] [--provider P]``: a commented config for one provider and an empty ``input/`` folder.

Writes ``DIR/config.yaml`` with the provider's model strings, the variables its keys come from and the few fields
a new user changes (classes, description, set sizes), each commented; every other field keeps its default
(``examples/config.yaml`` documents them all). It never overwrites an existing config and calls nothing: the
next step is putting documents in ``DIR/input/`` and running ``bootstrapper plan DIR/config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProviderTemplate:
    """What ``init`` writes for one provider: the two models, their endpoint and options, and where keys live."""

    large: str
    small: str
    keys: str  # a comment line: which variables hold the credentials
    base_url: str | None = None
    small_base_url: str | None = None  # when the small model is served elsewhere; default: base_url
    params: str = ""  # YAML flow mapping for both *_params, or empty


PROVIDERS: dict[str, ProviderTemplate] = {
    "openai": ProviderTemplate("openai/gpt-4o", "openai/gpt-4o-mini", "export OPENAI_API_KEY=sk-..."),
    "anthropic": ProviderTemplate("anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5",
                                  "export ANTHROPIC_API_KEY=sk-ant-..."),
    "bedrock": ProviderTemplate("bedrock/converse/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                                "bedrock/converse/us.anthropic.claude-haiku-4-5-20251001-v1:0",
                                "AWS credentials as usual: the task's role, $AWS_PROFILE or $AWS_ACCESS_KEY_ID/"
                                "$AWS_SECRET_ACCESS_KEY", params="{aws_region_name: us-east-1}"),
    "ollama": ProviderTemplate("ollama_chat/llama3.1:70b", "ollama_chat/llama3.1:8b",
                               "no key for a local Ollama ($OLLAMA_API_KEY if yours wants one)",
                               base_url="http://localhost:11434"),
    # One `vllm serve` serves one model: the large and the small one each on their own port.
    "vllm": ProviderTemplate("hosted_vllm/Qwen/Qwen2.5-32B-Instruct", "hosted_vllm/Qwen/Qwen2.5-7B-Instruct",
                             "no key needed ($BOOTSTRAPPER_API__LARGE_API_KEY if your server wants one)",
                             base_url="http://localhost:8000/v1", small_base_url="http://localhost:8001/v1"),
}


def config_text(provider: str) -> str:
    """The commented ``config.yaml`` for ``provider`` (a key of ``PROVIDERS``).

    >>> "small_model: anthropic/claude-haiku-4-5" in config_text("anthropic")
    True
    """
    t = PROVIDERS[provider]
    url = (f"  large_base_url: {t.base_url}\n  small_base_url: {t.small_base_url or t.base_url}\n" if t.base_url else
           "  # large_base_url / small_base_url: a proxy or gateway in front of the provider (null: its own)\n")
    params = (f"  large_params: {t.params}\n  small_params: {t.params}\n" if t.params else
              "  # large_params / small_params: litellm options per model, e.g. {reasoning_effort: low}\n")
    return f"""\
# classifier-bootstrapper config, written by `bootstrapper init --provider {provider}`.
# Next: put your documents (.txt .md .pdf .docx, or .jsonl with a "text" key) in input/, edit the classes and
# the description below, then `bootstrapper plan config.yaml` (what it will cost; spends nothing) and
# `bootstrapper run config.yaml`. Every other field and its default: examples/config.yaml in the repository.

classification:
  # The labels the classifier will predict (at least 2).
  classes: [positive, negative]
  # What the task is and what puts a text in each class: the LLMs write their labeling rules from this, so say
  # what each class covers and how to decide the edge cases.
  desc: >-
    Replace this with your task: which class a text belongs to, what each class covers, and how to decide
    between them when a text could be either.

system:
  # Stop once the classifier agrees with the large model's test labels this often (0 to 1).
  required_accuracy: 0.90

training:
  # Chunks the large model labels to measure accuracy, and the small model's first and later training sets.
  test_set_size: 200
  train_set_size: 200
  train_set_increment: 200
  max_iters: 5

api:
  # Credentials come from the environment, never this file: {t.keys}
  large_model: {t.large}
  small_model: {t.small}
{url}{params}
path:
  # Relative to this file's folder; either can be s3://bucket/prefix.
  input: input
  output: output
"""


def init_project(folder: Path, provider: str) -> Path:
    """Write ``folder/config.yaml`` and ``folder/input/``; FileExistsError if a config is already there."""
    config = folder / "config.yaml"
    if config.exists():
        raise FileExistsError(f"{config} exists; init never overwrites a config")
    (folder / "input").mkdir(parents=True, exist_ok=True)
    config.write_text(config_text(provider), encoding="utf-8")
    return config
