"""Brain tumour MRI cases: readers for real layouts, one preparation step, and slice datalists.

Three source layouts become one list of *cases* ``{"case_id", "patient", "image": [one file per sequence] or one
4-D file, "label", "brain"?, "anatomy"?}``:

- a datalist JSON (``datalist.json`` in ``dataset_dir``, as the phantom writes it and as our synthetic sets are);
- BraTS-style case folders: any folder holding a tumour label map (``*seg*``, ``*OTMultiClass*``, ``*label*``)
  and sequence files named after their sequence (``flair``, ``t1ce``/``t1c``/``t1gd``, ``t1``, ``t2``), plus an
  optional brain mask (``*brainmask*``) and anatomy map (``*anatomy*``). ``../shared/data/brats2015`` reads as is;
- the Medical Segmentation Decathlon Task01 layout (``dataset.json`` + 4-D ``imagesTr``/``labelsTr``).

Labels are brought to the BraTS convention: 1 necrosis / non-enhancing core (BRATS 2013-15's label 3,
non-enhancing tumour, joins it, as in BraTS 2017+), 2 oedema, 4 enhancing tumour.

``prepare_cases`` crops every case to its brain, resamples it to a fixed grid, scales each sequence to [-1, 1]
inside the brain (-1 outside, i.e. skull-stripped) and writes it as ``image.nii`` (C, H, W, D) + ``label.nii`` +
``brain.nii`` (+ ``anatomy.nii``) with a datalist. Everything downstream (pix2pix, synthetic cases, segmentation)
reads prepared cases; axial slices are items ``{..., "z": k}`` cut by ``SelectSliced``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.data.datalist import read_datalist, write_datalist
from common.data.io import read_image, write_image
from common.data.phantoms.brain import BRAIN_PATH_KEYS, BrainTumourPhantom
from common.errors import DataError
from common.fs import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "BRAIN_PATH_KEYS",
    "SEQUENCE_ORDER",
    "find_brain_cases",
    "load_brain_dataset",
    "prepare_cases",
    "read_prepared",
    "slice_items",
]

#: canonical sequence names, in the order channels are stacked
SEQUENCE_ORDER = ("t1", "t1ce", "t2", "flair")
_SEQUENCE_PATTERNS = {
    "flair": re.compile(r"flair", re.I),
    "t1ce": re.compile(r"t1[-_]?(ce|c|gd|post)(?![a-z])|t1c[_.]", re.I),
    "t1": re.compile(r"t1(?![-_]?(ce|c|gd|post))(?![0-9])", re.I),
    "t2": re.compile(r"t2(?![0-9])", re.I),
}
_LABEL_PATTERN = re.compile(r"seg|otmulticlass|label", re.I)
_BRAIN_PATTERN = re.compile(r"brain[-_]?mask", re.I)
_ANATOMY_PATTERN = re.compile(r"anatomy", re.I)
#: Decathlon Task01 channel names -> ours, and its labels (1 oedema, 2 non-enhancing, 3 enhancing) -> BraTS
_DECATHLON_SEQUENCES = {"flair": "flair", "t1w": "t1", "t1gd": "t1ce", "t2w": "t2"}
DECATHLON_TO_BRATS = {0: 0, 1: 2, 2: 1, 3: 4}
BRATS2013_TO_BRATS = {0: 0, 1: 1, 2: 2, 3: 1, 4: 4}
PREPARED_NAME = "prepared.json"


def _is_nifti(name: str) -> bool:
    return name.lower().endswith((".nii", ".nii.gz"))


def _sequence_of(name: str) -> str | None:
    if _LABEL_PATTERN.search(name) or _BRAIN_PATTERN.search(name) or _ANATOMY_PATTERN.search(name):
        return None
    stem = name.lower().split(".nii")[0]
    for seq in ("flair", "t1ce", "t2", "t1"):  # t1ce before t1: "t1ce" also contains "t1"
        if _SEQUENCE_PATTERNS[seq].search(stem):
            return seq
    return None


def _scan_case_folders(root: Path) -> list[dict]:
    cases = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file() and _is_nifti(p.name)}):
        files = sorted(p for p in folder.iterdir() if p.is_file() and _is_nifti(p.name))
        labels = [p for p in files if _LABEL_PATTERN.search(p.name)]
        if not labels:
            continue
        if len(labels) > 1:
            raise DataError(f"case folder '{folder}' has several label maps: {[p.name for p in labels]}")
        case = {"case_id": folder.name, "patient": folder.name, "label": str(labels[0]), "sequences": {}}
        for p in files:
            seq = _sequence_of(p.name)
            if seq is not None:
                if seq in case["sequences"]:
                    raise DataError(f"case folder '{folder}' has two '{seq}' files: {case['sequences'][seq]}, {p}")
                case["sequences"][seq] = str(p)
            elif _BRAIN_PATTERN.search(p.name):
                case["brain"] = str(p)
            elif _ANATOMY_PATTERN.search(p.name):
                case["anatomy"] = str(p)
        cases.append(case)
    return cases


def _decathlon_cases(root: Path) -> tuple[list[dict], list[str]]:
    meta = json.loads((root / "dataset.json").read_text())
    modality = meta.get("modality") or {}
    sequences = []
    for index in sorted(modality, key=int):
        name = _DECATHLON_SEQUENCES.get(str(modality[index]).lower())
        if name is None:
            raise DataError(f"'{root / 'dataset.json'}': unknown modality {modality[index]!r} (channel {index})")
        sequences.append(name)
    cases = []
    for entry in meta.get("training", []):
        image, label = (str((root / entry[k]).resolve()) for k in ("image", "label"))
        for path in (image, label):
            if not os.path.exists(path):
                raise DataError(f"'{root / 'dataset.json'}' names '{path}', which does not exist")
        cid = Path(image).name.split(".nii")[0]
        cases.append({"case_id": cid, "patient": cid, "image": image, "label": label, "label_map": "decathlon"})
    return cases, sequences


def find_brain_cases(dataset_dir: str | os.PathLike, sequences: Sequence[str] | None = None) -> dict:
    """Find the cases under ``dataset_dir`` (datalist, Decathlon Task01 or BraTS-style folders; see module doc).

    ``sequences``: the sequences to use, in this order; by default every sequence that all cases have (in
    ``SEQUENCE_ORDER``). Returns ``{"items": [...], "sequences": [...], "source": str, "dataset_dir": str}``.

    Raises:
        DataError: the folder is missing or holds no case; a case lacks a requested sequence (named); a case folder
            is ambiguous (two label maps or two files of one sequence).
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"dataset_dir '{root}' not found (set --dataset_dir to a folder of brain MRI cases)")
    if (root / "datalist.json").is_file():
        content = read_datalist(root / "datalist.json", path_keys=BRAIN_PATH_KEYS)
        found = list(content.get("sequences") or [])
        items = [dict(it) for it in content["training"]]
        for i, it in enumerate(items):
            if not isinstance(it.get("image"), list) or len(it["image"]) != len(found):
                raise DataError(
                    f"'{root / 'datalist.json'}': training[{i}] must list one image per sequence {found}, "
                    f"got {it.get('image')!r}"
                )
            if "label" not in it:
                raise DataError(f"'{root / 'datalist.json'}': training[{i}] has no 'label' (tumour label map)")
            it.setdefault("case_id", Path(it["label"]).parent.name)
            it.setdefault("patient", it["case_id"])
        source = content.get("name", "datalist")
        if sequences:
            missing = [s for s in sequences if s not in found]
            if missing:
                raise DataError(f"'{root / 'datalist.json'}' has no sequence(s) {missing} (it has {found})")
            index = [found.index(s) for s in sequences]
            for it in items:
                it["image"] = [it["image"][j] for j in index]
            found = list(sequences)
        return {"items": items, "sequences": found, "source": source, "dataset_dir": str(root)}
    if (root / "dataset.json").is_file():
        items, found = _decathlon_cases(root)
        if not items:
            raise DataError(f"'{root / 'dataset.json'}' lists no training cases")
        if sequences and list(sequences) != found:
            raise DataError(
                f"Decathlon set '{root}' has sequences {found} as one 4-D file each; a subset is not supported"
            )
        return {"items": items, "sequences": found, "source": "decathlon_task01", "dataset_dir": str(root)}

    cases = _scan_case_folders(root)
    if not cases:
        raise DataError(
            f"no brain MRI cases under '{root}': expected a datalist.json, a Decathlon dataset.json, or case folders "
            "holding a label map (*seg*/*OTMultiClass*/*label*) and sequence files (*flair*, *t1*, *t1ce*, *t2*)"
        )
    common = [s for s in SEQUENCE_ORDER if all(s in c["sequences"] for c in cases)]
    wanted = list(sequences) if sequences else common
    if not wanted:
        raise DataError(f"the cases under '{root}' share no MRI sequence (each needs e.g. a *flair* file)")
    items = []
    for case in cases:
        missing = [s for s in wanted if s not in case["sequences"]]
        if missing:
            raise DataError(f"case '{case['case_id']}' ({Path(case['label']).parent}) has no {missing} sequence file")
        item = {k: v for k, v in case.items() if k != "sequences"}
        item["image"] = [case["sequences"][s] for s in wanted]
        item["label_map"] = "brats2013"  # label 3 (non-enhancing) joins the core; other BraTS versions lack it
        items.append(item)
    return {"items": items, "sequences": wanted, "source": "brats_folders", "dataset_dir": str(root)}


