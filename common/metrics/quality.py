"""Generative quality without downloaded weights: Frechet distance, KID, precision/recall/density/coverage, MS-SSIM.

The feature-based metrics take ``(N, F)`` feature arrays (see ``common.metrics.features``). They are NOT "FID" or
published KIDs: those are defined on Inception-v3 features and are not comparable with numbers computed here, so
reports name them after the feature space (``frechet_distance_randcnn``, ``kid_classifier``, ...). What makes them
readable is the real-vs-real baseline beside each one, at the same sample size: the value a generator that draws
fresh samples from the real distribution would get (``feature_space_quality`` computes both).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import torch
from monai.metrics import MultiScaleSSIMMetric

from common.metrics.stats import bootstrap_ci

__all__ = [
    "MS_SSIM_WEIGHTS",
    "feature_space_quality",
    "frechet_distance",
    "frechet_distance_from_stats",
    "kid",
    "knn_radii",
    "mmd2_unbiased",
    "ms_ssim_config",
    "ms_ssim_diversity",
    "pairwise_distances",
    "pairwise_ms_ssim",
    "polynomial_kernel",
    "prdc",
]

#: Wang et al. 2003 scale weights (finest first), as used by MONAI's MultiScaleSSIMMetric.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


# ----------------------------------------------------------------------------------------------- Frechet distance
def _real_sqrtm(matrix: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` with the usual safeguards: warnings on singular input silenced (finiteness is checked
    by the caller), a round-off imaginary part dropped, a warning when that part is not negligible."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        root = scipy.linalg.sqrtm(matrix)
    if np.iscomplexobj(root):
        imag = np.abs(root.imag).max()
        if imag > 1e-3 * max(1.0, np.abs(root.real).max()):
            warnings.warn(f"frechet_distance: sqrtm has a large imaginary component ({imag:.3g})", stacklevel=3)
        root = root.real
    return root


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, with ``mu`` ``(F,)`` and ``sigma``
    ``(F, F)``. Safeguards (as in the reference implementations): when the matrix square root is not finite
    (singular covariances, e.g. fewer samples than features) ``eps * I`` is added to both covariances; a tiny
    imaginary part from round-off is dropped (a warning if it is not tiny); the result is clipped at 0.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"frechet_distance: shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _real_sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _real_sqrtm((sigma1 + offset) @ (sigma2 + offset))
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to ``feats_a`` ``(N, F)`` and ``feats_b`` ``(M, F)``.

    Covariances use ``ddof=1``. The estimate is biased upwards at small N (it is > 0 even for two samples of the same
    distribution), which is why it is only read beside a real-vs-real baseline of the same size.

    With fewer samples than features the covariances are rank-deficient: ``sqrtm`` of the ``(F, F)`` product is then
    slow (complex Schur form) and ill-conditioned. The same trace is computed exactly in sample space instead:
    with centred, scaled data ``A`` ``(N, F)``, ``B`` ``(M, F)`` (``S1 = A^T A``, ``S2 = B^T B``), the non-zero
    eigenvalues of ``S1 S2`` are those of ``G = (A B^T)(A B^T)^T``, so ``tr sqrt(S1 S2) = tr sqrtm(G)``, with G
    symmetric PSD and only ``min(N, M)`` wide.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance needs two (N>=2, F) arrays with the same F, got {a.shape} and {b.shape}")
    n, m, f = len(a), len(b), a.shape[1]
    if min(n, m) >= f:
        cov_a = np.cov(a, rowvar=False).reshape(f, f)  # reshape: np.cov of one feature is 0-d
        cov_b = np.cov(b, rowvar=False).reshape(f, f)
        return frechet_distance_from_stats(a.mean(0), cov_a, b.mean(0), cov_b, eps)
    ca = (a - a.mean(0)) / np.sqrt(n - 1)
    cb = (b - b.mean(0)) / np.sqrt(m - 1)
    cross = ca @ cb.T  # (N, M)
    gram = cross @ cross.T if n <= m else cross.T @ cross
    root = _real_sqrtm(gram)
    if not np.isfinite(root).all():
        root = _real_sqrtm(gram + np.eye(len(gram)) * eps)
    diff = a.mean(0) - b.mean(0)
    fd = float(diff @ diff + (ca * ca).sum() + (cb * cb).sum() - 2.0 * np.trace(root))
    return max(fd, 0.0)


# ------------------------------------------------------------------------------------------------------------ KID
def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """``k(x, y) = (gamma x.y + coef0)^degree`` for ``x`` ``(N, F)``, ``y`` ``(M, F)`` -> ``(N, M)``; gamma = 1/F."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) from kernel matrices ``(m, m)``, ``(n, n)``, ``(m, n)``.

    The diagonals of ``k_xx`` and ``k_yy`` (a sample compared with itself) are left out, which removes the bias;
    the estimate can therefore be slightly negative when the two distributions are equal.
    """
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"mmd2_unbiased needs at least 2 samples per set, got {m} and {n}")
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def kid(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    n_subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> dict:
    """Kernel distance (Binkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel, averaged over subsets.

    Args:
        feats_a, feats_b: ``(N, F)`` and ``(M, F)``.
        n_subsets: random subset pairs (each drawn without replacement).
        subset_size: default ``min(1000, N // 2, M // 2)`` (at least 2): subsets of the whole set would all be
            identical and give no spread. Every subset size gives an unbiased estimate of the same MMD^2.
        seed: seeds the subset draws.

    Returns:
        ``{"value": mean over subsets, "std": std over subsets, "n_subsets", "subset_size"}``. The kernel matrices of
        the full sets are computed once and indexed per subset, which makes 100 subsets cost about one.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kid needs two (N, F) arrays with the same F, got {a.shape} and {b.shape}")
    size = subset_size if subset_size is not None else min(1000, len(a) // 2, len(b) // 2)
    size = max(2, min(size, len(a), len(b)))
    k_aa = polynomial_kernel(a, a, degree, gamma, coef0)
    k_bb = polynomial_kernel(b, b, degree, gamma, coef0)
    k_ab = polynomial_kernel(a, b, degree, gamma, coef0)
    rng = np.random.default_rng(seed)
    # Subsets as 0/1 indicator rows: the kernel sums of all subsets are then three matrix products, instead of
    # 3 * n_subsets fancy-indexed sub-matrices (same numbers as mmd2_unbiased on each subset, ~5x faster).
    w_a = np.zeros((n_subsets, len(a)))
    w_b = np.zeros((n_subsets, len(b)))
    for s in range(n_subsets):
        w_a[s, rng.choice(len(a), size, replace=False)] = 1.0
        w_b[s, rng.choice(len(b), size, replace=False)] = 1.0
    sum_aa = ((w_a @ k_aa) * w_a).sum(1) - w_a @ np.diag(k_aa)
    sum_bb = ((w_b @ k_bb) * w_b).sum(1) - w_b @ np.diag(k_bb)
    sum_ab = ((w_a @ k_ab) * w_b).sum(1)
    vals = sum_aa / (size * (size - 1)) + sum_bb / (size * (size - 1)) - 2.0 * sum_ab / (size * size)
    return {
        "value": float(vals.mean()),
        "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
        "n_subsets": int(n_subsets),
        "subset_size": int(size),
    }


# ----------------------------------------------------------------------------------------------------------- PRDC
def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(N, M)`` between the rows of ``a`` ``(N, F)`` and ``b`` ``(M, F)`` (float64)."""
    ta, tb = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    # The matmul form (|a|^2 + |b|^2 - 2ab) is fast; float64 keeps round-off far below any distance we compare.
    return torch.cdist(ta, tb, compute_mode="use_mm_for_euclid_dist").numpy()


def knn_radii(x: np.ndarray, k: int, distances: np.ndarray | None = None) -> np.ndarray:
    """Distance of each row of ``x`` ``(N, F)`` to its k-th nearest OTHER row -> ``(N,)``."""
    d = pairwise_distances(x, x) if distances is None else distances
    if k >= d.shape[0]:
        raise ValueError(f"knn_radii: k={k} needs more than {k} samples, got {d.shape[0]}")
    # Column 0 of the sorted row is the point itself (distance 0), so index k is the k-th nearest other point.
    return np.partition(d, k, axis=1)[:, k]


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, per_sample: bool = False) -> dict:
    """Precision, recall, density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics").

    With ``B_k(x)`` the ball around x of radius "distance to its k-th nearest neighbour in its own set":
    precision = share of fake samples inside some real ball; recall = share of real samples inside some fake ball;
    density = mean over fake samples of (number of real balls containing it) / k (1 when fake ~ real, can exceed 1);
    coverage = share of real samples whose ball contains at least one fake sample. Strict ``<`` as in the paper's
    code.

    Args:
        real: ``(N, F)`` reference features; fake: ``(M, F)``.
        k: neighbourhood size (the paper's default 5).
        per_sample: also return the per-sample terms whose means are the metrics (``precision_per_fake (M,)``,
            ``density_per_fake (M,)``, ``recall_per_real (N,)``, ``coverage_per_real (N,)``), for bootstrap CIs.

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as floats (plus the per-sample arrays when asked).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    real_radii = knn_radii(real, k)
    fake_radii = knn_radii(fake, k)
    d_rf = pairwise_distances(real, fake)  # (N, M)
    inside_real = d_rf < real_radii[:, None]  # fake j inside the ball of real i
    inside_fake = d_rf < fake_radii[None, :]  # real i inside the ball of fake j
    terms = {
        "precision_per_fake": inside_real.any(axis=0).astype(np.float64),
        "density_per_fake": inside_real.sum(axis=0) / float(k),
        "recall_per_real": inside_fake.any(axis=1).astype(np.float64),
        "coverage_per_real": (d_rf.min(axis=1) < real_radii).astype(np.float64),
    }
    out = {name.split("_per_")[0]: float(v.mean()) for name, v in terms.items()}
    if per_sample:
        out.update(terms)
    return out


# -------------------------------------------------------------------------------------------------------- MS-SSIM
def ms_ssim_config(spatial_shape: Sequence[int], max_scales: int = 5) -> dict:
    """Kernel size and scale weights for MS-SSIM that are valid for images of ``spatial_shape``.

    The standard setting (11 px Gaussian window, 5 scales) needs more than 160 px per axis. For smaller images we
    take a 7 px window and the largest number of scales whose coarsest image is still wider than the window
    (e.g. 64 px -> 4 scales, 32 px -> 3, 16 px -> 2), keep the first weights of Wang et al. and renormalise them
    to sum to 1, and also satisfy MONAI's own size check (``size // (scales - 1)^2 > kernel - 1``). Values are then
    comparable between sets of the same image size, not with published MS-SSIM at 256 px.

    Returns:
        ``{"kernel_size": int, "weights": tuple[float, ...], "scales": int}``.
    """
    size = int(min(spatial_shape))
    for kernel in (11, 7, 5, 3):
        for scales in range(max_scales, 0, -1):
            coarsest_ok = size // 2 ** (scales - 1) > kernel - 1
            monai_ok = size // max(1, scales - 1) ** 2 > kernel - 1
            if coarsest_ok and monai_ok and (kernel < 11 or scales == max_scales):
                w = np.asarray(MS_SSIM_WEIGHTS[:scales], dtype=np.float64)
                return {"kernel_size": kernel, "weights": tuple(float(x) for x in w / w.sum()), "scales": scales}
    raise ValueError(f"ms_ssim_config: images of shape {tuple(spatial_shape)} are too small for MS-SSIM (need > 3 px)")


@torch.no_grad()
def pairwise_ms_ssim(
    a: torch.Tensor, b: torch.Tensor, config: dict | None = None, batch_size: int = 256
) -> torch.Tensor:
    """MS-SSIM of each pair ``(a[i], b[i])``; ``a``, ``b``: ``(B, C, *spatial)`` in [-1, 1] -> ``(B,)``.

    Images are mapped to [0, 1] first (data_range 1): SSIM's luminance term assumes non-negative intensities.
    ``config`` defaults to ``ms_ssim_config(a.shape[2:])``. Uses MONAI's ``MultiScaleSSIMMetric``.
    """
    cfg = config or ms_ssim_config(a.shape[2:])
    metric = MultiScaleSSIMMetric(
        spatial_dims=a.ndim - 2,
        data_range=1.0,
        kernel_size=cfg["kernel_size"],
        weights=cfg["weights"],
        reduction="none",
    )
    out = []
    for start in range(0, a.shape[0], batch_size):
        xa = (a[start : start + batch_size].float().clamp(-1, 1) + 1) / 2
        xb = (b[start : start + batch_size].float().clamp(-1, 1) + 1) / 2
        out.append(metric(xa, xb).reshape(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def ms_ssim_diversity(
    images: torch.Tensor, n_pairs: int = 500, seed: int = 0, n_resamples: int = 1000, config: dict | None = None
) -> dict:
    """Mean MS-SSIM over random pairs of distinct images of one set: lower = more diverse.

    A mode-collapsed generator scores above the real data's own value; read it beside the real set's.

    Args:
        images: ``(N, C, *spatial)`` in [-1, 1], N >= 2.
        n_pairs: random pairs ``(i, j)``, ``i != j``, drawn with replacement.
        seed: seeds the pair draw and the bootstrap.
        n_resamples: bootstrap resamples of the pairs for the CI (0: none).

    Returns:
        ``{"value", "ci95", "n_pairs", "kernel_size", "scales"}``.
    """
    n = images.shape[0]
    cfg = config or ms_ssim_config(images.shape[2:])
    if n < 2:
        return {
            "value": None,
            "ci95": [None, None],
            "n_pairs": 0,
            "kernel_size": cfg["kernel_size"],
            "scales": cfg["scales"],
        }
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n  # uniform over the other images, never i itself
    vals = pairwise_ms_ssim(images[torch.as_tensor(i)], images[torch.as_tensor(j)], cfg).double().numpy()
    ci = bootstrap_ci(np.mean, vals, n_resamples=n_resamples, seed=seed)["ci95"] if n_resamples else [None, None]
    return {
        "value": float(vals.mean()),
        "ci95": ci,
        "n_pairs": int(n_pairs),
        "kernel_size": cfg["kernel_size"],
        "scales": cfg["scales"],
    }


# ------------------------------------------------------------------------------------------- one feature space
def _entry(values: list[float], baseline: list[float], replicate_key: str | None) -> dict:
    entry = {"value": float(np.mean(values)), "real_baseline": float(np.mean(baseline))}
    if replicate_key and len(values) > 1:
        entry[replicate_key] = [float(v) for v in values]
        entry[f"real_baseline_{replicate_key}"] = [float(v) for v in baseline]
    return entry


def feature_space_quality(
    reference: Sequence[np.ndarray],
    real: Sequence[np.ndarray],
    synthetic: Sequence[np.ndarray],
    name: str,
    k: int = 5,
    kid_subsets: int = 100,
    n_resamples: int = 1000,
    seed: int = 0,
    replicate_key: str | None = "per_seed",
) -> dict:
    """Frechet distance, KID and PRDC of synthetic vs reference, each beside real (held-out) vs reference.

    Args:
        reference: per replicate, ``(N_ref, F)`` features of the reference set (the generator's training images).
        real: per replicate, ``(n, F)`` features of held-out real images: the baseline of a perfect generator.
        synthetic: per replicate, ``(n, F)`` features of synthetic images; use the SAME n as ``real`` (these
            metrics depend on sample size).
        name: feature space name, used as the metric suffix (``frechet_distance_<name>``).
        k: PRDC neighbourhood.
        kid_subsets: subsets for KID.
        n_resamples: bootstrap resamples for PRDC CIs (per-sample terms resampled, radii held fixed; all replicates
            resampled with the same indices, so the CI is that of the replicate mean). 0: no CI.
        replicate_key: key for per-replicate values (``per_seed`` for random nets) when there is more than one.

    Returns:
        ``{"frechet_distance_<name>": entry, "kid_<name>": entry, "precision_<name>": entry, ...}``, each entry
        ``{"value", "real_baseline", ["ci95", "real_baseline_ci95"], [per_seed lists]}``; KID adds ``std`` (over
        subsets, mean over replicates) and ``subset_size``.
    """
    if not (len(reference) == len(real) == len(synthetic)) or not reference:
        raise ValueError("feature_space_quality: reference, real and synthetic need one array per replicate each")
    fd_s = [frechet_distance(s, r) for s, r in zip(synthetic, reference, strict=True)]
    fd_b = [frechet_distance(b, r) for b, r in zip(real, reference, strict=True)]
    kid_s = [kid(s, r, n_subsets=kid_subsets, seed=seed) for s, r in zip(synthetic, reference, strict=True)]
    kid_b = [kid(b, r, n_subsets=kid_subsets, seed=seed) for b, r in zip(real, reference, strict=True)]
    out = {f"frechet_distance_{name}": _entry(fd_s, fd_b, replicate_key)}
    kid_entry = _entry([d["value"] for d in kid_s], [d["value"] for d in kid_b], replicate_key)
    kid_entry["std"] = float(np.mean([d["std"] for d in kid_s]))
    kid_entry["real_baseline_std"] = float(np.mean([d["std"] for d in kid_b]))
    kid_entry["subset_size"] = kid_s[0]["subset_size"]
    out[f"kid_{name}"] = kid_entry

    p_s = [prdc(r, s, k=k, per_sample=True) for s, r in zip(synthetic, reference, strict=True)]
    p_b = [prdc(r, b, k=k, per_sample=True) for b, r in zip(real, reference, strict=True)]
    per_sample_key = {
        "precision": "precision_per_fake",
        "recall": "recall_per_real",
        "density": "density_per_fake",
        "coverage": "coverage_per_real",
    }
    for metric, key in per_sample_key.items():
        entry = _entry([d[metric] for d in p_s], [d[metric] for d in p_b], replicate_key)
        if n_resamples:
            # (n, replicates): rows are samples, so one bootstrap index resamples every replicate alike.
            mat_s = np.stack([d[key] for d in p_s], axis=1)
            mat_b = np.stack([d[key] for d in p_b], axis=1)
            entry["ci95"] = bootstrap_ci(np.mean, mat_s, n_resamples=n_resamples, seed=seed)["ci95"]
            entry["real_baseline_ci95"] = bootstrap_ci(np.mean, mat_b, n_resamples=n_resamples, seed=seed)["ci95"]
        out[f"{metric}_{name}"] = entry
    return out
