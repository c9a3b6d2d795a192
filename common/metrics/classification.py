"""Classification metrics as the papers report them, from predicted probabilities and true labels."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, compute_roc_auc

from common.metrics.stats import bootstrap_over_patients


def confusion_matrix(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = number of samples of true class t predicted as p.

    Hand-written because MONAI has no K x K matrix: ``monai.metrics.get_confusion_matrix`` gives one-vs-rest counts
    (TP, FP, TN, FN) per class, which lose *which* class a miss went to. With 3 classes, true (0, 1, 2) predicted as
    (1, 2, 0) or as (2, 0, 1) give the same MONAI counts (each class TP 0, FP 1, TN 1, FN 1) and different matrices;
    the report publishes the matrix. ``one_vs_rest_counts`` of this matrix equal MONAI's counts (tests/metrics).
    """
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return cm


def one_vs_rest_counts(cm: np.ndarray) -> np.ndarray:
    """(K, 4) counts per class of a confusion matrix ``cm[t, p]``: TP, FP, TN, FN, in the order of MONAI's
    ``get_confusion_matrix`` (so MONAI's ``compute_confusion_matrix_metric`` reads them)."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    return np.stack([tp, fp, tn, fn], axis=-1)


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
    counts = torch.as_tensor(one_vs_rest_counts(cm), dtype=torch.float64)
    tp = counts[:, 0].numpy()
    # one-vs-rest recall and specificity per class, NaN where a class has no sample (resp. no other sample)
    sens = compute_confusion_matrix_metric("sensitivity", counts).numpy()
    spec = compute_confusion_matrix_metric("specificity", counts).numpy()
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


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``labels`` in {0, 1} (Mann-Whitney, ties count half); NaN with one class."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


#: the metrics ``fast_metric`` computes, as ``classification_metrics`` defines them
FAST_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc")


def fast_metric(name: str, probs: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """One of ``FAST_METRICS`` of ``probs`` (N, K) against ``labels`` (N,), as ``classification_metrics`` defines it
    (``sensitivity`` / ``specificity``: of class 1 with two classes, else the macro mean over the classes; ``auc``:
    macro one-vs-rest), in microseconds (a bootstrap calls it thousands of times); NaN where
    ``classification_metrics`` gives NaN (a class absent from ``labels``)."""
    if name not in FAST_METRICS:
        raise ValueError(f"fast_metric: unknown metric {name!r} (use one of {FAST_METRICS})")
    if len(labels) == 0:
        return float("nan")
    pred = probs.argmax(1)
    if name == "accuracy":
        return float(np.mean(pred == labels))
    present = np.bincount(labels, minlength=num_classes)
    if (present == 0).any():
        return float("nan")
    if name == "auc":
        return float(np.mean([binary_auc(probs[:, c], labels == c) for c in range(num_classes)]))
    recall = [np.mean(pred[labels == c] == c) for c in range(num_classes)]
    if name == "balanced_accuracy" or (name == "sensitivity" and num_classes > 2):
        return float(np.mean(recall))
    if num_classes == 2:  # those of the positive class 1: its specificity is the recall of class 0
        return float(recall[1] if name == "sensitivity" else recall[0])
    return float(np.mean([np.mean(pred[labels != c] != c) for c in range(num_classes)]))


def _finite_or_none(value):
    """NaN -> None (JSON has no NaN), recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def classification_metrics_with_ci(
    probs: np.ndarray,
    labels: np.ndarray,
    patients: list[str] | tuple[str, ...],
    class_names: list[str] | tuple[str, ...],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """``classification_metrics`` of ``probs`` (N, K) against ``labels`` (N,), each of ``FAST_METRICS`` with a
    percentile bootstrap 95 % CI over *patients* (``bootstrap_over_patients``: a drawn patient brings all its images).

    Returns a JSON-ready dict (NaN written as None): ``metrics`` ``{name: {"value", "ci95": [lo, hi], "std",
    "n_resamples"}}``, ``per_class`` sensitivity/specificity, ``confusion_matrix`` (``[true][predicted]``),
    ``counts`` (images per true class), ``missing_classes``, ``undefined`` (why a metric is None), ``n_images``,
    ``n_patients``, ``ci`` (how the intervals were made) and ``sensitivity_specificity`` (of which class).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(patients) != len(labels):
        raise ValueError(f"{len(patients)} patient ids for {len(labels)} labels")
    k = len(class_names)
    full = classification_metrics(probs, labels, class_names)
    metrics, n_patients = {}, len(set(map(str, patients)))
    for name in FAST_METRICS:

        def statistic(idx: np.ndarray, name: str = name) -> float:
            return fast_metric(name, probs[idx], labels[idx], k)

        boot = bootstrap_over_patients(patients, statistic, n_resamples=n_resamples, seed=seed)
        metrics[name] = {"value": full[name], **{key: boot[key] for key in ("ci95", "std", "n_resamples")}}
    counts = np.bincount(labels, minlength=k)
    return _finite_or_none(
        {
            "metrics": metrics,
            "per_class": full["per_class"],
            "confusion_matrix": full["confusion_matrix"],
            "counts": {str(name): int(counts[i]) for i, name in enumerate(class_names)},
            "missing_classes": full["missing_classes"],
            "undefined": full["undefined"],
            "n_images": int(len(labels)),
            "n_patients": n_patients,
            "ci": f"95 % percentile bootstrap over patients ({n_resamples} resamples, seed {seed})",
            "sensitivity_specificity": (
                f"of class 1, the positive class '{class_names[1]}'" if k == 2 else "macro means over the classes"
            ),
        }
    )
