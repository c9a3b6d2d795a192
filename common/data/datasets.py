"""Datasets over datalist items that load each file once, even when items repeat."""

from __future__ import annotations

from collections.abc import Sequence

from monai.data import CacheDataset
from monai.transforms import Compose
from torch.utils.data import Dataset, Subset


def cached_dataset(items: Sequence[dict], transforms: Compose, num_workers: int = 0) -> Dataset:
    """A ``CacheDataset`` over ``items`` in which repeated items (the same dict object, e.g. ``items * 30`` to show
    each real image 30 times per epoch under random augmentation) are loaded and cached once.

    The random transforms after the cache still run on every access, so every repeat is augmented differently.
    """
    unique: dict[int, int] = {}
    index = []
    for item in items:
        index.append(unique.setdefault(id(item), len(unique)))
    first = {}
    for item in items:
        first.setdefault(id(item), item)
    base = CacheDataset(list(first.values()), transforms, progress=False, num_workers=num_workers)
    return base if len(unique) == len(items) else Subset(base, index)
