"""DCGAN and ACGAN generator / discriminator of Frid-Adar et al. 2018 (arXiv 1803.01229), generalised.

Paper (liver lesion ROIs, 64 x 64 x 1):

- G: z in U[-1, 1]^100 -> dense to 4 x 4 x 1024 -> four 5 x 5 stride-2 transposed convolutions
  (1024 -> 512 -> 256 -> 128 -> 1) -> 64 x 64; BatchNorm + ReLU after every layer but the output, tanh output.
- D: four 5 x 5 stride-2 convolutions (1 -> 64 -> 128 -> 256 -> 512), LeakyReLU 0.2, BatchNorm after all but
  the first, dense -> 1 with sigmoid (here: a logit, see ``DCGANDiscriminator``).
- ACGAN: the same G fed with the class label; D with 3 x 3 kernels, dropout 0.5 and an auxiliary class head
  (3 lesion classes: cyst, metastasis, hemangioma).

Generalised for the later bundles: any ``image_size`` divisible by ``2 ** len(channels)`` (also non-square, e.g.
spine radiographs), 1-3 spatial dimensions, any channel count (RGB dermoscopy), any kernel size, and a choice
of normalisation (GroupNorm / none for DP-SGD, where BatchNorm is not allowed).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
import torch.nn as nn
from monai.networks.blocks import ADN, Convolution
from monai.utils import ensure_tuple_rep

from common.networks.init import resolve_norm, weights_init_dcgan

__all__ = [
    "ACGANDiscriminator",
    "ACGANGenerator",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "stride2_padding",
]


def stride2_padding(kernel_size: int) -> tuple[int, int]:
    """``(padding, output_padding)`` that make a stride-2 (transposed) convolution exactly halve (double) a size.

    A stride-2 convolution with padding ``p = (k - 1) // 2`` maps an even size n to n / 2 for every k. The
    transposed convolution maps n to ``2 (n - 1) - 2 p + k + op``; ``op = 2 p - k + 2`` (1 for odd k, 0 for even k,
    always below the stride as PyTorch requires) makes that exactly 2 n. For the paper's k = 5: (2, 1).
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}.")
    padding = (kernel_size - 1) // 2
    return padding, 2 * padding - kernel_size + 2


