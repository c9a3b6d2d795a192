"""Synthesis quality and privacy audit of a synthetic image set: is it any good, and does it leak its training images?

Three image sets go in: T, the images the generator was trained on; R, held-out real images from the same source
that the generator never saw; S, synthetic images. Out come the two sections a bundle's ``report.json`` carries:

- ``synthesis``: Frechet distance, KID and precision/recall/density/coverage of S vs T in weight-free feature spaces
  (fixed random CNNs averaged over 3 seeds; optionally the project's own classifier), each beside the real-vs-real
  baseline R vs T at the same sample size, plus MS-SSIM diversity of S beside that of R;
- ``privacy``: nearest-training-image distances of S vs R (pixel and feature space), copy fraction, authenticity,
  membership-inference AUC, and ``flags`` that name any sign of memorisation.

Three ways in, one implementation (``run_audit``):

- Python: ``run_audit(train, real, synthetic, out_dir)`` with tensors ``(N, C, H, W[, D])`` in [-1, 1];
- bundle config: ``{"_target_": "common.audit.SynthesisAudit", "out_dir": "@output_dir"}`` then call it with the
  three tensors (or ``.from_files(...)`` with three folders / datalists);
- command line: ``python -m common.audit --train T --real R --synthetic S --out DIR``, each a folder of images
  (PNG/NIfTI/..., searched recursively) or a datalist JSON (``file.json#validation`` picks a section).

Outputs in ``out_dir``: ``audit.json`` (``{"synthesis": ..., "privacy": ...}``), ``nearest_pairs.png``,
``feature_pca.png``, ``nn_distance_hist.png`` and ``distances.npz`` (the raw nearest-neighbour distances).

Each section holds the headline numbers flat, ``"<metric>": value`` and ``"<metric>_real_baseline": value`` (what
a report table shows and what averages over folds), ``"details": {"<metric>": {"value", "ci95", "real_baseline",
"per_seed", ...}}`` with the uncertainty, and ``"setup"`` (sizes, settings, figures); ``privacy`` adds
``"memorization_suspected"`` and ``"flags"`` (reasons, empty when none). Metric names carry their space:
``frechet_distance_randcnn``, ``kid_classifier``, ``mia_auc_pixel``, ... (never "FID": not Inception features).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import DataError
from common.metrics.features import ClassifierFeatures, FeatureSpace, RandomCNNFeatures, standardize
from common.metrics.quality import feature_space_quality, ms_ssim_config, ms_ssim_diversity
from common.privacy.memorization import (
    COPY_PERCENTILE,
    FIXED_COPY_THRESHOLD,
    memorization_metrics,
    nearest_train_distances,
    normalised_vectors,
    privacy_flags,
)
from common.viz import to_display

__all__ = ["SynthesisAudit", "audit_datalists", "audit_files", "load_classifier", "load_image_set", "main", "run_audit"]

logger = logging.getLogger(__name__)

#: minimum images per set: PRDC needs k + 1 = 6 per set, and fewer make every number noise
MIN_IMAGES = 8
#: below this many images per set the privacy section carries a warning that its flags are weak evidence
SMALL_SAMPLE = 50


# ---------------------------------------------------------------------------------------------------- the audit
def _as_image_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().float().cpu()
    if t.ndim not in (4, 5):
        raise DataError(f"run_audit: {name} images must be (N, C, H, W) or (N, C, H, W, D), got shape {tuple(t.shape)}")
    if t.shape[0] < MIN_IMAGES:
        raise DataError(f"run_audit: {name} has {t.shape[0]} images; the audit needs at least {MIN_IMAGES} per set")
    if not torch.isfinite(t).all():
        raise DataError(f"run_audit: {name} images contain {int((~torch.isfinite(t)).sum())} NaN/Inf values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1.05 or hi > 1.05:
        raise DataError(f"run_audit: {name} images must lie in [-1, 1], found [{lo:.3g}, {hi:.3g}]: normalise first")
    return t.clamp(-1.0, 1.0)


def _subsample(n: int, cap: int | None, gen: torch.Generator) -> torch.Tensor:
    if cap is None or n <= cap:
        return torch.arange(n)
    return torch.randperm(n, generator=gen)[:cap].sort().values


def _feature_spaces(
    features: Sequence[str | FeatureSpace],
    classifier: nn.Module | None,
    classifier_layer: str | Callable | None,
    classifier_preprocess: Callable | None,
    seed: int,
    n_seeds: int,
    batch_size: int,
    device: str | torch.device | None,
) -> list[FeatureSpace]:
    spaces: list[FeatureSpace] = []
    for name in features:
        if isinstance(name, FeatureSpace):
            spaces.append(name)
        elif name == "randcnn":
            spaces.append(RandomCNNFeatures(seeds=range(seed, seed + n_seeds), batch_size=batch_size, device=device))
        elif name == "classifier":
            if classifier is None:
                raise ValueError("run_audit: feature space 'classifier' needs a classifier (a trained nn.Module)")
            spaces.append(ClassifierFeatures(classifier, classifier_layer, classifier_preprocess, batch_size))
        else:
            raise ValueError(f"run_audit: unknown feature space {name!r} (use 'randcnn' and/or 'classifier')")
    return spaces


def run_audit(
    train_images: torch.Tensor | np.ndarray,
    real_images: torch.Tensor | np.ndarray,
    synthetic_images: torch.Tensor | np.ndarray,
    out_dir: str | os.PathLike | None = None,
    features: Sequence[str | FeatureSpace] | str = ("randcnn",),
    classifier: nn.Module | None = None,
    classifier_layer: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
    classifier_preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_images: int | None = 1000,
    seed: int = 0,
    n_seeds: int = 3,
    k: int = 5,
    n_pairs: int = 500,
    kid_subsets: int = 100,
    n_resamples: int = 1000,
    copy_percentile: float = COPY_PERCENTILE,
    fixed_copy_threshold: float = FIXED_COPY_THRESHOLD,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    figures: bool = True,
    setup_info: dict | None = None,
) -> dict:
    """Audit synthetic images for quality and memorisation; optionally write ``audit.json`` + figures to ``out_dir``.

    Args:
        train_images: ``(N_T, C, *spatial)`` in [-1, 1]: the images the generator was trained on (T).
        real_images: ``(N_R, C, *spatial)``: held-out real images, never seen by the generator (R).
        synthetic_images: ``(N_S, C, *spatial)``: generated images (S). All three share C and spatial shape.
        out_dir: where to write ``audit.json``, the figures and ``distances.npz``; None writes nothing.
        features: feature spaces, any of ``"randcnn"`` (fixed random CNNs, ``n_seeds`` seeds) and ``"classifier"``
            (needs ``classifier``), or ready ``FeatureSpace`` objects (e.g. a ``ClassifierFeatures`` with its own
            preprocessing, a smaller ``RandomCNNFeatures``); a comma-separated string works too. Pixel space is
            always audited for privacy.
        classifier: a trained domain classifier (trained on a split separate from T: see ``ClassifierFeatures``).
        classifier_layer: its feature layer (default: input of its last Linear) or a callable ``batch -> features``.
        classifier_preprocess: optional ``batch -> batch`` mapping [-1, 1] to the classifier's input range.
        max_images: cap per set (seeded random subset); None: all.
        seed: seeds subsampling, pairs, subsets, bootstraps; random nets use seeds ``seed .. seed + n_seeds - 1``.
        k: PRDC neighbourhood size (Naeem et al.: 5).
        n_pairs: random pairs for MS-SSIM diversity.
        kid_subsets: subsets for KID.
        n_resamples: bootstrap resamples for the CIs (0: none).
        copy_percentile / fixed_copy_threshold: near-copy definitions (see ``common.privacy.memorization``).
        batch_size / device: for feature extraction (device None: CUDA when available).
        figures: write the PNG figures (needs matplotlib) when ``out_dir`` is given.
        setup_info: extra entries for both ``setup`` sections (e.g. the source folders and intensity mapping).

    Returns:
        ``{"synthesis": {...}, "privacy": {...}}`` (see the module docstrings of ``common.metrics.quality`` and
        ``common.privacy.memorization`` for each entry); each section has a ``setup`` entry with sizes and settings.
        The synthesis metrics compare n = min(N_S, N_R) synthetic and held-out images with all (capped) of T.
    """
    start = time.perf_counter()
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",") if f.strip()]
    train = _as_image_tensor(train_images, "train")
    real = _as_image_tensor(real_images, "real (held-out)")
    syn = _as_image_tensor(synthetic_images, "synthetic")
    shapes = {name: tuple(t.shape[1:]) for name, t in (("train", train), ("real", real), ("synthetic", syn))}
    if len(set(shapes.values())) != 1:
        raise DataError(f"run_audit: the three sets need the same (C, *spatial) shape, got {shapes}")

    gen = torch.Generator().manual_seed(seed)
    train = train[_subsample(len(train), max_images, gen)]
    real = real[_subsample(len(real), max_images, gen)]
    syn = syn[_subsample(len(syn), max_images, gen)]
    # Quality metrics depend on sample size: compare synthetic and held-out real at the same n.
    n = min(len(real), len(syn))
    q_real = _subsample(len(real), n, gen)
    q_syn = _subsample(len(syn), n, gen)

    spaces = _feature_spaces(
        features, classifier, classifier_layer, classifier_preprocess, seed, n_seeds, batch_size, device
    )
    names = [s.name for s in spaces]
    if len(set(names)) != len(names) or "pixel" in names:
        raise ValueError(f"run_audit: feature space names must be unique and not 'pixel', got {names}")
    feats: dict[str, dict[str, list[np.ndarray]]] = {}
    for space in spaces:
        f_t, f_r, f_s = space.extract(train), space.extract(real), space.extract(syn)
        # Quality metrics: z-score with T's statistics (the reference), so that every feature weighs alike in the
        # distances and kernels (see standardize) and S and R, both outside T, are treated the same way.
        z = [standardize(t, r, s) for t, r, s in zip(f_t, f_r, f_s, strict=True)]
        feats[space.name] = {"train": [a[0] for a in z], "real": [a[1] for a in z], "synthetic": [a[2] for a in z]}

    ms_cfg = ms_ssim_config(train.shape[2:])
    synthesis_details: dict[str, dict] = {}
    synthesis: dict[str, Any] = {
        "setup": {
            "n_train": len(train),
            "n_real_heldout": len(real),
            "n_synthetic": len(syn),
            "n_compared": n,
            "image_shape": list(train.shape[1:]),
            "feature_spaces": [s.name for s in spaces],
            "replicates": {s.name: s.replicates for s in spaces},
            "reference": "train",
            "real_baseline": "held-out real vs train, same n as synthetic",
            "prdc_k": k,
            "ms_ssim": {"kernel_size": ms_cfg["kernel_size"], "scales": ms_cfg["scales"], "weights": ms_cfg["weights"]},
        }
    }
    for space in spaces:
        f = feats[space.name]
        synthesis_details.update(
            feature_space_quality(
                f["train"],
                [a[q_real.numpy()] for a in f["real"]],
                [a[q_syn.numpy()] for a in f["synthetic"]],
                name=space.name,
                k=k,
                kid_subsets=kid_subsets,
                n_resamples=n_resamples,
                seed=seed,
            )
        )
    div_s = ms_ssim_diversity(syn[q_syn], n_pairs=n_pairs, seed=seed, n_resamples=n_resamples, config=ms_cfg)
    div_r = ms_ssim_diversity(real[q_real], n_pairs=n_pairs, seed=seed, n_resamples=n_resamples, config=ms_cfg)
    synthesis_details["ms_ssim_diversity"] = {
        "value": div_s["value"],
        "ci95": div_s["ci95"],
        "real_baseline": div_r["value"],
        "real_baseline_ci95": div_r["ci95"],
        "n_pairs": n_pairs,
    }

    # Privacy: every (capped) image counts here; nearest-neighbour statistics do not depend on the set sizes matching.
    distances: dict[str, list[dict[str, np.ndarray]]] = {
        "pixel": [nearest_train_distances(normalised_vectors(train), normalised_vectors(real), normalised_vectors(syn))]
    }
    for space in spaces:
        f = feats[space.name]
        distances[space.name] = []
        for t, r, s in zip(f["train"], f["real"], f["synthetic"], strict=True):
            # Privacy: z-score with the statistics of all three sets pooled. With T's statistics alone, training
            # images would sit closer to the centre than held-out ones (in-sample fit, ~F/N in squared norm), which
            # in many dimensions alone makes members look closer to everything: a false membership signal.
            zt, zr, zs = standardize(np.concatenate([t, r, s]), t, r, s)[1:]
            distances[space.name].append(
                nearest_train_distances(normalised_vectors(zt), normalised_vectors(zr), normalised_vectors(zs))
            )
    privacy_details: dict[str, dict] = {}
    privacy: dict[str, Any] = {
        "setup": {
            "n_train": len(train),
            "n_real_heldout": len(real),
            "n_synthetic": len(syn),
            "spaces": list(distances),
            "distance": "normalised L2 (RMS difference; features z-scored with the pooled statistics of all sets)",
            "copy_percentile": copy_percentile,
            "fixed_copy_threshold_pixel": fixed_copy_threshold,
        }
    }
    for space_name, dist in distances.items():
        privacy_details.update(
            memorization_metrics(
                dist,
                space_name,
                copy_percentile=copy_percentile,
                fixed_threshold=fixed_copy_threshold if space_name == "pixel" else None,
                n_resamples=n_resamples,
                seed=seed,
            )
        )
    for section in (synthesis, privacy):
        section["setup"].update(setup_info or {})
    if min(len(train), len(real), len(syn)) < SMALL_SAMPLE:
        note = f"fewer than {SMALL_SAMPLE} images in a set: wide CIs, isolated flags are weak evidence"
        privacy["setup"]["warnings"] = [note]
        logger.warning("audit: %s", note)
    flags = privacy_flags(privacy_details)
    privacy["memorization_suspected"] = bool(flags)
    privacy["flags"] = flags
    # Headline numbers flat (what report.json's "synthesis"/"privacy" hold and what averages over folds), the full
    # entries (CIs, per-seed values, thresholds) under "details".
    synthesis.update(_headline(synthesis_details))
    synthesis["details"] = synthesis_details
    privacy.update(_headline(privacy_details))
    privacy["details"] = privacy_details

    result = {"synthesis": synthesis, "privacy": privacy}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if figures:
            written = _write_figures(out, train, real, syn, feats, distances, seed)
        privacy_figures = ("nearest_pairs.png", "nn_distance_hist.png")
        synthesis["setup"]["figures"] = [p for p in written if p not in privacy_figures]
        privacy["setup"]["figures"] = [p for p in written if p in privacy_figures]
        np.savez_compressed(
            out / "distances.npz",
            **{f"{space}_{key}": dist[0][key] for space, dist in distances.items() for key in dist[0]},
        )
    synthesis["setup"]["seconds"] = round(time.perf_counter() - start, 2)
    result = _json_safe(result)
    if out_dir is not None:
        (Path(out_dir) / "audit.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _headline(details: dict[str, dict]) -> dict[str, float | None]:
    """``{metric: value, metric_real_baseline: baseline}`` from the detailed entries (scalars only)."""
    flat: dict[str, float | None] = {}
    for key, entry in details.items():
        flat[key] = entry.get("value")
        if "real_baseline" in entry:
            flat[f"{key}_real_baseline"] = entry["real_baseline"]
    return flat


def _json_safe(obj: Any) -> Any:
    """Plain Python types for JSON; NaN/Inf (undefined metrics) become null rather than invalid JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ------------------------------------------------------------------------------------------------------ figures
