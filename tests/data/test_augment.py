"""ClassicAugmentation: exact identities and flips, reproducibility, 3-D, gradients."""

from __future__ import annotations

import torch

from common.data.augment import ClassicAugmentation


def _batch(n=6, size=16, dims=2):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, *[size] * dims, generator=g)


def test_no_op_settings_are_the_identity():
    x = _batch()
    aug = ClassicAugmentation(rotate_degrees=0, translate_fraction=0, scale_range=(1, 1), flip=False)
    assert torch.allclose(aug(x), x, atol=1e-5)
    assert torch.allclose(ClassicAugmentation(prob=0.0)(x), x, atol=1e-5)


def test_flips_are_exact():
    x = _batch(n=64)
    out = ClassicAugmentation(rotate_degrees=0, translate_fraction=0, scale_range=(1, 1), flip=True)(x)
    seen = set()
    for i in range(len(x)):
        for name, candidate in {
            "none": x[i],
            "h": x[i].flip(-1),
            "v": x[i].flip(-2),
            "hv": x[i].flip(-1).flip(-2),
        }.items():
            if torch.allclose(out[i], candidate, atol=1e-5):
                seen.add(name)
                break
        else:
            raise AssertionError(f"image {i} is not a flip of its input")
    assert seen == {"none", "h", "v", "hv"}


def test_seeded_and_varied():
    x = _batch()
    a = ClassicAugmentation(seed=5)(x)
    b = ClassicAugmentation(seed=5)(x)
    c = ClassicAugmentation(seed=6)(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1]), "every image gets its own transform"
    aug = ClassicAugmentation(seed=1)
    first = aug(x)
    aug.set_random_state(1)
    assert torch.equal(aug(x), first)


def test_values_stay_in_range_and_3d_works():
    x = _batch() * 2 - 1
    out = ClassicAugmentation()(x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    v = _batch(n=2, size=8, dims=3)
    assert ClassicAugmentation()(v).shape == v.shape


def test_differentiable():
    x = _batch().requires_grad_()
    ClassicAugmentation()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
