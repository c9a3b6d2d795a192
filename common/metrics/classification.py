"""Classification metrics as the papers report them, from predicted probabilities and true labels."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_roc_auc


def confusion_matrix(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = number of samples of true class t predicted as p."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return cm


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict:
    """Accuracy, balanced accuracy, sensitivity, specificity and ROC AUC of ``probs`` (N, K) against ``labels`` (N,).

    With K > 2 classes, ``sensitivity`` and ``specificity`` are the macro averages of the one-vs-rest values per
    class (so ``sensitivity`` equals balanced accuracy); per-class values are under ``per_class``. With K = 2 they
    are those of class 1 (the positive class: e.g. melanoma, abnormal). ``auc`` is the macro one-vs-rest ROC AUC
    (MONAI's ``compute_roc_auc``), NaN when a class is absent from ``labels``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    k = len(class_names)
    if probs.shape != (labels.shape[0], k):
        raise ValueError(f"probs must be (N, {k}), got {probs.shape} for {labels.shape[0]} labels")
    pred = probs.argmax(1)
    cm = confusion_matrix(pred, labels, k)
    tp = np.diag(cm).astype(float)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    try:
        onehot = torch.nn.functional.one_hot(torch.as_tensor(labels), k)
        auc = float(compute_roc_auc(torch.as_tensor(probs), onehot, average="macro"))
    except (ValueError, AssertionError):
        auc = float("nan")
    if k == 2:
        sensitivity, specificity = float(sens[1]), float(spec[1])
    else:
        sensitivity, specificity = float(np.nanmean(sens)), float(np.nanmean(spec))
    return {
        "accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
        "balanced_accuracy": float(np.nanmean(sens)),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "auc": auc,
        "per_class": {
            name: {"sensitivity": float(sens[i]), "specificity": float(spec[i]), "n": int(cm[i].sum())}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }
