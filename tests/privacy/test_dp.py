"""DP-SGD on the discriminator: the accountant against Opacus' published numbers, per-sample gradients of our D,
hooks off in G's step, refusals that protect the guarantee, and DP training steps on tiny images."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from monai.transforms import Compose

from common.engines import GANRecipe, fit_gan
from common.engines.stylegan2 import stylegan2_recipe
from common.losses.stylegan2 import R1Regularizer, StyleGAN2Objective
from common.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from common.privacy.dp import DPSGDDiscriminator, PaperNoiseThenClip, noise_for_epsilon, prv_epsilon

pytest.importorskip("opacus")

TINY = {"image_size": 16, "channel_base": 128, "channel_max": 16}
SETTINGS = {"num_classes": 2, "latent_dim": 16, "w_dim": 16, "batch_size": 4, "ema_kimg": 0.1, **TINY}


def _items(n=16):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1
    return [{"image": x[i], "label": i % 2, "patient": f"p{i}"} for i in range(n)]


def test_prv_accountant_matches_opacus_reference():
    # GUIDE section 6 (checked with Opacus 1.6): sigma 1.0, q 0.01, 1000 steps, delta 1e-5 -> 1.83-1.84 (PRV)
    assert 1.82 <= prv_epsilon(1.0, 0.01, 1000, 1e-5) <= 1.85


@pytest.mark.parametrize("target", [1.0, 10.0])  # sigma above and below 1: both bracketing directions
def test_noise_for_epsilon_lands_within_tolerance_below_the_target(target):
    q, steps = 0.05, 40
    sigma = noise_for_epsilon(target, 1e-5, q, steps, tolerance=0.01)
    assert target - 0.01 <= prv_epsilon(sigma, q, steps, 1e-5) <= target
    with pytest.raises(ValueError, match="noise_for_epsilon"):
        noise_for_epsilon(-1.0, 1e-5, q, steps)


def test_gdp_is_refused_and_one_noise_setting_is_required():
    with pytest.raises(ValueError, match="GDP"):
        DPSGDDiscriminator(noise_multiplier=1.0, accountant="gdp")
    with pytest.raises(ValueError, match="exactly one"):
        DPSGDDiscriminator()


def test_opacus_per_sample_gradients_of_our_discriminator_are_exact():
    from opacus import GradSampleModule

    torch.manual_seed(0)
    d = StyleGAN2Discriminator(num_classes=2, mbstd_group_size=0, **TINY)
    ref_d = copy.deepcopy(d)  # the reference must run outside Opacus' hooks
    gsm = GradSampleModule(d, loss_reduction="sum")
    x, c = torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 1])
    gsm(x, c).sum().backward()
    for i in range(3):
        ref = torch.autograd.grad(ref_d(x[i : i + 1], c[i : i + 1]).sum(), list(ref_d.parameters()))
        for p, r in zip(d.parameters(), ref):
            torch.testing.assert_close(p.grad_sample[i], r, rtol=1e-4, atol=1e-5)


def test_refusals_that_protect_the_guarantee():
    dp = DPSGDDiscriminator(noise_multiplier=1.0)
    joint = StyleGAN2Objective(joint_d_batch=True, fake_batch_size=4)
    with pytest.raises(ValueError, match="minibatch-std"):
        dp.check(StyleGAN2Discriminator(mbstd_group_size=4, **TINY), joint, 1, None)
    plain = StyleGAN2Discriminator(mbstd_group_size=0, **TINY)
    with pytest.raises(ValueError, match="d_steps"):
        dp.check(plain, joint, 2, None)
    with pytest.raises(ValueError, match="R1"):
        dp.check(plain, joint, 1, R1Regularizer())
    with pytest.raises(ValueError, match="fixed number of fakes"):
        dp.check(plain, StyleGAN2Objective(), 1, None)
    clinical = type("Clinical", (), {"weight": 0.1})()  # its classifier would be trained on the private images
    with pytest.raises(ValueError, match="clinical"):
        dp.check(plain, StyleGAN2Objective(joint_d_batch=True, fake_batch_size=4, clinical=clinical), 1, None)
    dp.check(
        plain,
        StyleGAN2Objective(joint_d_batch=True, fake_batch_size=4, clinical=type("Off", (), {"weight": 0.0})()),
        1,
        None,
    )
    recipe = stylegan2_recipe(**SETTINGS, privacy=dp)
    recipe.ada_target = 0.6
    with pytest.raises(ValueError, match="leaks"):
        fit_gan(recipe, _items(), Compose([]), "/nonexistent/never", max_epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="repeats"):
        fit_gan(stylegan2_recipe(**SETTINGS, privacy=dp), _items(), Compose([]), "/tmp/x", max_epochs=1, batch_size=4,
                repeats=2)  # fmt: skip


def test_dp_training_reports_epsilon_and_resumes_the_accountant(tmp_path):
    dp = DPSGDDiscriminator(noise_multiplier=1.0, target_delta=1e-3, seed=0)
    recipe = stylegan2_recipe(**SETTINGS, ada_p=0.2, privacy=dp)
    assert recipe.d_regularizer is None and recipe.ada_target is None and recipe.objective.joint_d_batch
    kw = dict(batch_size=4, tensorboard=False, progress=False, checkpoint_interval=1)
    fit_gan(recipe, _items(), Compose([]), str(tmp_path), max_epochs=1, **kw)
    first = json.loads((tmp_path / "privacy.json").read_text())
    assert first["mode"] == "dp-sgd" and first["accountant"] == "prv" and first["epsilon"] > 0
    assert first["steps"] == 4 and first["sample_rate"] == pytest.approx(0.25)
    # a second run to 2 epochs resumes from the checkpoint, accountant history included
    fit_gan(recipe, _items(), Compose([]), str(tmp_path), max_epochs=2, **kw)
    second = json.loads((tmp_path / "privacy.json").read_text())
    assert second["steps"] == 8 and second["epsilon"] > first["epsilon"]
    assert second["epsilon"] == pytest.approx(prv_epsilon(1.0, 0.25, 8, 1e-3), rel=1e-6)


def test_generator_step_records_no_per_sample_gradients(tmp_path):
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    g = StyleGAN2Generator(latent_dim=16, w_dim=16, num_classes=2, **TINY)
    d = StyleGAN2Discriminator(num_classes=2, mbstd_group_size=0, **TINY)
    dp = DPSGDDiscriminator(noise_multiplier=1.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 1, 16, 16)), batch_size=4)
    dp.engine = PrivacyEngine(accountant="prv")
    dp.discriminator, _, _ = dp.engine.make_private(
        module=d, optimizer=torch.optim.SGD(d.parameters(), lr=0.1), data_loader=loader, noise_multiplier=1.0,
        max_grad_norm=1.0,
    )  # fmt: skip
    with dp.generator_step_context():
        loss = StyleGAN2Objective().g_loss(g, dp.discriminator, torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 0, 1]))
        loss["g_loss"].backward()
    assert all(getattr(p, "grad_sample", None) is None for p in dp.discriminator.parameters())
    assert g.const.grad is not None


def test_paper_noise_then_clip_is_an_ablation_without_epsilon(tmp_path):
    recipe = stylegan2_recipe(**SETTINGS, privacy=PaperNoiseThenClip())
    result = fit_gan(recipe, _items(8), Compose([]), str(tmp_path), max_epochs=1, batch_size=1, tensorboard=False,
                     progress=False)  # fmt: skip
    assert result["privacy"]["epsilon"] is None and "none" in result["privacy"]["guarantee"]
    assert isinstance(recipe, GANRecipe) and recipe.ada_target == 0.6  # no guarantee claimed, so nothing is enforced
