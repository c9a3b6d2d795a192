"""Compare several generators of one class side by side (MelanoGANs: DCGAN vs LAPGAN vs DDGAN).

On one fold of the protocol's saved splits, every generator is trained on the fold's training images of one class
(the GANs never see the fold's test patients), generates ``n_synthetic`` images, and is scored against those
training images (the reference) with

- the direct image statistics of ``common.metrics.image_statistics`` (colour histograms, mean / std images,
  intensity and lesion size distributions), every generator beside the held-out real images of the same class
  (the real-vs-real baseline);
- the synthesis-quality and privacy audit of ``common.audit`` (Frechet distance, KID, precision / recall /
  density / coverage in random-CNN feature spaces, MS-SSIM diversity, nearest-neighbour memorisation), each
  beside its real-vs-real baseline.

Finished generators and audits are reused on a second run (resume); a generator whose recipe and training data are
those of the protocol's own GAN of that fold can train in the protocol's folder (``gan_dirs``), so it is trained once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose

from common.data.datalist import read_datalist
from common.engines.gan_training import fit_gans, load_generators
from common.engines.generation import generate_synthetic_set
from common.errors import DataError
from common.metrics.image_statistics import write_image_statistics
from common.protocol.folds import select
from common.protocol.late_steps import late_step
from common.viz import image_grid, save_png

__all__ = ["GeneratorComparison", "evaluate_with_generators", "render_generator_table"]

logger = logging.getLogger(__name__)


def _load(items: Sequence[dict], transforms: Compose) -> torch.Tensor:
    return torch.stack([torch.as_tensor(transforms(dict(it))["image"]).float() for it in items])


class GeneratorComparison:
    """Train, sample and score several generators of ``class_name`` on one fold; write ``comparison.json``.

    Args:
        dataset: the protocol's data set (``items``, ``class_names``).
        output_dir: where generators, samples, statistics and audits go.
        splits_file: the protocol's ``splits.json`` (made first by the protocol run).
        recipes: ``{generator name: GANRecipe or LAPGANRecipe}``.
        generators: which of ``recipes`` to compare, in report order.
        class_name: the class to synthesise (MelanoGANs: melanoma).
        transforms: load chain to [-1, 1] (the training one); augmentation: the GANs' batch augmentation.
        fold: which fold's train / test split to use.
        n_synthetic: images generated per generator.
        gan_dirs: ``{generator name: folder}`` to train in instead of ``<output_dir>/<name>/gan`` (e.g. the
            protocol's ``fold0/gan`` for the generator the protocol itself uses).
        audit: run ``common.audit.run_audit`` per generator.
        audit_kwargs: extra arguments of ``run_audit`` (``n_resamples``, ``max_images``, ...).
        gan_epochs, gan_batch_size, augment_repeats, checkpoint_interval, sample_interval, seed, device: as the
            protocol's GAN training (the seed of fold f is ``seed + f``, as there).
        gan_steps, gan_augment: as the protocol's (``--recipe efficient``: a G-step budget, no classic augmentation of
            the GANs' data). Every generator gets the same, so that the one trained in the protocol's folder
            (``gan_dirs``) is reused as it is, not trained on, and the others get the same steps and data stream.
        a_min, a_max: the intensity window of the files (0, 255 for 8-bit images).
    """

    def __init__(
        self,
        dataset: dict,
        output_dir: str,
        *,
        splits_file: str,
        recipes: Mapping[str, object],
        generators: Sequence[str],
        class_name: str,
        transforms: Compose,
        augmentation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        fold: int = 0,
        n_synthetic: int = 200,
        gan_dirs: Mapping[str, str] | None = None,
        audit: bool = True,
        audit_kwargs: Mapping | None = None,
        gan_epochs: int = 50,
        gan_batch_size: int = 64,
        augment_repeats: int = 1,
        checkpoint_interval: int = 1,
        sample_interval: int = 1,
        gan_steps: int | None = None,
        gan_augment: bool = True,
        seed: int = 0,
        a_min: float = 0.0,
        a_max: float = 255.0,
        device: str | torch.device = "cpu",
    ) -> None:
        unknown = [g for g in generators if g not in recipes]
        if unknown:
            raise ValueError(f"generators {unknown} have no recipe; known: {sorted(recipes)}")
        if class_name not in dataset["class_names"]:
            raise DataError(f"class '{class_name}' (key 'compare_class') is not among {dataset['class_names']}")
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.splits_file = Path(splits_file)
        self.recipes = dict(recipes)
        self.generators = list(generators)
        self.class_name = class_name
        self.transforms = transforms
        self.augmentation = augmentation if gan_augment else None
        self.fold = int(fold)
        self.n_synthetic = int(n_synthetic)
        self.gan_dirs = dict(gan_dirs or {})
        self.audit = audit
        self.audit_kwargs = dict(audit_kwargs or {})
        self.fit_kwargs = {
            "max_epochs": gan_epochs,
            "batch_size": gan_batch_size,
            "repeats": augment_repeats if gan_augment else 1,
            "total_steps": gan_steps,
            "checkpoint_interval": checkpoint_interval,
            "sample_interval": sample_interval,
            "progress": False,
            "tensorboard": False,
        }
        self.seed = int(seed)
        self.a_min, self.a_max = a_min, a_max
        self.device = torch.device(device)

    def _fold_items(self) -> tuple[list[dict], list[dict]]:
        if not self.splits_file.is_file():
            raise FileNotFoundError(f"no splits at '{self.splits_file}': run the protocol first")
        split = json.loads(self.splits_file.read_text())["folds"][self.fold]
        label = self.dataset["class_names"].index(self.class_name)
        train = [it for it in select(self.dataset["items"], split["train"]) if int(it["label"]) == label]
        test = [it for it in select(self.dataset["items"], split["test"]) if int(it["label"]) == label]
        if len(train) < 2 or not test:
            raise DataError(
                f"fold {self.fold}: class '{self.class_name}' has {len(train)} training / {len(test)} test images"
            )
        return train, test

    def _synthetic(self, name: str, train: list[dict]) -> list[dict]:
        recipe = self.recipes[name]
        syn_dir = self.output_dir / name / "synthetic"
        datalist = syn_dir / "datalist.json"
        if datalist.is_file():
            items = read_datalist(str(datalist))["training"]
            if len(items) == self.n_synthetic:
                return items
        gan_dir = self.gan_dirs.get(name) or str(self.output_dir / name / "gan")
        names = self.dataset["class_names"]
        fit_gans(
            recipe, train, self.transforms, gan_dir, class_names=names, per_class=True, classes=[self.class_name],
            augment=self.augmentation, seed=self.seed + self.fold, device=self.device, **self.fit_kwargs,
        )  # fmt: skip
        gens = load_generators(recipe, gan_dir, names, device=self.device, classes=[self.class_name])
        counts = [self.n_synthetic if c == self.class_name else 0 for c in names]
        path = generate_synthetic_set(
            gens, names, counts, str(syn_dir), a_min=self.a_min, a_max=self.a_max, seed=self.seed + 200 + self.fold,
            device=self.device, file_format="png", source=gan_dir,
        )  # fmt: skip
        return read_datalist(path)["training"]

    def run(self) -> dict:
        """Train / reuse every generator, write statistics, audits, sample grids and ``comparison.json``."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        train, test = self._fold_items()
        sets = {"real_train": _load(train, self.transforms), "real_heldout": _load(test, self.transforms)}
        samples = {}
        audits = {}
        skipped: dict[str, str] = {}
        for name in self.generators:
            logger.info(f"generator comparison: {name} on {len(train)} '{self.class_name}' images")
            torch.manual_seed(self.seed)  # LAPGAN stages draw their noise planes from the global RNG
            syn = _load(self._synthetic(name, train), self.transforms)
            sets[name] = syn
            samples[name] = save_png(self.output_dir / f"samples_{name}.png", image_grid(syn[:32], nrow=8))
            if self.audit:
                from common.audit import MIN_IMAGES, run_audit

                audit_file = self.output_dir / name / "audit" / "audit.json"
                smallest = min(len(sets["real_train"]), len(sets["real_heldout"]), len(syn))
                if audit_file.is_file():
                    audits[name] = json.loads(audit_file.read_text())
                elif smallest < MIN_IMAGES:  # a small set: this audit is skipped, the comparison goes on
                    skipped[name] = (
                        f"generator comparison, {name}: synthesis/privacy audit skipped, a set of class "
                        f"'{self.class_name}' has {smallest} < {MIN_IMAGES} images (training {len(train)}, held-out "
                        f"{len(test)}, synthetic {len(syn)})"
                    )
                    logger.warning(skipped[name])
                else:
                    kwargs = {"seed": self.seed, "device": self.device, **self.audit_kwargs}
                    audits[name] = run_audit(sets["real_train"], sets["real_heldout"], syn, audit_file.parent, **kwargs)
        samples["real_train"] = save_png(
            self.output_dir / "samples_real_train.png", image_grid(sets["real_train"][:32], nrow=8)
        )
        stats = write_image_statistics(sets, self.output_dir / "image_statistics", reference="real_train")
        result = {
            "fold": self.fold,
            "class": self.class_name,
            "n_train": len(train),
            "n_heldout": len(test),
            "n_synthetic": self.n_synthetic,
            "generators": self.generators,
            "image_statistics": {
                "reference": "real_train",
                "real_baseline": "real_heldout",
                "summary": stats["summary"],
                "sets": {k: {kk: vv for kk, vv in v.items() if kk != "histogram"} for k, v in stats["sets"].items()},
                "figures": [f"image_statistics/{f}" for f in stats.get("figures", [])],
            },
            "synthesis": {k: _headline(v["synthesis"]) for k, v in audits.items()},
            "privacy": {k: _headline(v["privacy"]) for k, v in audits.items()},
            "samples": {k: os.path.basename(v) for k, v in samples.items()},
            "audit_skipped": skipped,
        }
        tmp = self.output_dir / f".comparison.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(result, indent=1, default=_default))
        os.replace(tmp, self.output_dir / "comparison.json")
        return result


def _headline(section: dict) -> dict:
    """The flat numbers of an audit section (no details / setup)."""
    return {k: v for k, v in section.items() if k not in ("details", "setup")}


def _default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def evaluate_with_generators(protocol, comparison: Callable[..., GeneratorComparison] | None = None) -> dict:
    """Run ``protocol`` (a ``ClassificationProtocol``), then ``comparison`` on its splits; one report for both.

    ``comparison`` is a ``GeneratorComparison`` factory (a config component with ``"_mode_": "callable"``) that
    still needs ``dataset``, ``output_dir`` and ``splits_file``; it writes into ``<protocol output>/generators``.
    The report gets ``image_statistics`` and per-generator ``synthesis`` / ``privacy`` sections, and report.md a
    table of them. The comparison is a late step (``common.protocol.late_steps``): when it fails (a class too small
    for it, ...), the protocol's report stays, with a note saying so, and the export that follows still runs.
    """
    from common.protocol.report import write_report

    report = protocol.run()
    if comparison is None:
        return report
    out = Path(protocol.output_dir)
    notes = report.setdefault("notes", [])
    comp = late_step(
        "generator comparison", notes, lambda: comparison(
            dataset=protocol.dataset, output_dir=str(out / "generators"), splits_file=str(out / "splits.json")
        ).run(),
    )  # fmt: skip
    if comp is None:
        report.pop("figures", None)
        write_report(report, str(out))
        return report
    notes += [n for n in comp.get("audit_skipped", {}).values() if n not in notes]
    report["image_statistics"] = dict(
        comp["image_statistics"], figures=[f"generators/{f}" for f in comp["image_statistics"]["figures"]]
    )
    report["synthesis"] = comp["synthesis"]
    report["privacy"] = comp["privacy"]
    report["generator_comparison"] = {k: comp[k] for k in ("fold", "class", "n_train", "n_heldout", "n_synthetic")}
    report["generator_comparison"]["samples"] = {k: f"generators/{v}" for k, v in comp["samples"].items()}
    report.pop("figures", None)
    write_report(report, str(out))
    with open(out / "report.md", "a", encoding="utf-8") as handle:
        handle.write(render_generator_table(report))
    return report


def render_generator_table(report: dict) -> str:
    """Markdown: image statistics and feature-space quality per generator, beside the held-out real images."""
    stats = report.get("image_statistics", {})
    rows = stats.get("summary", [])
    if not rows:
        return ""
    comp = report.get("generator_comparison", {})
    lines = [
        "",
        f"## Generators: image statistics (class '{comp.get('class')}', fold {comp.get('fold')}, "
        f"{comp.get('n_synthetic')} synthetic vs {comp.get('n_train')} training images; `real_heldout` = "
        "real-vs-real baseline)",
        "",
        "| set | hist. intersection dist. | hist. JS (bits) | hist. W1 (levels) | mean-image MAE | std-image MAE "
        "| luminance KS | lesion area mean | lesion area KS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['hist_intersection']:.3f} | {r['hist_js_bits']:.4f} | "
            f"{r['hist_wasserstein_levels']:.1f} | {r['mean_image_mae_levels']:.1f} | {r['std_image_mae_levels']:.1f} "
            f"| {r['luminance_ks']:.2f} | {r['lesion_area_mean']:.3f} | {r['lesion_area_ks']:.2f} |"
        )
    synthesis = report.get("synthesis", {})
    keys = ("frechet_distance_randcnn", "kid_randcnn", "precision_randcnn", "recall_randcnn", "ms_ssim_diversity")
    if synthesis:
        lines += [
            "",
            "## Generators: feature-space quality (random-CNN features; value / real-vs-real baseline)",
            "",
            "| generator | " + " | ".join(keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for name, sec in synthesis.items():
            cells = []
            for k in keys:
                v, b = sec.get(k), sec.get(f"{k}_real_baseline")
                cells.append("n/a" if v is None else f"{v:.3g} / {b:.3g}" if b is not None else f"{v:.3g}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