def _display(img: torch.Tensor) -> np.ndarray:
    """One image ``(C, *spatial)`` in [-1, 1] as uint8 RGB, oriented as ``common.viz`` shows every image."""
    return to_display(img[None])[0]


def _pca_2d(fit: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Project arrays on the first two principal axes of ``fit`` (numpy SVD; centred on ``fit``'s mean)."""
    mean = fit.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    return [(a - mean) @ vt[:2].T for a in arrays]


def _write_figures(
    out: Path,
    train: torch.Tensor,
    real: torch.Tensor,
    syn: torch.Tensor,
    feats: dict[str, dict[str, list[np.ndarray]]],
    distances: dict[str, list[dict[str, np.ndarray]]],
    seed: int,
) -> list[str]:
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


# ------------------------------------------------------------------------------------------------ file loading
def _list_source(source: str | os.PathLike, max_images: int | None, seed: int) -> list[str]:
    """Image paths of a folder (recursive) or a datalist JSON (``file.json#section``, default ``training``)."""
    from common.data.io import has_image_suffix

    text = os.fspath(source)
    path_part, _, section = text.partition("#")
    path = Path(path_part)
    if path.is_dir():
        files = sorted(
            str(p) for p in path.rglob("*") if p.is_file() and has_image_suffix(p) and not p.name.startswith(".")
        )
        if not files:
            raise DataError(f"audit: folder '{path}' holds no image files (searched recursively)")
    elif path.is_file() and path.suffix.lower() == ".json":
        from common.data.datalist import read_datalist

        content = read_datalist(path)
        key = section or "training"
        items = content.get(key)
        if not isinstance(items, list) or not items:
            raise DataError(f"audit: datalist '{path}' has no non-empty '{key}' section")
        files = [it if isinstance(it, str) else it.get("image") for it in items]
        if any(not isinstance(f, str) for f in files):
            raise DataError(f"audit: datalist '{path}' section '{key}' has items without an 'image' path")
    else:
        raise DataError(f"audit: '{text}' is neither a folder nor a datalist .json file")
    if max_images is not None and len(files) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(files), max_images, replace=False))
        files = [files[i] for i in keep]
    return files


