"""Channels-last memory format for networks and batches.

On CPU, PyTorch's (transposed) convolutions run up to 30x faster in channels-last than in the default layout
(measured here: DCGAN generator step 694 ms -> 21 ms at batch 32, 64 px); on GPU it is what tensor cores want.
"""

from __future__ import annotations

import torch
from torch import nn


def _format_for(ndim: int) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


def plain_tensor(x) -> torch.Tensor:
    """A plain ``torch.Tensor`` (MONAI ``MetaTensor`` metadata dropped): with torch 2.13 every op on a MetaTensor pays
    ~0.5 ms of ``__torch_function__`` dispatch, which made a whole GAN step several times slower (measured)."""
    x = torch.as_tensor(x)
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


def to_channels_last(x: nn.Module | torch.Tensor):
    """Return ``x`` in channels-last (2-D) or channels-last-3d (3-D); other tensors and modules are unchanged."""
    if isinstance(x, torch.Tensor):
        fmt = _format_for(x.dim())
        return x.contiguous(memory_format=fmt) if fmt is not None else x
    ranks = {p.dim() for p in x.parameters()} & {4, 5}
    if len(ranks) == 1:  # a network mixing 2-D and 3-D convolutions stays as it is
        x.to(memory_format=_format_for(ranks.pop()))
    return x
