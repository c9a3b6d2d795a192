"""pix2pix networks and objective: shapes in 2-D and 3-D, the paper's dropout placement, and a learning step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.losses.pix2pix import Pix2PixObjective
from common.networks.pix2pix import ConditionalPatchDiscriminator, Pix2PixUNet


@pytest.mark.parametrize("dims,size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_shapes_and_output_range(dims, size):
    g = Pix2PixUNet(dims, in_channels=6, out_channels=4, channels=(8, 16, 32, 32))
    d = ConditionalPatchDiscriminator(dims, condition_channels=6, image_channels=4, channels=8, num_layers_d=2)
    cond = torch.rand(2, 6, *size)
    fake = g(cond)
    assert fake.shape == (2, 4, *size) and fake.abs().max() <= 1
    logits = d(cond, fake)
    assert logits.shape[:2] == (2, 1) and logits.ndim == dims + 2 and logits.shape[2] < size[0], "a patch map"


def test_dropout_sits_in_the_three_innermost_decoder_blocks_only():
    g = Pix2PixUNet(2, 4, 2, channels=(8, 16, 32, 64, 64, 64))
    dropouts = [m for m in g.modules() if isinstance(m, nn.Dropout | nn.Dropout2d)]
    assert len(dropouts) == 3 and all(m.p == 0.5 for m in dropouts)
    assert not [m for m in Pix2PixUNet(2, 4, 2, channels=(8, 16), dropout=0).modules() if isinstance(m, nn.Dropout)]


def test_indivisible_size_is_a_clear_error():
    g = Pix2PixUNet(2, 4, 2, channels=(8, 16, 32))
    with pytest.raises(ValueError, match="divisible by 8"):
        g(torch.rand(1, 4, 20, 20))


def test_objective_trains_g_towards_the_paired_image():
    torch.manual_seed(0)
    g = Pix2PixUNet(2, 3, 1, channels=(8, 16, 16), dropout=0, norm="instance")
    d = ConditionalPatchDiscriminator(2, 3, 1, channels=8, num_layers_d=2)
    objective = Pix2PixObjective(l1_weight=100.0)
    cond = torch.zeros(4, 3, 16, 16)
    cond[:, 0, :8] = 1
    cond[:, 1, 8:] = 1
    real = cond[:, :1] * 1.6 - 0.8  # a paired image determined by the label map
    opt_g, opt_d = torch.optim.Adam(g.parameters(), 2e-3), torch.optim.Adam(d.parameters(), 2e-4)
    first = objective.g_loss(g, d, real, cond)["g_l1"].item()
    for _ in range(60):
        loss = objective.d_loss(g, d, real, cond)
        assert set(loss) == {"d_loss", "d_real", "d_fake"}
        opt_d.zero_grad()
        loss["d_loss"].backward()
        opt_d.step()
        g_terms = objective.g_loss(g, d, real, cond)
        opt_g.zero_grad()
        g_terms["g_loss"].backward()
        opt_g.step()
    assert g_terms["g_l1"].item() < 0.3 * first, "L1 to the paired image falls"
    torch.testing.assert_close(g_terms["g_loss"], g_terms["g_adv"] + 100.0 * g_terms["g_l1"])
