"""Tests of core.ingest.chunking: readers, skip reasons, chunking, truncation, ids, dedup and the ingest report."""

from __future__ import annotations

import io
import json
import random
import re
import zipfile
from pathlib import Path

import docx
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core.config import load_settings
from core.errors import ConfigError, NoUsableChunks, PermanentError
from core.ingest.chunking import (
    SUPPORTED_EXTENSIONS,
    TRUNCATION_MARKER,
    IngestResult,
    chunk_id,
    chunk_text,
    ingest,
    truncate,
)
from tests.fixtures.inputs import (
    docx_bytes,
    encrypted_pdf_bytes,
    folder_files,
    jsonl_bytes,
    mismatches,
    pdf_bytes,
    scanned_pdf_bytes,
    write_all_inputs,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mixed"


def ingest_one(key: str, data: bytes, chunk_size: int = 500, truncation_type: str = "head-tail") -> IngestResult:
    return ingest([(key, data)], chunk_size=chunk_size, truncation_type=truncation_type)


def settings_error(system: dict[str, object] | None = None, training: dict[str, object] | None = None) -> ConfigError:
    """The error loading a config with these ``system``/``training`` values raises: ingest's settings are checked
    there, once, not by ``ingest``, ``chunk_text`` or ``truncate``."""
    data = {"classification": {"classes": ["ham", "spam"], "desc": "Is this SMS spam?"},
            "system": system or {}, "training": training or {}}
    with pytest.raises(ConfigError) as caught:
        load_settings(yaml.safe_dump(data))
    return caught.value


def skip_reasons(key: str, data: bytes) -> list[str]:
    with pytest.raises(NoUsableChunks) as caught:
        ingest_one(key, data)
    result = caught.value.result
    assert isinstance(result, IngestResult)
    return [s.reason for s in result.skipped]


# ---- readers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "data", "text"),
    [
        ("a.txt", "héllo wörld".encode(), "héllo wörld"),
        ("bom.txt", b"\xef\xbb\xbfhello", "hello"),
        ("cp1252.txt", "café €5 “quoted”".encode("cp1252"), "café €5 “quoted”"),
        ("latin1.txt", b"na\xefve, and a byte cp1252 lacks: \x81 here", "naïve, and a byte cp1252 lacks: here"),
        ("utf16.txt", "hello ünïcode".encode("utf-16"), "hello ünïcode"),
        ("crlf.txt", b"line one\r\nline two\r\n", "line one\nline two"),
        ("doc.md", b"# Title\n\n*emphasis* and `code`", "# Title\n\n*emphasis* and `code`"),
        ("SHOUT.MD", b"upper-case extension", "upper-case extension"),
        ("sub/dir/a.txt", b"in a sub-folder", "in a sub-folder"),
        ("log.txt", b"\x1b[31mERROR\x1b[0m disk full on the backup disk", "[31mERROR [0m disk full on the backup disk"),
    ],
    ids=[
        "utf8", "utf8-bom", "cp1252", "latin1", "utf16-bom", "crlf", "markdown-kept", "upper-ext", "sub-folder",
        "few-controls",
    ],
)
def test_text_readers_decode(key: str, data: bytes, text: str) -> None:
    [chunk] = ingest_one(key, data).chunks
    assert (chunk.text, chunk.source, chunk.position) == (text, key, 0)


def test_pdf_text_is_extracted_in_order() -> None:
    data = pdf_bytes(["First paragraph about revenue.", "Second paragraph about support."], title="Report")
    text = " ".join(c.text for c in ingest_one("r.pdf", data).chunks)
    assert re.search(r"Report\s+First paragraph about revenue\.\s+Second paragraph about support\.", text)


def test_pdf_with_several_pages_keeps_every_page() -> None:
    paragraphs = [f"Paragraph number {i} says something about topic {i}." for i in range(80)]
    text = " ".join(c.text for c in ingest_one("long.pdf", pdf_bytes(paragraphs), chunk_size=2000).chunks)
    assert all(p in text for p in paragraphs)


def test_pdf_encrypted_with_empty_password_is_read() -> None:
    data = encrypted_pdf_bytes(pdf_bytes(["Readable without a password."]), "")
    assert [c.text for c in ingest_one("e.pdf", data).chunks] == ["Readable without a password."]