def _fit_channels(x: np.ndarray, channels: int, path: str) -> np.ndarray:
    if x.shape[0] == 4 and channels in (1, 3):  # RGBA: the alpha channel is no image content
        x = x[:3]
    if x.shape[0] == channels:
        return x
    if x.shape[0] == 3 and channels == 1:
        return x.mean(axis=0, keepdims=True)
    if x.shape[0] == 1 and channels == 3:
        return np.repeat(x, 3, axis=0)
    raise DataError(f"audit: image '{path}' has {x.shape[0]} channels, the synthetic images have {channels}")


def _resize(x: np.ndarray, spatial: Sequence[int]) -> np.ndarray:
    if tuple(x.shape[1:]) == tuple(spatial):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    shrink = all(s <= c for s, c in zip(spatial, x.shape[1:], strict=True))
    # Area averaging when shrinking (no aliasing); linear interpolation when any axis grows.
    mode = "area" if shrink else ("bilinear" if len(spatial) == 2 else "trilinear")
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(t, size=tuple(spatial), mode=mode, **kwargs)[0].numpy()


def load_image_set(
    source: str | os.PathLike,
    max_images: int | None = None,
    seed: int = 0,
    shape: Sequence[int] | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """Read the images of a folder (recursive) or datalist JSON with ``common.data.io.read_image``.

    Args:
        source: folder, or ``datalist.json`` / ``datalist.json#section``.
        max_images: read only a seeded random subset of this many files.
        shape: ``(C, *spatial)`` to convert every image to (channels: RGB <-> grey; spatial: area / linear resize);
            None: as read.

    Returns:
        ``(arrays, paths)``: float32 arrays ``(C, *spatial)`` in their file intensities, and their paths.
    """
    from common.data.io import read_image

    paths = _list_source(source, max_images, seed)
    arrays = []
    for p in paths:
        a = read_image(p)
        if shape is not None:
            a = _resize(_fit_channels(a, int(shape[0]), p), shape[1:])
        arrays.append(a.astype(np.float32))
    return arrays, paths


def _normalise_sets(sets: list[np.ndarray], mode: str) -> tuple[list[np.ndarray], dict]:
    """Map file intensities to [-1, 1] the same way for all sets (``sets[0]`` is the training set).

    ``auto``: integer data in 0..255 (8-bit PNG/JPG) -> ``x / 127.5 - 1``; anything else -> ``percentile``.
    ``percentile``: the training set's 0.5 / 99.5 percentiles -> -1 / 1, clipped (robust to outliers, shared by the
    three sets so that an intensity shift of the generator stays visible). ``per_image``: each image's min/max.
    ``none``: values are already in [-1, 1] (clipped).
    """
    if mode == "auto":
        eight_bit = all(s.size and s.min() >= 0 and s.max() <= 255 and np.array_equal(s, np.round(s)) for s in sets)
        mode = "uint8" if eight_bit else "percentile"
    if mode == "uint8":
        return [np.clip(s / 127.5 - 1.0, -1, 1) for s in sets], {"intensity": "uint8: x / 127.5 - 1"}
    if mode == "percentile":
        sample = sets[0].ravel()
        if sample.size > 10_000_000:
            sample = np.random.default_rng(0).choice(sample, 10_000_000, replace=False)
        lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
        scale = hi - lo if hi > lo else 1.0
        out = [np.clip(2.0 * (s - lo) / scale - 1.0, -1, 1) for s in sets]
        return out, {"intensity": "train percentiles 0.5/99.5 -> [-1, 1]", "intensity_range": [lo, hi]}
    if mode == "per_image":
        out = []
        for s in sets:
            axes = tuple(range(1, s.ndim))
            lo, hi = s.min(axis=axes, keepdims=True), s.max(axis=axes, keepdims=True)
            out.append(2.0 * (s - lo) / np.where(hi > lo, hi - lo, 1.0) - 1.0)
        return out, {"intensity": "per image min/max -> [-1, 1]"}
    if mode == "none":
        return [np.clip(s, -1, 1) for s in sets], {"intensity": "none (already in [-1, 1])"}
    raise ValueError(f"unknown intensity mode {mode!r}: use auto, uint8, percentile, per_image or none")


def load_classifier(
    checkpoint: str | os.PathLike, definition: str | dict | None = None, device: str | torch.device | None = None
) -> nn.Module:
    """Build the classifier for the ``classifier`` feature space.

    A TorchScript model (no ``definition``) can serve the ``classifier`` feature space only from Python, with a
    callable ``classifier_layer``: TorchScript takes no forward hooks. The command line therefore needs a definition.

    Args:
        checkpoint: TorchScript file (when ``definition`` is None) or a state dict file (``torch.save``); a dict that
            nests the weights under ``model``/``network``/``state_dict``/``classifier``/``net`` (Ignite
            ``CheckpointSaver``) works too, and a ``module.`` prefix (DataParallel) is removed.
        definition: a MONAI config of the network: a dict or JSON string with ``_target_``
            (``{"_target_": "monai.networks.nets.DenseNet121", "spatial_dims": 2, ...}``), or a bundle config file
            whose ``network_def`` (or ``file.json#<id>``) is parsed with ``monai.bundle.ConfigParser``.
    """
    from monai.bundle import ConfigParser

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if definition is None:
        return torch.jit.load(str(checkpoint), map_location=dev).eval()
    if isinstance(definition, str) and definition.lstrip().startswith("{"):
        definition = json.loads(definition)
    if isinstance(definition, dict):
        parser = ConfigParser({"network_def": definition})
        key = "network_def"
    else:
        path_part, _, key = str(definition).partition("#")
        parser = ConfigParser()
        parser.read_config(path_part)
        key = key or "network_def"
    net = parser.get_parsed_content(key)
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for nested in ("model", "network", "state_dict", "classifier", "net"):
            if isinstance(state.get(nested), dict):
                state = state[nested]
                break
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    net.load_state_dict(state)
    return net.to(dev).eval()


def _as_items(source: Sequence[dict | str | os.PathLike]) -> list[dict]:
    return [dict(it) if isinstance(it, dict) else {"image": os.fspath(it)} for it in source]


def _subsample_items(items: list[dict], max_images: int | None, seed: int) -> list[dict]:
    if max_images is None or len(items) <= max_images:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), max_images, replace=False))
    return [items[i] for i in keep]


