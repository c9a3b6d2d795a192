"""Privacy: the memorisation audit of synthetic sets (nearest-neighbour distances, copies, authenticity, MIA).

DP-SGD hooks and the privacy accountant (Opacus) will live here too (issue 7).
"""

from common.privacy.memorization import (
    authenticity,
    copy_fraction,
    membership_inference_auc,
    memorization_metrics,
    nearest_train_distances,
)

__all__ = [
    "authenticity",
    "copy_fraction",
    "membership_inference_auc",
    "memorization_metrics",
    "nearest_train_distances",
]
