"""A deployed classifier on new images: read them as training read them, write per-class probabilities, score them.

A bundle's ``configs/classify.json`` and the bundle folder the evaluation exports from it (``configs/inference.json``,
``common.protocol.export``) are MONAI infer configs. MONAI Label reads their ``network_def``, ``preprocessing`` (one
image path -> tensor), ``inferer`` and ``postprocessing``; ``monai.bundle run`` runs ``evaluator`` over ``dataset``.
What sits around that per-image chain lives here, once for every bundle:

- :func:`read_prediction_set`: ``dataset_dir`` in any layout the training reader accepts (a datalist, a CSV, a folder
  per class, LIDC VOIs with their metadata table, a MedMNIST ``.npz``, an archive's ``Test/`` folder, and with
  ``reader="skin"`` an ISIC ground-truth CSV) becomes items ``{image, file, patient, label}``. The data-set-level
  steps of training run here, by the training code (a nodule's ROI: largest-area slice, crop, resize, written to
  ``cache_dir``), and the labels are mapped to the model's classes. Input without labels is accepted too: one image
  file, a datalist without labels, a folder of images (or a Roboflow export's ``<split>/images/``), and VOIs in
  ``image/`` without a metadata table. Every image is read once first, so a bad file stops with its name.
- :class:`PredictionSaver`: an Ignite handler on the evaluator. It writes ``predictions.csv`` (file, patient,
  predicted class and index, one probability column per class, the true label when known). For labelled input it
  also writes ``metrics.json`` (accuracy, balanced accuracy, sensitivity, specificity and AUC, each with a 95 % CI
  by a bootstrap over patients: ``common.metrics.classification.classification_metrics_with_ci``) and logs one line.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from common.data.datalist import read_datalist
from common.data.io import file_stem, has_image_suffix
from common.data.labelled_images import read_data_set, unlabelled_images, validate_images
from common.data.lidc import find_lidc, find_voi_folder, prepare_voi_rois
from common.data.medmnist import find_npz
from common.errors import DataError
from common.fs import atomic_write_text
from common.metrics.classification import FAST_METRICS, classification_metrics_with_ci

__all__ = ["READERS", "PredictionSaver", "map_classes", "read_prediction_set", "recorded_class_names"]

logger = logging.getLogger(__name__)

#: the training readers: ``classification`` (``common.data.labelled_images.read_data_set``); ``skin`` also reads an
#: ISIC ground-truth CSV first, as ``common.data.skin.load_skin_dataset`` does
READERS = ("classification", "skin")
#: the config key that names the input, in messages
_KEY = "dataset_dir"


def recorded_class_names(ckpt_path: str | os.PathLike, default: Sequence[str]) -> list[str]:
    """The class names that the export recorded beside the weights (``classifier.json`` beside ``classifier.pt``:
    ``common.protocol.export.export_best_model``), else ``default``. The names are returned as text, never parsed as
    config, so a class folder named like a config expression stays a name."""
    record = Path(ckpt_path).with_suffix(".json")
    if record.is_file():
        try:
            names = json.loads(record.read_text(encoding="utf-8")).get("class_names")
        except (OSError, ValueError, AttributeError):
            names = None
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return names
    return [str(n) for n in default]


def map_classes(data_names: Sequence[str], model_names: Sequence[str], where: str) -> list[int]:
    """``[model label of data class i]``: by name when every class of the data is one of the model's (a class may be
    absent); for a ``<class>_vs_rest`` model (classes ``rest``, ``<class>``, as ``common.protocol.tasks`` names
    them) ``<class>`` -> 1 and every other class -> 0; integer labels without names (``"0"``, ``"1"`` ...) in the
    model's order.

    Raises:
        DataError: naming ``where``, when the data's classes fit none of these.
    """
    data, model = [str(n) for n in data_names], [str(n) for n in model_names]
    if all(n in model for n in data):
        return [model.index(n) for n in data]
    if len(model) == 2 and model[0] == "rest" and model[1] in data:
        return [int(n == model[1]) for n in data]
    if all(n.isdigit() for n in data) and len(data) <= len(model):
        return [int(n) for n in data]
    raise DataError(
        f"{where}: its classes {data} are not the model's classes {model}; label the images with the model's class "
        "names, or give them without labels (predictions only)"
    )


def _datalist_items(path: Path) -> list[dict] | None:
    """The items of a datalist none of whose ``training`` items has a label; None when it has labels."""
    items = read_datalist(path)["training"]
    if any("label" in it for it in items):
        return None
    return [{"image": it["image"], "patient": str(it.get("patient") or file_stem(it["image"]))} for it in items]


def _has_class_folders(path: Path) -> bool:
    return any(
        d.is_dir() and any(f.is_file() and has_image_suffix(f.name) for f in d.iterdir())
        for d in path.iterdir()
        if not d.name.startswith(".")
    )


def _unlabelled(path: Path, reader: str, cache_dir: str | os.PathLike | None, roi_size: int) -> tuple | None:
    """``(items, source)`` when ``path`` holds images without labels (see the module docstring), else None."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            items = _datalist_items(path)
            return None if items is None else (items, "datalist without labels")
        if has_image_suffix(path.name):
            return [{"image": str(path), "patient": file_stem(str(path))}], "image file"
        return None
    if (path / "datalist.json").is_file():
        items = _datalist_items(path / "datalist.json")
        return None if items is None else (items, "datalist without labels")
    if (path / "labels.csv").is_file() or find_lidc(path) is not None or find_npz(path) is not None:
        return None
    if reader == "skin":
        from common.data.skin import find_isic_csv

        if find_isic_csv(path) is not None:
            return None
    voi_dir = find_voi_folder(path)
    if voi_dir is not None:  # VOIs without a metadata table: the ROIs as training makes them, without labels
        if cache_dir is None:
            raise DataError(f"{_KEY} '{path}' is nodule VOIs: set 'cache_dir' for the 2-D ROIs made from them")
        datalist = prepare_voi_rois(voi_dir, Path(cache_dir) / f"vois_{roi_size}", roi_size=roi_size)
        items = read_datalist(datalist)["training"]
        return [{"image": it["image"], "patient": it["patient"], "file": it["source"]} for it in items], "VOIs"
    if _has_class_folders(path):
        return None
    files, _ = unlabelled_images(path)
    return ([{"image": str(f), "patient": file_stem(str(f))} for f in files], "folder of images") if files else None


