"""summarize / bootstrap_ci / classification_metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from common.metrics import bootstrap_ci, summarize
from common.metrics.classification import classification_metrics


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
