"""The oracle's labeled data: load ``{"text", "label"}`` JSONL and find which known text a prompt is about.

Lookup order for a prompt (the last user message): the content between the markers ``<text>\\n`` and
``\\n</text>`` matched exactly, then with whitespace normalised, then the longest known text contained in the
marked content; with no markers, the longest known text contained in the whole prompt. This module does no
I/O beyond reading the file and knows nothing about HTTP or replies.

    >>> data = LabeledData.from_records([("Win a prize now", "spam"), ("See you at 6", "ham")])
    >>> match, marked = data.find("Label this.\\n<text>\\nSee you  at 6\\n</text>")
    >>> (match.label, match.how, marked)
    ('ham', 'normalized', True)
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

OPEN_MARKER = "<text>\n"
CLOSE_MARKER = "\n</text>"
# Short texts ("Ok.", "Yes") occur by chance inside unrelated prompts such as rules requests; a contained
# match shorter than this only counts when it is the whole prompt.
MIN_CONTAINED_CHARS = 16


@dataclass(frozen=True)
class Match:
    """A known text found in a prompt, its human label, and how it was matched."""

    text: str
    label: str
    how: str  # "exact", "normalized", "contained"


def normalize(text: str) -> str:
    return " ".join(text.split())


def extract_marked(prompt: str) -> str | None:
    """Content of the last ``<text>`` block, or None. The last one, so few-shot examples above it are skipped."""
    end = prompt.rfind(CLOSE_MARKER)
    if end < 0:
        return None
    start = prompt.rfind(OPEN_MARKER, 0, end + 1)
    if start < 0:
        return None
    return prompt[start + len(OPEN_MARKER) : end]


class LabeledData:
    """Known texts and their human labels, indexed for exact, normalised and contained lookups."""

    def __init__(self, exact: dict[str, str]) -> None:
        self._exact = exact
        self._normalized: dict[str, str] = {}
        for text in exact:
            self._normalized.setdefault(normalize(text), text)
        # Longest first so the first contained hit is the longest match.
        self._by_length = sorted(exact, key=len, reverse=True)
        self.labels: tuple[str, ...] = tuple(sorted(set(exact.values())))
        self.label_counts: Counter[str] = Counter(exact.values())

    @classmethod
    def from_records(cls, records: list[tuple[str, str]]) -> LabeledData:
        exact: dict[str, str] = {}
        for text, label in records:
            exact.setdefault(text, label)
        if not exact:
            raise ValueError("labeled data is empty")
        return cls(exact)

    @classmethod
    def load(cls, path: Path) -> LabeledData:
        records: list[tuple[str, str]] = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    records.append((str(row["text"]), str(row["label"])))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{number}: expected a JSON object with text and label") from exc
        return cls.from_records(records)

    def __len__(self) -> int:
        return len(self._exact)

    def texts(self) -> list[str]:
        return list(self._exact)

    def label_of(self, text: str) -> str:
        return self._exact[text]

    def lookup(self, text: str) -> Match | None:
        """Exact, then whitespace-normalised match of a whole text."""
        if text in self._exact:
            return Match(text, self._exact[text], "exact")
        original = self._normalized.get(normalize(text))
        if original is not None:
            return Match(original, self._exact[original], "normalized")
        return None

    def longest_contained(self, haystack: str) -> Match | None:
        whole = haystack.strip()
        flat = normalize(haystack)
        for text in self._by_length:
            if len(text) < MIN_CONTAINED_CHARS and text.strip() != whole:
                continue
            if text in haystack or normalize(text) in flat:
                return Match(text, self._exact[text], "contained")
        return None

    def find(self, prompt: str) -> tuple[Match | None, bool]:
        """The known text the prompt asks about, and whether the prompt carried ``<text>`` markers."""
        marked = extract_marked(prompt)
        if marked is not None:
            return self.lookup(marked) or self.longest_contained(marked), True
        return self.longest_contained(prompt), False
