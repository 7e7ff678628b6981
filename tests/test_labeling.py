"""Reply parsing in every form, prompts, and the fan-out against the oracle server through litellm."""

from __future__ import annotations

import json

import pytest

from core.llm.labeling import LabelPrompt, label_confidence, label_schema, match_class, needs_label, parse_reply
from core.schema import Label, LLMReply

SMS = ["ham", "spam"]
TREC = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


@pytest.mark.parametrize("reply,classes,expected", [
    ('{"reason": "prize", "label": "spam"}', SMS, "spam"),
    ('```json\n{"reason": "r", "label": "ham"}\n```', SMS, "ham"),
    ('Sure! {"label": "SPAM", "reason": "x"} hope that helps', SMS, "spam"),
    ('{"label": 1, "reason": "index"}', SMS, "spam"),
    ('{"label": "1"}', SMS, "spam"),
    ("Reason: a friend\nFinal label: ham", SMS, "ham"),
    ("Reason: q\nFinal Label: **LOC**.", TREC, "LOC"),
    ("final label = hum", TREC, "HUM"),
    ("spam", SMS, "spam"),
    ('"Ham"', SMS, "ham"),
    ("The text asks for a number.\nSo the answer is NUM", TREC, "NUM"),
    ("I cannot decide", SMS, None),
    ('{"label": "maybe"}', SMS, None),
    ('{"label": 7}', SMS, None),
    ("It is either ham or spam", SMS, None),
    ("", SMS, None),
    ("Final label: eggs", SMS, None),
], ids=["json", "fenced", "embedded-json-case", "json-index", "json-index-str", "final-line",
        "final-line-markup", "final-equals", "bare", "quoted", "last-line-word", "no-class", "json-unknown",
        "index-out-of-range", "two-classes-ambiguous", "empty", "final-unknown"])
def test_parse_reply_forms(reply: str, classes: list[str], expected: str | None) -> None:
    assert parse_reply(reply, classes)[0] == expected


def test_parse_reply_keeps_reason() -> None:
    assert parse_reply('{"reason": "prize offer", "label": "spam"}', SMS) == ("spam", "prize offer")
    assert parse_reply("Reason: from a friend\nFinal label: ham", SMS) == ("ham", "from a friend")


def test_match_class_rejects_bool() -> None:
    assert match_class(True, SMS) is None


def test_label_schema_enum_lists_every_class() -> None:
    schema = label_schema(TREC)["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == TREC
    assert schema["required"] == ["reason", "label"]


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "none"])
def test_prompt_is_stable_prefix_with_every_class(mode: str) -> None:
    prompt = LabelPrompt(TREC, "Rule text.", mode)
    a, b = prompt.messages("first text"), prompt.messages("second text")
    assert a[0] == b[0], "the system message must not depend on the chunk (provider prompt caching)"
    assert all(c in a[0]["content"] for c in TREC) and "Rule text." in a[0]["content"]
    assert a[1]["content"] == "<text>\nfirst text\n</text>"
    fmt = prompt.response_format()
    assert (fmt is None) == (mode == "none")


def test_confidence_from_logprobs() -> None:
    reply = LLMReply(text='{"label":"spam"}', model="m", tokens_in=1, tokens_out=1, latency_s=0, cost_usd=0,
                     cost_known=False, logprobs=[{"token": '{"', "logprob": -0.01}, {"token": "label", "logprob": -0.01},
                                                 {"token": "sp", "logprob": -0.105}, {"token": "am", "logprob": 0.0}])
    assert label_confidence(reply, "spam") == pytest.approx(0.9003, abs=1e-3)
    assert label_confidence(json_reply_without_logprobs(), "spam") is None


def json_reply_without_logprobs() -> LLMReply:
    return LLMReply(text=json.dumps({"label": "spam"}), model="m", tokens_in=1, tokens_out=1, latency_s=0,
                    cost_usd=0, cost_known=False)


def test_needs_label() -> None:
    assert needs_label(None)
    assert not needs_label(Label("c", "spam", "ok", "m"))
    assert not needs_label(Label("c", None, "failed", "m", error="reply names no class"))
    assert needs_label(Label("c", None, "failed", "m", error="provider unavailable", retryable=True))