def audit_datalists(
    train: Sequence[dict | str | os.PathLike],
    real: Sequence[dict | str | os.PathLike],
    synthetic: Sequence[dict | str | os.PathLike],
    out_dir: str | os.PathLike,
    transforms: Callable[[dict], dict] | None = None,
    intensity: str = "auto",
    image_shape: Sequence[int] | None = None,
    max_images: int | None = 1000,
    seed: int = 0,
    **kwargs: Any,
) -> dict:
    """``run_audit`` on three lists of datalist items (``{"image": path, ...}``) or paths, e.g. one fold's sets.

    Args:
        train / real / synthetic: the generator's training items, held-out real items (e.g. the fold's test split,
            which the generator never saw) and synthetic items.
        transforms: optional MONAI dictionary transform (``LoadImaged`` + intensity window to [-1, 1], as the
            bundles' training pipeline) applied to each item; its ``"image"`` output is used as it is (clipped to
            [-1, 1]). It must be deterministic (no random augmentation). None: files are read with
            ``common.data.io.read_image`` and mapped to [-1, 1] by ``intensity`` (see ``_normalise_sets``).
        image_shape: ``(C, *spatial)`` every image is converted to; default: that of the first synthetic image.
        max_images: seeded random subset per set, drawn before anything is read.
        kwargs: passed to ``run_audit`` (``features``, ``classifier``, ``n_resamples``, ``device``, ...).
    """
    from common.data.io import read_image

    sets = [_subsample_items(_as_items(x), max_images, seed) for x in (train, real, synthetic)]
    for name, items in zip(("train", "real", "synthetic"), sets, strict=True):
        if not items:
            raise DataError(f"audit: the {name} set is empty")

    def load(item: dict) -> np.ndarray:
        if transforms is None:
            return read_image(item["image"])
        out = transforms(dict(item))
        img = out["image"] if isinstance(out, dict) else out
        return np.asarray(img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else img, dtype=np.float32)

    first = load(sets[2][0])
    shape = tuple(image_shape) if image_shape is not None else tuple(first.shape)
    stacked = [
        np.stack([_resize(_fit_channels(load(it), int(shape[0]), it["image"]), shape[1:]) for it in items])
        for items in sets
    ]
    if transforms is None:
        normalised, info = _normalise_sets(stacked, intensity)
    else:
        normalised, info = [np.clip(a, -1.0, 1.0) for a in stacked], {"intensity": "the given transforms"}
    tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in normalised]
    info.update(kwargs.pop("setup_info", None) or {})
    return run_audit(*tensors, out_dir=out_dir, max_images=max_images, seed=seed, setup_info=info, **kwargs)


