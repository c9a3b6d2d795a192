"""GAN objectives: what one training step of D and of G minimises.

An objective computes losses; the trainer (``common.engines.GANTrainer``) owns the optimisers, AMP, EMA and
regularisation schedule. This split lets one trainer serve DCGAN, ACGAN, pix2pix and StyleGAN2 alike.

Conventions: a generator has ``latent_dim``, ``num_classes`` and ``sample_latent(batch_size, device)``; it is called
as ``G(z)`` or, when conditional, ``G(z, labels)``. A discriminator returns logits ``(B,)``; an ACGAN discriminator
returns ``(logits (B,), class_logits (B, K))``. Losses are returned as a dict of scalar tensors whose key
``"d_loss"`` / ``"g_loss"`` is the one that is optimised; the other keys are logged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _adv_logits(out: torch.Tensor | tuple) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class GANObjective:
    """Base class: the interface the trainer calls. Subclasses implement ``d_loss`` and ``g_loss``."""

    #: the generator is conditioned on class labels (the trainer then passes labels from the batch)
    conditional: bool = False
    #: one G forward per step: D's step makes its fakes with gradients and G's step reuses them (after D's update),
    #: as pytorch/examples' DCGAN and junyanz's pix2pix do. Off by default, where each step makes fakes twice (no-grad
    #: for D, a second draw for G): switching it changes the random stream, and the shipped models were trained
    #: without it. Measured in docs/generators.md: 1.0-1.2x faster per step on a CPU; generators of the efficient
    #: recipe: the lung ACGAN worse (2 seeds), the liver DCGANs and brain's pix2pix without a consistent difference
    #: (2 seeds each; each bundle's docs/results/reuse_fakes_quality.json).
    reuse_fakes: bool = False

    def sample_labels(
        self, gen: nn.Module, labels: torch.Tensor | None, batch_size: int, device
    ) -> torch.Tensor | None:
        """Class labels for fake images: uniform over the generator's classes, so every class is trained equally."""
        if not self.conditional:
            return None
        return torch.randint(0, int(gen.num_classes), (batch_size,), device=device)

    def fake(self, gen: nn.Module, batch_size: int, device, labels: torch.Tensor | None) -> torch.Tensor:
        z = gen.sample_latent(batch_size, device=device)
        return gen(z, labels) if labels is not None else gen(z)

    def fakes_for_d(self, gen: nn.Module, reals: torch.Tensor, labels: torch.Tensor | None):
        """``(fakes, their labels)`` for D's step, fakes detached. With ``reuse_fakes`` they are made with gradients
        and kept for the next ``fakes_for_g`` (only the last D step's, when D takes several steps)."""
        n, device = reals.shape[0], reals.device
        fake_labels = self.sample_labels(gen, labels, n, device)
        if self.reuse_fakes:
            fakes = self.fake(gen, n, device, fake_labels)
            self._kept = (fakes, fake_labels)
            return fakes.detach(), fake_labels
        with torch.no_grad():
            return self.fake(gen, n, device, fake_labels), fake_labels

    def fakes_for_g(self, gen: nn.Module, reals: torch.Tensor, labels: torch.Tensor | None):
        """``(fakes, their labels)`` for G's step: those D's step kept (``reuse_fakes``), else a fresh draw."""
        kept, self._kept = getattr(self, "_kept", None), None  # dropped either way: it holds G's graph
        if kept is not None and kept[0].shape[0] == reals.shape[0]:
            return kept
        fake_labels = self.sample_labels(gen, labels, reals.shape[0], reals.device)
        return self.fake(gen, reals.shape[0], reals.device, fake_labels), fake_labels

    def d_loss(self, gen: nn.Module, disc: nn.Module, reals: torch.Tensor, labels: torch.Tensor | None) -> dict:
        raise NotImplementedError

    def g_loss(self, gen: nn.Module, disc: nn.Module, reals: torch.Tensor, labels: torch.Tensor | None) -> dict:
        raise NotImplementedError


class BCEObjective(GANObjective):
    """The DCGAN objective (Radford et al. 2016): binary cross-entropy for D, the non-saturating loss for G.

    Args:
        real_label: target for real images in D's loss; < 1 gives one-sided label smoothing (Salimans et al. 2016).
        reuse_fakes: one G forward per step, as pytorch/examples' DCGAN (``GANObjective.reuse_fakes``).
    """

    def __init__(self, real_label: float = 1.0, reuse_fakes: bool = False) -> None:
        self.real_label = float(real_label)
        self.reuse_fakes = bool(reuse_fakes)

    def d_loss(self, gen, disc, reals, labels):
        fakes, _ = self.fakes_for_d(gen, reals, labels)
        real_logits = _adv_logits(disc(reals))
        fake_logits = _adv_logits(disc(fakes))
        loss_real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, self.real_label))
        loss_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return {
            "d_loss": loss_real + loss_fake,
            "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),
            # ADA's overfitting heuristic r_t = E[sign(D(real))] (common.data.ada.AdaptiveAugmentHandler)
            "d_real_sign": torch.sign(real_logits).mean().detach(),
        }

    def g_loss(self, gen, disc, reals, labels):
        fakes, _ = self.fakes_for_g(gen, reals, labels)
        fake_logits = _adv_logits(disc(fakes))
        return {"g_loss": F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))}


class ACGANObjective(BCEObjective):
    """Auxiliary-classifier GAN (Odena et al. 2017): the BCE objective plus a class cross-entropy on D's second head.

    D learns to classify real images (and, as in the paper, fake ones with their sampled class); G learns to make
    images that D classifies as the class they were asked for.

    Args:
        aux_weight: weight of the auxiliary classification loss in both D's and G's loss.
        classify_fakes_in_d: add the fakes' class loss to D's loss (Odena et al.); turning it off keeps D's class
            head a pure real-image classifier.
    """

    conditional = True

    def __init__(
        self, aux_weight: float = 1.0, real_label: float = 1.0, classify_fakes_in_d: bool = True,
        reuse_fakes: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(real_label=real_label, reuse_fakes=reuse_fakes)
        self.aux_weight = float(aux_weight)
        self.classify_fakes_in_d = classify_fakes_in_d

    def d_loss(self, gen, disc, reals, labels):
        if labels is None:
            raise ValueError("ACGANObjective needs class labels in the batch (key 'label')")
        fakes, fake_labels = self.fakes_for_d(gen, reals, labels)
        real_logits, real_cls = disc(reals)
        fake_logits, fake_cls = disc(fakes)
        adv = F.binary_cross_entropy_with_logits(
            real_logits, torch.full_like(real_logits, self.real_label)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        aux = F.cross_entropy(real_cls, labels)
        if self.classify_fakes_in_d:
            aux = aux + F.cross_entropy(fake_cls, fake_labels)
        return {
            "d_loss": adv + self.aux_weight * aux,
            "d_adv": adv.detach(),
            "d_aux": aux.detach(),
            "d_real_class_acc": (real_cls.argmax(1) == labels).float().mean().detach(),
            "d_real_sign": torch.sign(real_logits).mean().detach(),
        }

    def g_loss(self, gen, disc, reals, labels):
        fakes, fake_labels = self.fakes_for_g(gen, reals, labels)
        fake_logits, fake_cls = disc(fakes)
        adv = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        aux = F.cross_entropy(fake_cls, fake_labels)
        return {"g_loss": adv + self.aux_weight * aux, "g_adv": adv.detach(), "g_aux": aux.detach()}
