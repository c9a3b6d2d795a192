"""The experiment runner: k patient-separated folds x arms -> report.json / report.md / figures."""

from common.protocol.classification import ARMS, ClassificationProtocol
from common.protocol.folds import load_or_make_splits, make_splits, select
from common.protocol.report import compare_arms, render_markdown, summarize_arms, write_report

__all__ = [
    "ARMS",
    "ClassificationProtocol",
    "compare_arms",
    "load_or_make_splits",
    "make_splits",
    "render_markdown",
    "select",
    "summarize_arms",
    "write_report",
]
