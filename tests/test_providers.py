"""Provider set-up as a user meets it: which key each provider gets, what fails before any spend, and a model
that refuses logprobs (Gemini) or spends its budget thinking (a reasoning model) costs no label.

The servers are the oracle's protocol stand-ins (answering from human labels), never a real provider.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import load_settings
from core.errors import ConfigError
from core.llm.cache import ResponseCache
from core.llm.client import LiteLLMClient, LLMOptions
from core.llm.gateway import LLMGateway
from core.llm.labeling import LabelPrompt, label_chunk, label_many
from core.llm.ledger import Ledger, totals
from core.llm.providers import PLACEHOLDER_KEY
from core.schema import Chunk
from core.storage.backends import LocalStorage
from core.storage.jsonl_log import LogWriter
from handlers.credentials import endpoints
from oracle.process import OracleHandle
from tests.fixtures.llm_server import shared_data_dir

StartOracle = Callable[..., OracleHandle]
BASE = {"classification": {"desc": "Is this SMS spam?", "classes": ["ham", "spam"]}}


def settings_for(environ: dict[str, str] | None = None, **api: Any) -> Any:
    """Settings with ``api`` fields; a model not named is the oracle at an (unused) self-hosted URL."""
    api = {"large_base_url": "http://127.0.0.1:1/v1", "small_base_url": "http://127.0.0.1:1/v1", **api}
    return load_settings(yaml.safe_dump({**BASE, "api": api}), environ or {})


def test_self_hosted_gets_the_placeholder_and_a_provider_keeps_its_own_key_behind_a_base_url() -> None:
    s = settings_for(large_model="openai/oracle-large", large_base_url="http://127.0.0.1:1/v1",
                     small_model="anthropic/claude-haiku-4-5", small_base_url="http://proxy.internal")
    large, small = endpoints(s, {"ANTHROPIC_API_KEY": "sk-ant-real", "OPENAI_API_KEY": "sk-openai"})
    assert large.api_key == PLACEHOLDER_KEY, "a key for api.openai.com is not sent to another host"
    assert small.api_key == "sk-ant-real"
    configured = settings_for({"BOOTSTRAPPER_API__SMALL_API_KEY": "sk-ant-configured"},
                              small_model="anthropic/claude-haiku-4-5")
    assert endpoints(configured, {"ANTHROPIC_API_KEY": "sk-ant-real"})[1].api_key == "sk-ant-configured"


@pytest.mark.parametrize(
    ("api", "environ", "field", "names"),
    [
        pytest.param({"small_model": "anthropic/claude-haiku-4-5", "small_base_url": None}, {}, "api.small_api_key",
                     "$ANTHROPIC_API_KEY",
                     id="anthropic-no-key"),
        pytest.param({"large_model": "gemini/gemini-2.5-flash", "large_base_url": None}, {}, "api.large_api_key", "$GEMINI_API_KEY",
                     id="gemini-no-key"),
        pytest.param({"large_model": "openai/gpt-4o", "large_base_url": None}, {}, "api.large_api_key", "$OPENAI_API_KEY",
                     id="openai-no-key"),
        pytest.param({"large_model": "azure/labeler", "large_base_url": "http://127.0.0.1:1"},
                     {"AZURE_API_KEY": "k"}, "api.large_params.api_version", "AZURE_API_VERSION",
                     id="azure-no-version"),
        pytest.param({"large_model": "bedrock/converse/amazon.nova-lite-v1:0", "large_base_url": None}, {},
                     "api.large_params.aws_region_name", "AWS_REGION", id="bedrock-no-region"),
    ],
)
def test_a_missing_credential_fails_before_any_call_naming_it(api: dict[str, Any], environ: dict[str, str],
                                                              field: str, names: str) -> None:
    s = settings_for(**api)
    with pytest.raises(ConfigError) as info:
        endpoints(s, environ)
    assert info.value.field == field and names in str(info.value)
    endpoints(s, environ, check=False)  # predict and report call no model: no key needed


@pytest.mark.skipif(importlib.util.find_spec("google") is not None, reason="google-auth is installed here")
def test_vertex_without_its_extra_names_the_extra() -> None:
    s = settings_for(large_model="vertex_ai/gemini-2.5-flash")
    with pytest.raises(ConfigError) as info:
        endpoints(s, {})
    assert "classifier-bootstrapper[vertex]" in str(info.value)


def _chunk(i: int) -> Chunk:
    import json

    lines = (shared_data_dir() / "sms_spam.jsonl").read_text(encoding="utf-8").splitlines()
    text = json.loads(lines[i])["text"]
    return Chunk(id=f"c{i}", text=text, source="sms.jsonl", position=i)


def _gateway(tmp_path: Path) -> tuple[LLMGateway, Ledger]:
    out = LocalStorage(tmp_path)
    ledger = Ledger(out, "ledger/", flush_interval_s=0)
    return LLMGateway(LiteLLMClient(LLMOptions(max_retries=0, timeout_s=10)), ResponseCache(out, "cache/"),
                      ledger), ledger


def test_a_logprobs_refusal_is_learned_and_costs_no_label(oracle_server: StartOracle, tmp_path: Path) -> None:
    handle = oracle_server(shared_data_dir() / "sms_spam.jsonl", protocol="gemini", api_key="g-oracle",
                           refuse_logprobs=True, latency_ms=0, noise=0)
    s = settings_for({"GEMINI_API_KEY": "g-oracle"}, large_model="gemini/gemini-2.5-flash",
                     large_base_url=handle.base_url)
    large, _ = endpoints(s, {"GEMINI_API_KEY": "g-oracle"})
    gateway, ledger = _gateway(tmp_path)
    prompt = LabelPrompt(["ham", "spam"], "Spam sells or scams.", "json_schema")

    async def go() -> list[Any]:
        return [await label_chunk(gateway, large, prompt, _chunk(i), stage="test_labels", logprobs=True)
                for i in range(3)]

    labels = asyncio.run(go())
    assert all(lab.ok for lab in labels), [lab.error for lab in labels]
    assert gateway.refusals.to_json() == {"gemini/gemini-2.5-flash": ["logprobs"]}
    ledger.flush()
    t = totals(ledger.load_all())["overall"]
    assert (t["param_refused"], t["failures"], t["paid_calls"]) == (1, 0, 3)
    assert handle.stats(prompts=False)["logprobs_requests"] == 1, "after the refusal, logprobs are left out"


@pytest.mark.parametrize("answered_first", [False, True], ids=["cold", "after-a-call-without-logprobs"])
def test_concurrent_workers_meet_a_refusal_once(oracle_server: StartOracle, tmp_path: Path,
                                                answered_first: bool) -> None:
    # Found running the CLI with 50 workers: every call in flight carried logprobs and got its own 400. And
    # again after that fix: the rules call (temperature, no logprobs) was answered first, which let every
    # test-label worker send logprobs at once.
    handle = oracle_server(shared_data_dir() / "sms_spam.jsonl", protocol="gemini", api_key="g-oracle",
                           refuse_logprobs=True, latency_ms=50, noise=0)
    s = settings_for(large_model="gemini/gemini-2.5-flash", large_base_url=handle.base_url)
    large, _ = endpoints(s, {"GEMINI_API_KEY": "g-oracle"})
    gateway, ledger = _gateway(tmp_path)
    prompt = LabelPrompt(["ham", "spam"], "Spam sells or scams.", "json_schema")
    sink = LogWriter(LocalStorage(tmp_path), "labels/", flush_interval_s=0)

    async def go() -> list[Any]:
        if answered_first:
            assert (await label_chunk(gateway, large, prompt, _chunk(30), stage="rules")).ok
        return await label_many(gateway, large, prompt, [_chunk(i) for i in range(20)], stage="test_labels",
                                sink=sink, workers=10, logprobs=True)

    labels = asyncio.run(go())
    assert len(labels) == 20 and all(lab.ok for lab in labels)
    ledger.flush()
    t = totals(ledger.load_all())["overall"]
    assert (t["param_refused"], t["paid_calls"]) == (1, 20 + answered_first)
    assert handle.stats(prompts=False)["logprobs_requests"] == 1


def test_a_reply_cut_off_while_thinking_is_asked_again_with_a_larger_budget(oracle_server: StartOracle,
                                                                             tmp_path: Path) -> None:
    # 1,000 hidden thinking tokens: a 400-token budget ends empty at the length limit; 1,600 leaves room.
    handle = oracle_server(shared_data_dir() / "sms_spam.jsonl", reasoning_tokens=1000, latency_ms=0, noise=0)
    s = settings_for(large_model="openai/oracle-thinker", large_base_url=handle.base_url)
    large, _ = endpoints(s, {})
    assert not large.reasoning  # unknown to litellm: only the retry can save it
    gateway, ledger = _gateway(tmp_path)
    prompt = LabelPrompt(["ham", "spam"], "Spam sells or scams.", "json_schema")
    label = asyncio.run(label_chunk(gateway, large, prompt, _chunk(0), stage="test_labels", max_tokens=400))
    assert label.ok and label.length_retried
    ledger.flush()
    t = totals(ledger.load_all())["overall"]
    assert (t["cut_off"], t["paid_calls"], t["failures"]) == (1, 2, 0)
