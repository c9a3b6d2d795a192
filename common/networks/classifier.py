"""The classification CNN of Frid-Adar et al. 2018 (liver lesion ROIs), the downstream model of the augmentation
protocol; the bundles train it on CT ROIs, radiographs and dermoscopy images alike."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.utils import ensure_tuple_rep

__all__ = ["FridAdarCNN", "LesionClassifier"]


class FridAdarCNN(nn.Module):
    """Frid-Adar et al. 2018 CNN: 3 x [conv + ReLU + 2 x 2 max-pool] -> dense(hidden) + ReLU -> dropout -> dense.

    Paper: 64 x 64 x 1 ROIs, 5 x 5 convolutions with 32, 64, 128 filters ("same" padding, so that only the pools
    shrink the map), dense 256, dropout 0.5, 3 classes (cyst, metastasis, hemangioma). Returns logits; the
    softmax lives in the loss (``CrossEntropyLoss``) or in post-processing (``Activations(softmax=True)``).

    Constructed from JSON-able arguments only and ``forward(x)`` takes only the image, so a bundle can name it as
    ``network_def`` and MONAI Label can load it.

    ``forward_features`` returns the penultimate activations (after the hidden dense layer's ReLU, before dropout),
    the feature extractor of the synthesis-quality audit. The same tensor is the output of the sub-module named by
    ``feature_layer``, for hook-based extraction (e.g. ``monai.visualize`` or a forward hook).

    Args:
        in_channels: image channels.
        num_classes: number of classes (output logits).
        image_size: input spatial size (int or one per dimension), a multiple of ``2 ** len(channels)``.
        channels: filters of each conv stage (one 2 x 2 max-pool per stage).
        kernel_size: conv kernel.
        hidden: width of the penultimate dense layer.
        dropout: dropout probability before the output layer.
        spatial_dims: 2 for images, 3 for volumes (1 works too).

    Shapes:
        ``forward(x (B, in_channels, *image_size)) -> (B, num_classes)``;
        ``forward_features(x) -> (B, hidden)``.
    """

    feature_layer: str = "embedding"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        image_size: int | Sequence[int] = 64,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 5,
        hidden: int = 256,
        dropout: float = 0.5,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if spatial_dims not in (1, 2, 3) or not channels:
            raise ValueError(f"FridAdarCNN: spatial_dims must be 1-3 and channels non-empty, got {spatial_dims}.")
        size = ensure_tuple_rep(image_size, spatial_dims)
        factor = 2 ** len(channels)
        if any(s < factor or s % factor for s in size):
            raise ValueError(
                f"FridAdarCNN: image_size {tuple(size)} must be a positive multiple of 2 ** len(channels) = "
                f"{factor} (one 2 x 2 max-pool per stage); change image_size or the number of channels."
            )
        self.num_classes = int(num_classes)
        self.hidden = int(hidden)

        pool = Pool[Pool.MAX, spatial_dims]
        stages: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *channels[:-1]), channels, strict=True):
            # Explicit (k - 1) // 2 padding: "same" for odd kernels and no error for even ones.
            stages += [
                Convolution(spatial_dims, c_in, c_out, kernel_size=kernel_size, padding=(kernel_size - 1) // 2,
                            act="relu", norm=None),
                pool(kernel_size=2, stride=2),
            ]  # fmt: skip
        self.features = nn.Sequential(*stages)
        n_flat = channels[-1] * prod(s // factor for s in size)
        # Flatten + dense + ReLU in one named module, so that a hook on it yields exactly forward_features.
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, self.hidden), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.hidden, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in_channels, *image_size)`` -> penultimate activations ``(B, hidden)`` (post-ReLU, pre-dropout)."""
        return self.embedding(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in_channels, *image_size)`` -> class logits ``(B, num_classes)``."""
        return self.classifier(self.dropout(self.forward_features(x)))


# Deprecated alias (the old name): bundle configs exported before the rename name common.networks.LesionClassifier.
LesionClassifier = FridAdarCNN
