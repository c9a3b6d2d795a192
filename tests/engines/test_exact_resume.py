"""Exact resume: a run stopped at any point and resumed ends bit-identical to an uninterrupted one (CPU, same seed).

The pipeline draws from every kind of random stream a real run has: the loader's shuffle, MONAI random transforms
(their own ``RandomState``), a batch augmentation and ADA's pipe (their own ``torch.Generator``), latents, R1 and
the ADA handler's running ``r_t`` (its interval does not divide the epoch, so it is mid-count at each checkpoint).
A conditional StyleGAN2 adds noise inputs, style mixing and the path-length regulariser's running mean. Under DP, the
secret streams that protect the private images are the ones a resume must *not* restore.
"""

from __future__ import annotations

import io
import random
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from common.data.augment import ClassicAugmentation
from common.engines import fit_gan, latest_checkpoint
from common.engines.handlers import RNGState
from common.engines.recipes import efficient_recipe
from common.losses import BCEObjective
from common.networks import DCGANDiscriminator, DCGANGenerator

EPOCHS = 4  # 12 images, batch 4: 3 steps an epoch


def _items(n=12, size=16):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, size, size, generator=g) * 2 - 1, "label": i % 2} for i in range(n)]


def _recipe():
    # ADA's p rises by 0.16 every 4 steps (target -1), from 0 to 0.48 in the run: the 4 steps do not divide the 6 of
    # the resumed checkpoint's epoch 2, so the handler is half-way through an interval there
    recipe = efficient_recipe(
        partial(DCGANGenerator, latent_dim=8, image_size=16, channels=(16, 8)),
        partial(DCGANDiscriminator, image_size=16, channels=(8, 16), norm=None),
        BCEObjective(),
        batch_size=4, r1_interval=2, ema_kimg=0.01, ada_target=-1.0, ada_speed_kimg=0.1, seed=5,
    )  # fmt: skip
    recipe.ada_interval = 4
    return recipe


def _transforms():
    return Compose([RandFlipd("image", prob=0.5, spatial_axis=1), RandGaussianNoised("image", prob=0.5, std=0.05)])


class Killed(RuntimeError):
    pass