def audit_files(
    train: str | os.PathLike,
    real: str | os.PathLike,
    synthetic: str | os.PathLike,
    out_dir: str | os.PathLike,
    intensity: str = "auto",
    image_shape: Sequence[int] | None = None,
    max_images: int | None = 1000,
    seed: int = 0,
    **kwargs: Any,
) -> dict:
    """``audit_datalists`` on three folders (searched recursively) or datalist JSONs (``file.json#section``).

    Every image is converted to the channels and spatial shape of the first synthetic image (the generator's output
    size) unless ``image_shape`` ``(C, *spatial)`` is given, then mapped to [-1, 1] with ``intensity`` (see
    ``_normalise_sets``; the same mapping for the three sets). Other keyword arguments go to ``run_audit``.
    """
    paths = [_list_source(src, None, seed) for src in (train, real, synthetic)]
    sources = {"train": os.fspath(train), "real": os.fspath(real), "synthetic": os.fspath(synthetic)}
    info = dict(kwargs.pop("setup_info", None) or {}, sources=sources)
    return audit_datalists(
        *paths,
        out_dir,
        intensity=intensity,
        image_shape=image_shape,
        max_images=max_images,
        seed=seed,
        setup_info=info,
        **kwargs,
    )


class SynthesisAudit:
    """The audit as a bundle-config object: settings at construction, the three image sets at call time.

    Config use::

        "audit": {"_target_": "common.audit.SynthesisAudit", "out_dir": "@output_dir", "max_images": 1000},
        "audit_result": "$@audit(@train_images, @heldout_images, @synthetic_images)"

    ``__call__(train, real, synthetic)`` takes tensors ``(N, C, *spatial)`` in [-1, 1] (``run_audit``);
    ``from_files(train, real, synthetic)`` takes folders / datalists (``audit_files``). Both return
    ``{"synthesis": ..., "privacy": ...}``, ready to merge into ``report.json``.
    Keyword arguments are those of ``run_audit`` (``features``, ``classifier``, ``seed``, ``device``, ...).
    """

    def __init__(self, out_dir: str | os.PathLike | None = None, **kwargs: Any) -> None:
        self.out_dir = out_dir
        self.kwargs = kwargs

    def __call__(
        self,
        train_images: torch.Tensor | np.ndarray,
        real_images: torch.Tensor | np.ndarray,
        synthetic_images: torch.Tensor | np.ndarray,
    ) -> dict:
        return run_audit(train_images, real_images, synthetic_images, out_dir=self.out_dir, **self.kwargs)

    def from_files(self, train: str | os.PathLike, real: str | os.PathLike, synthetic: str | os.PathLike) -> dict:
        if self.out_dir is None:
            raise ValueError("SynthesisAudit.from_files needs out_dir")
        return audit_files(train, real, synthetic, self.out_dir, **self.kwargs)


