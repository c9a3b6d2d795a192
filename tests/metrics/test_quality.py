"""Quality metrics against hand-computed values on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.metrics.quality import (
    feature_space_quality,
    frechet_distance,
    frechet_distance_from_stats,
    kid,
    knn_radii,
    mmd2_unbiased,
    ms_ssim_config,
    ms_ssim_diversity,
    pairwise_ms_ssim,
    polynomial_kernel,
    prdc,
)


def _rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


# ------------------------------------------------------------------------------------------------ Frechet distance
def test_frechet_distance_of_two_known_gaussians():
    # |mu1 - mu2|^2 = 1 + 4 = 5; commuting covariances diag(1, 4), diag(4, 9):
    # tr(S1 + S2 - 2 sqrt(S1 S2)) = (1 + 4) + (4 + 9) - 2 (2 + 6) = 2  ->  7.
    assert frechet_distance_from_stats([0, 0], np.diag([1.0, 4.0]), [1, 2], np.diag([4.0, 9.0])) == pytest.approx(7.0)
    # The same after rotating both covariances (non-diagonal matrices, same eigenbasis): still 7.
    r = _rotation(0.7)
    s1, s2 = r @ np.diag([1.0, 4.0]) @ r.T, r @ np.diag([4.0, 9.0]) @ r.T
    assert frechet_distance_from_stats([0, 0], s1, [1, 2], s2) == pytest.approx(7.0, abs=1e-9)


def test_frechet_distance_non_commuting_covariances_matches_1d_formula_per_axis():
    # Equal covariances: the trace term vanishes whatever the covariance, only |mu1 - mu2|^2 remains.
    s = np.array([[2.0, 0.8], [0.8, 1.0]])
    assert frechet_distance_from_stats([1.0, -1.0], s, [0.0, 1.0], s) == pytest.approx(5.0, abs=1e-9)
    # 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2.
    assert frechet_distance_from_stats([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9.0 + 1.0)


def test_frechet_distance_from_samples_approaches_the_analytic_value():
    rng = np.random.default_rng(0)
    a = rng.multivariate_normal([0, 0], np.diag([1.0, 4.0]), size=20000)
    b = rng.multivariate_normal([1, 2], np.diag([4.0, 9.0]), size=20000)
    assert frechet_distance(a, b) == pytest.approx(7.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_is_finite_with_singular_covariances():
    # Fewer samples than features: rank-deficient covariances, where sqrtm needs the eps offset.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 12)), rng.normal(size=(6, 12)) + 1.0
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0


def test_frechet_distance_sample_space_path_equals_the_covariance_formula():
    # N < F takes the (N, N) Gram route; it must give the (F, F) sqrtm value on the same data.
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(9, 20)), rng.normal(size=(12, 20)) * 1.5 + 0.3
    classic = frechet_distance_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(classic, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(classic, rel=1e-6)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# ------------------------------------------------------------------------------------------------------------ KID
def test_mmd2_unbiased_hand_computed():
    # x = {0, 1}, y = {2, 3}, k(a, b) = (a b + 1)^3 (gamma = 1, 1 feature):
    # xx: k(0,1) = 1 -> 1; yy: k(2,3) = 343 -> 343; xy: (1 + 1 + 27 + 64) / 4 = 23.25 -> 1 + 343 - 46.5 = 297.5
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    k = polynomial_kernel
    assert mmd2_unbiased(k(x, x), k(y, y), k(x, y)) == pytest.approx(297.5)
    # kid with subsets as large as the sets: every subset is the whole set -> the same value, zero spread.
    out = kid(x, y, n_subsets=3, subset_size=2)
    assert out["value"] == pytest.approx(297.5) and out["std"] == pytest.approx(0.0)


def test_kid_subsets_match_a_direct_loop():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(25, 4)) + 0.5
    out = kid(a, b, n_subsets=7, subset_size=10, seed=3)
    draw = np.random.default_rng(3)
    vals = []
    for _ in range(7):
        ia, ib = draw.choice(30, 10, replace=False), draw.choice(25, 10, replace=False)
        vals.append(
            mmd2_unbiased(
                polynomial_kernel(a[ia], a[ia]), polynomial_kernel(b[ib], b[ib]), polynomial_kernel(a[ia], b[ib])
            )
        )
    assert out["value"] == pytest.approx(np.mean(vals))
    assert out["std"] == pytest.approx(np.std(vals, ddof=1))


def test_kid_identical_sets_is_about_zero_and_shift_is_not():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    same = kid(a, a, n_subsets=20, seed=0)["value"]
    shifted = kid(a, a + 1.0, n_subsets=20, seed=0)["value"]
    # Not exactly 0: subsets of one set overlap, and the self-similarity k(x, x) of shared points enters the cross
    # term. Tiny next to a real difference, and an independent sample of the same distribution is 0 within noise.
    assert abs(same) < 0.02 * shifted
    fresh = kid(a, rng.normal(size=(200, 8)), n_subsets=20, seed=0)
    assert abs(fresh["value"]) < 3 * fresh["std"]


# ----------------------------------------------------------------------------------------------------------- PRDC
def test_knn_radii():
    x = np.array([[0.0], [1.0], [3.0]])
    np.testing.assert_allclose(knn_radii(x, 1), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(knn_radii(x, 2), [3.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        knn_radii(x, 3)


def test_prdc_on_hand_made_points():
    # real 0, 1, 2, 3 (k = 1 radius 1 each); fake 0.5 and 10 (k = 1 radius 9.5 each).
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    out = prdc(real, fake, k=1)
    assert out["precision"] == pytest.approx(0.5)  # 0.5 is inside the balls of 0 and 1; 10 is in none
    assert out["density"] == pytest.approx((2 + 0) / (1 * 2))  # 0.5 lies in 2 real balls
    assert out["recall"] == pytest.approx(1.0)  # every real point is within 9.5 of the fake 0.5
    assert out["coverage"] == pytest.approx(0.5)  # reals 0 and 1 have a fake within radius 1; 2 and 3 do not


def test_prdc_per_sample_terms_average_to_the_metrics():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    out = prdc(real, fake, k=5, per_sample=True)
    assert out["precision_per_fake"].shape == (30,) and out["coverage_per_real"].shape == (40,)
    assert out["density"] == pytest.approx(out["density_per_fake"].mean())
    assert 0.6 < out["precision"] <= 1.0 and 0.6 < out["coverage"] <= 1.0  # same distribution


# -------------------------------------------------------------------------------------------------------- MS-SSIM
@pytest.mark.parametrize(
    "shape, kernel, scales", [((256, 256), 11, 5), ((64, 64), 7, 4), ((32, 32), 7, 3), ((16, 16), 7, 2), ((8, 8), 7, 1)]
)
def test_ms_ssim_config_is_valid_for_small_images(shape, kernel, scales):
    cfg = ms_ssim_config(shape)
    assert (cfg["kernel_size"], cfg["scales"]) == (kernel, scales)
    assert sum(cfg["weights"]) == pytest.approx(1.0)
    x = torch.rand(2, 1, *shape) * 2 - 1
    np.testing.assert_allclose(pairwise_ms_ssim(x, x, cfg).numpy(), 1.0, atol=1e-5)  # MONAI accepts the config


def test_ms_ssim_diversity_detects_a_collapsed_set():
    gen = torch.Generator().manual_seed(0)
    varied = torch.rand(20, 1, 32, 32, generator=gen) * 2 - 1
    collapsed = varied[:1].repeat(20, 1, 1, 1)
    d_varied = ms_ssim_diversity(varied, n_pairs=50, n_resamples=100)
    d_collapsed = ms_ssim_diversity(collapsed, n_pairs=50, n_resamples=100)
    assert d_collapsed["value"] == pytest.approx(1.0, abs=1e-5)
    assert d_varied["value"] < 0.5 and d_varied["ci95"][0] <= d_varied["value"] <= d_varied["ci95"][1]
    assert ms_ssim_diversity(torch.rand(4, 1, 12, 12, 12) * 2 - 1, n_pairs=5, n_resamples=0)["value"] is not None


# ------------------------------------------------------------------------------------------- feature space report
def test_feature_space_quality_reports_values_beside_a_baseline():
    rng = np.random.default_rng(0)
    ref = [rng.normal(size=(60, 4)) for _ in range(2)]
    real = [rng.normal(size=(30, 4)) for _ in range(2)]
    bad = [rng.normal(size=(30, 4)) + 2.0 for _ in range(2)]
    out = feature_space_quality(ref, real, bad, name="toy", kid_subsets=10, n_resamples=50)
    assert set(out) == {f"{m}_toy" for m in ("frechet_distance", "kid", "precision", "recall", "density", "coverage")}
    fd = out["frechet_distance_toy"]
    assert len(fd["per_seed"]) == 2 and fd["value"] == pytest.approx(np.mean(fd["per_seed"]))
    assert fd["value"] > 5 * fd["real_baseline"]  # the shifted set is far worse than fresh real samples
    assert out["precision_toy"]["value"] < out["precision_toy"]["real_baseline"]
    lo, hi = out["coverage_toy"]["ci95"]
    assert lo <= out["coverage_toy"]["value"] <= hi
