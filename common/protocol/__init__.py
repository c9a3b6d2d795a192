"""The experiment runner: k patient-separated folds x arms -> report.json / report.md / figures."""

from common.protocol import quality  # the end of every training run (`$import common.protocol` reaches it)
from common.protocol.augmentation import ARMS, ClassificationProtocol
from common.protocol.folds import load_or_make_splits, make_splits, select
from common.protocol.report import compare_arms, render_markdown, summarize_arms, write_report

__all__ = [
    "ARMS",
    "ClassificationProtocol",
    "compare_arms",
    "load_or_make_splits",
    "make_splits",
    "quality",
    "render_markdown",
    "select",
    "summarize_arms",
    "write_report",
]
