"""One entry point from ``dataset_dir`` to a labelled list of images, whatever the layout on disk.

Layouts, tried in this order (the first that matches wins):

1. ``phantom_dir`` given and ``dataset_dir`` is that same path -> ``phantom.ensure(phantom_dir)``, then its datalist;
2. a ``.json`` file, or a folder with ``datalist.json`` -> Decathlon-style datalist (``class_names`` in its meta);
3. a ``.csv`` file, or a folder with ``labels.csv`` -> CSV with columns ``path,label[,patient]``;
4. a folder with ``image/`` (or ``VOIs/image/``) and a metadata table (``metadata.csv``, or the published
   ``MetadatabyNoduleMaxVoting.xlsx``, read with openpyxl) -> LIDC-IDRI VOIs, mapped to 2-D ROIs by ``lidc_mapping``
   (``common.data.lidc.find_lidc``);
5. a MedMNIST ``.npz`` file, or a folder with exactly one -> PNG files + datalist in ``cache_dir`` (train + val; the
   ``test`` split is the external test set);
6. an archive that ships its own split (ISIC challenge / Kaggle style): a ``Train/`` folder in one of these layouts
   is the data set, and a ``Test/`` folder beside it the external test set;
7. a folder whose sub-folders hold images -> folder per class (class names = sorted sub-folder names).

Anything else stops with one line naming what the folder holds, the near misses (an ``image/`` without its metadata
table, several ``.npz`` ...) and what each layout needs (:func:`unrecognised_layout`).

External test set: ``test_dir`` names a second data set in any of these layouts, read with the same settings and
classes; every downstream model of a protocol is also scored on it (``common.protocol.external``). Without
``test_dir``, the test split a layout ships beside its data (a MedMNIST ``test`` split) is the external test set, and
the log says so: nothing a layout holds is dropped without a line in the log.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.data.datalist import read_datalist
from common.data.io import (
    CHANNEL_LAYOUTS,
    IMAGE_SUFFIXES,
    MIN_SIDE,
    check_image,
    file_stem,
    has_image_suffix,
    read_image,
)
from common.errors import DataError

__all__ = [
    "LAYOUTS",
    "LAYOUT_NEEDS",
    "choose_external_test",
    "external_test_set",
    "limit_per_class",
    "load_classification_dataset",
    "read_data_set",
    "split_archive",
    "unlabelled_images",
    "unrecognised_layout",
    "validate_images",
]

logger = logging.getLogger(__name__)

#: The accepted layouts and what each needs, as the error for an unrecognised ``dataset_dir`` lists them.
LAYOUT_NEEDS: tuple[tuple[str, str], ...] = (
    ("datalist", "datalist.json (or a .json given as the path) with a 'training' list of {image, label[, patient]}"),
    ("CSV", "labels.csv (or a .csv given as the path) with columns path,label[,patient]"),
    ("LIDC-IDRI VOIs", "image/ (or VOIs/image/) of NIfTI VOIs and metadata.csv or MetadatabyNoduleMaxVoting.xlsx"),
    ("MedMNIST", "exactly one .npz with <split>_images + <split>_labels (train, val[, test])"),
    (
        "archive with its own split",
        "a Train/ (or train/, Training/) folder in one of these layouts, and optionally "
        "Test/ (or test/, Testing/) beside it, the test set",
    ),  # fmt: skip
    ("folder per class", "one sub-folder per class holding images (" + ", ".join(IMAGE_SUFFIXES) + ")"),
)
#: The accepted layouts in one phrase (kept for callers that name them).
LAYOUTS = "; ".join(f"{name}: {needs}" for name, needs in LAYOUT_NEEDS)
#: An archive that ships its own split (ISIC challenge / Kaggle style): the data set, and its test set.
TRAIN_FOLDERS = ("Train", "train", "Training", "training")
TEST_FOLDERS = ("Test", "test", "Testing", "testing")


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


def _from_datalist(path: Path, image_key: str, declared: Sequence[str] | None = None) -> tuple[list[dict], list[str]]:
    """``declared``: the class names to use when the datalist declares none (an external test set's: those of the
    data set it tests)."""
    content = read_datalist(path, path_keys=(image_key, "seg", "mask"))
    items = content["training"]
    class_names = content.get("class_names") or (list(declared) if declared is not None else None)
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
        item.setdefault("patient", file_stem(item[image_key]))
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
        patient = (row.get("patient") or "").strip() or file_stem(image)
        items.append({image_key: image, "label": _label_index(row["label"], class_names, where), "patient": patient})
    return items, class_names


def _from_folders(
    root: Path, image_key: str, declared: Sequence[str] | None, require_all: bool = True
) -> tuple[list[dict], list[str]] | None:
    """One sub-folder of images per class; ``require_all``: every declared class has a folder with images."""
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
    if empty and require_all:
        raise DataError(f"dataset_dir '{root}': class folder(s) {empty} hold no images (or are missing)")
    items = [
        {image_key: str(f), "label": label, "patient": file_stem(f.name)}
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


def _check_counts(
    items: list[dict], class_names: Sequence[str], min_per_class: int, origin: str, require_all: bool = True
) -> None:
    """Every class has at least ``min_per_class`` images; ``require_all=False`` (an external test set): a class may
    have none, but the set may not be empty."""
    counts = {name: 0 for name in class_names}
    for item in items:
        counts[class_names[item["label"]]] += 1
    if not items and not require_all:
        raise DataError(f"{origin}: no images")
    empty = [name for name, n in counts.items() if n == 0]
    if empty and require_all:
        raise DataError(f"{origin}: class(es) {empty} have no images (counts: {counts})")
    few = {name: n for name, n in counts.items() if 0 < n < min_per_class or (require_all and n < min_per_class)}
    if few:
        raise DataError(f"{origin}: class(es) {few} have fewer than min_per_class={min_per_class} images")


def _abspath(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


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
    test_dir: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    subsample_seed: int = 0,
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
        test_dir: an external test set in any layout above (read here with the same settings, its classes those
            of ``dataset_dir``; a class may be absent from it). Without it, a test split that ``dataset_dir``
            ships (a MedMNIST ``.npz``'s ``test`` split) is the external test set, and the log says so.
        max_per_class: keep at most this many images of each class, whole patients drawn by ``subsample_seed``
            (:func:`limit_per_class`): the bundles' ``quick.json`` proves the pipeline on a real set in minutes.
            The external test set is not limited.

    Returns:
        ``{"items": [{image_key: absolute path, "label": int, "patient": str, ...}], "class_names": [...],
        "source": "phantom" | "datalist" | "csv" | "folder" | "lidc_vois" | <MedMNIST name>, "datalist": path or
        None, "dataset_dir": str, "external_test": None or the external test set}`` (``datalist`` is the JSON
        datalist the items came from, ``None`` for CSV and folder layouts; ``external_test`` is the dict of
        :func:`external_test_set`).

    Raises:
        DataError: ``dataset_dir`` is missing or not a recognised layout, a class is empty or below
            ``min_per_class``, a CSV label is unknown, or a referenced file does not exist; ``test_dir`` likewise,
            or it is ``dataset_dir`` itself, or it holds one of ``dataset_dir``'s image files.
    """
    path = _abspath(dataset_dir)
    settings = dict(
        lidc_mapping=lidc_mapping,
        image_key=image_key,
        min_per_class=min_per_class,
        lidc_roi_size=lidc_roi_size,
        image_shape=image_shape,
        channels=channels,
    )
    dataset = read_data_set(path, phantom=phantom, phantom_dir=phantom_dir, cache_dir=cache_dir,
                            class_names=class_names, **settings)  # fmt: skip
    external_cache = None if cache_dir is None else Path(cache_dir) / "external"

    def read_external(test_path: Path) -> dict:
        return read_data_set(test_path, cache_dir=external_cache, class_names=dataset["class_names"], external=True,
                             **settings)  # fmt: skip

    dataset["external_test"] = choose_external_test(dataset, test_dir, read_external, image_key)
    return limit_per_class(dataset, max_per_class, subsample_seed)