def _start_shape(image_size: int | Sequence[int], spatial_dims: int, n_stages: int, name: str) -> tuple[int, ...]:
    """``image_size / 2 ** n_stages`` per spatial dimension, with a clear error where it does not divide."""
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"{name}: spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
    if n_stages < 1:
        raise ValueError(f"{name}: channels must name at least one stage.")
    size = ensure_tuple_rep(image_size, spatial_dims)
    factor = 2**n_stages
    if any(s < factor or s % factor for s in size):
        raise ValueError(
            f"{name}: image_size {tuple(size)} must be a positive multiple of 2 ** len(channels) = {factor} in every "
            f"dimension ({n_stages} stride-2 stages); change image_size or the number of channels."
        )
    return tuple(s // factor for s in size)


def _check_instance_norm(norm: str | tuple | None, shape: Sequence[int], name: str) -> None:
    """InstanceNorm over a single spatial element is undefined (PyTorch raises in training): say so up front."""
    norm_name = norm[0] if isinstance(norm, tuple) else norm
    if isinstance(norm_name, str) and norm_name.lower() == "instance" and prod(shape) == 1:
        raise ValueError(
            f"{name}: InstanceNorm on a {tuple(shape)} feature map normalises a single value; "
            "use a larger image_size, fewer channels (stages), or norm='group'/'batch'."
        )


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2016) as used by Frid-Adar et al. 2018, optionally class-conditional.

    Layout: ``z (B, latent_dim)`` -> dense -> reshape to ``(B, channels[0], *start)`` with
    ``start = image_size / 2 ** len(channels)`` -> norm + ReLU -> ``len(channels) - 1`` blocks of
    [stride-2 transposed conv ``channels[i] -> channels[i + 1]`` + norm + ReLU] -> stride-2 transposed conv
    ``channels[-1] -> out_channels`` + tanh (no norm on the output, as in the paper). Every transposed convolution
    exactly doubles the size (see ``stride2_padding``).

    Conditioning (``num_classes > 0``): a learned embedding ``(num_classes, latent_dim)`` is multiplied element-wise
    with z before the dense layer, as in the widely used Keras ACGAN example (the paper does not say how its ACGAN
    G takes the label). Multiplying rather than concatenating keeps the dense layer's input at ``latent_dim``, so
    the conditional and unconditional nets differ only by the embedding and every input unit carries both noise
    and class. The embedding keeps PyTorch's N(0, 1) init, so ``z * embedding`` stays at the scale of z.

    Args:
        latent_dim: length of z (paper: 100).
        out_channels: image channels (1 for CT / X-ray, 3 for dermoscopy).
        image_size: output spatial size, an int (square / cubic) or one per dimension; each must be a multiple of
            ``2 ** len(channels)``.
        channels: feature maps before each of the ``len(channels)`` upsamplings (paper: 1024, 512, 256, 128).
        kernel_size: transposed-convolution kernel (paper: 5).
        num_classes: 0 for an unconditional G; otherwise the number of classes of the ``labels`` input.
        spatial_dims: 2 for images, 3 for volumes (1 works too).
        norm: "batch" (paper), "instance", "group", None, or a MONAI ``(name, kwargs)`` tuple.
        init_weights: apply ``weights_init_dcgan`` (N(0, 0.02) weights) after construction.

    Shapes:
        ``forward(z (B, latent_dim) float[, labels (B,) long]) -> (B, out_channels, *image_size)`` in [-1, 1].
        z may also come as ``(B, latent_dim, 1, 1)`` (PyTorch's DCGAN example); it is flattened.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        out_channels: int = 1,
        image_size: int | Sequence[int] = 64,
        channels: Sequence[int] = (1024, 512, 256, 128),
        kernel_size: int = 5,
        num_classes: int = 0,
        spatial_dims: int = 2,
        norm: str | tuple | None = "batch",
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.out_channels = int(out_channels)
        self.spatial_dims = int(spatial_dims)
        #: the class name for error messages (TorchScript cannot evaluate ``type(self).__name__`` in ``forward``)
        self.net_name = type(self).__name__
        self.start_shape = _start_shape(image_size, self.spatial_dims, len(channels), type(self).__name__)
        self.image_size = tuple(s * 2 ** len(channels) for s in self.start_shape)
        self._start_size = list(self.start_shape)  # a list, for ``reshape`` in TorchScript
        _check_instance_norm(norm, self.start_shape, type(self).__name__)
        if self.latent_dim < 1 or self.num_classes < 0:
            raise ValueError(f"latent_dim must be >= 1 and num_classes >= 0, got {latent_dim}, {num_classes}.")

        self.label_embedding = nn.Embedding(self.num_classes, self.latent_dim) if self.num_classes > 0 else None
        # A norm right after a layer subtracts its mean, so a bias there is a wasted parameter (as in PyTorch's DCGAN).
        no_norm = resolve_norm(norm, channels[0]) is None
        self.project = nn.Linear(self.latent_dim, channels[0] * prod(self.start_shape), bias=no_norm)
        self.project_adn = ADN(
            ordering="NA", in_channels=channels[0], act="relu", norm=resolve_norm(norm, channels[0]),
            norm_dim=self.spatial_dims,
        )  # fmt: skip
        padding, output_padding = stride2_padding(kernel_size)

        def up(c_in: int, c_out: int, last: bool) -> Convolution:
            return Convolution(
                self.spatial_dims, c_in, c_out, strides=2, kernel_size=kernel_size, is_transposed=True,
                padding=padding, output_padding=output_padding, adn_ordering="NA",
                act="tanh" if last else "relu", norm=None if last else resolve_norm(norm, c_out),
                bias=last or no_norm,
            )  # fmt: skip

        self.blocks = nn.Sequential(*(up(channels[i], channels[i + 1], False) for i in range(len(channels) - 1)))
        self.to_image = up(channels[-1], self.out_channels, True)
        if init_weights:
            self.apply(weights_init_dcgan)

    def sample_latent(
        self, batch_size: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw z ~ U[-1, 1]^latent_dim as in the paper: ``(batch_size, latent_dim)`` float32.

        Draws on ``generator``'s device (so a seeded ``torch.Generator`` gives the same z on any target device),
        then moves to ``device`` (default: where this network's parameters are).
        """
        if device is None:
            device = next(self.parameters()).device
        draw_device = generator.device if generator is not None else device
        z = torch.rand(batch_size, self.latent_dim, generator=generator, device=draw_device)
        return (2.0 * z - 1.0).to(device)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``z (B, latent_dim)`` [+ ``labels (B,)`` long] -> images ``(B, out_channels, *image_size)`` in [-1, 1]."""
        z = z.reshape(z.shape[0], -1)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"{self.net_name}: z must be (B, {self.latent_dim}), got {list(z.shape)}.")
        label_embedding = self.label_embedding
        if label_embedding is not None:
            if labels is None:
                raise ValueError(f"{self.net_name}: conditional (num_classes={self.num_classes}) needs labels.")
            labels = labels.reshape(-1).long()
            if labels.shape[0] != z.shape[0]:
                raise ValueError(f"{self.net_name}: {labels.shape[0]} labels for a batch of {z.shape[0]} z.")
            z = z * label_embedding(labels)
        elif labels is not None:
            raise ValueError(f"{self.net_name}: unconditional (num_classes=0) but labels were given.")
        x = self.project(z).reshape([z.shape[0], -1] + self._start_size)
        return self.to_image(self.blocks(self.project_adn(x)))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator of Frid-Adar et al. 2018, with the optional ACGAN auxiliary class head.

    Layout: ``len(channels)`` blocks of [stride-2 conv + norm + LeakyReLU(0.2) + dropout], with no norm after the
    first conv (as in the paper and DCGAN: normalising the raw image input destabilises training) -> flatten ->
    dense -> 1 logit (and, when ``num_classes > 0``, a parallel dense -> ``num_classes`` class logits).

    The paper's D ends in a sigmoid; this one returns the logit before it. ``BCEWithLogitsLoss(logit, y)`` equals
    ``BCELoss(sigmoid(logit), y)`` mathematically but uses the log-sum-exp form, which does not saturate to
    log(0) when D is confident; apply ``torch.sigmoid`` yourself for a probability.

    Args:
        in_channels: image channels.
        image_size: input spatial size (int or one per dimension), a multiple of ``2 ** len(channels)``.
        channels: output feature maps of each stride-2 conv (paper: 64, 128, 256, 512).
        kernel_size: conv kernel (paper: 5 for DCGAN, 3 for ACGAN).
        num_classes: 0 for a plain real/fake D; otherwise the size of the auxiliary class head (ACGAN).
        dropout: dropout probability after every block (paper ACGAN: 0.5; DCGAN: 0).
        norm: "batch" (paper), "instance", "group", None (the last two for DP-SGD), or a MONAI ``(name, kwargs)``.
        spatial_dims: 2 for images, 3 for volumes (1 works too).
        init_weights: apply ``weights_init_dcgan`` after construction.

    Shapes:
        ``forward(x (B, in_channels, *image_size))`` -> ``logits (B,)`` when ``num_classes == 0``, else
        ``(logits (B,), class_logits (B, num_classes))``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 64,
        channels: Sequence[int] = (64, 128, 256, 512),
        kernel_size: int = 5,
        num_classes: int = 0,
        dropout: float = 0.0,
        norm: str | tuple | None = "batch",
        spatial_dims: int = 2,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.spatial_dims = int(spatial_dims)
        self.end_shape = _start_shape(image_size, self.spatial_dims, len(channels), type(self).__name__)
        self.image_size = tuple(s * 2 ** len(channels) for s in self.end_shape)
        _check_instance_norm(norm, self.end_shape, type(self).__name__)
        if self.num_classes < 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"num_classes must be >= 0 and 0 <= dropout < 1, got {num_classes}, {dropout}.")
        padding, _ = stride2_padding(kernel_size)

        blocks = []
        for i, (c_in, c_out) in enumerate(zip((self.in_channels, *channels[:-1]), channels, strict=True)):
            layer_norm = None if i == 0 else resolve_norm(norm, c_out)
            blocks.append(
                Convolution(
                    self.spatial_dims,
                    c_in,
                    c_out,
                    strides=2,
                    kernel_size=kernel_size,
                    padding=padding,
                    adn_ordering="NAD",
                    act=("leakyrelu", {"negative_slope": 0.2}),
                    norm=layer_norm,
                    dropout=dropout or None,
                    bias=layer_norm is None,
                )  # fmt: skip
            )
        self.blocks = nn.Sequential(*blocks)
        self.flatten = nn.Flatten()
        n_features = channels[-1] * prod(self.end_shape)
        self.adv_head = nn.Linear(n_features, 1)
        self.class_head = nn.Linear(n_features, self.num_classes) if self.num_classes > 0 else None
        if init_weights:
            self.apply(weights_init_dcgan)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in_channels, *image_size)`` -> flattened last conv features ``(B, channels[-1] * prod(end))``."""
        return self.flatten(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``logits (B,)``, or ``(logits (B,), class_logits (B, num_classes))`` when conditional."""
        h = self.forward_features(x)
        logits = self.adv_head(h).squeeze(1)
        if self.class_head is None:
            return logits
        return logits, self.class_head(h)


