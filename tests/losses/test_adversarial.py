"""``reuse_fakes``: one G forward per step (pytorch/examples' DCGAN, junyanz's pix2pix), checked against that step
written out by hand; and the default path, two draws per step, against its own hand-written step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from common.engines import GANTrainer
from common.losses import ACGANObjective, BCEObjective
from common.losses.pix2pix import Pix2PixObjective
from common.networks import ACGANDiscriminator, ACGANGenerator, DCGANDiscriminator, DCGANGenerator


def _nets():
    torch.manual_seed(0)
    gen = DCGANGenerator(latent_dim=8, out_channels=1, image_size=16, channels=(16, 8), kernel_size=4)
    disc = DCGANDiscriminator(in_channels=1, image_size=16, channels=(8, 16), kernel_size=4)
    return gen, disc


def _engine_step(objective, gen, disc, reals, seed=123):
    g_opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    d_opt = torch.optim.SGD(disc.parameters(), lr=0.1)
    trainer = GANTrainer("cpu", 1, [{"image": reals}], gen, disc, g_opt, d_opt, objective)
    torch.manual_seed(seed)
    trainer.run()
    return trainer.state.output


def _hand_step(gen, disc, reals, reuse: bool, seed=123):
    """The DCGAN step written out: D on reals and detached fakes; then G through D (updated) on the same fakes when
    ``reuse``, else on a second draw of latents."""
    g_opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    d_opt = torch.optim.SGD(disc.parameters(), lr=0.1)
    torch.manual_seed(seed)
    n = reals.shape[0]
    fakes = gen(gen.sample_latent(n, device="cpu"))
    if not reuse:
        fakes = fakes.detach()
    real_logits, fake_logits = disc(reals), disc(fakes.detach())
    d_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    d_loss = d_loss + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    d_opt.zero_grad()
    d_loss.backward()
    d_opt.step()
    g_fakes = fakes if reuse else gen(gen.sample_latent(n, device="cpu"))
    logits = disc(g_fakes)
    g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    g_opt.zero_grad()
    g_loss.backward()
    g_opt.step()
    return g_loss.detach()


@pytest.mark.parametrize("reuse", [False, True])
def test_engine_step_is_the_hand_written_dcgan_step(reuse):
    gen, disc = _nets()
    reals = torch.rand(4, 1, 16, 16) * 2 - 1
    gen_a, disc_a = copy.deepcopy(gen), copy.deepcopy(disc)
    out = _engine_step(BCEObjective(reuse_fakes=reuse), gen_a, disc_a, reals)
    g_loss = _hand_step(gen, disc, reals, reuse)
    assert torch.allclose(out["g_loss"], g_loss, atol=1e-6)
    for a, b in zip(
        list(gen_a.parameters()) + list(disc_a.parameters()),
        list(gen.parameters()) + list(disc.parameters()),
        strict=True,
    ):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "objective, forwards",
    [(BCEObjective(), 2), (BCEObjective(reuse_fakes=True), 1), (ACGANObjective(reuse_fakes=True), 1)],
)
def test_reuse_makes_one_generator_forward_per_step(objective, forwards):
    gen, _ = _nets()
    if isinstance(objective, ACGANObjective):
        gen = ACGANGenerator(latent_dim=8, image_size=16, channels=(16, 8), kernel_size=4, num_classes=2)
        disc = ACGANDiscriminator(image_size=16, channels=(8, 16), kernel_size=4, num_classes=2)
        batch = {"image": torch.rand(4, 1, 16, 16), "label": torch.tensor([0, 1, 0, 1])}
    else:
        _, disc = _nets()
        batch = {"image": torch.rand(4, 1, 16, 16)}
    calls = []
    gen.register_forward_hook(lambda *_: calls.append(1))
    opt = torch.optim.SGD
    trainer = GANTrainer(
        "cpu", 1, [batch, batch], gen, disc, opt(gen.parameters(), lr=0.1), opt(disc.parameters(), lr=0.1), objective
    )
    trainer.run()
    assert len(calls) == 2 * forwards
    assert getattr(objective, "_kept", None) is None  # G's graph is not held after the step


@pytest.mark.parametrize("reuse, forwards", [(False, 2), (True, 1)])
def test_pix2pix_reuse_makes_one_generator_forward_per_step(reuse, forwards):
    from common.engines.translation import prepare_paired_batch
    from common.networks.pix2pix import ConditionalPatchDiscriminator, Pix2PixUNet

    torch.manual_seed(0)
    gen = Pix2PixUNet(spatial_dims=2, in_channels=2, out_channels=1, channels=(4, 8, 8), dropout=0.5)
    disc = ConditionalPatchDiscriminator(
        spatial_dims=2, condition_channels=2, image_channels=1, channels=4, num_layers_d=2
    )
    batch = {"image": torch.rand(2, 1, 32, 32) * 2 - 1, "condition": torch.rand(2, 2, 32, 32)}
    calls = []
    gen.register_forward_hook(lambda *_: calls.append(1))
    opt = torch.optim.Adam
    objective = Pix2PixObjective(reuse_fakes=reuse)
    trainer = GANTrainer(
        "cpu", 1, [batch], gen, disc, opt(gen.parameters()), opt(disc.parameters()), objective,
        prepare_batch=prepare_paired_batch,
    )  # fmt: skip
    trainer.run()
    assert len(calls) == forwards and torch.isfinite(trainer.state.output["g_l1"])
