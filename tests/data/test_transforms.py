"""The ROI classification transform chain: load, window, plain float tensor (augmentation: see test_augment.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.io import write_image
from common.data.transforms import roi_classification_transforms


@pytest.fixture
def ct_roi(tmp_path):
    array = np.full((1, 32, 32), 60.0)
    array[0, 10:20, 12:18] = -500.0
    array[0, 0, 0] = 1000.0
    return write_image(tmp_path / "roi.nii.gz", array)


def test_load_and_window(ct_roi):
    out = roi_classification_transforms(a_min=-100, a_max=250)({"image": ct_roi, "label": 1})
    image = out["image"]
    assert type(image) is torch.Tensor, "plain tensor: no MetaTensor dispatch cost in the engines"
    assert image.dtype == torch.float32 and image.shape == (1, 32, 32)
    assert image.min() == -1.0 and image.max() == 1.0  # clipped at both ends
    assert image[0, 5, 5].item() == pytest.approx((60 + 100) / 350 * 2 - 1)
    assert out["label"] == 1
