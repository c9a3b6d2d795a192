"""cached_dataset: repeats are cached once, extra keys do not break collation."""

from __future__ import annotations

import torch
from monai.data import DataLoader
from monai.transforms import Compose, Lambdad

from common.data.datasets import cached_dataset


def test_repeats_load_once_and_mixed_keys_collate():
    calls = []

    def load(x):
        calls.append(x)
        return torch.full((1, 2, 2), float(x))

    real = [{"image": i, "label": 0, "patient": f"p{i}"} for i in range(3)]
    synthetic = [{"image": 10 + i, "label": 1, "synthetic": True} for i in range(2)]
    ds = cached_dataset(real * 4 + synthetic, Compose([Lambdad("image", load)]))
    assert len(ds) == 14 and len(calls) == 5, "each unique item loaded once"
    batch = next(iter(DataLoader(ds, batch_size=14)))
    assert set(batch) == {"image", "label"} and batch["image"].shape == (14, 1, 2, 2)
    assert batch["label"].tolist() == [0] * 12 + [1] * 2
