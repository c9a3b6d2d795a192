"""Metrics: classification / generative quality (without downloaded weights), and summaries with confidence intervals.

Generative quality is measured on features of networks the project owns (``features``): never call these "FID".
"""

from common.metrics.classification import classification_metrics, confusion_matrix, metrics_from_confusion
from common.metrics.features import ClassifierFeatures, RandomCNNFeatures, RandomConvNet
from common.metrics.quality import frechet_distance, kid, ms_ssim_diversity, prdc
from common.metrics.stats import bootstrap_ci, summarize

__all__ = [
    "ClassifierFeatures",
    "RandomCNNFeatures",
    "RandomConvNet",
    "bootstrap_ci",
    "classification_metrics",
    "confusion_matrix",
    "frechet_distance",
    "kid",
    "metrics_from_confusion",
    "ms_ssim_diversity",
    "prdc",
    "summarize",
]
