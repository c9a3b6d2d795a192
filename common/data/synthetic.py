"""Write generator output as a synthetic data set: files in native units plus a datalist, like any real set.

The downstream protocol then reads synthetic and real images through the same ``read_datalist`` ->
``roi_classification_transforms`` path, so the window applied at training time is undone here exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.data.datalist import write_datalist
from common.data.io import write_image
from common.errors import DataError

__all__ = ["from_unit_range", "write_synthetic_set"]


def from_unit_range(images: np.ndarray, a_min: float, a_max: float) -> np.ndarray:
    """Inverse of ``ScaleIntensityRanged(a_min, a_max, b_min=-1, b_max=1, clip=True)``: [-1, 1] -> [a_min, a_max].

    Values outside [-1, 1] (a generator without a final tanh) are clipped first, as the forward window clipped.
    """
    images = np.clip(np.asarray(images, dtype=np.float64), -1.0, 1.0)
    return (images + 1.0) / 2.0 * (float(a_max) - float(a_min)) + float(a_min)


def write_synthetic_set(
    images: Any,
    labels: Any,
    out_dir: str | os.PathLike,
    *,
    class_names: Sequence[str],
    a_min: float,
    a_max: float,
    file_format: str = "nii.gz",
    prefix: str = "syn",
    source: str | None = None,
    round_values: bool | None = None,
    spacing: Sequence[float] | None = None,
) -> str:
    """Write ``images`` one file each under ``out_dir/images/`` plus ``out_dir/datalist.json``; return its path.

    Args:
        images: float tensor or array (N, C, H, W[, D]) in [-1, 1], i.e. generator output.
        labels: N class indices, or ``None`` for an unconditional generator (items then have no ``label``).
        out_dir: output folder (created).
        class_names: stored in the datalist, in label order.
        a_min, a_max: the intensity window the real images were mapped from to [-1, 1] (e.g. HU -100..250, or
            0..255 for 8-bit images); images are mapped back to it.
        file_format: ``"nii.gz"`` / ``"nii"`` (float32, or int16 when rounded) or ``"png"`` (rounded; values must
            then lie in 0..255, the scale PNGs are read on, see :func:`common.data.io.write_image`).
        prefix: file name prefix, ``<prefix>_<index>.<file_format>``.
        source: provenance stored in the datalist meta (e.g. the generator checkpoint path).
        round_values: round to integers (as CT and 8-bit images are stored); default: only for PNG.
        spacing: voxel spacing for NIfTI files.

    Items carry ``"synthetic": true`` and ``"patient": "synthetic"`` so that patient-wise splits never put a synthetic
    image in a test fold by accident. The datalist is written last: a set without it is incomplete.
    """
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images)
    if images.ndim < 4:
        raise ValueError(f"images must be (N, C, H, W[, D]), got shape {images.shape}")
    n = images.shape[0]
    if labels is not None:
        if hasattr(labels, "detach"):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"{n} images but {labels.shape[0]} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"labels must be in 0..{len(class_names) - 1}, got {labels.min()}..{labels.max()}")
    bad = ~np.isfinite(images)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(n, -1).any(1))[0])
        raise DataError(
            f"synthetic images for '{out_dir}' hold {int(bad.sum())} NaN/Inf values (first in sample {first})"
        )
    file_format = file_format.lstrip(".")
    if file_format not in ("nii.gz", "nii", "png"):
        raise ValueError(f"file_format must be 'nii.gz', 'nii' or 'png', got {file_format!r}")
    if round_values is None:
        round_values = file_format == "png"

    out_dir = Path(out_dir)
    native = from_unit_range(images, a_min, a_max)
    if round_values:
        native = np.round(native)
    items = []
    width = max(5, len(str(n - 1)))
    for i in range(n):
        rel = f"images/{prefix}_{i:0{width}d}.{file_format}"
        write_image(out_dir / rel, native[i].astype(np.float32), spacing=spacing)
        item: dict[str, Any] = {"image": rel}
        if labels is not None:
            item["label"] = int(labels[i])
        item.update({"patient": "synthetic", "synthetic": True})
        items.append(item)
    meta: dict[str, Any] = {
        "name": f"{prefix}_synthetic",
        "class_names": list(class_names),
        "synthetic": True,
        "source": source,
        "intensity": {"a_min": float(a_min), "a_max": float(a_max)},
        "n": n,
    }
    if labels is not None:
        meta["counts"] = {c: int((labels == i).sum()) for i, c in enumerate(class_names)}
    return write_datalist(out_dir / "datalist.json", items, **meta)
