"""The ROI classification transform chain and the classic augmentation (MONAI transforms only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.io import write_image
from common.data.transforms import classic_augmentation, roi_classification_transforms


@pytest.fixture
def ct_roi(tmp_path):
    array = np.full((1, 32, 32), 60.0)
    array[0, 10:20, 12:18] = -500.0  # an asymmetric blob, so that flips and rotations change the image
    array[0, 0, 0] = 1000.0
    return write_image(tmp_path / "roi.nii.gz", array)


def test_load_and_window(ct_roi):
    out = roi_classification_transforms(32, a_min=-100, a_max=250)({"image": ct_roi, "label": 1})
    image = out["image"]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.shape == (1, 32, 32)
    assert image.min() == -1.0 and image.max() == 1.0  # clipped at both ends
    assert image[0, 5, 5].item() == pytest.approx((60 + 100) / 350 * 2 - 1)
    assert out["label"] == 1


def test_augmentation_changes_the_image_and_is_seedable(ct_roi):
    chain = roi_classification_transforms(32, a_min=-100, a_max=250, augment=True)
    plain = roi_classification_transforms(32, a_min=-100, a_max=250)({"image": ct_roi})["image"]
    chain.set_random_state(seed=0)
    a = chain({"image": ct_roi})["image"]
    chain.set_random_state(seed=0)
    b = chain({"image": ct_roi})["image"]
    assert a.shape == plain.shape and torch.equal(a, b)
    assert not torch.allclose(a, plain)
    assert a.min() >= -1.0 - 1e-5 and a.max() <= 1.0 + 1e-5


def test_classic_augmentation_parts():
    aug = classic_augmentation(image_size=32, rotate_degrees=90, scale_range=(0.8, 1.2))
    affine = aug.transforms[0]
    assert affine.rand_affine.rand_affine_grid.rotate_range == (pytest.approx(np.pi / 2),)
    assert affine.rand_affine.rand_affine_grid.translate_range == (pytest.approx(3.2), pytest.approx(3.2))
    assert affine.rand_affine.rand_affine_grid.scale_range == ((pytest.approx(-0.2), pytest.approx(0.2)),) * 2
    assert [t.flipper.spatial_axis for t in aug.transforms[1:]] == [0, 1]
    assert len(classic_augmentation(image_size=32, flip=False).transforms) == 1
    with pytest.raises(ValueError, match="image_size is needed"):
        classic_augmentation()
    assert len(classic_augmentation(image_size=(16, 16, 16), spatial_dims=3).transforms) == 4
