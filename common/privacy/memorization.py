"""Memorisation audit: does a generator reproduce the images it was trained on?

Everything is measured against held-out real images (from the same distribution, never seen by the generator),
because "close to a training image" means nothing without knowing how close a fresh real image is:

- distance to the closest training image (DCR) of synthetic vs held-out images, and the ratio of their medians
  (about 1 for a generator that samples fresh images; well below 1 when it copies);
- copy fraction: share of synthetic images closer to their nearest training image than the 5th percentile of the
  held-out images' nearest-training distances (a fresh sample falls below it 5 % of the time, by construction);
  in pixel space also the share below a fixed RMS distance of 0.05 on [-1, 1] images (2.5 % of the range:
  a copy up to mild noise or re-quantisation; two different real images are typically far above it);
- authenticity (Alaa et al. 2022, "How faithful is your synthetic data?"): a sample is unauthentic when it is
  closer to its nearest training image than that training image is to its own nearest other training image;
  reported beside the same test applied to held-out images (which is not 1: fresh samples fail it sometimes);
- a distance-based membership-inference attack (in the spirit of Hilprecht et al. 2019 / Chen et al. 2020
  "GAN-Leaks"): score = -distance to the nearest synthetic image, members = training images, non-members =
  held-out images; ROC AUC 0.5 means the synthetic set does not reveal who was in the training set.

Distances are "normalised L2": Euclidean distance divided by sqrt(dimension), i.e. the RMS difference. In pixel space
on images in [-1, 1] it is an intensity difference in those units whatever the resolution; in a feature space the
features are first z-scored with statistics pooled over all three sets (``common.metrics.features.standardize``;
the training set's statistics alone would make training images look closer to everything, a false signal).
Nearest neighbours are plain (no registration): a flipped or shifted copy is not caught in pixel space, which is
one reason the audit also measures in feature spaces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from common.metrics.stats import bootstrap_ci

__all__ = [
    "AUTHENTICITY_FLAG_MARGIN",
    "COPY_FLAG_FACTOR",
    "COPY_PERCENTILE",
    "FIXED_COPY_FLAG",
    "FIXED_COPY_THRESHOLD",
    "MIA_AUC_FLAG",
    "authenticity",
    "copy_fraction",
    "copy_threshold",
    "dcr_median_ratio",
    "membership_inference_auc",
    "memorization_metrics",
    "nearest_neighbours",
    "nearest_train_distances",
    "normalised_vectors",
    "privacy_flags",
    "roc_auc",
]

#: held-out percentile that defines a near-copy (a fresh real image is below it 5 % of the time)
COPY_PERCENTILE = 5.0
#: fixed pixel-space near-copy threshold: RMS difference on [-1, 1] images (2.5 % of the intensity range)
FIXED_COPY_THRESHOLD = 0.05
#: flag when the copy fraction exceeds this factor times the nominal rate (5 %) and its CI excludes the nominal rate
COPY_FLAG_FACTOR = 2.0
#: flag when more than this share of synthetic images are below the fixed pixel threshold
FIXED_COPY_FLAG = 0.01
#: flag when the MIA AUC is at least this and its CI excludes 0.5
MIA_AUC_FLAG = 0.55
#: flag when authenticity is this much below the held-out baseline and its CI excludes the baseline
AUTHENTICITY_FLAG_MARGIN = 0.1


# ----------------------------------------------------------------------------------------------------- distances
def normalised_vectors(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Rows ``(N, ...)`` flattened to ``(N, D)`` and divided by sqrt(D): their Euclidean distance is the RMS difference.

    Images ``(N, C, *spatial)`` in [-1, 1] give pixel-space vectors; standardised features ``(N, F)`` give
    feature-space vectors. float32 when the data are large (a 3-D set), else float64.
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    flat = arr.reshape(arr.shape[0], -1)
    dtype = np.float64 if flat.size * 8 < 2**30 else np.float32
    return flat.astype(dtype) / np.sqrt(max(flat.shape[1], 1))


def nearest_neighbours(
    query: np.ndarray, reference: np.ndarray, exclude_self: bool = False, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each row of ``query`` ``(N, D)`` to its nearest row of ``reference`` ``(M, D)``.

    Args:
        exclude_self: ``query`` IS ``reference`` (row i is the same sample); a row's match with itself is skipped.
        batch_size: query rows per chunk (bounds memory at ``batch_size * M``).

    Returns:
        ``(distances (N,), indices (N,))`` into ``reference``.
    """
    ref = torch.as_tensor(reference)
    dists, idxs = [], []
    for start in range(0, len(query), batch_size):
        q = torch.as_tensor(query[start : start + batch_size], dtype=ref.dtype)
        d = torch.cdist(q, ref, compute_mode="use_mm_for_euclid_dist")
        if exclude_self:
            rows = torch.arange(q.shape[0])
            d[rows, rows + start] = float("inf")
        val, idx = d.min(dim=1)
        dists.append(val.double())
        idxs.append(idx)
    if not dists:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return torch.cat(dists).numpy(), torch.cat(idxs).numpy()


