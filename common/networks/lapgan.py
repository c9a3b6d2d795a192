"""Laplacian-pyramid generators for high-resolution synthesis (Baur et al. 2018, MelanoGANs; after Denton et al. 2015).

Two generators share the pyramid idea (an image is its coarsest level plus one band-pass residual per finer level):

- ``LAPGANGenerator`` (LAPGAN, Denton et al. 2015): a ``DCGANGenerator`` makes the coarsest level; each finer level
  is made by its own ``LaplacianStageGenerator`` from the 2x-upsampled coarser image plus a noise plane, and it
  predicts the *residual* (the Laplacian band) that is added to that upsampled image. Every level is a separate GAN
  with its own discriminator (which sees the image together with its coarse condition), trained level by level
  (``common.engines.LAPGANRecipe``) and composed only at inference.
- ``PyramidGenerator`` + ``MultiScaleDiscriminator`` (the DDGAN-like variant, see the skin_melanogan model card):
  the same coarse-image-plus-residuals composition, but inside one generator trunk trained end to end, with one
  discriminator per pyramid level that judges G's image at that level ("deeply discriminated": every scale of G gets
  its own adversarial signal at once, instead of LAPGAN's independent stages).

The pyramid operators are fixed: ``downsample`` = 2 x 2 average pooling (area), ``upsample`` = bilinear
interpolation. A real image's Laplacian condition at level k is ``upsample(downsample(x_k))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution

from common.networks.dcgan import DCGANDiscriminator, DCGANGenerator, stride2_padding
from common.networks.init import resolve_norm, weights_init_dcgan

__all__ = [
    "LAPGANGenerator",
    "LaplacianStageGenerator",
    "MultiScaleDiscriminator",
    "PyramidGenerator",
    "downsample",
    "gaussian_pyramid",
    "laplacian_condition",
    "upsample",
]


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H / factor, W / factor)`` by area averaging (no aliasing, exact on a pyramid)."""
    return x if factor == 1 else F.avg_pool2d(x, kernel_size=factor, stride=factor)


def upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H * factor, W * factor)``, bilinear (the pyramid's expand operator)."""
    return x if factor == 1 else F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


def laplacian_condition(x: torch.Tensor) -> torch.Tensor:
    """The coarse image a LAPGAN stage is conditioned on: ``upsample(downsample(x))``, same shape as ``x``.

    ``x - laplacian_condition(x)`` is the band-pass residual the stage learns to generate.
    """
    return upsample(downsample(x))


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` images from coarsest to finest: ``[down^(L-1)(x), ..., down(x), x]``."""
    out = [x]
    for _ in range(levels - 1):
        out.append(downsample(out[-1]))
    return out[::-1]


def _level_sizes(image_size: int, levels: int, name: str) -> list[int]:
    if levels < 1:
        raise ValueError(f"{name}: levels must be >= 1, got {levels}.")
    if image_size % 2 ** (levels - 1):
        factor = 2 ** (levels - 1)
        raise ValueError(f"{name}: image_size {image_size} must be divisible by 2 ** (levels - 1) = {factor}.")
    return [image_size // 2 ** (levels - 1 - k) for k in range(levels)]


class LaplacianStageGenerator(nn.Module):
    """One LAPGAN stage: ``(noise plane, coarse image) -> coarse image + generated residual``.

    Layout (Denton et al.'s stage generators, fully convolutional at one resolution): concat(condition, noise)
    -> ``len(channels)`` [conv k x k + norm + ReLU] -> conv k x k to ``out_channels`` + tanh = residual; the output
    is ``condition + residual_scale * residual``. ``residual_scale`` bounds the band a stage can add (real residuals
    of [-1, 1] images are mostly within +-0.5).

    Args:
        out_channels: image channels (3 for dermoscopy).
        image_size: side of this stage's images (its condition has the same size).
        channels: feature maps of the hidden conv layers.
        noise_channels: channels of the uniform noise plane (Denton: 1).
        kernel_size: conv kernel.
        norm: "batch" (default), "instance", "group" or None.
        residual_scale: multiplier of the tanh residual.

    Shapes:
        ``forward(z (B, noise_channels, S, S), condition (B, out_channels, S, S)) -> (B, out_channels, S, S)``.
    """

    def __init__(
        self,
        out_channels: int = 3,
        image_size: int = 64,
        channels: Sequence[int] = (64, 64, 64),
        noise_channels: int = 1,
        kernel_size: int = 3,
        norm: str | tuple | None = "batch",
        residual_scale: float = 1.0,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = int(out_channels)
        self.image_size = int(image_size)
        self.noise_channels = int(noise_channels)
        #: the class name for error messages (TorchScript cannot evaluate ``type(self).__name__`` in ``forward``)
        self.net_name = type(self).__name__
        self.num_classes = 0
        self.residual_scale = float(residual_scale)
        padding = (kernel_size - 1) // 2
        layers = []
        prev = self.out_channels + self.noise_channels
        for ch in channels:
            layers.append(
                Convolution(2, prev, int(ch), kernel_size=kernel_size, padding=padding, adn_ordering="NA",
                            act="relu", norm=resolve_norm(norm, int(ch)), bias=resolve_norm(norm, int(ch)) is None)
            )  # fmt: skip
            prev = int(ch)
        layers.append(
            Convolution(2, prev, self.out_channels, kernel_size=kernel_size, padding=padding, act="tanh", norm=None,
                        bias=True, adn_ordering="NA")
        )  # fmt: skip
        self.net = nn.Sequential(*layers)
        if init_weights:
            self.apply(weights_init_dcgan)

    def sample_latent(
        self, batch_size: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A uniform noise plane ``(batch_size, noise_channels, S, S)`` in [-1, 1] (as Denton et al.)."""
        if device is None:
            device = next(self.parameters()).device
        draw_device = generator.device if generator is not None else device
        shape = (batch_size, self.noise_channels, self.image_size, self.image_size)
        return (2.0 * torch.rand(shape, generator=generator, device=draw_device) - 1.0).to(device)

    def noise_plane(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """``sample_latent(batch_size, device)`` from torch's global RNG (the same draw), in a form TorchScript
        compiles: what ``LAPGANGenerator.forward`` feeds each stage."""
        shape = [batch_size, self.noise_channels, self.image_size, self.image_size]
        return 2.0 * torch.rand(shape, device=device) - 1.0

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        expected = [self.out_channels, self.image_size, self.image_size]
        if condition.dim() != 4 or list(condition.shape[1:]) != expected:
            raise ValueError(
                f"{self.net_name}: condition must be (B, {self.out_channels}, {self.image_size}, "
                f"{self.image_size}), got {list(condition.shape)}."
            )
        residual = self.net(torch.cat([condition, z.to(condition.dtype)], dim=1))
        return condition + self.residual_scale * residual


class LAPGANGenerator(nn.Module):
    """The composed LAPGAN: a DCGAN for the coarsest level, then one ``LaplacianStageGenerator`` per finer level.

    ``forward(z)`` runs the whole pyramid: ``x_0 = base(z)``, ``x_k = stage_k(noise_k, upsample(x_{k-1}))``. The
    stages' noise planes are drawn from torch's global RNG (seed it for reproducible samples): only the base latent
    is an input, so the composed generator plugs into everything that samples an unconditional generator.

    Args:
        latent_dim: length of the base DCGAN's z.
        out_channels: image channels.
        image_size: side of the finest level; divisible by ``2 ** (levels - 1)``, and the coarsest side
            ``image_size / 2 ** (levels - 1)`` by ``2 ** len(base_channels)``.
        levels: pyramid levels (1 = a plain DCGAN).
        base_channels / kernel_size: the base DCGAN generator's channels and kernel.
        stage_channels: hidden widths of each stage generator.
        noise_channels, residual_scale: of the stage generators.
        norm: normalisation of all generators.

    Shapes: ``forward(z (B, latent_dim)) -> (B, out_channels, image_size, image_size)``; ``forward_pyramid(z)``
    returns every level, coarsest first.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        out_channels: int = 3,
        image_size: int = 64,
        levels: int = 3,
        base_channels: Sequence[int] = (256, 128, 64),
        kernel_size: int = 5,
        stage_channels: Sequence[int] = (64, 64, 64),
        noise_channels: int = 1,
        residual_scale: float = 1.0,
        norm: str | tuple | None = "batch",
    ) -> None:
        super().__init__()
        self.sizes = _level_sizes(int(image_size), int(levels), type(self).__name__)
        self.levels = int(levels)
        self.latent_dim = int(latent_dim)
        self.out_channels = int(out_channels)
        self.image_size = (int(image_size), int(image_size))
        self.num_classes = 0
        self.base = DCGANGenerator(
            latent_dim, out_channels, self.sizes[0], base_channels, kernel_size=kernel_size, norm=norm
        )
        self.stages = nn.ModuleList(
            LaplacianStageGenerator(out_channels, s, stage_channels, noise_channels, 3, norm, residual_scale)
            for s in self.sizes[1:]
        )

    def level_module(self, level: int) -> nn.Module:
        """The network that makes pyramid level ``level`` (0 = the base DCGAN)."""
        return self.base if level == 0 else self.stages[level - 1]

    def sample_latent(self, batch_size: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.base.sample_latent(batch_size, device=device, generator=generator)

    def forward_pyramid(self, z: torch.Tensor) -> list[torch.Tensor]:
        images = [self.base(z)]
        for stage in self.stages:
            condition = upsample(images[-1])
            images.append(stage(stage.noise_plane(z.shape[0], z.device), condition))
        return images

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(z)[-1]


class PyramidGenerator(nn.Module):
    """DDGAN-like generator: one DCGAN trunk that emits a Laplacian pyramid, trained end to end.

    Layout: z -> dense -> ``(channels[0], start)`` -> ``len(channels)`` stride-2 transposed-conv blocks (as
    ``DCGANGenerator``; the last block ends with ``channels[-1]`` maps at the full size). The last ``levels``
    blocks each feed a 1 x 1 "to-image" head: the first of them gives the coarsest image (tanh), every finer one a
    residual (tanh) that is added to the 2x-upsampled coarser image, as in LAPGAN's composition. Every level is
    returned by ``forward_pyramid`` so that a discriminator per level (``MultiScaleDiscriminator``) can judge it.

    Args:
        latent_dim, out_channels, image_size, kernel_size, norm: as ``DCGANGenerator``.
        channels: feature maps of the blocks; ``image_size`` must be a multiple of ``2 ** len(channels)``.
        levels: pyramid levels (<= ``len(channels)``).

    Shapes: ``forward(z (B, latent_dim)) -> (B, out_channels, image_size, image_size)`` (the finest level).
    """

    def __init__(
        self,
        latent_dim: int = 100,
        out_channels: int = 3,
        image_size: int = 64,
        channels: Sequence[int] = (512, 256, 128, 64),
        levels: int = 3,
        kernel_size: int = 5,
        norm: str | tuple | None = "batch",
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        n = len(channels)
        if not 1 <= levels <= n:
            raise ValueError(f"PyramidGenerator: levels must be in 1..len(channels)={n}, got {levels}.")
        if image_size % 2**n or image_size < 2**n:
            raise ValueError(f"PyramidGenerator: image_size {image_size} must be a multiple of 2 ** {n}.")
        self.latent_dim = int(latent_dim)
        self.out_channels = int(out_channels)
        self.levels = int(levels)
        self.num_classes = 0
        self.image_size = (int(image_size), int(image_size))
        self.sizes = _level_sizes(int(image_size), self.levels, type(self).__name__)
        self.start = image_size // 2**n
        no_norm = resolve_norm(norm, channels[0]) is None
        self.project = nn.Linear(self.latent_dim, channels[0] * self.start**2, bias=no_norm)
        self.project_norm = ADN(
            ordering="NA", in_channels=channels[0], act="relu", norm=resolve_norm(norm, channels[0]), norm_dim=2
        )
        padding, output_padding = stride2_padding(kernel_size)
        outs = (*channels[1:], channels[-1])
        self.blocks = nn.ModuleList(
            Convolution(2, c_in, c_out, strides=2, kernel_size=kernel_size, is_transposed=True, padding=padding,
                        output_padding=output_padding, adn_ordering="NA", act="relu",
                        norm=resolve_norm(norm, c_out), bias=resolve_norm(norm, c_out) is None)
            for c_in, c_out in zip(channels, outs, strict=True)
        )  # fmt: skip
        self.heads = nn.ModuleList(nn.Conv2d(outs[i], self.out_channels, kernel_size=1) for i in range(n - levels, n))
        self.apply(weights_init_dcgan)

    def sample_latent(self, batch_size: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ U[-1, 1]^latent_dim, as the DCGAN."""
        if device is None:
            device = next(self.parameters()).device
        draw_device = generator.device if generator is not None else device
        z = torch.rand(batch_size, self.latent_dim, generator=generator, device=draw_device)
        return (2.0 * z - 1.0).to(device)

    def forward_pyramid(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``z`` -> ``levels`` images, coarsest first, the last at ``image_size``."""
        z = z.reshape(z.shape[0], -1)
        x = self.project_norm(self.project(z).reshape(z.shape[0], -1, self.start, self.start))
        features: list[torch.Tensor] = []  # of the last ``levels`` blocks, which feed the heads
        first_head = len(self.blocks) - self.levels
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= first_head:
                features.append(x)
        images: list[torch.Tensor] = []
        for j, head in enumerate(self.heads):  # (TorchScript indexes a ModuleList by literals only)
            out = torch.tanh(head(features[j]))
            images.append(out if len(images) == 0 else upsample(images[-1]) + out)
        return images

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(z)[-1]


class MultiScaleDiscriminator(nn.Module):
    """One ``DCGANDiscriminator`` per pyramid level (the DDGAN-like variant's "deep" discrimination).

    ``forward(x)`` judges a full-size image at every level of its Gaussian pyramid (real images);
    ``forward_pyramid(images)`` judges a given pyramid (the generator's own levels). Both return logits ``(B, L)``.

    Args:
        in_channels, image_size, kernel_size, norm: as ``DCGANDiscriminator`` (image_size = the finest level).
        levels: pyramid levels.
        channels: conv widths of the finest level's D; the coarser ones drop trailing stages so that each keeps
            at least a 2 x 2 map (at most ``log2(size) - 1`` stages).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 64,
        levels: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512),
        kernel_size: int = 5,
        norm: str | tuple | None = "batch",
    ) -> None:
        super().__init__()
        self.levels = int(levels)
        self.sizes = _level_sizes(int(image_size), self.levels, type(self).__name__)
        discs = []
        for size in self.sizes:
            n_stages = min(len(channels), max(1, size.bit_length() - 2))
            discs.append(DCGANDiscriminator(in_channels, size, tuple(channels)[:n_stages], kernel_size, norm=norm))
        self.discriminators = nn.ModuleList(discs)

    def forward_pyramid(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(images) != self.levels:
            raise ValueError(f"{type(self).__name__}: expected {self.levels} levels, got {len(images)}.")
        return torch.stack([d(x) for d, x in zip(self.discriminators, images, strict=True)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(gaussian_pyramid(x, self.levels))
