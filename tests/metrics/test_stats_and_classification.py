"""summarize / bootstrap_ci / classification_metrics against hand-computed values, and MONAI's confusion counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import get_confusion_matrix

from common.metrics import bootstrap_ci, summarize
from common.metrics.classification import (
    classification_metrics,
    confusion_matrix,
    metrics_from_confusion,
    one_vs_rest_counts,
)


def test_summarize_t_interval():
    s = summarize([0.7, 0.8, 0.9])
    assert s["mean"] == pytest.approx(0.8) and s["std"] == pytest.approx(0.1)
    # t(0.975, df=2) = 4.302653; half width = 4.302653 * 0.1 / sqrt(3)
    assert s["ci95"] == pytest.approx([0.8 - 0.248414, 0.8 + 0.248414], abs=1e-5)
    assert summarize([0.5])["ci95"] == [0.5, 0.5]
    clipped = summarize([0.9, 1.0, 0.7], bounds=(0.0, 1.0))
    assert clipped["ci95"][1] == 1.0 and summarize([0.9, 1.0, 0.7])["ci95"][1] > 1.0
    assert summarize([np.nan, 1.0, 0.0])["n_nan"] == 1


def test_bootstrap_ci_contains_value_and_is_seeded():
    x = np.random.default_rng(0).normal(size=200)
    a = bootstrap_ci(np.mean, x, n_resamples=300, seed=1)
    b = bootstrap_ci(np.mean, x, n_resamples=300, seed=1)
    assert a == b and a["ci95"][0] < a["value"] < a["ci95"][1]
    assert a["ci95"][1] - a["ci95"][0] == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.25)


def test_multiclass_metrics_by_hand():
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 2, 1])
    m = classification_metrics(probs, labels, ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    assert m["sensitivity"] == pytest.approx((1 + 0.5 + 1) / 3)  # per-class recall, macro
    assert m["specificity"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert m["auc"] == pytest.approx(1.0)


def test_binary_metrics_are_those_of_the_positive_class():
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.25, 0.75], [0.9, 0.1], [0.2, 0.8]])  # one negative outranks a positive
    labels = np.array([0, 1, 0, 0, 1])
    m = classification_metrics(probs, labels, ["normal", "abnormal"])
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(5 / 6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"probs must be \(N, 3\)"):
        classification_metrics(np.zeros((4, 2)), np.zeros(4), ["a", "b", "c"])


def _numpy_sens_spec(cm):
    """The hand-written one-vs-rest recall / specificity that MONAI's compute_confusion_matrix_metric replaced."""
    tp = np.diag(cm).astype(float)
    fn, fp = cm.sum(1) - tp, cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, tp / (tp + fn), np.nan), np.where(tn + fp > 0, tn / (tn + fp), np.nan)


def test_metrics_from_confusion_equal_the_hand_written_ones_and_monai_counts():
    """Bit for bit on random matrices (with empty classes), and our one-vs-rest counts are MONAI's."""
    rng = np.random.default_rng(0)
    for t in range(200):
        k = int(rng.integers(2, 5))
        n = int(rng.integers(0, 30))
        true, pred = rng.integers(0, k, n), rng.integers(0, k, n)
        if t % 4 == 0 and n:
            true[true == k - 1] = 0  # a class absent from the test set
        cm = confusion_matrix(pred, true, k)
        names = [f"c{i}" for i in range(k)]
        m = metrics_from_confusion(cm, names)
        sens, spec = _numpy_sens_spec(cm)
        for i, name in enumerate(names):
            np.testing.assert_array_equal(m["per_class"][name]["sensitivity"], sens[i])
            np.testing.assert_array_equal(m["per_class"][name]["specificity"], spec[i])
        if not m["missing_classes"] and n:
            assert m["balanced_accuracy"] == float(sens.mean())
            assert m["accuracy"] == float(np.trace(cm) / n)
        if n:
            # MONAI's input: one-hot (B=1, K classes, N samples as the spatial axis)
            onehot = [torch.nn.functional.one_hot(torch.as_tensor(v), k).T[None] for v in (pred, true)]
            monai = get_confusion_matrix(*onehot)
            np.testing.assert_array_equal(one_vs_rest_counts(cm), monai[0].numpy())


def test_monai_counts_lose_the_matrix_so_it_stays_hand_written():
    """Why confusion_matrix is not MONAI's: two different 3-class matrices, the same one-vs-rest counts."""
    true = np.array([0, 1, 2])
    a, b = confusion_matrix(np.array([1, 2, 0]), true, 3), confusion_matrix(np.array([2, 0, 1]), true, 3)
    assert a.tolist() != b.tolist()
    np.testing.assert_array_equal(one_vs_rest_counts(a), one_vs_rest_counts(b))
    assert one_vs_rest_counts(a).tolist() == [[0, 1, 1, 1]] * 3