def limit_per_class(dataset: dict[str, Any], max_per_class: int | None, seed: int = 0) -> dict[str, Any]:
    """``dataset`` with at most ``max_per_class`` images of each class (``None``: unchanged).

    Whole patients are kept or dropped (the folds split by patient, so a patient is never cut in two): patients in an
    order drawn from ``seed``, each kept when every class of its images still has room. The result carries
    ``subsample`` (the cap, images kept and of how many, per class) and the log says what was kept: a run on the
    subset is a check of the pipeline on this data, not a result about it.
    """
    if max_per_class is None:
        return dataset
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive integer or null, got {max_per_class!r}")
    items, names = dataset["items"], dataset["class_names"]
    by_patient: dict[str, list[int]] = {}
    for i, item in enumerate(items):  # an item without a patient id is its own patient
        by_patient.setdefault(str(item.get("patient", f"#{i}")), []).append(i)
    order = sorted(by_patient)
    random.Random(seed).shuffle(order)
    room = {label: max_per_class for label in range(len(names))}
    kept_patients = set()
    for patient in order:
        need: dict[int, int] = {}
        for i in by_patient[patient]:
            need[int(items[i]["label"])] = need.get(int(items[i]["label"]), 0) + 1
        if all(room[label] >= n for label, n in need.items()):
            kept_patients.add(patient)
            for label, n in need.items():
                room[label] -= n
    # in the reader's order, as without the cap
    kept = [items[i] for i in sorted(i for p in kept_patients for i in by_patient[p])]
    counts = {name: sum(1 for it in kept if int(it["label"]) == k) for k, name in enumerate(names)}
    if len(kept) < len(items):
        logger.warning(
            f"max_per_class={max_per_class}: using {len(kept)} of {len(items)} images (per class {counts}), whole "
            "patients drawn by the seed; a check of the pipeline on this data, not a result about it"
        )
    subsample = {"max_per_class": max_per_class, "kept": len(kept), "of": len(items), "per_class": counts}
    return dict(dataset, items=kept, subsample=subsample)


