"""Conditional StyleGAN2: shapes, modulated-conv maths, conditioning, minibatch-std switch, no buffers in D."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.networks.stylegan2 import (
    ModulatedConv2d,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    blur_downsample,
    blur_upsample,
    minibatch_std,
    stylegan2_channels,
)

TINY = {"image_size": 16, "channel_base": 128, "channel_max": 16}


def _g(**kw):
    return StyleGAN2Generator(latent_dim=16, w_dim=16, **{**TINY, **kw})


def test_paper_channel_rule_at_256_px():
    assert [stylegan2_channels(r, 16384, 512) for r in (4, 32, 64, 128, 256)] == [512, 512, 256, 128, 64]


def test_generator_and_discriminator_shapes():
    g, d = _g(num_classes=2), StyleGAN2Discriminator(num_classes=2, **TINY)
    z, c = g.sample_latent(4), torch.tensor([0, 1, 0, 1])
    img, ws = g(z, c, return_ws=True)
    assert img.shape == (4, 1, 16, 16) and ws.shape == (4, g.num_ws, 16)
    assert d(img, c).shape == (4,)
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Generator(image_size=48)


def test_modulated_conv_equals_conv_with_per_sample_demodulated_weight():
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 5, 3, w_dim=4)
    x, w = torch.randn(2, 3, 8, 8), torch.randn(2, 4)
    out = conv(x, w)
    s = conv.affine(w)
    for i in range(2):
        weight = conv.weight * conv.weight_gain * s[i][None, :, None, None]
        weight = weight * torch.rsqrt(weight.square().sum((1, 2, 3), keepdim=True) + 1e-8)
        ref = F.conv2d(x[i : i + 1], weight, padding=1)
        torch.testing.assert_close(out[i : i + 1], ref, rtol=1e-4, atol=1e-5)


def test_class_condition_changes_the_image_and_mixing_only_in_training():
    torch.manual_seed(0)
    g = _g(num_classes=2, noise=False).eval()
    z = g.sample_latent(2)
    a, b = g(z, torch.tensor([0, 0])), g(z, torch.tensor([1, 1]))
    assert (a - b).abs().mean() > 1e-3
    torch.testing.assert_close(g(z, torch.tensor([0, 0])), a)  # eval, no noise: deterministic, no style mixing
    with pytest.raises(ValueError, match="conditional"):
        g(z)


def test_blur_resampling_shapes_and_dc_gain():
    x = torch.ones(1, 2, 8, 8)
    assert blur_upsample(x).shape == (1, 2, 16, 16) and blur_downsample(x).shape == (1, 2, 4, 4)
    torch.testing.assert_close(blur_upsample(x)[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))
    torch.testing.assert_close(blur_downsample(x)[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))


def test_minibatch_std_switch_and_per_sample_independence():
    with_std = StyleGAN2Discriminator(num_classes=0, mbstd_group_size=4, **TINY)
    without = StyleGAN2Discriminator(num_classes=0, mbstd_group_size=0, **TINY)
    x = torch.randn(4, 1, 16, 16)
    y = x.clone()
    y[1:] = torch.randn(3, 1, 16, 16)  # change the other samples only
    assert not torch.allclose(with_std(x)[0], with_std(y)[0]), "mbstd couples samples"
    torch.testing.assert_close(without(x)[0], without(y)[0])  # what DP-SGD needs
    assert minibatch_std(torch.randn(6, 3, 4, 4), 4).shape == (6, 4, 4, 4)  # group 3 divides 6


def test_discriminator_has_no_buffers_and_params_only_in_leaves():
    d = StyleGAN2Discriminator(num_classes=2, mbstd_group_size=0, **TINY)
    assert not list(d.buffers())
    for module in d.modules():
        if list(module.children()):
            assert not list(module.parameters(recurse=False)), type(module).__name__
