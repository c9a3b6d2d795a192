"""Dermoscopy data sets (MelanoGANs): ISIC ground-truth CSVs, folder-per-class sets, RGB input.

``load_skin_dataset(dataset_dir)`` reads, in this order (the first that matches wins):

1. an ISIC ground-truth CSV (``image_id,melanoma,seborrheic_keratosis``, as ISIC 2017 Part 3): a ``.csv`` file, or
   a folder holding one. Images ``<image_id>.jpg|.jpeg|.png`` are looked up in the CSV's folder and below it.
   Classes, as ISIC 2017 defines them: ``melanoma`` = 1 -> melanoma, ``seborrheic_keratosis`` = 1 ->
   seborrheic_keratosis, both 0 -> nevus;
2. everything ``common.data.load_classification_dataset`` reads (the phantom, a datalist, a ``path,label`` CSV,
   one sub-folder per class), including an archive that ships its own split: a ``Train``/``train``/``Training``/
   ``training`` sub-folder of class folders (the Kaggle ISIC layout of ``../shared/data/isic9``) is the data set, and
   a ``Test``/``test``/``Testing``/``testing`` folder beside it, when there is one, the external test set.

Every image is read once at loading (``validate_images(channels="rgb")``): a corrupt file, a NaN, a channel count
other than 1 (grey, repeated to RGB), 3 or 4 (RGBA, alpha dropped), or a side under ``MIN_SIDE`` px stops there with
the file's name.

``rgb_classification_transforms`` is the load chain for training and evaluation: load, 3 channels, resize to the
working resolution (area), 0..255 -> [-1, 1], plain float tensor.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, Resized, ScaleIntensityRanged

from common.data.io import MIN_SIDE, image_loader
from common.data.labelled_images import choose_external_test, limit_per_class, read_data_set, validate_images
from common.data.transforms import CheckImaged
from common.errors import DataError

__all__ = [
    "ISIC_CLASSES",
    "ISIC_LAYOUT",
    "ToRGBd",
    "find_isic_csv",
    "load_skin_dataset",
    "read_isic_ground_truth",
    "rgb_classification_transforms",
]

#: ISIC 2017's three classes, in the label order the phantom uses too.
ISIC_CLASSES = ("nevus", "melanoma", "seborrheic_keratosis")
_ISIC_SUFFIXES = (".jpg", ".jpeg", ".png")
#: the ISIC layout as ``read_data_set``'s ``extra_layouts`` names it when a folder matches no layout
ISIC_LAYOUT = (
    "ISIC ground truth",
    "a .csv with columns image_id,melanoma[,seborrheic_keratosis] and the images <image_id>.jpg|.png beside or "
    "below it",
)


def _is_isic(path: Path) -> bool:
    """True when the CSV's header has ISIC ground-truth columns (``image_id`` and ``melanoma``)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"image_id", "melanoma"} <= {h.strip() for h in header}


def _isic_csv_in(folder: Path) -> Path | None:
    return next((path for path in sorted(folder.glob("*.csv")) if _is_isic(path)), None)


def find_isic_csv(path: str | os.PathLike) -> Path | None:
    """The ISIC ground-truth CSV at ``path``: ``path`` itself when it is one, the first one in a folder, else None."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv" and _is_isic(path):
        return path
    return _isic_csv_in(path) if path.is_dir() else None


def _flag(value: str, where: str, column: str) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: column '{column}' must be 0 or 1, got {value!r}") from None
    if number not in (0.0, 1.0):
        raise DataError(f"{where}: column '{column}' must be 0 or 1, got {value!r}")
    return number == 1.0


def read_isic_ground_truth(csv_path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read an ISIC 2017-style ground truth ``image_id,melanoma[,seborrheic_keratosis]`` into labelled items.

    Args:
        csv_path: the CSV.
        image_dir: where the images are (searched recursively); default the CSV's folder.

    Returns:
        ``{"items": [{"image", "label", "patient"}], "class_names": list(ISIC_CLASSES), "source": "isic_csv"}``.

    Raises:
        DataError: naming the CSV row for a missing image, a flag other than 0/1, or both flags set.
    """
    csv_path = Path(csv_path)
    root = Path(image_dir) if image_dir is not None else csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read ISIC ground truth '{csv_path}': {exc}") from exc
    if not rows or not {"image_id", "melanoma"} <= set(rows[0]):
        raise DataError(f"ISIC ground truth '{csv_path}' needs columns image_id,melanoma[,seborrheic_keratosis]")
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in _ISIC_SUFFIXES and not path.name.startswith("."):
            index.setdefault(path.stem, path)
    items = []
    for line, row in enumerate(rows, start=2):
        where = f"ISIC ground truth '{csv_path}' row {line}"
        image_id = (row.get("image_id") or "").strip()
        if not image_id:
            raise DataError(f"{where}: empty image_id")
        if image_id not in index:
            raise DataError(f"{where}: no image '{image_id}.jpg|.png' under '{root}'")
        melanoma = _flag(row.get("melanoma"), where, "melanoma")
        keratosis = _flag(row.get("seborrheic_keratosis", "0"), where, "seborrheic_keratosis")
        if melanoma and keratosis:
            raise DataError(f"{where}: '{image_id}' is marked both melanoma and seborrheic_keratosis")
        label = 1 if melanoma else 2 if keratosis else 0
        items.append({"image": str(index[image_id]), "label": label, "patient": image_id})
    return {"items": items, "class_names": list(ISIC_CLASSES), "source": "isic_csv", "datalist": None}


