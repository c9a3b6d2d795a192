"""Brain tumour segmentation scores as BraTS reports them: Dice of whole tumour, tumour core, enhancing tumour.

The Dice itself is MONAI's (``monai.metrics.compute_dice``, the function behind ``DiceMetric``) with
``ignore_empty=False``: BraTS's convention that a region absent from both the label and the prediction scores 1
(nothing to find, nothing found) and one absent from the label but predicted scores 0. Masks are binarised with
``> 0`` and the label side is float64, so the scores are the exact fractions ``2 |P & T| / (|P| + |T|)`` of the
hand-written numpy Dice this replaced (same values on 300 random cases, tests/metrics). Cost, measured on one CPU
thread: 1.8 s per 240 x 240 x 155 BraTS case against numpy's 0.5 s, small beside predicting its 155 slices.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import DiceMetric, compute_dice

from common.data.brain_transforms import brats_regions

__all__ = ["REGIONS", "brats_dice", "brats_dice_metric", "channel_dice", "dice"]

#: channel order of ``brats_regions`` and of the segmenters' outputs
REGIONS = ("tc", "wt", "et")


def brats_dice_metric(reduction: str = "mean") -> DiceMetric:
    """MONAI's ``DiceMetric`` with this module's convention, for an engine's binarised ``pred`` and ``label`` region
    channels (B, 3, *spatial): every channel scored (no background channel), an empty region scored 1 or 0. Give it
    a float64 label for the exact fractions of ``brats_dice``."""
    return DiceMetric(include_background=True, reduction=reduction, ignore_empty=False)


def channel_dice(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Dice of each channel of binary masks ``pred`` and ``truth`` (B, C, *spatial) -> (B, C), float64.

    Channels are scored independently (BraTS's regions overlap: ET inside TC inside WT), each with the empty-region
    convention of this module.
    """
    pred, truth = torch.as_tensor(np.asarray(pred) > 0), torch.as_tensor(np.asarray(truth) > 0, dtype=torch.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"predicted regions {tuple(pred.shape)} and label regions {tuple(truth.shape)} differ")
    if pred.shape[1] == 1:  # MONAI reads one channel as class indices: score it as foreground of (background, it)
        pred, truth = torch.cat([~pred, pred], 1), torch.cat([1 - truth, truth], 1)
        return compute_dice(pred, truth, include_background=False, ignore_empty=False)
    return compute_dice(pred, truth, include_background=True, ignore_empty=False)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty (BraTS convention: nothing to find, nothing found)."""
    return float(channel_dice(np.asarray(pred)[None, None], np.asarray(truth)[None, None])[0, 0])


def brats_dice(pred_regions: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """``{"dice_wt", "dice_tc", "dice_et"}`` of predicted regions (3, *spatial; TC, WT, ET) against a BraTS label
    map (1, *spatial) of one case."""
    truth = np.asarray(brats_regions(np.asarray(label)))
    scores = channel_dice(np.asarray(pred_regions)[None], truth[None])[0]
    return {f"dice_{r}": float(scores[i]) for i, r in enumerate(REGIONS)}
