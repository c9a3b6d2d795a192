"""MONAI dictionary transforms for ROI classification: load -> window to [-1, 1] -> plain float tensor.

Classic augmentation is not a per-item transform here: it runs on whole batches on the training device
(``common.data.augment.ClassicAugmentation``), because per-item ``RandAffined`` costs 15-25 ms per 64x64 image on CPU
with torch 2.13 (measured), more than the networks' training step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import Compose, EnsureTyped, LoadImaged, ScaleIntensityRanged

__all__ = ["roi_classification_transforms"]


def roi_classification_transforms(a_min: float, a_max: float, keys: Sequence[str] = ("image",)) -> Compose:
    """``LoadImaged`` (channel first) -> window [a_min, a_max] to [-1, 1] (clipped) -> float32 ``torch.Tensor``.

    ``a_min``/``a_max`` are in the files' units: HU for CT NIfTI (e.g. -160, 240 for liver), 0, 255 for 8-bit PNG.
    The output drops MONAI's metadata (``track_meta=False``): the engines need only the pixels, and every operation
    on a ``MetaTensor`` pays a dispatch cost that slowed whole training steps several times (measured).
    """
    keys = list(keys)
    return Compose(
        [
            LoadImaged(keys=keys, ensure_channel_first=True, image_only=True),
            ScaleIntensityRanged(keys=keys, a_min=a_min, a_max=a_max, b_min=-1.0, b_max=1.0, clip=True),
            EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
        ]
    )
