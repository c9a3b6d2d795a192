"""The papers' classification protocol: k patient-separated folds x arms -> report.

Per fold: the GAN(s) train on the fold's training patients only (no test image ever reaches a generator),
synthetic images are written to files + a datalist, a fresh classifier is trained per arm with model selection
on a validation split of the training patients, and it is scored once on the test patients. Each finished step
leaves a file behind, so a killed evaluation resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.transforms import Compose

from common.data.datalist import read_datalist
from common.engines.classifier_training import ClassifierRecipe, evaluate_classifier, fit_classifier
from common.engines.gan_training import GANRecipe, fit_gans, load_generators
from common.engines.generation import generate_synthetic_set
from common.protocol.folds import load_or_make_splits, select
from common.protocol.report import compare_arms, summarize_arms, write_report

logger = logging.getLogger(__name__)

#: what each arm trains the classifier on: real images?, synthetic images?, classic augmentation?
ARMS: dict[str, dict[str, bool]] = {
    "baseline": {"real": True, "synthetic": False, "augment": False},
    "classic": {"real": True, "synthetic": False, "augment": True},
    "classic+synthetic": {"real": True, "synthetic": True, "augment": True},
    "real+synthetic": {"real": True, "synthetic": True, "augment": False},
    "synthetic_only": {"real": False, "synthetic": True, "augment": False},
}


class ClassificationProtocol:
    """Run the protocol and write ``report.json`` / ``report.md`` / figures into ``output_dir``.

    Args:
        dataset: the output of ``common.data.load_classification_dataset`` (items, class_names, source).
        output_dir: where splits, per-fold models, synthetic sets and the report go.
        gan_recipe, classifier_recipe: how to build the networks (see ``GANRecipe``, ``ClassifierRecipe``).
        per_class_gan: one unconditional GAN per class (DCGAN) instead of one conditional GAN (ACGAN).
        transforms: load + intensity window, for every set (training, validation, test, synthetic).
        augmentation: the classic augmentation as a batch transform (``ClassicAugmentation``), applied to training
            batches of the arms with ``augment`` and to the GANs' training data.
        arms: names from ``ARMS``.
        n_synthetic_per_class: synthetic images added per class and fold.
        checkpoint_interval, sample_interval: epochs between GAN checkpoints / sample grids (as in ``fit_gan``).
        augment_repeats: in arms with classic augmentation and in the GANs' training data, every real image appears
            this many times per epoch, each time differently augmented: the online form of Frid-Adar's offline set
            of augmented copies (the paper's GANs were trained on the classic-augmented set as well).
        comparisons: pairs of arms whose paired per-fold difference gets a verdict in the report.
        paper_reference: the paper's numbers per arm, copied into the report beside ours.
        audit: run the synthesis-quality and privacy audit (``common.audit``) on each fold's synthetic set.
    """

    def __init__(
        self,
        dataset: dict,
        output_dir: str,
        *,
        gan_recipe: GANRecipe,
        classifier_recipe: ClassifierRecipe,
        transforms: Compose,
        augmentation: Callable[[torch.Tensor], torch.Tensor],
        per_class_gan: bool = True,
        arms: Sequence[str] = ("baseline", "classic", "classic+synthetic"),
        folds: int = 3,
        seed: int = 0,
        val_fraction: float = 0.15,
        gan_epochs: int = 70,
        gan_batch_size: int = 64,
        classifier_epochs: int = 150,
        classifier_batch_size: int = 64,
        n_synthetic_per_class: int = 3000,
        augment_repeats: int = 1,
        checkpoint_interval: int = 1,
        sample_interval: int = 1,
        a_min: float = -1.0,
        a_max: float = 1.0,
        synthetic_format: str = "nii.gz",
        comparisons: Sequence[Sequence[str]] = (("classic+synthetic", "classic"), ("classic", "baseline")),
        paper_reference: dict | None = None,
        bundle: str = "",
        paper: str = "",
        audit: bool = True,
        notes: Sequence[str] = (),
        device: str | torch.device = "cpu",
        num_workers: int = 0,
        progress: bool = False,
    ) -> None:
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; known: {sorted(ARMS)}")
        self.dataset = dataset
        self.items = list(dataset["items"])
        self.class_names = list(dataset["class_names"])
        self.output_dir = Path(output_dir)
        self.gan_recipe = gan_recipe
        self.classifier_recipe = classifier_recipe
        self.transforms = transforms
        self.augmentation = augmentation
        self.per_class_gan = per_class_gan
        self.arms = list(arms)
        self.k = folds
        self.seed = seed
        self.val_fraction = val_fraction
        self.gan_epochs = gan_epochs
        self.gan_batch_size = gan_batch_size
        self.classifier_epochs = classifier_epochs
        self.classifier_batch_size = classifier_batch_size
        self.n_synthetic = n_synthetic_per_class
        self.augment_repeats = max(1, int(augment_repeats))
        self.checkpoint_interval, self.sample_interval = checkpoint_interval, sample_interval
        self.a_min, self.a_max = a_min, a_max
        self.synthetic_format = synthetic_format
        self.comparisons = [tuple(c) for c in comparisons]
        self.paper_reference = paper_reference or {}
        self.bundle, self.paper = bundle, paper
        self.audit = audit
        self.notes = list(notes)
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.progress = progress

    @property
    def needs_synthetic(self) -> bool:
        return any(ARMS[a]["synthetic"] for a in self.arms)

    def _synthetic_items(self, fold: int, train: list[dict]) -> list[dict]:
        fold_dir = self.output_dir / f"fold{fold}"
        syn_dir = fold_dir / "synthetic"
        datalist = syn_dir / "datalist.json"
        if datalist.is_file():
            items = read_datalist(str(datalist))["training"]
            if len(items) == self.n_synthetic * len(self.class_names):
                return items
        gan_dir = fold_dir / "gan"
        fit_gans(
            self.gan_recipe,
            train,
            self.transforms,
            str(gan_dir),
            class_names=self.class_names,
            per_class=self.per_class_gan,
            max_epochs=self.gan_epochs,
            batch_size=self.gan_batch_size,
            device=self.device,
            seed=self.seed + fold,
            num_workers=self.num_workers,
            repeats=self.augment_repeats,
            augment=self.augmentation,
            checkpoint_interval=self.checkpoint_interval,
            sample_interval=self.sample_interval,
            progress=self.progress,
            tensorboard=False,
        )
        gens = load_generators(self.gan_recipe, str(gan_dir), self.class_names, device=self.device)
        path = generate_synthetic_set(
            gens,
            self.class_names,
            self.n_synthetic,
            str(syn_dir),
            a_min=self.a_min,
            a_max=self.a_max,
            seed=self.seed + 100 + fold,
            device=self.device,
            file_format=self.synthetic_format,
            source=str(gan_dir),
        )
        return read_datalist(path)["training"]

    def _run_arm(self, fold: int, arm: str, train, val, test, synthetic) -> dict:
        result_file = self.output_dir / f"fold{fold}" / "arms" / arm.replace("+", "_plus_") / "result.json"
        if result_file.is_file():
            return json.loads(result_file.read_text())
        spec = ARMS[arm]
        real = list(train) * (self.augment_repeats if spec["augment"] else 1) if spec["real"] else []
        items = real + (list(synthetic) if spec["synthetic"] else [])
        logger.info(f"fold {fold}, arm '{arm}': {len(items)} training images ({len(val)} val, {len(test)} test)")
        fit = fit_classifier(
            self.classifier_recipe,
            items,
            val,
            self.transforms,
            self.transforms,
            str(result_file.parent),
            num_classes=len(self.class_names),
            max_epochs=self.classifier_epochs,
            batch_size=self.classifier_batch_size,
            device=self.device,
            seed=self.seed + fold,
            num_workers=self.num_workers,
            augment=self.augmentation if spec["augment"] else None,
        )
        metrics = evaluate_classifier(
            fit["network"], test, self.transforms, self.class_names, device=self.device, num_workers=0
        )
        metrics.update(
            {"best_val_balanced_accuracy": fit["best_metric"], "best_epoch": fit["best_epoch"], "n_train": len(items)}
        )
        tmp = result_file.with_name(f".result.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(metrics, indent=1))
        os.replace(tmp, result_file)
        return metrics

    def _audit(self, fold: int, train: list[dict], test: list[dict], synthetic: list[dict]) -> dict | None:
        if not self.audit or not synthetic:
            return None
        from common.audit import MIN_IMAGES, audit_datalists

        smallest = min(len(train), len(test), len(synthetic))
        if smallest < MIN_IMAGES:
            note = f"fold {fold}: synthesis/privacy audit skipped, a set has {smallest} < {MIN_IMAGES} images"
            logger.warning(note)
            self.notes.append(note)
            return None
        out = self.output_dir / f"fold{fold}" / "audit"
        if (out / "audit.json").is_file():  # done in an earlier run: the inputs are the fold's, which are fixed
            return json.loads((out / "audit.json").read_text())
        return audit_datalists(train, test, synthetic, str(out), transforms=self.transforms)

    def run(self) -> dict:
        """Run every fold and arm (skipping what is already on disk) and write the report. Returns the report."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        splits = load_or_make_splits(
            str(self.output_dir / "splits.json"), self.items, self.k, self.seed, self.val_fraction
        )
        per_fold: dict[str, list[dict]] = {a: [] for a in self.arms}
        audits = []
        for fold, split in enumerate(splits["folds"]):
            train, val, test = (select(self.items, split[s]) for s in ("train", "val", "test"))
            synthetic = self._synthetic_items(fold, train) if self.needs_synthetic else []
            for arm in self.arms:
                per_fold[arm].append(self._run_arm(fold, arm, train, val, test, synthetic))
            audit = self._audit(fold, train, test, synthetic)
            if audit:
                audits.append(audit)
        report = {
            "bundle": self.bundle,
            "paper": self.paper,
            "dataset": self.dataset.get("source", "?"),
            "dataset_dir": self.dataset.get("dataset_dir"),
            "class_names": self.class_names,
            "n_images": len(self.items),
            "seed": self.seed,
            "folds": self.k,
            "settings": {
                "gan_epochs": self.gan_epochs,
                "classifier_epochs": self.classifier_epochs,
                "n_synthetic_per_class": self.n_synthetic,
                "augment_repeats": self.augment_repeats,
                "per_class_gan": self.per_class_gan,
                "val_fraction": self.val_fraction,
            },
            "arms": summarize_arms(per_fold),
            "comparisons": compare_arms(per_fold, self.comparisons),
            "paper_reference": self.paper_reference,
            "synthesis": _merge_folds([a.get("synthesis", {}) for a in audits]),
            "privacy": _merge_folds([a.get("privacy", {}) for a in audits]),
            "notes": self.notes,
        }
        write_report(report, str(self.output_dir))
        logger.info(f"report written to {self.output_dir / 'report.json'}")
        return report


def _merge_folds(sections: list[dict]) -> dict:
    """Per-fold audit sections -> ``{"per_fold": [...], "mean": {numeric key: mean over folds}}``."""
    if not sections:
        return {}
    numeric = {}
    for key in sections[0]:
        values = [s.get(key) for s in sections]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            numeric[key] = sum(values) / len(values)
    return {"mean": numeric, "per_fold": sections}
