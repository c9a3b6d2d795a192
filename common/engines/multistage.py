"""Multi-stage GANs trained level by level with the shared ``fit_gan``: LAPGAN (Denton et al. 2015, MelanoGANs).

``LAPGANRecipe`` looks like a ``GANRecipe`` to ``fit_gans``, ``load_generators`` and the protocol (``generator()``
builds the composed ``LAPGANGenerator``; ``conditional`` is False), and adds ``fit``: one ordinary GAN per pyramid
level, each with its own discriminator and its own output folder (``level<k>/``: checkpoints, resume, sample grids,
loss log as any ``fit_gan`` run), then the trained levels are composed into ``generator.pt``.

Every level trains on the same items and transforms at full size; a batch transform (``PyramidLevel``) applies the
classic augmentation at full size and then area-downsamples to the level's size, so level k sees exactly level k of
the real images' Gaussian pyramid.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.engines.gan_training import DONE_FILE, GENERATOR_FILE, GANRecipe, fit_gan
from common.losses.adversarial import BCEObjective, GANObjective
from common.losses.pyramid import LaplacianStageObjective
from common.networks.lapgan import LAPGANGenerator, downsample

__all__ = ["LAPGANRecipe", "PyramidLevel"]

logger = logging.getLogger(__name__)


class PyramidLevel(nn.Module):
    """Batch transform: optional ``augment`` at full size, then ``downsample`` by ``factor`` (area averaging)."""

    def __init__(self, factor: int, augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.factor = int(factor)
        self.augment = augment

    def set_random_state(self, seed: int) -> PyramidLevel:
        if hasattr(self.augment, "set_random_state"):
            self.augment.set_random_state(seed)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            images = self.augment(images)
        return downsample(images, self.factor)


@dataclass
class LAPGANRecipe:
    """How to build and train a LAPGAN, level by level.

    Args:
        generator: ``() -> LAPGANGenerator`` (the composed generator; its ``level_module(k)`` are the level nets).
        discriminator: ``(in_channels=..., image_size=...) -> nn.Module``, e.g. a ``DCGANDiscriminator`` component
            with ``"_mode_": "callable"``; level 0's D gets the image channels, a stage's D twice that (image and
            its coarse condition).
        g_optimizer, d_optimizer: ``(params) -> Optimizer``.
        objective: the base level's objective (default ``BCEObjective``).
        stage_objective: the stages' objective (default ``LaplacianStageObjective``).
        level_epochs: epochs per level (default: the ``max_epochs`` passed to ``fit``, for every level).
    """

    generator: Callable[[], LAPGANGenerator]
    discriminator: Callable[..., nn.Module]
    g_optimizer: Callable[[Any], torch.optim.Optimizer]
    d_optimizer: Callable[[Any], torch.optim.Optimizer]
    objective: GANObjective | None = None
    stage_objective: GANObjective | None = None
    level_epochs: Sequence[int] | None = None
    d_steps: int = 1
    amp: bool = False

    def __post_init__(self) -> None:
        if self.objective is None:
            self.objective = BCEObjective()
        if self.stage_objective is None:
            self.stage_objective = LaplacianStageObjective()

    @property
    def conditional(self) -> bool:
        return False

    def level_recipe(self, level: int) -> GANRecipe:
        """The ordinary ``GANRecipe`` of pyramid level ``level`` (0 = the base DCGAN)."""
        template = self.generator()
        size = template.sizes[level]
        channels = template.out_channels * (1 if level == 0 else 2)

        def make_generator() -> nn.Module:
            return self.generator().level_module(level)

        def make_discriminator() -> nn.Module:
            return self.discriminator(in_channels=channels, image_size=size)

        return GANRecipe(
            generator=make_generator,
            discriminator=make_discriminator,
            g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer,
            objective=self.objective if level == 0 else self.stage_objective,
            d_steps=self.d_steps,
            amp=self.amp,
        )

    def fit(
        self,
        items: Sequence[dict],
        transforms,
        output_dir: str,
        *,
        max_epochs: int,
        seed: int = 0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **fit_kwargs,
    ) -> dict:
        """Train every level with ``fit_gan`` into ``<output_dir>/level<k>/``, then write the composed generator.

        Each level resumes on its own, so a killed run continues in the level it stopped in. Returns what
        ``fit_gan`` returns, for the composed generator.
        """
        out = Path(output_dir)
        composed = self.generator()
        levels = composed.levels
        epochs = list(self.level_epochs) if self.level_epochs is not None else [max_epochs] * levels
        if len(epochs) != levels:
            raise ValueError(f"level_epochs has {len(epochs)} entries for a {levels}-level LAPGAN")
        history = {}
        for level in range(levels):
            factor = 2 ** (levels - 1 - level)
            logger.info(f"LAPGAN level {level}: {composed.sizes[level]} px, {epochs[level]} epochs")
            result = fit_gan(
                self.level_recipe(level),
                items,
                transforms,
                str(out / f"level{level}"),
                max_epochs=int(epochs[level]),
                seed=seed + level,
                augment=PyramidLevel(factor, augment),
                **fit_kwargs,
            )
            composed.level_module(level).load_state_dict(result["generator"].state_dict())
            history[f"level{level}"] = result["history"]
        composed.eval()
        gen_file = out / GENERATOR_FILE
        tmp = gen_file.with_name(f".{gen_file.name}.tmp-{os.getpid()}")
        torch.save(composed.state_dict(), tmp)
        os.replace(tmp, gen_file)
        patients = sorted({str(it["patient"]) for it in items if "patient" in it})  # as fit_gan records them
        done = {"levels": levels, "epochs": epochs, "n_images": len(items), "patients": patients}
        (out / DONE_FILE).write_text(json.dumps(done, indent=1))
        return {"generator": composed, "generator_file": str(gen_file), "history": history, "output_dir": str(out)}
