"""DCGAN / ACGAN networks of Frid-Adar et al. 2018: shapes, the paper's layout, conditioning, norms, init, backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from common.networks import (
    ACGANDiscriminator,
    ACGANGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
    group_count,
    stride2_padding,
    weights_init_dcgan,
)

SMALL_G = (64, 32, 16, 8)  # the paper's layout at 1/16 of the width, to keep the tests fast
SMALL_D = (8, 16, 32, 64)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def norms_in(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, NORM_TYPES)]


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_generator_and_discriminator_shapes_and_range(image_size: int) -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(image_size=image_size, channels=SMALL_G)
    d = DCGANDiscriminator(image_size=image_size, channels=SMALL_D)
    x = g(g.sample_latent(3))
    assert x.shape == (3, 1, image_size, image_size)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert d(x).shape == (3,)


def test_paper_sized_forward() -> None:
    g, d = DCGANGenerator(), DCGANDiscriminator()
    x = g(g.sample_latent(2))
    assert x.shape == (2, 1, 64, 64)
    assert d(x).shape == (2,)


def test_3d_rgb_and_non_square() -> None:
    g = DCGANGenerator(latent_dim=16, out_channels=2, image_size=16, channels=(16, 8), spatial_dims=3, num_classes=2)
    d = ACGANDiscriminator(in_channels=2, image_size=16, channels=(8, 16), spatial_dims=3, num_classes=2)
    x = g(g.sample_latent(2), torch.tensor([0, 1]))
    assert x.shape == (2, 2, 16, 16, 16)
    logits, class_logits = d(x)
    assert logits.shape == (2,) and class_logits.shape == (2, 2)

    g = DCGANGenerator(out_channels=3, image_size=(64, 32), channels=(32, 16, 8))  # e.g. RGB, non-square
    d = DCGANDiscriminator(in_channels=3, image_size=(64, 32), channels=(8, 16, 32))
    x = g(g.sample_latent(2))
    assert x.shape == (2, 3, 64, 32) and d(x).shape == (2,)


def test_paper_generator_parameter_count() -> None:
    # Hand computation for the paper's G (100 -> 4x4x1024 -> 512 -> 256 -> 128 -> 1, 5x5 kernels). Layers followed
    # by BatchNorm carry no bias (the norm's shift makes it redundant); BN has weight + bias per channel.
    fc = 100 * 4 * 4 * 1024
    convs = 1024 * 512 * 25 + 512 * 256 * 25 + 256 * 128 * 25 + (128 * 1 * 25 + 1)
    bn = 2 * (1024 + 512 + 256 + 128)
    expected = fc + convs + bn
    g = DCGANGenerator()
    print(f"paper DCGAN G: {n_params(g):,} parameters (hand: {expected:,})")
    assert n_params(g) == expected == 18_848_641
    # The conditional G adds only the label embedding (3 classes x 100).
    assert n_params(ACGANGenerator()) == expected + 3 * 100


def test_paper_discriminator_parameter_count() -> None:
    convs = (1 * 64 * 25 + 64) + 64 * 128 * 25 + 128 * 256 * 25 + 256 * 512 * 25
    bn = 2 * (128 + 256 + 512)
    head = 4 * 4 * 512 + 1
    d = DCGANDiscriminator()
    print(f"paper DCGAN D: {n_params(d):,} parameters")
    assert n_params(d) == convs + bn + head == 4_312_449


def test_batchnorm_placement_as_in_paper() -> None:
    g, d = DCGANGenerator(channels=SMALL_G), DCGANDiscriminator(channels=SMALL_D)
    # D: no norm after the first conv, BatchNorm after each of the others.
    assert norms_in(d.blocks[0]) == []
    assert all(isinstance(norms_in(block)[0], nn.BatchNorm2d) for block in d.blocks[1:])
    # G: BatchNorm after the projection and every hidden transposed conv, none on the tanh output.
    assert isinstance(norms_in(g.project_adn)[0], nn.BatchNorm2d)
    assert all(len(norms_in(block)) == 1 for block in g.blocks)
    assert norms_in(g.to_image) == []
    assert isinstance(list(g.to_image.modules())[-1], nn.Tanh)
    assert len(norms_in(g)) == len(SMALL_G) and len(norms_in(d)) == len(SMALL_D) - 1


def test_discriminator_returns_logits() -> None:
    d = DCGANDiscriminator(image_size=32, channels=SMALL_D)
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())
    nn.init.constant_(d.adv_head.bias, 5.0)  # a confident D: a logit, not a probability, so it is not squashed
    out = d(torch.randn(4, 1, 32, 32))
    assert out.shape == (4,) and out.dtype == torch.float32
    assert (out > 1.0).any()


def test_conditional_generator() -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(image_size=32, channels=SMALL_G, num_classes=3).eval()
    assert g.num_classes == 3 and g.latent_dim == 100
    z = g.sample_latent(2)
    a = g(z, torch.tensor([0, 0]))
    b = g(z, torch.tensor([1, 2]))
    assert a.shape == b.shape == (2, 1, 32, 32)
    assert not torch.allclose(a, b)  # the label changes the image for the same z
    with pytest.raises(ValueError, match="needs labels"):
        g(z)
    with pytest.raises(ValueError, match="labels were given"):
        DCGANGenerator(image_size=32, channels=SMALL_G)(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"z must be \(B, 100\)"):
        g(torch.zeros(2, 50), torch.tensor([0, 1]))
    assert g(z.reshape(2, 100, 1, 1), torch.tensor([0, 0])).shape == (2, 1, 32, 32)  # PyTorch-DCGAN style z
    with pytest.raises(ValueError, match="3 labels for a batch of 2"):
        g(z, torch.tensor([0, 1, 2]))


def test_acgan_defaults_and_heads() -> None:
    g = ACGANGenerator(image_size=32, channels=SMALL_G)
    d = ACGANDiscriminator(image_size=32, channels=SMALL_D)
    assert g.num_classes == 3 and d.num_classes == 3
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    dropouts = [m for m in d.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == len(SMALL_D) and all(m.p == 0.5 for m in dropouts)
    logits, class_logits = d(g(g.sample_latent(5), torch.randint(0, 3, (5,))))
    assert logits.shape == (5,) and class_logits.shape == (5, 3)
    assert not any(isinstance(m, nn.Dropout) for m in DCGANDiscriminator(channels=SMALL_D).modules())


@pytest.mark.parametrize("conditional", [False, True])
def test_one_training_step_backward(conditional: bool) -> None:
    torch.manual_seed(0)
    k = 3 if conditional else 0
    g = DCGANGenerator(image_size=32, channels=SMALL_G, num_classes=k)
    d = DCGANDiscriminator(image_size=32, channels=SMALL_D, num_classes=k, dropout=0.5 if k else 0.0)
    bce, ce = nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss()
    labels = torch.randint(0, 3, (4,))
    fake = g(g.sample_latent(4), labels if k else None)
    out = d(fake)
    loss = bce(out[0], torch.ones(4)) + ce(out[1], labels) if k else bce(out, torch.ones(4))
    loss.backward()
    for net in (g, d):
        grads = [p.grad for p in net.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(p.grad.abs().sum() for p in g.parameters()) > 0
    before = g.project.weight.detach().clone()
    torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999)).step()
    assert not torch.equal(before, g.project.weight)


@pytest.mark.parametrize("norm", ["group", None, "instance"])
def test_norm_variants_contain_no_batchnorm(norm: str | None) -> None:
    g = DCGANGenerator(image_size=32, channels=SMALL_G, norm=norm)
    d = DCGANDiscriminator(image_size=32, channels=SMALL_D, norm=norm)
    for net in (g, d):
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
        if norm is None:
            assert norms_in(net) == []
            assert all(m.bias is not None for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    if norm == "group":
        groups = [m for m in d.modules() if isinstance(m, nn.GroupNorm)]
        assert [m.num_groups for m in groups] == [16, 32, 32]  # 16, 32, 64 channels
    # The variants still train: one backward through G and D.
    d(g(g.sample_latent(2))).sum().backward()


def test_group_norm_discriminator_is_opacus_compatible() -> None:
    validators = pytest.importorskip("opacus.validators")
    d = DCGANDiscriminator(image_size=32, channels=SMALL_D, norm="group", dropout=0.5)
    assert validators.ModuleValidator.validate(d, strict=False) == []
    assert validators.ModuleValidator.validate(DCGANDiscriminator(image_size=32, channels=SMALL_D), strict=False)
    # Per-sample gradients (what DP-SGD clips) come out for every parameter, ACGAN head included.
    from opacus import GradSampleModule

    d = DCGANDiscriminator(image_size=32, channels=SMALL_D, norm="group", num_classes=3, dropout=0.5)
    logits, class_logits = GradSampleModule(d)(torch.randn(5, 1, 32, 32, requires_grad=True))
    (logits.sum() + class_logits.sum()).backward()
    assert all(p.grad_sample.shape == (5, *p.shape) for p in d.parameters())


def test_group_count() -> None:
    assert [group_count(c) for c in (1, 3, 48, 64, 1024)] == [1, 3, 24, 32, 32]


def test_invalid_sizes_give_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"multiple of 2 \*\* len\(channels\) = 16"):
        DCGANGenerator(image_size=40)
    with pytest.raises(ValueError, match="multiple"):
        DCGANDiscriminator(image_size=8)
    with pytest.raises(ValueError, match="InstanceNorm"):
        DCGANDiscriminator(image_size=16, norm="instance")  # last map would be 1 x 1
    with pytest.raises(ValueError, match="norm must be one of"):
        DCGANDiscriminator(norm="layer")


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5, 7])
def test_stride2_padding_is_exact(kernel_size: int) -> None:
    g = DCGANGenerator(latent_dim=8, image_size=(16, 24), channels=(8, 4), kernel_size=kernel_size)
    d = DCGANDiscriminator(image_size=(16, 24), channels=(4, 8), kernel_size=kernel_size)
    x = g(g.sample_latent(2))
    assert x.shape == (2, 1, 16, 24) and d(x).shape == (2,)
    assert stride2_padding(5) == (2, 1)


def test_sample_latent_uniform_and_reproducible() -> None:
    g = DCGANGenerator(image_size=32, channels=SMALL_G)
    z = g.sample_latent(400, generator=torch.Generator().manual_seed(7))
    assert z.shape == (400, 100) and z.dtype == torch.float32
    assert z.min() >= -1.0 and z.max() <= 1.0
    assert z.min() < -0.99 and z.max() > 0.99  # uses the whole interval
    assert abs(z.mean().item()) < 0.02 and abs(z.var().item() - 1 / 3) < 0.02  # U[-1, 1]: mean 0, variance 1/3
    assert torch.equal(z, g.sample_latent(400, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(z, g.sample_latent(400, generator=torch.Generator().manual_seed(8)))


def test_dcgan_weight_init() -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(image_size=32, channels=(256, 128, 64, 32))
    w = g.blocks[0].conv.weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    bn = norms_in(g)[0]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and torch.all(bn.bias == 0)
    assert torch.all(g.to_image.conv.bias == 0)
    plain = DCGANGenerator(image_size=32, channels=(256, 128, 64, 32), init_weights=False)
    assert abs(plain.blocks[0].conv.weight.std().item() - 0.02) > 0.002  # PyTorch's default init is left alone
    plain.apply(weights_init_dcgan)
    assert abs(plain.blocks[0].conv.weight.std().item() - 0.02) < 0.002


def test_generator_from_bundle_config() -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {"gnet": {"_target_": "common.networks.ACGANGenerator", "image_size": 32, "channels": [64, 32, 16, 8]}}
    )
    g = parser.get_parsed_content("gnet")
    assert isinstance(g, DCGANGenerator) and g.num_classes == 3
    assert g(g.sample_latent(2), torch.tensor([0, 2])).shape == (2, 1, 32, 32)