def _read_labelled(path: Path, reader: str, **settings) -> dict[str, Any]:
    extra: tuple = ()
    if reader == "skin":
        from common.data.skin import ISIC_LAYOUT, find_isic_csv, read_isic_ground_truth

        isic = find_isic_csv(path)
        if isic is not None:
            return read_isic_ground_truth(isic)
        extra = (ISIC_LAYOUT,)
    # read as an external test set: every split it ships is input, a class may be absent
    return read_data_set(path, external=True, key=_KEY, extra_layouts=extra, **settings)


def read_prediction_set(
    dataset_dir: str | os.PathLike,
    class_names: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    reader: str = "classification",
    lidc_mapping: str | None = None,
    lidc_roi_size: int = 64,
    image_shape: Sequence[int] | None = None,
    channels: str | None = None,
    spatial_dims: int | None = None,
) -> dict[str, Any]:
    """The images at ``dataset_dir`` as items for the classifier with ``class_names`` (see the module docstring).

    Args:
        dataset_dir: a folder, a datalist ``.json``, a ``.csv``, a ``.npz`` or one image file.
        class_names: the model's classes, in output order.
        cache_dir: where derived images go (LIDC ROIs, MedMNIST PNGs); a layout that needs it says so without it.
        reader: one of :data:`READERS`.
        lidc_mapping, lidc_roi_size: as training reads LIDC VOIs (``common.data.lidc``): the mapping that labels a
            nodule and the ROI side (the network's input size).
        image_shape, channels, spatial_dims: checked on every image up front, as training checks its images
            (``common.data.labelled_images.validate_images``): a corrupt file, a wrong size or channel count stops
            here with the file's name.

    Returns:
        ``{"items": [{"image", "file", "patient"[, "label"]}], "class_names", "labelled", "source", "dataset_dir",
        "label_map"}``: ``file`` is what the CSV names (the VOI for a LIDC ROI), ``label`` the model's class index,
        ``label_map`` ``{data class: model class}`` when the data's classes are not the model's (else None).

    Raises:
        DataError: one line naming the folder, file or key: a missing path, a layout no reader accepts, labels the
            model cannot take, no images, a bad image.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    path = Path(os.path.abspath(os.path.expanduser(str(dataset_dir))))
    names = [str(c) for c in class_names]
    if not path.exists():
        raise DataError(f"{_KEY} '{path}' does not exist (key '{_KEY}')")
    label_map = None
    found = _unlabelled(path, reader, cache_dir, lidc_roi_size)
    if found is not None:
        items, source = found
        items = [{"image": it["image"], "file": it.get("file", it["image"]), "patient": it["patient"]} for it in items]
    else:
        dataset = _read_labelled(path, reader, cache_dir=cache_dir, lidc_mapping=lidc_mapping,
                                 lidc_roi_size=lidc_roi_size)  # fmt: skip
        source, data_names = dataset["source"], dataset["class_names"]
        mapping = map_classes(data_names, names, f"{_KEY} '{path}'")
        if [names[m] for m in mapping] != list(data_names):
            label_map = {str(d): names[m] for d, m in zip(data_names, mapping, strict=True)}
        items = [
            {
                "image": it["image"],
                "file": it.get("source", it["image"]) if source == "lidc_vois" else it["image"],
                "patient": str(it.get("patient") or file_stem(it["image"])),
                "label": mapping[int(it["label"])],
            }
            for it in dataset["items"]
        ]
    if not items:
        raise DataError(f"{_KEY} '{path}': no images")
    if image_shape is not None or channels is not None or spatial_dims is not None:
        validate_images(items, expected_shape=image_shape, channels=channels, spatial_dims=spatial_dims)
    labelled = "label" in items[0]
    logger.info(
        f"{_KEY} '{path}': {len(items)} image(s), {source}, "
        + ("labelled" if labelled else "without labels")
        + ("" if label_map is None else f" (labels as the model's classes: {label_map})")
    )
    return {"items": items, "class_names": names, "labelled": labelled, "source": source, "dataset_dir": str(path),
            "label_map": label_map}  # fmt: skip


def _as_list(value, n: int) -> list:
    if value is None:
        return [None] * n
    if torch.is_tensor(value):
        return value.reshape(-1).tolist()
    return list(value)


class PredictionSaver:
    """Write ``predictions.csv`` (and ``metrics.json`` for labelled input) of an evaluator's run; see the module
    docstring. Attach it as MONAI's handlers are attached (``val_handlers`` of ``SupervisedEvaluator``).

    The probabilities are the softmax of the network's output, taken when the forward pass completes
    (``IterationEvents.FORWARD_COMPLETED``), before ``postprocessing``: that chain belongs to the apps that load the
    bundle (MONAI Label may discretise or restore there), and the CSV must report the network's probabilities
    whatever it does.

    Args:
        output_dir: where the files go (created).
        class_names: the model's classes, in output order; the probability columns are ``prob_<class>``.
        dataset: :func:`read_prediction_set`'s result (its ``dataset_dir``, ``source`` and ``label_map`` go into
            ``metrics.json`` and the log).
        n_resamples, seed: of the patient bootstrap.
        filename, metrics_filename: the two files' names.
        file_key, patient_key, label_key: batch keys of the file name, the patient id and the true label.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        *,
        dataset: Mapping[str, Any] | None = None,
        n_resamples: int = 1000,
        seed: int = 0,
        filename: str = "predictions.csv",
        metrics_filename: str = "metrics.json",
        file_key: str = "file",
        patient_key: str = "patient",
        label_key: str = "label",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.dataset = dict(dataset or {})
        self.n_resamples, self.seed = int(n_resamples), int(seed)
        self.filename, self.metrics_filename = filename, metrics_filename
        self.file_key, self.patient_key, self.label_key = file_key, patient_key, label_key
        self._reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._reset())
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self.write())

    def _reset(self) -> None:
        self.files: list[str] = []
        self.patients: list[str] = []
        self.labels: list[int | None] = []
        self.probs: list[np.ndarray] = []

    def _collect(self, engine: Engine) -> None:
        batch, logits = engine.state.batch, engine.state.output["pred"]
        if logits.ndim != 2 or logits.shape[1] != len(self.class_names):
            raise DataError(
                f"the network gives outputs of shape {tuple(logits.shape)}, expected (batch, {len(self.class_names)})"
                f" for the classes {self.class_names} (key 'class_names')"
            )
        probs = torch.softmax(logits.detach().float(), dim=1).cpu().numpy()
        n = len(probs)
        files = [str(f) for f in _as_list(batch[self.file_key], n)]
        patients = _as_list(batch.get(self.patient_key), n)
        self.files += files
        self.patients += [str(p) if p is not None else file_stem(f) for p, f in zip(patients, files, strict=True)]
        self.labels += [None if v is None else int(v) for v in _as_list(batch.get(self.label_key), n)]
        self.probs.append(probs)

    def rows(self) -> tuple[list[str], list[list]]:
        """The CSV's header and rows of what was collected."""
        probs = np.concatenate(self.probs) if self.probs else np.zeros((0, len(self.class_names)))
        labelled = bool(self.labels) and all(v is not None for v in self.labels)
        header = ["file", "patient", "prediction", "prediction_index", *(f"prob_{c}" for c in self.class_names)]
        header += ["label", "label_index"] if labelled else []
        rows = []
        for i, (file, patient) in enumerate(zip(self.files, self.patients, strict=True)):
            k = int(probs[i].argmax())
            row = [file, patient, self.class_names[k], k, *(float(p) for p in probs[i])]
            rows.append(row + ([self.class_names[self.labels[i]], self.labels[i]] if labelled else []))
        return header, rows

    def write(self) -> dict | None:
        """Write the files; returns the metrics (None without labels)."""
        header, rows = self.rows()
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output_dir / self.filename, text.getvalue())
        metrics_file = self.output_dir / self.metrics_filename
        where = self.dataset.get("dataset_dir", "the input")
        if "label" not in header:
            stale = metrics_file.is_file()
            metrics_file.unlink(missing_ok=True)
            logger.info(
                f"{len(rows)} prediction(s) -> {self.output_dir / self.filename}; '{where}' has no labels: no metrics"
                + (f" (removed the older {metrics_file.name})" if stale else "")
            )
            return None
        probs = np.concatenate(self.probs).astype(np.float64)
        labels = np.asarray(self.labels, dtype=np.int64)
        result = classification_metrics_with_ci(
            probs, labels, self.patients, self.class_names, n_resamples=self.n_resamples, seed=self.seed
        )
        result = {"dataset_dir": self.dataset.get("dataset_dir"), "source": self.dataset.get("source"),
                  "class_names": self.class_names, "label_map": self.dataset.get("label_map"), **result}  # fmt: skip
        atomic_write_text(metrics_file, json.dumps(result, indent=1) + "\n")
        shown = ", ".join(f"{m} {_interval(result['metrics'][m])}" for m in FAST_METRICS)
        logger.info(
            f"{len(rows)} prediction(s) -> {self.output_dir / self.filename}; on {result['n_images']} images of "
            f"{result['n_patients']} patients: {shown} (95 % CI, bootstrap over patients) -> {metrics_file}"
        )
        return result


def _interval(entry: Mapping[str, Any]) -> str:
    value, (lo, hi) = entry["value"], entry["ci95"]
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")
