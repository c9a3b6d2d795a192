"""Metrics: classification / segmentation / generative quality, and summaries with confidence intervals."""

from common.metrics.stats import bootstrap_ci, summarize

__all__ = ["bootstrap_ci", "summarize"]
