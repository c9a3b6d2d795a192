"""One fold of the classification protocol: a fresh classifier per task x arm, selected on the validation patients and
scored once on the test patients (and, when there is one, on the external test set).

Each arm's result is a file (``<arm dir>/result.json``, keyed by the settings that made it: ``common.protocol.cache``),
so a killed evaluation resumes where it stopped. Tasks (``common.protocol.tasks``) relabel the same patients and
synthetic images. The ``pretrain_synthetic+finetune`` arm fine-tunes the ``synthetic_only`` arm's model of the same
fold and task; ``equal_steps`` gives every arm the gradient steps of one arm (``common.protocol.budget``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.transforms import Compose

from common.engines.classifier_training import ClassifierRecipe, evaluate_classifier, fit_classifier
from common.protocol import external as external_scores
from common.protocol.augmentation.arms import ARMS, arm_dir, arm_items
from common.protocol.budget import equal_step_epochs
from common.protocol.cache import claim
from common.protocol.tasks import ClassificationTask, relabel

__all__ = ["FoldRunner", "Scores"]

logger = logging.getLogger(__name__)

#: ``{task name: {arm: [one entry per fold]}}``; the task name is ``""`` in a protocol without tasks
Scores = dict[str, dict[str, list[dict]]]


@dataclass(eq=False, repr=False, kw_only=True)
class FoldRunner:
    """Train and score every task x arm of a fold: :meth:`run_fold`. The arguments are the protocol's of the same names
    (``ClassificationProtocol``); ``synthetic_key(fold)`` names the settings that made the fold's synthetic set
    (``FoldSynthesis.key``), so an arm trained on other synthetic images is redone; ``external`` is the data set's
    external test set (``dataset["external_test"]``) or None."""

    output_dir: Path
    class_names: list[str]
    arms: list[str]
    tasks: list[ClassificationTask] | None
    classifier_recipe: ClassifierRecipe
    transforms: Compose
    augmentation: Callable[[torch.Tensor], torch.Tensor]
    synthetic_key: Callable[[int], str | None]
    external: dict | None
    classifier_epochs: int
    classifier_batch_size: int
    augment_repeats: int
    equal_steps: str | None
    finetune_epochs: int | None
    finetune_lr_scale: float
    seed: int
    device: torch.device
    num_workers: int

    @property
    def task_names(self) -> list[str]:
        """The keys of :data:`Scores`: the tasks' names, or ``[""]`` without tasks."""
        return [t.name for t in self.tasks] if self.tasks else [""]

    def empty_scores(self) -> Scores:
        return {t: {a: [] for a in self.arms} for t in self.task_names}

    def run_fold(self, fold: int, train, val, test, synthetic, scores: Scores, external: Scores) -> None:
        """Train and test every task x arm of ``fold`` (what is on disk is reused), appending each arm's test metrics
        to ``scores[task][arm]`` and, with an external test set, its selected model's scores on it to
        ``external[task][arm]``."""
        for task in self.tasks or [None]:
            name = task.name if task is not None else ""
            sets = [train, val, test, synthetic]
            if task is not None:  # same patients and synthetic images for every task: only the labels change
                sets = [relabel(x, task) for x in sets]
            for arm in self.arms:
                scores[name][arm].append(self.run_arm(fold, arm, *sets, task=task))
                if self.external is not None:
                    external[name][arm].append(self.score_external(fold, arm, task))

    def run_arm(self, fold: int, arm: str, train, val, test, synthetic, task: ClassificationTask | None = None) -> dict:
        """Train ``arm``'s classifier of ``fold`` (and ``task``) with model selection on ``val``; its metrics on
        ``test``. Read from ``result.json`` when these settings made it before."""
        result_file = arm_dir(self.output_dir, fold, arm, task) / "result.json"
        spec = ARMS[arm]
        class_names = list(task.class_names) if task is not None else self.class_names
        recipe, epochs = self.recipe(task), self.classifier_epochs
        if spec.get("pretrain_synthetic"):
            recipe = self.pretrained_recipe(fold, train, val, test, synthetic, task)
            epochs = self.finetune_epochs or self.classifier_epochs
        items = self._items(arm, fold, train, synthetic)
        if self.equal_steps and not spec.get("pretrain_synthetic"):  # fine-tuning keeps its own epochs
            reference = len(self._items(self.equal_steps, fold, train, synthetic))
            epochs = equal_step_epochs(self.classifier_epochs, reference, len(items))
        uses_synthetic = spec["synthetic"] or spec.get("pretrain_synthetic")
        settings = {
            "arm": arm, "classes": class_names, "recipe": recipe, "epochs": epochs,
            "batch_size": self.classifier_batch_size, "seed": self.seed + fold, "train": items,
            "val": val, "test": test, "transforms": self.transforms,
            "augmentation": self.augmentation if spec["augment"] else None,
            "synthetic": self.synthetic_key(fold) if uses_synthetic else None,
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

    def _items(self, arm: str, fold: int, train: Sequence[dict], synthetic: Sequence[dict]) -> list[dict]:
        return arm_items(arm, train, synthetic, augment_repeats=self.augment_repeats, seed=self.seed + fold)

    def recipe(self, task: ClassificationTask | None) -> ClassifierRecipe:
        """The classifier recipe for ``task``: its network callable gets ``num_classes=<the task's>`` (the network
        must take that keyword, as ``FridAdarCNN`` does) when the task has another number of classes."""
        base = self.classifier_recipe
        if task is None or len(task.class_names) == len(self.class_names):
            return base
        k = len(task.class_names)
        return ClassifierRecipe(
            network=lambda: base.network(num_classes=k),
            optimizer=base.optimizer,
            class_weighted_loss=base.class_weighted_loss,
        )

    def pretrained_recipe(self, fold: int, train, val, test, synthetic, task) -> ClassifierRecipe:
        """The classifier recipe of the fine-tuning stage: the synthetic_only arm's selected model (trained now if
        it is not on disk), and the recipe's optimiser with its learning rate scaled by ``finetune_lr_scale``."""
        model_file = arm_dir(self.output_dir, fold, "synthetic_only", task) / "best_model.pt"
        if not (model_file.is_file() and model_file.with_name("result.json").is_file()):
            self.run_arm(fold, "synthetic_only", train, val, test, synthetic, task=task)
        base, scale = self.recipe(task), self.finetune_lr_scale

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

    def score_external(self, fold: int, arm: str, task: ClassificationTask | None = None) -> dict:
        """The arm's selected model of this fold (and task) scored on the external test set (cached beside it)."""
        names = list(task.class_names) if task is not None else self.class_names
        return external_scores.score_classifier(
            arm_dir(self.output_dir, fold, arm, task),
            self.recipe(task).network,
            relabel(self.external["items"], task),
            self.transforms,
            names,
            device=self.device,
        )