def choose_external_test(
    dataset: dict[str, Any],
    test_dir: str | os.PathLike | None,
    read_external: Callable[[Path], dict],
    image_key: str = "image",
) -> dict | None:
    """The external test set of ``dataset`` (a reader's result; its ``embedded_test`` entry is removed here).

    ``test_dir`` given: ``read_external(path)`` reads it (the same reader as the data set, with its classes), and a
    test split that ``dataset_dir`` ships is left unused, with a warning saying so. Else that shipped split, with an
    info line. Returns :func:`external_test_set` of the chosen set, or None.

    Raises:
        DataError: ``test_dir`` is ``dataset_dir`` itself (or see ``external_test_set``).
    """
    embedded = dataset.pop("embedded_test", None)
    external = None
    if test_dir is not None:
        test_path = _abspath(test_dir)
        if dataset.get("dataset_dir") and test_path == _abspath(dataset["dataset_dir"]):
            raise DataError(f"test_dir '{test_path}' is dataset_dir: an external test set must be other data")
        external = read_external(test_path)
        external.pop("embedded_test", None)
        external["origin"] = "test_dir"
        if embedded is not None:
            logger.warning(
                f"test_dir given: the {embedded['origin']} ({len(embedded['items'])} images) is not used; the external "
                f"test set is test_dir '{test_path}'"
            )
    elif embedded is not None:
        external = embedded
        logger.info(
            f"no test_dir: the {embedded['origin']} ({len(embedded['items'])} images) is the external test set; every "
            "downstream model is also scored on it (--test_dir DIR names another)"
        )
    return None if external is None else external_test_set(dataset, external, image_key)