def nearest_train_distances(train: np.ndarray, heldout: np.ndarray, synthetic: np.ndarray) -> dict[str, np.ndarray]:
    """All nearest-neighbour distances the audit needs, in one space (rows are normalised vectors ``(., D)``).

    Returns a dict of arrays:
        ``synthetic`` (K,) / ``synthetic_index`` (K,): each synthetic image to its nearest training image;
        ``heldout`` (M,) / ``heldout_index`` (M,): each held-out image to its nearest training image;
        ``train_self`` (N,): each training image to its nearest OTHER training image;
        ``train_to_synthetic`` (N,) / ``heldout_to_synthetic`` (M,): members / non-members to the nearest synthetic.
    """
    d_syn, i_syn = nearest_neighbours(synthetic, train)
    d_held, i_held = nearest_neighbours(heldout, train)
    d_self, _ = (
        nearest_neighbours(train, train, exclude_self=True) if len(train) > 1 else (np.full(len(train), np.inf), None)
    )
    d_mem, _ = nearest_neighbours(train, synthetic)
    d_non, _ = nearest_neighbours(heldout, synthetic)
    return {
        "synthetic": d_syn,
        "synthetic_index": i_syn,
        "heldout": d_held,
        "heldout_index": i_held,
        "train_self": d_self,
        "train_to_synthetic": d_mem,
        "heldout_to_synthetic": d_non,
    }


# ------------------------------------------------------------------------------------------------------- metrics
def dcr_median_ratio(d_synthetic: np.ndarray, d_heldout: np.ndarray) -> float:
    """median(synthetic DCR) / median(held-out DCR): ~1 for fresh samples, << 1 for copies (NaN if undefined)."""
    den = float(np.median(d_heldout)) if len(d_heldout) else float("nan")
    if not len(d_synthetic) or not np.isfinite(den) or den <= 0:
        return float("nan")
    return float(np.median(d_synthetic)) / den


def copy_threshold(d_heldout: np.ndarray, percentile: float = COPY_PERCENTILE) -> float:
    """The near-copy distance: the ``percentile``-th percentile of held-out images' nearest-training distances."""
    return float(np.percentile(d_heldout, percentile))


def copy_fraction(d_synthetic: np.ndarray, threshold: float) -> float:
    """Share of synthetic images whose nearest-training distance is strictly below ``threshold``."""
    return float(np.mean(np.asarray(d_synthetic) < threshold)) if len(d_synthetic) else float("nan")


