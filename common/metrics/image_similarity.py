"""Paired image similarity of synthetic vs real MRI for the same label map: MAE, PSNR and SSIM per sequence.

All three are computed inside the brain only: outside it both images are -1 by construction (skull-stripped),
which would inflate every score. SSIM uses MONAI's ``compute_ssim_and_cs`` (Gaussian window 7, sigma 1.5) per
axial slice and averages its map over brain pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

__all__ = ["image_similarity"]

DATA_RANGE = 2.0  # images are in [-1, 1]


def _ssim_in_mask(fake: np.ndarray, real: np.ndarray, mask: np.ndarray, kernel: int = 7, sigma: float = 1.5) -> float:
    """Mean SSIM over mask pixels of (H, W, D) volumes, slice by slice."""
    f = torch.as_tensor(np.moveaxis(fake, -1, 0)[:, None], dtype=torch.float32)  # (D, 1, H, W)
    r = torch.as_tensor(np.moveaxis(real, -1, 0)[:, None], dtype=torch.float32)
    ssim_map, _ = compute_ssim_and_cs(f, r, 2, [kernel] * 2, [sigma] * 2, data_range=DATA_RANGE)
    h = kernel // 2
    m = np.moveaxis(mask, -1, 0)[:, h : h + ssim_map.shape[2], h : h + ssim_map.shape[3]]
    values = ssim_map[:, 0].numpy()[m]
    return float(values.mean()) if values.size else float("nan")


def image_similarity(
    fake: np.ndarray, real: np.ndarray, brain: np.ndarray, sequences: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{sequence: {"mae", "psnr", "ssim"}}`` for (C, H, W, D) volumes in [-1, 1] and a brain mask (1, H, W, D)."""
    fake, real = np.asarray(fake, np.float32), np.asarray(real, np.float32)
    mask = np.asarray(brain)[0] > 0
    if fake.shape != real.shape or fake.shape[0] != len(sequences):
        raise ValueError(f"fake {fake.shape} and real {real.shape} must match, with one channel per {list(sequences)}")
    out = {}
    for c, seq in enumerate(sequences):
        diff = fake[c][mask] - real[c][mask]
        mse = float(np.mean(diff**2)) if diff.size else float("nan")
        out[seq] = {
            "mae": float(np.mean(np.abs(diff))) if diff.size else float("nan"),
            "psnr": float(10 * np.log10(DATA_RANGE**2 / max(mse, 1e-12))),
            "ssim": _ssim_in_mask(fake[c], real[c], mask),
        }
    return out
