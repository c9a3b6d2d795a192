"""Weight initialisation and normalisation choices shared by the GAN networks."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["NORM_CHOICES", "group_count", "resolve_norm", "weights_init_dcgan"]

# The normalisations a GAN block may use. "group" and None exist for DP-SGD (Opacus cannot compute per-sample
# gradients through BatchNorm, which couples the samples of a batch); "instance" for the usual GAN ablations.
NORM_CHOICES = ("batch", "instance", "group", None)

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)


def weights_init_dcgan(module: nn.Module) -> None:
    """Initialise one module as Radford et al. 2016 (DCGAN) prescribe; use as ``net.apply(weights_init_dcgan)``.

    Convolutions, transposed convolutions and dense layers: weight ~ N(0, 0.02), bias 0. Affine normalisation layers
    (BatchNorm, InstanceNorm with ``affine=True``, GroupNorm): weight ~ N(1, 0.02), bias 0. Anything else (e.g. the
    label embedding, whose N(0, 1) default keeps ``z * embedding`` at the scale of ``z``) is left as it is.
    The function is not recursive on purpose, so that ``Module.apply`` visits every sub-module exactly once.
    """
    if isinstance(module, _CONV_TYPES):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, _NORM_TYPES) and getattr(module, "weight", None) is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def group_count(channels: int, max_groups: int = 32) -> int:
    """The largest divisor of ``channels`` not above ``max_groups`` (Wu & He 2018 use 32 groups).

    E.g. 64 -> 32, 48 -> 24, 3 -> 3, 1 -> 1: GroupNorm needs a divisor, and more groups (up to 32) normalise
    more locally, which is what GroupNorm in place of BatchNorm is for.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}.")
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


def resolve_norm(norm: str | tuple | None, channels: int) -> tuple | None:
    """Turn a user-facing norm name into a MONAI ``Norm`` factory spec for a layer of ``channels`` feature maps.

    Args:
        norm: "batch", "instance" (affine, so that it has the same learnable scale and shift as BatchNorm),
            "group" (``group_count(channels)`` groups), None (no normalisation), or a MONAI tuple
            ``(name, kwargs)`` that is passed through unchanged.
        channels: number of feature maps the layer normalises (the group count depends on it).

    Returns:
        ``(name, kwargs)`` for ``monai.networks.layers.factories.Norm`` / ``Convolution(norm=...)``, or None.
    """
    if norm is None or isinstance(norm, tuple):
        return norm
    name = str(norm).lower()
    if name in ("", "none"):
        return None
    if name == "batch":
        return ("batch", {})
    if name == "instance":
        return ("instance", {"affine": True})
    if name == "group":
        return ("group", {"num_groups": group_count(channels)})
    raise ValueError(f"norm must be one of {NORM_CHOICES} or a MONAI (name, kwargs) tuple, got {norm!r}.")
