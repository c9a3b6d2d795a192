"""Weight-free feature extractors: seeded random CNNs and classifier penultimate layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from common.metrics.features import ClassifierFeatures, RandomCNNFeatures, RandomConvNet, extract_features, standardize


def test_random_net_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = RandomConvNet(seed=0), RandomConvNet(seed=0), RandomConvNet(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))
    assert not any(p.requires_grad for p in a.parameters())


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 37, 24), (3, 20, 20), (1, 12, 12, 10), (1, 3, 3)])
def test_random_net_is_resolution_and_channel_agnostic(shape):
    feats = RandomCNNFeatures(seeds=(0, 1, 2), channels=(4, 8, 16), device="cpu").extract(torch.rand(5, *shape))
    assert len(feats) == 3
    assert all(f.shape == (5, 2 * (4 + 8 + 16)) and np.isfinite(f).all() for f in feats)


def test_extract_features_batches_give_the_same_result():
    net = RandomConvNet(channels=(4, 8), seed=0)
    x = torch.rand(10, 1, 16, 16)
    np.testing.assert_allclose(
        extract_features(net, x, batch_size=3, device="cpu"), net(x).double().numpy(), rtol=1e-4, atol=1e-6
    )


def _toy_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)
    )


def test_classifier_features_default_to_the_input_of_the_last_linear():
    model = _toy_classifier()
    model.train()
    x = torch.rand(6, 1, 12, 12)
    (feats,) = ClassifierFeatures(model, batch_size=4).extract(x)
    with torch.no_grad():
        expected = model[:4](x).double().numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-6)
    assert model.training  # the training flag is restored
    assert not model[4]._forward_hooks  # the hook is removed


def test_classifier_features_named_layer_and_callable():
    model = _toy_classifier()
    x = torch.rand(4, 1, 12, 12)
    (conv_out,) = ClassifierFeatures(model, feature_layer="0").extract(x)  # feature maps -> global average pool
    with torch.no_grad():
        np.testing.assert_allclose(conv_out, model[0](x).mean((2, 3)).double().numpy(), rtol=1e-5)
    (via_fn,) = ClassifierFeatures(model, feature_layer=lambda b: model[:2](b), preprocess=lambda b: b * 2).extract(x)
    with torch.no_grad():
        np.testing.assert_allclose(via_fn, model[:2](x * 2).mean((2, 3)).double().numpy(), rtol=1e-5)


def test_classifier_without_linear_needs_a_layer_name():
    with pytest.raises(ValueError, match="feature_layer"):
        ClassifierFeatures(nn.Sequential(nn.Conv2d(1, 2, 3))).extract(torch.rand(2, 1, 8, 8))


def test_standardize_uses_the_reference_statistics():
    rng = np.random.default_rng(0)
    ref = rng.normal(3.0, 2.0, size=(50, 4))
    ref[:, 3] = 7.0  # a constant feature must not divide by zero
    other = rng.normal(size=(10, 4))
    z_ref, z_other = standardize(ref, other)
    np.testing.assert_allclose(z_ref[:, :3].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z_ref[:, :3].std(0), 1.0, atol=1e-12)
    assert np.isfinite(z_other).all() and np.all(z_ref[:, 3] == 0.0)
