"""Radiograph loading for the spine bundle: any 2-D image (PNG, JPEG, DICOM via ITK) -> one gray channel, padded to a
square, resized to ``image_size``, window [a_min, a_max] -> [-1, 1], plain float tensor.

Real radiographs come in every shape (the Roboflow spine set is 416 px high and 110-416 px wide, RGB with equal
channels; PneumoniaMNIST is 28 x 28); the GAN needs one square size. Padding (with the image's minimum, i.e. air)
before resizing keeps the anatomy's aspect ratio. 16-bit PNGs are read on the 8-bit scale (divided by 257), so the
default window 0..255 fits both. A colour image (R, G, B differ) or one smaller than ``MIN_SIDE`` px on a side is a
``DataError`` naming it (:func:`common.data.io.check_image`); ``load_classification_dataset(..., channels="gray")``
refuses it when the data set is loaded, before any training.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.transforms import Compose, EnsureTyped, MapTransform, ScaleIntensityRanged

from common.data.io import MIN_SIDE, image_loader
from common.data.labelled_images import unlabelled_images
from common.data.transforms import CheckImaged
from common.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["SquareGray", "radiograph_transforms", "unlabelled_image_csv"]


class SquareGray(MapTransform):
    """(C, X, Y) -> (1, S, S): channel mean (RGB with equal channels -> gray), pad to a square with the minimum,
    area/bilinear resize (antialiased) to ``size``."""

    def __init__(self, keys: Sequence[Hashable], size: int) -> None:
        super().__init__(keys)
        self.size = int(size)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key]).float()
            if x.dim() == 4 and x.shape[-1] == 1:  # a DICOM slice read as (C, X, Y, 1)
                x = x[..., 0]
            if x.dim() != 3:
                raise ValueError(f"expected a 2-D image (C, X, Y), got shape {tuple(x.shape)}")
            x = x.mean(0, keepdim=True)
            h, w = x.shape[1:]
            side = max(h, w)
            if h != w:
                ph, pw = side - h, side - w
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=float(x.min()))
            if side != self.size:
                x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", antialias=side > self.size,
                                  align_corners=False)[0]  # fmt: skip
            d[key] = x
        return d


def radiograph_transforms(image_size: int, a_min: float = 0.0, a_max: float = 255.0, keys=("image",)) -> Compose:
    """Load -> grey, at least ``MIN_SIDE`` px (``CheckImaged``) -> ``SquareGray(image_size)`` -> window [a_min, a_max]
    to [-1, 1] (clipped) -> float32 tensor."""
    keys = list(keys)
    return Compose(
        [
            image_loader(keys),
            CheckImaged(keys, channels="gray", min_side=MIN_SIDE),
            EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
            SquareGray(keys=keys, size=image_size),
            ScaleIntensityRanged(keys=keys, a_min=a_min, a_max=a_max, b_min=-1.0, b_max=1.0, clip=True),
            EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
        ]
    )


def _source_id(name: str) -> str:
    """``25_jpg.rf.<hash>.jpg`` -> ``25_jpg``: a Roboflow export renames each source image with ``.rf.<hash>``, so the
    part before it names the source (the patient id for splits); other names -> their stem."""
    stem = os.path.splitext(name)[0]
    return stem.split(".rf.")[0] if ".rf." in stem else stem


def unlabelled_image_csv(images_dir: str | os.PathLike, cache_dir: str | os.PathLike, class_name: str = "image") -> str:
    """A one-class ``labels.csv`` (``path,label,patient``) in ``cache_dir`` for the images in ``images_dir``: those
    directly in it, else those of every ``<split>/images/`` sub-folder (a Roboflow / YOLO export as published).

    For unlabelled sets such as ``shared/data/spine_xray`` (whose ``valid/labels/`` holds YOLO vertebra
    boxes, not classes): every image gets ``label = class_name``; the result is read by
    ``common.data.load_classification_dataset`` like any labelled CSV (unconditional / one-class synthesis). Nothing is
    copied; the CSV names the images by absolute path and is rewritten on every call.

    Returns:
        the path of the CSV.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise DataError(f"unlabelled images: folder '{root}' does not exist")
    files, folders = unlabelled_images(root)  # directly in it, or a Roboflow / YOLO export's <split>/images/
    if files and folders != [root]:
        logger.info(
            f"unlabelled images: {len(files)} images from {', '.join(str(d.relative_to(root)) for d in folders)}"
        )
    if not files:
        raise DataError(
            f"unlabelled images: folder '{root}' holds no image files, directly or in <split>/images/ sub-folders "
            "(the Roboflow / YOLO layout)"
        )
    out = Path(cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "labels.csv"
    rows = [(str(f.resolve()), class_name, _source_id(f.name)) for f in files]
    tmp = out / f".labels.csv.tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "label", "patient"))
        writer.writerows(rows)
    os.replace(tmp, target)
    return str(target)
