"""Dice with BraTS's empty-region convention, and paired image similarity inside the brain."""

from __future__ import annotations

import numpy as np

from common.data.brain_transforms import brats_regions
from common.metrics.image_similarity import image_similarity
from common.metrics.segmentation import brats_dice, dice


def _numpy_dice(pred, truth):
    """The hand-written Dice that MONAI's compute_dice replaced, kept here as the reference."""
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * float((pred & truth).sum()) / total


def test_dice_conventions():
    a = np.zeros((8, 8), bool)
    assert dice(a, a) == 1.0, "nothing to find, nothing found"
    b = a.copy()
    b[:2] = True
    assert dice(b, a) == 0.0 and dice(b, b) == 1.0
    c = a.copy()
    c[:4] = True
    assert dice(b, c) == 2 * 16 / (16 + 32)


def test_brats_dice_uses_nested_regions():
    label = np.zeros((1, 10, 10), np.int16)
    label[0, 2:8, 2:8] = 2
    label[0, 4:6, 4:6] = 4
    pred = np.zeros((3, 10, 10), np.uint8)
    pred[1, 2:8, 2:8] = 1  # WT right, TC and ET missed
    scores = brats_dice(pred, label)
    assert scores == {"dice_tc": 0.0, "dice_wt": 1.0, "dice_et": 0.0}


def test_monai_dice_gives_the_same_numbers_as_the_hand_written_one():
    """Bit for bit, on random 2-D and 3-D masks with empty and full regions, non-binary values, and on BraTS labels."""
    rng = np.random.default_rng(0)
    for t in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 10, size=int(rng.integers(2, 4))))
        p = (rng.random(shape) < rng.random()) * int(rng.integers(1, 3))
        q = rng.random(shape) < rng.random() * (t % 3 > 0)  # every third truth empty
        assert dice(p, q) == _numpy_dice(p, q)
        label = rng.choice([0, 1, 2, 4], size=(1, *shape), p=[0.7, 0.1, 0.1, 0.1]) * (t % 4 > 0)
        pred = (rng.random((3, *shape)) < 0.2).astype(np.uint8) * (t % 5 > 0)
        truth = np.asarray(brats_regions(label))
        assert brats_dice(pred, label) == {
            f"dice_{r}": _numpy_dice(pred[i], truth[i]) for i, r in enumerate("tc wt et".split())
        }


def test_similarity_is_perfect_for_identical_images_and_ignores_the_background():
    rng = np.random.default_rng(0)
    brain = np.zeros((1, 24, 24, 6), np.int16)
    brain[0, 4:20, 4:20] = 1
    real = np.where(brain > 0, rng.uniform(-1, 1, (2, 24, 24, 6)), -1).astype(np.float32)
    same = image_similarity(real, real, brain, ["t1", "flair"])
    assert same["t1"]["mae"] == 0 and same["t1"]["ssim"] > 0.999 and same["t1"]["psnr"] > 100
    noisy = real + 0.2 * rng.standard_normal(real.shape).astype(np.float32) * (brain > 0)
    worse = image_similarity(noisy, real, brain, ["t1", "flair"])
    assert 0.1 < worse["flair"]["mae"] < 0.3 and worse["flair"]["ssim"] < 0.95 and worse["flair"]["psnr"] < 30
    outside = real.copy()
    outside[:, brain[0] == 0] = 1.0  # differences outside the brain do not count
    assert image_similarity(outside, real, brain, ["t1", "flair"])["t1"]["mae"] == 0
