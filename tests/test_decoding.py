"""core.ingest.decoding through ``ingest``: each encoding a .txt may come in reads back as the text written, the
ingest report names every encoding that was guessed or taken from a byte-order mark, and a binary file is still
skipped with a reason.

Texts are short (a line, where charset-normalizer has least to go on) and paragraph-length; each test asserts the
decoded text equals the original exactly (after the whitespace normalisation every text gets, which these texts
do not need).
"""

from __future__ import annotations

import codecs
import doctest
import logging
import struct
import zlib

import pytest

from core.errors import NoUsableChunks
from core.ingest import decoding
from core.ingest.chunking import IngestResult, ingest

RUSSIAN = {
    "short": "Привет, как дела?",
    "paragraph": "Уважаемые коллеги! Напоминаем, что завтра в десять часов утра состоится общее собрание "
                 "сотрудников. Просим не опаздывать и подготовить отчёты за прошлый квартал.",
}
JAPANESE = {
    "short": "こんにちは、元気ですか？",
    "paragraph": "お世話になっております。来週の会議の件ですが、予定通り月曜日の午後二時から開始いたします。"
                 "資料は事前にお送りしますので、ご確認をお願いいたします。",
}
ENGLISH = {
    "short": "Meeting moved to 3pm.",
    "paragraph": "Hello team, the quarterly review has moved to Thursday at 3pm in room 4B. Please bring the "
                 "updated budget figures and your notes from the customer calls.",
}
WESTERN = {  # the short ones are where charset-normalizer answers cp1250, cp1006 or a CJK code page
    "short": "Café crème, naïve résumé — 5 €",
    "two-words": "Café crème",
    "spanish-short": "Señor Muñoz está aquí",
    "paragraph": "Le café de la gare ouvre à sept heures. Nous avons préparé un résumé des décisions prises lors "
                 "de la réunion : la crème brûlée reste au menu, le prix passe à 5 € et l’équipe étudiera une "
                 "carte végétarienne pour l’été.",
    "german": "Sehr geehrte Damen und Herren, wir möchten Sie darüber informieren, dass unser Büro in München ab "
              "Montag wieder geöffnet ist. Mit freundlichen Grüßen, Ihr Team.",
}
LENGTHS = ["short", "paragraph"]


def read_one(data: bytes, key: str = "doc.txt") -> tuple[str, IngestResult]:
    result = ingest([(key, data)], chunk_size=10_000, truncation_type="head")
    [chunk] = result.chunks
    return chunk.text, result


@pytest.mark.parametrize("length", LENGTHS)
def test_cp1251_russian_is_detected_not_read_as_cp1252(length: str) -> None:
    text, result = read_one(RUSSIAN[length].encode("cp1251"))
    assert text == RUSSIAN[length]  # not "Ïðèâåò, êàê äåëà?"
    assert result.report()["decoded_as"] == {"doc.txt": "cp1251 (detected)"}


@pytest.mark.parametrize("length", LENGTHS)
def test_shift_jis_japanese_is_detected_not_skipped_as_binary(length: str) -> None:
    text, result = read_one(JAPANESE[length].encode("shift_jis"))
    assert text == JAPANESE[length]
    assert result.skipped == []
    assert result.decoded_as == {"doc.txt": "cp932 (detected)"}  # cp932: Windows' Shift-JIS, a superset


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("language", ["english", "russian", "japanese"])
@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_read(codec: str, language: str, length: str) -> None:
    original = {"english": ENGLISH, "russian": RUSSIAN, "japanese": JAPANESE}[language][length] + "\n"
    data = original.encode(codec)
    assert not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    text, result = read_one(data)
    assert text == original.strip()
    assert result.decoded_as == {"doc.txt": f"{codec} (detected)"}


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_a_byte_order_mark_is_read(codec: str, length: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(codec, b"")
    data = bom + RUSSIAN[length].encode(codec)  # "utf-16" writes its own (native-order) mark
    text, result = read_one(data)
    assert text == RUSSIAN[length]
    assert result.decoded_as == {"doc.txt": "utf-16 (byte-order mark)"}


@pytest.mark.parametrize("length", LENGTHS)
def test_utf8_with_a_byte_order_mark_loses_the_mark(length: str) -> None:
    text, result = read_one(codecs.BOM_UTF8 + JAPANESE[length].encode())
    assert text == JAPANESE[length]
    assert result.decoded_as == {"doc.txt": "utf-8 (byte-order mark)"}


@pytest.mark.parametrize("name", list(WESTERN))
def test_short_and_long_western_text_in_cp1252_is_not_misdetected(name: str) -> None:
    text, result = read_one(WESTERN[name].encode("cp1252"))
    assert text == WESTERN[name]
    assert result.decoded_as["doc.txt"].startswith("cp1252 (detected")  # may name charset-normalizer's own guess


def test_latin1_text_reads_the_same_as_cp1252() -> None:
    original = "Señor Muñoz está aquí, año 1998"
    text, result = read_one(original.encode("latin-1"))
    assert text == original
    assert result.decoded_as["doc.txt"].startswith("cp1252 (detected")  # latin-1's letters are cp1252's too


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("language", ["english", "russian", "japanese", "western"])
def test_plain_utf8_is_read_and_not_reported(language: str, length: str) -> None:
    original = {"english": ENGLISH, "russian": RUSSIAN, "japanese": JAPANESE, "western": WESTERN}[language][length]
    text, result = read_one(original.encode())
    assert text == original
    assert result.report()["decoded_as"] == {}


def test_a_guessed_encoding_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bootstrapper"):
        ingest([("ru.txt", RUSSIAN["short"].encode("cp1251")), ("bom.txt", codecs.BOM_UTF8 + b"hello"),
                ("plain.txt", b"plain")], chunk_size=500, truncation_type="head")
    logged = {(r.levelname, r.getMessage()) for r in caplog.records}
    assert ("WARNING", "input ru.txt decoded as cp1251 (detected)") in logged
    assert ("INFO", "input bom.txt decoded as utf-8 (byte-order mark)") in logged
    assert not any("plain.txt" in message for _, message in logged)


def _png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    pixels = zlib.compress(b"".join(b"\x00" + bytes(range(i, i + 48)) for i in range(16)))
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data",
    [_png(), zlib.compress(ENGLISH["paragraph"].encode() * 20), bytes(range(256)) * 8],
    ids=["png", "zlib", "all-bytes"],
)
def test_a_real_binary_file_named_txt_is_still_skipped(data: bytes) -> None:
    with pytest.raises(NoUsableChunks) as caught:
        ingest([("image.txt", data)], chunk_size=500, truncation_type="head")
    [skip] = caught.value.result.skipped
    assert skip.source == "image.txt"
    assert skip.reason.startswith("binary content in a text file (NUL or control bytes even when read as ")
    assert caught.value.result.decoded_as == {}


@pytest.mark.parametrize(
    ("data", "order"),
    [("Hi".encode("utf-16-le"), "utf-16-le"), ("Привет, мир".encode("utf-16-be"), "utf-16-be"),
     (b"plain ASCII!", None), (b"hello\x00world, one NUL byte!", None), (b"odd", None)],
    ids=["le", "be", "ascii", "one-nul", "odd-length"],
)
def test_utf16_byte_order_from_the_nul_bytes(data: bytes, order: str | None) -> None:
    assert decoding.utf16_byte_order(data) == order


def test_decoding_worked_examples_run() -> None:
    assert doctest.testmod(decoding).failed == 0
