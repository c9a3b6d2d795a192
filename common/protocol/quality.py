"""The quality line at the end of every ``training`` run: how close is the generator to real data it never saw?

``holdout_split`` keeps a patient-separated part of the training data away from the GAN (made once, saved next to
the run, reused on resume); ``GeneratorQuality`` samples the trained generator(s), audits the samples against the
training images and that held-out part with ``common.audit.run_audit`` (fixed random-CNN features: no downloaded
weights), writes ``quality.json`` (+ the audit's figures, among them ``nearest_pairs.png``: samples beside their
nearest real training images) and prints one line::

    quality: precision 0.81 (real 0.86)  recall 0.70 (0.88)  coverage 0.74 (0.87)  Frechet 1.6x real-vs-real

Every number has its real-vs-real baseline beside it (held-out real vs training images, same sample size, same
features), which is the value a perfect generator would get; the Frechet ratio is synthetic / real-vs-real.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import DataError
from common.protocol.folds import fingerprint, patient_folds, select
from common.protocol.late_steps import late_step

logger = logging.getLogger(__name__)

QUALITY_FILE = "quality.json"
HEADLINE = ("precision", "recall", "density", "coverage")


def holdout_split(
    items: Sequence[dict], fraction: float, seed: int, path: str | os.PathLike | None = None, label_key: str = "label"
) -> dict[str, list[dict]]:
    """Split ``items`` into ``{"train", "holdout"}`` by patient (stratified by class), about ``fraction`` held out.

    ``path``: a JSON file that keeps the held-out patients, so a resumed or repeated run uses the same split; a saved
    split for other data or settings is an error (it would leak held-out images into training).
    ``fraction`` 0 returns everything as ``train`` and an empty ``holdout``.
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise DataError(f"quality_holdout must be in [0, 1), got {fraction}")
    items = list(items)
    if fraction == 0:
        return {"train": items, "holdout": []}
    key = {"fraction": float(fraction), "seed": int(seed), "fingerprint": fingerprint(items, label_key)}
    p = Path(path) if path is not None else None
    if p is not None and p.is_file():
        saved = json.loads(p.read_text())
        if {k: saved.get(k) for k in key} != key:
            raise DataError(f"'{p}' holds a held-out split for other data or settings: use a new output_dir")
        held = set(saved["holdout_patients"])
    else:
        labels_by_patient: dict[str, int] = {}
        for it in items:
            label = it.get(label_key, 0)  # a class index, or a label map's path (brain): then no strata
            labels_by_patient.setdefault(str(it.get("patient", it["image"])), label if isinstance(label, int) else 0)
        k = max(2, int(round(1.0 / float(fraction))))
        held = set(patient_folds(labels_by_patient, k, int(seed) + 7919)[0])
        if p is not None:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({**key, "holdout_patients": sorted(held)}, indent=1))
            os.replace(tmp, p)
    holdout = select(items, held)
    train = [it for it in items if str(it.get("patient", it["image"])) not in held]
    if not train or not holdout:
        raise DataError(f"quality_holdout={fraction}: {len(items)} images are too few to hold out a part")
    return {"train": train, "holdout": holdout}


def _load(items: Sequence[dict], transforms: Callable[[dict], dict], key: str = "image") -> torch.Tensor:
    return torch.stack([torch.as_tensor(transforms(dict(it))[key]).float() for it in items]).clamp(-1.0, 1.0)


