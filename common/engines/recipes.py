"""The ``efficient`` GAN recipe: what limited-data GAN training has shown to work, for a few hundred to a few thousand
images and a CPU budget; beside the papers' recipes (``recipe: paper``), which the bundles keep as they were.

Each change is named after the paper it comes from and can be switched off on its own (the ablation in
``docs/generators.md`` does exactly that, one change at a time, at the same CPU budget):

- **ADA** (Karras et al. 2020, "Training generative adversarial networks with limited data"): every image D sees,
  real or fake, in both steps, goes through one differentiable augmentation pipe whose probability p adapts to
  D's overfitting (``ada_target``); the distribution G must match is unchanged. ``common.data.ada``.
- **R1** (Mescheder et al. 2018, "Which training methods for GANs do actually converge?"): a gradient penalty on
  real images, applied lazily every ``r1_interval`` steps (Karras et al. 2020, StyleGAN2).
- **EMA of G** (Karras et al. 2018, progressive GAN; Yazici et al. 2019): samples come from an exponential moving
  average of G's weights, with a half-life of ``ema_kimg`` thousand images.
- **Adam beta1 = 0** (Karras et al. 2020): momentum-free D/G updates, which R1-regularised GANs train stably with.
- **D without BatchNorm** (Karras et al. 2020; also required by R1, whose per-sample gradient BatchNorm couples):
  set on the discriminator by the bundle config (``norm: null``).

The architecture is the paper's (``generator``/``discriminator`` callables from the bundle config); only the
training changes. The StyleGAN2 bundle already trains this way (``common.engines.stylegan2``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from common.data.ada import AdaptiveAugment
from common.engines.gan_training import GANRecipe
from common.engines.stylegan2 import ema_decay_for
from common.losses.adversarial import GANObjective
from common.losses.stylegan2 import R1Regularizer

__all__ = ["announce", "efficient_recipe", "pick_recipe", "with_ema", "without_batchnorm"]


def efficient_recipe(
    generator: Callable[[], nn.Module],
    discriminator: Callable[[], nn.Module],
    objective: GANObjective,
    *,
    batch_size: int,
    lr: float = 2e-4,
    betas: Sequence[float] = (0.0, 0.99),
    r1_gamma: float | None = 0.1,
    r1_interval: int = 16,
    ema_kimg: float | None = 2.0,
    ada_target: float | None = 0.6,
    ada_pipeline: str = "bgc",
    ada_speed_kimg: float = 100.0,
    d_steps: int = 1,
    seed: int = 0,
) -> GANRecipe:
    """A ``GANRecipe`` with the changes of the module docstring around the paper's networks and objective.

    Args:
        generator, discriminator: zero-argument callables building the networks (the bundle config's
            ``"_mode_": "callable"`` components).
        objective: the paper's loss (``BCEObjective``, ``ACGANObjective``: both non-saturating for G).
        batch_size: images per step (sets the EMA decay per step from ``ema_kimg``).
        lr, betas: Adam's, for both networks (the D/G lr ratio is 1, as in StyleGAN2-ADA).
        r1_gamma: R1 weight; None or 0 switches R1 off. Its scale follows StyleGAN2-ADA's rule
            ``0.0002 * resolution**2 / batch`` (0.1-0.5 for 32-64 px at batch 32).
        ema_kimg: EMA half-life in thousands of images; None switches the EMA off.
        ada_target: ADA's overfitting target r_t; None switches the augmentation pipe off.
        ada_speed_kimg: images (thousands) for p to go from 0 to 1 (StyleGAN2-ADA: 500, sized for millions of
            images; a CPU budget of ~100k images needs it faster).
        d_steps: D updates per G update.
        seed: the augmentation pipe's seed.
    """
    use_r1 = bool(r1_gamma)
    ratio = r1_interval / (r1_interval + 1) if use_r1 else 1.0  # lazy R1: StyleGAN2 corrects D's Adam by this
    b1, b2 = (float(b) for b in betas)
    return GANRecipe(
        generator=generator,
        discriminator=discriminator,
        g_optimizer=partial(torch.optim.Adam, lr=lr, betas=(b1, b2)),
        d_optimizer=partial(torch.optim.Adam, lr=lr * ratio, betas=(b1**ratio, b2**ratio)),
        objective=objective,
        d_steps=d_steps,
        ema_decay=ema_decay_for(batch_size, ema_kimg) if ema_kimg else None,
        d_regularizer=R1Regularizer(r1_gamma, pass_labels=False) if use_r1 else None,  # DCGAN/ACGAN D: no label input
        d_reg_interval=r1_interval,
        augment_pipe=partial(AdaptiveAugment, pipeline=ada_pipeline, p=0.0, seed=seed)
        if ada_target is not None
        else None,
        ada_target=ada_target,
        ada_speed_kimg=ada_speed_kimg,
    )


def pick_recipe(paper: dict, efficient: dict, recipe: str, gan_type: str):
    """The bundle's ``gan_recipe``: ``paper[gan_type]`` or ``efficient[gan_type]``, with one clear line otherwise."""
    table = {"paper": paper, "efficient": efficient}.get(str(recipe))
    if table is None:
        raise ValueError(f"recipe must be 'paper' or 'efficient', got {recipe!r} (key 'recipe')")
    if gan_type not in table:
        raise ValueError(
            f"gan_type {gan_type!r} has no '{recipe}' recipe (key 'gan_type'); '{recipe}' offers {sorted(table)}"
        )
    return table[gan_type]


def announce(recipe: str, device, gan_steps: int | None = None) -> str:
    """Say in one log line which recipe (and so which scale) a training run uses, and how to change it."""
    import logging

    scale = f"{gan_steps} G steps per GAN" if gan_steps else "the paper's epochs"
    other = "efficient" if recipe == "paper" else "paper"
    line = f"training with the '{recipe}' recipe on {device} ({scale}); --recipe {other} for the other one"
    logging.getLogger("synthaug").info(line)
    return line


def without_batchnorm(discriminator: Callable[..., nn.Module]) -> Callable[[], nn.Module]:
    """The paper's discriminator factory with ``norm=None`` (R1 needs per-sample gradients, which BatchNorm couples)."""
    return partial(discriminator, norm=None)


def with_ema(recipe: GANRecipe, batch_size: int, ema_kimg: float) -> GANRecipe:
    """``recipe`` sampling from an EMA of G with a half-life of ``ema_kimg`` thousand images (pix2pix's efficient
    recipe: its paired D takes neither ADA nor R1; see the module docstring)."""
    return dataclasses.replace(recipe, ema_decay=ema_decay_for(batch_size, ema_kimg))
