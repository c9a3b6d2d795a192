"""The efficient recipe: each named change really acts in training, and a step budget means steps."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from monai.transforms import Compose

from common.engines import fit_gan
from common.engines.recipes import efficient_recipe, pick_recipe
from common.losses import ACGANObjective, BCEObjective
from common.networks import DCGANDiscriminator, DCGANGenerator


def _items(n=24, size=16, classes=2):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, size, size, generator=g) * 2 - 1, "label": i % classes} for i in range(n)]


def _efficient(conditional=False, **kw):
    k = 2 if conditional else 0
    return efficient_recipe(
        partial(DCGANGenerator, latent_dim=8, image_size=16, channels=(16, 8), num_classes=k),
        partial(DCGANDiscriminator, image_size=16, channels=(8, 16), num_classes=k, norm=None),
        ACGANObjective() if conditional else BCEObjective(),
        batch_size=4,
        **kw,
    )


def _fit(tmp_path, recipe, **kw):
    kw.setdefault("max_epochs", 3)
    return fit_gan(recipe, _items(), Compose([]), str(tmp_path), batch_size=4, tensorboard=False, progress=False, **kw)


@pytest.mark.parametrize("conditional", [False, True])
def test_every_change_acts_in_training(tmp_path, conditional):
    # ADA speed so high that p moves within a few steps; R1 every 2 steps
    # target -1: any sign(D(real)) is "overfitting", so p must rise (the handler's direction, not its threshold)
    recipe = _efficient(conditional, ada_target=-1.0, ada_speed_kimg=0.01, r1_interval=2, ema_kimg=0.01)
    out = _fit(tmp_path, recipe)
    history = out["history"]
    assert all("r1_penalty" in row and row["r1_penalty"] > 0 for row in history), "R1 ran"
    assert any(row.get("ada_p", 0) > 0 for row in history), "ADA's p adapted away from 0"
    assert "d_real_sign" in history[0]
    # EMA: the sampling generator is the average, not the last G
    ckpt = torch.load(sorted((tmp_path / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    saved = torch.load(tmp_path / "generator.pt", weights_only=True)
    g_last = ckpt["generator"]
    assert any(not torch.equal(saved[k], g_last[k]) for k in g_last if k in saved and saved[k].is_floating_point())
    # D has no BatchNorm (R1's per-sample gradients) and Adam has beta1 = 0
    d = recipe.discriminator()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())
    assert recipe.g_optimizer(torch.nn.Linear(1, 1).parameters()).defaults["betas"][0] == 0.0


def test_changes_switch_off_one_at_a_time():
    bare = _efficient(r1_gamma=None, ada_target=None, ema_kimg=None)
    assert bare.d_regularizer is None and bare.augment_pipe is None and bare.ema_decay is None
    assert _efficient(r1_gamma=None).augment_pipe is not None


def test_total_steps_is_a_budget_in_steps(tmp_path):
    # 24 images / batch 4 = 6 steps per epoch: too short an epoch, so the list repeats 4x (24 steps per epoch)
    _fit(tmp_path, _efficient(), max_epochs=1, total_steps=50)
    done = json.loads((tmp_path / "training_done.json").read_text())
    assert done["epochs"] == 3 and done["iterations"] == 72 and done["batch_size"] == 4 and done["n_images"] == 96
    with pytest.raises(ValueError, match="total_steps"):
        _fit(tmp_path / "bad", _efficient(), total_steps=0)


def test_pick_recipe_says_what_exists():
    assert pick_recipe({"dcgan": 1}, {"dcgan": 2}, "efficient", "dcgan") == 2
    with pytest.raises(ValueError, match="recipe must be 'paper' or 'efficient'"):
        pick_recipe({}, {}, "fast", "dcgan")
    with pytest.raises(ValueError, match="'efficient' offers \\['dcgan'\\]"):
        pick_recipe({"lapgan": 1}, {"dcgan": 2}, "efficient", "lapgan")
