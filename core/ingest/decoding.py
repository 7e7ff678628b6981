"""Bytes of a plain-text file to ``str`` without garbling it, and a record of how they were read.

Does, in this order: honour a byte-order mark (UTF-8, UTF-16, UTF-32); read UTF-16 without a mark when its NUL
bytes all fall on one side of the code units (English or Russian text in UTF-16 does that); read UTF-8, strictly;
otherwise ask charset-normalizer, and check its candidates (plus cp1252, or latin-1) for plausibility first;
and last fall back to cp1252, then latin-1, which maps every byte. ``Decoded.describe()`` says which, e.g.
``"cp1251 (detected)"``, for the ingest report.

The plausibility check is there because charset-normalizer has little to go on in a short text: for a few
accented Western words ("Café crème") it may answer cp1250, cp1006 or a CJK code page, whose readings have
letters of two scripts in one word ("Cafй") or words made only of accented letters ("Ïðèâåò", Russian read as
cp1252). The reading with the fewest such characters wins (a DOS, EBCDIC or Mac code page counts one more);
among equally plausible ones, cp1252 wins when charset-normalizer recognised no language (a short text) or fits
it as well to cp1252, and charset-normalizer's order otherwise.

Does not: decide that a file is binary (``core.ingest.readers`` does, on the decoded text), normalise
whitespace, or decode PDFs and DOCX (their libraries do). A text of a few bytes can still be read wrongly: two
bytes of cp1251 are also two valid letters of cp1252 and one ideograph of Big5, and nothing tells them apart;
and Czech or Hungarian in cp1250 often reads as plausible cp1252 ("dìkujeme"), which wins that tie. Either way
the guess is named in the ingest report, with charset-normalizer's own first guess where it was overruled.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from charset_normalizer import from_bytes

How = Literal["utf-8", "bom", "detected", "fallback"]

_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_WESTERN = "cp1252"
_LATIN_1 = "latin-1"
_LETTERS = re.compile(r"[^\W\d_]+")
_HARMLESS_CONTROLS = frozenset("\t\n\r\f\v")
_RARE_SYMBOLS = frozenset("‚ƒ„†‡ˆ‰‹›˜¦¨¯´¸¤¬¶")
_WESTERN_PUNCTUATION = frozenset("–—‘’“”…€«»¡¿°©®™•·\xa0")
_UNLIKELY_CATEGORIES = frozenset({"Cc", "Co", "Cn", "Cs"})  # controls, private use, unassigned, surrogates
# Japanese, Chinese, Korean and Thai are written without spaces, so Latin letters often touch their own.
_SPACELESS = frozenset({"HAN", "HANGUL", "THAI"})
_SCRIPT_ALIASES = {"CJK": "HAN", "HIRAGANA": "HAN", "KATAKANA": "HAN", "KATAKANA-HIRAGANA": "HAN", "IDEOGRAPHIC": "HAN"}
_KNOWN_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "GEORGIAN", "HEBREW", "ARABIC", "THAI",
                            "DEVANAGARI", "HANGUL", "HAN"})
# charset-normalizer's language coherence: below _COHERENT it recognised no language; readings within
# _COHERENCE_TIE of each other fit the language equally well (cp1250 and cp1252 often tie exactly).
_COHERENT = 0.25
_COHERENCE_TIE = 0.05
# DOS, EBCDIC, Mac and other code pages few files use now: a reading in one must be clearly more plausible.
_RARE_CODE_PAGES = frozenset({"cp037", "cp273", "cp424", "cp437", "cp500", "cp720", "cp737", "cp775", "cp850",
                              "cp852", "cp855", "cp856", "cp857", "cp858", "cp860", "cp861", "cp862", "cp863",
                              "cp864", "cp865", "cp866", "cp869", "cp874", "cp875", "cp1006", "cp1026", "cp1125",
                              "cp1140", "hp-roman8", "kz1048", "ptcp154"})
_MAX_CANDIDATES = 8
_SAMPLE_BYTES = 64 * 1024  # plausibility is judged on the start of a file; the winner decodes all of it


@dataclass(frozen=True)
class Decoded:
    """A file's text, the codec that read it (Python's name for it) and how that codec was chosen."""

    text: str
    encoding: str
    how: How
    note: str = ""  # why, where charset-normalizer's first guess was overruled

    @property
    def guessed(self) -> bool:
        """True when nothing in the file said its encoding: a reader should check the text."""
        return self.how in ("detected", "fallback")

    def describe(self) -> str:
        """``"cp1251 (detected)"``, ``"utf-16 (byte-order mark)"``, ``"latin-1 (fallback)"``...

        >>> Decoded("Café", "cp1252", "detected", "charset-normalizer guessed cp1250").describe()
        'cp1252 (detected; charset-normalizer guessed cp1250)'
        """
        how = "byte-order mark" if self.how == "bom" else self.how
        return f"{self.encoding} ({how}{'; ' + self.note if self.note else ''})"


# ---- pure pieces ------------------------------------------------------------------------------------


def utf16_byte_order(data: bytes) -> str | None:
    """``"utf-16-le"`` or ``"utf-16-be"`` when ``data`` looks like UTF-16 without a byte-order mark, else None.

    It does when NUL bytes are frequent (two at least, and one code unit in 16) and almost all on the high side of
    the code units: spaces, digits and Latin letters have a NUL high byte, and other text rarely has a NUL low byte.

    >>> utf16_byte_order("Привет, мир".encode("utf-16-be"))
    'utf-16-be'
    >>> utf16_byte_order(b"plain ASCII") is None
    True
    """
    if len(data) < 2 or len(data) % 2:
        return None
    units = len(data) // 2
    even, odd = data[0::2].count(0), data[1::2].count(0)
    high, low, order = (odd, even, "utf-16-le") if odd >= even else (even, odd, "utf-16-be")
    return order if high >= max(2, units // 16) and low * 8 <= high else None


def _script(char: str) -> str:
    """The writing system a letter belongs to, from its Unicode name; "" for one we do not tell apart."""
    words = unicodedata.name(char, "").split()
    if words and words[0] in ("HALFWIDTH", "FULLWIDTH"):
        words = words[1:]
    script = _SCRIPT_ALIASES.get(words[0], words[0]) if words else ""
    return script if script in _KNOWN_SCRIPTS else ""


def _word_implausibility(word: str) -> int:
    scripts = [s for s in map(_script, word) if s]
    if not scripts:
        return 0
    counts = Counter(scripts)
    main = max(counts, key=lambda s: (counts[s], s in _SPACELESS))  # "Aで" is Japanese text, not Latin
    # Latin letters touch Japanese or Chinese ones (no spaces there), but an ideograph inside a Latin word is a
    # Western byte misread as half of a double-byte character ("Caf擖").
    mixed = sum(1 for s in scripts if s != main and not (main in _SPACELESS and s == "LATIN"))
    accented = sum(1 for c in word if not c.isascii()) if main == "LATIN" else 0
    # Real Latin words have some plain letters ("résumé", "Łódź"); Cyrillic or Greek read as cp1252 has none.
    all_accented = accented if accented == len(word) >= 3 else 0
    # "ŸĽ" after a small letter: Polish "dź" read as cp1252 gives "dŸ"; real words put capitals first.
    odd_capital = sum(1 for a, b in pairwise(word) if a.islower() and b.isupper() and not b.isascii())
    return mixed + all_accented + odd_capital


def _odd_symbol(text: str, i: int) -> bool:
    """Whether the symbol at ``text[i]`` stands where a writer would not put it: a currency sign glued to a letter
    ("£ódŸ", Polish read as cp1252), a fraction glued to anything but a digit or space, or ``¿``/``¡`` before
    anything but a letter ("–¾“ú" and "Ž‘—¿" are Japanese read as cp1252)."""
    c, before, after = text[i], text[i - 1 : i], text[i + 1 : i + 2]
    if c in "¿¡":
        return not after.isalpha()
    if c in "¼½¾":
        return any(n and not (n.isdigit() or n.isspace()) for n in (before, after))
    return unicodedata.category(c) == "Sc" and not c.isascii() and (before.isalpha() or after.isalpha())


def implausibility(text: str) -> int:
    r"""How many characters of ``text`` a person would hardly have written. Compares readings of the same bytes;
    0 is a plausible text.

    Counted: controls (but tab and line breaks), private-use, unassigned and replacement characters; symbols
    prose hardly uses (``‚ƒ„†‡ˆ‰‹›˜¦¨¯´¸¤¬¶``, which Japanese read as cp1252 is full of) or puts elsewhere
    (``_odd_symbol``); letters of a stray script (``_stray_letters``); and, in words, letters of a second script, a capital after a small letter, and words of
    accented Latin letters only.

    >>> implausibility("Café crème, naïve résumé — 5 €"), implausibility("Привет, мир"), implausibility("会議は3Aで")
    (0, 0, 0)
    >>> implausibility("Ïðèâåò, ìèð"), implausibility("Cafй crиme"), implausibility("‚Í‚¢"), implausibility("a\x81")
    (9, 2, 2, 1)
    """
    odd = sum(1 for i, c in enumerate(text)
              if c == "\ufffd" or c in _RARE_SYMBOLS or _odd_symbol(text, i)
              or (unicodedata.category(c) in _UNLIKELY_CATEGORIES and c not in _HARMLESS_CONTROLS))
    return odd + _stray_letters(text) + sum(_word_implausibility(m.group()) for m in _LETTERS.finditer(text))


def _stray_letters(text: str) -> int:
    """Letters of a script other than Latin that has under a tenth of the text's letters: "lacks: پ here" (a
    stray byte read as cp1256). Latin letters are never stray: ASCII reads the same in every candidate.

    >>> _stray_letters("naïve, and a byte cp1252 lacks: پ here"), _stray_letters("Привет, мир")
    (1, 0)
    """
    scripts = Counter(s for s in map(_script, text) if s)
    total = sum(scripts.values())
    return sum(n for s, n in scripts.items() if s != "LATIN" and 10 * n < total)


def _codec_name(encoding: str) -> str:
    """Python's canonical name, but latin-1's common one: "utf_16_le" -> "utf-16-le", "iso8859_1" -> "latin-1"."""
    name = codecs.lookup(encoding).name
    return _LATIN_1 if name == "iso8859-1" else name


def _reads_as_accents(text: str) -> bool:
    """Whether most non-ASCII characters of ``text`` are letters, as the accents of Western words are, leaving
    out Western punctuation (dashes, quotes, €); Japanese read as cp1252 is mostly symbols ("‚Í‚¢" is "はい").

    >>> [_reads_as_accents(t) for t in ("Café crème — 5 €", "5 € – 10 €", "‚Í‚¢", "plain")]
    [True, True, False, False]
    """
    wide = [c for c in text if not c.isascii() and c not in _WESTERN_PUNCTUATION and c.isprintable()]
    if not wide:  # "5 € – 10 €": only Western punctuation
        return not text.isascii()
    return 2 * sum(1 for c in wide if c.isalpha()) > len(wide)


def _strict(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


# ---- decoding ----------------------------------------------------------------------------------------


def _with_mark(data: bytes) -> Decoded | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom) and (text := _strict(data, encoding)) is not None:
            return Decoded(text, _codec_name(encoding).removesuffix("-sig"), "bom")
    return None


def _detected(data: bytes) -> Decoded | None:
    """The most plausible of charset-normalizer's candidates and cp1252; None when charset-normalizer has none."""
    matches = list(from_bytes(data))[:_MAX_CANDIDATES]
    if not matches:
        return None
    encodings = [_codec_name(m.encoding) for m in matches]
    # The Western candidate: cp1252, or latin-1 where a byte cp1252 lacks (0x81...) rules it out.
    west, western = next((e, t) for e in (_WESTERN, _LATIN_1) if (t := _strict(data, e)) is not None)
    if west not in encodings:
        encodings.append(west)
    # Between Latin code pages charset-normalizer's order is close to arbitrary: cp1250 often comes first with
    # the same coherence as cp1252 (Spanish "año" read as "ańo"). On a tie, the commoner code page wins, unless
    # the first candidate fits a recognised language clearly better.
    first = matches[0].coherence
    western_fit = next((m.coherence for m in matches if _codec_name(m.encoding) == west), None)
    prefer_western = _reads_as_accents(western) and (
        first < _COHERENT or (western_fit is not None and western_fit >= first - _COHERENCE_TIE))
    sample = data[:_SAMPLE_BYTES]

    def rank(item: tuple[int, str]) -> tuple[int, int, int]:
        order, encoding = item
        preferred = 0 if prefer_western and encoding == west else 1
        rare = encoding in _RARE_CODE_PAGES or encoding.startswith("mac-")
        return implausibility(sample.decode(encoding, errors="ignore")) + rare, preferred, order

    for _, encoding in sorted(enumerate(encodings), key=rank):
        text = western if encoding == west else _strict(data, encoding)
        if text is None:  # charset-normalizer reads samples of a long file; another part may not decode
            continue
        if text == western:
            encoding = west  # German read as cp1250 is the same text: name the common code page
        note = f"charset-normalizer guessed {encodings[0]}" if encoding != encodings[0] else ""
        return Decoded(text, encoding, "detected", note)
    return None


def decode(data: bytes) -> Decoded:
    """The text of a plain-text file, whatever its encoding; never raises (latin-1 reads any bytes).

    >>> d = decode("Привет, как дела? Всё хорошо, спасибо.".encode("cp1251"))
    >>> d.text, d.describe()
    ('Привет, как дела? Всё хорошо, спасибо.', 'cp1251 (detected)')
    >>> decode("Café crème, naïve résumé — 5 €".encode("cp1252")).describe()
    'cp1252 (detected; charset-normalizer guessed cp1250)'
    """
    marked = _with_mark(data)
    if marked is not None:
        return marked
    order = utf16_byte_order(data)
    if order is not None and (text := _strict(data, order)) is not None:
        return Decoded(text, order, "detected")
    text = _strict(data, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8", "utf-8")
    detected = _detected(data)
    if detected is not None:
        return detected
    text = _strict(data, _WESTERN)
    if text is not None:
        return Decoded(text, _WESTERN, "fallback")
    return Decoded(data.decode(_LATIN_1), _LATIN_1, "fallback")
