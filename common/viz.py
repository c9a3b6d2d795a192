"""Image grids as PNG: sample grids during training, side-by-side figures in reports. No matplotlib needed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_display(images: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(N, C, X, Y[, Z]) -> uint8 (N, Y, X, 3); 3-D volumes show their middle slice, 1 or 2 channels become gray.

    MONAI's readers put image x (columns) on the first spatial axis, so the two in-plane axes are swapped for
    display: a PNG shows as it was saved. Images with more than 3 channels (e.g. several MRI sequences) show their
    first channel; callers that want every channel side by side split them first.
    """
    arr = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    if arr.ndim == 5:
        arr = arr[..., arr.shape[-1] // 2]
    if arr.ndim != 4:
        raise ValueError(f"expected (N, C, H, W[, D]) images, got shape {arr.shape}")
    lo, hi = value_range
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    arr = arr[:, :3] if arr.shape[1] >= 3 else np.repeat(arr[:, :1], 3, axis=1)
    return (arr.transpose(0, 3, 2, 1) * 255.0 + 0.5).astype(np.uint8)


def image_grid(images: torch.Tensor | np.ndarray, nrow: int = 8, pad: int = 2, value_range=(-1.0, 1.0)) -> np.ndarray:
    """Tile ``images`` row-major into one uint8 RGB array with ``nrow`` images per row and a white gap."""
    tiles = to_display(images, value_range)
    n, h, w, _ = tiles.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = tile
    return grid


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> str:
    """Write a uint8 (H, W, 3) array atomically as PNG and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Image.fromarray(rgb).save(tmp, format="PNG")
    os.replace(tmp, path)
    return str(path)
