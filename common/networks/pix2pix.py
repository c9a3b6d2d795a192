"""pix2pix (Isola et al. 2017) networks in 2-D or 3-D, as Shin et al. (2018) used them for label map -> MRI.

- ``Pix2PixUNet``: the U-Net generator. Encoder: 4x4 convolutions with stride 2, normalisation (none on the first
  and innermost block) and LeakyReLU(0.2); decoder: 4x4 transposed convolutions, normalisation, dropout 0.5 in the
  three innermost blocks (pix2pix's only source of randomness: it stays on at inference), ReLU, skip connections;
  tanh output. MONAI's ``UNet`` has 3x3 kernels and one global dropout, so the blocks are MONAI ``Convolution``\\ s
  assembled here.
- ``ConditionalPatchDiscriminator``: MONAI's ``PatchDiscriminator`` on ``concat(condition, image)``, returning the
  logit map of its last layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import PatchDiscriminator
from torch import nn

__all__ = ["ConditionalPatchDiscriminator", "Pix2PixUNet"]


class _Level(nn.Module):
    """One U-Net level: down-block, the inner levels, up-block, and the skip concatenation."""

    def __init__(self, down: nn.Module, inner: nn.Module | None, up: nn.Module, skip: bool) -> None:
        super().__init__()
        self.down, self.inner, self.up, self.skip = down, inner, up, skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.inner is not None:
            y = self.inner(y)
        y = self.up(y)
        return torch.cat([x, y], 1) if self.skip else y


class Pix2PixUNet(nn.Module):
    """U-Net generator: condition (B, in_channels, *spatial) -> image (B, out_channels, *spatial) in [-1, 1].

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: condition channels (one-hot label map).
        out_channels: MRI sequences.
        channels: filters per encoder level, outermost first (pix2pix: 64, 128, 256, 512, 512, ...); the input's
            spatial size must be divisible by ``2 ** len(channels)``.
        dropout: dropout probability in the ``dropout_levels`` innermost decoder blocks.
        norm: ``"batch"`` (pix2pix; with batch 1 it normalises per image) or ``"instance"``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (64, 128, 256, 512, 512, 512),
        dropout: float = 0.5,
        dropout_levels: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"need at least 2 levels, got channels={channels}")
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.channels = tuple(channels)
        self.num_classes = 0  # interface of common.losses: conditioned on an image, not on class labels
        lrelu = ("leakyrelu", {"negative_slope": 0.2, "inplace": False})
        conv = dict(spatial_dims=spatial_dims, kernel_size=4, strides=2, padding=1, bias=norm != "batch")
        n = len(channels)
        inner: nn.Module | None = None
        for i in reversed(range(n)):
            c_in = in_channels if i == 0 else channels[i - 1]
            innermost, outermost = i == n - 1, i == 0
            down = Convolution(
                in_channels=c_in,
                out_channels=channels[i],
                act=lrelu,
                norm=None if innermost or outermost else norm,
                **conv,
            )
            up_in = channels[i] if innermost else channels[i] * 2
            if outermost:
                up = nn.Sequential(
                    Convolution(
                        in_channels=up_in,
                        out_channels=out_channels,
                        is_transposed=True,
                        output_padding=0,
                        conv_only=True,
                        **{**conv, "bias": True},
                    ),
                    nn.Tanh(),
                )
            else:
                up = Convolution(
                    in_channels=up_in,
                    out_channels=c_in,
                    is_transposed=True,
                    output_padding=0,
                    act="relu",
                    norm=norm,
                    dropout=dropout if (n - 1 - i) < dropout_levels and dropout > 0 else None,
                    **conv,
                )
            inner = _Level(down, inner, up, skip=not outermost)
        self.model = inner

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        factor = 2 ** len(self.channels)
        bad = False
        for s in condition.shape[2:]:  # (a loop, not a comprehension with ``if``: TorchScript compiles this)
            bad = bad or s % factor != 0
        if bad:
            raise ValueError(
                f"Pix2PixUNet with {len(self.channels)} levels needs spatial sizes divisible by {factor}, "
                f"got {list(condition.shape[2:])}: use fewer 'g_channels' or another image size"
            )
        return self.model(condition)


class ConditionalPatchDiscriminator(nn.Module):
    """PatchGAN on ``concat(condition, image)``: (B, C_cond + C_img, *spatial) -> logit map (B, 1, *patches).

    Args are those of MONAI ``PatchDiscriminator``; ``num_layers_d=3`` is pix2pix's 70x70 PatchGAN.
    """

    def __init__(
        self,
        spatial_dims: int,
        condition_channels: int,
        image_channels: int,
        channels: int = 64,
        num_layers_d: int = 3,
        norm: str = "BATCH",
    ) -> None:
        super().__init__()
        self.net = PatchDiscriminator(
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=condition_channels + image_channels,
            out_channels=1,
            num_layers_d=num_layers_d,
            norm=norm,
        )

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], 1))[-1]
