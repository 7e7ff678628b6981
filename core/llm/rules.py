"""Rules: the large model turns the user's class description into written classification rules.

Builds the prompt (every class name reaches it, for any number of classes), asks once through the gateway
(cached, ledgered), checks that the reply is usable, and renders the debug file
``rules_creation_generation.yaml``. It does not label anything and does not decide which model to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from core.errors import LLMBadRequest
from core.schema import LLMReply

STAGE = "rules"
MAX_SAMPLE_CHARS = 600


class Chat(Protocol):
    """The slice of ``core.llm.gateway.LLMGateway`` this module needs."""

    async def chat(self, *, stage: str, chunk_id: str, endpoint: Any, messages: list[dict[str, str]],
                   response_format: dict | None = None, max_tokens: int = 400, temperature: float = 0.0,
                   logprobs: bool = False, attempt: int = 0) -> LLMReply: ...


@dataclass(frozen=True)
class RulesResult:
    text: str
    messages: list[dict[str, str]]
    reply: LLMReply


SYSTEM = (
    "You write annotation guidelines for text classification. Your guidelines will be given, word for word, "
    "to annotators who label one text at a time and must pick exactly one class."
)


def build_rules_messages(classes: list[str], desc: str, samples: list[str]) -> list[dict[str, str]]:
    """The rules prompt. ``samples`` (a few raw chunks) ground the rules in what the data looks like."""
    class_lines = "\n".join(f"- {c}" for c in classes)
    parts = [
        f"Task description from the user:\n{desc.strip()}\n",
        f"Classes: {', '.join(classes)}\n{class_lines}\n",
    ]
    if samples:
        shown = "\n".join(
            f"<sample>\n{s[:MAX_SAMPLE_CHARS]}\n</sample>" for s in samples
        )
        parts.append(f"A few unlabeled texts from the data set, so you know what it looks like:\n{shown}\n")
    parts.append(
        "Write the classification rules:\n"
        "1. For each class, in the order given, the criteria that put a text in it, with the cues to look for.\n"
        "2. A default class to use when a text fits none of the criteria clearly, and why.\n"
        "3. Edge cases: texts that could match several classes, and which class wins.\n"
        "Use the class names exactly as written above. Plain text, no preamble."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


def usable_rules(text: str, classes: list[str]) -> bool:
    """Rules are usable when they are non-trivial and name at least one class (most name them all)."""
    lowered = text.lower()
    return len(text.strip()) >= 20 and any(c.lower() in lowered for c in classes)


async def create_rules(
    chat: Chat,
    endpoint: Any,
    classes: list[str],
    desc: str,
    samples: list[str],
    *,
    max_tokens: int = 1500,
    temperature: float = 0.0,
) -> RulesResult:
    """One call; one fresh retry (a distinct cache entry) when the reply is empty or names no class."""
    messages = build_rules_messages(classes, desc, samples)
    reply: LLMReply | None = None
    for attempt in range(2):
        reply = await chat.chat(stage=STAGE, chunk_id="", endpoint=endpoint, messages=messages,
                                max_tokens=max_tokens, temperature=temperature, attempt=attempt)
        if usable_rules(reply.text, classes):
            return RulesResult(text=reply.text.strip(), messages=messages, reply=reply)
    raise LLMBadRequest(
        f"the large model ({endpoint.model}) returned no usable rules twice "
        f"(reply started: {(reply.text if reply else '')[:200]!r})"
    )


def rules_generation_yaml(result: RulesResult) -> str:
    """The debug file users expect: prompt, response, model and usage."""
    doc = {
        "model": result.reply.model,
        "prompt": result.messages,
        "response": result.text,
        "usage": {
            "prompt_tokens": result.reply.tokens_in,
            "completion_tokens": result.reply.tokens_out,
            "cost_usd": result.reply.cost_usd,
            "cost_known": result.reply.cost_known,
            "from_cache": result.reply.cached,
        },
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