def load_skin_dataset(
    dataset_dir: str | os.PathLike,
    *,
    phantom: Any = None,
    phantom_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    required_classes: Sequence[str] = (),
    min_per_class: int = 1,
    validate: bool = True,
    test_dir: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    subsample_seed: int = 0,
) -> dict[str, Any]:
    """Find, read and check a dermoscopy data set (see the module docstring for the layouts).

    ``required_classes`` (e.g. the classes to synthesise) must be among the data set's classes. ``test_dir``: an
    external test set in any of the same layouts, read by this function with the data set's classes (a class may be
    absent from it); without it, a test part that ``dataset_dir`` ships is the external test set (see
    ``common.data.labelled_images.choose_external_test``).

    Returns the dict of ``load_classification_dataset`` (``items``, ``class_names``, ``source``, ``datalist``,
    ``external_test``) plus ``dataset_dir`` and ``counts`` (images per class). The tasks (melanoma vs rest,
    multi-class) are made from it by the protocol (``common.protocol.tasks``), on the same folds. ``max_per_class``:
    at most this many images of each class, before the images are read (``labelled_images.limit_per_class``).
    """
    path = Path(os.path.abspath(os.path.expanduser(str(dataset_dir))))
    dataset = _read_skin(path, phantom=phantom, phantom_dir=phantom_dir, class_names=class_names, external=False)
    absent = [c for c in required_classes if c not in dataset["class_names"]]
    if absent:
        raise DataError(
            f"dataset_dir '{path}': class(es) {absent} (keys 'gan_classes' / 'tasks') are not among its classes "
            f"{dataset['class_names']}"
        )
    dataset = limit_per_class(dataset, max_per_class, subsample_seed)
    if validate:
        validate_images(dataset["items"], channels="rgb", spatial_dims=2)
    counts = {name: 0 for name in dataset["class_names"]}
    for item in dataset["items"]:
        counts[dataset["class_names"][item["label"]]] += 1
    few = {name: n for name, n in counts.items() if n < max(1, min_per_class)}
    if few:
        raise DataError(f"dataset_dir '{path}': class(es) {few} have fewer than {max(1, min_per_class)} images")

    def read_external(test_path: Path) -> dict:
        return _read_skin(test_path, phantom=None, phantom_dir=None, class_names=dataset["class_names"], external=True)

    dataset["dataset_dir"] = str(path)
    external = choose_external_test(dataset, test_dir, read_external)
    if validate and external is not None:
        validate_images(external["items"], channels="rgb", spatial_dims=2)
    return dict(dataset, dataset_dir=str(path), counts=counts, external_test=external)


def _read_skin(
    path: Path,
    *,
    phantom: Any,
    phantom_dir: str | os.PathLike | None,
    class_names: Sequence[str] | None,
    external: bool,
) -> dict[str, Any]:
    """The data set at ``path`` without choosing its external test set (``embedded_test``: the test part it ships).
    ``external``: it is an external test set (a class may be absent)."""
    is_phantom = phantom_dir is not None and path == Path(os.path.abspath(os.path.expanduser(str(phantom_dir))))
    isic_csv = None if is_phantom else find_isic_csv(path)
    if isic_csv is not None:
        dataset = read_isic_ground_truth(isic_csv)
        if class_names is not None and list(class_names) != dataset["class_names"]:
            raise DataError(f"'{isic_csv}': ISIC classes {dataset['class_names']} differ from class_names")
        return dict(dataset, dataset_dir=str(path), embedded_test=None)
    # everything else, the Train/ + Test/ archive of isic9 included, is the generic reader's
    return read_data_set(
        path,
        phantom=phantom,
        phantom_dir=phantom_dir,
        class_names=class_names,
        min_per_class=1,
        external=external,
        extra_layouts=[ISIC_LAYOUT],
    )


class ToRGBd(CheckImaged):
    """Make channel-first images 3-channel: gray is repeated, an alpha channel is dropped; anything else is a
    ``DataError`` naming the file (``CheckImaged`` with ``channels="rgb"``)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, channels="rgb", allow_missing_keys=allow_missing_keys)


def rgb_classification_transforms(
    image_size: int, a_min: float = 0.0, a_max: float = 255.0, keys: Sequence[str] = ("image",)
) -> Compose:
    """Load -> 3 channels, at least ``MIN_SIDE`` px -> resize to ``image_size`` (area) -> [a_min, a_max] to [-1, 1]
    -> tensor.

    Deterministic, so ``CacheDataset`` caches the result and every image is decoded and resized once per run.
    ``mode="area"`` averages when shrinking (no aliasing: 180 or 1024 px ISIC images to 64-256 px).
    """
    keys = list(keys)
    size = (int(image_size), int(image_size))
    return Compose(
        [
            image_loader(keys),
            CheckImaged(keys, channels="rgb", min_side=MIN_SIDE),
            Resized(keys=keys, spatial_size=size, mode="area"),
            ScaleIntensityRanged(keys=keys, a_min=a_min, a_max=a_max, b_min=-1.0, b_max=1.0, clip=True),
            EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
        ]
    )
