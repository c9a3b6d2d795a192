"""One place that turns StyleGAN2-ADA hyper-parameters into a ``GANRecipe``: plain, SpineGAN (clinical loss), DP.

A bundle config passes its hyper-parameters once (``stylegan2_recipe(**@gan_settings)``); the evaluation builds
every generator variant of the SpineGAN paper from the same settings (``common.protocol.spinegan.stylegan2_variants``),
so the arms differ only in what they are meant to differ in. The clinical loss and the privacy mechanism come in as
arguments: this layer never imports ``common.privacy`` or ``common.protocol``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from common.data.ada import AdaptiveAugment
from common.engines.gan_training import GANRecipe
from common.losses.stylegan2 import PathLengthRegularizer, R1Regularizer, StyleGAN2Objective
from common.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

__all__ = ["ema_decay_for", "stylegan2_recipe"]


def ema_decay_for(batch_size: int, ema_kimg: float) -> float:
    """Per-step EMA decay with a half-life of ``ema_kimg`` thousand images (StyleGAN2-ADA: 10 * batch / 32 kimg)."""
    return 0.5 ** (int(batch_size) / max(float(ema_kimg) * 1000.0, 1e-8))


def stylegan2_recipe(
    *,
    num_classes: int = 2,
    image_size: int = 256,
    channels: int = 1,
    latent_dim: int = 512,
    w_dim: int = 512,
    mapping_layers: int = 2,
    channel_base: int = 16384,
    channel_max: int = 512,
    style_mixing_prob: float = 0.9,
    lr: float = 0.0025,
    betas: Sequence[float] = (0.0, 0.99),
    batch_size: int = 16,
    r1_gamma: float | None = 0.82,
    r1_interval: int = 16,
    pl_weight: float = 2.0,
    pl_interval: int = 4,
    ema_kimg: float | None = 5.0,
    mbstd_group_size: int = 4,
    ada_pipeline: str = "bgc",
    ada_p: float = 0.0,
    ada_target: float | None = 0.6,
    ada_interval: int = 4,
    ada_speed_kimg: float = 500.0,
    clinical=None,
    privacy=None,
    seed: int = 0,
) -> GANRecipe:
    """The SpineGAN paper's conditional StyleGAN2-ADA as a ``GANRecipe`` (defaults: the authors' settings at 256 px).

    ``clinical``: a ``common.protocol.spinegan.ClinicalLossRecipe`` (SpineGAN), a ready ``ClinicalLoss``, or None.
    ``privacy``: a ``DPSGDDiscriminator`` (any object whose ``mode`` is ``"dp-sgd"``), then the recipe is made
    DP-compatible: no minibatch-std, no R1 (see ``common.privacy.dp``), fixed ADA p (``ada_p``),
    one D pass over reals + ``batch_size`` fakes. A ``PaperNoiseThenClip`` privacy changes nothing else.
    Lazy regularisation follows StyleGAN2: Adam's lr and betas are corrected by ``interval / (interval + 1)``.
    """
    dp_sgd = privacy is not None and getattr(privacy, "mode", "") == "dp-sgd"
    generator = partial(
        StyleGAN2Generator, latent_dim=latent_dim, w_dim=w_dim, num_classes=num_classes, image_size=image_size,
        out_channels=channels, mapping_layers=mapping_layers, channel_base=channel_base, channel_max=channel_max,
        style_mixing_prob=style_mixing_prob,
    )  # fmt: skip
    discriminator = partial(
        StyleGAN2Discriminator, in_channels=channels, num_classes=num_classes, image_size=image_size,
        channel_base=channel_base, channel_max=channel_max, mbstd_group_size=0 if dp_sgd else mbstd_group_size,
    )  # fmt: skip
    b1, b2 = (float(b) for b in betas)

    def adam(interval: int | None):
        # lazy regularisation runs every `interval` steps: StyleGAN2 scales lr and betas by interval / (interval + 1)
        ratio = interval / (interval + 1) if interval else 1.0
        return partial(torch.optim.Adam, lr=lr * ratio, betas=(b1**ratio, b2**ratio), eps=1e-8)

    use_r1 = r1_gamma is not None and r1_gamma > 0 and not dp_sgd
    use_pl = pl_weight is not None and pl_weight > 0
    objective = StyleGAN2Objective(
        conditional=num_classes > 0,
        clinical=clinical,
        joint_d_batch=dp_sgd,
        fake_batch_size=batch_size if dp_sgd else None,
    )
    return GANRecipe(
        generator=generator,
        discriminator=discriminator,
        g_optimizer=adam(pl_interval if use_pl else None),
        d_optimizer=adam(r1_interval if use_r1 else None),
        objective=objective,
        ema_decay=ema_decay_for(batch_size, ema_kimg) if ema_kimg else None,
        d_regularizer=R1Regularizer(r1_gamma) if use_r1 else None,
        d_reg_interval=r1_interval,
        g_regularizer=PathLengthRegularizer(pl_weight) if use_pl else None,
        g_reg_interval=pl_interval,
        augment_pipe=partial(AdaptiveAugment, pipeline=ada_pipeline, p=ada_p, seed=seed)
        if (ada_p > 0 or (ada_target is not None and not dp_sgd))
        else None,
        ada_target=None if dp_sgd else ada_target,
        ada_interval=ada_interval,
        ada_speed_kimg=ada_speed_kimg,
        privacy=privacy,
    )