# -- preparation --------------------------------------------------------------------------------------------------


def _fingerprint(items: Sequence[dict], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for it in items:
        for key in BRAIN_PATH_KEYS:
            value = it.get(key)
            for path in value if isinstance(value, list) else [value] if value else []:
                st = os.stat(path)
                h.update(f"{key}:{os.path.abspath(path)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _normalise(image: np.ndarray, brain: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Each channel to [-1, 1] from its brain-only percentiles; -1 outside the brain (skull-stripped)."""
    out = np.full(image.shape, -1.0, dtype=np.float32)
    for c in range(image.shape[0]):
        values = image[c][brain]
        lo, hi = np.percentile(values, [lower, upper]) if values.size else (0.0, 1.0)
        scaled = np.clip((image[c] - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 2.0 - 1.0
        out[c][brain] = scaled[brain]
    return out


def _resize(array: np.ndarray, shape: Sequence[int], mode: str) -> np.ndarray:
    t = torch.as_tensor(array, dtype=torch.float32)[None]
    if mode == "nearest":
        out = torch.nn.functional.interpolate(t, size=tuple(shape), mode="nearest-exact")
    else:
        out = torch.nn.functional.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)
    return out[0].numpy()


#: How far a label map's value may lie from an integer and still be read as that class (float-stored maps).
LABEL_TOLERANCE = 1e-3


def _read_volume(path: str, case_id: str) -> np.ndarray:
    array = read_image(path)
    if array.ndim != 4:  # (C, H, W, D); a 2-D file reads as (C, H, W)
        raise DataError(
            f"case '{case_id}': '{path}' is {array.ndim - 1}-D with shape {tuple(array.shape[1:])}: expected a 3-D "
            "volume (H, W, D) like the other sequences"
        )
    return array


def _class_map(array: np.ndarray, path: str, key: str, case_id: str) -> np.ndarray:
    """A label/mask/anatomy map as int16; float-stored maps are accepted when every value is an integer (within
    ``LABEL_TOLERANCE``), refused otherwise: rounding 1.5 would silently make it another class."""
    rounded = np.rint(array)
    off = np.abs(array - rounded) > LABEL_TOLERANCE
    if off.any():
        where = tuple(int(i) for i in np.argwhere(off)[0][1:])
        raise DataError(
            f"case '{case_id}': {key} map '{path}' holds non-integer values ({int(off.sum())} voxels, e.g. "
            f"{float(array[off][0]):g} at {where}): it must hold class indices, and is refused rather than rounded"
        )
    return rounded.astype(np.int16)


def _load_case(item: dict, sequences: Sequence[str]) -> dict[str, np.ndarray]:
    files = item["image"] if isinstance(item["image"], list) else [item["image"]]
    channels = [_read_volume(f, item["case_id"]) for f in files]
    for f, ch in zip(files, channels, strict=True):  # before concatenating: numpy's error would name no file
        if ch.shape[1:] != channels[0].shape[1:]:
            raise DataError(
                f"case '{item['case_id']}': '{f}' has shape {ch.shape[1:]}, '{files[0]}' {channels[0].shape[1:]}"
            )
    image = np.concatenate(channels, 0)
    if image.shape[0] != len(sequences):
        raise DataError(
            f"case '{item['case_id']}': {image.shape[0]} image channel(s) for sequences {list(sequences)} ({files})"
        )
    out = {"image": image}
    for key in ("label", "brain", "anatomy"):
        if not item.get(key):
            continue
        array = read_image(item[key])
        if array.shape[1:] != image.shape[1:]:
            raise DataError(
                f"case '{item['case_id']}': {key} map '{item[key]}' has shape {array.shape[1:]} but the image has "
                f"{image.shape[1:]} (mismatched image/label shapes)"
            )
        out[key] = _class_map(array[:1], item[key], key, item["case_id"])
    values = set(np.unique(out["label"]).tolist())
    mapping = {"decathlon": DECATHLON_TO_BRATS, "brats2013": BRATS2013_TO_BRATS}.get(item.get("label_map", ""), None)
    allowed = set(mapping) if mapping else {0, 1, 2, 4}
    if not values <= allowed:
        raise DataError(
            f"case '{item['case_id']}': label map '{item['label']}' has values {sorted(values - allowed)} outside "
            f"{sorted(allowed)}"
        )
    if mapping:
        lut = np.zeros(max(mapping) + 1, np.int16)
        for k, v in mapping.items():
            lut[k] = v
        out["label"] = lut[out["label"]]
    if "brain" not in out:  # no mask given: the brain is where any sequence differs from the background value
        background = image[:, 0, 0, 0][:, None, None, None]
        out["brain"] = (np.abs(image - background) > 1e-6).any(0, keepdims=True).astype(np.int16)
    out["brain"] = ((out["brain"] > 0) | (out["label"] > 0)).astype(np.int16)
    if not out["brain"].any():
        raise DataError(f"case '{item['case_id']}': empty brain mask ({item.get('brain') or 'derived from image'})")
    return out


def _prepare_one(item: dict, sequences, image_size: int, n_slices: int, margin: int) -> dict[str, np.ndarray]:
    case = _load_case(item, sequences)
    brain = case["brain"][0] > 0
    lo = [max(int(np.min(ix)) - margin, 0) for ix in np.nonzero(brain)]
    hi = [min(int(np.max(ix)) + margin + 1, n) for ix, n in zip(np.nonzero(brain), brain.shape, strict=True)]
    # a square in-plane box, so that resampling keeps the brain's aspect ratio
    side = max(hi[0] - lo[0], hi[1] - lo[1])
    box = []
    for a in range(2):
        centre = (lo[a] + hi[a]) // 2
        start = centre - side // 2
        box.append((start, start + side))
    box.append((lo[2], hi[2]))
    shape = (image_size, image_size, n_slices)
    out = {}
    for key, array in case.items():
        pad_value = array.min() if key == "image" else 0
        padded = array
        cut = []
        for a, (s, e) in enumerate(box):
            before, after = max(0, -s), max(0, e - array.shape[a + 1])
            if before or after:
                pad = [(0, 0)] * 4
                pad[a + 1] = (before, after)
                padded = np.pad(padded, pad, constant_values=pad_value)
            cut.append(slice(s + before, e + before))
        crop = padded[(slice(None), *cut)]
        out[key] = _resize(crop, shape, "trilinear" if key == "image" else "nearest")
    brain = out["brain"][0] > 0.5
    out["image"] = _normalise(out["image"], brain)
    for key in ("label", "brain", "anatomy"):
        if key in out:
            out[key] = np.rint(out[key]).astype(np.int16)
    return out


def prepare_cases(
    dataset: dict,
    out_dir: str | os.PathLike,
    *,
    image_size: int = 64,
    n_slices: int = 48,
    margin: int = 2,
    min_brain_fraction: float = 0.05,
) -> dict:
    """Crop, resample and normalise every case of ``dataset`` (from ``find_brain_cases``) into ``out_dir``.

    Reuses an earlier preparation when its inputs and settings are unchanged (a fingerprint in ``prepared.json``).
    Returns the prepared dataset: ``{"items": [{"case_id", "patient", "image", "label", "brain", "anatomy"?,
    "slices": [z with brain]}], "sequences", "source", "dataset_dir"}``.
    """
    out = Path(out_dir)
    items = list(dataset["items"])
    settings = {
        "image_size": image_size,
        "n_slices": n_slices,
        "margin": margin,
        "min_brain_fraction": min_brain_fraction,
        "sequences": list(dataset["sequences"]),
        "version": 1,
    }
    fp = _fingerprint(items, settings)
    marker = out / PREPARED_NAME
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("fingerprint") == fp:
                return read_prepared(out)
        except (OSError, json.JSONDecodeError, DataError):
            pass
    prepared = []
    for item in items:
        case = _prepare_one(item, dataset["sequences"], image_size, n_slices, margin)
        folder = out / item["case_id"]
        entry = {k: item[k] for k in ("case_id", "patient")}
        for key, array in case.items():
            entry[key] = write_image(folder / f"{key}.nii", array)
        area = case["brain"][0].reshape(-1, n_slices).mean(0)
        entry["slices"] = [int(z) for z in np.nonzero(area >= min_brain_fraction)[0]]
        prepared.append(entry)
        logger.info(f"prepared case {item['case_id']}: {len(entry['slices'])} axial slices with brain")
    write_datalist(
        out / "datalist.json",
        prepared,
        path_keys=BRAIN_PATH_KEYS,
        name=f"prepared:{dataset.get('source', '?')}",
        sequences=list(dataset["sequences"]),
        source=dataset.get("source"),
        source_dir=dataset.get("dataset_dir"),
        settings=settings,
    )
    atomic_write_text(marker, json.dumps({"fingerprint": fp, "settings": settings}, indent=1) + "\n")
    return read_prepared(out)


def read_prepared(folder: str | os.PathLike) -> dict:
    """Read a prepared (or synthetic) case set written by ``prepare_cases`` / the synthetic-case writer."""
    content = read_datalist(Path(folder) / "datalist.json", path_keys=BRAIN_PATH_KEYS)
    return {
        "items": content["training"],
        "sequences": content.get("sequences", []),
        "source": content.get("source") or content.get("name", "?"),
        "dataset_dir": content.get("source_dir", str(folder)),
    }


def slice_items(cases: Sequence[dict], keys: Sequence[str] = ("image", "label", "brain", "anatomy")) -> list[dict]:
    """One item per axial slice with brain: ``{"image": case file, ..., "z": k, "case_id", "patient"}``."""
    out = []
    for case in cases:
        for z in case["slices"]:
            item = {k: case[k] for k in keys if case.get(k)}
            item.update({"z": int(z), "case_id": case["case_id"], "patient": case["patient"]})
            out.append(item)
    return out


def load_brain_dataset(
    dataset_dir: str | None,
    *,
    phantom: BrainTumourPhantom | None,
    phantom_dir: str,
    prepared_dir: str,
    sequences: Sequence[str] | None = None,
    image_size: int = 64,
    n_slices: int = 48,
    test_dir: str | os.PathLike | None = None,
) -> dict:
    """The one entry point of the bundle configs: the phantom (written on first use) when ``dataset_dir`` is the
    phantom folder or empty, else real data; then ``prepare_cases`` into ``prepared_dir``.

    ``test_dir``: an external test set of cases in any layout ``find_brain_cases`` reads, with the data set's
    sequences, prepared alike into ``<prepared_dir>_external``; the result's ``external_test`` (None without it)
    holds its prepared ``items``, ``source``, ``dataset_dir``, ``origin`` and ``shared_patients`` (case ids also in
    the data set: a warning).

    Raises:
        DataError: as ``find_brain_cases``; ``test_dir`` is ``dataset_dir`` or lacks one of the sequences.
    """
    if phantom is not None and (not dataset_dir or os.path.abspath(dataset_dir) == os.path.abspath(phantom_dir)):
        phantom.ensure(phantom_dir)
        dataset_dir = phantom_dir
    found = find_brain_cases(dataset_dir, sequences)
    dataset = prepare_cases(found, prepared_dir, image_size=image_size, n_slices=n_slices)
    dataset["external_test"] = None
    if test_dir is not None:
        if os.path.abspath(test_dir) == os.path.abspath(dataset_dir):
            raise DataError(f"test_dir '{test_dir}' is dataset_dir: an external test set must be other data")
        ext = find_brain_cases(test_dir, found["sequences"])
        out = Path(prepared_dir)
        ext = prepare_cases(ext, out.with_name(out.name + "_external"), image_size=image_size, n_slices=n_slices)
        shared = sorted({it["patient"] for it in ext["items"]} & {it["patient"] for it in dataset["items"]})
        if shared:
            logger.warning(
                f"external test set '{test_dir}': {len(shared)} case id(s) also name cases of dataset_dir (e.g. "
                f"'{shared[0]}'); if they are the same patients, the external scores are optimistic"
            )
        dataset["external_test"] = {**ext, "origin": "test_dir", "shared_patients": len(shared)}
    return dataset