def test_docx_paragraphs_and_tables_row_by_row() -> None:
    data = docx_bytes(["# Minutes", "Before the table.", [["Item", "Owner"], ["Budget", "Sam"]], "After it."])
    [chunk] = ingest_one("m.docx", data).chunks
    assert chunk.text == "Minutes\n\nBefore the table.\n\nItem | Owner\nBudget | Sam\n\nAfter it."


def test_docx_merged_cell_is_read_once() -> None:
    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).merge(table.cell(0, 1)).text = "Merged heading"
    table.cell(0, 2).text = "Right"
    for i, value in enumerate(["a", "b", "c"]):
        table.cell(1, i).text = value
    out = io.BytesIO()
    document.save(out)
    assert ingest_one("t.docx", out.getvalue()).chunks[0].text == "Merged heading | Right\na | b | c"


def _zip_without_document() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("hello.txt", "not a word document")
    return out.getvalue()


_GOOD_PDF = pdf_bytes(["Some text that a reader could extract."])
_GOOD_DOCX = docx_bytes(["Some text."])


@pytest.mark.parametrize(
    ("key", "data", "reason"),
    [
        ("bad.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 4, "corrupt PDF"),
        ("text.pdf", b"plain text, no PDF at all", "corrupt PDF"),
        ("half.pdf", _GOOD_PDF[: len(_GOOD_PDF) // 3], "corrupt PDF"),
        ("locked.pdf", encrypted_pdf_bytes(_GOOD_PDF, "secret"), "encrypted PDF"),
        ("scan.pdf", scanned_pdf_bytes(), "no extractable text (scanned PDF?)"),
        ("half.docx", _GOOD_DOCX[: len(_GOOD_DOCX) // 2], "corrupt DOCX"),
        ("old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), "corrupt DOCX: not a zip"),
        ("zip.docx", _zip_without_document(), "corrupt DOCX"),
        ("blank.docx", docx_bytes([" ", ""]), "no text in DOCX"),
        ("zero.txt", b"", "empty file"),
        ("spaces.md", b" \n\t \r\n ", "empty file"),
        ("bom-only.txt", b"\xef\xbb\xbf  ", "empty file"),
        ("zero.pdf", b"", "empty file"),
        ("nul.txt", b"hello\x00world, a text with a NUL byte", "binary content in a text file"),
        ("ctrl.txt", b"ab\x01\x02\x03cdefghijklmn" * 5, "binary content in a text file"),
        ("noise.md", random.Random(1).randbytes(4000), "binary content in a text file"),
        ("nul.jsonl", b'{"text": "a"}\x00\x00\n', "binary content in a text file"),
        ("table.csv", b"a,b\n1,2\n", "unsupported extension .csv"),
        ("Makefile", b"all:\n", "unsupported extension (none)"),
        ("a.tar.gz", b"x", "unsupported extension .gz"),
        (".env", b"SECRET=1", "hidden file"),
        ("dir/.git/config", b"[core]", "hidden file or folder"),
        ("dir/.DS_Store", b"\x00\x00Bud1", "macOS folder metadata (.DS_Store)"),
        ("dir/._report.txt", b"Mac OS X resource", "macOS resource fork"),
        ("__MACOSX/dir/report.txt", b"resource", "__MACOSX"),
        ("~$minutes.docx", b"lock", "Office lock file"),
        ("folder/", b"", "folder marker"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 and "\n" not in v else "",
)
def test_unusable_file_is_skipped_with_reason(key: str, data: bytes, reason: str) -> None:
    [got] = skip_reasons(key, data)
    assert reason in got


def test_jsonl_records_keep_metadata_and_line_positions() -> None:
    data = b'{"text": "first", "id": 7, "tags": ["a"]}\n\n\n{"text": "second", "label": "spam"}\n'
    result = ingest_one("t.jsonl", data)
    assert [(c.text, c.position, c.metadata) for c in result.chunks] == [
        ("first", 0, {"id": 7, "tags": ["a"]}),
        ("second", 3, {"label": "spam"}),
    ]
    assert result.skipped == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"text": "unterminated', "invalid JSON"),
        ('{"text": NaN}', "invalid JSON"),
        ("[" * 100_000, "invalid JSON"),
        ('["text"]', "record is not a JSON object (got array)"),
        ('{"body": "x"}', 'no "text" key'),
        ('{"text": 5}', '"text" is not a string (got number)'),
        ('{"text": null}', '"text" is not a string (got null)'),
        ('{"text": "  "}', 'empty "text"'),
        (r'{"text": "\u0001\u0002"}', 'empty "text"'),
    ],
    ids=["truncated", "nan", "too-deep", "array", "no-text", "number", "null", "blank", "controls-only"],
)
def test_jsonl_bad_line_is_skipped_with_its_line_number(line: str, reason: str) -> None:
    data = f'{{"text": "good one"}}\n{line}\n{{"text": "good two"}}\n'.encode()
    result = ingest_one("t.jsonl", data)
    assert [c.text for c in result.chunks] == ["good one", "good two"]
    [skip] = result.skipped
    assert (skip.source, skip.line) == ("t.jsonl", 2)
    assert reason in skip.reason


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break() -> None:
    result = ingest_one("t.jsonl", '{"text": "one\u2028two"}\n'.encode())
    assert [c.text for c in result.chunks] == ["one\ntwo"] and result.skipped == []


@pytest.mark.parametrize("truncation_type", ["head", "head-tail"])
def test_long_jsonl_record_is_truncated_not_split(truncation_type: str) -> None:
    words = " ".join(f"word{i}" for i in range(100))
    [chunk] = ingest_one("t.jsonl", jsonl_bytes([{"text": words}]), 60, truncation_type).chunks
    assert len(chunk.text) <= 60 and chunk.text.startswith("word0 word1")
    assert (TRUNCATION_MARKER in chunk.text) == (truncation_type == "head-tail")
    assert chunk.text.endswith("word99") == (truncation_type == "head-tail")


# ---- truncate -----------------------------------------------------------------------------------------


def test_truncate_head_prefers_a_word_boundary_in_the_last_tenth() -> None:
    assert truncate("word " * 40, 52, "head") == ("word " * 10).strip()
    assert truncate("x" * 100, 30, "head") == "x" * 30
    assert truncate("abcdefghij klmnop", 10, "head") == "abcdefghij"


def test_truncate_head_tail_keeps_a_third_of_head_and_two_thirds_of_tail() -> None:
    text = " ".join(f"w{i:03d}" for i in range(200))
    out = truncate(text, 100, "head-tail")
    assert TRUNCATION_MARKER == " […] "
    head, tail = out.split(TRUNCATION_MARKER)
    assert len(out) <= 100 and out.startswith("w000 w001") and out.endswith("w198 w199")
    assert 25 <= len(head) <= 32 and 58 <= len(tail) <= 64
    assert text.startswith(head) and text.endswith(tail)


def test_truncate_leaves_short_text_and_falls_back_to_head_for_tiny_limits() -> None:
    assert truncate("short", 5, "head-tail") == "short"
    assert truncate("abcdefghij", 6, "head-tail") == "abcdef"


@pytest.mark.parametrize(
    ("limit", "kind", "field"),
    [(0, "head", "system.chunk_size"), (10, "tail", "training.truncation_type"), (10, "", "training.truncation_type")],
    ids=["zero-limit", "unknown-type", "empty-type"],
)
def test_bad_truncate_settings_are_refused_at_load(limit: int, kind: str, field: str) -> None:
    assert settings_error({"chunk_size": limit}, {"truncation_type": kind}).field == field


@given(text=st.text(max_size=400), limit=st.integers(1, 300), kind=st.sampled_from(["head", "head-tail"]))
def test_truncate_never_exceeds_the_limit(text: str, limit: int, kind: str) -> None:
    out = truncate(text, limit, kind)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    elif kind == "head" or limit < len(TRUNCATION_MARKER) + 3:
        assert text.startswith(out)
    else:
        head, tail = out.split(TRUNCATION_MARKER, 1)
        assert text.startswith(head) and text.endswith(tail)


# ---- chunk_text ---------------------------------------------------------------------------------------

_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzé,;:'\"", min_size=1, max_size=12)
_SEPARATORS = st.sampled_from([" ", "  ", "\n", "\n\n", "\n\n\n", ". ", "! ", "? ", ".\n", "\t", " \r\n ", "\f"])
_TEXTS = st.lists(st.tuples(_WORDS, _SEPARATORS), max_size=150).map(lambda ws: "".join(w + s for w, s in ws))
_ANY_TEXTS = st.one_of(_TEXTS, st.text(max_size=600))


@settings(max_examples=300)
@given(text=_ANY_TEXTS, size=st.integers(1, 200))
def test_chunks_fit_are_non_empty_and_lose_only_whitespace(text: str, size: int) -> None:
    chunks = chunk_text(text, size)
    assert all(0 < len(c) <= size and c == c.strip() for c in chunks)
    assert "".join("".join(c.split()) for c in chunks) == "".join(text.split())


@settings(max_examples=300)
@given(text=_TEXTS, size=st.integers(5, 200))
def test_chunks_keep_every_word_whole_when_words_fit(text: str, size: int) -> None:
    assume(all(len(w) <= size for w in text.split()))
    assert [w for c in chunk_text(text, size) for w in c.split()] == text.split()


@pytest.mark.parametrize(
    ("text", "size", "chunks"),
    [
        ("a" * 10, 10, ["a" * 10]),
        ("a" * 11, 10, ["a" * 10, "a"]),
        ("abcd efghi", 9, ["abcd", "efghi"]),
        ("abcd efgh", 9, ["abcd efgh"]),
        ("abc", 1, ["a", "b", "c"]),
        ("   \n\n\t ", 5, []),
        ("a   b\t\tc\n\n\n\nd  \n e", 100, ["a b c\n\nd\ne"]),
    ],
    ids=["exact-size", "size-plus-one", "cut-at-space", "fits-with-space", "size-one", "blank", "normalised"],
)
def test_chunk_size_boundaries(text: str, size: int, chunks: list[str]) -> None:
    assert chunk_text(text, size) == chunks


def test_small_paragraphs_are_packed_and_long_ones_start_a_chunk() -> None:
    paragraphs = [f"Paragraph {i} is short." for i in range(10)]
    assert chunk_text("\n\n".join(paragraphs), 1000) == ["\n\n".join(paragraphs)]
    assert chunk_text("\n\n".join(paragraphs), 50) == [
        "\n\n".join(paragraphs[i : i + 2]) for i in range(0, 10, 2)
    ]
    long = " ".join(f"Sentence {i} of the long one." for i in range(10))
    chunks = chunk_text(f"Intro.\n\n{long}", 100)
    assert chunks[0] == "Intro." and all(c.endswith("long one.") for c in chunks[1:])


def test_paragraph_too_long_is_cut_at_sentences_then_lines() -> None:
    sentences = ["The first sentence is here.", "Is this the second?", "Yes it is!"]
    assert chunk_text(" ".join(sentences), 28) == sentences
    rows = "\n".join(f"cell {i} | value {i} | note" for i in range(6))
    assert chunk_text(rows, 50) == ["\n".join(rows.split("\n")[i : i + 2]) for i in range(0, 6, 2)]


@pytest.mark.parametrize("size", [0, -5, 1.5, True], ids=["zero", "negative", "float", "bool"])
def test_a_bad_chunk_size_is_refused_at_load(size: int) -> None:
    error = settings_error({"chunk_size": size})
    assert error.field == "system.chunk_size" and f"got {size!r}" in str(error)


# ---- ids, dedup, order, errors ------------------------------------------------------------------------


def test_chunk_id_is_pinned_and_sensitive_to_every_part() -> None:
    # Pinned: changing the scheme changes every id and breaks resuming old runs.
    assert chunk_id("docs/a.txt", 0, "Hello.") == "e189228ee79f1651"
    ids = {chunk_id("a", 0, "t"), chunk_id("b", 0, "t"), chunk_id("a", 1, "t"), chunk_id("a", 0, "u")}
    assert len(ids) == 4 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert chunk_id("ab", 1, "c") != chunk_id("a", 1, "bc")


def test_duplicates_are_kept_once_from_the_first_key_in_sorted_order() -> None:
    files = [("b.txt", b"Same words.\n\nOnly in b."), ("a.txt", b"Same words."), ("c.txt", b"Same words.")]
    result = ingest(files, chunk_size=12, truncation_type="head")
    assert [(c.source, c.position, c.text) for c in result.chunks] == [
        ("a.txt", 0, "Same words."),
        ("b.txt", 1, "Only in b."),
    ]
    assert result.duplicates_dropped == 2
    assert result.report()["per_source"] == {"a.txt": 1, "b.txt": 1, "c.txt": 0}


def test_duplicate_paragraphs_within_one_file_are_dropped() -> None:
    result = ingest_one("a.txt", b"Repeated.\n\nOther.\n\nRepeated.", chunk_size=10)
    assert [c.text for c in result.chunks] == ["Repeated.", "Other."] and result.duplicates_dropped == 1


def test_ids_of_a_file_do_not_depend_on_other_files() -> None:
    b_file = ("b.txt", b"Shared.\n\nOwn text.")
    alone = ingest([b_file], chunk_size=10, truncation_type="head")
    with_dup = ingest([("a.txt", b"Shared."), b_file], chunk_size=10, truncation_type="head")
    own = [c for c in with_dup.chunks if c.source == "b.txt"]
    assert own == [c for c in alone.chunks if c.text == "Own text."]


def test_output_is_deterministic_whatever_the_input_order(tmp_path: Path) -> None:
    write_all_inputs(tmp_path)
    files = folder_files(tmp_path)
    first = ingest(files, chunk_size=120, truncation_type="head-tail")
    again = ingest(list(reversed(files)), chunk_size=120, truncation_type="head-tail")
    assert first == again
    assert [c.source for c in first.chunks] == sorted(c.source for c in first.chunks)


def test_no_usable_chunks_carries_the_result_for_the_report() -> None:
    with pytest.raises(NoUsableChunks, match=r"ingest_report\.json") as caught:
        ingest([("a.csv", b"x"), ("b.txt", b""), ("c.jsonl", b"{}\n")], chunk_size=100, truncation_type="head")
    assert isinstance(caught.value, PermanentError) and isinstance(caught.value.result, IngestResult)
    report = caught.value.result.report()
    assert (report["files_read"], report["files_skipped"], report["chunks_made"]) == (1, 2, 0)
    assert [(s["source"], s["line"]) for s in report["skipped"]] == [("a.csv", None), ("b.txt", None), ("c.jsonl", 1)]
    with pytest.raises(NoUsableChunks):
        ingest([], chunk_size=100, truncation_type="head")


def test_ingest_settings_are_checked_before_anything_is_read() -> None:
    assert settings_error(training={"truncation_type": "middle"}).field == "training.truncation_type"
    assert settings_error({"chunk_size": 0}).field == "system.chunk_size"


def test_every_generated_input_kind_gives_its_expected_outcome(tmp_path: Path) -> None:
    expected = write_all_inputs(tmp_path)
    assert {Path(k).suffix.lower() for k in expected} >= set(SUPPORTED_EXTENSIONS)
    files = folder_files(tmp_path)
    report = ingest(files, chunk_size=300, truncation_type="head-tail").report()
    assert mismatches(report, expected) == []
    assert json.loads(json.dumps(report)) == report
    assert report["files_read"] + report["files_skipped"] == len(files)
    assert sum(report["per_source"].values()) == report["chunks_made"]


def test_the_bundled_mixed_example_ingests() -> None:
    files = folder_files(EXAMPLE)
    assert sum(len(data) for _, data in files) < 200_000
    result = ingest(files, chunk_size=2000, truncation_type="head-tail")
    read_types = {Path(k).suffix for k, n in result.per_source.items() if n > 0}
    assert read_types == set(SUPPORTED_EXTENSIONS)
    skipped = {s.source for s in result.skipped if s.line is None}
    bad = {"exports/customers.csv", "logs/crash-dump.txt", "reports/draft-damaged.docx", "scans/signed-contract.pdf"}
    assert skipped == bad
    assert [(s.source, s.line) for s in result.skipped if s.line] == [("tickets/chat-export.jsonl", 13)]
    assert len(result.chunks) >= 20
