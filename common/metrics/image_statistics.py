"""Direct image statistics of generated vs real images (Baur et al. 2018, MelanoGANs, section 3).

Dermoscopy images share their composition (a lesion on skin, centred, under the same optics), so simple statistics
of the pixels can be compared between real and synthetic sets directly, without any learned feature space:

- per-channel colour histograms and their distances to the reference (real) set: histogram intersection distance
  (1 - overlap), Jensen-Shannon divergence (bits), and the 1-D Wasserstein distance in 8-bit grey levels;
- the mean image and the standard-deviation image of each set, and their mean absolute difference to the
  reference's (in 8-bit levels);
- the intensity distribution: every image's mean luminance, compared with a Wasserstein distance and a
  two-sample Kolmogorov-Smirnov statistic;
- the lesion size distribution: the share of each image covered by its lesion, from an unsupervised segmentation
  (``lesion_masks``: Otsu threshold of the colour distance to the skin, inside the central disc, largest component),
  compared the same way.

Every set is compared with the reference; a second real set (e.g. held-out images) beside the generators is the
real-vs-real baseline that says what "close" means at this sample size. Images are ``(N, C, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, stats

__all__ = [
    "colour_histograms",
    "histogram_distances",
    "image_statistics",
    "lesion_area_fractions",
    "lesion_masks",
    "otsu_threshold",
    "write_image_statistics",
]

_EPS = 1e-12


def _as_array(images: torch.Tensor | np.ndarray, name: str = "images") -> np.ndarray:
    arr = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    if arr.ndim != 4 or arr.shape[0] < 1:
        raise ValueError(f"{name}: expected (N, C, H, W) images, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} NaN/Inf values")
    return np.clip(arr, -1.0, 1.0)


def colour_histograms(images: torch.Tensor | np.ndarray, bins: int = 64) -> np.ndarray:
    """Normalised histogram of every channel over all pixels of all images: ``(C, bins)``, rows sum to 1."""
    arr = _as_array(images)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    hist = np.stack([np.histogram(arr[:, c].ravel(), bins=edges)[0] for c in range(arr.shape[1])]).astype(np.float64)
    return hist / np.maximum(hist.sum(1, keepdims=True), _EPS)


def histogram_distances(reference: np.ndarray, other: np.ndarray) -> dict[str, list[float]]:
    """Per-channel distances between two ``(C, bins)`` normalised histograms over [-1, 1].

    ``intersection``: 1 - sum(min) (0 = identical, 1 = disjoint); ``js_divergence``: Jensen-Shannon divergence in
    bits (0..1); ``wasserstein_levels``: earth mover's distance in 8-bit grey levels (bin centres x 127.5).
    """
    p, q = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histogram_distances: shapes differ, {p.shape} vs {q.shape}")
    bins = p.shape[1]
    centres = (np.arange(bins) + 0.5) / bins * 255.0
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(a > 0, a * np.log2(np.maximum(a, _EPS) / np.maximum(b, _EPS)), 0.0).sum(1)

    wasserstein = [float(stats.wasserstein_distance(centres, centres, p[c], q[c])) for c in range(len(p))]
    return {
        "intersection": [float(v) for v in 1.0 - np.minimum(p, q).sum(1)],
        "js_divergence": [float(v) for v in 0.5 * kl(p, m) + 0.5 * kl(q, m)],
        "wasserstein_levels": wasserstein,
    }


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of ``values`` (maximises the between-class variance of a two-class split)."""
    values = np.asarray(values, np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        return hi
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def lesion_masks(images: torch.Tensor | np.ndarray, disc: float = 0.85, smooth: float = 1.0) -> np.ndarray:
    """Unsupervised lesion segmentation of dermoscopy images: ``(N, C, H, W)`` in [-1, 1] -> ``(N, H, W)`` bool.

    Per image: Gaussian smoothing (``smooth`` px at 64 px, scaled with the size); the skin colour is the median
    colour of the annulus between 0.65 and ``disc`` (x half the side) of the central disc (the dermoscope's dark
    vignette and corners lie outside the disc); every pixel's colour distance to it is thresholded with Otsu's
    method inside the disc; holes are filled and the largest connected component is kept. A colour distance rather
    than darkness, because lesions are not only darker than skin (blue-grey veils, white regression areas). The
    same function runs on real and synthetic images, so its errors are shared and the size *distributions* stay
    comparable.
    """
    arr = _as_array(images)
    n, _, h, w = arr.shape
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.hypot((xx + 0.5) / w * 2 - 1, (yy + 0.5) / h * 2 - 1)
    centre = radius < disc
    ring = (radius > 0.65) & centre
    masks = np.zeros((n, h, w), dtype=bool)
    sigma = smooth * max(h, w) / 64.0
    for i in range(n):
        img = ndimage.gaussian_filter(arr[i], sigma=(0, sigma, sigma))
        skin = np.median(img[:, ring], axis=1) if ring.any() else np.median(img.reshape(len(img), -1), axis=1)
        distance = np.sqrt(((img - skin[:, None, None]) ** 2).sum(0))
        inside = distance[centre]
        if inside.size == 0 or inside.max() - inside.min() < 0.05:  # a flat image has no lesion
            continue
        mask = ndimage.binary_fill_holes((distance > otsu_threshold(inside)) & centre)
        labels, count = ndimage.label(mask)
        if count:
            sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
            masks[i] = labels == (int(np.argmax(sizes)) + 1)
    return masks


def lesion_area_fractions(images: torch.Tensor | np.ndarray, **kwargs) -> np.ndarray:
    """Share of each image covered by its lesion (``lesion_masks``): ``(N,)`` in [0, 1]."""
    masks = lesion_masks(images, **kwargs)
    return masks.reshape(len(masks), -1).mean(1)


def _distribution(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        **{f"q{int(p * 100):02d}": float(v) for p, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), q, strict=True)},
    }


