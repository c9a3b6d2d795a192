"""ADA augmentation pipe and its adaptive p."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from common.data.ada import AdaptiveAugment, AdaptiveAugmentHandler


def test_p_zero_is_identity_and_p_one_changes_every_image():
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    assert torch.equal(AdaptiveAugment(p=0.0)(x), x)
    y = AdaptiveAugment(p=1.0, seed=1)(x)
    assert y.shape == x.shape and ((y - x).abs().flatten(1).mean(1) > 1e-3).all()


def test_blit_transforms_are_exact_pixel_permutations():
    x = torch.arange(256.0).view(1, 1, 16, 16).repeat(8, 1, 1, 1)
    y = AdaptiveAugment(("xflip", "rotate90"), p=1.0, seed=0)(x)
    for i in range(8):
        assert sorted(y[i].round().flatten().tolist()) == x[i].flatten().tolist()


def test_differentiable_and_reproducible():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    a = AdaptiveAugment("bgc", p=0.8, seed=3)
    a(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    torch.testing.assert_close(AdaptiveAugment("bgc", p=0.8, seed=3)(x), AdaptiveAugment("bgc", p=0.8, seed=3)(x))


def test_gray_lumaflip_negates_and_brightness_shifts():
    x = torch.rand(64, 1, 8, 8)
    y = AdaptiveAugment(("lumaflip",), p=1.0, seed=0)(x)
    flipped = (y + x).abs().flatten(1).max(1).values < 1e-5
    same = (y - x).abs().flatten(1).max(1).values < 1e-5
    assert (flipped | same).all() and flipped.any() and same.any()


def test_handler_moves_p_towards_the_overfitting_target():
    pipe = AdaptiveAugment(p=0.5)
    handler = AdaptiveAugmentHandler(pipe, target=0.6, interval=2, speed_kimg=1.0, batch_size=10)
    engine = Engine(lambda e, b: {"d_real_sign": b})
    handler.attach(engine)
    engine.run([1.0] * 4)  # D is sure of every real: overfitting -> more augmentation
    assert float(pipe.p) > 0.5
    up = float(pipe.p)
    engine.run([-1.0] * 4, max_epochs=2)
    assert float(pipe.p) < up
