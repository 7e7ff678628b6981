"""What a step works on: the run's chunks, splits and per-iteration choices, read at most once per step.

The pipeline makes one ``RunData`` for each step it runs and hands it to the step, so no helper re-reads
``chunks.jsonl`` or ``splits.json``: ``chunks`` loads every chunk once, ``subset`` streams the file once and keeps
only the chunks asked for, ``stream`` walks it once holding one chunk at a time (the final prediction). A new
object per step keeps it honest: what an earlier step wrote is read fresh, never from a stale copy.

    data = RunData(storage)
    data.splits["test"]            # ids, from splits.json (read on first use)
    data.texts(ids)                # texts in the order of ids, from chunks.jsonl (read on first use)
    data.remaining_ids()           # chunks no set used: counted from the ids alone, no chunk is read

Does not: write anything, choose chunks (``core.run.picks``), or know about steps.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from functools import cached_property
from typing import Any

from core.errors import ObjectNotFound
from core.run import layout
from core.schema import Chunk
from core.storage.backends import Storage
from core.storage.jsonl_log import read_jsonl

GOLD_KEY = "label"  # a .jsonl input record's "label" key, when it holds a class name, is a human label


def gold_label(chunk: Chunk, classes: Sequence[str]) -> str | None:
    """The human label an input record carried, if it names one of ``classes``.

    >>> gold_label(Chunk(id="a", source="s.jsonl", position=0, text="t", metadata={"label": "spam"}), ["ham", "spam"])
    'spam'
    """
    value = chunk.metadata.get(GOLD_KEY)
    return value if isinstance(value, str) and value in classes else None


class RunData:
    """Read-once lookups over one output location's chunks, splits and stored iteration choices."""

    def __init__(self, output: Storage) -> None:
        self.output = output
        self._picks: dict[int, list[str] | None] = {}

    @cached_property
    def splits(self) -> dict[str, list[str]]:
        """``{"test": [...], "train": [...], "pool": [...]}``: every chunk id is in exactly one."""
        splits: dict[str, list[str]] = json.loads(self.output.read_text(layout.SPLITS))
        return splits

    @cached_property
    def chunks(self) -> dict[str, Chunk]:
        """Every chunk by id, read from ``chunks.jsonl`` once."""
        return {d["id"]: Chunk.from_dict(d) for d in read_jsonl(self.output, layout.CHUNKS)}

    def chunk_ids(self) -> list[str]:
        """Every chunk id, in file order (a pass over the file that keeps only the ids)."""
        if "chunks" in self.__dict__:
            return list(self.chunks)
        return [d["id"] for d in read_jsonl(self.output, layout.CHUNKS)]

    def texts(self, ids: Sequence[str]) -> list[str]:
        return [self.chunks[i].text for i in ids]

    def subset(self, ids: Collection[str]) -> dict[str, Chunk]:
        """The chunks of ``ids``: from memory when every chunk is loaded, else one pass keeping only those."""
        if "chunks" in self.__dict__:
            return {i: self.chunks[i] for i in ids if i in self.chunks}
        wanted = set(ids)
        return {d["id"]: Chunk.from_dict(d) for d in read_jsonl(self.output, layout.CHUNKS) if d["id"] in wanted}

    def stream(self, exclude: Collection[str] = ()) -> Iterator[Chunk]:
        """Every chunk not in ``exclude``, in file order, one at a time (memory stays flat)."""
        for d in read_jsonl(self.output, layout.CHUNKS):
            if d["id"] not in exclude:
                yield Chunk.from_dict(d)

    def pick(self, n: int) -> list[str] | None:
        """The chunk ids iteration ``n`` chose (``iterations/iteration_<n>.json``), or None before it chose."""
        if n not in self._picks:
            try:
                self._picks[n] = json.loads(self.output.read_text(layout.iteration_choice(n)))["ids"]
            except ObjectNotFound:
                return None
        return self._picks[n]

    def remember_pick(self, n: int, ids: list[str]) -> None:
        """Record a choice just written, so this step does not read it back."""
        self._picks[n] = ids

    def picked_until(self, n: int) -> list[str]:
        """Every id iterations 1..n chose, in order (a missing choice counts as none)."""
        return [i for m in range(1, n + 1) for i in (self.pick(m) or [])]

    def used_ids(self) -> set[str]:
        """The test set and every stored iteration choice: chunks that have (or will have) an LLM label."""
        used = set(self.splits["test"])
        for key in self.output.list(layout.ITERATIONS):
            used.update(json.loads(self.output.read_text(key))["ids"])
        return used

    def remaining_ids(self) -> list[str]:
        """Chunks no set used, the ones the final prediction classifies; from splits.json and the choices alone."""
        used = self.used_ids()
        return [i for i in self.splits["train"] + self.splits["pool"] if i not in used]

    def rules_text(self) -> str:
        rules: dict[str, Any] = json.loads(self.output.read_text(layout.RULES))
        return str(rules["text"])
