"""Memorisation metrics on constructed distances and points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.privacy.memorization import (
    authenticity,
    copy_fraction,
    copy_threshold,
    dcr_median_ratio,
    membership_inference_auc,
    memorization_metrics,
    nearest_neighbours,
    nearest_train_distances,
    normalised_vectors,
    privacy_flags,
    roc_auc,
)


def test_normalised_vectors_give_rms_distances():
    a = torch.zeros(1, 1, 8, 8)
    b = torch.full((1, 1, 8, 8), 0.5)
    va, vb = normalised_vectors(a), normalised_vectors(b)
    assert np.linalg.norm(va - vb) == pytest.approx(0.5)  # RMS difference, whatever the resolution


def test_nearest_neighbours_with_and_without_self():
    x = np.array([[0.0], [1.0], [3.0]])
    d, i = nearest_neighbours(np.array([[0.9], [2.5]]), x, batch_size=1)
    np.testing.assert_allclose(d, [0.1, 0.5])
    np.testing.assert_array_equal(i, [1, 2])
    d, i = nearest_neighbours(x, x, exclude_self=True, batch_size=2)  # chunks must offset the diagonal right
    np.testing.assert_allclose(d, [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(i, [1, 0, 1])


def test_authenticity_on_a_constructed_case():
    # train 0, 1, 10: nearest other training point at 1, 1, 9.
    train = np.array([[0.0], [1.0], [10.0]])
    queries = np.array([[0.4], [5.0], [7.0], [-3.0]])
    d = nearest_train_distances(train, queries[:1], queries)
    np.testing.assert_allclose(d["train_self"], [1.0, 1.0, 9.0])
    # 0.4: 0.4 from train 0 (< 1) -> copy-like; 5: 4 from train 1 (>= 1) -> authentic;
    # 7: 3 from train 10 (< 9) -> unauthentic; -3: 3 from train 0 (>= 1) -> authentic.
    flags = authenticity(d["synthetic"], d["synthetic_index"], d["train_self"])
    np.testing.assert_array_equal(flags, [False, True, False, True])


def test_roc_auc_and_membership_inference_on_constructed_distances():
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5  # ties count one half
    assert np.isnan(roc_auc([1, 2], [1, 1]))
    # members at 0.1, 0.5 and non-members at 0.3, 0.9 from the synthetic set: of the 4 (member, non-member) pairs
    # the member is closer in 3 -> AUC 0.75.
    assert membership_inference_auc(np.array([0.1, 0.5]), np.array([0.3, 0.9])) == pytest.approx(0.75)


def test_dcr_ratio_and_copy_fraction():
    held = np.arange(1, 101, dtype=float)  # 1 .. 100
    thr = copy_threshold(held, 5.0)
    assert thr == pytest.approx(np.percentile(held, 5))
    assert copy_fraction(held, thr) == pytest.approx(0.05)  # a fresh sample is below it 5 % of the time
    syn = np.concatenate([np.full(30, 0.5), np.arange(1, 71, dtype=float)])
    assert copy_fraction(syn, thr) == pytest.approx((30 + 5) / 100)
    assert dcr_median_ratio(held, held) == pytest.approx(1.0)
    assert dcr_median_ratio(held / 4, held) == pytest.approx(0.25)


def _distances(rng: np.random.Generator, copies: bool) -> dict:
    train = rng.normal(size=(80, 5))
    held = rng.normal(size=(60, 5))
    syn = train[rng.integers(0, 80, 60)] + 0.01 * rng.normal(size=(60, 5)) if copies else rng.normal(size=(60, 5))
    return nearest_train_distances(train, held, syn)


def test_memorization_metrics_and_flags_separate_copies_from_fresh_samples():
    rng = np.random.default_rng(0)
    copied = memorization_metrics([_distances(rng, True), _distances(rng, True)], "toy", n_resamples=200)
    fresh = memorization_metrics([_distances(rng, False), _distances(rng, False)], "toy", n_resamples=200)
    assert copied["copy_fraction_toy"]["value"] > 0.9 and len(copied["copy_fraction_toy"]["per_seed"]) == 2
    assert copied["authenticity_toy"]["value"] < 0.1
    assert copied["mia_auc_toy"]["ci95"][0] > 0.6
    assert copied["dcr_median_ratio_toy"]["value"] < 0.1
    assert len(privacy_flags(copied)) == 3
    assert fresh["copy_fraction_toy"]["value"] < 0.15
    assert 0.35 < fresh["mia_auc_toy"]["value"] < 0.65
    assert 0.7 < fresh["dcr_median_ratio_toy"]["value"] < 1.4
    assert privacy_flags(fresh) == []