@torch.no_grad()
def sample_generators(
    generators: Mapping[str, nn.Module],
    class_names: Sequence[str],
    counts: Sequence[int],
    seed: int = 0,
    batch_size: int = 64,
) -> torch.Tensor:
    """``counts[c]`` images of each class from ``{"conditional": G}`` or one G per class name, in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for label, (name, n) in enumerate(zip(class_names, counts, strict=True)):
        if n <= 0:
            continue
        g = generators.get("conditional", generators.get(name))
        if g is None:
            raise DataError(f"no generator for class '{name}' (have {sorted(generators)})")
        device = next(g.parameters()).device
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = g.sample_latent(b, device="cpu", generator=gen).to(device)
            labels = torch.full((b,), label, dtype=torch.long, device=device)
            x = g(z, labels) if "conditional" in generators else g(z)
            out.append(x.float().cpu().contiguous())
    return torch.cat(out).clamp(-1.0, 1.0)


def quality_line(summary: Mapping) -> str:
    """The one line a training run prints (see the module docstring)."""

    def fmt(v) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    parts = [f"{m} {fmt(summary.get(m))} (real {fmt(summary.get(m + '_real_baseline'))})" for m in HEADLINE]
    ratio = summary.get("frechet_ratio")
    parts.append(f"Frechet {fmt(ratio)}x real-vs-real")
    return "quality: " + "  ".join(parts)


def summarise_audit(synthesis: Mapping, space: str = "randcnn") -> dict:
    """The headline numbers of an audit's ``synthesis`` section (one feature space) as ``quality.json`` holds them."""
    out: dict = {}
    for m in HEADLINE:
        out[m] = synthesis.get(f"{m}_{space}")
        out[f"{m}_real_baseline"] = synthesis.get(f"{m}_{space}_real_baseline")
    fd, fd_base = synthesis.get(f"frechet_distance_{space}"), synthesis.get(f"frechet_distance_{space}_real_baseline")
    out["frechet_distance"], out["frechet_distance_real_baseline"] = fd, fd_base
    out["frechet_ratio"] = fd / fd_base if fd is not None and fd_base else None
    return out


