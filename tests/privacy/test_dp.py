"""DP-SGD on the discriminator: the accountant against Opacus' published numbers, per-sample gradients of our D,
hooks off in G's step, refusals that protect the guarantee, and DP training steps on tiny images."""

from __future__ import annotations

import copy
import inspect
import json
import math

import pytest
import torch
from monai.transforms import Compose

from common.engines import GANRecipe, fit_gan
from common.engines.stylegan2 import stylegan2_recipe
from common.losses.stylegan2 import R1Regularizer, StyleGAN2Objective
from common.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from common.privacy.dp import (
    DPSGDDiscriminator,
    PaperNoiseThenClip,
    group_privacy,
    noise_for_epsilon,
    privacy_unit,
    prv_epsilon,
)

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
        for p, r in zip(d.parameters(), ref, strict=True):
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
    dp = DPSGDDiscriminator(noise_multiplier=1.0, target_delta=1e-3)
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
    # one image per patient in _items(): the per-patient guarantee is epsilon itself, and says it knew the ids
    assert second["privacy_unit"] == "one image"
    assert (
        second["per_patient"]["max_images_per_patient"] == 1 and second["per_patient"]["patient_ids"] == "one per image"
    )
    assert second["per_patient"]["epsilon"] == pytest.approx(second["epsilon"])


def test_group_privacy_for_the_patient_with_most_images():
    # k = 3 images of one patient: (3 eps, 3 e^(2 eps) delta), the textbook group-privacy bound
    g = group_privacy(2.0, 1e-5, 3)
    assert g["epsilon"] == pytest.approx(6.0) and g["delta"] == pytest.approx(3 * math.exp(4.0) * 1e-5)
    assert g["meaningful"] and not group_privacy(10.0, 1e-5, 3)["meaningful"]  # delta 3 e^20 1e-5 > 1
    assert group_privacy(2.0, 1e-5, 1)["epsilon"] == 2.0 and group_privacy(2.0, 1e-5, 1)["delta"] == 1e-5
    items = [{"patient": p} for p in ("a", "a", "b", "a", "c", "c")]
    unit = privacy_unit(items, 2.0, 1e-5)
    assert unit["per_patient"]["max_images_per_patient"] == 3 and unit["per_patient"]["patients"] == 3
    assert unit["per_patient"]["epsilon"] == pytest.approx(6.0)
    # no ids: it says so instead of claiming one image per patient
    assert privacy_unit([{"image": 0}, {"image": 1}], 2.0, 1e-5)["per_patient"]["patient_ids"] is False
    with pytest.raises(ValueError):
        group_privacy(1.0, 1e-5, 0)


def test_dp_training_with_several_images_per_patient_reports_the_group_bound(tmp_path):
    dp = DPSGDDiscriminator(noise_multiplier=1.0, target_delta=1e-3)
    recipe = stylegan2_recipe(**SETTINGS, ada_p=0.2, privacy=dp)
    items = [{**it, "patient": f"p{i // 4}"} for i, it in enumerate(_items())]  # 4 images per patient
    fit_gan(recipe, items, Compose([]), str(tmp_path), max_epochs=1, batch_size=4, tensorboard=False, progress=False)
    summary = json.loads((tmp_path / "privacy.json").read_text())
    assert summary["per_patient"]["max_images_per_patient"] == 4
    assert summary["per_patient"]["epsilon"] == pytest.approx(4 * summary["epsilon"])


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


