"""LAPGAN / DDGAN-like networks, their objectives and the level-by-level recipe."""

from __future__ import annotations

import pytest
import torch

from common.engines import GANTrainer, LAPGANRecipe, PyramidLevel
from common.losses import DeepPyramidObjective, LaplacianStageObjective
from common.networks import DCGANDiscriminator, LAPGANGenerator, MultiScaleDiscriminator, PyramidGenerator
from common.networks.lapgan import downsample, gaussian_pyramid, laplacian_condition, upsample


def test_pyramid_operators_keep_the_coarse_content_and_leave_the_detail_to_the_residual():
    x = torch.rand(2, 3, 16, 16)
    assert downsample(x).shape == (2, 3, 8, 8) and upsample(downsample(x)).shape == x.shape
    const = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(laplacian_condition(const), const), "a flat image has no residual"
    ramp = torch.linspace(-1, 1, 16).expand(1, 3, 16, 16)
    smooth_residual = (ramp - laplacian_condition(ramp)).abs().mean()
    noise_residual = (x - laplacian_condition(x)).abs().mean()
    assert smooth_residual < 0.2 * noise_residual, "coarse structure lives in the condition, fine detail in the band"
    assert [p.shape[-1] for p in gaussian_pyramid(x, 3)] == [4, 8, 16]


def test_lapgan_composes_its_levels():
    torch.manual_seed(0)
    g = LAPGANGenerator(image_size=32, levels=3, base_channels=(16, 8), stage_channels=(8,)).eval()
    z = g.sample_latent(2, "cpu")
    pyramid = g.forward_pyramid(z)
    assert [tuple(p.shape) for p in pyramid] == [(2, 3, 8, 8), (2, 3, 16, 16), (2, 3, 32, 32)]
    assert torch.equal(pyramid[0], g.base(z))
    torch.manual_seed(1)
    a = g(z)
    torch.manual_seed(1)
    assert torch.equal(a, g(z)), "stage noise comes from the (seeded) global RNG"
    assert g.level_module(0) is g.base and g.level_module(2) is g.stages[1]
    with pytest.raises(ValueError, match="divisible"):
        LAPGANGenerator(image_size=34, levels=3)


def test_stage_generator_adds_a_residual_to_its_condition():
    g = LAPGANGenerator(image_size=32, levels=2, base_channels=(8,), stage_channels=(8,)).stages[0]
    cond = torch.rand(2, 3, 32, 32) * 2 - 1
    out = g(g.sample_latent(2, "cpu"), cond)
    assert out.shape == cond.shape and (out - cond).abs().max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="condition"):
        g(g.sample_latent(2, "cpu"), torch.rand(2, 3, 16, 16))


def test_pyramid_generator_and_multiscale_discriminator():
    g = PyramidGenerator(image_size=32, channels=(32, 16, 8), levels=3)
    d = MultiScaleDiscriminator(in_channels=3, image_size=32, levels=3, channels=(8, 16, 32))
    images = g.forward_pyramid(g.sample_latent(4, "cpu"))
    assert [p.shape[-1] for p in images] == [8, 16, 32]
    assert d.forward_pyramid(images).shape == (4, 3) and d(images[-1]).shape == (4, 3)
    with pytest.raises(ValueError, match="levels"):
        PyramidGenerator(image_size=32, channels=(32, 16), levels=3)


def _train_steps(gen, disc, objective, reals, steps=3):
    trainer = GANTrainer(
        "cpu", 1, [{"image": reals}] * steps, gen, disc,
        torch.optim.Adam(gen.parameters(), 1e-3), torch.optim.Adam(disc.parameters(), 1e-3), objective,
    )  # fmt: skip
    trainer.run()
    return trainer.state.output


def test_objectives_train_with_the_shared_trainer():
    reals = torch.rand(4, 3, 16, 16) * 2 - 1
    stage = LAPGANGenerator(image_size=16, levels=2, base_channels=(8,), stage_channels=(8,)).stages[0]
    out = _train_steps(stage, DCGANDiscriminator(6, 16, (8, 16)), LaplacianStageObjective(), reals)
    assert {"g_loss", "d_loss", "g_residual_abs"} <= set(out)
    grid = LaplacianStageObjective()
    assert grid.grid_samples(stage, stage.sample_latent(2, "cpu")) is None, "no condition seen yet"
    gen = PyramidGenerator(image_size=16, channels=(16, 8), levels=2)
    out = _train_steps(gen, MultiScaleDiscriminator(3, 16, 2, (8, 16)), DeepPyramidObjective(), reals)
    assert {"d_fake_l0", "d_fake_l1"} <= set(out)


def test_lapgan_recipe_builds_one_gan_per_level():
    recipe = LAPGANRecipe(
        generator=lambda: LAPGANGenerator(image_size=32, levels=3, base_channels=(16, 8), stage_channels=(8,)),
        discriminator=lambda in_channels, image_size: DCGANDiscriminator(in_channels, image_size, (8, 16)),
        g_optimizer=lambda p: torch.optim.Adam(p),
        d_optimizer=lambda p: torch.optim.Adam(p),
    )
    assert not recipe.conditional
    level0, level2 = recipe.level_recipe(0), recipe.level_recipe(2)
    assert level0.discriminator().in_channels == 3 and level2.discriminator().in_channels == 6
    assert isinstance(level2.objective, LaplacianStageObjective)
    assert level2.generator().image_size == 32
    batch = torch.rand(2, 3, 32, 32)
    assert PyramidLevel(4)(batch).shape == (2, 3, 8, 8)
