"""Pure builders for the oracle's labeling replies: classes, noisy labels, reply text, usage and logprobs.

Everything here is a function of its arguments: the same (seed, model, text) always gives the same label,
as a temperature-0 LLM would, and different model names err on different texts. No HTTP, no state, no
randomness beyond a hash. Rules replies live in ``oracle.rules``; each provider's envelope in ``oracle.protocols``.

    >>> noisy_label("spam", ("ham", "spam"), noise=0.0, seed=0, model="m", text="t")
    ('spam', False)
    >>> label_parts("spam", "Offers a prize.", as_json=False)
    ('Reason: Offers a prize.\\nFinal label: ', 'spam', '')
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

LABEL_PROB = 0.9
FLIPPED_LABEL_PROB = 0.6
OTHER_TOKEN_PROB = 0.99
BAD_LABEL_CANDIDATES = ("unsure", "other", "none_of_these", "n/a")
_TOKEN_RE = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+")


def wants_json(response_format: Any) -> bool:
    return isinstance(response_format, Mapping) and response_format.get("type") in ("json_schema", "json_object")


def _find_enum(node: Any) -> list[Any] | None:
    if isinstance(node, Mapping):
        enum = node.get("enum")
        if isinstance(enum, list):
            return enum
        for value in node.values():
            found = _find_enum(value)
            if found is not None:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _find_enum(value)
            if found is not None:
                return found
    return None


def classes_from_schema(schema: Any) -> tuple[str, ...] | None:
    """The label enum of a JSON schema: ``properties.label`` first, else any enum.

    Pydantic puts an Enum field under ``$defs`` behind a ``$ref``, hence the search of the whole schema.
    """
    if not isinstance(schema, Mapping):
        return None
    properties = schema.get("properties")
    label_node = properties.get("label") if isinstance(properties, Mapping) else None
    enum = _find_enum(label_node) if label_node is not None else None
    enum = enum if enum is not None else _find_enum(schema)
    if not enum:
        return None
    return tuple(str(value) for value in enum)


def classes_from_response_format(response_format: Any) -> tuple[str, ...] | None:
    """The label enum of an OpenAI ``json_schema`` response format (see ``classes_from_schema``)."""
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    return classes_from_schema(spec.get("schema") if isinstance(spec, Mapping) else None)


def unit_hashes(*parts: object) -> tuple[float, float]:
    """Two independent uniform numbers in [0, 1) from a stable hash of ``parts``."""
    digest = hashlib.sha256("\x00".join(str(part) for part in parts).encode("utf-8")).digest()
    scale = float(2**64)
    return int.from_bytes(digest[:8], "big") / scale, int.from_bytes(digest[8:16], "big") / scale


def resolve_class(label: str, classes: Sequence[str]) -> str | None:
    """The class spelled as the request spells it; case and surrounding space do not matter."""
    wanted = label.strip().casefold()
    for name in classes:
        if name.strip().casefold() == wanted:
            return name
    return None


def noisy_label(human: str, classes: Sequence[str], noise: float, seed: int, model: str, text: str) -> tuple[str, bool]:
    """The human label, or with probability ``noise`` a different class chosen uniformly; (label, flipped)."""
    label = resolve_class(human, classes) or human
    others = [name for name in classes if name != label]
    flip_draw, choice_draw = unit_hashes(seed, model, text)
    if not others or flip_draw >= noise:
        return label, False
    return others[min(int(choice_draw * len(others)), len(others) - 1)], True


def bad_label(classes: Sequence[str]) -> str:
    """A label that is not one of ``classes``."""
    for candidate in BAD_LABEL_CANDIDATES:
        if resolve_class(candidate, classes) is None:
            return candidate
    return "not-a-class-" + "-".join(classes)


def reason_for(label: str, text: str) -> str:
    preview = " ".join(text.split())
    preview = preview if len(preview) <= 60 else preview[:57] + "..."
    return f'The content of "{preview}" best fits the criteria for {label}.'


def label_parts(label: str, reason: str, as_json: bool) -> tuple[str, str, str]:
    """Reply content split around the label, so logprobs can point at the label token."""
    if as_json:
        prefix = '{"reason": ' + json.dumps(reason, ensure_ascii=False) + ', "label": "'
        return prefix, label, '"}'
    return f"Reason: {reason}\nFinal label: ", label, ""


def malformed_content(label: str, reason: str, as_json: bool) -> str:
    """What a sloppy model returns: truncated JSON when JSON was asked for, else no final-label line."""
    if as_json:
        prefix, value, _ = label_parts(label, reason, as_json=True)
        return "Sure! Here is the classification:\n" + prefix + value
    return f"Reason: {reason}\nI would lean towards {label}, but it is hard to say."


def usage(prompt_chars: int, completion: str) -> dict[str, int]:
    """Token counts estimated as characters / 4, the usual rule of thumb for English text."""
    prompt_tokens = max(1, math.ceil(prompt_chars / 4))
    completion_tokens = max(1, math.ceil(len(completion) / 4))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _entry(token: str, prob: float) -> dict[str, Any]:
    return {"token": token, "logprob": math.log(prob), "bytes": list(token.encode("utf-8"))}


def filler_logprobs(text: str, top_k: int) -> list[dict[str, Any]]:
    """Logprobs for tokens the model is near-certain of (everything but the label)."""
    return [
        {**_entry(token, OTHER_TOKEN_PROB), "top_logprobs": [_entry(token, OTHER_TOKEN_PROB)][:top_k]}
        for token in tokenize(text)
    ]


def logprobs_content(
    parts: tuple[str, str, str], label_prob: float, classes: Sequence[str], top_k: int
) -> list[dict[str, Any]]:
    """OpenAI ``choices[].logprobs.content``: near-certain filler tokens and one label token at ``label_prob``.

    The label token's alternatives are the other classes sharing the remaining probability mass.
    """
    prefix, label, suffix = parts
    others = [name for name in classes if name != label]
    rest = (1.0 - label_prob) / len(others) if others else 0.0
    alternatives = [_entry(label, label_prob)] + [_entry(name, rest) for name in others if rest > 0]
    label_entry = {**_entry(label, label_prob), "top_logprobs": alternatives[:top_k]}
    return [*filler_logprobs(prefix, top_k), label_entry, *filler_logprobs(suffix, top_k)]
