"""Tests for core.report.html: report.html, written beside report.md from the hand-built run of test_report.py.

The fast tests parse the page with the standard library's ``html.parser``: tags balanced, nothing fetched from
elsewhere, every value escaped, the same figures as report.md. The slow test loads it in a real headless
Chromium (Debian's ``chromium`` package; skipped, saying so, where it is not installed) and reads the page back
as the browser built it, with a screenshot under the test's tmp folder.
"""

from __future__ import annotations

import base64
import doctest
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core.report import formats, html
from core.report.render import CONFUSION_KEY, LEARNING_CURVE_KEY, REPORT_HTML_KEY, REPORT_KEY
from core.run import layout
from core.run.exports import review_csv
from core.run.state import State, Step
from core.storage.backends import LocalStorage
from tests.test_report import PNG_MAGIC, assert_png, run_report

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HOSTILE = "WIN <script>alert('owned')</script> & <b>now</b>"
CHROMIUM = shutil.which("chromium")


class Page(HTMLParser):
    """What a test reads off a page: unbalanced tags, every attribute, the scripts, and each table's cells."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.scripts: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        if tag == "script":
            self.scripts.append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script":
            self.scripts[-1] += data
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)

    def rows(self, cls: str) -> list[list[str]]:
        return self.tables[cls][1:]  # without the header row


def review_rows(n: int) -> list[dict]:
    """``n`` disagreements as core.run.exports writes them, most confident first; the first has hostile text."""
    return [{"id": f"c-{i:03d}", "llm_label": "ham", "classifier_label": "spam",
             "classifier_confidence": round(0.99 - i / 100, 4), "llm_label_probability": 0.6,
             "llm_reason": "a greeting & a question" if i else "looks <i>personal</i>", "source": "sms.jsonl",
             "text": HOSTILE if i == 0 else f"message number {i}\nsecond line"} for i in range(n)]


def write_page(tmp_path: Path, review: int | None = 25, plots: bool = True) -> tuple[LocalStorage, str]:
    storage = LocalStorage(tmp_path)
    if review is not None:
        storage.write_text(layout.REVIEW_CSV, review_csv(review_rows(review)))
    storage, keys = run_report(tmp_path, plots=plots)
    assert keys[-2:] == [REPORT_KEY, REPORT_HTML_KEY]
    return storage, storage.read_text(REPORT_HTML_KEY)


def test_doctests() -> None:
    for module in (html, formats):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_page_is_well_formed(tmp_path: Path) -> None:
    text = write_page(tmp_path)[1]
    page = Page(text)
    assert page.problems == []
    assert page.stack == []
    assert text.startswith('<!DOCTYPE html>\n<html lang="en">') and text.rstrip().endswith("</html>")
    assert {"per-class", "confusion", "spend", "iterations", "review"} <= set(page.tables)


def test_page_is_self_contained(tmp_path: Path) -> None:
    storage, text = write_page(tmp_path)
    page = Page(text)
    links = [(tag, k, v) for tag, k, v in page.attrs if k in ("src", "href", "srcset", "action")]
    assert [tag for tag, _, _ in links] == ["img", "img"], "no link, script or style is loaded from elsewhere"
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    embedded = [base64.b64decode(v.removeprefix("data:image/png;base64,")) for _, _, v in links]
    assert all(v.startswith("data:image/png;base64,") for _, _, v in links)
    assert embedded == [storage.read_bytes(LEARNING_CURVE_KEY), storage.read_bytes(CONFUSION_KEY)]
    assert all(png[:8] == PNG_MAGIC for png in embedded)


def test_text_from_the_run_is_escaped(tmp_path: Path) -> None:
    text = write_page(tmp_path)[1]
    page = Page(text)
    assert page.scripts == [html.IMAGES_SCRIPT], "the page's own script and no other"
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in text
    assert "<i>personal</i>" not in text
    first = page.rows("review")[0]
    assert first[-1] == HOSTILE and first[-2] == "looks <i>personal</i>"  # shown as written, not as markup


def test_same_figures_as_report_md(tmp_path: Path) -> None:
    storage, text = write_page(tmp_path)
    page, md = Page(text), storage.read_text(REPORT_KEY)
    for figure in ("85.5% (80.0%–89.8%)", "Total: 7 calls (1 served from the cache at no cost), $0.0134.",
                   "83.0% (77.1%–87.5%)"):
        assert figure in md and figure in "".join(page.text), figure
    assert page.rows("per-class") == [["ham", "0.900", "0.800", "0.847", "100"],
                                      ["spam", "0.810", "0.900", "0.853", "100"]]
    assert "| ham | 0.900 | 0.800 | 0.847 | 100 |" in md
    assert page.rows("confusion") == [["ham", "83", "17"], ["spam", "12", "88"]]
    spend = page.tables["spend"]
    assert ["openai/oracle-large", "5", "1", "0", "800", "360", "$0.0130"] in spend
    assert ["test_labels", "4", "1", "0", "300", "60", "$0.0030"] in spend
    assert page.rows("iterations")[1] == ["2 (best)", "393", "85.5% (80.0%–89.8%)", "0.854", "83.0% (77.1%–87.5%)"]


def test_review_list_shows_the_most_confident_twenty(tmp_path: Path) -> None:
    page = Page(write_page(tmp_path, review=25)[1])
    rows = page.rows("review")
    assert [r[0] for r in rows] == [f"c-{i:03d}" for i in range(20)]
    assert rows[1] == ["c-001", "ham", "spam", "98.0%", "a greeting & a question", "message number 1\nsecond line"]
    assert "The 20 of 25 disagreements, the classifier's most confident first" in "".join(page.text)
    assert "All 3 disagreements" in write_page(tmp_path / "few", review=3)[1]


def test_long_review_text_is_clipped(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_text(layout.REVIEW_CSV, review_csv([dict(review_rows(1)[0], text="x" * 1000)]))
    cell = Page(run_report(tmp_path)[0].read_text(REPORT_HTML_KEY)).rows("review")[0][-1]
    assert cell == "x" * (html.REVIEW_TEXT_CHARS - 1) + "…"


def test_without_review_file_or_plots(tmp_path: Path) -> None:
    text = write_page(tmp_path, review=None, plots=False)[1]
    page = Page(text)
    assert page.problems == [] and "review" not in page.tables
    assert "<img" not in text and "No plot: plots are turned off" in text
    assert "No disagreements on the test set" in text


def test_before_any_evaluation(tmp_path: Path) -> None:
    state = State(config_fingerprint="fp", step=Step.LABEL_TEST)
    storage, _ = run_report(tmp_path, state, plots=True, ledger_records=[], label_summary={})
    text = storage.read_text(REPORT_HTML_KEY)
    assert Page(text).problems == []
    for said in ("in progress (step label_test)", "No classifier has been evaluated yet.", "No LLM calls recorded.",
                 "No training iteration has run yet."):
        assert said in text


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH: `apt-get install chromium` (Debian's package; "
                    ".ci/run installs it) to load report.html in a real browser")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    out, shot = tmp_path / "out", tmp_path / "report.png"
    write_page(out, review=25)
    proc = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", f"--screenshot={shot}", "--window-size=1280,2000", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = proc.stdout
    assert 'data-images-loaded="2/2"' in dom, "both embedded plots decoded (the page's load script says how many)"
    assert dom.count('src="data:image/png;base64,') == 2
    page = Page(dom)
    text = "".join(page.text)
    assert "85.5% (80.0%–89.8%)" in text  # the best classifier's accuracy
    assert page.rows("per-class")[0] == ["ham", "0.900", "0.800", "0.847", "100"]
    assert "Total: 7 calls (1 served from the cache at no cost), $0.0134." in text
    assert page.rows("review")[0][:4] == ["c-000", "ham", "spam", "99.0%"]
    assert page.rows("review")[0][-1] == HOSTILE and page.scripts == [html.IMAGES_SCRIPT]  # text, not a script
    assert assert_png(shot.read_bytes(), min_bytes=50_000) == (2000, 1280)