class StopAt:
    """Raise at ``iteration``, as a killed process would stop (nothing after it runs, no final checkpoint)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=self.iteration), self)

    def __call__(self, engine) -> None:
        raise Killed(f"killed at iteration {self.iteration}")


class DrawsAtEpochEnd:
    """A handler that draws from the global torch stream when an epoch completes (as a validation pass with
    dropout, or a sample grid of a generator with noise inputs, would): the checkpoint must save the streams *after*
    it, since the next epoch starts from them."""

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: torch.rand(3))


def _fit(out: Path, epochs: int, *extra_handlers):
    return fit_gan(
        _recipe(), _items(), _transforms(), str(out), max_epochs=epochs, batch_size=4, seed=3, tensorboard=False,
        progress=False, augment=ClassicAugmentation(rotate_degrees=20, seed=1),
        extra_handlers=[DrawsAtEpochEnd(), *extra_handlers],
    )  # fmt: skip


def _weights(out: Path, keys=("generator", "discriminator", "g_ema", "g_opt", "d_opt", "augment_pipe", "ada", "rng")):
    """Every value of the final checkpoint's ``keys`` (G, D, EMA, both optimisers, ADA's p and count, RNG states),
    flat: ``{"g_opt.state.0.exp_avg": tensor, ...}``."""
    ckpt = torch.load(latest_checkpoint(str(out / "checkpoints")), weights_only=True)
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            flat[prefix] = value if isinstance(value, torch.Tensor) else torch.tensor(hash(value))

    for key in keys:
        walk(key, ckpt[key])
    return flat


def _assert_identical(a: Path, b: Path, **kw) -> None:
    wa, wb = _weights(a, **kw), _weights(b, **kw)
    assert wa.keys() == wb.keys()
    differ = sorted(k for k in wa if not torch.equal(wa[k], wb[k]))
    assert not differ, f"{len(differ)} of {len(wa)} values differ, e.g. {differ[:5]}"
    ga, gb = torch.load(a / "generator.pt"), torch.load(b / "generator.pt")
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    # the loss log of the resumed run continues the uninterrupted one's numbers (each epoch logged once)
    assert (a / "train_log.csv").read_text() == (b / "train_log.csv").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    _fit(out, EPOCHS)
    p = float(torch.load(latest_checkpoint(str(out / "checkpoints")), weights_only=True)["augment_pipe"]["p"])
    assert 0 < p < 1, f"ADA's p adapted and did not saturate: {p}"
    return out


def test_resume_between_epochs_is_bit_identical(tmp_path, uninterrupted):
    _fit(tmp_path, 2)
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # whatever ran in between
    out = _fit(tmp_path, EPOCHS)
    assert [row["epoch"] for row in out["history"]] == [3, 4], "resumed at epoch 2, did not start over"
    _assert_identical(uninterrupted, tmp_path)


@pytest.mark.parametrize("kill_at", [8, 9])  # epoch 3's second step; its last step (before the epoch-3 checkpoint)
def test_resume_after_a_kill_mid_epoch_is_bit_identical(tmp_path, uninterrupted, kill_at):
    with pytest.raises(Killed):
        _fit(tmp_path, EPOCHS, StopAt(kill_at))
    assert latest_checkpoint(str(tmp_path / "checkpoints")).endswith("epoch=2.pt")
    out = _fit(tmp_path, EPOCHS)
    assert [row["epoch"] for row in out["history"]] == [3, 4]
    _assert_identical(uninterrupted, tmp_path)


def test_rng_state_round_trip_restores_every_stream():
    """Global streams (python, numpy, torch) and the private ones found in the pipeline objects."""
    transforms = _transforms()
    augment = ClassicAugmentation(seed=1)
    loader_gen = torch.Generator().manual_seed(7)
    rng = RNGState(transforms, augment, loader_gen)
    found = {id(s) for s in rng.streams}
    # the Compose's own, each transform's (a dict transform's inner array transform's too), augmentation's, loader's
    expected = [transforms.R, *(t.R for t in transforms.transforms), transforms.transforms[1].rand_gaussian_noise.R]
    assert {id(s) for s in expected} | {id(augment.generator), id(loader_gen)} == found

    def draw():
        return (
            random.random(), float(np.random.rand()), float(torch.rand(())),
            [float(t.R.rand()) for t in transforms.transforms], float(transforms.R.rand()),
            float(torch.rand((), generator=augment.generator)), float(torch.rand((), generator=loader_gen)),
        )  # fmt: skip

    buffer = io.BytesIO()  # the state survives torch.save / torch.load(weights_only=True), as MONAI's loader reads it
    torch.save(rng.state_dict(), buffer)
    first = draw()
    draw()
    buffer.seek(0)
    rng.load_state_dict(torch.load(buffer, weights_only=True))
    assert draw() == first


# StyleGAN2 (conditional): noise inputs, style mixing, the path-length regulariser's running mean, R1, ADA, EMA
STYLEGAN2 = {"num_classes": 2, "latent_dim": 16, "w_dim": 16, "batch_size": 4, "ema_kimg": 0.1, "image_size": 16,
             "channel_base": 128, "channel_max": 16, "r1_interval": 2, "pl_interval": 3, "ada_p": 0.2}  # fmt: skip


def _fit_stylegan2(out: Path, epochs: int, *extra_handlers, privacy=None):
    from common.engines.stylegan2 import stylegan2_recipe

    # under DP: no R1, no adaptive p, and no pipe, so that D's weights differ only by what the secret streams drew
    dp = {"ada_target": None, "r1_gamma": None, "ada_p": 0.0} if privacy is not None else {}
    recipe = stylegan2_recipe(**{**STYLEGAN2, **dp}, privacy=privacy)
    return fit_gan(  # 8 images: 2 steps an epoch
        recipe, _items(8), Compose([]), str(out), max_epochs=epochs, batch_size=4, seed=0, tensorboard=False,
        progress=False, extra_handlers=list(extra_handlers),
    )  # fmt: skip


def test_stylegan2_resumed_after_a_kill_mid_epoch_is_bit_identical(tmp_path):
    _fit_stylegan2(tmp_path / "whole", 3)
    with pytest.raises(Killed):
        _fit_stylegan2(tmp_path / "resumed", 3, StopAt(5))  # epoch 3's first step; the epoch-2 checkpoint is there
    _fit_stylegan2(tmp_path / "resumed", 3)
    keys = ("generator", "discriminator", "g_ema", "g_opt", "d_opt", "g_regularizer", "augment_pipe", "rng")
    _assert_identical(tmp_path / "whole", tmp_path / "resumed", keys=keys)


def test_dp_resume_restores_no_secret_stream(tmp_path):
    """Under DP the Poisson batches and the noise come from secret generators that no checkpoint holds: two resumes
    from the same checkpoint train differently (nothing that protects the private images is replayed)."""
    pytest.importorskip("opacus")
    from common.privacy.dp import DPSGDDiscriminator

    _fit_stylegan2(tmp_path / "a", 1, privacy=DPSGDDiscriminator(noise_multiplier=1.0))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for run in ("a", "b"):
        _fit_stylegan2(tmp_path / run, 2, privacy=DPSGDDiscriminator(noise_multiplier=1.0))
    a, b = (torch.load(tmp_path / r / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True) for r in "ab")
    assert "rng" in a, "the public streams are checkpointed"
    differ = [k for k in a["discriminator"] if not torch.equal(a["discriminator"][k], b["discriminator"][k])]
    assert differ, "the DP noise or the Poisson batches were replayed from the checkpoint"


def test_a_checkpoint_from_before_exact_resume_still_resumes(tmp_path, caplog):
    _fit(tmp_path, 1)
    path = tmp_path / "checkpoints" / "checkpoint_epoch=1.pt"
    old = {k: v for k, v in torch.load(path, weights_only=True).items() if k not in ("rng", "ada")}
    torch.save(old, path)
    out = _fit(tmp_path, 2)
    assert [row["epoch"] for row in out["history"]] == [2]
    assert "has no ['rng', 'ada']" in caplog.text, "it says the resume is not exact"
