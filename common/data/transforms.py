"""MONAI dictionary transforms for ROI classification: load -> window to [-1, 1] -> (classic augmentation) -> tensor.

Only MONAI transforms are composed here; nothing is re-implemented, so a bundle config could spell the same chain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.transforms import Compose, EnsureTyped, LoadImaged, RandAffined, RandFlipd, ScaleIntensityRanged

__all__ = ["classic_augmentation", "roi_classification_transforms"]


def classic_augmentation(
    keys: Sequence[str] = ("image",),
    rotate_degrees: float = 180.0,
    translate_fraction: float = 0.1,
    scale_range: Sequence[float] = (0.9, 1.1),
    flip: bool = True,
    prob: float = 1.0,
    image_size: int | Sequence[int] | None = None,
    padding_mode: str = "border",
    spatial_dims: int = 2,
) -> Compose:
    """Frid-Adar et al.'s classic augmentation: rotation, translation, scale (one affine resampling) and flips.

    Args:
        keys: dictionary keys to transform (images; a label map in ``keys`` would need ``mode="nearest"``).
        rotate_degrees: rotation angle drawn uniformly in +-rotate_degrees (in-plane; about every axis in 3-D).
        translate_fraction: shift drawn uniformly in +-fraction of the image side, per axis.
        scale_range: zoom factor range, drawn independently per axis (MONAI ``RandAffine``; so it also adds a mild
            aspect change). (1, 1) disables scaling.
        flip: random flips along each spatial axis, each with probability 0.5.
        prob: probability of applying the affine part.
        image_size: spatial size in pixels, needed to turn ``translate_fraction`` into pixels (MONAI translates in
            pixels); required when ``translate_fraction > 0``.
        padding_mode: how the affine fills pixels that come from outside the image: ``"border"`` (repeat the edge,
            so no artificial black corners on CT), ``"reflection"`` or ``"zeros"``.
        spatial_dims: 2 or 3.
    """
    if translate_fraction and image_size is None:
        raise ValueError("classic_augmentation: image_size is needed to turn translate_fraction into pixels")
    keys = list(keys)
    sizes = [0] * spatial_dims if image_size is None else _as_sizes(image_size, spatial_dims)
    angle = math.radians(rotate_degrees)
    rotate_range = (angle,) if spatial_dims == 2 else (angle, angle, angle)
    # MONAI samples scale as 1 + U(lo, hi): shift the factor range to offsets around 0.
    scale = [(float(scale_range[0]) - 1.0, float(scale_range[1]) - 1.0)] * spatial_dims
    transforms: list[Any] = [
        RandAffined(
            keys=keys,
            prob=prob,
            rotate_range=rotate_range,
            translate_range=[translate_fraction * s for s in sizes],
            scale_range=scale,
            padding_mode=padding_mode,
            mode="bilinear",
        )
    ]
    if flip:
        transforms += [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    return Compose(transforms)


def _as_sizes(image_size: int | Sequence[int], spatial_dims: int) -> list[int]:
    if isinstance(image_size, int):
        return [image_size] * spatial_dims
    sizes = [int(s) for s in image_size]
    if len(sizes) != spatial_dims:
        raise ValueError(f"image_size {image_size} does not have {spatial_dims} values")
    return sizes


def roi_classification_transforms(
    image_size: int | Sequence[int],
    a_min: float,
    a_max: float,
    augment: bool = False,
    keys: Sequence[str] = ("image",),
    **aug_kwargs: Any,
) -> Compose:
    """``LoadImaged`` (channel first) -> window [a_min, a_max] to [-1, 1] (clipped) -> optional classic augmentation
    -> float32 tensors.

    ``a_min``/``a_max`` are in the files' units: HU for CT NIfTI (e.g. -100, 250 for liver), 0, 255 for 8-bit PNG.
    ``image_size`` only parameterises the augmentation (translation in pixels); images are expected at that size
    already (the data layer writes ROIs at their final size). ``aug_kwargs`` go to :func:`classic_augmentation`.
    """
    keys = list(keys)
    transforms: list[Any] = [
        LoadImaged(keys=keys, ensure_channel_first=True, image_only=True),
        ScaleIntensityRanged(keys=keys, a_min=a_min, a_max=a_max, b_min=-1.0, b_max=1.0, clip=True),
    ]
    if augment:
        spatial_dims = aug_kwargs.pop("spatial_dims", 2 if isinstance(image_size, int) else len(image_size))
        transforms.append(
            classic_augmentation(keys=keys, image_size=image_size, spatial_dims=spatial_dims, **aug_kwargs)
        )
    transforms.append(EnsureTyped(keys=keys, dtype=torch.float32))
    return Compose(transforms)
