"""Losses: GAN objectives (what D and G minimise per step) and extra terms (e.g. the SpineGAN clinical loss)."""

from common.losses.adversarial import ACGANObjective, BCEObjective, GANObjective

__all__ = ["ACGANObjective", "BCEObjective", "GANObjective"]