# --------------------------------------------------------------------------------------------------------- CLI
def _summary(result: dict) -> str:
    lines = []
    for section in ("synthesis", "privacy"):
        lines.append(f"[{section}]")
        for key, entry in result[section]["details"].items():
            if entry.get("value") is not None:
                base_txt = ""
                if isinstance(entry.get("real_baseline"), (int, float)):
                    base_txt = f"   (real baseline {entry['real_baseline']:.4g})"
                elif isinstance(entry.get("ideal"), (int, float)):
                    base_txt = f"   (ideal {entry['ideal']:.4g})"
                lines.append(f"  {key:34s} {entry['value']:.4g}{base_txt}")
    flags = result["privacy"].get("flags") or []
    lines.append("memorisation flags: " + ("; ".join(flags) if flags else "none"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``python -m common.audit --train T --real R --synthetic S --out DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m common.audit",
        description="Synthesis quality and privacy audit: writes DIR/audit.json ({synthesis, privacy}) and figures.",
    )
    parser.add_argument("--train", required=True, help="images the generator was trained on: folder or datalist JSON")
    parser.add_argument("--real", required=True, help="held-out real images (never seen by the generator)")
    parser.add_argument("--synthetic", required=True, help="synthetic images: folder or datalist JSON")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--features", default="randcnn", help="comma-separated: randcnn, classifier")
    parser.add_argument("--classifier", default=None, help="classifier weights (state dict / Ignite checkpoint)")
    parser.add_argument("--classifier_def", default=None, help="network config: JSON string or config file[#id]")
    parser.add_argument("--classifier_layer", default=None, help="feature layer name (default: input of last Linear)")
    parser.add_argument("--max_images", type=int, default=1000, help="cap per set (seeded subset); 0 = all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intensity", default="auto", choices=["auto", "uint8", "percentile", "per_image", "none"])
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--n_resamples", type=int, default=1000, help="bootstrap resamples for CIs (0: none)")
    parser.add_argument("--no_figures", action="store_true", help="skip the PNG figures")
    args = parser.parse_args(argv)

    features = [f.strip() for f in args.features.split(",") if f.strip()]
    classifier = None
    if args.classifier is not None and args.classifier_def is None:
        parser.error("--classifier needs --classifier_def (the network config): layers are read with forward hooks")
    if args.classifier is not None:
        classifier = load_classifier(args.classifier, args.classifier_def, args.device)
        if "classifier" not in features:
            features.append("classifier")
    start = time.perf_counter()
    result = audit_files(
        args.train,
        args.real,
        args.synthetic,
        args.out,
        intensity=args.intensity,
        max_images=args.max_images or None,
        seed=args.seed,
        features=features,
        classifier=classifier,
        classifier_layer=args.classifier_layer,
        n_resamples=args.n_resamples,
        device=args.device,
        figures=not args.no_figures,
    )
    print(_summary(result))
    print(f"wrote {Path(args.out) / 'audit.json'} in {time.perf_counter() - start:.1f} s")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
