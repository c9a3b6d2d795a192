"""Datasets over datalist items that load each file once, even when items repeat."""

from __future__ import annotations

from collections.abc import Sequence

from monai.data import CacheDataset
from monai.transforms import Compose
from torch.utils.data import Dataset, Subset


def cached_dataset(
    items: Sequence[dict], transforms: Compose, keys: Sequence[str] | None = ("image", "label"), num_workers: int = 0
) -> Dataset:
    """A ``CacheDataset`` over ``items`` in which repeated items (the same dict object, e.g. ``items * 30`` to show
    each real image 30 times per epoch under random augmentation) are loaded and cached once.

    The random transforms after the cache still run on every access, so every repeat is augmented differently.
    Only ``keys`` are kept (None keeps all): items from different sources (real, synthetic, another reader) carry
    different extra keys, and a batch can only be collated from items with the same keys.
    """
    unique: dict[int, int] = {}
    index = []
    for item in items:
        index.append(unique.setdefault(id(item), len(unique)))
    first = {}
    for item in items:
        first.setdefault(id(item), item)
    data = [{k: v for k, v in it.items() if keys is None or k in keys} for it in first.values()]
    base = CacheDataset(data, transforms, progress=False, num_workers=num_workers)
    return base if len(unique) == len(items) else Subset(base, index)
