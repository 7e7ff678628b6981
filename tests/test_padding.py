"""Padding the stable labeling prefix past a provider's cacheable minimum, where the cost map says it pays."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path

import pytest

from core.llm.cache import ResponseCache, request_key
from core.llm.client import Endpoint, LiteLLMClient, LLMOptions
from core.llm.gateway import LLMGateway
from core.llm.labeling import LabelPrompt, label_chunk, pad_for_caching, parse_reply
from core.llm.ledger import Ledger, rates, totals
from core.llm.prompt_cache import break_even_hit_rate, cache_rule, cached_part, padding_pays, prefix_cost
from core.schema import Chunk
from core.storage.backends import LocalStorage
from tests.fixtures.llm_server import shared_data_dir

RULES = ("Spam is unsolicited commercial or fraudulent messaging: prizes, offers, premium numbers. Ham is any "
         "genuine personal or service message. ") * 12  # ~400 tokens of rules, like the SMS example's


def chars(_model: str, text: str) -> int:
    """A deterministic stand-in tokenizer (the oracle's): characters / 4."""
    return math.ceil(len(text) / 4)


@pytest.mark.parametrize(("model", "pays"), [
    ("openai/gpt-4o", False), ("openai/gpt-4o-mini", False),  # cached at 50%: 1,024 x 0.5 > 409
    ("openai/gpt-4.1", True), ("openai/gpt-4.1-mini", True),  # 25%
    ("openai/gpt-5", True), ("openai/gpt-5-mini", True),  # 10%
    ("anthropic/claude-sonnet-4-5", True),  # 1,024-token minimum, read at 10%
    ("anthropic/claude-haiku-4-5", False),  # 4,096-token minimum: 4,096 x 0.1 > 409
    ("gemini/gemini-2.5-pro", False),  # 4,096
    ("openai/oracle-large", False),  # not in the cost map
    ("ollama_chat/llama3", False),  # no caching rule
])  # fmt: skip
def test_padding_pays_where_the_cached_rate_is_low_enough(model: str, pays: bool) -> None:
    target = padding_pays(model, 409, 200)
    assert (target is not None) == pays
    if pays:
        rule = cache_rule(model)
        assert rule is not None and target >= rule.min_tokens
        assert prefix_cost(model, target, 200) < prefix_cost(model, 409, 200)  # type: ignore[operator]


def test_padding_needs_enough_calls_and_a_short_prefix() -> None:
    assert padding_pays("openai/gpt-4.1", 409, 1) is None  # the cold calls pay the padded prefix in full
    assert padding_pays("openai/gpt-4.1", 409, 200) == 1045
    assert padding_pays("openai/gpt-4.1", 1030, 200) is None  # cached already
    assert padding_pays("openai/gpt-4.1", 409, 200, hit_rate=0.5) is None
    assert 0.7 < break_even_hit_rate("openai/gpt-4.1", 409, 200) < 0.9  # type: ignore[operator]
    assert break_even_hit_rate("openai/gpt-4o", 409, 200) is None


def test_cached_part_follows_openais_128_token_steps_and_anthropics_whole_prefix() -> None:
    openai, sonnet = cache_rule("openai/gpt-5"), cache_rule("anthropic/claude-sonnet-4-5")
    assert [cached_part(openai, n) for n in (1023, 1024, 1151, 1152, 1300)] == [0, 1024, 1024, 1152, 1280]
    assert [cached_part(sonnet, n) for n in (1000, 1193)] == [0, 1193]
    assert cache_rule("bedrock/converse/us.anthropic.claude-haiku-4-5-20251001-v1:0").min_tokens == 4096
    assert cache_rule("bedrock/converse/amazon.nova-lite-v1:0") is None


def test_an_explicit_cache_miss_pays_the_write_premium() -> None:
    price = rates("anthropic/claude-sonnet-4-5")
    assert price is not None
    one = prefix_cost("anthropic/claude-sonnet-4-5", 1200, 1)
    assert one == pytest.approx(1200 * price["cache_write"])
    warm = prefix_cost("anthropic/claude-sonnet-4-5", 1200, 3, hit_rate=1.0)
    assert warm == pytest.approx(2 * 1200 * price["cache_write"] + 1200 * price["cache_read"])


def test_the_padded_prompt_just_reaches_the_target_and_is_byte_stable() -> None:
    prompt = LabelPrompt(["ham", "spam"], RULES, "json_schema")
    assert chars("", prompt.system_message()) < 1024
    padded = pad_for_caching(prompt, "openai/gpt-4.1", 200, count=chars)
    assert padded.pad_blocks > 0
    text = padded.system_message()
    assert chars("", text) >= 1045
    assert chars("", dataclasses.replace(padded, pad_blocks=padded.pad_blocks - 1).system_message()) < 1045
    assert text.startswith(prompt.system_message()) and text.endswith("</reminders>")
    again = pad_for_caching(LabelPrompt(["ham", "spam"], RULES, "json_schema"), "openai/gpt-4.1", 200, count=chars)
    assert again.messages("a text") == padded.messages("a text")
    # A padded prompt is a different prompt: its own response-cache key.
    assert request_key("openai/gpt-4.1", padded.messages("a text")) != request_key("openai/gpt-4.1",
                                                                                   prompt.messages("a text"))


def test_no_padding_where_it_does_not_pay() -> None:
    prompt = LabelPrompt(["ham", "spam"], RULES, "json_schema")
    assert pad_for_caching(prompt, "openai/gpt-4o", 200, count=chars) is prompt
    assert pad_for_caching(prompt, "openai/oracle-large", 200, count=chars) is prompt
    assert LabelPrompt(["ham", "spam"], RULES, "none", pad_blocks=0).system_message() == LabelPrompt(
        ["ham", "spam"], RULES, "none").system_message()


def test_the_padding_restates_only_the_classes_and_format() -> None:
    padded = LabelPrompt(["ham", "spam"], RULES, "none", pad_blocks=3)
    reminders = padded.system_message().split("<reminders>")[1]
    assert "Spam is unsolicited" not in reminders  # the rules are not repeated
    assert reminders.count("The classes are exactly: ham, spam.") == 3
    assert parse_reply("Reason: a friend\nFinal label: ham", padded.classes) == ("ham", "a friend")


def test_a_padded_prefix_is_read_from_the_oracles_cache(oracle_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through litellm and the gateway: the unpadded prefix is never cached, the padded one is from call 2 on."""
    handle = oracle_server(shared_data_dir() / "sms_spam.jsonl", latency_ms=0, noise=0)
    rows = [json.loads(line) for line in
            (shared_data_dir() / "sms_spam.jsonl").read_text(encoding="utf-8").splitlines()[:6]]
    out = LocalStorage(tmp_path)
    ledger = Ledger(out, "ledger/", flush_interval_s=0)
    gateway = LLMGateway(LiteLLMClient(LLMOptions(max_retries=0, timeout_s=10)), ResponseCache(out, "cache/"),
                         ledger)
    endpoint = Endpoint("openai/gpt-4.1", handle.base_url, "sk-test")
    plain = LabelPrompt(["ham", "spam"], RULES, "json_schema")
    padded = pad_for_caching(plain, endpoint.model, 200, count=chars)

    async def go() -> None:
        for stage, prompt in (("plain", plain), ("padded", padded)):
            for i, row in enumerate(rows[:3]):
                chunk = Chunk(id=f"{stage}{i}", text=row["text"], source="sms", position=i)
                assert (await label_chunk(gateway, endpoint, prompt, chunk, stage=stage)).ok

    asyncio.run(go())
    ledger.flush()
    by_stage = totals(ledger.load_all())["by_stage"]
    assert by_stage["plain"]["cached_tokens"] == 0
    assert by_stage["padded"]["cached_tokens"] == 2 * 1024  # calls 2 and 3, in OpenAI's 128-token steps


def test_the_padding_is_decided_once_per_model_and_kept_for_resumes(tmp_path) -> None:
    """A resume on an image whose litellm prices or tokenizes differently must send the same prompt: the first
    decision is written to prompt_padding.json and read back, not recomputed."""
    import json
    from types import SimpleNamespace

    from core.config import load_settings
    from core.llm.client import Endpoint
    from core.run import layout
    from core.run.steps import label_prompt
    from core.storage.backends import LocalStorage

    storage = LocalStorage(tmp_path)
    settings = load_settings("{classification: {classes: [ham, spam], desc: x}, path: {input: in, output: out}}")
    ctx = SimpleNamespace(settings=settings, output=storage, format_modes={"openai/gpt-4.1": "json_schema"})
    rules = "\n".join(f"{i}. A prize claim, a premium-rate number or a reply keyword makes a text spam." for i in range(25))
    data = SimpleNamespace(rules_text=lambda: rules, splits={"test": [f"t{i}" for i in range(200)]})
    endpoint = Endpoint(model="openai/gpt-4.1")
    first = label_prompt(ctx, data, endpoint)  # type: ignore[arg-type]
    assert first.pad_blocks > 0, "gpt-4.1 (cached at 25%) pays for padding a ~400-token prefix"
    recorded = json.loads(storage.read_text(layout.PROMPT_PADDING))["openai/gpt-4.1"]
    assert recorded["blocks"] == first.pad_blocks and 400 < recorded["tokens"] < 700, "~550 -> ~1045 tokens"
    storage.write_text(layout.PROMPT_PADDING, json.dumps({"openai/gpt-4.1": {"blocks": 3, "tokens": 180}}))
    assert label_prompt(ctx, data, endpoint).pad_blocks == 3  # type: ignore[arg-type]
