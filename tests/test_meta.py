"""Tests for core.report.meta_dataset: chat-format examples per meta_datagen key and extra template, and the JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import MetaDatagenSettings
from core.llm.labeling import LabelPrompt
from core.llm.rules import RulesResult, build_rules_messages
from core.report.meta_dataset import (
    META_DATASET_KEY,
    META_KEYS,
    build_meta_examples,
    fill_template,
    validate_meta_keys,
    write_meta_dataset,
)
from core.schema import LLMReply
from core.storage.backends import LocalStorage

CLASSES = ["billing", "technical", "other"]
DESC = "Support tickets: money questions, broken things, everything else."
RULES_TEXT = "billing: invoices, refunds. technical: errors, crashes. other: the default."


def rules_result() -> RulesResult:
    messages = build_rules_messages(CLASSES, DESC, ["My invoice is wrong"])
    reply = LLMReply(text=RULES_TEXT, model="openai/oracle-large", tokens_in=300, tokens_out=40, latency_s=0.1,
                     cost_usd=0.0, cost_known=False)
    return RulesResult(text=RULES_TEXT, messages=messages, reply=reply)


def label_records() -> list[tuple[list[dict], str]]:
    prompt = LabelPrompt(classes=CLASSES, rules=RULES_TEXT, format_mode="json_schema")
    return [
        (prompt.messages("I was charged twice"), '{"reason": "double charge", "label": "billing"}'),
        (prompt.messages("The app crashes on start"), '{"reason": "crash", "label": "technical"}'),
    ]


def roles(example: dict) -> list[str]:
    return [m["role"] for m in example["messages"]]


def test_rules_creation_details() -> None:
    rules = rules_result()
    [ex] = build_meta_examples(["rules_creation_details"], [], rules, label_records())
    assert ex["kind"] == "rules_creation_details"
    assert roles(ex) == ["system", "user", "assistant"]
    assert ex["messages"][:2] == rules.messages
    assert ex["messages"][2] == {"role": "assistant", "content": RULES_TEXT}
    assert all(c in ex["messages"][1]["content"] for c in CLASSES)


def test_label_details() -> None:
    records = label_records()
    examples = build_meta_examples(["label_details"], [], rules_result(), records)
    assert [ex["kind"] for ex in examples] == ["label_details", "label_details"]
    for ex, (messages, reply) in zip(examples, records):
        assert roles(ex) == ["system", "user", "assistant"]
        assert ex["messages"][:2] == messages
        assert ex["messages"][2]["content"] == reply
    assert "I was charged twice" in examples[0]["messages"][1]["content"]


def test_both_keys_rules_first_and_inputs_untouched() -> None:
    records = label_records()
    before = json.dumps(records)
    examples = build_meta_examples(list(META_KEYS), [], rules_result(), records)
    assert [ex["kind"] for ex in examples] == ["rules_creation_details", "label_details", "label_details"]
    examples[1]["messages"][0]["content"] = "edited"
    assert json.dumps(records) == before  # examples are copies, not views of the caller's messages


def test_no_keys_no_examples() -> None:
    assert build_meta_examples([], [], rules_result(), label_records()) == []


def test_extras_fill_placeholders() -> None:
    template = "Classes {classes}. Task: {desc} Reply as JSON like {\"rules\": \"...\"}. Known: {rules}"
    examples = build_meta_examples([], [template, "Write rules for {desc}"], rules_result(), label_records(),
                                   classes=CLASSES, desc=DESC)
    assert [ex["kind"] for ex in examples] == ["extra", "extra"]
    first = examples[0]
    assert roles(first) == ["system", "user", "assistant"]
    assert first["messages"][0] == rules_result().messages[0]
    assert first["messages"][1]["content"] == (
        f"Classes billing, technical, other. Task: {DESC} Reply as JSON like {{\"rules\": \"...\"}}. "
        f"Known: {RULES_TEXT}"
    )
    assert first["messages"][2] == {"role": "assistant", "content": RULES_TEXT}
    assert examples[1]["messages"][1]["content"] == f"Write rules for {DESC}"


def test_fill_template_leaves_other_braces() -> None:
    assert fill_template("{x} {classes} {{desc}}", classes=["a", "b"], desc="D", rules="R") == "{x} a, b {D}"


def test_extras_need_classes_and_desc() -> None:
    with pytest.raises(ValueError, match="classes and the description"):
        build_meta_examples([], ["Rules for {classes}"], rules_result(), [])


def test_without_rules_only_label_examples() -> None:
    examples = build_meta_examples(list(META_KEYS), ["Rules for {classes}"], None, label_records(),
                                   classes=CLASSES, desc=DESC)
    assert [ex["kind"] for ex in examples] == ["label_details", "label_details"]


@pytest.mark.parametrize(
    "keys",
    [["label_detail"], ["rules_creation_details", "bogus"], ["Label_Details"]],
    ids=["typo", "one-bad-of-two", "wrong-case"],
)
def test_unknown_key_is_named(keys: list[str]) -> None:
    bad = next(k for k in keys if k not in META_KEYS)
    with pytest.raises(ValueError, match=repr(bad)):
        build_meta_examples(keys, [], rules_result(), [])
    with pytest.raises(ValueError, match="known keys: rules_creation_details, label_details"):
        validate_meta_keys(keys)


def test_config_defaults_are_valid_keys() -> None:
    default = MetaDatagenSettings().meta_datagen_keys
    assert validate_meta_keys(default) == default


def test_write_meta_dataset(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    examples = build_meta_examples(list(META_KEYS), ["Rules for {classes} ✓"], rules_result(), label_records(),
                                   classes=CLASSES, desc=DESC)
    assert write_meta_dataset(storage, examples) == META_DATASET_KEY
    lines = (tmp_path / "meta_datagen" / "meta_dataset.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == examples
    assert "✓" in lines[1]  # unicode kept readable, not escaped
