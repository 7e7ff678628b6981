"""Plain-text classification rules, the oracle's answer to any prompt that is not about a known text.

Class names come from the prompt (a line such as ``Classes: a, b, c``, or a ``Classes:`` heading followed by
a bulleted or numbered list, optionally ``name: description``), else from the labeled data. Each class gets
a short criteria paragraph (its description when the prompt gave one, plus words typical of its human-labeled
examples when the data has that class), then a default class and edge cases. Pure functions; this is a
template, not a language model, and it says nothing the data and the prompt did not supply.

    >>> class_names_from_prompt("Write rules.\\nClasses: spam, ham\\n")
    [('spam', ''), ('ham', '')]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

_HEADING = r"(?:classes|labels|categories|class names)"
# [^\w\n] rather than \W or \s so a heading never reaches across a line break into the list below it.
_INLINE_RE = re.compile(rf"^[^\w\n]*{_HEADING}[^\w\n:]*:[ \t]*(\S.*)$", re.IGNORECASE | re.MULTILINE)
_BLOCK_RE = re.compile(rf"^[^\w\n]*{_HEADING}[^\w\n]*$", re.IGNORECASE)
_ITEM_RE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.+)$")
_WORD_RE = re.compile(r"[a-z][a-z']{2,}")
_MAX_NAME_CHARS = 40
_STRIP = " \t'\"`*[]()"


def _split_item(item: str) -> tuple[str, str]:
    """``name: description`` or ``name - description`` or a bare name."""
    for separator in (":", " - ", " \u2013 "):
        if separator in item:
            name, description = item.split(separator, 1)
            return name.strip(_STRIP), description.strip()
    return item.strip(_STRIP), ""


def _inline_names(value: str) -> list[tuple[str, str]]:
    pieces = re.split(r"\s*(?:,|;|\||\bor\b)\s*", value.strip().strip("[]."))
    return [(piece.strip(_STRIP), "") for piece in pieces if piece.strip(_STRIP)]


def _block_names(lines: Sequence[str], start: int) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for line in lines[start:]:
        item = _ITEM_RE.match(line)
        if item is None:
            if found or line.strip():
                break
            continue
        found.append(_split_item(item.group(1)))
    return found


def class_names_from_prompt(prompt: str) -> list[tuple[str, str]]:
    """(name, description) pairs named by the prompt, in order, or [] when it names none."""
    inline = _INLINE_RE.search(prompt)
    if inline is not None:
        names = _inline_names(inline.group(1))
        if names and all(len(name) <= _MAX_NAME_CHARS for name, _ in names):
            return names
    lines = prompt.splitlines()
    for index, line in enumerate(lines):
        if _BLOCK_RE.match(line):
            names = [pair for pair in _block_names(lines, index + 1) if 0 < len(pair[0]) <= _MAX_NAME_CHARS]
            if names:
                return names
    return []


def distinctive_words(records: Iterable[tuple[str, str]], per_class: int = 8) -> dict[str, list[str]]:
    """Words that occur in many texts of a label and rarely in the others (document-frequency ratio)."""
    docs_per_label: Counter[str] = Counter()
    word_docs: dict[str, Counter[str]] = {}
    all_docs: Counter[str] = Counter()
    for text, label in records:
        docs_per_label[label] += 1
        words = set(_WORD_RE.findall(text.lower()))
        word_docs.setdefault(label, Counter()).update(words)
        all_docs.update(words)
    total = sum(docs_per_label.values())
    result: dict[str, list[str]] = {}
    for label, counts in word_docs.items():
        inside = docs_per_label[label]
        outside = max(total - inside, 1)

        def score(word: str, counts: Counter[str] = counts, inside: int = inside, outside: int = outside) -> float:
            ratio = (counts[word] / inside) / ((all_docs[word] - counts[word] + 1) / outside)
            return ratio * math.log(1 + counts[word])

        candidates = [word for word, count in counts.items() if count >= 3]
        result[label] = sorted(candidates, key=lambda word: (-score(word), word))[:per_class]
    return result


def _find_label(name: str, labels: Iterable[str]) -> str | None:
    wanted = name.casefold()
    return next((label for label in labels if label.casefold() == wanted), None)


def default_class(names: Sequence[str], label_counts: Mapping[str, int]) -> str:
    """The class most common in the data, else the first one named."""
    counted = [
        (label_counts.get(_find_label(name, label_counts) or "", 0), -index, name) for index, name in enumerate(names)
    ]
    return max(counted)[2] if counted else ""


def rules_text(
    classes: Sequence[tuple[str, str]], label_counts: Mapping[str, int], words: Mapping[str, Sequence[str]]
) -> str:
    names = [name for name, _ in classes]
    default = default_class(names, label_counts)
    lines = ["Classification rules", "", "Classes: " + ", ".join(names), ""]
    for number, (name, description) in enumerate(classes, start=1):
        data_label = _find_label(name, label_counts)
        criteria = description.rstrip(".") + ". " if description else ""
        criteria += f"Assign {name} when the main purpose of the text matches this class"
        typical = words.get(data_label, []) if data_label else []
        criteria += f"; typical signals include: {', '.join(typical)}." if typical else "."
        lines += [f"{number}. {name}", f"Criteria: {criteria}", ""]
    lines += [
        f"Default class: {default}. Use it when no criteria above clearly apply.",
        "",
        "Edge cases:",
        "- A text that fits several classes: choose the class that matches its main purpose, not a side detail.",
        f"- A very short, empty or unintelligible text: {default}.",
        "- Quoted or forwarded content: classify what the sender is doing with it, not the quote alone.",
        "- Judge the meaning, not the spelling: slang, abbreviations and typos do not change the class.",
    ]
    return "\n".join(lines)
