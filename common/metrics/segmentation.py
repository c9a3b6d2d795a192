"""Brain tumour segmentation scores as BraTS reports them: Dice of whole tumour, tumour core, enhancing tumour."""

from __future__ import annotations

import numpy as np

from common.data.brain_transforms import brats_regions

__all__ = ["REGIONS", "brats_dice", "dice"]

#: channel order of ``brats_regions`` and of the segmenters' outputs
REGIONS = ("tc", "wt", "et")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty (BraTS convention: nothing to find, nothing found)."""
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * float((pred & truth).sum()) / total


def brats_dice(pred_regions: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """``{"dice_wt", "dice_tc", "dice_et"}`` of predicted regions (3, *spatial; TC, WT, ET) against a BraTS label
    map (1, *spatial) of one case."""
    truth = np.asarray(brats_regions(np.asarray(label)))
    pred = np.asarray(pred_regions)
    if pred.shape != truth.shape:
        raise ValueError(f"predicted regions {pred.shape} and label regions {truth.shape} differ")
    return {f"dice_{r}": dice(pred[i], truth[i]) for i, r in enumerate(REGIONS)}
