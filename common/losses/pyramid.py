"""GAN objectives for Laplacian-pyramid generators (``common.networks.lapgan``).

- ``LaplacianStageObjective``: one LAPGAN stage, a GAN *conditioned on an image*. The condition of a real batch is
  its own coarse version, ``upsample(downsample(reals))``; D sees ``concat(image, condition)`` for reals and for
  ``G(noise, condition)``, so it judges whether the residual fits the coarse image (Denton et al. 2015).
- ``DeepPyramidObjective``: the DDGAN-like variant; D returns one logit per pyramid level, G's fakes are judged at
  the levels G made them (``gen.forward_pyramid``), reals at their Gaussian pyramid; losses are averaged over levels.

Both follow the ``GANObjective`` interface the shared ``GANTrainer`` calls (``d_loss`` / ``g_loss`` from a real
batch), so neither needs its own training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.losses.adversarial import BCEObjective
from common.networks.lapgan import gaussian_pyramid, laplacian_condition

__all__ = ["DeepPyramidObjective", "LaplacianStageObjective"]


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class LaplacianStageObjective(BCEObjective):
    """BCE / non-saturating GAN loss of a LAPGAN stage whose generator is ``G(noise, condition_image)``.

    ``grid_samples(gen, z)`` (used by ``SampleGridSaver``) returns the last batch's conditions followed by G's
    outputs for them, so the sample grids show coarse input and refined output of the stage.
    """

    #: the generator takes an image condition computed from the real batch (no class labels)
    image_conditional = True

    def __init__(self, real_label: float = 1.0, n_grid: int = 8) -> None:
        super().__init__(real_label=real_label)
        self.n_grid = int(n_grid)
        self.last_condition: torch.Tensor | None = None

    def condition(self, reals: torch.Tensor) -> torch.Tensor:
        return laplacian_condition(reals)

    def d_loss(self, gen, disc, reals, labels):
        cond = self.condition(reals)
        self.last_condition = cond[: self.n_grid].detach()
        with torch.no_grad():
            fakes = gen(gen.sample_latent(reals.shape[0], device=reals.device), cond)
        real_logits = disc(torch.cat([reals, cond], 1))
        fake_logits = disc(torch.cat([fakes, cond], 1))
        return {
            "d_loss": _bce(real_logits, self.real_label) + _bce(fake_logits, 0.0),
            "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),
        }

    def g_loss(self, gen, disc, reals, labels):
        cond = self.condition(reals)
        fakes = gen(gen.sample_latent(reals.shape[0], device=reals.device), cond)
        fake_logits = disc(torch.cat([fakes, cond], 1))
        return {
            "g_loss": _bce(fake_logits, 1.0),
            "g_residual_abs": (fakes - cond).abs().mean().detach(),
        }

    @torch.no_grad()
    def grid_samples(self, gen, z: torch.Tensor) -> torch.Tensor | None:
        if self.last_condition is None:
            return None
        cond = self.last_condition.to(z.device)
        n = min(len(cond), len(z))
        return torch.cat([cond[:n], gen(z[:n], cond[:n])])


class DeepPyramidObjective(BCEObjective):
    """BCE / non-saturating loss averaged over the levels of a pyramid generator and a multi-level discriminator.

    ``gen.forward_pyramid(z)`` -> list of images (coarsest first); ``disc.forward_pyramid(list)`` and ``disc(x)``
    -> logits ``(B, L)`` (see ``PyramidGenerator`` / ``MultiScaleDiscriminator``). Per-level D(fake) means are
    logged as ``d_fake_l<k>``, so a level that D wins easily shows up in ``train_log.csv``.
    """

    def d_loss(self, gen, disc, reals, labels):
        with torch.no_grad():
            fakes = gen.forward_pyramid(gen.sample_latent(reals.shape[0], device=reals.device))
        real_logits = disc.forward_pyramid(gaussian_pyramid(reals, len(fakes)))
        fake_logits = disc.forward_pyramid(fakes)
        out = {
            "d_loss": _bce(real_logits, self.real_label) + _bce(fake_logits, 0.0),
            "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),
        }
        for k in range(fake_logits.shape[1]):
            out[f"d_fake_l{k}"] = torch.sigmoid(fake_logits[:, k]).mean().detach()
        return out

    def g_loss(self, gen, disc, reals, labels):
        fakes = gen.forward_pyramid(gen.sample_latent(reals.shape[0], device=reals.device))
        return {"g_loss": _bce(disc.forward_pyramid(fakes), 1.0)}
