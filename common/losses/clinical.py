"""The SpineGAN clinical loss (Schonfeld & Veeravagu 2022) as a reusable generator term.

Paper, generator step only::

    L_G = mean(softplus(-D(G(z, c), c))) + 0.1 * BCE(C(G(z, c)), c_abnormal)

with C a frozen, pretrained normal/abnormal classifier: G is pushed to make images that C recognises as the class
they were asked for, and the gradient flows *through* C (whose weights stay fixed) into G.

``ClinicalLoss`` is the term for any frozen classifier. How a bundle gets one without downloaded weights (train the
classifier on the GAN's own training images, split again by patient, before GAN training) is
``common.protocol.spinegan.ClinicalLossRecipe``: training a classifier is the engines' job, splitting by patient the
protocol's, and both sit above this layer.

Input range. G produces images in [-1, 1] (StyleGAN2's convention). A classifier trained on images scaled to [0, 1]
(the usual convention for ImageNet-style classifiers) sees out-of-range inputs if G's output is fed to it as it is;
the issue notes that the authors' pipeline mixed the two ranges. Here the classifier is
fed G's output mapped into the range the classifier was trained on (``classifier_range``; our bundle trains it on
the same [-1, 1] images as the GAN, so no mapping happens by default). ``rescale=False`` feeds G's raw output, which
reproduces the mismatch when ``classifier_range`` is (0, 1): an ablation, not a recommendation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClinicalLoss"]


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
