"""The Frid-Adar et al. 2018 CNN (FridAdarCNN): shapes, parameter count, feature extraction, bundle construction."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from common.networks import FridAdarCNN


def test_paper_classifier_shapes_and_parameter_count() -> None:
    net = FridAdarCNN()
    x = torch.randn(2, 1, 64, 64)
    assert net(x).shape == (2, 3)
    assert net.forward_features(x).shape == (2, 256)
    convs = (1 * 32 + 32 * 64 + 64 * 128) * 25 + (32 + 64 + 128)
    dense = (8 * 8 * 128 * 256 + 256) + (256 * 3 + 3)
    n = sum(p.numel() for p in net.parameters())
    print(f"paper lesion classifier: {n:,} parameters")
    assert n == convs + dense == 2_355_203
    assert not any(isinstance(m, nn.Softmax) for m in net.modules())  # logits; softmax lives in the loss
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.5]


@pytest.mark.parametrize(
    ("image_size", "spatial_dims", "channels"), [(32, 2, (32, 64, 128)), (128, 2, (8, 16, 32)), (16, 3, (4, 8))]
)
def test_other_sizes_and_3d(image_size: int, spatial_dims: int, channels: tuple[int, ...]) -> None:
    net = FridAdarCNN(in_channels=3, num_classes=2, image_size=image_size, channels=channels,
                           spatial_dims=spatial_dims, hidden=32)  # fmt: skip
    x = torch.randn(2, 3, *[image_size] * spatial_dims)
    assert net(x).shape == (2, 2)
    assert net.forward_features(x).shape == (2, 32)


def test_forward_features_equals_hooked_feature_layer() -> None:
    torch.manual_seed(0)
    net = FridAdarCNN().eval()
    captured: list[torch.Tensor] = []
    layer = dict(net.named_modules())[FridAdarCNN.feature_layer]
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    x = torch.randn(3, 1, 64, 64)
    logits = net(x)
    handle.remove()
    feats = net.forward_features(x)
    assert torch.equal(captured[0], feats)
    assert (feats >= 0).all()  # post-ReLU activations
    assert torch.allclose(net.classifier(feats), logits)  # the layer really is the penultimate one


def test_invalid_size_gives_clear_error() -> None:
    with pytest.raises(ValueError, match=r"multiple of 2 \*\* len\(channels\) = 8"):
        FridAdarCNN(image_size=36)


def test_built_from_json_by_bundle_config_parser() -> None:
    from monai.bundle import ConfigParser

    config = json.loads(
        """{"network_def": {"_target_": "common.networks.FridAdarCNN", "in_channels": 1, "num_classes": 3,
            "image_size": 64, "channels": [32, 64, 128], "kernel_size": 5, "hidden": 256, "dropout": 0.5,
            "spatial_dims": 2},
            "network": "$@network_def.to(torch.device('cpu'))"}"""
    )
    parser = ConfigParser(config)
    net = parser.get_parsed_content("network")
    assert isinstance(net, FridAdarCNN)
    assert net(torch.randn(1, 1, 64, 64)).shape == (1, 3)


def test_old_name_is_an_alias() -> None:
    """Configs written before the rename name ``common.networks.LesionClassifier``: the same class, so they still
    build (and load the same weights)."""
    from monai.bundle import ConfigParser

    from common.networks import LesionClassifier
    from common.networks.classifier import LesionClassifier as from_module

    assert LesionClassifier is FridAdarCNN and from_module is FridAdarCNN
    parser = ConfigParser({"net": {"_target_": "common.networks.LesionClassifier", "image_size": 16, "channels": [4]}})
    assert type(parser.get_parsed_content("net")) is FridAdarCNN