class ACGANGenerator(DCGANGenerator):
    """``DCGANGenerator`` with the paper's ACGAN default: conditional on the 3 lesion classes.

    The paper's ACGAN G is the DCGAN G fed with the class label; the arguments are those of ``DCGANGenerator``.
    ``forward(z (B, latent_dim), labels (B,) long) -> (B, out_channels, *image_size)`` in [-1, 1].
    """

    def __init__(
        self,
        latent_dim: int = 100,
        out_channels: int = 1,
        image_size: int | Sequence[int] = 64,
        channels: Sequence[int] = (1024, 512, 256, 128),
        kernel_size: int = 5,
        num_classes: int = 3,
        spatial_dims: int = 2,
        norm: str | tuple | None = "batch",
        init_weights: bool = True,
    ) -> None:
        super().__init__(
            latent_dim, out_channels, image_size, channels, kernel_size, num_classes, spatial_dims, norm, init_weights
        )


class ACGANDiscriminator(DCGANDiscriminator):
    """``DCGANDiscriminator`` with the paper's ACGAN defaults: 3 x 3 kernels, dropout 0.5, 3-class auxiliary head.

    ``forward(x) -> (logits (B,), class_logits (B, num_classes))``; the arguments are those of ``DCGANDiscriminator``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 64,
        channels: Sequence[int] = (64, 128, 256, 512),
        kernel_size: int = 3,
        num_classes: int = 3,
        dropout: float = 0.5,
        norm: str | tuple | None = "batch",
        spatial_dims: int = 2,
        init_weights: bool = True,
    ) -> None:
        super().__init__(
            in_channels, image_size, channels, kernel_size, num_classes, dropout, norm, spatial_dims, init_weights
        )