def authenticity(d_query: np.ndarray, nn_index: np.ndarray, d_train_self: np.ndarray) -> np.ndarray:
    """Per-query authenticity (Alaa et al. 2022): True when the query is NOT closer to its nearest training image
    than that training image is to its own nearest other training image.

    Args:
        d_query: ``(K,)`` distance of each query to its nearest training image.
        nn_index: ``(K,)`` index of that training image.
        d_train_self: ``(N,)`` each training image's distance to its nearest other training image.

    Returns:
        ``(K,)`` bool; its mean is the authenticity score (1 = all authentic).
    """
    return ~(np.asarray(d_query) < np.asarray(d_train_self)[np.asarray(nn_index)])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` ``(N,)`` for binary ``labels`` ``(N,)`` (1 = positive) via Mann-Whitney U, ties = 1/2.

    NaN when one class is absent (so ``bootstrap_ci`` skips that resample).
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def membership_inference_auc(d_members: np.ndarray, d_nonmembers: np.ndarray) -> float:
    """AUC of the attack "score = -distance to the nearest synthetic image" for members vs non-members.

    Args:
        d_members: ``(N,)`` nearest-synthetic distance of each training image (members).
        d_nonmembers: ``(M,)`` nearest-synthetic distance of each held-out image (non-members).

    Returns:
        AUC in [0, 1]; 0.5 = the synthetic set reveals nothing about membership, 1 = members always closer.
    """
    scores = -np.concatenate([d_members, d_nonmembers])
    labels = np.concatenate([np.ones(len(d_members)), np.zeros(len(d_nonmembers))])
    return roc_auc(scores, labels)


# ------------------------------------------------------------------------------------ replicated report entries
def _bootstrap_two_sample(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int,
    seed: int,
) -> list[float | None]:
    """Percentile 95 % CI of ``statistic(a, b)`` resampling the rows of ``a`` and ``b`` independently."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_resamples):
        v = statistic(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return [None, None]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return [float(lo), float(hi)]


def _split_half_copy_rate(d_heldout: np.ndarray, percentile: float, seed: int) -> float:
    """Copy rate of fresh real images out of sample: threshold from one half of the held-out set, rate on the other."""
    if len(d_heldout) < 4:
        return float("nan")
    perm = np.random.default_rng(seed).permutation(len(d_heldout))
    h1, h2 = d_heldout[perm[: len(perm) // 2]], d_heldout[perm[len(perm) // 2 :]]
    return 0.5 * (copy_fraction(h2, copy_threshold(h1, percentile)) + copy_fraction(h1, copy_threshold(h2, percentile)))


def _replicated(values: list[float], key: str | None) -> dict:
    entry = {"value": float(np.mean(values))}
    if key and len(values) > 1:
        entry[key] = [float(v) for v in values]
    return entry


def memorization_metrics(
    distances: Sequence[dict[str, np.ndarray]],
    name: str,
    copy_percentile: float = COPY_PERCENTILE,
    fixed_threshold: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    replicate_key: str | None = "per_seed",
) -> dict:
    """Privacy entries for one space from ``nearest_train_distances`` of each replicate (e.g. each random-net seed).

    Values are means over replicates; CIs bootstrap the replicate mean (the same sample indices in every replicate).

    Args:
        distances: one ``nearest_train_distances`` dict per replicate (same images in each).
        name: space name, the metric suffix (``pixel``, ``randcnn``, ``classifier``).
        copy_percentile: held-out percentile that defines a near-copy.
        fixed_threshold: also report ``copy_fraction_fixed_<name>`` below this normalised distance (pixel space).
        n_resamples: bootstrap resamples (0: no CIs).

    Returns:
        ``{"dcr_median_ratio_<name>": {"value", "ci95", "synthetic_median", "heldout_median", "ideal": 1},
        "copy_fraction_<name>": {"value", "ci95", "threshold", "nominal", "real_baseline"},
        ["copy_fraction_fixed_<name>": {"value", "ci95", "threshold"}],
        "authenticity_<name>": {"value", "ci95", "real_baseline", "real_baseline_ci95"},
        "mia_auc_<name>": {"value", "ci95", "ideal": 0.5, "n_members", "n_nonmembers"}}``, plus per-replicate lists.
    """
    if not distances:
        raise ValueError("memorization_metrics needs at least one replicate")
    syn = np.stack([d["synthetic"] for d in distances], axis=1)  # (K, R)
    held = np.stack([d["heldout"] for d in distances], axis=1)  # (M, R)
    reps = range(syn.shape[1])
    out: dict[str, dict] = {}

    def ratio(s: np.ndarray, h: np.ndarray) -> float:
        return float(np.mean([dcr_median_ratio(s[:, r], h[:, r]) for r in reps]))

    entry = _replicated([dcr_median_ratio(syn[:, r], held[:, r]) for r in reps], replicate_key)
    entry["ci95"] = _bootstrap_two_sample(ratio, syn, held, n_resamples, seed) if n_resamples else [None, None]
    entry["synthetic_median"] = float(np.mean(np.median(syn, axis=0)))
    entry["heldout_median"] = float(np.mean(np.median(held, axis=0)))
    entry["ideal"] = 1.0
    out[f"dcr_median_ratio_{name}"] = entry

    def copies(s: np.ndarray, h: np.ndarray) -> float:
        return float(np.mean([copy_fraction(s[:, r], copy_threshold(h[:, r], copy_percentile)) for r in reps]))

    per_rep = [copy_fraction(syn[:, r], copy_threshold(held[:, r], copy_percentile)) for r in reps]
    entry = _replicated(per_rep, replicate_key)
    entry["ci95"] = _bootstrap_two_sample(copies, syn, held, n_resamples, seed) if n_resamples else [None, None]
    entry["threshold"] = float(np.mean([copy_threshold(held[:, r], copy_percentile) for r in reps]))
    entry["nominal"] = copy_percentile / 100.0
    entry["real_baseline"] = float(np.mean([_split_half_copy_rate(held[:, r], copy_percentile, seed) for r in reps]))
    out[f"copy_fraction_{name}"] = entry

    if fixed_threshold is not None:
        below = (syn < fixed_threshold).astype(np.float64)
        entry = _replicated(list(below.mean(axis=0)), replicate_key)
        entry["ci95"] = (
            bootstrap_ci(np.mean, below, n_resamples=n_resamples, seed=seed)["ci95"] if n_resamples else [None, None]
        )
        entry["threshold"] = float(fixed_threshold)
        out[f"copy_fraction_fixed_{name}"] = entry

    auth_s = np.stack([authenticity(d["synthetic"], d["synthetic_index"], d["train_self"]) for d in distances], 1)
    auth_h = np.stack([authenticity(d["heldout"], d["heldout_index"], d["train_self"]) for d in distances], 1)
    auth_s, auth_h = auth_s.astype(np.float64), auth_h.astype(np.float64)
    entry = _replicated(list(auth_s.mean(axis=0)), replicate_key)
    entry["real_baseline"] = float(auth_h.mean())
    if n_resamples:
        entry["ci95"] = bootstrap_ci(np.mean, auth_s, n_resamples=n_resamples, seed=seed)["ci95"]
        entry["real_baseline_ci95"] = bootstrap_ci(np.mean, auth_h, n_resamples=n_resamples, seed=seed)["ci95"]
    out[f"authenticity_{name}"] = entry

    mem = np.stack([d["train_to_synthetic"] for d in distances], axis=1)
    non = np.stack([d["heldout_to_synthetic"] for d in distances], axis=1)
    scores = -np.concatenate([mem, non])  # (N + M, R)
    labels = np.concatenate([np.ones(len(mem)), np.zeros(len(non))])

    def auc(sc: np.ndarray, lab: np.ndarray) -> float:
        return float(np.mean([roc_auc(sc[:, r], lab) for r in reps]))

    entry = _replicated([roc_auc(scores[:, r], labels) for r in reps], replicate_key)
    entry["ci95"] = (
        bootstrap_ci(auc, scores, labels, n_resamples=n_resamples, seed=seed)["ci95"] if n_resamples else [None, None]
    )
    entry["ideal"] = 0.5
    entry["n_members"], entry["n_nonmembers"] = int(len(mem)), int(len(non))
    out[f"mia_auc_{name}"] = entry
    return out


def privacy_flags(metrics: dict) -> list[str]:
    """Human-readable reasons to suspect memorisation, from ``memorization_metrics`` entries (any spaces merged).

    A flag needs both a CI that excludes the value expected of fresh samples AND an effect above a margin, so that
    a good generator is not flagged by chance: copy fraction > ``COPY_FLAG_FACTOR`` x nominal (CI above nominal);
    fixed-threshold copies > ``FIXED_COPY_FLAG`` (CI above 0); MIA AUC >= ``MIA_AUC_FLAG`` (CI above 0.5);
    authenticity more than ``AUTHENTICITY_FLAG_MARGIN`` below the held-out baseline (the two CIs apart). Entries
    without a CI are judged on the margin alone. With fewer than ~50 images per set the CIs are wide and about a
    dozen such tests run (4 per space), so an isolated flag there is weak evidence; at ~1,000 images the margins are
    many standard errors wide.
    """
    flags = []

    def lo(e: dict) -> float:
        return e["ci95"][0] if e.get("ci95") and e["ci95"][0] is not None else e["value"]

    def hi(e: dict) -> float:
        return e["ci95"][1] if e.get("ci95") and e["ci95"][1] is not None else e["value"]

    for key, e in metrics.items():
        if not isinstance(e, dict) or e.get("value") is None or not np.isfinite(e["value"]):
            continue
        v = e["value"]
        if key.startswith("copy_fraction_fixed_"):
            if v > FIXED_COPY_FLAG and lo(e) > 0:
                flags.append(f"{key}={v:.3f}: more than {FIXED_COPY_FLAG:.0%} of synthetic images are near-duplicates")
        elif key.startswith("copy_fraction_"):
            if v > COPY_FLAG_FACTOR * e["nominal"] and lo(e) > e["nominal"]:
                flags.append(
                    f"{key}={v:.3f}: above {COPY_FLAG_FACTOR:g}x the {e['nominal']:.0%} expected of fresh images"
                )
        elif key.startswith("mia_auc_"):
            if v >= MIA_AUC_FLAG and lo(e) > 0.5:
                flags.append(f"{key}={v:.3f}: training images are closer to the synthetic set than held-out images")
        elif key.startswith("authenticity_"):
            base = e.get("real_baseline")
            # The baseline is itself an estimate: require the two CIs not to overlap, not just S's CI below it.
            base_lo = (e.get("real_baseline_ci95") or [None])[0]
            base_lo = base if base_lo is None else base_lo
            if base is not None and v < base - AUTHENTICITY_FLAG_MARGIN and hi(e) < base_lo:
                flags.append(f"{key}={v:.3f}: below the held-out baseline {base:.3f}")
    return flags
