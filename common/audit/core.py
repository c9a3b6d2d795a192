"""The audit itself: three image tensors in, ``{"synthesis": ..., "privacy": ...}`` out (see ``common.audit``)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.audit.figures import write_figures
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

__all__ = ["MIN_IMAGES", "SMALL_SAMPLE", "run_audit"]

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
            written = write_figures(out, train, real, syn, feats, distances, seed)
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
