"""Every generator and downstream network scripts with ``torch.jit.script`` (what ``python -m monai.bundle
ckpt_export`` does), and the scripted network computes what the eager one does, with the same state dict.

Small sizes, eval mode, fixed inputs; networks that draw noise inside ``forward`` (StyleGAN2's per-pixel noise,
LAPGAN's noise planes) are compared after seeding torch's global RNG the same way before each call. The scripted
network runs three times: TorchScript's profiling executor optimises the graph after the first runs, and a bad
optimisation would show there.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from monai.networks.nets import UNet

from common.networks import (
    ACGANDiscriminator,
    ACGANGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
    FridAdarCNN,
    LAPGANGenerator,
    PyramidGenerator,
)
from common.networks.pix2pix import Pix2PixUNet
from common.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

B = 3


def _z(dim: int) -> torch.Tensor:
    return torch.rand(B, dim, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _image(*shape: int) -> torch.Tensor:
    return torch.rand(B, *shape, generator=torch.Generator().manual_seed(2)) * 2 - 1


LABELS = torch.tensor([0, 2, 1])

# name -> (network factory, inputs): the networks the bundles build as network_def (generators, and the downstream
# classifier / the brain bundle's MONAI UNet segmenter) and the discriminators
CASES: dict[str, tuple[Callable[[], torch.nn.Module], tuple]] = {
    "dcgan": (lambda: DCGANGenerator(16, 1, 16, (32, 16)), (_z(16),)),
    "dcgan-conditional": (lambda: DCGANGenerator(16, 1, 16, (32, 16), num_classes=3), (_z(16), LABELS)),
    "dcgan-3d-group-norm": (lambda: DCGANGenerator(16, 2, (8, 16, 8), (8, 4), spatial_dims=3, norm="group"), (_z(16),)),
    "acgan": (lambda: ACGANGenerator(16, 3, 16, (32, 16)), (_z(16), LABELS)),
    "dcgan-discriminator": (lambda: DCGANDiscriminator(1, 16, (8, 16)), (_image(1, 16, 16),)),
    "acgan-discriminator": (lambda: ACGANDiscriminator(1, 16, (8, 16)), (_image(1, 16, 16),)),
    "lapgan": (lambda: LAPGANGenerator(16, 3, 32, 3, (32, 16), stage_channels=(8, 8)), (_z(16),)),
    "pyramid": (lambda: PyramidGenerator(16, 3, 32, (32, 16, 8), 2), (_z(16),)),
    "pix2pix": (lambda: Pix2PixUNet(2, 6, 4, (8, 16, 16)), (_image(6, 32, 32),)),
    "pix2pix-instance-norm": (lambda: Pix2PixUNet(2, 3, 1, (8, 16), norm="instance"), (_image(3, 16, 16),)),
    "stylegan2": (
        lambda: StyleGAN2Generator(16, 16, 3, 32, 1, channel_base=128, channel_max=16),
        (_z(16), LABELS),
    ),
    "stylegan2-unconditional-truncated": (
        lambda: StyleGAN2Generator(16, 16, 0, 16, 1, channel_base=64, channel_max=16, truncation_psi=0.7),
        (_z(16),),
    ),
    "stylegan2-return-ws": (
        lambda: StyleGAN2Generator(16, 16, 3, 16, 1, channel_base=64, channel_max=16),
        (_z(16), LABELS, True),
    ),
    "stylegan2-discriminator": (
        lambda: StyleGAN2Discriminator(1, 3, 16, 64, 16, mbstd_group_size=3),
        (_image(1, 16, 16), LABELS),
    ),
    "classifier": (lambda: FridAdarCNN(1, 3, 16, (4, 8)), (_image(1, 16, 16),)),
    "classifier-rgb-k3": (lambda: FridAdarCNN(3, 2, 16, (4, 8), kernel_size=3), (_image(3, 16, 16),)),
    "brain-segmenter": (
        lambda: UNet(2, 4, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=2),
        (_image(4, 32, 32),),
    ),
}


def _outputs(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("name", list(CASES))
def test_scripted_network_equals_eager(name: str) -> None:
    factory, inputs = CASES[name]
    torch.manual_seed(0)
    net = factory().eval()
    scripted = torch.jit.script(net)
    # the keys trained weights are saved under are the scripted module's too
    assert list(scripted.state_dict()) == list(net.state_dict())
    with torch.no_grad():
        torch.manual_seed(7)
        expected = _outputs(net(*inputs))
        for _ in range(3):
            torch.manual_seed(7)
            got = _outputs(scripted(*inputs))
            assert len(got) == len(expected)
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(g, e)


def test_scripted_network_loads_eager_weights() -> None:
    """``ckpt_export`` loads the checkpoint into the eager network, then scripts it: a trained state dict goes in."""
    torch.manual_seed(0)
    trained = DCGANGenerator(16, 1, 16, (32, 16), num_classes=3).eval()
    torch.manual_seed(1)
    fresh = DCGANGenerator(16, 1, 16, (32, 16), num_classes=3).eval()
    scripted = torch.jit.script(fresh)
    scripted.load_state_dict(trained.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(scripted(_z(16), LABELS), trained(_z(16), LABELS))


def test_scripted_generator_keeps_its_input_checks() -> None:
    """The eager ValueErrors stay errors when scripted (TorchScript raises them as ``torch.jit.Error``)."""
    scripted = torch.jit.script(DCGANGenerator(16, 1, 16, (32, 16), num_classes=3).eval())
    with pytest.raises(torch.jit.Error, match="needs labels"):
        scripted(_z(16))
    with pytest.raises(torch.jit.Error, match=r"z must be \(B, 16\), got \[3, 8\]"):
        scripted(_z(8), LABELS)
    with pytest.raises(ValueError, match=r"z must be \(B, 16\), got \[3, 8\]"):  # eager: the same message
        DCGANGenerator(16, 1, 16, (32, 16), num_classes=3)(_z(8), LABELS)
    pix = torch.jit.script(Pix2PixUNet(2, 6, 4, (8, 16, 16)).eval())
    with pytest.raises(torch.jit.Error, match="divisible by 8"):
        pix(_image(6, 20, 20))
    stage = torch.jit.script(LAPGANGenerator(16, 3, 32, 2, (32, 16), stage_channels=(8,)).stages[0].eval())
    with pytest.raises(torch.jit.Error, match="condition must be"):
        stage(_image(1, 32, 32), _image(3, 16, 16))