# ---------------------------------------------------------------- randomness no public seed fixes (issue 14)
def _wrap_and_step(dp: DPSGDDiscriminator, epochs: int = 3) -> tuple[torch.Tensor, list[list[int]]]:
    """Wrap a linear D on zero inputs (every clipped gradient is 0: the DP gradient is pure noise) with the global
    RNG and the loader's generator seeded as ``fit_gan`` seeds them, and step through ``epochs`` Poisson epochs."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    n, dim, batch = 32, 64, 4
    dataset = torch.utils.data.TensorDataset(torch.zeros(n, dim), torch.arange(n))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
    )
    disc = torch.nn.Linear(dim, 1, bias=False)
    wrapped = dp.wrap(
        generator=None, discriminator=disc, g_optimizer=None, d_optimizer=torch.optim.SGD(disc.parameters(), lr=0.0),
        data_loader=loader, objective=SimpleNamespace(joint_d_batch=True, fake_batch_size=batch), max_epochs=epochs,
    )  # fmt: skip
    module, opt = wrapped["discriminator"], wrapped["d_optimizer"]
    grads, drawn = [], []
    for _ in range(epochs):
        for _x, idx in wrapped["data_loader"]:
            opt.zero_grad()
            module(_x).mean().backward()
            opt.step()
            grads.append(module._module.weight.grad.clone())
            drawn.append(idx.tolist())
    return torch.stack(grads), drawn


def test_each_wrap_draws_fresh_noise_and_batches_whatever_the_seeds():
    """Noise and Poisson batches come from OS entropy: neither the global seed nor the loader's generator fixes them,
    and the same engine wrapped again (what a resume does) does not replay them."""
    dp = DPSGDDiscriminator(noise_multiplier=1.0, max_grad_norm=1.0)
    grads_a, drawn_a = _wrap_and_step(dp)
    grads_b, drawn_b = _wrap_and_step(dp)  # the same object wrapped again, as fit_gan does on a resume
    grads_c, drawn_c = _wrap_and_step(DPSGDDiscriminator(noise_multiplier=1.0, max_grad_norm=1.0))
    assert grads_a.abs().sum() > 0, "zero inputs: the gradient is the noise alone"
    for grads, drawn in ((grads_b, drawn_b), (grads_c, drawn_c)):
        assert not torch.equal(grads[0], grads_a[0]), "the first step's noise was replayed"
        assert drawn != drawn_a, "the Poisson batches were replayed"
    assert all(g.device == torch.device("cpu") for g in (dp.noise_generator, dp.sampling_generator))
    assert "seed" not in inspect.signature(DPSGDDiscriminator).parameters, "no switch back to seeded randomness"
    assert "secure_mode" not in inspect.signature(DPSGDDiscriminator).parameters


def _train_recording_batches(tmp_path, recipe, **kw) -> dict:
    """``fit_gan`` at seed 0 that records every step's batch size and every ``engine.state.output`` key seen last."""
    from ignite.engine import Events

    seen = {"sizes": [], "keys": set()}

    class Record:
        def attach(self, engine):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

        def __call__(self, engine):
            seen["sizes"].append(int(engine.state.batch["image"].shape[0]))
            seen["keys"] |= set(engine.state.output)

    result = fit_gan(
        recipe, _items(), Compose([]), str(tmp_path), batch_size=4, seed=0, extra_handlers=[Record()], **kw
    )
    d = result["discriminator"]
    d = getattr(d, "_module", d)  # Opacus' GradSampleModule around D
    seen["weights"] = {**{f"d.{k}": v for k, v in d.state_dict().items()}, **result["generator"].state_dict()}
    return {**seen, "result": result}


@pytest.fixture(scope="module")
def two_dp_runs(tmp_path_factory):
    """Two DP trainings with the same seed (2 epochs, 8 steps each); the first with TensorBoard and progress bar on."""
    runs = []
    for name, loggers in (
        ("a", {"tensorboard": True, "progress": True}),
        ("b", {"tensorboard": False, "progress": False}),
    ):
        out = tmp_path_factory.mktemp(f"dp_{name}")
        recipe = stylegan2_recipe(**SETTINGS, ada_p=0.2, privacy=DPSGDDiscriminator(noise_multiplier=1.0))
        runs.append({**_train_recording_batches(out, recipe, max_epochs=2, **loggers), "dir": out})
    return runs


