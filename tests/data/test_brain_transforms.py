"""Label-map editing and the pix2pix condition on synthetic label maps whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import Compose

from common.data.brain_transforms import (
    BrainConditiond,
    PasteTumourd,
    RandTumourAffined,
    RandTumourCompositiond,
    SelectSliced,
    brain_condition,
    brats_regions,
    condition_channels,
    regions_to_label,
)
from common.errors import DataError


def _case(centre=(20, 20, 8), size=(40, 40, 16)):
    grid = np.meshgrid(*(np.arange(n) for n in size), indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grid, (s / 2 for s in size), strict=True))
    brain = (r2 < 18**2)[None].astype(np.int16)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    label = np.zeros((1, *size), np.int16)
    label[0][d2 < 36] = 2
    label[0][d2 < 16] = 4
    label[0][d2 < 4] = 1
    anatomy = np.where(brain[0] > 0, 3, 0)[None].astype(np.int16)
    return {"label": label, "brain": brain, "anatomy": anatomy}


def _centroid(label):
    return np.array([ix.mean() for ix in np.nonzero(label[0] > 0)])


def test_condition_is_one_hot_inside_the_brain_with_tumour_on_top():
    d = _case()
    for use_anatomy, k in ((False, 4), (True, 6)):
        cond = brain_condition(d["label"], d["brain"], d["anatomy"] if use_anatomy else None)
        assert cond.shape == (k, 40, 40, 16) and len(condition_channels(use_anatomy)) == k
        total = cond.sum(0)
        assert np.all(total[d["brain"][0] > 0] == 1) and np.all(total[d["brain"][0] == 0] == 0)
        assert np.all(cond[-1][d["label"][0] == 4] == 1), "enhancing tumour is the last channel"
    with pytest.raises(DataError, match="use_anatomy"):
        BrainConditiond(use_anatomy=True)({"label": d["label"], "brain": d["brain"], "case_id": "x"})


def test_regions_round_trip_and_slicing():
    d = _case()
    regions = brats_regions(d["label"])
    assert regions.shape == (3, 40, 40, 16)
    assert np.all(regions[1] >= regions[0]) and np.all(regions[0] >= regions[2]), "ET in TC in WT"
    np.testing.assert_array_equal(regions_to_label(regions), d["label"])
    sliced = SelectSliced(["label", "brain"])({**d, "z": 8})
    assert sliced["label"].shape == (1, 40, 40) and np.array_equal(sliced["label"], d["label"][..., 8])


def test_affine_edit_moves_the_tumour_and_keeps_it_in_the_brain():
    d = _case()
    edit = RandTumourAffined(prob=1.0, rotate_range=0, scale_range=(1.0, 1.0), translate_range=0.3)
    edit.set_random_state(3)
    moved = edit(d)["label"]
    assert np.all(moved[d["brain"] == 0] == 0)
    assert np.linalg.norm(_centroid(moved) - _centroid(d["label"])) > 1.5, "the tumour moved"
    big = RandTumourAffined(prob=1.0, rotate_range=0, scale_range=(1.5, 1.5), translate_range=0)(d)["label"]
    assert (big > 0).sum() > 2.5 * (d["label"] > 0).sum(), "scale 1.5 in 3 axes gives ~3.4x the volume"
    assert set(np.unique(big).tolist()) == {0, 1, 2, 4}, "labels stay labels (nearest neighbour)"
    untouched = RandTumourAffined(prob=0.0)(d)["label"]
    np.testing.assert_array_equal(untouched, d["label"])


def test_paste_puts_the_donor_tumour_into_another_brain():
    recipient, donor = _case(centre=(12, 12, 8)), _case(centre=(28, 26, 8))
    out = PasteTumourd()({**recipient, "donor_label": donor["label"], "donor_brain": donor["brain"]})["label"]
    assert abs((out > 0).sum() - (donor["label"] > 0).sum()) <= 0.1 * (donor["label"] > 0).sum()
    np.testing.assert_allclose(_centroid(out), _centroid(donor["label"]), atol=1.0)
    assert out[0, 12, 12, 8] == 0, "the recipient's own tumour is gone"
    kept = PasteTumourd(keep_own=True)({**recipient, "donor_label": donor["label"]})["label"]
    assert kept[0, 12, 12, 8] == 1 and kept[0, 28, 26, 8] == 1


def test_composition_edit_keeps_the_whole_tumour_and_changes_the_shares():
    d = _case()
    edit = Compose([RandTumourCompositiond(prob=1.0, factor_range=(0.3, 3.0))])
    edit.set_random_state(0)
    shares = []
    for _ in range(3):
        out = edit(d)["label"]
        np.testing.assert_array_equal(out > 0, d["label"] > 0)
        shares.append([(out == v).sum() for v in (1, 2, 4)])
        core = out[0] == 1
        assert core.any() and _centroid(out[:, :, :, :] * (out == 1)).round().tolist() == [20.0, 20.0, 8.0]
    assert len({tuple(s) for s in shares}) > 1, "shares vary between draws"
