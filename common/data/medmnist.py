"""MedMNIST ``.npz`` files (e.g. PneumoniaMNIST) -> PNG files + a datalist, read by the same path as any data set.

A MedMNIST file holds ``<split>_images`` (N, H, W) or (N, H, W, 3) uint8 and ``<split>_labels`` (N, 1) per split
(``train``, ``val``, ``test``). ``prepare_medmnist_npz`` writes the chosen splits once into a cache folder as
``images/<split>_<index>.png`` plus ``datalist.json`` (every item carries its ``split``), and reuses them while the
source file (size, mtime) and settings are unchanged. ``npz_splits`` lists the splits a file holds, so that a reader
can say what it uses and what it does not (``load_classification_dataset``: train + val are the data set, test is
the external test set).

MedMNIST has no patient ids: each image is its own "patient", so patient-separated folds are image-separated folds.
PneumoniaMNIST comes from Kermany et al.'s paediatric chest radiographs, where one child can have several images;
images of one child may therefore fall into different folds (a possible optimistic bias, stated in the model card).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.data.datalist import write_datalist
from common.data.io import write_image
from common.errors import DataError
from common.fs import atomic_write_text, staging_dir, swap_in

__all__ = ["MEDMNIST_CLASS_NAMES", "find_npz", "npz_splits", "prepare_medmnist_npz"]

#: label names of the MedMNIST sets this project uses, in label order
MEDMNIST_CLASS_NAMES = {"pneumoniamnist": ["normal", "pneumonia"]}


def find_npz(path: str | os.PathLike) -> Path | None:
    """``path`` itself when it is a ``.npz`` file, the single ``.npz`` in a folder, else None."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        return path
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        if len(found) == 1:
            return found[0]
    return None


def npz_splits(npz_path: str | os.PathLike) -> dict[str, list[str]]:
    """What a MedMNIST ``.npz`` holds, without reading its arrays: ``{"splits": [...], "other": [...]}``.

    ``splits``: the names ``s`` with both ``s_images`` and ``s_labels``, ``train``/``val``/``test`` first;
    ``other``: every other key (an ``s_images`` without labels, unknown arrays), for a reader to name.

    Raises:
        DataError: the file is not a readable ``.npz``.
    """
    try:
        with np.load(npz_path) as data:
            keys = list(data.files)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ...
        raise DataError(f"cannot read MedMNIST file '{npz_path}': {type(exc).__name__}: {exc}") from exc
    names = {k[: -len("_images")] for k in keys if k.endswith("_images") and f"{k[: -len('_images')]}_labels" in keys}
    order = [s for s in ("train", "val", "test") if s in names] + sorted(names - {"train", "val", "test"})
    paired = {f"{s}_{part}" for s in order for part in ("images", "labels")}
    return {"splits": order, "other": sorted(set(keys) - paired)}


def prepare_medmnist_npz(
    npz_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    splits: Sequence[str] = ("train", "val"),
    class_names: Sequence[str] | None = None,
) -> str:
    """Write the images of ``splits`` from a MedMNIST ``.npz`` as PNG + ``datalist.json`` into ``out_dir``.

    Returns the datalist path. Class names: ``class_names``, else the known names for the file's stem (e.g.
    ``pneumoniamnist`` -> normal, pneumonia), else "0", "1", ...

    Raises:
        DataError: the file is missing or not a valid ``.npz``, a split is missing, or images and labels disagree.
    """
    npz_path = Path(npz_path)
    out_dir = Path(os.path.abspath(out_dir))
    if not npz_path.is_file():
        raise DataError(f"MedMNIST file '{npz_path}' not found")
    stat = npz_path.stat()
    stem = npz_path.stem.split("_")[0].lower()
    spec = {
        "source": str(npz_path.resolve()),
        "size": stat.st_size,
        "mtime": int(stat.st_mtime),
        "splits": list(splits),
        "class_names": None if class_names is None else list(class_names),
        "version": 1,
    }
    spec_file = out_dir / "medmnist.json"
    if spec_file.is_file() and (out_dir / "datalist.json").is_file():
        try:
            if json.loads(spec_file.read_text()) == spec:
                return str(out_dir / "datalist.json")
        except (OSError, json.JSONDecodeError):
            pass
    try:
        data = np.load(npz_path)
        arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, pickle refusals ...
        raise DataError(f"cannot read MedMNIST file '{npz_path}': {type(exc).__name__}: {exc}") from exc
    items, max_label = [], -1
    tmp = staging_dir(out_dir)
    try:
        for split in splits:
            ik, lk = f"{split}_images", f"{split}_labels"
            if ik not in arrays or lk not in arrays:
                raise DataError(f"MedMNIST file '{npz_path}' has no '{ik}' / '{lk}' (keys: {sorted(arrays)})")
            images, labels = arrays[ik], np.asarray(arrays[lk]).reshape(len(arrays[lk]), -1)
            if len(images) != len(labels) or images.ndim not in (3, 4):
                raise DataError(f"MedMNIST file '{npz_path}': {ik} {images.shape} and {lk} {labels.shape} do not match")
            if labels.shape[1] != 1:
                raise DataError(f"MedMNIST file '{npz_path}': {lk} is multi-label {labels.shape}; need one label")
            for i, (image, label) in enumerate(zip(images, labels[:, 0], strict=True)):
                pixels = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
                rel = f"images/{split}_{i:05d}.png"
                # (C, rows, cols) -> (C, cols, rows): MONAI's PNG axis order, so the file is upright
                write_image(tmp / rel, np.swapaxes(pixels, 1, 2).astype(np.float32))
                items.append({"image": rel, "label": int(label), "patient": f"{split}_{i:05d}", "split": split})
                max_label = max(max_label, int(label))
        names = list(class_names) if class_names is not None else MEDMNIST_CLASS_NAMES.get(stem)
        names = names or [str(c) for c in range(max_label + 1)]
        if max_label >= len(names):
            raise DataError(f"MedMNIST file '{npz_path}': label {max_label} but only classes {names}")
        write_datalist(tmp / "datalist.json", items, name=stem, class_names=names, source=str(npz_path))
        atomic_write_text(tmp / "medmnist.json", json.dumps(spec, indent=1))
        swap_in(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out_dir / "datalist.json")