class GeneratorQuality:
    """Audit trained generator(s) against the training images and a held-out real part; write ``quality.json``.

    Args:
        out_dir: where ``quality.json`` and the audit (``quality_audit/``: ``audit.json``, figures) go.
        max_images: cap per set (as the protocols' audits).
        n_seeds: random-CNN feature nets averaged.
        seed: sampling and audit seed.
        targets: the issue's quality targets, recorded beside the values (``met`` per metric).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        max_images: int = 1000,
        n_seeds: int = 3,
        n_resamples: int = 200,
        seed: int = 0,
        targets: Mapping[str, float] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.max_images = int(max_images)
        self.n_seeds = int(n_seeds)
        self.n_resamples = int(n_resamples)
        self.seed = int(seed)
        self.targets = dict(targets or {"precision": 0.7, "recall": 0.6, "coverage": 0.6})

    def __call__(
        self,
        generators: Mapping[str, nn.Module],
        class_names: Sequence[str],
        train_items: Sequence[dict],
        holdout_items: Sequence[dict],
        transforms: Callable[[dict], dict],
        training_info: Mapping | None = None,
        label_key: str = "label",
    ) -> dict:
        from common.audit import MIN_IMAGES

        start = time.perf_counter()
        if min(len(train_items), len(holdout_items)) < MIN_IMAGES:
            logger.warning(
                "quality: %d training / %d held-out images (a set < %d): no quality audit",
                len(train_items), len(holdout_items), MIN_IMAGES,
            )  # fmt: skip
            return {}
        train = _load(train_items, transforms)
        real = _load(holdout_items, transforms)
        # as many synthetic images as held-out ones, in the training set's class proportions
        freq = np.bincount([int(it.get(label_key, 0) or 0) for it in train_items], minlength=len(class_names))
        n = max(len(real), MIN_IMAGES)
        counts = np.floor(freq / freq.sum() * n).astype(int)
        counts[np.argmax(freq)] += n - counts.sum()
        present = {"conditional"} if "conditional" in generators else set(generators)
        counts = [
            c if ("conditional" in present or name in present) else 0
            for name, c in zip(class_names, counts, strict=True)
        ]
        syn = sample_generators(generators, class_names, counts, seed=self.seed)
        return self.audit(train, real, syn, training_info, started=start)

    def audit(
        self,
        train: torch.Tensor,
        real: torch.Tensor,
        synthetic: torch.Tensor,
        training_info: Mapping | None = None,
        started: float | None = None,
    ) -> dict:
        """Audit three image sets ``(N, C, *spatial)`` in [-1, 1] (training, held-out real, synthetic); write
        ``quality.json``, print the quality line, return the result."""
        from common.audit import run_audit

        start = time.perf_counter() if started is None else started
        audit = run_audit(
            train, real, synthetic, out_dir=self.out_dir / "quality_audit", max_images=self.max_images,
            n_seeds=self.n_seeds, n_resamples=self.n_resamples, seed=self.seed,
        )  # fmt: skip
        summary = summarise_audit(audit["synthesis"])
        result = {
            **summary,
            "targets": {m: {"target": t, "met": (summary.get(m) or 0) >= t} for m, t in self.targets.items()},
            "n_train": len(train),
            "n_heldout": len(real),
            "n_synthetic": len(synthetic),
            "features": f"fixed random CNNs ({self.n_seeds} seeds), z-scored with the training images' statistics",
            "baseline": "held-out real vs training images, same sample size and features",
            "figures": "quality_audit/nearest_pairs.png (samples beside their nearest training images)",
            "training": dict(training_info or {}),
            "audit_seconds": round(time.perf_counter() - start, 1),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.out_dir / f".{QUALITY_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, self.out_dir / QUALITY_FILE)
        print(quality_line(result), flush=True)
        return result


def training_record(gan_dir: str | os.PathLike, per_class: bool = True) -> dict:
    """Steps, images and seconds of the GAN(s) in ``gan_dir``, summed over their ``training_done.json``: one per
    sub-folder (``fit_gans``: a GAN per class, or ``conditional/``), or ``gan_dir``'s own (``per_class=False``)."""
    from common.engines.gan_training import DONE_FILE

    record = {"iterations": 0, "images_seen": 0, "seconds": 0.0, "gans": 0}
    for done in sorted(Path(gan_dir).glob(f"*/{DONE_FILE}" if per_class else DONE_FILE)):
        d = json.loads(done.read_text())
        record["gans"] += 1
        record["iterations"] += int(d.get("iterations", 0))
        record["images_seen"] += int(d.get("iterations", 0)) * int(d.get("batch_size", 0))
        record["seconds"] += float(d.get("seconds", 0.0))
    record["seconds"] = round(record["seconds"], 1)
    return record


def finish_training(
    recipe,
    gan_dir: str | os.PathLike,
    class_names: Sequence[str],
    model_file: str | os.PathLike,
    split: Mapping[str, Sequence[dict]],
    transforms: Callable[[dict], dict],
    quality: GeneratorQuality | None,
    model_info: Mapping | None = None,
    classes: Sequence[str] | None = None,
) -> dict:
    """The end of a bundle's ``training``: load the trained generator(s) from ``gan_dir``, audit them against the
    training part and the held-out part of ``split`` (``quality.json``, one printed line), and write them as one
    model file (``common.engines.model_file``) whose information holds ``model_info``, the training record and the
    quality figures. Returns that information."""
    from common.engines import distributed
    from common.engines.gan_training import load_generators
    from common.engines.model_file import write_model_file

    if not distributed.is_rank0():  # several processes (torchrun): rank 0 audits and writes, as it trained
        return dict(model_info or {})
    generators = load_generators(recipe, str(gan_dir), class_names, classes=classes)
    info = {**dict(model_info or {}), "class_names": list(class_names), "training": training_record(gan_dir)}
    if quality is not None and split.get("holdout"):
        train, holdout = list(split["train"]), list(split["holdout"])
        if classes is not None:  # generators of some classes only (MelanoGANs: melanoma): audit against those
            wanted = {class_names.index(c) for c in classes}
            train = [it for it in train if int(it.get("label", -1)) in wanted]
            holdout = [it for it in holdout if int(it.get("label", -1)) in wanted]
        # a late step: a failed audit leaves the model file (without quality figures, saying why) to be written
        notes: list[str] = []
        result = late_step("quality audit", notes, quality, generators, class_names, train, holdout, transforms,
                           info["training"])  # fmt: skip
        info["quality"] = _quality_info(result, notes)
    write_model_file(generators, model_file, info)
    logger.info("generator(s) written to %s", model_file)
    return info


