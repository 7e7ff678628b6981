"""Input file bytes to text: one reader per format, and the text clean-up every reader's output gets.

Does: decode .txt/.md (``core.ingest.decoding``: byte-order mark, UTF-8, then a checked detection), extract the text of .pdf (pypdf) and .docx
(python-docx, paragraphs and tables in document order), and read .jsonl records (text plus metadata per
line, with a reason for every line it cannot use). A file it cannot use raises ``Skip`` with the reason.

Does not: chunk, give ids, or deduplicate (``core.ingest.chunking`` does), or touch storage.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import docx
from docx.table import Table
from pypdf import PdfReader

from core.ingest.decoding import Decoded, decode
from core.schema import SkippedInput

_HSPACE = re.compile(r"[^\S\n]+")
_SPACE_AT_LINE_EDGE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")
# C0/C1 control characters except tab, newline, form feed and carriage return; and lone surrogates, which
# only escaped JSON can produce and which no UTF-8 writer accepts.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_BINARY_CONTROL_RATIO = 0.10

Draft = tuple[int, str, dict[str, Any]]  # (position or line, text, metadata) of a chunk before dedup


class Skip(Exception):
    """Why one input is unusable (the message). Control flow between the readers and core.ingest.chunking only:
    ``ingest`` turns it into a SkippedInput and never lets it out."""


# ---- text clean-up --------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Collapse runs of spaces, trim lines, keep single line breaks and at most one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
    text = text.replace("\f", "\n\n").replace("\u2029", "\n\n")
    text = _SPACE_AT_LINE_EDGE.sub("\n", _HSPACE.sub(" ", text))
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean(text: str) -> str:
    return _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", text))


def describe(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}"[:200] if message else type(exc).__name__


# ---- readers: bytes -> text, or Skip ---------------------------------------------------------------


def read_text(data: bytes) -> Decoded:
    """The decoded text of a plain-text file, and how it was decoded; Skip when it is not text."""
    decoded = decode(data)
    text = decoded.text
    if "\x00" in text or len(_CONTROL.findall(text)) > _BINARY_CONTROL_RATIO * len(text):
        # UTF-16 and Shift-JIS were tried by then: whatever read these bytes, they are not text.
        raise Skip(f"binary content in a text file (NUL or control bytes even when read as {decoded.encoding})")
    return decoded


def read_plain(data: bytes) -> str:
    return read_text(data).text


def _open_without_password(reader: PdfReader) -> None:
    try:
        opened = bool(reader.decrypt(""))  # many PDFs only restrict printing: their user password is empty
    except Exception as exc:  # e.g. DependencyError: AES needs the cryptography package
        raise Skip(f"encrypted PDF: {describe(exc)}") from exc
    if not opened:
        raise Skip("encrypted PDF (needs a password)")


def _read_pdf(data: bytes) -> str:
    # pypdf raises many unrelated exception types on malformed files (its own, ValueError, KeyError,
    # RecursionError...): any of them means this one file is unreadable, never that the run must stop.
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            _open_without_password(reader)
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except Skip:
        raise
    except Exception as exc:
        raise Skip(f"corrupt PDF: {describe(exc)}") from exc
    if not text.strip():
        raise Skip("no extractable text (scanned PDF?)")
    return text


def _table_text(table: Table) -> str:
    rows = []
    for row in table.rows:
        cells, previous = [], None
        for cell in row.cells:
            if cell is previous:  # python-docx repeats the same cell object across a horizontal merge
                continue
            previous = cell
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _read_docx(data: bytes) -> str:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise Skip("corrupt DOCX: not a zip package (an old .doc, or a password-protected file?)")
    try:  # broad for the same reason as in _read_pdf: malformed packages fail in many ways
        document = docx.Document(io.BytesIO(data))
        blocks = [
            _table_text(block) if isinstance(block, Table) else block.text
            for block in document.iter_inner_content()
        ]
    except Exception as exc:
        raise Skip(f"corrupt DOCX: {describe(exc)}") from exc
    text = "\n\n".join(b for b in blocks if b.strip())
    if not text:
        raise Skip("no text in DOCX")
    return text


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def read_jsonl_records(source: str, text: str) -> tuple[list[Draft], list[SkippedInput]]:
    """``(line, text, other keys)`` per usable record, and a SkippedInput per unusable line (1-based)."""
    records, skipped = [], []
    # split on "\n" only: JSON strings may hold a raw U+2028, which str.splitlines() would cut at
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            skipped.append(SkippedInput(source, f"invalid JSON ({exc.msg}, column {exc.colno})", number))
            continue
        except (ValueError, RecursionError) as exc:
            skipped.append(SkippedInput(source, f"invalid JSON ({describe(exc)})", number))
            continue
        if not isinstance(record, dict):
            reason = f"record is not a JSON object (got {_json_type(record)})"
        elif "text" not in record:
            reason = 'no "text" key'
        elif not isinstance(record["text"], str):
            reason = f'"text" is not a string (got {_json_type(record["text"])})'
        elif not (cleaned := normalise(clean(record["text"]))):
            reason = 'empty "text"'
        else:
            records.append((number, cleaned, {k: v for k, v in record.items() if k != "text"}))
            continue
        skipped.append(SkippedInput(source, reason, number))
    return records, skipped


READERS = {".txt": read_plain, ".md": read_plain, ".pdf": _read_pdf, ".docx": _read_docx}
