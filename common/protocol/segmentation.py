"""Shin et al.'s (2018) protocol: k case-separated folds x arms of tumour segmentation -> report.

Per fold: pix2pix trains on the fold's training cases only; synthetic cases are made from *their* label maps,
edited (tumours pasted between brains, moved, resized, re-composed); a fresh segmenter is trained per arm, with
model selection on validation cases, and scored once, per case, on the test cases:

- ``real``: real training cases;
- ``real+synthetic``: real + synthetic cases (augmentation);
- ``synthetic_only``: synthetic cases only (anonymisation: no patient image reaches the segmenter);
- ``synthetic_only+finetune``: the ``synthetic_only`` segmenter fine-tuned on a fraction of the real cases.

Two more sections per fold: image similarity of G(held-out label map) vs the real held-out images (MAE, PSNR,
SSIM per sequence), and the anonymisation audit (``common.audit``) of synthetic slices against training and
held-out slices. Every finished step leaves a file, so a killed evaluation resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.inferers import Inferer

from common.data.brain import read_prepared
from common.data.brain_transforms import TUMOUR_LABELS
from common.data.io import read_image
from common.engines.gan_training import GANRecipe
from common.engines.segmentation_training import SegmenterRecipe, evaluate_segmenter, fit_segmenter, slice_inferer
from common.engines.translation import fit_pix2pix, load_generator, synthesise_cases, translate_volume
from common.metrics.image_similarity import image_similarity
from common.metrics.stats import summarize
from common.protocol import external as external_scores
from common.protocol.budget import equal_step_epochs
from common.protocol.cache import claim, settings_digest
from common.protocol.export import export_downstream
from common.protocol.folds import FoldETA, load_or_make_splits, note_fallback, select
from common.protocol.late_steps import late_step
from common.protocol.report import compare_arms, merge_fold_sections, summarize_arms, write_report

logger = logging.getLogger(__name__)

__all__ = ["SEGMENTATION_ARMS", "SEGMENTATION_METRICS", "SegmentationProtocol"]

#: what each arm trains the segmenter on
SEGMENTATION_ARMS: dict[str, dict] = {
    "real": {"real": True, "synthetic": False},
    "real+synthetic": {"real": True, "synthetic": True},
    "synthetic_only": {"real": False, "synthetic": True},
    "synthetic_only+finetune": {"real": True, "synthetic": False, "init": "synthetic_only"},
}
SEGMENTATION_METRICS = ("dice_wt", "dice_tc", "dice_et", "dice_mean")
#: the segmenter's output channels, in order (``common.data.brain_transforms.brats_regions``)
SEGMENTER_CHANNELS = ("TC", "WT", "ET")
#: the values of what the exported segmenter answers: segment.json's postprocessing (``regions_to_label``) turns the
#: channels into one BraTS label map: 1 the core outside the enhancing part (necrosis and non-enhancing tumour
#: alike), 2 oedema (whole tumour outside the core), 4 enhancing. MONAI Label reads these names and ids.
SEGMENTER_LABELS = {0: "background", **{value: name for name, value in TUMOUR_LABELS.items()}}


def _atomic_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class SegmentationProtocol:
    """Run the protocol on a prepared case set (``common.data.brain.prepare_cases``) and write the report.

    Args:
        dataset: prepared cases ``{"items", "sequences", "source"}``.
        output_dir: splits, per-fold GAN, synthetic cases, segmenters, audits and the report.
        gan_recipe: the pix2pix networks/optimisers/objective; segmenter_recipe: the segmenter.
        spatial_dims: 2 (slices) or 3 (volumes) for pix2pix; segmentation is always on slices.
        use_anatomy: condition on anatomy classes (CSF/GM/WM) instead of one brain channel.
        crop_size: 3-D only: train pix2pix on random crops of this size.
        edit: label-map editing transform for synthetic cases (e.g. ``RandTumourAffined`` + ``RandTumourCompositiond``).
        n_synthetic_cases: synthetic cases per fold; paste_fraction: share made by pasting another case's tumour.
        finetune_fraction: share of the real training cases used to fine-tune (at least one case).
        finetune_epochs: epochs of fine-tuning.
        audit: run the anonymisation audit; audit_max_images: cap of slices per set.
        inferer: how the segmenter is applied to a case volume for validation and test, as the deployed bundle
            applies it (``segment.json``'s ``inferer``; default ``common.engines.segmentation_training.slice_inferer``).
        equal_steps: give every arm the gradient steps of ``seg_epochs`` epochs over the real training slices (an
            arm with more slices gets fewer epochs); otherwise every arm trains ``seg_epochs`` epochs, and arms with
            more data also train longer, which confounds the comparison.
        bootstrap_resamples: resamples of the bootstrap CI over external cases (``dataset["external_test"]``, the
            prepared cases of ``test_dir``: every fold x arm's selected segmenter is also scored on them, and the
            report gets an ``external`` section; see ``common.protocol.external``).
    """

    def __init__(
        self,
        dataset: dict,
        output_dir: str,
        *,
        gan_recipe: GANRecipe,
        segmenter_recipe: SegmenterRecipe,
        spatial_dims: int = 2,
        use_anatomy: bool = False,
        crop_size: Sequence[int] | None = None,
        edit: Callable | None = None,
        arms: Sequence[str] = tuple(SEGMENTATION_ARMS),
        folds: int = 3,
        seed: int = 0,
        val_fraction: float = 0.15,
        gan_steps: int | None = None,
        gan_epochs: int = 50,
        gan_batch_size: int = 1,
        seg_epochs: int = 30,
        seg_batch_size: int = 16,
        finetune_epochs: int = 10,
        finetune_fraction: float = 0.25,
        n_synthetic_cases: int = 20,
        paste_fraction: float = 0.5,
        checkpoint_interval: int = 1,
        sample_interval: int = 1,
        comparisons: Sequence[Sequence[str]] = (
            ("real+synthetic", "real"),
            ("synthetic_only", "real"),
            ("synthetic_only+finetune", "real"),
        ),
        paper_reference: dict | None = None,
        bundle: str = "",
        paper: str = "",
        audit: bool = True,
        audit_max_images: int = 400,
        equal_steps: bool = True,
        notes: Sequence[str] = (),
        device: str | torch.device = "cpu",
        progress: bool = False,
        inferer: Inferer | None = None,
        bootstrap_resamples: int = 1000,
    ) -> None:
        unknown = [a for a in arms if a not in SEGMENTATION_ARMS]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; known: {sorted(SEGMENTATION_ARMS)}")
        if "synthetic_only+finetune" in arms and "synthetic_only" not in arms:
            arms = ["synthetic_only", *arms]
        self.dataset, self.items = dataset, list(dataset["items"])
        self.sequences = list(dataset["sequences"])
        self.output_dir = Path(output_dir)
        self.gan_recipe, self.segmenter_recipe = gan_recipe, segmenter_recipe
        self.inferer = inferer if inferer is not None else slice_inferer()
        self.spatial_dims, self.use_anatomy, self.edit = spatial_dims, use_anatomy, edit
        self.crop_size = crop_size
        self.arms, self.k, self.seed, self.val_fraction = list(arms), folds, seed, val_fraction
        self.gan_epochs, self.gan_batch_size = gan_epochs, gan_batch_size
        self.gan_steps = None if gan_steps is None else int(gan_steps)  # --recipe efficient: a budget in G steps
        self.seg_epochs, self.seg_batch_size = seg_epochs, seg_batch_size
        self.finetune_epochs, self.finetune_fraction = finetune_epochs, finetune_fraction
        self.n_synthetic, self.paste_fraction = n_synthetic_cases, paste_fraction
        self.checkpoint_interval, self.sample_interval = checkpoint_interval, sample_interval
        self.comparisons = [tuple(c) for c in comparisons]
        self.paper_reference = paper_reference or {}
        self.bundle, self.paper = bundle, paper
        self.audit, self.audit_max_images = audit, audit_max_images
        self.equal_steps = equal_steps
        self.notes = list(notes)
        self._generator_keys: dict[int, str] = {}  # fold -> digest of the settings of its pix2pix
        self._synthetic_keys: dict[int, str] = {}  # fold -> digest of the settings of its synthetic cases
        self.device = torch.device(device)
        self.progress = progress
        self.external = dataset.get("external_test")  # None, or prepared external cases (common.protocol.external)
        self.bootstrap_resamples = int(bootstrap_resamples)

    @property
    def needs_gan(self) -> bool:
        return any(SEGMENTATION_ARMS[a]["synthetic"] for a in self.arms) or self.audit

    # -- per fold steps ---------------------------------------------------------------------------------------
    def _generator(self, fold: int, train: list[dict]):
        gan_dir = self.output_dir / f"fold{fold}" / "gan"
        settings = {
            "recipe": self.gan_recipe, "train": train, "spatial_dims": self.spatial_dims,
            "use_anatomy": self.use_anatomy, "crop_size": self.crop_size, "gan_epochs": self.gan_epochs,
            "gan_steps": self.gan_steps, "gan_batch_size": self.gan_batch_size, "seed": self.seed + fold,
        }  # fmt: skip
        self._generator_keys[fold] = settings_digest(settings)
        claim(gan_dir, settings, "pix2pix")  # resume or reuse only what these settings made
        fit_pix2pix(
            self.gan_recipe,
            train,
            str(gan_dir),
            spatial_dims=self.spatial_dims,
            use_anatomy=self.use_anatomy,
            crop_size=self.crop_size,
            max_epochs=self.gan_epochs,
            total_steps=self.gan_steps,
            batch_size=self.gan_batch_size,
            device=self.device,
            seed=self.seed + fold,
            checkpoint_interval=self.checkpoint_interval,
            sample_interval=self.sample_interval,
            progress=self.progress,
            tensorboard=False,
        )
        return load_generator(self.gan_recipe, str(gan_dir), device=self.device)

    def _synthetic(self, fold: int, generator, train: list[dict]) -> list[dict]:
        syn_dir = self.output_dir / f"fold{fold}" / "synthetic"
        settings = {
            "generator": self._generator_keys.get(fold), "train": train, "n": self.n_synthetic,
            "sequences": self.sequences, "edit": self.edit, "paste_fraction": self.paste_fraction,
            "seed": self.seed + 100 + fold,
        }  # fmt: skip
        self._synthetic_keys[fold] = settings_digest(settings)
        claim(syn_dir, settings, "synthetic cases")
        synthesise_cases(
            generator,
            train,
            self.n_synthetic,
            str(syn_dir),
            sequences=self.sequences,
            edit=self.edit,
            paste_fraction=self.paste_fraction,
            spatial_dims=self.spatial_dims,
            use_anatomy=self.use_anatomy,
            seed=self.seed + 100 + fold,
            device=self.device,
        )
        return read_prepared(syn_dir)["items"]

    def _similarity(self, fold: int, generator, test: list[dict]) -> dict:
        path = self.output_dir / f"fold{fold}" / "image_similarity.json"
        if path.is_file():
            return json.loads(path.read_text())
        torch.manual_seed(self.seed + fold)
        per_case = []
        for case in test:
            label, brain = read_image(case["label"]).astype(np.int16), read_image(case["brain"]).astype(np.int16)
            anatomy = read_image(case["anatomy"]).astype(np.int16) if self.use_anatomy else None
            fake = translate_volume(
                generator, label, brain, anatomy, spatial_dims=self.spatial_dims, device=self.device
            )
            per_case.append(
                {"case_id": case["case_id"], **image_similarity(fake, read_image(case["image"]), brain, self.sequences)}
            )
        result = {
            seq: {m: float(np.mean([c[seq][m] for c in per_case])) for m in ("mae", "psnr", "ssim")}
            for seq in self.sequences
        }
        result = {"mean": result, "per_case": per_case}
        _atomic_json(path, result)
        return result

    def _slices(self, cases: list[dict], cap: int, seed: int) -> np.ndarray:
        out = []
        for case in cases:
            image = read_image(case["image"])
            out += [image[..., z] for z in case["slices"]]
        arr = np.stack(out)
        if len(arr) > cap:
            arr = arr[np.sort(np.random.default_rng(seed).choice(len(arr), cap, replace=False))]
        return arr

    def _audit(self, fold: int, train, test, synthetic) -> dict | None:
        from common.audit import MIN_IMAGES, run_audit

        out = self.output_dir / f"fold{fold}" / "audit"
        if (out / "audit.json").is_file():
            return json.loads((out / "audit.json").read_text())
        sets = [self._slices(s, self.audit_max_images, self.seed + fold) for s in (train, test, synthetic)]
        if min(len(s) for s in sets) < MIN_IMAGES:
            note = f"fold {fold}: anonymisation audit skipped, a set has < {MIN_IMAGES} slices"
            logger.warning(note)
            self.notes.append(note)
            return None
        return run_audit(*sets, out_dir=str(out), seed=self.seed + fold, device=self.device, n_seeds=2)

    def _run_arm(self, fold: int, arm: str, train, val, test, synthetic) -> dict:
        arm_dir = self.output_dir / f"fold{fold}" / "arms" / arm.replace("+", "_plus_")
        result_file = arm_dir / "result.json"
        spec = SEGMENTATION_ARMS[arm]
        uses_synthetic = spec["synthetic"] or bool(spec.get("init"))
        settings = {
            "arm": arm, "spec": spec, "recipe": self.segmenter_recipe, "epochs": self.seg_epochs,
            "batch_size": self.seg_batch_size, "equal_steps": self.equal_steps, "finetune": self.finetune_epochs,
            "finetune_fraction": self.finetune_fraction, "train": train, "val": val, "test": test,
            "seed": self.seed + fold, "inferer": self.inferer,
            "synthetic": self._synthetic_keys.get(fold) if uses_synthetic else None,
        }  # fmt: skip
        claim(arm_dir, settings, f"fold {fold} arm '{arm}' results")
        if result_file.is_file():
            return json.loads(result_file.read_text())
        init = None
        epochs = self.seg_epochs
        cases = (list(train) if spec["real"] else []) + (list(synthetic) if spec["synthetic"] else [])
        if spec.get("init"):
            init = str(self.output_dir / f"fold{fold}" / "arms" / spec["init"].replace("+", "_plus_") / "best_model.pt")
            n = max(1, int(math.ceil(self.finetune_fraction * len(train))))
            cases = list(train)[:n]
            epochs = self.finetune_epochs
        elif self.equal_steps:
            # the same number of gradient steps in every arm: an arm with 3x the slices gets 1/3 of the epochs, so
            # a difference between arms comes from the data, not from longer training (seg_epochs = real's epochs)
            n_real = sum(len(c["slices"]) for c in train)
            n_arm = sum(len(c["slices"]) for c in cases)
            epochs = equal_step_epochs(self.seg_epochs, n_real, n_arm)
        logger.info(
            f"fold {fold}, arm '{arm}': {len(cases)} training cases, {epochs} epochs ({len(val)} val, {len(test)} test)"
        )
        fit = fit_segmenter(
            self.segmenter_recipe,
            cases,
            val,
            str(arm_dir),
            max_epochs=epochs,
            batch_size=self.seg_batch_size,
            device=self.device,
            seed=self.seed + fold,
            init_weights=init,
            inferer=self.inferer,
        )
        metrics = evaluate_segmenter(fit["network"], test, device=self.device, inferer=self.inferer)
        metrics.update(
            {
                "best_val_dice_mean": fit["best_metric"],
                "best_epoch": fit["best_epoch"],
                "n_train_cases": len(cases),
                "epochs": epochs,
            }
        )
        _atomic_json(result_file, metrics)
        return metrics

    def run(self) -> dict:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        split_items = [{"image": str(it["image"]), "patient": it["patient"], "label": 0} for it in self.items]
        splits = load_or_make_splits(
            str(self.output_dir / "splits.json"), split_items, self.k, self.seed, self.val_fraction
        )
        self.k = note_fallback(splits, self.notes)  # fewer folds than asked for a small set
        per_fold: dict[str, list[dict]] = {a: [] for a in self.arms}
        external: dict[str, list[dict]] = {a: [] for a in self.arms}  # external scores of the models trained anyway
        similarity, audits = [], []
        eta = FoldETA(len(splits["folds"]))
        for fold, split in enumerate(splits["folds"]):
            eta.start()
            train, val, test = (select(self.items, split[s]) for s in ("train", "val", "test"))
            synthetic: list[dict] = []
            if self.needs_gan:
                generator = self._generator(fold, train)
                synthetic = self._synthetic(fold, generator, train)
                similarity.append(self._similarity(fold, generator, test))
            for arm in self.arms:
                per_fold[arm].append(self._run_arm(fold, arm, train, val, test, synthetic))
                if self.external is not None:
                    arm_dir = self.output_dir / f"fold{fold}" / "arms" / arm.replace("+", "_plus_")
                    external[arm].append(
                        external_scores.score_segmenter(
                            arm_dir, self.segmenter_recipe.network, self.external["items"], self.inferer, self.device
                        )
                    )
            if self.audit and synthetic:
                audit = late_step(f"fold {fold}: anonymisation audit", self.notes, self._audit, fold, train, test,
                                  synthetic)  # fmt: skip
                if audit:
                    audits.append(audit)
            eta.done(fold)
        # Dice is per case: the summary pools the test cases of all folds (each case is tested exactly once)
        per_case = {a: [c for f in per_fold[a] for c in f["per_case"]] for a in self.arms}
        report = {
            "bundle": self.bundle,
            "paper": self.paper,
            "task": "brain tumour segmentation (WT / TC / ET Dice per case)",
            "dataset": self.dataset.get("source", "?"),
            "dataset_dir": self.dataset.get("dataset_dir"),
            "sequences": self.sequences,
            "n_cases": len(self.items),
            "seed": self.seed,
            "folds": self.k,
            "metric_names": list(SEGMENTATION_METRICS),
            "settings": {
                "spatial_dims": self.spatial_dims,
                "use_anatomy": self.use_anatomy,
                "gan_epochs": self.gan_epochs,
                "gan_steps": self.gan_steps,
                "seg_epochs": self.seg_epochs,
                "finetune_epochs": self.finetune_epochs,
                "finetune_fraction": self.finetune_fraction,
                "n_synthetic_cases": self.n_synthetic,
                "paste_fraction": self.paste_fraction,
                "equal_steps": self.equal_steps,
            },
            "arms": {
                arm: {**entry, "per_case_metrics": _per_case_summary(per_case[arm])}
                for arm, entry in summarize_arms(per_fold, SEGMENTATION_METRICS).items()
            },
            "comparisons": compare_arms(per_fold, self.comparisons, SEGMENTATION_METRICS),
            "paper_reference": self.paper_reference,
            "synthesis": {
                "image_similarity": _similarity_summary(similarity, self.sequences),
                **_merge(audits, "synthesis"),
            },
            "privacy": _merge(audits, "privacy"),
            "notes": self.notes,
        }
        if self.external is not None:
            report["external"] = external_scores.segmentation_section(
                self.external, external, n_resamples=self.bootstrap_resamples, seed=self.seed,
                comparisons=self.comparisons,
            )  # fmt: skip
        write_report(report, str(self.output_dir))
        logger.info(f"report written to {self.output_dir / 'report.json'}")
        return report

    def export_best_segmenter(self, **downstream) -> dict:
        """Copy the segmenter of the best arm and fold, by *validation* Dice, to ``<output_dir>/segmenter.pt``
        (what ``segment.json`` loads); ``segmenter.json`` records the choice. See ``export_best_model``.

        With ``downstream`` (see ``export_downstream``) the same model also becomes a MONAI Label-loadable bundle
        folder ``<output_dir>/<bundle>_segmentation``: the network's channels are the BraTS regions TC, WT, ET, its
        answer (after postprocessing) the label map of ``SEGMENTER_LABELS``, whose names the metadata declares."""
        candidates = [
            (arm, fold, self.output_dir / f"fold{fold}" / "arms" / arm.replace("+", "_plus_") / "result.json")
            for arm in self.arms
            for fold in range(self.k)
        ]
        return export_downstream(
            candidates,
            "best_val_dice_mean",
            self.output_dir / "segmenter.pt",
            kind="segmentation",
            labels=SEGMENTER_LABELS,
            report_file=self.output_dir / "report.json",
            downstream={"channels": SEGMENTER_CHANNELS, **downstream} if downstream else None,
            sequences=self.sequences,
            choice_among=f"arms {list(self.arms)} x {self.k} folds",
        )


def _per_case_summary(cases: list[dict]) -> dict:
    """mean/std/ci95 over all test cases (pooled over folds) of each Dice."""
    return {
        m: summarize([c[m] for c in cases], bounds=(0.0, 1.0)) for m in ("dice_wt", "dice_tc", "dice_et") if cases
    } | {"n_cases": len(cases)}


def _similarity_summary(folds: list[dict], sequences: Sequence[str]) -> dict:
    if not folds:
        return {}
    cases = [c for f in folds for c in f["per_case"]]
    return {seq: {m: summarize([c[seq][m] for c in cases]) for m in ("mae", "psnr", "ssim")} for seq in sequences} | {
        "n_cases": len(cases)
    }


def _merge(audits: list[dict], section: str) -> dict:
    return merge_fold_sections([a.get(section, {}) for a in audits])