def external_test_set(dataset: Mapping[str, Any], external: Mapping[str, Any], image_key: str = "image") -> dict:
    """``external`` (a read data set) checked against ``dataset`` and described as an external test set.

    Returns ``external``'s ``items``, ``class_names`` (= ``dataset``'s), ``source``, ``dataset_dir``, ``origin``
    (``"test_dir"``, or what ``dataset_dir`` shipped, e.g. "test split of pneumoniamnist.npz") plus ``counts``
    (images per class) and ``shared_patients`` (patient ids also in ``dataset``: a warning, as two sets can reuse
    ids such as file names; the same image file in both is an error).

    Raises:
        DataError: an image file of ``external`` is also one of ``dataset``'s, or the class lists differ.
    """
    names = list(dataset["class_names"])
    if list(external["class_names"]) != names:
        raise DataError(f"external test set: its classes {list(external['class_names'])} differ from {names}")
    items = list(external["items"])
    where = external.get("dataset_dir") or external.get("origin") or "external test set"
    seen = {os.path.realpath(str(it[image_key])) for it in dataset["items"]}
    both = sorted(str(it[image_key]) for it in items if os.path.realpath(str(it[image_key])) in seen)
    if both:
        raise DataError(
            f"external test set '{where}': {len(both)} of its images are also in dataset_dir, e.g. '{both[0]}': a "
            "test set must not hold training data"
        )
    patients = {str(it.get("patient")) for it in dataset["items"]}
    shared = sorted({str(it.get("patient")) for it in items} & patients)
    if shared:
        logger.warning(
            f"external test set '{where}': {len(shared)} patient id(s) also name patients of dataset_dir (e.g. "
            f"'{shared[0]}'); if they are the same patients, the external scores are optimistic"
        )
    counts = {name: 0 for name in names}
    for it in items:
        counts[names[int(it["label"])]] += 1
    absent = [name for name, n in counts.items() if n == 0]
    if absent:
        logger.warning(f"external test set '{where}': no image of class(es) {absent}; metrics that need every class "
                       "(balanced accuracy, sensitivity, specificity, AUC) are undefined on it")  # fmt: skip
    return {
        "items": items,
        "class_names": names,
        "source": external.get("source"),
        "dataset_dir": external.get("dataset_dir"),
        "origin": external.get("origin", "test_dir"),
        "counts": counts,
        "shared_patients": len(shared),
    }


def read_data_set(
    path: str | os.PathLike,
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
    external: bool = False,
    extra_layouts: Sequence[tuple[str, str]] = (),
    key: str | None = None,
) -> dict[str, Any]:
    """One data set at ``path``, without choosing an external test set (see ``load_classification_dataset`` for the
    arguments). ``external``: the set *is* an external test set, so every split it ships is test data and a class
    may be absent. The result's ``embedded_test``: the test split the layout ships beside its data (a MedMNIST
    ``test`` split, an archive's ``Test/`` folder), described as ``external_test_set`` takes it (None when it ships
    none, and always when ``external``). ``extra_layouts``: ``(name, what it needs)`` of the layouts a caller reads
    before this function (``load_skin_dataset``'s ISIC CSV), for the message of an unrecognised folder. ``key``: the
    config key that names ``path`` in messages (default ``test_dir`` when ``external``, else ``dataset_dir``; a
    deployed classifier reads its input as an external set named ``dataset_dir``)."""
    from common.data.lidc import find_lidc

    path = _abspath(path)
    key = key or _key(external)
    embedded = None
    validated = False
    if phantom_dir is not None and path == _abspath(phantom_dir):
        if phantom is None:
            raise DataError(f"dataset_dir '{path}' is the phantom folder, but no phantom was given (key 'phantom')")
        datalist = Path(phantom.ensure(path))
        items, names = _from_datalist(datalist, image_key)
        source = "phantom"
    elif not path.exists():
        raise DataError(f"{key} '{path}' does not exist (key '{key}')")
    elif path.is_file() and path.suffix.lower() == ".json" or (path / "datalist.json").is_file():
        datalist = path if path.is_file() else path / "datalist.json"
        items, names = _from_datalist(datalist, image_key, class_names if external else None)
        source = "datalist"
    elif path.is_file() and path.suffix.lower() == ".csv" or (path / "labels.csv").is_file():
        csv_path = path if path.is_file() else path / "labels.csv"
        items, names = _from_csv(csv_path, image_key, class_names)
        datalist, source = None, "csv"
    elif path.is_dir() and find_lidc(path) is not None:
        from common.data.lidc import prepare_lidc_rois

        if cache_dir is None:
            raise DataError(f"{key} '{path}' is LIDC-IDRI VOIs: set 'cache_dir' for the 2-D ROIs made from it")
        mapping = lidc_mapping or "lesion3"
        out_dir = Path(cache_dir) / f"lidc_{mapping}_{lidc_roi_size}"
        datalist = Path(prepare_lidc_rois(path, out_dir, mapping=mapping, roi_size=lidc_roi_size))
        items, names = _from_datalist(datalist, image_key)
        source = "lidc_vois"
    elif (npz := _medmnist_file(path)) is not None:
        items, names, datalist, embedded = _from_medmnist(npz, path, cache_dir, image_key, class_names, external, key)
        source = npz.stem.split("_")[0]
    elif (archive := split_archive(path)) is not None:
        train_dir, test_part = archive
        part = (test_part or train_dir) if external else train_dir
        settings = dict(lidc_mapping=lidc_mapping, image_key=image_key, min_per_class=min_per_class,
                        lidc_roi_size=lidc_roi_size, image_shape=image_shape, channels=channels)  # fmt: skip
        inner = read_data_set(
            part, cache_dir=cache_dir, class_names=class_names, external=external, key=key, **settings
        )
        items, names, source, validated = inner["items"], inner["class_names"], inner["source"], True
        datalist, embedded = inner["datalist"], inner["embedded_test"]
        if test_part is not None and not external:
            test_cache = None if cache_dir is None else Path(cache_dir) / "archive_test"
            held = read_data_set(test_part, cache_dir=test_cache, class_names=names, external=True, **settings)
            embedded = dict(held, origin=f"{test_part.name}/ folder of {path.name}")
        logger.info(
            f"{key} '{path}' ships its own split: "
            + (f"{part.name}/ is the external test set" if external else f"{train_dir.name}/ is the data set")
            + (f"; {test_part.name}/ is held out as the test set" if test_part is not None and not external else "")
        )
    else:
        found = _from_folders(path, image_key, class_names, require_all=not external) if path.is_dir() else None
        if found is None:
            raise DataError(unrecognised_layout(path, key, extra_layouts))
        items, names = found
        datalist, source = None, "folder"
    if class_names is not None and list(names) != [str(c) for c in class_names]:
        raise DataError(f"{key} '{path}': its classes {list(names)} differ from class_names {list(class_names)}")
    _check_counts(items, names, min_per_class, f"{key} '{path}'", require_all=not external)
    if channels is not None and channels not in CHANNEL_LAYOUTS:
        raise DataError(f"channels must be one of {CHANNEL_LAYOUTS}, got {channels!r} (key 'channels')")
    if (image_shape is not None or channels is not None) and not validated:
        validate_images(items, expected_shape=image_shape, key=image_key, channels=channels)
        if embedded is not None:
            validate_images(embedded["items"], expected_shape=image_shape, key=image_key, channels=channels)
    return {
        "items": items,
        "class_names": list(names),
        "source": source,
        "datalist": None if datalist is None else str(datalist),
        "dataset_dir": str(path),
        "embedded_test": embedded,
    }


