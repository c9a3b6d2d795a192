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


#: the metrics that need every class in the test set: each comes from the one confusion matrix of a fold
CLASS_DEPENDENT = ("balanced_accuracy", "sensitivity", "specificity", "auc")


def _class_entry(sens: float, spec: float, n: int) -> dict:
    entry = {"sensitivity": float(sens), "specificity": float(spec), "n": n}
    undefined = {}
    if not np.isfinite(sens):
        undefined["sensitivity"] = "no test image of this class"
    if not np.isfinite(spec):
        undefined["specificity"] = "no test image of another class"
    return entry | ({"undefined": undefined} if undefined else {})


def metrics_from_confusion(cm: np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict:
    """Accuracy, balanced accuracy, sensitivity and specificity of one confusion matrix ``cm[t, p]`` (see
    ``classification_metrics``), so that the three class-wise figures can never come from different places.

    A class absent from the true labels has no sensitivity, so balanced accuracy (the mean sensitivity over *all*
    classes), sensitivity and specificity are all NaN then, with the reason under ``undefined`` and the absent
    classes under ``missing_classes``; a mean over the classes that happen to be there would mix a K-class and a
    (K-1)-class figure in one column (balanced accuracy 66.7 beside sensitivity 0 and specificity 100).
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    tp = np.diag(cm).astype(float)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    n = int(cm.sum())
    missing = [str(name) for i, name in enumerate(class_names) if cm[i].sum() == 0]
    undefined: dict[str, str] = {}
    nan = float("nan")
    if n == 0:
        undefined = {m: "empty test set" for m in ("accuracy", *CLASS_DEPENDENT)}
        accuracy = balanced = sensitivity = specificity = nan
    elif missing:
        reason = "test set lacks class " + ", ".join(f"'{c}'" for c in missing)
        undefined = {m: reason for m in CLASS_DEPENDENT}
        accuracy, balanced, sensitivity, specificity = float(tp.sum() / n), nan, nan, nan
    else:
        accuracy, balanced = float(tp.sum() / n), float(sens.mean())
        if k == 2:  # those of the positive class; then balanced accuracy = (sensitivity + specificity) / 2
            sensitivity, specificity = float(sens[1]), float(spec[1])
        else:
            sensitivity, specificity = balanced, float(spec.mean())
    return {
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "per_class": {name: _class_entry(sens[i], spec[i], int(cm[i].sum())) for i, name in enumerate(class_names)},
        "confusion_matrix": cm.tolist(),
        "missing_classes": missing,
        "undefined": undefined,
    }


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict:
    """Accuracy, balanced accuracy, sensitivity, specificity and ROC AUC of ``probs`` (N, K) against ``labels`` (N,).

    All but AUC come from the one confusion matrix (``metrics_from_confusion``). With K > 2 classes,
    ``sensitivity`` and ``specificity`` are the macro averages of the one-vs-rest values per class (so
    ``sensitivity`` equals balanced accuracy); per-class values are under ``per_class``. With K = 2 they are those of
    class 1 (the positive class: e.g. melanoma, abnormal), and balanced accuracy is their mean. ``auc`` is the macro
    one-vs-rest ROC AUC (MONAI's ``compute_roc_auc``). When a class is absent from ``labels``, balanced accuracy,
    sensitivity, specificity and AUC are NaN, and ``undefined`` says why (``missing_classes`` names the classes).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    k = len(class_names)
    if probs.shape != (labels.shape[0], k):
        raise ValueError(f"probs must be (N, {k}), got {probs.shape} for {labels.shape[0]} labels")
    metrics = metrics_from_confusion(confusion_matrix(probs.argmax(1), labels, k), class_names)
    auc = float("nan")
    if "auc" not in metrics["undefined"]:
        try:
            onehot = torch.nn.functional.one_hot(torch.as_tensor(labels), k)
            auc = float(compute_roc_auc(torch.as_tensor(probs), onehot, average="macro"))
        except (ValueError, AssertionError) as err:
            metrics["undefined"]["auc"] = f"ROC AUC not computable ({err})"
        if not np.isfinite(auc):
            metrics["undefined"].setdefault("auc", "ROC AUC not computable")
    keys = ("accuracy", "balanced_accuracy", "sensitivity", "specificity")
    return {**{m: metrics[m] for m in keys}, "auc": auc, **{m: v for m, v in metrics.items() if m not in keys}}
