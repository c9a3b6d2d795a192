"""The external test set: every downstream model a protocol trains is also scored on data from elsewhere.

Cross-validation tests each model on patients of the same data set; an external test set (``test_dir``, or the test
split a data set ships: ``common.data.labelled_images.choose_external_test``) says how the models carry over to
other data. No model is trained for it: each fold x arm's *selected* model (``best_model.pt``, chosen on that fold's
validation patients) is scored once on all external images, so an arm has one external score per fold.

The report's ``external`` section holds, per arm,

- ``metrics``: mean, std and 95 % CI (Student t) over the folds' models, as the cross-validated arms table
  (``summarize_arms``): the spread of the training procedure;
- ``bootstrap``: the fold-averaged value (the mean of the folds' scores) with a percentile bootstrap 95 % CI over
  external *patients* (all images of a resampled patient go together): the uncertainty of the external set itself,
  which the fold spread does not see.

Scores are cached beside each model (``<arm>/external/external.json``, with the per-image probabilities that the
bootstrap needs), keyed by the model file's hash and the external items, so a resumed run scores nothing twice and a
retrained model is scored again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from torch import nn

from common.engines.classifier_training import predict_probs
from common.engines.segmentation_training import evaluate_segmenter
from common.metrics.classification import classification_metrics, fast_metric
from common.metrics.stats import bootstrap_over_patients
from common.protocol.cache import claim
from common.protocol.report import SUMMARY_METRICS, compare_arms, summarize_arms

__all__ = [
    "BOOTSTRAP_METRICS",
    "bootstrap_over_patients",
    "classification_section",
    "fast_metric",
    "file_sha256",
    "score_classifier",
    "score_segmenter",
    "section",
    "segmentation_section",
]

#: ``fast_metric`` and ``bootstrap_over_patients`` live in ``common.metrics`` (a deployed classifier's metrics.json
#: uses them too) and are named here as before
EXTERNAL_FILE = "external.json"
#: the classification metrics that get a bootstrap CI over external patients
BOOTSTRAP_METRICS = ("accuracy", "balanced_accuracy", "auc")
#: the segmentation metrics (per case, then averaged) that get one
DICE_METRICS = ("dice_wt", "dice_tc", "dice_et", "dice_mean")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _score_selected_model(
    arm_dir: Path, network: Callable[[], nn.Module], settings: dict, device, score: Callable[[nn.Module], dict]
) -> dict:
    """Load ``<arm_dir>/best_model.pt`` into ``network()``, ``score`` it, cache the result in
    ``<arm_dir>/external/external.json`` keyed by the model file's hash and ``settings``; a cached result is reused."""
    model_file = arm_dir / "best_model.pt"
    out = arm_dir / "external"
    claim(out, {"model": file_sha256(model_file), **settings}, f"external scores of {arm_dir}")
    if (out / EXTERNAL_FILE).is_file():
        return json.loads((out / EXTERNAL_FILE).read_text())
    net = network()
    net.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
    net = net.to(device).eval()
    with torch.no_grad():
        result = score(net)
    _write_json(out / EXTERNAL_FILE, result)
    return result


def score_classifier(
    arm_dir: str | os.PathLike,
    network: Callable[[], nn.Module],
    items: Sequence[dict],
    transforms: Compose,
    class_names: Sequence[str],
    device: str | torch.device = "cpu",
) -> dict:
    """Score the model an arm selected (``<arm_dir>/best_model.pt``, loaded into ``network()``) on ``items``.

    Returns ``{"metrics": classification_metrics, "probs": (N, K) list, "labels": (N,) list}``, cached in
    ``<arm_dir>/external/external.json`` (reused while the model file and the items are the same).
    """

    def score(net: nn.Module) -> dict:
        probs, labels = predict_probs(net, items, transforms, device=device)
        metrics = classification_metrics(probs, labels, list(class_names))
        return {"metrics": metrics, "probs": probs.tolist(), "labels": labels.tolist()}

    settings = {"items": list(items), "transforms": transforms, "classes": list(class_names)}
    return _score_selected_model(Path(arm_dir), network, settings, device, score)


