"""MONAI dictionary transforms for ROI classification: load -> window to [-1, 1] -> plain float tensor; and the class
scores as MONAI Label serves them (:class:`ClassScoresd`).

Classic augmentation is not a per-item transform here: it runs on whole batches on the training device
(``common.data.augment.ClassicAugmentation``), because per-item ``RandAffined`` costs 15-25 ms per 64x64 image on CPU
with torch 2.13 (measured), more than the networks' training step.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureTyped, MapTransform, ScaleIntensityRanged
from monai.utils import PostFix

from common.data.io import check_image, image_loader

__all__ = ["CheckImaged", "ClassScoresd", "roi_classification_transforms"]


class CheckImaged(MapTransform):
    """:func:`common.data.io.check_image` on loaded images: conform them to the data set's channel layout
    (``"gray"`` / ``"rgb"``) and refuse ones smaller than ``min_side``, with a ``DataError`` naming the file.

    Place it right after the loader, while the image still carries its file name (``MetaTensor`` meta
    ``filename_or_obj``), so that one odd file stops the run with its name rather than deep in collate.
    """

    def __init__(
        self,
        keys: KeysCollection,
        channels: str | None = None,
        min_side: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = channels
        self.min_side = min_side

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            name = getattr(image, "meta", {}).get("filename_or_obj", key)
            d[key] = check_image(image, name, channels=self.channels, min_side=self.min_side)
        return d


def roi_classification_transforms(
    a_min: float, a_max: float, keys: Sequence[str] = ("image",), channels: str | None = "gray"
) -> Compose:
    """Load (channel first) -> one grey channel -> window [a_min, a_max] to [-1, 1] (clipped) -> float32 tensor.

    ``a_min``/``a_max`` are in the files' units: HU for CT NIfTI (e.g. -160, 240 for liver), 0, 255 for PNG (8- and
    16-bit alike: see :mod:`common.data.io`). ``channels="gray"``: an RGB file with equal channels is read as grey,
    a colour one is a ``DataError`` naming it (``None`` leaves channels as they are).
    The output drops MONAI's metadata (``track_meta=False``): the engines need only the pixels, and every operation
    on a ``MetaTensor`` pays a dispatch cost that slowed whole training steps several times (measured).
    """
    keys = list(keys)
    return Compose(
        [
            image_loader(keys),
            CheckImaged(keys, channels=channels),
            ScaleIntensityRanged(keys=keys, a_min=a_min, a_max=a_max, b_min=-1.0, b_max=1.0, clip=True),
            EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
        ]
    )


class ClassScoresd(MapTransform):
    """The last postprocessing step of a classifier: ``keys`` (class scores, ``(C,)`` or a batch ``(B, C)``) become a
    ``MetaTensor`` without spatial metadata, and the geometry of ``ref_image`` is dropped from the item.

    Why: MONAI Label's monaibundle app appends its ``Restored`` post-transform to every bundle's postprocessing. It
    maps a prediction back onto the grid of the input (``spatial_shape`` from ``ref_image``'s ``MetaTensor`` meta or
    its ``<ref_image>_meta_dict``, which MONAI Label's loader always writes); a score vector has no grid, and with
    the input's ``spatial_shape`` present it fails ("operands could not be broadcast together with shapes (0,)
    (2,)"): HTTP 500. Without that geometry it leaves the scores as they are. Its ``ClassificationWriter`` then reads
    the scores through ``MetaTensor.array``, hence the type. The pixels of ``ref_image`` stay; only where they came
    from (no longer needed once the network has run) goes.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        ref_image: str = "image",
        meta_key_postfix: str = PostFix.meta(),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_image = ref_image
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scores = d[key]
            scores = scores.as_tensor() if isinstance(scores, MetaTensor) else torch.as_tensor(scores)
            d[key] = MetaTensor(scores)
        d.pop(f"{self.ref_image}_{self.meta_key_postfix}", None)
        if isinstance(d.get(self.ref_image), MetaTensor):
            d[self.ref_image] = d[self.ref_image].as_tensor()
        return d
