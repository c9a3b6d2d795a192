"""The pix2pix objective (Isola et al. 2017): conditional PatchGAN loss + lambda * L1 to the paired real image.

Shin et al. (2018) used it unchanged for label map -> MRI: BCE adversarial loss, lambda = 100. The condition (a
one-hot label map) arrives where class labels would for a class-conditional GAN: the trainer passes it through.
"""

from __future__ import annotations

import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss

from common.losses.adversarial import GANObjective

__all__ = ["Pix2PixObjective"]


class Pix2PixObjective(GANObjective):
    """D: BCE on (condition, real) vs (condition, G(condition)), halved as in pix2pix; G: fool D + ``l1_weight`` x L1.

    Args:
        l1_weight: weight of the L1 reconstruction term (pix2pix and Shin et al.: 100).
        criterion: MONAI ``PatchAdversarialLoss`` criterion: ``"bce"`` (the paper), ``"least_squares"`` or
            ``"hinge"``.
        reuse_fakes: one G forward per step, as junyanz's pix2pix (``GANObjective.reuse_fakes``).
    """

    conditional = True

    def __init__(self, l1_weight: float = 100.0, criterion: str = "bce", reuse_fakes: bool = False) -> None:
        self.l1_weight = float(l1_weight)
        self.adversarial = PatchAdversarialLoss(criterion=criterion, reduction="mean")
        self.reuse_fakes = bool(reuse_fakes)  # junyanz's pix2pix: one G forward per step (GANObjective.reuse_fakes)

    def sample_labels(self, gen, labels, batch_size, device):
        return labels  # the paired condition: fakes are drawn for the real images' own label maps

    def fake(self, gen, batch_size, device, labels):
        return gen(labels)  # no latent: the randomness is G's dropout

    def d_loss(self, gen, disc, reals, labels):
        condition = labels
        fakes, _ = self.fakes_for_d(gen, reals, condition)
        real_loss = self.adversarial(disc(condition, reals), target_is_real=True, for_discriminator=True)
        fake_loss = self.adversarial(disc(condition, fakes), target_is_real=False, for_discriminator=True)
        return {"d_loss": 0.5 * (real_loss + fake_loss), "d_real": real_loss.detach(), "d_fake": fake_loss.detach()}

    def g_loss(self, gen, disc, reals, labels):
        condition = labels
        fakes, _ = self.fakes_for_g(gen, reals, condition)
        adv = self.adversarial(disc(condition, fakes), target_is_real=True, for_discriminator=False)
        l1 = F.l1_loss(fakes, reals)
        return {"g_loss": adv + self.l1_weight * l1, "g_adv": adv.detach(), "g_l1": l1.detach()}
