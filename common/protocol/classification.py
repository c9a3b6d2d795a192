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

import numpy as np
import torch
from monai.transforms import Compose

from common.data.datalist import read_datalist
from common.engines.classifier_training import ClassifierRecipe, evaluate_classifier, fit_classifier
from common.engines.gan_training import GANRecipe, fit_gans, load_generators
from common.engines.generation import generate_synthetic_set
from common.protocol import external as external_scores
from common.protocol.budget import equal_step_epochs
from common.protocol.cache import claim, settings_digest
from common.protocol.export import export_downstream
from common.protocol.folds import FoldETA, load_or_make_splits, note_fallback, select
from common.protocol.late_steps import late_step
from common.protocol.report import SUMMARY_METRICS, compare_arms, merge_fold_sections, summarize_arms, write_report
from common.protocol.tasks import BACKGROUND_CLASSES, ClassificationTask, make_tasks, relabel

logger = logging.getLogger(__name__)

#: what each arm trains the classifier on: real images?, synthetic images?, classic augmentation?
ARMS: dict[str, dict[str, bool]] = {
    "baseline": {"real": True, "synthetic": False, "augment": False},
    # MelanoGANs' classic answer to class imbalance: re-sample the real training images until the classes are balanced.
    "oversampling": {"real": True, "synthetic": False, "augment": False, "oversample": True},
    "classic": {"real": True, "synthetic": False, "augment": True},
    "classic+synthetic": {"real": True, "synthetic": True, "augment": True},
    "real+synthetic": {"real": True, "synthetic": True, "augment": False},
    "synthetic_only": {"real": False, "synthetic": True, "augment": False},
    # He et al. 2019 name the baseline "real": trained on real images only (the same as "baseline").
    "real": {"real": True, "synthetic": False, "augment": False},
    # He et al. 2019: start from the synthetic_only arm's selected model, then fine-tune it on the real images.
    "pretrain_synthetic+finetune": {"real": True, "synthetic": False, "augment": False, "pretrain_synthetic": True},
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
        if equal_steps is True:
            equal_steps = self.arms[0]
        if equal_steps and equal_steps not in ARMS:
            raise ValueError(f"equal_steps must be an arm name, true or null, got {equal_steps!r}")
        self.equal_steps = equal_steps or None
        self.classifier_batch_size = classifier_batch_size
        self.n_synthetic = n_synthetic_per_class
        self.augment_repeats = max(1, int(augment_repeats))
        # the efficient recipe: a budget in G steps, and ADA inside D instead of classic augmentation of G's data
        self.gan_steps = None if gan_steps is None else int(gan_steps)
        self.gan_augment = bool(gan_augment)
        self.checkpoint_interval, self.sample_interval = checkpoint_interval, sample_interval
        self.a_min, self.a_max = a_min, a_max
        self.synthetic_format = synthetic_format
        self.comparisons = [tuple(c) for c in comparisons]
        self.paper_reference = paper_reference or {}
        self.bundle, self.paper = bundle, paper
        self.audit = audit
        self.notes = list(notes)
        self._synthetic_keys: dict[int, str] = {}  # fold -> digest of the settings that made its synthetic set
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.progress = progress
        self.synthetic_balance = None if synthetic_balance is None else float(synthetic_balance)
        self.synthetic_classes = None if synthetic_classes is None else [str(c) for c in synthetic_classes]
        unknown_classes = [c for c in self.synthetic_classes or [] if c not in self.class_names]
        if unknown_classes:
            raise ValueError(f"synthetic_classes {unknown_classes} are not among {self.class_names}")
        self.tasks = make_tasks(self.class_names, tasks, background_classes) if tasks else None
        self.finetune_epochs = finetune_epochs
        self.finetune_lr_scale = float(finetune_lr_scale)
        self.external = dataset.get("external_test")  # None, or the external test set (common.protocol.external)
        self.bootstrap_resamples = int(bootstrap_resamples)

    @property
    def needs_synthetic(self) -> bool:
        return any(ARMS[a]["synthetic"] or ARMS[a].get("pretrain_synthetic") for a in self.arms)

    def synthetic_counts(self, train: list[dict]) -> list[int]:
        """Synthetic images per class for a fold's training items (see ``synthetic_balance``)."""
        if self.synthetic_balance is None:
            return [self.n_synthetic] * len(self.class_names)
        real = np.bincount([int(it["label"]) for it in train], minlength=len(self.class_names))
        target = int(round(self.synthetic_balance * real.max()))
        allowed = set(self.synthetic_classes) if self.synthetic_classes is not None else set(self.class_names)
        return [max(0, target - int(n)) if c in allowed else 0 for c, n in zip(self.class_names, real, strict=True)]

    def _synthetic_items(self, fold: int, train: list[dict]) -> list[dict]:
        fold_dir = self.output_dir / f"fold{fold}"
        syn_dir = fold_dir / "synthetic"
        datalist = syn_dir / "datalist.json"
        counts = self.synthetic_counts(train)
        # a small set: a class with fewer training images in this fold than a GAN needs (fit_gan: 2, counting the
        # augmented repeats) gets no GAN and no synthetic image, and the report says so
        repeats = self.augment_repeats if self.gan_augment else 1
        real = np.bincount([int(it["label"]) for it in train], minlength=len(self.class_names))
        few = [c for c, n, r in zip(self.class_names, counts, real, strict=True) if n and r * repeats < 2]
        if few:
            note = (
                f"fold {fold}: too few training images of class(es) {few} for a GAN "
                f"({', '.join(str(int(real[self.class_names.index(c)])) for c in few)}): no synthetic image of them"
            )
            logger.warning(note)
            self.notes.append(note)
            counts = [0 if c in few else n for c, n in zip(self.class_names, counts, strict=True)]
        if not sum(counts):
            return []
        # per-class GANs only for the classes that get images (all classes when not balancing)
        gan_classes = (
            [c for c, n in zip(self.class_names, counts, strict=True) if n > 0] if self.per_class_gan else None
        )
        gan_dir = fold_dir / "gan"
        settings = {
            "gan_recipe": self.gan_recipe, "per_class": self.per_class_gan, "classes": gan_classes, "counts": counts,
            "train": train, "transforms": self.transforms, "gan_epochs": self.gan_epochs,
            "gan_batch_size": self.gan_batch_size, "gan_steps": self.gan_steps, "seed": self.seed + fold,
            "repeats": self.augment_repeats if self.gan_augment else 1,
            "augment": self.augmentation if self.gan_augment else None, "a_min": self.a_min, "a_max": self.a_max,
            "format": self.synthetic_format,
        }  # fmt: skip
        # reuse (or resume) only what these settings made; other settings' GANs and images are moved aside
        self._synthetic_keys[fold] = settings_digest(settings)
        claim(gan_dir, settings, "GANs")
        claim(syn_dir, settings, "synthetic images")
        if datalist.is_file():
            return read_datalist(str(datalist))["training"]
        fit_gans(
            self.gan_recipe,
            train,
            self.transforms,
            str(gan_dir),
            class_names=self.class_names,
            per_class=self.per_class_gan,
            classes=gan_classes,
            max_epochs=self.gan_epochs,
            batch_size=self.gan_batch_size,
            device=self.device,
            seed=self.seed + fold,
            num_workers=self.num_workers,
            repeats=self.augment_repeats if self.gan_augment else 1,
            augment=self.augmentation if self.gan_augment else None,
            total_steps=self.gan_steps,
            checkpoint_interval=self.checkpoint_interval,
            sample_interval=self.sample_interval,
            progress=self.progress,
            tensorboard=False,
        )
        gens = load_generators(self.gan_recipe, str(gan_dir), self.class_names, device=self.device, classes=gan_classes)
        path = generate_synthetic_set(
            gens,
            self.class_names,
            counts,
            str(syn_dir),
            a_min=self.a_min,
            a_max=self.a_max,
            seed=self.seed + 100 + fold,
            device=self.device,
            file_format=self.synthetic_format,
            source=str(gan_dir),
        )
        return read_datalist(path)["training"]

    def _arm_dir(self, fold: int, arm: str, task: ClassificationTask | None = None) -> Path:
        base = self.output_dir / f"fold{fold}"
        if task is not None:
            base = base / "tasks" / task.name
        return base / "arms" / arm.replace("+", "_plus_")

    def _task_recipe(self, task: ClassificationTask | None) -> ClassifierRecipe:
        """The classifier recipe for ``task``: its network callable gets ``num_classes=<the task's>`` (the network
        must take that keyword, as ``LesionClassifier`` does) when the task has another number of classes."""
        base = self.classifier_recipe
        if task is None or len(task.class_names) == len(self.class_names):
            return base
        k = len(task.class_names)
        return ClassifierRecipe(
            network=lambda: base.network(num_classes=k),
            optimizer=base.optimizer,
            class_weighted_loss=base.class_weighted_loss,
        )

    def _pretrained_recipe(self, fold: int, train, val, test, synthetic, task) -> ClassifierRecipe:
        """The classifier recipe of the fine-tuning stage: the synthetic_only arm's selected model (trained now if
        it is not on disk), and the recipe's optimiser with its learning rate scaled by ``finetune_lr_scale``."""
        model_file = self._arm_dir(fold, "synthetic_only", task) / "best_model.pt"
        if not (model_file.is_file() and model_file.with_name("result.json").is_file()):
            self._run_arm(fold, "synthetic_only", train, val, test, synthetic, task=task)
        base, scale = self._task_recipe(task), self.finetune_lr_scale

        def network():
            net = base.network()
            net.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
            return net

        def optimizer(params):
            opt = base.optimizer(params)
            for group in opt.param_groups:
                group["lr"] = group["lr"] * scale
            return opt

        return ClassifierRecipe(network=network, optimizer=optimizer, class_weighted_loss=base.class_weighted_loss)

    def _arm_items(self, arm: str, fold: int, train: list[dict], synthetic: list[dict]) -> list[dict]:
        """The training items of ``arm``: real (repeated for classic augmentation, or oversampled) + synthetic."""
        spec = ARMS[arm]
        real = list(train) * (self.augment_repeats if spec["augment"] else 1) if spec["real"] else []
        if spec.get("oversample"):
            real = oversample(real, seed=self.seed + fold)
        return real + (list(synthetic) if spec["synthetic"] else [])

    def _run_arm(
        self, fold: int, arm: str, train, val, test, synthetic, task: ClassificationTask | None = None
    ) -> dict:
        result_file = self._arm_dir(fold, arm, task) / "result.json"
        spec = ARMS[arm]
        class_names = list(task.class_names) if task is not None else self.class_names
        recipe, epochs = self._task_recipe(task), self.classifier_epochs
        if spec.get("pretrain_synthetic"):
            recipe = self._pretrained_recipe(fold, train, val, test, synthetic, task)
            epochs = self.finetune_epochs or self.classifier_epochs
        items = self._arm_items(arm, fold, train, synthetic)
        if self.equal_steps and not spec.get("pretrain_synthetic"):  # fine-tuning keeps its own epochs
            reference = len(self._arm_items(self.equal_steps, fold, train, synthetic))
            epochs = equal_step_epochs(self.classifier_epochs, reference, len(items))
        uses_synthetic = spec["synthetic"] or spec.get("pretrain_synthetic")
        settings = {
            "arm": arm, "classes": class_names, "recipe": recipe, "epochs": epochs,
            "batch_size": self.classifier_batch_size, "seed": self.seed + fold, "train": items,
            "val": val, "test": test, "transforms": self.transforms,
            "augmentation": self.augmentation if spec["augment"] else None,
            "synthetic": self._synthetic_keys.get(fold) if uses_synthetic else None,
        }  # fmt: skip
        claim(result_file.parent, settings, f"fold {fold} arm '{arm}' results")
        if result_file.is_file():
            return json.loads(result_file.read_text())
        logger.info(
            f"fold {fold}, arm '{arm}': {len(items)} training images, {epochs} epochs "
            f"({len(val)} val, {len(test)} test)"
        )
        fit = fit_classifier(
            recipe,
            items,
            val,
            self.transforms,
            self.transforms,
            str(result_file.parent),
            num_classes=len(class_names),
            max_epochs=epochs,
            batch_size=self.classifier_batch_size,
            device=self.device,
            seed=self.seed + fold,
            num_workers=self.num_workers,
            augment=self.augmentation if spec["augment"] else None,
        )
        metrics = evaluate_classifier(
            fit["network"], test, self.transforms, class_names, device=self.device, num_workers=0
        )
        metrics.update(
            {
                "best_val_balanced_accuracy": fit["best_metric"],
                "best_epoch": fit["best_epoch"],
                "n_train": len(items),
                "epochs": epochs,
            }
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
        settings = {"train": train, "test": test, "synthetic": self._synthetic_keys.get(fold)}
        claim(out, settings, f"fold {fold} audit")
        if (out / "audit.json").is_file():  # done in an earlier run with the same inputs
            return json.loads((out / "audit.json").read_text())
        return audit_datalists(train, test, synthetic, str(out), transforms=self.transforms)

    def run(self) -> dict:
        """Run every fold and arm (skipping what is already on disk) and write the report. Returns the report."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        splits = load_or_make_splits(
            str(self.output_dir / "splits.json"), self.items, self.k, self.seed, self.val_fraction
        )
        self.k = note_fallback(splits, self.notes)  # fewer folds than asked for a small set
        per_fold: dict[str, list[dict]] = {a: [] for a in self.arms}
        per_task: dict[str, dict[str, list[dict]]] = {t.name: {a: [] for a in self.arms} for t in self.tasks or []}
        # external scores, per task ("" without tasks) and arm: one per fold, of the models trained anyway
        external: dict[str, dict[str, list[dict]]] = {t: {a: [] for a in self.arms} for t in self._task_names()}
        audits = []
        eta = FoldETA(len(splits["folds"]))
        for fold, split in enumerate(splits["folds"]):
            eta.start()
            train, val, test = (select(self.items, split[s]) for s in ("train", "val", "test"))
            synthetic = self._synthetic_items(fold, train) if self.needs_synthetic else []
            for task in self.tasks or []:
                # Same patients and synthetic images for every task: only the labels change.
                sets = [relabel(x, task) for x in (train, val, test, synthetic)]
                for arm in self.arms:
                    per_task[task.name][arm].append(self._run_arm(fold, arm, *sets, task=task))
                    if self.external is not None:
                        external[task.name][arm].append(self._score_external(fold, arm, task))
            for arm in self.arms if not self.tasks else ():
                per_fold[arm].append(self._run_arm(fold, arm, train, val, test, synthetic))
                if self.external is not None:
                    external[""][arm].append(self._score_external(fold, arm))
            audit = late_step(f"fold {fold}: synthesis/privacy audit", self.notes, self._audit, fold, train, test,
                              synthetic)  # fmt: skip
            if audit:
                audits.append(audit)
            eta.done(fold)
        tasks_section = self._tasks_section(per_task) if self.tasks else None
        if self.tasks:
            per_fold = per_task[self.tasks[0].name]
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
                "gan_steps": self.gan_steps,
                "classifier_epochs": self.classifier_epochs,
                "equal_steps": self.equal_steps,
                "n_synthetic_per_class": self.n_synthetic,
                "augment_repeats": self.augment_repeats,
                "per_class_gan": self.per_class_gan,
                "synthetic_balance": self.synthetic_balance,
                "synthetic_classes": self.synthetic_classes,
                "val_fraction": self.val_fraction,
            },
            "arms": summarize_arms(per_fold),
            "comparisons": compare_arms(per_fold, self.comparisons),
            "paper_reference": self.paper_reference,
            "synthesis": _merge_folds([a.get("synthesis", {}) for a in audits]),
            "privacy": _merge_folds([a.get("privacy", {}) for a in audits]),
            "notes": self.notes,
        }
        if tasks_section is not None:
            report["primary_task"] = self.tasks[0].name
            report["tasks"] = tasks_section
        if self.external is not None:
            report["external"] = self._external_section(external)
        write_report(report, str(self.output_dir))
        logger.info(f"report written to {self.output_dir / 'report.json'}")
        return report

    def _task_names(self) -> list[str]:
        return [t.name for t in self.tasks] if self.tasks else [""]

    def _score_external(self, fold: int, arm: str, task: ClassificationTask | None = None) -> dict:
        """The arm's selected model of this fold (and task) scored on the external test set (cached beside it)."""
        names = list(task.class_names) if task is not None else self.class_names
        return external_scores.score_classifier(
            self._arm_dir(fold, arm, task),
            self._task_recipe(task).network,
            relabel(self.external["items"], task),
            self.transforms,
            names,
            device=self.device,
        )

    def _external_section(self, scores: dict[str, dict[str, list[dict]]]) -> dict:
        """The report's ``external`` section: the primary task's arms (and, with tasks, every task's)."""

        def one(task: ClassificationTask | None) -> dict:
            names = list(task.class_names) if task is not None else self.class_names
            return external_scores.classification_section(
                self.external, scores[task.name if task is not None else ""], class_names=names,
                n_resamples=self.bootstrap_resamples, seed=self.seed, comparisons=self.comparisons,
            )  # fmt: skip

        out = one(self.tasks[0] if self.tasks else None)
        if self.tasks:
            out["tasks"] = {t.name: one(t) for t in self.tasks}
        return out

    def export_best_classifier(self, **downstream) -> dict:
        """Copy the classifier of the best arm and fold (primary task), by *validation* balanced accuracy, to
        ``<output_dir>/classifier.pt`` (what a bundle's ``classify.json`` loads); ``classifier.json`` records it.

        With ``downstream`` (``template``, ``source_root``, ``image``, ``config`` ...; see ``export_downstream``)
        the same model also becomes a MONAI Label-loadable bundle folder ``<output_dir>/<bundle>_classification``.
        """
        task = self.tasks[0] if self.tasks else None
        candidates = [
            (arm, fold, self._arm_dir(fold, arm, task) / "result.json") for arm in self.arms for fold in range(self.k)
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

    def _tasks_section(self, per_task: dict[str, dict[str, list[dict]]]) -> dict:
        """Per task: class names, arms (mean/std/CI over folds), comparisons and the paper's numbers for it; plus
        ``binary_mean``, each fold's metrics averaged over the binary tasks (He et al.'s "mean accuracy")."""
        refs = self.paper_reference.get("tasks", {})
        section = {}
        for task in self.tasks:
            section[task.name] = {
                "class_names": list(task.class_names),
                "arms": summarize_arms(per_task[task.name]),
                "comparisons": compare_arms(per_task[task.name], self.comparisons),
                "paper_reference": refs.get(task.name, {}),
            }
        binary = [t.name for t in self.tasks if len(t.class_names) == 2]
        if len(binary) > 1:
            metrics = [m for m in SUMMARY_METRICS if m != "auc"]  # AUC is NaN where a fold lacks a sign: keep it out
            mean_per_fold = {
                arm: [_binary_mean(per_task, binary, arm, f, metrics) for f in range(self.k)] for arm in self.arms
            }
            section["binary_mean"] = {
                "class_names": binary,
                "num_classes": 2,  # each task's: chance is 1/2
                "arms": summarize_arms(mean_per_fold),
                "comparisons": compare_arms(mean_per_fold, self.comparisons),
                "paper_reference": refs.get("binary_mean", {}),
            }
        return section


def _binary_mean(per_task: dict, tasks: Sequence[str], arm: str, fold: int, metrics: Sequence[str]) -> dict:
    """One fold's metrics averaged over the binary ``tasks``; undefined (NaN, with the tasks' reasons) where a task's
    is: a mean over the tasks that happen to be defined would be another quantity in the same column."""
    folds = [per_task[t][arm][fold] for t in tasks]
    out: dict = {}
    undefined: dict[str, str] = {}
    for m in metrics:
        values = [f.get(m) for f in folds]
        bad = [(t, f) for t, f, v in zip(tasks, folds, values, strict=True) if not _finite(v)]
        out[m] = float("nan") if bad else float(np.mean(values))
        if bad:
            undefined[m] = "; ".join(f"task '{t}': {(f.get('undefined') or {}).get(m, 'not computed')}" for t, f in bad)
    return out | {"undefined": undefined}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _merge_folds(sections: list[dict]) -> dict:
    """Per-fold audit sections -> ``{"mean": {...}, "per_fold": [...]}`` (see ``merge_fold_sections``)."""
    return merge_fold_sections(sections)


def oversample(items: Sequence[dict], seed: int = 0, label_key: str = "label") -> list[dict]:
    """Class-balanced re-sampling: every class repeated (whole copies, then a seeded random remainder) up to the
    largest class's count, so that each epoch shows the classes equally often. Items are the same dict objects, so
    ``cached_dataset`` loads each file once."""
    by_class: dict[int, list[dict]] = {}
    for it in items:
        by_class.setdefault(int(it[label_key]), []).append(it)
    if not by_class:
        return []
    target = max(len(v) for v in by_class.values())
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for label in sorted(by_class):
        group = by_class[label]
        whole, rest = divmod(target, len(group))
        out += group * whole + [group[i] for i in sorted(rng.choice(len(group), rest, replace=False))]
    return out
