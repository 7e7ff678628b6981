"""The run report: report.md, report.html, metrics.json and PNG plots rendered from the state, the ledger and the
summaries, and the meta dataset of the run's own LLM calls.

Pure renderers plus one writer each (``write_report``, ``write_meta_dataset``); nothing here computes a metric,
prices a call or decides what the run does. ``ReportNotes`` carries what only the caller knows (a stand-in LLM,
how to fetch from S3, how to recount shards). Modules: ``render``, ``html`` (report.html), ``formats`` (how both
word a number), ``plots``, ``meta_dataset``.
"""

from core.report.meta_dataset import build_meta_examples, write_meta_dataset
from core.report.plots import confusion_matrix_png, learning_curve_png
from core.report.render import ReportNotes, format_status, write_report

__all__ = [
    "ReportNotes",
    "build_meta_examples",
    "confusion_matrix_png",
    "format_status",
    "learning_curve_png",
    "write_meta_dataset",
    "write_report",
]
