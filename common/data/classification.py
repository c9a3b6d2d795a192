"""One entry point from ``dataset_dir`` to a labelled list of images, whatever the layout on disk.

Layouts, tried in this order (the first that matches wins):

1. ``phantom_dir`` given and ``dataset_dir`` is that same path -> ``phantom.ensure(phantom_dir)``, then its datalist;
2. a ``.json`` file, or a folder with ``datalist.json`` -> Decathlon-style datalist (``class_names`` in its meta);
3. a ``.csv`` file, or a folder with ``labels.csv`` -> CSV with columns ``path,label[,patient]``;
4. a folder with ``metadata.csv`` and ``image/`` -> LIDC-IDRI VOIs, mapped to 2-D ROIs by ``lidc_mapping``;
5. a folder whose sub-folders hold images -> folder per class (class names = sorted sub-folder names);
6. a MedMNIST ``.npz`` file, or a folder with exactly one -> PNG files + datalist in ``cache_dir`` (train + val).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.data.datalist import read_datalist
from common.data.io import CHANNEL_LAYOUTS, MIN_SIDE, check_image, has_image_suffix, read_image
from common.errors import DataError

__all__ = ["LAYOUTS", "load_classification_dataset", "validate_images"]

#: The accepted layouts, as said in the error for an unrecognised ``dataset_dir``.
LAYOUTS = (
    "a datalist .json (or a folder with datalist.json), a .csv with columns path,label[,patient] (or a folder with "
    "labels.csv), a LIDC-IDRI VOI folder (metadata.csv + image/), one sub-folder of images per class, or a "
    "MedMNIST .npz"
)


def _patient_of(path: str) -> str:
    """The file stem (``a.nii.gz`` -> ``a``): the default patient id when the layout has none."""
    name = os.path.basename(str(path).rstrip("/"))
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else os.path.splitext(name)[0]


def _label_index(value: Any, class_names: Sequence[str], where: str) -> int:
    """A class name or an integer (also as a string, "2") -> the class index; DataError naming ``where`` otherwise."""
    if isinstance(value, bool):
        raise DataError(f"{where}: label {value!r} is not a class name or index (classes: {list(class_names)})")
    if isinstance(value, str):
        text = value.strip()
        if text in class_names:
            return list(class_names).index(text)
        if text.lstrip("-").isdigit():
            value = int(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value < len(class_names):
        return value
    raise DataError(f"{where}: unknown label {value!r} (classes: {list(class_names)})")


def _from_datalist(path: Path, image_key: str) -> tuple[list[dict], list[str]]:
    content = read_datalist(path, path_keys=(image_key, "seg", "mask"))
    items = content["training"]
    class_names = content.get("class_names")
    if class_names is None:
        labels = [item.get("label") for item in items]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
            class_names = [str(i) for i in range(max(labels, default=-1) + 1)]
        else:  # string labels without a declared list: classes are the sorted distinct names
            class_names = sorted({str(v) for v in labels if v is not None})
    class_names = [str(c) for c in class_names]
    out = []
    for index, item in enumerate(items):
        if image_key not in item:
            raise DataError(f"datalist '{path}': training[{index}] has no '{image_key}' key")
        if "label" not in item:
            raise DataError(f"datalist '{path}': training[{index}] has no 'label' key")
        item = dict(item)
        item["label"] = _label_index(item["label"], class_names, f"datalist '{path}' training[{index}]")
        item.setdefault("patient", _patient_of(item[image_key]))
        out.append(item)
    return out, class_names


def _from_csv(path: Path, image_key: str, declared: Sequence[str] | None) -> tuple[list[dict], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV '{path}': {exc}") from exc
    if not rows or not {"path", "label"} <= set(rows[0]):
        found = sorted(rows[0]) if rows else []
        raise DataError(f"CSV '{path}' needs a header with columns path,label[,patient]; found {found}")
    raw_labels = [(row.get("label") or "").strip() for row in rows]
    if declared is not None:
        class_names = list(declared)
    elif all(v.lstrip("-").isdigit() for v in raw_labels):
        class_names = [str(i) for i in range(max(int(v) for v in raw_labels) + 1)]
    else:
        class_names = sorted(set(v for v in raw_labels if not v.lstrip("-").isdigit()))
    root = path.parent
    items = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"CSV '{path}' row {line}"
        rel = (row.get("path") or "").strip()
        if not rel:
            raise DataError(f"{where}: empty 'path'")
        image = rel if os.path.isabs(rel) else os.path.normpath(root / rel)
        if not os.path.exists(image):
            raise DataError(f"{where}: image '{rel}' does not exist ({image})")
        patient = (row.get("patient") or "").strip() or _patient_of(image)
        items.append({image_key: image, "label": _label_index(row["label"], class_names, where), "patient": patient})
    return items, class_names


def _from_folders(root: Path, image_key: str, declared: Sequence[str] | None) -> tuple[list[dict], list[str]] | None:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    # A folder is a class when it holds images (directly); hidden files and non-images are ignored.
    files = {d.name: sorted(f for f in d.iterdir() if f.is_file() and has_image_suffix(f.name)) for d in subdirs}
    if not any(files.values()):
        return None
    class_names = [d.name for d in subdirs]
    if declared is not None:
        unknown = [name for name in class_names if name not in declared]
        if unknown:
            raise DataError(f"dataset_dir '{root}': sub-folder(s) {unknown} are not among class_names {list(declared)}")
        class_names = list(declared)
        files = {name: files.get(name, []) for name in class_names}
    empty = [name for name in class_names if not files[name]]
    if empty:
        raise DataError(f"dataset_dir '{root}': class folder(s) {empty} hold no images (or are missing)")
    items = [
        {image_key: str(f), "label": label, "patient": _patient_of(f.name)}
        for label, name in enumerate(class_names)
        for f in files[name]
    ]
    return items, class_names


def _medmnist_file(path: Path) -> Path | None:
    """A ``.npz`` file, or the only ``.npz`` of a folder without image sub-folders."""
    if path.is_file():
        return path if path.suffix.lower() == ".npz" else None
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        return found[0] if len(found) == 1 else None
    return None


def _check_counts(items: list[dict], class_names: Sequence[str], min_per_class: int, origin: str) -> None:
    counts = {name: 0 for name in class_names}
    for item in items:
        counts[class_names[item["label"]]] += 1
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise DataError(f"{origin}: class(es) {empty} have no images (counts: {counts})")
    few = {name: n for name, n in counts.items() if n < min_per_class}
    if few:
        raise DataError(f"{origin}: class(es) {few} have fewer than min_per_class={min_per_class} images")


def load_classification_dataset(
    dataset_dir: str | os.PathLike,
    *,
    phantom: Any = None,
    phantom_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    lidc_mapping: str | None = None,
    image_key: str = "image",
    class_names: Sequence[str] | None = None,
    min_per_class: int = 1,
    lidc_roi_size: int = 64,
    image_shape: Sequence[int] | None = None,
    channels: str | None = None,
) -> dict[str, Any]:
    """Find and read a labelled classification data set; see the module docstring for the layouts.

    Args:
        dataset_dir: the data: a folder, a datalist ``.json`` or a ``.csv``.
        phantom: a :class:`~common.data.phantoms.Phantom` to materialise when ``dataset_dir`` is ``phantom_dir``.
        phantom_dir: where the phantom lives; a bundle sets ``dataset_dir`` to it by default.
        cache_dir: where derived data (the LIDC ROIs) are written; required for the LIDC layout.
        lidc_mapping: name of the LIDC mapping (see :data:`common.data.lidc.LIDC_MAPPINGS`); default ``"lesion3"``.
        image_key: item key of the image path.
        class_names: the expected classes, in label order. When given, CSV labels and class sub-folders must be
            among them (an unknown one is an error naming the row/folder) and a datalist must declare the same list.
        min_per_class: fewer images than this in any class is an error.
        lidc_roi_size: side of the 2-D ROIs made from LIDC VOIs.
        image_shape: when given, every image is read once (:func:`validate_images`): a corrupt file, a NaN or a
            spatial shape other than this stops here with the file's name, before any training starts.
        channels: ``"gray"`` or ``"rgb"``, the data set's channel layout; when given, every image is read once
            (:func:`validate_images`): besides the checks above, a colour image in a grey set (or one whose channels
            cannot be made RGB in an RGB set) and, when ``image_shape`` is not given (the load chain resizes), an
            image smaller than ``MIN_SIDE`` px on a side stop here with the file's name.

    Returns:
        ``{"items": [{image_key: absolute path, "label": int, "patient": str, ...}], "class_names": [...],
        "source": "phantom" | "datalist" | "csv" | "folder" | "lidc_vois", "datalist": path or None}``
        (``datalist`` is the JSON datalist the items came from, ``None`` for CSV and folder layouts).

    Raises:
        DataError: ``dataset_dir`` is missing or not a recognised layout, a class is empty or below
            ``min_per_class``, a CSV label is unknown, or a referenced file does not exist.
    """
    path = Path(os.path.abspath(os.path.expanduser(str(dataset_dir))))
    if phantom_dir is not None and path == Path(os.path.abspath(os.path.expanduser(str(phantom_dir)))):
        if phantom is None:
            raise DataError(f"dataset_dir '{path}' is the phantom folder, but no phantom was given (key 'phantom')")
        datalist = Path(phantom.ensure(path))
        items, names = _from_datalist(datalist, image_key)
        source = "phantom"
    elif not path.exists():
        raise DataError(f"dataset_dir '{path}' does not exist (key 'dataset_dir')")
    elif path.is_file() and path.suffix.lower() == ".json" or (path / "datalist.json").is_file():
        datalist = path if path.is_file() else path / "datalist.json"
        items, names = _from_datalist(datalist, image_key)
        source = "datalist"
    elif path.is_file() and path.suffix.lower() == ".csv" or (path / "labels.csv").is_file():
        csv_path = path if path.is_file() else path / "labels.csv"
        items, names = _from_csv(csv_path, image_key, class_names)
        datalist, source = None, "csv"
    elif path.is_dir() and (path / "metadata.csv").is_file() and (path / "image").is_dir():
        from common.data.lidc import prepare_lidc_rois

        if cache_dir is None:
            raise DataError(f"dataset_dir '{path}' is LIDC-IDRI VOIs: set 'cache_dir' for the 2-D ROIs made from it")
        mapping = lidc_mapping or "lesion3"
        out_dir = Path(cache_dir) / f"lidc_{mapping}_{lidc_roi_size}"
        datalist = Path(prepare_lidc_rois(path, out_dir, mapping=mapping, roi_size=lidc_roi_size))
        items, names = _from_datalist(datalist, image_key)
        source = "lidc_vois"
    elif (npz := _medmnist_file(path)) is not None:
        from common.data.medmnist import prepare_medmnist_npz

        if cache_dir is None:
            raise DataError(f"dataset_dir '{path}' is a MedMNIST .npz: set 'cache_dir' for the PNG files made from it")
        datalist = Path(prepare_medmnist_npz(npz, Path(cache_dir) / f"medmnist_{npz.stem}", class_names=class_names))
        items, names = _from_datalist(datalist, image_key)
        source = npz.stem.split("_")[0]
    else:
        found = _from_folders(path, image_key, class_names) if path.is_dir() else None
        if found is None:
            raise DataError(f"dataset_dir '{path}': no recognised data set; expected {LAYOUTS}")
        items, names = found
        datalist, source = None, "folder"
    if class_names is not None and list(names) != [str(c) for c in class_names]:
        raise DataError(f"dataset_dir '{path}': its classes {list(names)} differ from class_names {list(class_names)}")
    _check_counts(items, names, min_per_class, f"dataset_dir '{path}'")
    if channels is not None and channels not in CHANNEL_LAYOUTS:
        raise DataError(f"channels must be one of {CHANNEL_LAYOUTS}, got {channels!r} (key 'channels')")
    if image_shape is not None or channels is not None:
        validate_images(items, expected_shape=image_shape, key=image_key, channels=channels)
    return {
        "items": items,
        "class_names": list(names),
        "source": source,
        "datalist": None if datalist is None else str(datalist),
    }


def validate_images(
    items: Iterable[Mapping[str, Any]],
    expected_shape: Sequence[int] | None = None,
    key: str = "image",
    max_check: int | None = None,
    *,
    channels: str | None = None,
    min_side: int | None = MIN_SIDE,
    spatial_dims: int | None = None,
) -> int:
    """Read every image (or the first ``max_check``) with :func:`read_image`; return how many were checked.

    ``expected_shape`` is the spatial shape (without channels), e.g. ``(64, 64)``. Without it the load chain resizes
    the images, so each must be at least ``min_side`` px on a side in-plane (``None``: no minimum). ``channels``
    (``"gray"`` / ``"rgb"``) is the data set's channel layout, checked with :func:`common.data.io.check_image`, the
    same policy as the load chains'. ``spatial_dims``: the number of spatial axes every image must have (2 for 2-D).

    Raises:
        DataError: naming the file, for a missing/corrupt file, NaN/Inf values, a spatial shape other than
            ``expected_shape`` (found vs expected), too few spatial axes, too small a size, or channels that do not
            fit ``channels``.
    """
    checked = 0
    for item in items:
        if max_check is not None and checked >= max_check:
            break
        if key not in item:
            raise DataError(f"item {checked} has no '{key}' key (keys: {sorted(item)})")
        array = read_image(item[key])
        if spatial_dims is not None and array.ndim - 1 != spatial_dims:
            raise DataError(
                f"image '{item[key]}' has shape {tuple(array.shape)} ({array.ndim - 1} spatial axes): expected a "
                f"{spatial_dims}-D image"
            )
        if expected_shape is not None and tuple(array.shape[1:]) != tuple(int(s) for s in expected_shape):
            raise DataError(
                f"image '{item[key]}' has spatial shape {tuple(array.shape[1:])}, expected {tuple(expected_shape)}"
            )
        check_image(array, item[key], channels=channels, min_side=min_side if expected_shape is None else None)
        checked += 1
    return checked
