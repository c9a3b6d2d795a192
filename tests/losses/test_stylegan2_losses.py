"""StyleGAN2 objective, R1 and path-length regularisers, and the SpineGAN clinical loss."""

from __future__ import annotations

import torch
from torch import nn

from common.losses.clinical import ClinicalLoss
from common.losses.stylegan2 import PathLengthRegularizer, R1Regularizer, StyleGAN2Objective
from common.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

TINY = {"image_size": 16, "channel_base": 128, "channel_max": 16}


def _nets():
    torch.manual_seed(0)
    g = StyleGAN2Generator(latent_dim=16, w_dim=16, num_classes=2, **TINY)
    d = StyleGAN2Discriminator(num_classes=2, mbstd_group_size=0, **TINY)
    return g, d


def test_r1_matches_a_hand_computed_penalty():
    _, d = _nets()
    x, c = torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 1])
    out = R1Regularizer(gamma=0.82)(d, x, c)
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(d(xs, c).sum(), xs)
    torch.testing.assert_close(out["d_reg"], 0.41 * g.square().sum((1, 2, 3)).mean())
    out["d_reg"].backward()
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad and p.dim() > 1)


def test_path_length_tracks_its_mean_and_reaches_g():
    g, _ = _nets()
    pl = PathLengthRegularizer(weight=2.0)
    out = pl(g, 8, "cpu", None)
    assert float(pl.pl_mean) > 0 and out["g_reg"] >= 0
    out["g_reg"].backward()
    assert g.mapping.layers[0].weight.grad is not None
    pl.reset()
    assert float(pl.pl_mean) == 0


def test_joint_and_separate_d_passes_agree_without_mbstd():
    g, d = _nets()
    x, c = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 0, 1])
    g.eval()
    g.noise = False
    torch.manual_seed(1)
    sep = StyleGAN2Objective().d_loss(g, d, x, c)["d_loss"]
    torch.manual_seed(1)
    joint = StyleGAN2Objective(joint_d_batch=True).d_loss(g, d, x, c)["d_loss"]
    torch.testing.assert_close(sep, joint)


class _Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16 * 16, 2)

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_clinical_loss_gradient_reaches_the_images_not_the_classifier():
    c = _Frozen()
    loss = ClinicalLoss(c, weight=0.1)
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    out = loss(x, torch.tensor([0, 1, 0, 1]))
    out["loss"].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in c.parameters())
    torch.testing.assert_close(out["loss"], 0.1 * out["bce"])


def test_clinical_loss_is_the_papers_bce_on_the_abnormal_probability():
    c = _Frozen()
    x, y = torch.randn(5, 1, 16, 16), torch.tensor([0, 1, 1, 0, 1])
    logits = c(x)
    p_abn = torch.softmax(logits, 1)[:, 1]
    ref = torch.nn.functional.binary_cross_entropy(p_abn, y.float())
    torch.testing.assert_close(ClinicalLoss(c, weight=1.0)(x, y)["bce"], ref, rtol=1e-4, atol=1e-5)


def test_input_range_quirk_rescales_by_default():
    c = _Frozen()
    x = torch.full((1, 1, 16, 16), -1.0)
    right = ClinicalLoss(c, classifier_range=(0.0, 1.0))
    quirk = ClinicalLoss(c, classifier_range=(0.0, 1.0), rescale=False)
    assert right.to_classifier_range(x).min() == 0.0 and quirk.to_classifier_range(x).min() == -1.0


def test_generator_step_with_clinical_term_trains_g():
    g, d = _nets()
    obj = StyleGAN2Objective(clinical=ClinicalLoss(_Frozen(), weight=0.1))
    out = obj.g_loss(g, d, torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 0, 1]))
    out["g_loss"].backward()
    assert "g_clinical" in out and g.const.grad is not None
