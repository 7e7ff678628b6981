"""Input files to chunks of text: bytes -> text -> chunks, with a record of everything left out.

Does: turn each file into text with ``core.ingest.readers`` (.txt/.md, .pdf, .docx; a .jsonl record is one chunk);
split long text into chunks of at most ``chunk_size`` characters at the most natural boundary at hand (paragraph,
sentence, line, word, and only then a hard cut); give each chunk a stable id; keep exact duplicates once;
say, for every file or .jsonl line it could not use, why, and for every text file whose encoding was guessed or
taken from a byte-order mark, which encoding read it (``decoded_as``; logged too).

Does not: touch S3 or the filesystem (the caller passes ``(key, bytes)`` pairs and writes the report), OCR
scanned PDFs, render markdown, overlap chunks, or check its settings: ``chunk_size`` (``system.chunk_size``, an
integer >= 1) and ``truncation_type`` (``training.truncation_type``, "head" or "head-tail") were validated by
``core.config`` when the settings were loaded.

    >>> r = ingest([("a.txt", b"Hi there.\\n\\n\\nBye   now.")], chunk_size=100, truncation_type="head")
    >>> [(c.source, c.position, c.text) for c in r.chunks]
    [('a.txt', 0, 'Hi there.\\n\\nBye now.')]
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from core.errors import NoUsableChunks
from core.ingest.decoding import Decoded
from core.ingest.readers import READERS, Draft, Skip, clean, normalise, read_jsonl_records, read_text
from core.schema import Chunk, SkippedInput

log = logging.getLogger("bootstrapper")

SUPPORTED_EXTENSIONS = (".txt", ".md", ".pdf", ".docx", ".jsonl")
_PLAIN_TEXT = (".txt", ".md", ".jsonl")
TRUNCATION_MARKER = " […] "

# Boundaries from the most to the least natural; each pattern matches the separator a piece ends with.
# Lines come after sentences because PDF text breaks lines mid-sentence, but tables (one row a line) and
# lists have no sentence punctuation at all.
_BOUNDARIES = (
    re.compile(r"\n\n"),
    re.compile(r"[.!?…][\"'”’»)\]]*\s+|[。！？]+"),
    re.compile(r"\n"),
    re.compile(r"\s+"),
)
# ---- pure text functions ----------------------------------------------------------------------------


def _split_after(text: str, boundary: re.Pattern[str]) -> list[str]:
    """Cut ``text`` after each separator; the pieces concatenate back to ``text``."""
    pieces, start = [], 0
    for match in boundary.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _pieces(text: str, size: int, level: int = 0) -> Iterator[tuple[str, bool]]:
    """Yield ``(piece, starts_new_chunk)`` with every piece's stripped length <= size.

    A segment too long for one chunk starts a new chunk, so the start of a long paragraph is not stuck
    to the end of an unrelated one.
    """
    if len(text.strip()) <= size:
        yield text, False
        return
    if level == len(_BOUNDARIES):  # a single word longer than a chunk: hard cuts, whitespace kept outside
        word = text.strip()
        lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
        cuts = [word[i : i + size] for i in range(0, len(word), size)]
        cuts[-1] += trail
        yield from ((piece, i == 0) for i, piece in enumerate([lead, *cuts] if lead else cuts))
        return
    first = True
    for segment in _split_after(text, _BOUNDARIES[level]):
        for piece, starts in _pieces(segment, size, level + 1):
            yield piece, starts or first
            first = False


def _pack(pieces: Iterable[tuple[str, bool]], size: int) -> list[str]:
    """Greedily join consecutive pieces into chunks of at most ``size`` characters (stripped)."""
    chunks: list[str] = []
    current: list[str] = []
    length = 0  # raw length of current, trailing whitespace included
    for piece, starts_new in pieces:
        if current and (starts_new or length + len(piece.rstrip()) > size):
            chunks.append("".join(current).strip())
            current, length = [], 0
        if not current:
            piece = piece.lstrip()
            if not piece:
                continue
        current.append(piece)
        length += len(piece)
    if current:
        chunks.append("".join(current).strip())
    return [c for c in chunks if c]


def chunk_text(text: str, chunk_size: int) -> list[str]:
    """Split ``text`` into non-empty chunks of at most ``chunk_size`` characters.

    Small paragraphs are packed together; a paragraph too long for one chunk is cut at sentence ends, then
    line breaks, then spaces, and a single word longer than a chunk is cut hard. Only whitespace is lost.
    """
    return _pack(_pieces(normalise(text), chunk_size), chunk_size)


def _head(text: str, n: int) -> str:
    """The first ``n`` characters, cut at whitespace instead when some lies in their last tenth."""
    cut = text[:n]
    if 0 < n < len(text) and not text[n].isspace():
        window = range(n - 1, n - 1 - max(1, n // 10), -1)
        space = next((i for i in window if cut[i].isspace()), None)
        cut = cut if space is None else cut[:space]
    return cut.rstrip()


def _tail(text: str, n: int) -> str:
    """The last ``n`` characters, cut at whitespace instead when some lies in their first tenth."""
    return _head(text[::-1], n)[::-1]


def truncate(text: str, limit: int, truncation_type: str) -> str:
    """Shorten ``text`` to at most ``limit`` characters.

    ``"head"`` keeps the beginning; ``"head-tail"`` keeps about a third from the beginning and two thirds
    from the end, joined by ``TRUNCATION_MARKER`` (counted in the limit). Limits too small for the marker
    fall back to ``"head"``.
    """
    if len(text) <= limit:
        return text
    room = limit - len(TRUNCATION_MARKER)
    if truncation_type == "head" or room < 3:
        return _head(text, limit)
    head_len = room // 3
    return _head(text, head_len) + TRUNCATION_MARKER + _tail(text, room - head_len)


def chunk_id(source: str, position: int, text: str) -> str:
    """16 hex characters of the sha256 of the JSON array ``[source, position, text]`` (unambiguous)."""
    payload = json.dumps([source, position, text], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# ---- ingest -----------------------------------------------------------------------------------------


def _junk_reason(key: str) -> str | None:
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if not parts or key.endswith("/"):
        return "folder marker, not a file"
    name = parts[-1]
    if "__MACOSX" in parts[:-1]:
        return "macOS archive metadata (__MACOSX folder)"
    if name == ".DS_Store":
        return "macOS folder metadata (.DS_Store)"
    if name.startswith("._"):
        return "macOS resource fork (._ file)"
    if any(p.startswith(".") for p in parts):
        return "hidden file or folder"
    if name.startswith("~$"):
        return "Office lock file (~$)"
    return None


def _extension(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _drafts(key: str, data: bytes, chunk_size: int,
            truncation_type: str) -> tuple[list[Draft], list[SkippedInput], Decoded | None]:
    """``(position, text, metadata)`` of each chunk of one file before dedup, its skipped lines, and how its text
    was decoded when that is worth telling (anything but plain UTF-8)."""
    junk = _junk_reason(key)
    if junk:
        raise Skip(junk)
    extension = _extension(key)
    if extension not in SUPPORTED_EXTENSIONS:
        raise Skip(f"unsupported extension {extension or '(none)'}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    if not data.strip():
        raise Skip("empty file")
    decoded = read_text(data) if extension in _PLAIN_TEXT else None
    decoded_as = decoded if decoded is not None and decoded.how != "utf-8" else None
    if decoded is not None and extension == ".jsonl":
        records, skipped = read_jsonl_records(key, decoded.text)
        # Records are never split (a record is one unit to classify), only cut; position is the 0-based
        # line so that an id does not change when a bad line elsewhere in the file is fixed.
        drafts = [(n - 1, truncate(text, chunk_size, truncation_type), meta) for n, text, meta in records]
        return drafts, skipped, decoded_as
    text = clean(decoded.text if decoded is not None else READERS[extension](data))
    if not text.strip():
        raise Skip("empty file")
    return [(i, chunk, {}) for i, chunk in enumerate(chunk_text(text, chunk_size))], [], decoded_as


@dataclass(frozen=True)
class IngestResult:
    chunks: list[Chunk]
    skipped: list[SkippedInput]
    files_read: int  # files whose content was parsed; files_read + files_skipped == files given
    duplicates_dropped: int
    per_source: dict[str, int] = field(default_factory=dict)  # chunks kept per file read (0 if all were dupes)
    decoded_as: dict[str, str] = field(default_factory=dict)  # file read -> "cp1251 (detected)"; UTF-8 files absent

    def report(self) -> dict[str, Any]:
        """The content of ``ingest_report.json``."""
        return {
            "files_read": self.files_read,
            "files_skipped": sum(1 for s in self.skipped if s.line is None),
            "chunks_made": len(self.chunks),
            "duplicates_dropped": self.duplicates_dropped,
            "skipped": [s.to_dict() for s in self.skipped],
            "per_source": dict(self.per_source),
            "decoded_as": dict(self.decoded_as),
        }


def ingest(files: Iterable[tuple[str, bytes]], *, chunk_size: int, truncation_type: str) -> IngestResult:
    """Read ``(key, bytes)`` pairs into chunks; the output follows sorted key order whatever the input order.

    Raises ``NoUsableChunks`` (with the full result as ``.result``, for the report) when nothing is left.
    """
    # Each file is read as it arrives and only its text is kept, so the raw bytes of every input (PDFs
    # are mostly not text) never have to be in memory at once; sorting happens afterwards.
    outcomes: list[tuple[str, list[Draft] | None, list[SkippedInput], Decoded | None]] = []
    for key, data in files:
        try:
            outcomes.append((key, *_drafts(key, data, chunk_size, truncation_type)))
        except Skip as skip:
            outcomes.append((key, None, [SkippedInput(source=key, reason=str(skip))], None))
    chunks: list[Chunk] = []
    skipped: list[SkippedInput] = []
    per_source: dict[str, int] = {}
    decoded_as: dict[str, str] = {}
    seen: set[str] = set()
    duplicates = 0
    for key, drafts, file_skips, decoding in sorted(outcomes, key=lambda outcome: outcome[0]):
        skipped.extend(file_skips)
        if drafts is None:
            continue
        if decoding is not None:
            decoded_as[key] = decoding.describe()
            # a guessed encoding can still be wrong: say so where the user looks, not only in the report
            log.log(logging.WARNING if decoding.guessed else logging.INFO, "input %s decoded as %s", key,
                    decoded_as[key])
        per_source[key] = 0
        for position, text, metadata in drafts:
            if text in seen:
                duplicates += 1
                continue
            seen.add(text)
            per_source[key] += 1
            chunks.append(Chunk(chunk_id(key, position, text), text, key, position, metadata))
    result = IngestResult(chunks, skipped, len(per_source), duplicates, per_source, decoded_as)
    if not chunks:
        counts = result.report()
        raise NoUsableChunks(
            f"no usable chunks: {counts['files_read']} file(s) read, {counts['files_skipped']} skipped, "
            f"{len(skipped) - counts['files_skipped']} .jsonl line(s) skipped; "
            "ingest_report.json lists every skipped input and why",
            result=result,
        )
    return result
