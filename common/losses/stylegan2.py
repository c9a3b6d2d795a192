"""StyleGAN2's losses (Karras et al. 2020): the non-saturating logistic loss, lazy R1 and path-length regularisers.

``StyleGAN2Objective`` plugs into ``GANTrainer`` like every other ``GANObjective``; ``R1Regularizer`` is a
``d_regularizer`` and ``PathLengthRegularizer`` a ``g_regularizer`` (the trainer applies them every
``d_reg_interval`` / ``g_reg_interval`` iterations and scales them by that interval: lazy regularisation).
The optional SpineGAN clinical term (``common.losses.clinical``) is added to G's loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.losses.adversarial import GANObjective

__all__ = ["PathLengthRegularizer", "R1Regularizer", "StyleGAN2Objective"]


def _call_disc(disc, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    return disc(images) if labels is None else disc(images, labels)


class StyleGAN2Objective(GANObjective):
    """Non-saturating logistic GAN loss: D minimises ``softplus(D(fake)) + softplus(-D(real))``, G minimises
    ``softplus(-D(G(z, c)))`` [+ the clinical term].

    Args:
        conditional: class-conditional G and D (labels from the batch; fake labels uniform over the classes).
        clinical: a ``common.protocol.spinegan.ClinicalLossRecipe`` (or ready ``ClinicalLoss``) adding SpineGAN's
            term to G's loss; a recipe with ``weight == 0`` is off.
        joint_d_batch: one D forward pass over ``cat(reals, fakes)`` instead of two. Required under DP-SGD:
            Opacus records one set of activations per forward pass, and one pass keeps every row's per-sample
            gradient its own. (With a minibatch-std layer, keep it False: groups would mix reals and fakes.)
        fake_batch_size: fakes per D step; None = as many as reals. Under DP with Poisson sampling set it to the
            expected batch size: a fake count that follows the (private) real count would let one real image
            change two clipped rows, doubling the sensitivity the accountant assumes.

    Logged: ``d_real`` / ``d_fake`` (mean logits), ``d_real_sign`` (mean sign(D(real)): ADA's r_t), ``g_adv``,
    ``g_clinical``.
    """

    def __init__(
        self, conditional: bool = True, clinical=None, joint_d_batch: bool = False, fake_batch_size: int | None = None
    ) -> None:
        self.conditional = bool(conditional)
        self.clinical = clinical
        self.joint_d_batch = bool(joint_d_batch)
        self.fake_batch_size = None if fake_batch_size is None else int(fake_batch_size)

    @property
    def clinical_weight(self) -> float:
        return float(getattr(self.clinical, "weight", 0.0)) if self.clinical is not None else 0.0

    def prepare(self, **kwargs) -> None:
        """Called by ``fit_gan`` before training with the GAN's training items: trains the clinical classifier."""
        if self.clinical is not None and hasattr(self.clinical, "prepare"):
            self.clinical.prepare(**kwargs)

    def d_loss(self, gen, disc, reals, labels):
        n_fake = self.fake_batch_size or max(1, reals.shape[0])
        fake_labels = self.sample_labels(gen, labels, n_fake, reals.device)
        with torch.no_grad():
            fakes = self.fake(gen, n_fake, reals.device, fake_labels)
        n_real = reals.shape[0]
        if self.joint_d_batch:
            images = torch.cat([reals, fakes.to(reals.dtype)], 0)
            both = None if labels is None else torch.cat([labels, fake_labels], 0)
            logits = _call_disc(disc, images, both)
            real_logits, fake_logits = logits[:n_real], logits[n_real:]
            # per-row losses over the joint batch; their mean x 2 equals mean(real) + mean(fake) for equal counts,
            # and a mean over rows is what Opacus' loss_reduction="mean" expects
            rows = torch.cat([F.softplus(-real_logits), F.softplus(fake_logits)])
            loss = rows.mean() * 2.0
        else:
            real_logits = _call_disc(disc, reals, labels)
            fake_logits = _call_disc(disc, fakes, fake_labels)
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        return {
            "d_loss": loss,
            "d_real": real_logits.detach().mean() if n_real else torch.zeros(()),
            "d_fake": fake_logits.detach().mean(),
            "d_real_sign": real_logits.detach().sign().mean() if n_real else torch.zeros(()),
        }

    def g_loss(self, gen, disc, reals, labels):
        n = self.fake_batch_size or max(1, reals.shape[0])
        fake_labels = self.sample_labels(gen, labels, n, reals.device)
        fakes = self.fake(gen, n, reals.device, fake_labels)
        adv = F.softplus(-_call_disc(disc, fakes, fake_labels)).mean()
        out = {"g_adv": adv.detach()}
        loss = adv
        if self.clinical_weight > 0:
            clinical = self.clinical(fakes, fake_labels)
            loss = loss + clinical["loss"]
            out["g_clinical"] = clinical["bce"].detach()
        out["g_loss"] = loss
        return out


class R1Regularizer:
    """R1 gradient penalty on real images (Mescheder et al. 2018): ``gamma / 2 * E ||grad_x D(x)||^2``.

    Used as ``GANTrainer(d_regularizer=R1Regularizer(gamma), d_reg_interval=16)``. The trainer passes the
    discriminator as D sees images (after ADA), so the gradient is taken with respect to the un-augmented reals
    through the augmentation, as in StyleGAN2-ADA. The authors' gamma at 256 px, batch 16: 0.82
    (``0.0002 * 256**2 / 16``, StyleGAN2-ADA's ``auto`` rule).

    ``pass_labels=False`` for a discriminator that takes no class input (an ACGAN D classifies instead).
    """

    def __init__(self, gamma: float = 0.82, pass_labels: bool = True) -> None:
        self.gamma = float(gamma)
        self.pass_labels = bool(pass_labels)

    def __call__(self, disc, reals: torch.Tensor, labels: torch.Tensor | None) -> dict:
        x = reals.detach().requires_grad_(True)
        logits = _call_disc(disc, x, labels if self.pass_labels else None)
        if isinstance(logits, tuple):  # an ACGAN D also returns class logits: R1 is on the real/fake logit
            logits = logits[0]
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        penalty = grad.square().sum(dim=tuple(range(1, grad.dim())))
        return {"d_reg": penalty.mean() * (self.gamma / 2.0), "r1_penalty": penalty.detach().mean()}


class PathLengthRegularizer(nn.Module):
    """Path-length regulariser (Karras et al. 2020): keeps ``|J_w^T y|`` (y: random image-space direction) near its
    running mean ``a``, making the w -> image map closer to an isometry. Penalty: ``weight * E (|J_w^T y| - a)^2``.

    Used as ``GANTrainer(g_regularizer=PathLengthRegularizer(2.0), g_reg_interval=4)``. ``a`` is a buffer
    (``pl_mean``), saved with the checkpoints. The generator must accept ``return_ws=True``.

    Args:
        weight: the paper's pl weight (2).
        decay: update rate of the running mean (0.01).
        batch_shrink: the penalty uses ``batch_size // batch_shrink`` samples (2), as in the paper.
    """

    def __init__(self, weight: float = 2.0, decay: float = 0.01, batch_shrink: int = 2) -> None:
        super().__init__()
        self.weight = float(weight)
        self.decay = float(decay)
        self.batch_shrink = max(1, int(batch_shrink))
        self.register_buffer("pl_mean", torch.zeros(()))

    def reset(self) -> None:
        """Forget the running mean (``fit_gan`` calls this before each GAN: a recipe may serve several)."""
        self.pl_mean.zero_()

    def forward(self, gen, batch_size: int, device, labels: torch.Tensor | None) -> dict:
        n = max(1, int(batch_size) // self.batch_shrink)
        z = gen.sample_latent(n, device=device)
        c = torch.randint(0, gen.num_classes, (n,), device=device) if getattr(gen, "num_classes", 0) > 0 else None
        images, ws = gen(z, c, return_ws=True)
        y = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()
        self.pl_mean = self.pl_mean.to(lengths.device)
        mean = self.pl_mean.lerp(lengths.detach().mean(), self.decay)
        self.pl_mean.copy_(mean)
        penalty = (lengths - mean).square().mean()
        return {"g_reg": penalty * self.weight, "pl_penalty": penalty.detach(), "pl_mean": mean.detach()}
