"""The papers' classification protocol: k patient-separated folds x arms -> report.

Per fold: the GAN(s) train on the fold's training patients only (no test image ever reaches a generator),
synthetic images are written to files + a datalist, a fresh classifier is trained per arm with model selection
on a validation split of the training patients, and it is scored once on the test patients. Each finished step
leaves a file behind, so a killed evaluation resumes where it stopped.

The steps' parts: the arms (``arms``), a fold's synthetic set (``synthetic_sets``), a fold's classifiers
(``fold_runner``) and the report (``report_sections``), all in ``common.protocol.augmentation``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.transforms import Compose

from common.engines.classifier_training import ClassifierRecipe
from common.engines.gan_training import GANRecipe
from common.protocol.augmentation.arms import arm_dir, check_arms, equal_steps_arm, needs_synthetic
from common.protocol.augmentation.fold_runner import FoldRunner, Scores
from common.protocol.augmentation.report_sections import assemble_report, external_section
from common.protocol.augmentation.synthetic_sets import FoldSynthesis
from common.protocol.cache import claim
from common.protocol.export import export_downstream
from common.protocol.folds import FoldETA, load_or_make_splits, note_fallback, select
from common.protocol.late_steps import late_step
from common.protocol.report import report_header, write_report
from common.protocol.tasks import BACKGROUND_CLASSES, make_tasks

__all__ = ["ClassificationProtocol"]

logger = logging.getLogger(__name__)


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
        arms: names from ``ARMS`` (``common.protocol.augmentation.arms``).
        n_synthetic_per_class: synthetic images added per class and fold.
        checkpoint_interval, sample_interval: epochs between GAN checkpoints / sample grids (as in ``fit_gan``).
        augment_repeats: in arms with classic augmentation and in the GANs' training data, every real image appears
            this many times per epoch, each time differently augmented: the online form of Frid-Adar's offline set
            of augmented copies (the paper's GANs were trained on the classic-augmented set as well).
        gan_steps: train each GAN for about this many G steps instead of ``gan_epochs`` (``--recipe efficient``).
        gan_augment: train the GANs on the classic-augmented, repeated set (the paper); False feeds them the plain
            training images (the efficient recipe augments inside D instead: ADA).
        comparisons: pairs of arms whose paired per-fold difference gets a verdict in the report.
        paper_reference: the paper's numbers per arm, copied into the report beside ours.
        audit: run the synthesis-quality and privacy audit (``common.audit``) on each fold's synthetic set.
        synthetic_balance: None: ``n_synthetic_per_class`` images for every class (Frid-Adar). A number r: as
            many synthetic images per class as lift its real training count to r x the largest class's (1.0 =
            until balanced; MelanoGANs), so only minority classes get images, and GANs, at all.
        synthetic_classes: with ``synthetic_balance``, the classes that may get synthetic images (e.g.
            ``["melanoma"]``); default every class below the target.
        tasks: task specs (``common.protocol.tasks``: ``"multiclass"``, ``"<class>_vs_rest"``, ``"one_vs_rest"``);
            every arm runs for every task on the same folds and synthetic sets, and the report gets a ``tasks``
            section (its top-level ``arms`` are the first task's). ``None``: the data set's classes only, as before.
        background_classes: classes that ``"one_vs_rest"`` does not make a positive class (``normal``, ``other``).
        finetune_epochs, finetune_lr_scale: the fine-tuning stage of ``pretrain_synthetic+finetune`` (epochs,
            default ``classifier_epochs``; learning rate = the recipe's x this factor). That arm starts from the
            ``synthetic_only`` arm's model of the same fold and task (trained first if that arm is not listed), with
            model selection on the validation patients, like every arm.
        equal_steps: None/False: every arm trains ``classifier_epochs`` epochs, as in the papers, so an arm with more
            images (synthetic added, augmented repeats, oversampling) also takes more gradient steps. An arm name
            (``true``: the first of ``arms``): every arm gets the gradient steps that arm takes in
            ``classifier_epochs`` epochs (``common.protocol.budget``), so an arm with 3x its images gets 1/3 of
            the epochs and a difference between arms comes from the data, not from training longer. Fine-tuning
            (``pretrain_synthetic+finetune``) keeps ``finetune_epochs``. The report records the setting and each
            arm's epochs.
        bootstrap_resamples: resamples of the bootstrap CI over external patients (``dataset["external_test"]``, the
            external test set of ``test_dir``: every fold x arm's selected model is also scored on it, and the
            report gets an ``external`` section; see ``common.protocol.external``).
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
        gan_steps: int | None = None,
        gan_augment: bool = True,
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
        tasks: Sequence[str] | None = None,
        synthetic_balance: float | None = None,
        synthetic_classes: Sequence[str] | None = None,
        background_classes: Sequence[str] = BACKGROUND_CLASSES,
        finetune_epochs: int | None = None,
        finetune_lr_scale: float = 1.0,
        equal_steps: bool | str | None = None,
        bootstrap_resamples: int = 1000,
    ) -> None:
        self.arms = check_arms(arms)
        self.dataset = dataset
        self.items = list(dataset["items"])
        self.class_names = list(dataset["class_names"])
        self.output_dir = Path(output_dir)
        self.transforms = transforms
        self.k = folds
        self.seed = seed
        self.val_fraction = val_fraction
        self.comparisons = [tuple(c) for c in comparisons]
        self.paper_reference = paper_reference or {}
        self.bundle, self.paper = bundle, paper
        self.audit = audit
        self.notes = list(notes)
        self.external = dataset.get("external_test")  # None, or the external test set (common.protocol.external)
        self.bootstrap_resamples = int(bootstrap_resamples)
        equal_steps = equal_steps_arm(equal_steps, self.arms)
        device = torch.device(device)
        augment_repeats = max(1, int(augment_repeats))
        #: a fold's GANs and synthetic set
        self.synthesis = FoldSynthesis(
            output_dir=self.output_dir, class_names=self.class_names, gan_recipe=gan_recipe,
            per_class_gan=per_class_gan, transforms=transforms, augmentation=augmentation, gan_epochs=gan_epochs,
            gan_batch_size=gan_batch_size,
            # the efficient recipe: a budget in G steps, and ADA inside D instead of classic augmentation of G's data
            gan_steps=None if gan_steps is None else int(gan_steps), gan_augment=bool(gan_augment),
            augment_repeats=augment_repeats, n_synthetic_per_class=n_synthetic_per_class,
            synthetic_balance=synthetic_balance, synthetic_classes=synthetic_classes,
            checkpoint_interval=checkpoint_interval, sample_interval=sample_interval, a_min=a_min, a_max=a_max,
            synthetic_format=synthetic_format, seed=seed, device=device, num_workers=num_workers, progress=progress,
            notes=self.notes,
        )  # fmt: skip
        self.tasks = make_tasks(self.class_names, tasks, background_classes) if tasks else None
        #: a fold's classifiers: every task x arm, trained, selected and tested
        self.runner = FoldRunner(
            output_dir=self.output_dir, class_names=self.class_names, arms=self.arms, tasks=self.tasks,
            classifier_recipe=classifier_recipe, transforms=transforms, augmentation=augmentation,
            synthetic_key=self.synthesis.key, external=self.external, classifier_epochs=classifier_epochs,
            classifier_batch_size=classifier_batch_size, augment_repeats=augment_repeats, equal_steps=equal_steps,
            finetune_epochs=finetune_epochs, finetune_lr_scale=float(finetune_lr_scale), seed=seed, device=device,
            num_workers=num_workers,
        )  # fmt: skip

    def run(self) -> dict:
        """Run every fold and arm (skipping what is already on disk) and write the report. Returns the report."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        splits = load_or_make_splits(
            str(self.output_dir / "splits.json"), self.items, self.k, self.seed, self.val_fraction
        )
        self.k = note_fallback(splits, self.notes)  # fewer folds than asked for a small set
        # per task ("" without tasks) and arm, one entry per fold: test metrics, and the external test set's scores
        scores, external = self.runner.empty_scores(), self.runner.empty_scores()
        audits = []
        eta = FoldETA(len(splits["folds"]))
        for fold, split in enumerate(splits["folds"]):
            eta.start()
            train, val, test = (select(self.items, split[s]) for s in ("train", "val", "test"))
            synthetic = self.synthesis.fold_set(fold, train) if needs_synthetic(self.arms) else []
            self.runner.run_fold(fold, train, val, test, synthetic, scores, external)
            audit = late_step(f"fold {fold}: synthesis/privacy audit", self.notes, self._audit, fold, train, test,
                              synthetic)  # fmt: skip
            if audit:
                audits.append(audit)
            eta.done(fold)
        report = self._report(scores, external, audits)
        write_report(report, str(self.output_dir))
        logger.info(f"report written to {self.output_dir / 'report.json'}")
        return report

    def _audit(self, fold: int, train: list[dict], test: list[dict], synthetic: list[dict]) -> dict | None:
        """The synthesis-quality and privacy audit of ``fold``'s synthetic set (``common.audit``); reused from disk."""
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
        settings = {"train": train, "test": test, "synthetic": self.synthesis.key(fold)}
        claim(out, settings, f"fold {fold} audit")
        if (out / "audit.json").is_file():  # done in an earlier run with the same inputs
            return json.loads((out / "audit.json").read_text())
        return audit_datalists(train, test, synthetic, str(out), transforms=self.transforms)

    def _report(self, scores: Scores, external: Scores, audits: list[dict]) -> dict:
        """The finished run's report: what ran (data set, folds, settings), then ``assemble_report``'s sections."""
        synthesis, runner = self.synthesis, self.runner
        header = {
            **report_header(self),
            "settings": {
                "gan_epochs": synthesis.gan_epochs,
                "gan_steps": synthesis.gan_steps,
                "classifier_epochs": runner.classifier_epochs,
                "equal_steps": runner.equal_steps,
                "n_synthetic_per_class": synthesis.n_synthetic_per_class,
                "augment_repeats": runner.augment_repeats,
                "per_class_gan": synthesis.per_class_gan,
                "synthetic_balance": synthesis.synthetic_balance,
                "synthetic_classes": synthesis.synthetic_classes,
                "val_fraction": self.val_fraction,
            },
        }
        external_part = None
        if self.external is not None:
            external_part = external_section(
                self.external, external, self.tasks, class_names=self.class_names,
                n_resamples=self.bootstrap_resamples, seed=self.seed, comparisons=self.comparisons,
            )  # fmt: skip
        return assemble_report(
            header, scores, self.tasks, arms=self.arms, k=self.k, comparisons=self.comparisons,
            paper_reference=self.paper_reference, audits=audits, notes=self.notes, external=external_part,
        )  # fmt: skip

    def export_best_classifier(self, **downstream) -> dict:
        """Copy the classifier of the best arm and fold (primary task), by *validation* balanced accuracy, to
        ``<output_dir>/classifier.pt`` (what a bundle's ``classify.json`` loads); ``classifier.json`` records it.

        With ``downstream`` (``template``, ``source_root``, ``image``, ``config`` ...; see ``export_downstream``)
        the same model also becomes a MONAI Label-loadable bundle folder ``<output_dir>/<bundle>_classification``.
        """
        task = self.tasks[0] if self.tasks else None
        candidates = [
            (arm, fold, arm_dir(self.output_dir, fold, arm, task) / "result.json")
            for arm in self.arms
            for fold in range(self.k)
        ]
        names = list(task.class_names) if task is not None else self.class_names
        return export_downstream(
            candidates,
            "best_val_balanced_accuracy",
            self.output_dir / "classifier.pt",
            kind="classification",
            labels=names,
            report_file=self.output_dir / "report.json",
            downstream=downstream or None,
            class_names=names,
            choice_among=f"arms {list(self.arms)} x {self.k} folds" + (f" (task '{task.name}')" if task else ""),
        )
