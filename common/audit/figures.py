"""The audit's figures: the synthetic images nearest to a training image, a PCA of the feature spaces, and the
histograms of nearest-training-image distances (synthetic vs held-out real)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from common.privacy.memorization import COPY_PERCENTILE
from common.viz import to_display

__all__ = ["write_figures"]

logger = logging.getLogger(__name__)


def _display(img: torch.Tensor) -> np.ndarray:
    """One image ``(C, *spatial)`` in [-1, 1] as uint8 RGB, oriented as ``common.viz`` shows every image."""
    return to_display(img[None])[0]


def _pca_2d(fit: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Project arrays on the first two principal axes of ``fit`` (numpy SVD; centred on ``fit``'s mean)."""
    mean = fit.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    return [(a - mean) @ vt[:2].T for a in arrays]


def write_figures(
    out: Path,
    train: torch.Tensor,
    real: torch.Tensor,
    syn: torch.Tensor,
    feats: dict[str, dict[str, list[np.ndarray]]],
    distances: dict[str, list[dict[str, np.ndarray]]],
    seed: int,
) -> list[str]:
    """Write ``nearest_pairs.png``, ``feature_pca.png`` (when there are feature spaces) and ``nn_distance_hist.png``
    into ``out``; return the names written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is in install_requires; keep the numbers if a trimmed install lacks it
        logger.warning("matplotlib is not installed: audit figures skipped (the numbers are in audit.json)")
        return []
    written = []

    # Nearest pairs: the synthetic images closest to a training image are the ones a reader must look at.
    pix = distances["pixel"][0]
    n_show = min(8, len(syn))
    order = np.argsort(pix["synthetic"])[:n_show]
    cols = 2 if n_show > 4 else 1
    rows = math.ceil(n_show / cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.2 * 2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for slot, j in enumerate(order):
        r, c = divmod(slot, cols)
        for side, (img, title) in enumerate(
            (
                (syn[j], f"synthetic #{j}"),
                (train[int(pix["synthetic_index"][j])], f"train, d={pix['synthetic'][j]:.3f}"),
            )
        ):
            ax = axes[r, 2 * c + side]
            shown = _display(img)
            ax.imshow(shown, cmap=None if shown.ndim == 3 else "gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
    fig.suptitle("Synthetic | closest training image (pixel RMS distance), closest first", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "nearest_pairs.png", dpi=100)
    plt.close(fig)
    written.append("nearest_pairs.png")

    if feats:
        fig, axes = plt.subplots(1, len(feats), figsize=(5 * len(feats), 4.5), squeeze=False)
        rng = np.random.default_rng(seed)
        for ax, (name, f) in zip(axes[0], feats.items(), strict=True):
            t, r, s = f["train"][0], f["real"][0], f["synthetic"][0]
            pt, pr, ps = _pca_2d(np.concatenate([t, r]), t, r, s)
            for pts, label, color in (
                (pt, "train", "tab:blue"),
                (pr, "held-out real", "tab:green"),
                (ps, "synthetic", "tab:red"),
            ):
                idx = rng.permutation(len(pts))[:1000]
                ax.scatter(pts[idx, 0], pts[idx, 1], s=6, alpha=0.5, label=label, color=color)
            suffix = " (first replicate)" if len(f["train"]) > 1 else ""
            ax.set_title(f"PCA of {name} features{suffix}", fontsize=9)
            ax.set_xlabel("PC 1 (fitted on real)")
            ax.set_ylabel("PC 2")
            ax.legend(fontsize=8, markerscale=2)
        fig.tight_layout()
        fig.savefig(out / "feature_pca.png", dpi=100)
        plt.close(fig)
        written.append("feature_pca.png")

    fig, axes = plt.subplots(1, len(distances), figsize=(4.5 * len(distances), 3.6), squeeze=False)
    for ax, (name, dist) in zip(axes[0], distances.items(), strict=True):
        d = dist[0]
        hi = float(max(d["synthetic"].max(), d["heldout"].max()))
        bins = np.linspace(0.0, hi * 1.02 if hi > 0 else 1.0, 40)
        ax.hist(d["heldout"], bins=bins, density=True, alpha=0.55, label="held-out real", color="tab:green")
        ax.hist(d["synthetic"], bins=bins, density=True, alpha=0.55, label="synthetic", color="tab:red")
        ax.axvline(np.percentile(d["heldout"], COPY_PERCENTILE), color="k", ls="--", lw=1, label="copy threshold")
        ax.set_title(
            f"distance to closest training image: {name}" + (" (first replicate)" if len(dist) > 1 else ""), fontsize=9
        )
        ax.set_xlabel("normalised L2")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "nn_distance_hist.png", dpi=100)
    plt.close(fig)
    written.append("nn_distance_hist.png")
    return written
