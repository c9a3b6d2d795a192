"""LIDC-IDRI nodule VOIs (``../shared/data/lidc_vois``) mapped to 2-D ROI classification tasks.

The folder holds ``metadata.csv`` (one row per nodule with the radiologists' max-voted ratings: ``Texture_value``
1 non-solid/GGO .. 5 solid, ``Calcification_value`` 1-5 a pattern / 6 absent, ``Spiculation_value`` and
``Lobulation_value`` 1-5, ...; ``voi_file``, ``voi_present``), ``image/<patient>_R_<nodule>.nii.gz`` (int16 HU, about
44 x 44 x Z) and ``nodule_mask/`` with the same names. A *mapping* turns one metadata row into a class index;
:func:`prepare_lidc_rois` writes one 2-D ROI per nodule plus a datalist, cached by the mapping and ROI size.

The layout as published (the ML4PM course's ``data/`` folder) is read too (:func:`find_lidc`): the metadata as an
Excel sheet (``MetadatabyNoduleMaxVoting.xlsx``, read with openpyxl when it is installed; otherwise one line says to
install it or save the sheet as CSV) beside a ``VOIs/`` folder holding ``image/`` and ``nodule_mask/``. Without the
``voi_file`` / ``voi_present`` columns (the shared copy's additions), a nodule's file is
``<patient_id>_R_<nodule_id>.nii.gz``, and a row whose file is absent is skipped and counted.

Mappings (:data:`LIDC_MAPPINGS`; add one with :func:`register_lidc_mapping`):

- ``lesion3`` (stand-in for Frid-Adar's 3 liver lesion classes): 0 ``calcified`` (any calcification pattern),
  1 ``subsolid`` (texture not plain solid: GGO, non-solid/mixed, part-solid/mixed or solid/mixed; not calcified),
  2 ``solid`` (the rest).
- ``signs`` (stand-in for He et al.'s lung CT imaging signs): one class per nodule by the priority
  calcification > ground-glass (texture not plain solid) > spiculation >= 4 > lobulation >= 4 > other. Every item
  also carries the multi-hot ``signs`` list ``[calcification, ground_glass, spiculation, lobulation]`` for
  multi-label use.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.data.datalist import read_datalist, write_datalist
from common.data.io import file_stem, has_image_suffix, read_image, write_image
from common.errors import DataError
from common.fs import staging_dir, swap_in

__all__ = [
    "LIDC_MAPPINGS",
    "LidcLayout",
    "LidcMapping",
    "find_lidc",
    "find_voi_folder",
    "nodule_signs",
    "prepare_lidc_rois",
    "prepare_voi_rois",
    "read_lidc_metadata",
    "register_lidc_mapping",
]

#: Bump when the ROI extraction changes, so that cached ROIs are rebuilt.
ROI_VERSION = "1"
CITATION = (
    "Armato III SG et al. (2015) Data From LIDC-IDRI. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX (CC BY 3.0)"
)
SIGN_NAMES = ("calcification", "ground_glass", "spiculation", "lobulation")
#: Ratings >= this count as a present spiculation / lobulation sign (He et al. use marked signs only).
SIGN_THRESHOLD = 4
_CALCIFICATION_ABSENT = 6
_TEXTURE_SOLID = 5


@dataclass(frozen=True)
class LidcMapping:
    """A named rule from one ``metadata.csv`` row to a class index (``None``: leave the nodule out)."""

    name: str
    class_names: tuple[str, ...]
    label: Callable[[Mapping[str, str]], int | None]
    description: str


LIDC_MAPPINGS: dict[str, LidcMapping] = {}


def register_lidc_mapping(mapping: LidcMapping) -> LidcMapping:
    """Add ``mapping`` to :data:`LIDC_MAPPINGS` (a later bundle's own mapping, e.g. a binary sign task)."""
    LIDC_MAPPINGS[mapping.name] = mapping
    return mapping


def _rating(row: Mapping[str, str], column: str) -> int:
    try:
        return int(float(row[column]))
    except (KeyError, TypeError, ValueError) as exc:
        where = f"{row.get('patient_id', '?')} nodule {row.get('nodule_id', '?')}"
        raise DataError(f"LIDC metadata.csv: column '{column}' missing or not a number for {where}") from exc


def nodule_signs(row: Mapping[str, str]) -> list[int]:
    """Multi-hot ``[calcification, ground_glass, spiculation, lobulation]`` of one metadata row."""
    return [
        int(_rating(row, "Calcification_value") != _CALCIFICATION_ABSENT),
        int(_rating(row, "Texture_value") < _TEXTURE_SOLID),
        int(_rating(row, "Spiculation_value") >= SIGN_THRESHOLD),
        int(_rating(row, "Lobulation_value") >= SIGN_THRESHOLD),
    ]


def _lesion3(row: Mapping[str, str]) -> int:
    calcified, subsolid, _, _ = nodule_signs(row)
    return 0 if calcified else 1 if subsolid else 2


def _signs(row: Mapping[str, str]) -> int:
    signs = nodule_signs(row)
    # Priority order = index order: the first present sign names the class; none present -> "other".
    return next((i for i, present in enumerate(signs) if present), len(signs))


register_lidc_mapping(
    LidcMapping(
        "lesion3",
        ("calcified", "subsolid", "solid"),
        _lesion3,
        "0 calcified (Calcification not Absent); 1 subsolid (Texture not plain Solid, not calcified); 2 solid",
    )
)
register_lidc_mapping(
    LidcMapping(
        "signs",
        (*SIGN_NAMES, "other"),
        _signs,
        "first present of calcification > ground_glass (Texture not plain Solid) > spiculation>=4 > lobulation>=4; "
        "else other. Items carry the multi-hot 'signs' list for multi-label use",
    )
)


#: names of the metadata table, searched in this order (then any .csv / .xlsx with "metadata" in its name)
METADATA_NAMES = ("metadata.csv", "metadata.xlsx", "MetadatabyNoduleMaxVoting.xlsx", "MetadatabyNoduleMaxVoting.csv")
#: where the VOI folders (image/, nodule_mask/) may lie, relative to the LIDC folder
VOI_FOLDERS = (".", "VOIs")


@dataclass(frozen=True)
class LidcLayout:
    """Where the parts of a LIDC VOI folder are: the metadata table and the folder holding ``image/``."""

    metadata: Path
    voi_dir: Path


def _metadata_candidates(folder: Path) -> list[Path]:
    named = [folder / n for n in METADATA_NAMES if (folder / n).is_file()]
    if named:
        return named[:1]
    return sorted(
        f
        for f in folder.glob("*")
        if f.is_file() and f.suffix.lower() in (".csv", ".xlsx") and "metadata" in f.name.lower()
    )


def find_lidc(folder: str | os.PathLike) -> LidcLayout | None:
    """The LIDC layout of ``folder``, or None when it is not one: an ``image/`` folder (in ``folder`` or in its
    ``VOIs/``) and a metadata table beside it or in ``folder`` (``metadata.csv``, ``metadata.xlsx``,
    ``MetadatabyNoduleMaxVoting.xlsx``, or the one ``*.csv``/``*.xlsx`` with "metadata" in its name).

    Raises:
        DataError: several candidate metadata tables (named), so that the choice is the user's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for sub in VOI_FOLDERS:
        voi_dir = folder / sub if sub != "." else folder
        if not (voi_dir / "image").is_dir():
            continue
        for where in dict.fromkeys((voi_dir, folder)):
            found = _metadata_candidates(where)
            if len(found) > 1:
                raise DataError(
                    f"LIDC folder '{folder}': several metadata tables {[f.name for f in found]}; keep one, or name it "
                    "metadata.csv"
                )
            if found:
                return LidcLayout(found[0], voi_dir)
    return None


def _cell(value: Any) -> str:
    """An Excel cell as the CSV export writes it: integral numbers without ``.0``, empty for None."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_lidc_metadata(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a LIDC metadata table, ``.csv`` or ``.xlsx`` (its first sheet), as ``{column: text}``.

    Raises:
        DataError: the file cannot be read, has no header row, or is an ``.xlsx`` while openpyxl is not installed
            (one line: install it, or save the sheet as CSV).
    """
    path = Path(path)
    if path.suffix.lower() != ".xlsx":
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                return list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read LIDC metadata '{path}': {exc}") from exc
    try:
        import openpyxl
    except ImportError:
        raise DataError(
            f"LIDC metadata '{path}' is an Excel file: install openpyxl (pip install openpyxl) or save its sheet as "
            f"CSV ({path.with_name('metadata.csv')})"
        ) from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            rows = list(book.worksheets[0].iter_rows(values_only=True))
        finally:
            book.close()
    except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException ...
        raise DataError(f"cannot read LIDC metadata '{path}': {type(exc).__name__}: {exc}") from exc
    header = [_cell(v).strip() for v in rows[0]] if rows else []
    if not any(header):
        raise DataError(f"LIDC metadata '{path}': its first sheet has no header row")
    return [
        {name: _cell(v) for name, v in zip(header, row, strict=False) if name}
        for row in rows[1:]
        if any(v is not None for v in row)
    ]


def _best_slice(mask: np.ndarray | None, depth: int) -> int:
    """The axial slice with the largest nodule area (ties: nearest the centre); the central slice without a mask."""
    centre = (depth - 1) / 2.0
    if mask is None or not mask.any():
        return int(round(centre))
    area = mask.reshape(-1, depth).sum(0)
    best = np.flatnonzero(area == area.max())
    return int(best[np.argmin(np.abs(best - centre))])


def _square_crop(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Square crop of side min(H, W) centred on the nodule, so that resizing keeps the aspect ratio."""
    h, w = image.shape
    side = min(h, w)
    if mask is not None and mask.any():
        cy, cx = (float(c.mean()) for c in np.nonzero(mask))
    else:
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    y0 = int(np.clip(round(cy - side / 2.0), 0, h - side))
    x0 = int(np.clip(round(cx - side / 2.0), 0, w - side))
    return image[y0 : y0 + side, x0 : x0 + side]


def _roi(image_path: Path, mask_path: Path, roi_size: int) -> tuple[np.ndarray, int, int]:
    """(1, roi, roi) integer-HU ROI of one VOI, the chosen slice index and the side of the square crop."""
    from monai.transforms import Resize

    volume = read_image(image_path)[0]
    mask = read_image(mask_path)[0] > 0 if mask_path.is_file() else None
    if mask is not None and mask.shape != volume.shape:
        mask = None  # a mask that does not match cannot place the nodule: fall back to the central slice
    if volume.ndim == 2:  # single-slice VOI stored as 2-D
        volume = volume[..., None]
        mask = None if mask is None else mask[..., None]
    z = _best_slice(mask, volume.shape[-1])
    crop = _square_crop(volume[..., z], None if mask is None else mask[..., z])
    resize = Resize(spatial_size=(roi_size, roi_size), mode="bilinear", anti_aliasing=True)
    roi = np.asarray(resize(crop[None]), dtype=np.float32)
    # Bilinear keeps HU (a weighted mean of neighbours); round back to integers as CT stores them (int16 files).
    return np.round(roi), z, crop.shape[0]


def _spec(lidc_dir: Path, layout: LidcLayout, mapping: LidcMapping, roi_size: int) -> dict[str, Any]:
    spec = {
        "mapping": mapping.name,
        "class_names": list(mapping.class_names),
        "roi_size": int(roi_size),
        "version": ROI_VERSION,
        "lidc_dir": str(lidc_dir),
        "metadata_bytes": layout.metadata.stat().st_size,
    }
    if layout.metadata.name != "metadata.csv" or layout.voi_dir != lidc_dir:  # the shared copy's spec stays as it was
        spec |= {"metadata": str(layout.metadata), "voi_dir": str(layout.voi_dir)}
    return spec


def prepare_lidc_rois(
    lidc_dir: str | os.PathLike, out_dir: str | os.PathLike, mapping: str = "lesion3", roi_size: int = 64
) -> str:
    """Write one 2-D ROI per LIDC nodule under ``out_dir`` plus ``datalist.json``; return the datalist path.

    Per nodule: the axial slice of the VOI with the largest nodule-mask area, a square crop of side min(H, W)
    centred on the nodule, resized bilinearly to ``roi_size`` x ``roi_size``, rounded to integer HU and written as
    a 2-D int16 NIfTI (spacing scaled accordingly). Items carry ``label``, ``patient`` (= ``patient_id``),
    ``nodule_id``, the raw ratings, the multi-hot ``signs`` and the slice index. Rows with ``voi_present`` false,
    without an image file, or that the mapping leaves out are skipped; their counts go into the meta ``skipped``.

    Cached: reused while ``out_dir/datalist.json`` records the same mapping, ROI size, version and source;
    otherwise rebuilt in ``<out_dir>.tmp-<pid>`` and swapped in, so an interrupted run leaves nothing half-written.

    Raises:
        DataError: ``lidc_dir`` is not a LIDC layout (``find_lidc``), the mapping is unknown, a rating is not a
            number, or a VOI is unreadable (naming the file).
    """
    lidc_dir = Path(os.path.abspath(lidc_dir))
    out_dir = Path(os.path.abspath(out_dir))
    if mapping not in LIDC_MAPPINGS:
        raise DataError(f"unknown LIDC mapping '{mapping}' (key 'lidc_mapping'); known: {sorted(LIDC_MAPPINGS)}")
    rule = LIDC_MAPPINGS[mapping]
    layout = find_lidc(lidc_dir)
    if layout is None:
        raise DataError(
            f"LIDC folder '{lidc_dir}' needs image/ (or VOIs/image/) and a metadata table (metadata.csv, or the "
            "published MetadatabyNoduleMaxVoting.xlsx) (key 'dataset_dir')"
        )
    voi_dir = layout.voi_dir
    spec = _spec(lidc_dir, layout, rule, roi_size)
    datalist_path = out_dir / "datalist.json"
    if datalist_path.is_file():
        try:
            if json.loads(datalist_path.read_text(encoding="utf-8")).get("lidc") == spec:
                read_datalist(datalist_path)  # raises if files went missing; then we rebuild below
                return str(datalist_path)
        except (json.JSONDecodeError, OSError, DataError):
            pass

    rows = read_lidc_metadata(layout.metadata)
    tmp = staging_dir(out_dir)
    try:
        jobs, skipped = [], {"voi_absent": 0, "image_missing": 0, "unmapped": 0}
        for row in rows:
            if str(row.get("voi_present", "True")).strip().lower() not in ("true", "1", "yes"):
                skipped["voi_absent"] += 1
                continue
            name = row.get("voi_file") or f"{row['patient_id']}_R_{row['nodule_id']}.nii.gz"
            if not (voi_dir / "image" / name).is_file():
                skipped["image_missing"] += 1
                continue
            label = rule.label(row)
            if label is None:
                skipped["unmapped"] += 1
                continue
            jobs.append((row, name, int(label)))

        def one(job: tuple[Mapping[str, str], str, int]) -> dict[str, Any]:
            row, name, label = job
            rel, z = _write_roi(voi_dir, name, tmp, roi_size)
            return {
                "image": rel,
                "label": label,
                "patient": row["patient_id"],
                "nodule_id": row["nodule_id"],
                "texture": _rating(row, "Texture_value"),
                "calcification": _rating(row, "Calcification_value"),
                "spiculation": _rating(row, "Spiculation_value"),
                "lobulation": _rating(row, "Lobulation_value"),
                "malignancy": _rating(row, "Malignancy_value"),
                "signs": nodule_signs(row),
                "slice": z,
                "source": str(voi_dir / "image" / name),
            }

        # Threads: the work is mostly gzip and file I/O (which release the GIL); order is kept by map().
        with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
            items = list(pool.map(one, jobs))
        counts = {c: sum(item["label"] == i for item in items) for i, c in enumerate(rule.class_names)}
        write_datalist(
            tmp / "datalist.json",
            items,
            name=f"lidc_vois_{mapping}",
            class_names=list(rule.class_names),
            counts=counts,
            skipped=skipped,
            mapping=rule.description,
            sign_names=list(SIGN_NAMES),
            intensity={"unit": "HU", "suggested_window": [-1000, 400]},
            citation=CITATION,
            lidc=spec,
        )
        swap_in(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(datalist_path)


def _write_roi(voi_dir: Path, name: str, out_root: Path, roi_size: int) -> tuple[str, int]:
    """The ROI of ``<voi_dir>/image/<name>`` (placed by ``nodule_mask/<name>`` when there is one) written to
    ``<out_root>/images/<name>``; returns that relative path and the chosen slice."""
    image_path = voi_dir / "image" / name
    roi, z, side = _roi(image_path, voi_dir / "nodule_mask" / name, roi_size)
    rel = f"images/{name}"
    write_image(out_root / rel, roi, spacing=_in_plane_spacing(image_path, side / roi_size))
    return rel, z


def find_voi_folder(folder: str | os.PathLike) -> Path | None:
    """The folder holding ``image/`` (``folder`` itself or its ``VOIs/``) when ``folder`` holds nodule VOIs, with or
    without a metadata table; None otherwise."""
    folder = Path(folder)
    return next((d for d in (folder / s if s != "." else folder for s in VOI_FOLDERS) if (d / "image").is_dir()), None)


def prepare_voi_rois(voi_dir: str | os.PathLike, out_dir: str | os.PathLike, roi_size: int = 64) -> str:
    """Unlabelled VOIs (``<voi_dir>/image/*`` without a metadata table, e.g. new patients' nodules): one ROI per
    VOI, made exactly as :func:`prepare_lidc_rois` makes them, plus ``datalist.json`` without labels; returns its path.

    Items carry ``patient`` (the part of the name before ``_R_``, else the file stem), ``nodule_id`` (after it) and
    ``source`` (the VOI). Rebuilt on every call, in a staging folder swapped in at the end.

    Raises:
        DataError: ``image/`` holds no image files, or a VOI is unreadable (naming the file).
    """
    voi_dir = Path(os.path.abspath(voi_dir))
    out_dir = Path(os.path.abspath(out_dir))
    names = sorted(f.name for f in (voi_dir / "image").iterdir() if f.is_file() and has_image_suffix(f.name))
    if not names:
        raise DataError(f"VOI folder '{voi_dir / 'image'}' holds no image files (key 'dataset_dir')")
    tmp = staging_dir(out_dir)
    try:

        def one(name: str) -> dict[str, Any]:
            rel, z = _write_roi(voi_dir, name, tmp, roi_size)
            stem = file_stem(name)
            patient, _, nodule = stem.partition("_R_")
            return {"image": rel, "patient": patient, "nodule_id": nodule, "slice": z,
                    "source": str(voi_dir / "image" / name)}  # fmt: skip

        with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
            items = list(pool.map(one, names))
        write_datalist(tmp / "datalist.json", items, name="vois", roi_size=int(roi_size), version=ROI_VERSION,
                       voi_dir=str(voi_dir))  # fmt: skip
        swap_in(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out_dir / "datalist.json")


def _in_plane_spacing(image_path: Path, factor: float) -> tuple[float, float]:
    import nibabel as nib

    zooms = nib.load(str(image_path)).header.get_zooms()
    return float(zooms[0]) * factor, float(zooms[1]) * factor
