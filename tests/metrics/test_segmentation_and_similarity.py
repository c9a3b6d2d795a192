"""Dice with BraTS's empty-region convention, and paired image similarity inside the brain."""

from __future__ import annotations

import numpy as np

from common.metrics.image_similarity import image_similarity
from common.metrics.segmentation import brats_dice, dice


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
