"""The SpineGAN clinical loss (Schonfeld & Veeravagu 2022) as a reusable generator term.

Paper, generator step only::

    L_G = mean(softplus(-D(G(z, c), c))) + 0.1 * BCE(C(G(z, c)), c_abnormal)

with C a frozen, pretrained normal/abnormal classifier: G is pushed to make images that C recognises as the class
they were asked for, and the gradient flows *through* C (whose weights stay fixed) into G.

``ClinicalLoss`` is the term for any frozen classifier; ``ClinicalLossRecipe`` is how a bundle gets one without
downloaded weights: before GAN training it trains the classifier on the GAN's own training images (split again by
patient into train/validation, model selection on validation), caches it next to the GAN, then builds the term.

Input range. G produces images in [-1, 1] (StyleGAN2's convention). A classifier trained on images scaled to [0, 1]
(the usual convention for ImageNet-style classifiers) sees out-of-range inputs if G's output is fed to it as it is;
the issue notes that the authors' pipeline mixed the two ranges. Here the classifier is
fed G's output mapped into the range the classifier was trained on (``classifier_range``; our bundle trains it on
the same [-1, 1] images as the GAN, so no mapping happens by default). ``rescale=False`` feeds G's raw output, which
reproduces the mismatch when ``classifier_range`` is (0, 1): an ablation, not a recommendation.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["ClinicalLoss", "ClinicalLossRecipe"]


class ClinicalLoss(nn.Module):
    """``weight * BCE(C(x), [c == abnormal_class])`` for a frozen classifier C; gradients reach x (and G).

    Args:
        classifier: any module mapping images to logits ``(B, 1)`` (abnormal logit), ``(B, 2)`` (softmax over
            normal/abnormal: the abnormal logit is their difference) or ``(B, K > 2)`` (then the term is the
            cross-entropy with the requested class, the multi-class generalisation). Frozen here: eval mode, no
            parameter gradients.
        weight: the paper's 0.1.
        abnormal_class: the label index meaning "abnormal".
        generator_range, classifier_range: intensity ranges of G's output and of the classifier's training input.
        rescale: map G's range to the classifier's (default, correct); False feeds G's output unchanged.

    ``forward(images, labels)`` returns ``{"loss": weight * bce, "bce": bce}``.
    """

    def __init__(
        self,
        classifier: nn.Module,
        weight: float = 0.1,
        abnormal_class: int = 1,
        generator_range: Sequence[float] = (-1.0, 1.0),
        classifier_range: Sequence[float] = (-1.0, 1.0),
        rescale: bool = True,
    ) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.weight = float(weight)
        self.abnormal_class = int(abnormal_class)
        self.generator_range = tuple(float(v) for v in generator_range)
        self.classifier_range = tuple(float(v) for v in classifier_range)
        self.rescale = bool(rescale)

    def train(self, mode: bool = True) -> ClinicalLoss:  # the classifier stays frozen in eval mode
        return super().train(False)

    def to_classifier_range(self, images: torch.Tensor) -> torch.Tensor:
        if not self.rescale or self.generator_range == self.classifier_range:
            return images
        (g0, g1), (c0, c1) = self.generator_range, self.classifier_range
        return (images - g0) / (g1 - g0) * (c1 - c0) + c0

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        self.classifier.eval()
        logits = self.classifier(self.to_classifier_range(images)).float()
        labels = labels.long().view(-1)
        if logits.dim() == 1 or logits.shape[1] == 1:
            abnormal_logit = logits.view(-1)
        elif logits.shape[1] == 2:
            other = 1 - self.abnormal_class
            abnormal_logit = logits[:, self.abnormal_class] - logits[:, other]  # log p(abn) - log p(normal)
        else:
            bce = F.cross_entropy(logits, labels)
            return {"loss": self.weight * bce, "bce": bce}
        target = (labels == self.abnormal_class).float()
        bce = F.binary_cross_entropy_with_logits(abnormal_logit, target)
        return {"loss": self.weight * bce, "bce": bce}


class ClinicalLossRecipe:
    """Builds a ``ClinicalLoss`` whose classifier is trained on the GAN's training images (no downloaded weights).

    ``StyleGAN2Objective(clinical=ClinicalLossRecipe(...))``: ``fit_gan`` calls ``objective.prepare(items=...,
    transforms=..., output_dir=..., device=..., seed=...)`` before training, which trains (or, when its
    ``done.json`` exists, reloads) the classifier in ``<output_dir>/clinical_classifier/``. The classifier's own
    validation split comes from the GAN's training patients, so a protocol's test fold never reaches it.

    Args:
        classifier_recipe: a ``common.engines.ClassifierRecipe``.
        weight: the term's weight; 0 switches SpineGAN off (no classifier is trained).
        num_classes, abnormal_class: the label set.
        epochs, batch_size, val_fraction: classifier training.
        augment: optional batch augmentation of the classifier's training batches.
        classifier_range, rescale: see ``ClinicalLoss``.
    """

    def __init__(
        self,
        classifier_recipe,
        weight: float = 0.1,
        num_classes: int = 2,
        abnormal_class: int = 1,
        epochs: int = 20,
        batch_size: int = 32,
        val_fraction: float = 0.15,
        augment=None,
        classifier_range: Sequence[float] = (-1.0, 1.0),
        rescale: bool = True,
    ) -> None:
        self.classifier_recipe = classifier_recipe
        self.weight = float(weight)
        self.num_classes = int(num_classes)
        self.abnormal_class = int(abnormal_class)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.val_fraction = float(val_fraction)
        self.augment = augment
        self.classifier_range = classifier_range
        self.rescale = rescale
        self.loss: ClinicalLoss | None = None
        self.report: dict = {}

    def prepare(self, *, items, transforms, output_dir: str, device="cpu", seed: int = 0, **_) -> None:
        if self.weight <= 0:
            self.loss = None
            return
        from common.engines.classifier_training import evaluate_classifier, fit_classifier
        from common.protocol.folds import patient_folds

        out = Path(output_dir) / "clinical_classifier"
        done = out / "done.json"
        network = self.classifier_recipe.network()
        if done.is_file() and (out / "best_model.pt").is_file():
            network.load_state_dict(torch.load(out / "best_model.pt", map_location="cpu", weights_only=True))
            self.report = json.loads(done.read_text())
        else:
            items = list(items)
            labels: dict[str, int] = {}
            for it in items:
                labels.setdefault(str(it.get("patient", it["image"])), int(it["label"]))
            k = max(2, int(round(1.0 / max(self.val_fraction, 1e-6))))
            val_patients = set(patient_folds(labels, k, seed + 7)[0])
            train = [it for it in items if str(it.get("patient", it["image"])) not in val_patients]
            val = [it for it in items if str(it.get("patient", it["image"])) in val_patients]
            logger.info(f"clinical loss: training its classifier on {len(train)} images ({len(val)} validation)")
            fit = fit_classifier(
                self.classifier_recipe, train, val, transforms, transforms, str(out), num_classes=self.num_classes,
                max_epochs=self.epochs, batch_size=self.batch_size, device=device, seed=seed, augment=self.augment,
            )  # fmt: skip
            network = fit["network"]
            val_metrics = evaluate_classifier(network, val, transforms, [str(i) for i in range(self.num_classes)])
            self.report = {
                "best_epoch": fit["best_epoch"],
                "val_balanced_accuracy": fit["best_metric"],
                "val_auc": val_metrics.get("auc"),
                "n_train": len(train),
                "n_val": len(val),
            }
            tmp = done.with_name(f".done.json.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(self.report, indent=1))
            os.replace(tmp, done)
        self.loss = ClinicalLoss(
            network.to(device), self.weight, self.abnormal_class, classifier_range=self.classifier_range,
            rescale=self.rescale,
        )  # fmt: skip

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        if self.loss is None:
            raise RuntimeError("ClinicalLossRecipe: call prepare(...) first (fit_gan does this before training)")
        return self.loss(images, labels)
