"""SpineGAN (Schonfeld & Veeravagu 2022) as the evaluation wires it: the clinical loss's classifier and the arms.

- ``ClinicalLossRecipe`` builds the SpineGAN clinical term (``common.losses.clinical.ClinicalLoss``) without
  downloaded weights: before GAN training it trains the frozen classifier on the GAN's own training images (split
  again by patient into train/validation with ``common.protocol.folds``, model selection on validation,
  ``common.engines.classifier_training``), caches it next to the GAN, then hands it to the loss.
- ``stylegan2_variants`` builds every generator arm of the paper (plain, SpineGAN, DP-SGD at each epsilon, the
  paper's noise-then-clip) from one set of ``common.engines.stylegan2.stylegan2_recipe`` settings, so the arms differ
  only in what they are meant to differ in.

Both sit here, above the layers they combine (losses, engines, privacy; see ``tests/test_import_layers.py``): the
engines receive them as arguments (``stylegan2_recipe(clinical=..., privacy=...)``, ``fit_gan`` calling the
objective's ``prepare``) and never import them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from common.engines.classifier_training import evaluate_classifier, fit_classifier
from common.engines.gan_training import GANRecipe
from common.engines.stylegan2 import stylegan2_recipe
from common.losses.clinical import ClinicalLoss
from common.privacy.dp import DPSGDDiscriminator, PaperNoiseThenClip
from common.protocol.folds import patient_folds

logger = logging.getLogger(__name__)

__all__ = ["ClinicalLossRecipe", "stylegan2_variants"]


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


def stylegan2_variants(
    settings: dict,
    *,
    clinical=None,
    dp_epsilons: Sequence[float] = (),
    dp_delta: float = 1e-5,
    dp_max_grad_norm: float = 1.0,
    dp_ada_p: float = 0.2,
    dp_audit_canaries: int = 0,
    paper_noise_then_clip: bool = False,
) -> dict[str, GANRecipe]:
    """The generator arms of the SpineGAN paper from one set of ``settings`` (``stylegan2_recipe`` keywords):

    ``stylegan2`` (conditional StyleGAN2-ADA), ``spinegan`` (+ ``clinical``, when given), ``dp_eps<e>`` (DP-SGD on D
    at each target epsilon, fixed ADA p ``dp_ada_p``; with ``dp_audit_canaries`` > 0 each DP arm's ``privacy.json``
    also carries the one-run canary audit's epsilon lower bound at its (sigma, C, q, steps), one audit per distinct
    setting) and, optionally, ``paper_noise_then_clip`` (the authors' "DP", no guarantee).
    """
    settings = {k: v for k, v in dict(settings).items() if k not in ("clinical", "privacy")}
    out = {"stylegan2": stylegan2_recipe(**settings)}
    if clinical is not None and getattr(clinical, "weight", 0) > 0:
        out["spinegan"] = stylegan2_recipe(**settings, clinical=clinical)
    for eps in dp_epsilons:
        # no seed: DP's noise and sampling come from fresh OS entropy (common.privacy.dp)
        dp = DPSGDDiscriminator(
            target_epsilon=float(eps), target_delta=dp_delta, max_grad_norm=dp_max_grad_norm,
            audit_canaries=dp_audit_canaries,
        )  # fmt: skip
        name = f"dp_eps{float(eps):g}"
        out[name] = stylegan2_recipe(**{**settings, "ada_p": dp_ada_p}, privacy=dp)
    if paper_noise_then_clip:
        out["paper_noise_then_clip"] = stylegan2_recipe(**settings, privacy=PaperNoiseThenClip())
    return out
