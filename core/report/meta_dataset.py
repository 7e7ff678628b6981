"""Meta datagen: the run's own LLM calls turned into chat-format examples for training an LLM to do them.

Each example is ``{"messages": [system, user, assistant], "kind": ...}``, one JSON object per line of
``meta_datagen/meta_dataset.jsonl``. The kinds, chosen with ``meta_datagen.meta_datagen_keys``:

- ``rules_creation_details``: the rules prompt and the large model's rules (one example);
- ``label_details``: one example per successful labeling call, its prompt and the model's raw reply;

plus one example of kind ``extra`` per template in ``meta_datagen.meta_datagen_extras``.

Extras are alternative phrasings of the rules request. In a template, exactly the placeholders
``{classes}`` (the class names, comma-separated), ``{desc}`` and ``{rules}`` are replaced; every other
character, braces included, is kept verbatim, so a template may quote JSON. The example's user turn is the
filled template and its assistant turn is the rules text, under the rules prompt's system message: the
model learns to write these rules when asked that way. A template that uses ``{rules}`` therefore shows the
answer in the question (useful for "restate these rules" tasks, pointless otherwise).

This module builds and writes examples; it makes no calls and does not decide which calls were
successful: the caller passes only labeling calls whose reply parsed to a class.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from core.config import META_DATAGEN_KEYS
from core.llm.rules import RulesResult
from core.run import layout
from core.storage.jsonl_log import write_jsonl

if TYPE_CHECKING:
    from core.storage.backends import Storage

META_KEYS = META_DATAGEN_KEYS  # defined with the setting, so that core.config can refuse a typo at load
EXTRA_KIND = "extra"
META_DATASET_KEY = layout.META_DATASET


def validate_meta_keys(keys: Iterable[str]) -> list[str]:
    """The keys, unchanged, or ValueError naming every unknown one (config validation calls this)."""
    keys = list(keys)
    unknown = [k for k in keys if k not in META_KEYS]
    if unknown:
        raise ValueError(f"unknown meta_datagen key(s) {', '.join(map(repr, unknown))}; "
                         f"known keys: {', '.join(META_KEYS)}")
    return keys


def fill_template(template: str, *, classes: list[str], desc: str, rules: str) -> str:
    """Replace the three placeholders only; ``str.format`` would choke on any other brace."""
    return (template.replace("{classes}", ", ".join(classes))
            .replace("{desc}", desc)
            .replace("{rules}", rules))


def _copy(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages[:1] if m.get("role") == "system"]


def build_meta_examples(
    keys: list[str],
    extras: list[str],
    rules: RulesResult | None,
    label_records: list[tuple[list[dict], str]],
    *,
    classes: list[str] | None = None,
    desc: str = "",
) -> list[dict]:
    """Examples for the chosen ``keys`` plus one per extra template, rules examples first.

    Without ``rules`` (the rules step has not produced any) there is no assistant answer for the rules
    examples and the extras, so those are left out. Extras need ``classes`` and ``desc`` to fill their
    placeholders; ValueError when they are missing, rather than training on an empty class list.
    """
    validate_meta_keys(keys)
    if extras and rules is not None and (not classes or not desc.strip()):
        raise ValueError("meta_datagen_extras need the classes and the description to fill their templates")
    examples: list[dict] = []
    if "rules_creation_details" in keys and rules is not None:
        examples.append({"messages": [*_copy(rules.messages), {"role": "assistant", "content": rules.text}],
                         "kind": "rules_creation_details"})
    if rules is not None:
        for template in extras:
            user = fill_template(template, classes=list(classes or []), desc=desc, rules=rules.text)
            examples.append({"messages": [*_system(rules.messages), {"role": "user", "content": user},
                                          {"role": "assistant", "content": rules.text}],
                             "kind": EXTRA_KIND})
    if "label_details" in keys:
        for messages, reply in label_records:
            examples.append({"messages": [*_copy(messages), {"role": "assistant", "content": reply}],
                             "kind": "label_details"})
    return examples


def write_meta_dataset(storage: Storage, examples: list[dict]) -> str:
    """One JSON object per line at ``meta_datagen/meta_dataset.jsonl``; returns the key."""
    write_jsonl(storage, META_DATASET_KEY, examples)
    return META_DATASET_KEY