def unlabelled_images(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Images without labels in ``folder``: those directly in it, else those of every ``<split>/images/`` sub-folder
    (a Roboflow / YOLO export as published, ``valid/images/`` beside ``valid/labels/``). Returns ``(files, the
    folders they lie in)``, both sorted; empty lists when there are none (or ``folder`` is not a folder)."""
    root = Path(folder)
    if not root.is_dir():
        return [], []
    files = sorted(f for f in root.iterdir() if f.is_file() and has_image_suffix(f.name) and not f.name.startswith("."))
    if files:
        return files, [root]
    folders = sorted(d for d in root.glob("*/images") if d.is_dir())
    files = sorted(f for d in folders for f in d.iterdir() if f.is_file() and has_image_suffix(f.name))
    return files, [d for d in folders if any(f.parent == d for f in files)]


def split_archive(path: str | os.PathLike) -> tuple[Path, Path | None] | None:
    """``(Train folder, Test folder or None)`` of an archive that ships its own split, else None. A ``Train/`` that
    holds images itself is a class named "Train" (the folder-per-class layout), not a split."""
    path = Path(path)
    if not path.is_dir():
        return None
    train = next((path / n for n in TRAIN_FOLDERS if (path / n).is_dir()), None)
    if train is None or any(f.is_file() and has_image_suffix(f.name) for f in train.iterdir()):
        return None
    return train, next((path / n for n in TEST_FOLDERS if (path / n).is_dir()), None)


def _names(paths: Sequence[Path], limit: int = 6) -> str:
    shown = [p.name + ("/" if p.is_dir() else "") for p in paths[:limit]]
    return ", ".join(shown) + (f", ... ({len(paths) - limit} more)" if len(paths) > limit else "")


def unrecognised_layout(
    path: str | os.PathLike, key: str = "dataset_dir", extra: Sequence[tuple[str, str]] = ()
) -> str:
    """The one-line error for a ``path`` that matches no layout: what is there, the near misses (an ``image/``
    without metadata, several ``.npz`` ...), and what each accepted layout needs (``extra`` first)."""
    path = Path(path)
    if path.is_file():
        found = f"a file '{path.name}', of a type no layout reads"
        hints = []
    else:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        folders, files = [p for p in entries if p.is_dir()], [p for p in entries if p.is_file()]
        if not entries:
            found = "an empty folder"
        else:
            parts = []
            if folders:
                parts.append(f"{len(folders)} folder(s) without images in them ({_names(folders)})")
            if files:
                parts.append(f"{len(files)} file(s) ({_names(files)})")
            found = " and ".join(parts)
        hints = []
        suffixes = {p.name.lower().rsplit(".", 1)[-1] for p in files}
        if (path / "image").is_dir() or (path / "VOIs" / "image").is_dir():
            hints.append("image/ is there but no metadata table beside it (LIDC needs metadata.csv or a .xlsx)")
        elif any(p.name.lower().startswith("metadata") for p in files):
            hints.append("a metadata table is there but no image/ folder of VOIs (LIDC needs both)")
        if sum(p.suffix.lower() == ".npz" for p in files) > 1:
            hints.append("several .npz files: give the MedMNIST file itself")
        if "csv" in suffixes and not (path / "labels.csv").is_file():
            hints.append("a .csv is read when it is named labels.csv or given as the path itself")
        if "json" in suffixes and not (path / "datalist.json").is_file():
            hints.append("a .json is read when it is named datalist.json or given as the path itself")
        if any(has_image_suffix(p.name) for p in files):
            hints.append("images lie directly in it: put them in one sub-folder per class")
    needs = "; ".join(f"({i}) {name}: {what}" for i, (name, what) in enumerate([*extra, *LAYOUT_NEEDS], start=1))
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"{key} '{path}': no recognised data set. Found {found}{hint}. Accepted layouts: {needs}"


def _key(external: bool) -> str:
    """The config key that names the folder being read, for the error messages."""
    return "test_dir" if external else "dataset_dir"


def _from_medmnist(
    npz: Path,
    path: Path,
    cache_dir: str | os.PathLike | None,
    image_key: str,
    class_names: Sequence[str] | None,
    external: bool,
    key: str | None = None,
) -> tuple[list[dict], list[str], Path, dict | None]:
    """A MedMNIST ``.npz``: ``train`` + ``val`` are the data set and ``test`` is its embedded test set; every split is
    test data when the file is an external test set. Splits or arrays it does not use are named in the log."""
    from common.data.medmnist import npz_splits, prepare_medmnist_npz

    if cache_dir is None:
        key = key or _key(external)
        raise DataError(f"{key} '{path}' is a MedMNIST .npz: set 'cache_dir' for the PNG files made from it")
    held = npz_splits(npz)
    if external:
        splits = held["splits"]
    else:
        splits = [s for s in held["splits"] if s != "test"] if len(held["splits"]) > 1 else held["splits"]
    if not splits:
        raise DataError(
            f"MedMNIST file '{npz}' has no 'train_images' / 'train_labels' (nor any '<split>_images' + "
            f"'<split>_labels' pair; keys: {held['other']})"
        )
    unused = [s for s in held["splits"] if s not in splits and s != "test"]
    if unused or held["other"]:
        logger.warning(f"MedMNIST file '{npz}': not read: split(s) {unused}, array(s) {held['other']}")
    cache = Path(cache_dir) / f"medmnist_{npz.stem}"
    datalist = Path(prepare_medmnist_npz(npz, cache, splits=splits, class_names=class_names))
    items, names = _from_datalist(datalist, image_key)
    embedded = None
    if not external and "test" in held["splits"] and "test" not in splits:
        test_list = prepare_medmnist_npz(npz, Path(f"{cache}_test"), splits=("test",), class_names=names)
        test_items, _ = _from_datalist(Path(test_list), image_key)
        embedded = {"items": test_items, "class_names": names, "source": npz.stem.split("_")[0],
                    "datalist": test_list, "dataset_dir": str(npz), "origin": f"test split of {npz.name}"}  # fmt: skip
    logger.info(
        f"MedMNIST file '{npz.name}': split(s) {splits} ({len(items)} images) are "
        + ("the external test set" if external else "the data set")
        + ("" if embedded is None else f"; its test split ({len(embedded['items'])} images) is held out")
    )
    return items, names, datalist, embedded


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
