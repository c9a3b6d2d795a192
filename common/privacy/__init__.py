"""Privacy: the memorisation audit of synthetic sets (nearest-neighbour distances, copies, authenticity, MIA), exported
here; DP-SGD on the discriminator and the PRV accountant (``common.privacy.dp``); the one-run canary audit that puts an
empirical epsilon lower bound beside the accountant's (``common.privacy.canary_audit``). Import those two modules by
name (they need Opacus, the ``[dp]`` extra).
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
