"""Losses: GAN objectives (what D and G minimise per step) and extra terms (e.g. the SpineGAN clinical loss)."""

from common.losses.adversarial import ACGANObjective, BCEObjective, GANObjective
from common.losses.pyramid import DeepPyramidObjective, LaplacianStageObjective

__all__ = [
    "ACGANObjective",
    "BCEObjective",
    "DeepPyramidObjective",
    "GANObjective",
    "LaplacianStageObjective",
]
