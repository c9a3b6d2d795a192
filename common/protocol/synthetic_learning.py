"""Synthetic learning (Schonfeld & Veeravagu 2022): train a classifier on real images, or on the synthetic images of
one generator alone, and test it on held-out real images; one arm per generator variant.

Per fold (patient-separated, made once and saved): every generator variant (StyleGAN2-ADA, SpineGAN with the clinical
loss, DP-SGD at several epsilons, ...) trains on the fold's training images only; it writes
``n_synthetic_per_class`` images per class; a fresh classifier trains on them with model selection on the fold's
*real* validation split (never the test split), and is scored once on the test split. The ``real`` arm trains on the
real training images. ROC AUC gets a per-fold bootstrap 95 % CI (test images resampled) next to the across-fold
mean/std/t-CI; each DP arm carries its (epsilon, delta). Every finished step leaves a file, so a killed run resumes.

Arms are named ``real`` and ``synthetic_only:<generator>``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose

from common.data.datalist import read_datalist
from common.engines.classifier_training import ClassifierRecipe, fit_classifier, predict_probs
from common.engines.gan_training import GANRecipe, fit_gans, load_generators
from common.engines.generation import generate_synthetic_set
from common.metrics.classification import binary_auc, classification_metrics
from common.metrics.stats import bootstrap_ci
from common.privacy.dp import group_privacy
from common.protocol import external as external_scores
from common.protocol.cache import claim, settings_digest
from common.protocol.export import export_downstream
from common.protocol.folds import FoldETA, load_or_make_splits, note_fallback, select
from common.protocol.late_steps import late_step
from common.protocol.report import compare_arms, merge_fold_sections, report_header, summarize_arms, write_report

logger = logging.getLogger(__name__)

__all__ = ["SyntheticLearningProtocol", "binary_auc"]


class SyntheticLearningProtocol:
    """Run the synthetic-learning protocol; write ``report.json`` / ``report.md`` / figures into ``output_dir``.

    Args:
        dataset: output of ``common.data.load_classification_dataset`` (2 classes: normal, abnormal).
        output_dir: splits, per-fold GANs, synthetic sets, classifiers and the report.
        generators: ``{name: GANRecipe}``, one conditional GAN each (e.g. ``stylegan2_variants(...)``).
        classifier_recipe: the downstream classifier.
        transforms: load -> [-1, 1] for every set.
        real_arm: include the ``real`` arm.
        positive_class: the label whose probability is the AUC score (abnormal = 1).
        bootstrap_resamples: resamples of each fold's test set for the AUC CI, and of the external patients for the
            external test set's CIs (``dataset["external_test"]``, from ``test_dir`` or a MedMNIST test split: every
            fold x arm's selected model is also scored on it; see ``common.protocol.external``).
        classifier_augment: batch augmentation of every arm's classifier training batches (None: none).
        audit: synthesis-quality and privacy audit (``common.audit``) of each generator's set in each fold.
        audit_max_images: seeded random subset of each set (train / test / synthetic) the audit reads; None: all.
        audit_dp_arms: also audit the DP-SGD generators' sets. The audit compares synthetic images with the fold's
            *private* training images (nearest-neighbour distances, copies, membership inference) and publishes the
            result, which the generator's epsilon does not cover; off by default, and when on, report.json marks
            those numbers "not covered by epsilon".
    """

    def __init__(
        self,
        dataset: dict,
        output_dir: str,
        *,
        generators: dict[str, GANRecipe],
        classifier_recipe: ClassifierRecipe,
        transforms: Compose,
        real_arm: bool = True,
        folds: int = 3,
        seed: int = 0,
        val_fraction: float = 0.15,
        gan_steps: int | None = None,
        gan_epochs: int = 10,
        gan_batch_size: int = 16,
        classifier_epochs: int = 20,
        classifier_batch_size: int = 64,
        n_synthetic_per_class: int = 500,
        checkpoint_interval: int = 1,
        sample_interval: int = 1,
        a_min: float = 0.0,
        a_max: float = 255.0,
        positive_class: int = 1,
        bootstrap_resamples: int = 1000,
        classifier_augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        paper_reference: dict | None = None,
        comparisons: Sequence[Sequence[str]] = (),
        bundle: str = "",
        paper: str = "",
        audit: bool = True,
        audit_max_images: int | None = 1000,
        audit_dp_arms: bool = False,
        notes: Sequence[str] = (),
        device: str | torch.device = "cpu",
        num_workers: int = 0,
    ) -> None:
        if not generators and not real_arm:
            raise ValueError("SyntheticLearningProtocol: no arms (no generators and real_arm=False)")
        self.dataset = dataset
        self.items = list(dataset["items"])
        self.class_names = list(dataset["class_names"])
        self.output_dir = Path(output_dir)
        self.generators = dict(generators)
        for name, recipe in self.generators.items():
            if not recipe.conditional:
                raise ValueError(f"generator '{name}': synthetic learning needs a class-conditional GAN")
        self.classifier_recipe = classifier_recipe
        self.transforms = transforms
        self.real_arm = real_arm
        self.k, self.seed, self.val_fraction = folds, seed, val_fraction
        self.gan_epochs, self.gan_batch_size = gan_epochs, gan_batch_size
        self.gan_steps = None if gan_steps is None else int(gan_steps)  # --recipe efficient: a budget in G steps
        self.classifier_epochs, self.classifier_batch_size = classifier_epochs, classifier_batch_size
        self.n_synthetic = n_synthetic_per_class
        self.checkpoint_interval, self.sample_interval = checkpoint_interval, sample_interval
        self.a_min, self.a_max = a_min, a_max
        self.positive_class = positive_class
        self.bootstrap_resamples = bootstrap_resamples
        self.external = dataset.get("external_test")  # None, or the external test set (common.protocol.external)
        self.classifier_augment = classifier_augment
        self.paper_reference = paper_reference or {}
        self.comparisons = [tuple(c) for c in comparisons]
        self.bundle, self.paper = bundle, paper
        self.audit = audit
        self.audit_max_images = audit_max_images
        self.audit_dp_arms = bool(audit_dp_arms)
        self.notes = list(notes)
        self._synthetic_keys: dict[tuple, str] = {}  # (fold, generator) -> digest of its synthetic set's settings
        self.device = torch.device(device)
        self.num_workers = num_workers

    @property
    def arms(self) -> list[str]:
        return (["real"] if self.real_arm else []) + [f"synthetic_only:{g}" for g in self.generators]

    # ------------------------------------------------------------------ steps
    def _synthetic(self, fold: int, name: str, train: list[dict]) -> tuple[list[dict], dict | None]:
        fold_dir = self.output_dir / f"fold{fold}"
        gan_dir = fold_dir / "gan" / name
        syn_dir = fold_dir / "synthetic" / name
        datalist = syn_dir / "datalist.json"
        recipe = self.generators[name]
        privacy_file = gan_dir / "conditional" / "privacy.json"
        # a class with no training image in this fold: the conditional GAN never saw it, and what its label
        # embedding makes is no image of that class. None are generated for it, and the report says so
        present = {int(it["label"]) for it in train}
        absent = [c for i, c in enumerate(self.class_names) if i not in present]
        n_synthetic = [self.n_synthetic if i in present else 0 for i in range(len(self.class_names))]
        settings = {
            "recipe": recipe, "train": train, "transforms": self.transforms, "gan_epochs": self.gan_epochs,
            "gan_batch_size": self.gan_batch_size, "gan_steps": self.gan_steps, "seed": self.seed + fold,
            "n_synthetic": n_synthetic if absent else self.n_synthetic, "classes": self.class_names,
            "a_min": self.a_min, "a_max": self.a_max,
        }  # fmt: skip
        if absent:
            note = (
                f"fold {fold}, {name}: no training image of class(es) {absent}; the conditional GAN never saw them, so "
                "no synthetic images of them were made (the synthetic-only classifier has no example of them)"
            )
            logger.warning(note)
            if note not in self.notes:
                self.notes.append(note)
        # reuse (or resume) only what these settings made; other settings' GANs and images are moved aside
        self._synthetic_keys[(fold, name)] = settings_digest(settings)
        claim(gan_dir, settings, f"'{name}' GAN")
        claim(syn_dir, settings, f"'{name}' synthetic images")
        if not datalist.is_file():
            fit_gans(
                recipe, train, self.transforms, str(gan_dir), class_names=self.class_names, per_class=False,
                max_epochs=self.gan_epochs, batch_size=self.gan_batch_size, device=self.device,
                seed=self.seed + fold, num_workers=self.num_workers, checkpoint_interval=self.checkpoint_interval,
                sample_interval=self.sample_interval, progress=False, tensorboard=False, total_steps=self.gan_steps,
            )  # fmt: skip
            gens = load_generators(recipe, str(gan_dir), self.class_names, device=self.device)
            generate_synthetic_set(
                gens, self.class_names, n_synthetic, str(syn_dir), a_min=self.a_min, a_max=self.a_max,
                seed=self.seed + 100 + fold, device=self.device, file_format="png", source=str(gan_dir),
            )  # fmt: skip
        privacy = json.loads(privacy_file.read_text()) if privacy_file.is_file() else None
        return read_datalist(str(datalist))["training"], privacy

    def _classify(self, fold: int, arm: str, train_items, val, test) -> dict:
        result_file = self.output_dir / f"fold{fold}" / "arms" / arm.replace(":", "_") / "result.json"
        generator = arm.split(":", 1)[1] if ":" in arm else None
        settings = {
            "arm": arm, "recipe": self.classifier_recipe, "epochs": self.classifier_epochs,
            "batch_size": self.classifier_batch_size, "seed": self.seed + fold, "train": train_items, "val": val,
            "test": test, "transforms": self.transforms, "augment": self.classifier_augment,
            "bootstrap": self.bootstrap_resamples, "synthetic": self._synthetic_keys.get((fold, generator)),
        }  # fmt: skip
        claim(result_file.parent, settings, f"fold {fold} arm '{arm}' results")
        if result_file.is_file():
            return json.loads(result_file.read_text())
        logger.info(f"fold {fold}, arm '{arm}': {len(train_items)} training images ({len(val)} val, {len(test)} test)")
        fit = fit_classifier(
            self.classifier_recipe, train_items, val, self.transforms, self.transforms, str(result_file.parent),
            num_classes=len(self.class_names), max_epochs=self.classifier_epochs,
            batch_size=self.classifier_batch_size, device=self.device, seed=self.seed + fold,
            num_workers=self.num_workers, augment=self.classifier_augment,
        )  # fmt: skip
        probs, labels = predict_probs(fit["network"], test, self.transforms, device=self.device)
        metrics = classification_metrics(probs, labels, self.class_names)
        scores = probs[:, self.positive_class]
        positive = (labels == self.positive_class).astype(int)
        boot = bootstrap_ci(binary_auc, scores, positive, n_resamples=self.bootstrap_resamples, seed=self.seed + fold)
        if "undefined" in boot and "auc" in metrics["undefined"]:
            boot["undefined"] = {"value": metrics["undefined"]["auc"]}  # the same reason as the fold's AUC
        metrics.update(
            {
                "auc_bootstrap": boot,
                "best_val_balanced_accuracy": fit["best_metric"],
                "best_epoch": fit["best_epoch"],
                "n_train": len(train_items),
                "n_test": len(test),
            }
        )
        result_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = result_file.with_name(f".result.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(metrics, indent=1))
        os.replace(tmp, result_file)
        return metrics

    def _audit(self, fold: int, name: str, train, test, synthetic) -> dict | None:
        if not self.audit:
            return None
        private = getattr(self.generators[name], "privacy", None) is not None
        if private and not self.audit_dp_arms:
            note = (
                f"{name}: no synthesis/privacy audit (it reads the private training images and its result is not "
                "covered by epsilon; audit_dp_arms=True runs it, marked as such)"
            )
            if note not in self.notes:
                logger.info(note)
                self.notes.append(note)
            return None
        if private:
            note = f"{name}: audited on request (audit_dp_arms): its audit reads private images, NOT covered by epsilon"
            if note not in self.notes:
                logger.warning(note)
                self.notes.append(note)
        from common.audit import MIN_IMAGES, audit_datalists

        smallest = min(len(train), len(test), len(synthetic))
        if smallest < MIN_IMAGES:
            note = f"fold {fold}, {name}: audit skipped, a set has {smallest} < {MIN_IMAGES} images"
            logger.warning(note)
            self.notes.append(note)
            return None
        out = self.output_dir / f"fold{fold}" / "audit" / name
        settings = {"train": train, "test": test, "synthetic": self._synthetic_keys.get((fold, name))}
        claim(out, {**settings, "max_images": self.audit_max_images}, f"fold {fold} '{name}' audit")
        if (out / "audit.json").is_file():
            return json.loads((out / "audit.json").read_text())
        return audit_datalists(
            train, test, synthetic, str(out), transforms=self.transforms, max_images=self.audit_max_images
        )

    def _dp_names(self) -> list[str]:
        return [n for n, r in self.generators.items() if getattr(r, "privacy", None) is not None]

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        """Every fold, generator and arm (reusing what is on disk), then the report. Returns the report."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        splits = load_or_make_splits(
            str(self.output_dir / "splits.json"), self.items, self.k, self.seed, self.val_fraction
        )
        self.k = note_fallback(splits, self.notes)  # fewer folds than asked for a small set
        per_fold: dict[str, list[dict]] = {a: [] for a in self.arms}
        external: dict[str, list[dict]] = {a: [] for a in self.arms}  # external scores of the models trained anyway
        privacy: dict[str, list[dict]] = {}
        audits: dict[str, list[dict]] = {}
        eta = FoldETA(len(splits["folds"]))
        for fold, split in enumerate(splits["folds"]):
            eta.start()
            train, val, test = (select(self.items, split[s]) for s in ("train", "val", "test"))
            if self.real_arm:
                per_fold["real"].append(self._classify(fold, "real", train, val, test))
                if self.external is not None:
                    external["real"].append(self._score_external(fold, "real"))
            for name in self.generators:
                synthetic, dp = self._synthetic(fold, name, train)
                arm = f"synthetic_only:{name}"
                result = self._classify(fold, arm, synthetic, val, test)
                if dp is not None:
                    result = {**result, "epsilon": dp.get("epsilon"), "delta": dp.get("delta")}
                    privacy.setdefault(arm, []).append(dp)
                per_fold[arm].append(result)
                if self.external is not None:
                    external[arm].append(self._score_external(fold, arm))
                audit = late_step(f"fold {fold}, {name}: synthesis/privacy audit", self.notes, self._audit, fold,
                                  name, train, test, synthetic)  # fmt: skip
                if audit:
                    audits.setdefault(name, []).append(audit)
            eta.done(fold)
        arms = summarize_arms(per_fold)
        for arm, folds in per_fold.items():
            arms[arm]["auc_bootstrap_per_fold"] = [f.get("auc_bootstrap") for f in folds]
            if arm in privacy:
                eps = [p.get("epsilon") for p in privacy[arm]]
                arms[arm]["privacy"] = {
                    "mode": privacy[arm][0].get("mode"),
                    "epsilon_per_fold": eps,
                    "epsilon_max": max((e for e in eps if e is not None), default=None),
                    "delta": privacy[arm][0].get("delta"),
                    "accountant": privacy[arm][0].get("accountant"),
                    "noise_multiplier": [p.get("noise_multiplier") for p in privacy[arm]],
                    # what epsilon protects: one image; per patient (group privacy) where the data carry ids
                    "privacy_unit": privacy[arm][0].get("privacy_unit", "one image"),
                    "per_patient_per_fold": [p.get("per_patient") for p in privacy[arm]],
                }
                canary = [p.get("audit") for p in privacy[arm]]  # the canary audit's lower bound (dp_audit_canaries)
                if any(canary):
                    arms[arm]["privacy"]["epsilon_lower_bound_per_fold"] = [
                        None if c is None else c.get("epsilon_lower_bound") for c in canary
                    ]
                    arms[arm]["privacy"]["audit_per_fold"] = canary
        report = {
            **report_header(self),
            "settings": {
                "gan_epochs": self.gan_epochs,
                "gan_steps": self.gan_steps,
                "gan_batch_size": self.gan_batch_size,
                "classifier_epochs": self.classifier_epochs,
                "n_synthetic_per_class": self.n_synthetic,
                "val_fraction": self.val_fraction,
                "generators": list(self.generators),
            },
            "arms": arms,
            "comparisons": compare_arms(per_fold, [c for c in self.comparisons if c[0] in arms and c[1] in arms]),
            "paper_reference": self.paper_reference,
            "synthesis": {
                name: {
                    **merge_fold_sections([a.get("synthesis", {}) for a in v]),
                    **({"not_covered_by_epsilon": True} if name in self._dp_names() else {}),
                }
                for name, v in audits.items()
            },
            "privacy": {
                "dp": {a: arms[a]["privacy"] for a in arms if "privacy" in arms[a]},
                "memorization": {
                    # a DP generator's audit (audit_dp_arms) read its private training images: labelled as such
                    name: {
                        **merge_fold_sections([a.get("privacy", {}) for a in v]),
                        **({"not_covered_by_epsilon": True} if name in self._dp_names() else {}),
                    }
                    for name, v in audits.items()
                },
            },
            "notes": self.notes,
        }
        if self.external is not None:
            report["external"] = external_scores.classification_section(
                self.external, external, n_resamples=self.bootstrap_resamples, seed=self.seed,
                comparisons=[c for c in self.comparisons if c[0] in arms and c[1] in arms],
            )  # fmt: skip
        write_report(report, str(self.output_dir))
        logger.info(f"report written to {self.output_dir / 'report.json'}")
        return report

    def _score_external(self, fold: int, arm: str) -> dict:
        """The arm's selected model of this fold scored on the external test set (cached beside it)."""
        return external_scores.score_classifier(
            self.output_dir / f"fold{fold}" / "arms" / arm.replace(":", "_"),
            self.classifier_recipe.network,
            self.external["items"],
            self.transforms,
            self.class_names,
            device=self.device,
        )

    # ------------------------------------------------------------------ export
    def _val_auc_file(self, fold: int, arm: str, val: list[dict]) -> Path:
        """``validation.json`` ({"best_val_auc"}) beside the arm's ``best_model.pt``: its ROC AUC on the fold's
        *real* validation images (computed once, on demand: training selected epochs on balanced accuracy)."""
        arm_dir = self.output_dir / f"fold{fold}" / "arms" / arm.replace(":", "_")
        out = arm_dir / "validation.json"
        if out.is_file() or not (arm_dir / "best_model.pt").is_file():
            return out
        network = self.classifier_recipe.network()
        network.load_state_dict(torch.load(arm_dir / "best_model.pt", map_location="cpu", weights_only=True))
        with torch.no_grad():
            probs, labels = predict_probs(network.to(self.device), val, self.transforms, device=self.device)
        auc = binary_auc(probs[:, self.positive_class], (labels == self.positive_class).astype(int))
        tmp = out.with_name(f".validation.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"best_val_auc": None if np.isnan(auc) else auc, "n_val": len(val)}, indent=1))
        os.replace(tmp, out)
        return out

    def export_best_classifier(self, arms: str = "synthetic_only", **downstream) -> dict:
        """Export the classifier of the best arm and fold by ROC AUC on the *real validation* images.

        Args:
            arms: ``"synthetic_only"`` (default): the arms that never saw a real training image (SpineGAN's point:
                a classifier that can be trained outside the hospital). Their generators did see the real images:
                only a DP-SGD generator gives a formal guarantee, hence ``"dp"``: the DP-SGD arms only (the record
                keeps their epsilon); ``"any"``: every arm, ``real`` included; or one arm's name (e.g.
                ``"synthetic_only:spinegan"``).
            downstream: see ``common.protocol.export.export_downstream`` (a MONAI Label bundle folder).

        Writes ``classifier.pt`` + ``classifier.json`` (the choice, and the epsilon of a DP arm) in ``output_dir``.
        """
        if arms == "synthetic_only":
            chosen = [a for a in self.arms if a != "real"]
        elif arms == "dp":
            chosen = [a for a in self.arms if a.startswith("synthetic_only:dp_eps")]
        elif arms == "any":
            chosen = list(self.arms)
        elif arms in self.arms:
            chosen = [arms]
        else:
            raise ValueError(f"export arms={arms!r}: use 'synthetic_only', 'dp', 'any' or one of {self.arms}")
        if not chosen:
            raise ValueError(f"export arms={arms!r}: no such arm in this evaluation ({self.arms})")
        splits = load_or_make_splits(
            str(self.output_dir / "splits.json"), self.items, self.k, self.seed, self.val_fraction
        )
        candidates = []
        for fold, split in enumerate(splits["folds"]):
            val = select(self.items, split["val"])
            candidates += [(arm, fold, self._val_auc_file(fold, arm, val)) for arm in chosen]

        def dp_of(arm: str, fold: int) -> dict | None:
            name = arm.split(":", 1)[1] if ":" in arm else None
            dp_file = self.output_dir / f"fold{fold}" / "gan" / str(name) / "conditional" / "privacy.json"
            return json.loads(dp_file.read_text()) if name is not None and dp_file.is_file() else None

        # Choosing the best of several DP-trained models looks at all of them: the released model's guarantee is
        # the composition of every DP run it was chosen among (basic composition: epsilons and deltas add up; a
        # patient is in the training split of several folds and in every epsilon arm), not the chosen run's alone.
        among = [d for d in (dp_of(arm, fold) for arm, fold, _ in candidates) if d is not None]
        composed = {
            "epsilon": sum(float(d.get("epsilon") or 0.0) for d in among),
            "delta": sum(float(d.get("delta") or 0.0) for d in among),
            "runs": len(among),
            "rule": "basic composition over every DP run the export was selected among (by validation AUC)",
        }

        def privacy(record: dict) -> dict:
            dp = dp_of(record["arm"], record["fold"])
            if dp is None:
                return {"privacy": None}
            keys = ("mode", "epsilon", "delta", "accountant", "noise_multiplier")
            run = {k: dp.get(k) for k in keys}
            # epsilon / delta: the guarantee of what is released, the composition when several DP runs competed
            several = composed["runs"] > 1
            epsilon = composed["epsilon"] if several else dp.get("epsilon")
            delta = composed["delta"] if several else dp.get("delta")
            # per patient: group privacy for the most images any patient had in any of the runs competed among
            ks = [
                d["per_patient"]["max_images_per_patient"]
                for d in among
                if "max_images_per_patient" in d.get("per_patient", {})
            ]
            per_patient = (
                group_privacy(epsilon, delta, max(ks)) if ks and epsilon is not None and delta is not None
                else {"patient_ids": False, "note": "the data carry no patient ids: each image is one patient"}
            )  # fmt: skip
            return {
                "privacy": {
                    "epsilon": epsilon,
                    "delta": delta,
                    "privacy_unit": "one image",
                    "per_patient": per_patient,
                    "selected_run": run,
                    "composition": composed if several else None,
                }
            }

        return export_downstream(
            candidates,
            "best_val_auc",
            self.output_dir / "classifier.pt",
            kind="classification",
            labels=self.class_names,
            report_file=self.output_dir / "report.json",
            annotate=privacy,
            downstream=downstream or None,
            class_names=self.class_names,
            choice=arms,
            choice_among=f"arms {chosen} x {self.k} folds",
        )