def _quality_info(result: dict | None, notes: list[str]) -> dict:
    """The quality figures a model file records; ``skipped`` (why there are none) when the audit failed or was
    skipped for a small set."""
    figures = {k: (result or {}).get(k) for k in ("n_train", "n_heldout", *summarise_keys())}
    if not result:
        figures["skipped"] = notes[0] if notes else "a set was too small for the audit (see the log)"
    return figures


def summarise_keys() -> list[str]:
    """The keys of ``summarise_audit``'s result, in order."""
    keys = [k for m in HEADLINE for k in (m, f"{m}_real_baseline")]
    return [*keys, "frechet_distance", "frechet_distance_real_baseline", "frechet_ratio"]


@torch.no_grad()
def _translated_slices(generator: nn.Module, cases: Sequence[dict], use_anatomy: bool, seed: int) -> torch.Tensor:
    """The generator's image for every brain slice of ``cases`` (as ``slice_items`` lists them), in [-1, 1]."""
    from common.data.io import read_image
    from common.engines.translation import translate_volume

    out = []
    for k, case in enumerate(cases):
        torch.manual_seed(seed * 100003 + k)  # pix2pix's dropout noise, as in synthesise_cases
        label, brain = read_image(case["label"]), read_image(case["brain"])
        anatomy = read_image(case["anatomy"]) if use_anatomy and case.get("anatomy") else None
        volume = translate_volume(generator, label, brain, anatomy, spatial_dims=2)  # (C, H, W, D)
        out.extend(torch.from_numpy(np.ascontiguousarray(volume[..., int(z)])) for z in case["slices"])
    return torch.stack(out)


def finish_pix2pix_training(
    recipe,
    gan_dir: str | os.PathLike,
    model_file: str | os.PathLike,
    split: Mapping[str, Sequence[dict]],
    quality: GeneratorQuality | None,
    model_info: Mapping | None = None,
    use_anatomy: bool = False,
    spatial_dims: int = 2,
) -> dict:
    """``finish_training`` for a label map -> image translator (pix2pix): the held-out cases' label maps are
    translated and their brain slices compared with the same real slices (and with the training cases' slices,
    the reference), then the generator is written as one model file (key ``"generator"``)."""
    from common.data.brain import slice_items
    from common.engines import distributed
    from common.engines.memory_format import plain_tensor
    from common.engines.model_file import write_model_file
    from common.engines.translation import load_generator, paired_transforms

    if not distributed.is_rank0():  # several processes (torchrun): rank 0 audits and writes, as it trained
        return dict(model_info or {})
    generator = load_generator(recipe, str(gan_dir))
    info = {**dict(model_info or {}), "training": training_record(gan_dir, per_class=False)}
    holdout = list(split.get("holdout") or [])
    if quality is not None and holdout and spatial_dims == 2:
        transforms = paired_transforms(2, use_anatomy)

        def real(cases):
            return torch.stack([plain_tensor(transforms(it)["image"]).float() for it in slice_items(cases)])

        def audit() -> dict:
            synthetic = _translated_slices(generator, holdout, use_anatomy, quality.seed)
            return quality.audit(real(split["train"]), real(holdout), synthetic, info["training"])

        notes: list[str] = []
        info["quality"] = _quality_info(late_step("quality audit", notes, audit), notes)
    elif quality is not None:
        logger.warning("quality: no held-out cases (or 3-D): no quality audit")
    write_model_file({"generator": generator}, model_file, info)
    logger.info("generator written to %s", model_file)
    return info