def score_segmenter(
    arm_dir: str | os.PathLike,
    network: Callable[[], nn.Module],
    cases: Sequence[dict],
    inferer: Any = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Score the segmenter an arm selected (``<arm_dir>/best_model.pt``) on the prepared external ``cases``:
    ``evaluate_segmenter``'s result (per-case Dice under ``per_case``), cached as ``score_classifier`` caches."""
    settings = {"cases": list(cases), "inferer": inferer}
    return _score_selected_model(
        Path(arm_dir),
        network,
        settings,
        device,
        lambda net: evaluate_segmenter(net, cases, device=device, inferer=inferer),
    )


def _fold_mean(
    metric: str, probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int, idx: np.ndarray
) -> float:
    """The mean over folds of ``metric`` on the images ``idx``: NaN when it is undefined in any fold."""
    return float(
        np.mean([fast_metric(metric, p[idx], y[idx], num_classes) for p, y in zip(probs, labels, strict=True)])
    )


def _patients(items: Sequence[dict]) -> list[str]:
    return [str(it.get("patient", it.get("image"))) for it in items]


def section(
    external: Mapping[str, Any],
    per_fold_metrics: Mapping[str, list[dict]],
    bootstrap: Mapping[str, dict],
    *,
    metrics: Sequence[str] = SUMMARY_METRICS,
    comparisons: Sequence[tuple[str, str]] = (),
    unit: str = "image",
) -> dict:
    """The report's ``external`` section from per-arm lists of per-fold metrics and per-arm bootstrap results.
    ``unit``: what one item is ("image"; a segmentation protocol's items are "case"s, whole volumes)."""
    items = external["items"]
    return {
        "dataset": external.get("source"),
        "dataset_dir": external.get("dataset_dir"),
        "origin": external.get("origin"),
        "unit": unit,
        "n_images": len(items),
        "n_patients": len(set(_patients(items))),
        "class_names": list(external.get("class_names") or []),
        "counts": external.get("counts"),
        "shared_patients": external.get("shared_patients", 0),
        "arms": summarize_arms(dict(per_fold_metrics), metrics),
        "comparisons": compare_arms(dict(per_fold_metrics), list(comparisons), metrics),
        "bootstrap": dict(bootstrap),
    }


def classification_section(
    external: Mapping[str, Any],
    scores: Mapping[str, list[dict]],
    *,
    class_names: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    comparisons: Sequence[tuple[str, str]] = (),
) -> dict:
    """``section`` for classifiers: ``scores`` = ``{arm: [score_classifier result per fold]}``; the bootstrap is of
    the fold-averaged ``BOOTSTRAP_METRICS`` (the folds' models scored on the same resampled patients, then
    averaged). ``class_names``: those the models were scored with (a task's), default the external set's."""
    names = list(class_names or external["class_names"])
    patients = _patients(external["items"])
    boot: dict[str, dict] = {}
    for arm, folds in scores.items():
        probs = [np.asarray(f["probs"], dtype=np.float64) for f in folds]
        labels = [np.asarray(f["labels"], dtype=np.int64) for f in folds]
        if any(len(p) != len(patients) for p in probs):
            raise ValueError(f"external scores of arm '{arm}' do not match the external set's {len(patients)} images")
        boot[arm] = {"n_folds": len(folds)}
        for m in BOOTSTRAP_METRICS:
            statistic = partial(_fold_mean, m, probs, labels, len(names))
            boot[arm][m] = bootstrap_over_patients(patients, statistic, n_resamples=n_resamples, seed=seed)
    per_fold = {arm: [f["metrics"] for f in folds] for arm, folds in scores.items()}
    out = section(dict(external, class_names=names), per_fold, boot, comparisons=comparisons)
    return out


def segmentation_section(
    external: Mapping[str, Any],
    scores: Mapping[str, list[dict]],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    comparisons: Sequence[tuple[str, str]] = (),
) -> dict:
    """``section`` for segmenters: ``scores`` = ``{arm: [score_segmenter result per fold]}``; the bootstrap is of the
    fold-averaged mean Dice over resampled external patients (``DICE_METRICS``; ``dice_mean`` per case is the mean of
    its three regions, so its case mean equals ``evaluate_segmenter``'s ``dice_mean``)."""
    patients = _patients(external["items"])
    boot: dict[str, dict] = {}
    for arm, folds in scores.items():
        per_case = []
        for f in folds:
            rows = f["per_case"]
            if len(rows) != len(patients):
                raise ValueError(
                    f"external scores of arm '{arm}' do not match the external set's {len(patients)} cases"
                )
            regions = np.asarray([[c[m] for m in DICE_METRICS[:3]] for c in rows], dtype=np.float64)
            per_case.append(np.concatenate([regions, regions.mean(1, keepdims=True)], axis=1))
        boot[arm] = {"n_folds": len(folds)}
        for j, m in enumerate(DICE_METRICS):
            statistic = partial(_fold_mean_of_cases, [v[:, j] for v in per_case])
            boot[arm][m] = bootstrap_over_patients(patients, statistic, n_resamples=n_resamples, seed=seed)
    per_fold = {arm: list(folds) for arm, folds in scores.items()}
    return section(external, per_fold, boot, metrics=DICE_METRICS, comparisons=comparisons, unit="case")


def _fold_mean_of_cases(values: Sequence[np.ndarray], idx: np.ndarray) -> float:
    return float(np.mean([v[idx].mean() for v in values]))