def _compare(reference: np.ndarray, values: np.ndarray, scale: float = 1.0) -> dict[str, float]:
    return {
        "wasserstein": float(stats.wasserstein_distance(reference * scale, values * scale)),
        "ks_statistic": float(stats.ks_2samp(reference, values).statistic),
    }


def _resize_like(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if arr.shape[2:] == shape:
        return arr
    return F.interpolate(torch.from_numpy(arr), size=shape, mode="area").numpy()


def image_statistics(sets: Mapping[str, torch.Tensor | np.ndarray], reference: str = "real", bins: int = 64) -> dict:
    """The statistics of every set and their distances to ``sets[reference]`` (see the module docstring).

    Args:
        sets: ``{name: (N, C, H, W) images in [-1, 1]}``; all with the same channels (sizes may differ: the mean and
            std images of the others are area-resized to the reference's size before comparing).
        reference: the real set every other set is compared with.
        bins: histogram bins over [-1, 1].

    Returns:
        ``{"reference": name, "bins": bins, "sets": {name: {"n", "channel_mean", "channel_std", "histogram",
        "mean_luminance": distribution, "lesion_area_fraction": distribution, "vs_reference": {...}}}}``, with
        ``vs_reference`` holding ``histogram`` (per-channel distances, see ``histogram_distances``),
        ``mean_image_mae_levels``, ``std_image_mae_levels``, ``mean_luminance`` and ``lesion_area_fraction``
        (Wasserstein, in 8-bit levels resp. area fraction, and KS statistic). The reference's own entry has none.
    """
    if reference not in sets:
        raise ValueError(f"image_statistics: reference set '{reference}' not among {sorted(sets)}")
    arrays = {name: _as_array(images, name) for name, images in sets.items()}
    channels = {a.shape[1] for a in arrays.values()}
    if len(channels) != 1:
        raise ValueError(f"image_statistics: sets have different channel counts {channels}")
    ref = arrays[reference]
    ref_hist = colour_histograms(ref, bins)
    ref_mean, ref_std = ref.mean(0, keepdims=True), ref.std(0, keepdims=True)
    ref_lum = ref.mean(axis=(1, 2, 3))
    ref_area = lesion_area_fractions(ref)
    out: dict = {"reference": reference, "bins": int(bins), "sets": {}}
    for name, arr in arrays.items():
        hist = ref_hist if name == reference else colour_histograms(arr, bins)
        lum = arr.mean(axis=(1, 2, 3))
        area = ref_area if name == reference else lesion_area_fractions(arr)
        entry = {
            "n": int(arr.shape[0]),
            "channel_mean": [float(v) for v in arr.mean(axis=(0, 2, 3))],
            "channel_std": [float(v) for v in arr.std(axis=(0, 2, 3))],
            "histogram": hist.tolist(),
            "mean_luminance": _distribution(lum),
            "lesion_area_fraction": _distribution(area),
        }
        if name != reference:
            mean_img = _resize_like(arr.mean(0, keepdims=True), ref.shape[2:])
            std_img = _resize_like(arr.std(0, keepdims=True), ref.shape[2:])
            entry["vs_reference"] = {
                "histogram": histogram_distances(ref_hist, hist),
                "mean_image_mae_levels": float(np.abs(mean_img - ref_mean).mean() * 127.5),
                "std_image_mae_levels": float(np.abs(std_img - ref_std).mean() * 127.5),
                "mean_luminance": _compare(ref_lum, lum, scale=127.5),
                "lesion_area_fraction": _compare(ref_area, area),
            }
        out["sets"][name] = entry
    return out


def summary_table(stats_: dict) -> list[dict]:
    """One row per compared set: the headline distances (channel means of the per-channel ones)."""
    rows = []
    for name, entry in stats_["sets"].items():
        vs = entry.get("vs_reference")
        if vs is None:
            continue
        rows.append(
            {
                "set": name,
                "hist_intersection": float(np.mean(vs["histogram"]["intersection"])),
                "hist_js_bits": float(np.mean(vs["histogram"]["js_divergence"])),
                "hist_wasserstein_levels": float(np.mean(vs["histogram"]["wasserstein_levels"])),
                "mean_image_mae_levels": vs["mean_image_mae_levels"],
                "std_image_mae_levels": vs["std_image_mae_levels"],
                "luminance_ks": vs["mean_luminance"]["ks_statistic"],
                "lesion_area_ks": vs["lesion_area_fraction"]["ks_statistic"],
                "lesion_area_mean": entry["lesion_area_fraction"]["mean"],
            }
        )
    return rows


def write_image_statistics(
    sets: Mapping[str, torch.Tensor | np.ndarray], out_dir: str | os.PathLike, reference: str = "real", bins: int = 64
) -> dict:
    """``image_statistics`` plus ``image_statistics.json`` and figures in ``out_dir``: ``colour_histograms.png``
    (one panel per channel, one line per set), ``mean_std_images.png`` (a row per set: mean image, std image),
    ``distributions.png`` (mean luminance and lesion area per set). Returns the statistics with ``figures``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = image_statistics(sets, reference=reference, bins=bins)
    result["summary"] = summary_table(result)
    figures = _figures({k: _as_array(v, k) for k, v in sets.items()}, result, out)
    result["figures"] = figures
    tmp = out / f".image_statistics.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out / "image_statistics.json")
    return result


def _figures(arrays: dict[str, np.ndarray], result: dict, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # figures are optional; the numbers are in the JSON
        return []
    from common.viz import to_display

    written = []
    channels = next(iter(arrays.values())).shape[1]
    names = list(arrays)
    centres = (np.arange(result["bins"]) + 0.5) / result["bins"] * 255.0
    colour_names = ["red", "green", "blue"] if channels == 3 else [f"channel {c}" for c in range(channels)]
    fig, axes = plt.subplots(1, channels, figsize=(4.2 * channels, 3.2), squeeze=False)
    for c in range(channels):
        ax = axes[0, c]
        for name in names:
            ax.plot(
                centres,
                result["sets"][name]["histogram"][c],
                label=name,
                lw=2.2 if name == result["reference"] else 1.2,
            )
        ax.set_title(colour_names[c])
        ax.set_xlabel("8-bit level")
    axes[0, 0].set_ylabel("share of pixels")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "colour_histograms.png", dpi=100)
    plt.close(fig)
    written.append("colour_histograms.png")

    fig, axes = plt.subplots(len(names), 2, figsize=(4.0, 2.0 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        arr = arrays[name]
        mean_img = to_display(arr.mean(0, keepdims=True))[0]
        std = arr.std(0, keepdims=True)
        std_img = to_display(std / max(float(std.max()), 1e-6) * 2 - 1)[0]
        for col, (img, title) in enumerate(((mean_img, "mean"), (std_img, "std (scaled)"))):
            axes[row, col].imshow(img)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            axes[row, col].set_title(f"{name}: {title}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "mean_std_images.png", dpi=100)
    plt.close(fig)
    written.append("mean_std_images.png")

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for name in names:
        arr = arrays[name]
        axes[0].hist(arr.mean(axis=(1, 2, 3)) * 127.5 + 127.5, bins=30, histtype="step", density=True, label=name)
        axes[1].hist(lesion_area_fractions(arr), bins=30, range=(0, 1), histtype="step", density=True, label=name)
    axes[0].set_xlabel("mean luminance (8-bit level)")
    axes[1].set_xlabel("lesion area (share of the image)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "distributions.png", dpi=100)
    plt.close(fig)
    written.append("distributions.png")
    return written