def test_two_dp_trainings_with_the_same_seed_differ(two_dp_runs):
    a, b = two_dp_runs
    assert len(a["sizes"]) == len(b["sizes"]) == 8
    # batch sizes are Binomial(16, 1/4) per step: 8 equal pairs by chance has probability < 1e-6
    assert a["sizes"] != b["sizes"], "the Poisson batches followed the public seed"
    differ = [k for k in a["weights"] if k.startswith("d.") and not torch.equal(a["weights"][k], b["weights"][k])]
    assert differ, "D's noisy weights followed the public seed"


def test_dp_training_logs_nothing_computed_on_private_images(two_dp_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from common.privacy.dp import PUBLIC_OUTPUT_KEYS

    private = {"d_loss", "d_real", "d_real_sign", "d_fake", "r1_penalty"}
    run = two_dp_runs[0]
    assert run["keys"] and run["keys"] <= PUBLIC_OUTPUT_KEYS and "g_loss" in run["keys"], run["keys"]
    header = (run["dir"] / "train_log.csv").read_text().splitlines()[0].split(",")
    assert "g_loss" in header and not private & set(header), header
    assert set(header) <= PUBLIC_OUTPUT_KEYS | {"epoch"}, header
    for row in run["result"]["history"]:
        assert set(row) <= PUBLIC_OUTPUT_KEYS | {"epoch"}, row
    tags = set()
    for events in (run["dir"] / "tensorboard").glob("events.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert tags and not {t for t in tags if any(p in t for p in private)}, tags


def test_non_dp_training_with_the_same_seed_is_bit_identical(tmp_path):
    """Without DP the seed still fixes everything (initial weights, latents, batches, augmentation at p=0.2)."""
    runs = [
        _train_recording_batches(
            tmp_path / name, stylegan2_recipe(**SETTINGS, ada_p=0.2), max_epochs=1, tensorboard=False, progress=False
        )  # fmt: skip
        for name in ("a", "b")
    ]
    a, b = runs
    assert a["sizes"] == b["sizes"] and "d_loss" in a["keys"] and "d_real" in a["keys"]
    for key in a["weights"]:
        torch.testing.assert_close(a["weights"][key], b["weights"][key], rtol=0, atol=0, msg=f"{key} differs")
    assert (tmp_path / "a" / "train_log.csv").read_text() == (tmp_path / "b" / "train_log.csv").read_text()


def test_an_empty_poisson_batch_keeps_the_dict_layout():
    """Poisson sampling may draw no image at all: the step gets a dict batch with zero rows, not Opacus' crash."""
    from torch.utils.data import DataLoader

    from common.privacy.dp import _empty_batches_as_dicts

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": torch.ones(1, 8, 8), "label": i % 2}

    loader = DataLoader(Items(), batch_size=2)
    from opacus.data_loader import DPDataLoader

    dp_loader = DPDataLoader.from_data_loader(loader)
    _empty_batches_as_dicts(dp_loader)
    empty = dp_loader.collate_fn([])
    assert empty["image"].shape == (0, 1, 8, 8) and empty["label"].shape == (0,) and empty["label"].dtype == torch.int64
    full = dp_loader.collate_fn([Items()[0], Items()[1]])
    assert full["image"].shape == (2, 1, 8, 8)


def test_dp_generators_are_not_audited_against_private_images_unless_asked():
    """The synthesis/memorisation audit reads the fold's private training images and publishes what it finds: for a
    DP-SGD generator that release is outside epsilon, so it runs only with audit_dp_arms=True, and then says so."""
    from types import SimpleNamespace

    from common.protocol.synthetic_learning import SyntheticLearningProtocol

    fake = SimpleNamespace(
        audit=True, audit_dp_arms=False, notes=[], generators={"dp_eps10": SimpleNamespace(privacy=object())}
    )
    assert SyntheticLearningProtocol._audit(fake, 0, "dp_eps10", [], [], []) is None
    assert any("not covered by epsilon" in n for n in fake.notes)
    fake.audit_dp_arms, fake.notes = True, []
    SyntheticLearningProtocol._audit(fake, 0, "dp_eps10", [], [], [])  # too small to audit here: notes only
    assert any("NOT covered by epsilon" in n for n in fake.notes)
