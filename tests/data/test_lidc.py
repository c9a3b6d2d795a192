"""LIDC-IDRI VOIs -> 2-D ROI tasks, on the real data in ../shared/data/lidc_vois (skipped when it is absent).

The mapping counts use the whole metadata.csv (fast, no images); the ROI extraction runs on a subset linked into
tmp_path, so that the test stays fast; the full 815-nodule run is the ``slow`` test at the end.
"""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

from common.data.datalist import read_datalist
from common.data.io import read_image
from common.data.labelled_images import load_classification_dataset
from common.data.lidc import LIDC_MAPPINGS, nodule_signs, prepare_lidc_rois
from common.errors import DataError

pytestmark = pytest.mark.realdata


@pytest.fixture
def lidc(shared_data):
    return shared_data("lidc_vois")


def _rows(lidc):
    with open(lidc / "metadata.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["voi_present"] == "True"]


def test_mapping_counts_on_the_full_metadata(lidc):
    rows = _rows(lidc)
    assert len(rows) == 815
    lesion3 = Counter(LIDC_MAPPINGS["lesion3"].label(row) for row in rows)
    assert dict(lesion3) == {0: 94, 1: 134, 2: 587}  # calcified, subsolid, solid
    signs = Counter(LIDC_MAPPINGS["signs"].label(row) for row in rows)
    assert dict(signs) == {0: 94, 1: 134, 2: 41, 3: 17, 4: 529}
    # Multi-label view: the per-sign prevalence is independent of the priority rule.
    assert np.sum([nodule_signs(row) for row in rows], axis=0).tolist() == [94, 135, 50, 40]


@pytest.fixture
def lidc_subset(lidc, tmp_path):
    """A LIDC-shaped folder with 3 nodules per ``signs`` class (symlinks, nothing copied), plus one absent VOI."""
    rows, picked = _rows(lidc), []
    for label in range(5):
        picked += [r for r in rows if LIDC_MAPPINGS["signs"].label(r) == label][:3]
    rows_out = [*picked, {**picked[0], "voi_present": "False"}]
    root = tmp_path / "lidc"
    for sub in ("image", "nodule_mask"):
        (root / sub).mkdir(parents=True)
        for row in picked:
            (root / sub / row["voi_file"]).symlink_to(lidc / sub / row["voi_file"])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(picked[0]))
        writer.writeheader()
        writer.writerows(rows_out)
    return root, picked


def test_prepare_rois_on_a_subset(lidc_subset, tmp_path):
    root, picked = lidc_subset
    path = prepare_lidc_rois(root, tmp_path / "rois", mapping="lesion3", roi_size=64)
    datalist = read_datalist(path)
    items = datalist["training"]
    assert datalist["class_names"] == ["calcified", "subsolid", "solid"]
    assert datalist["counts"] == {"calcified": 3, "subsolid": 3, "solid": 9}
    assert datalist["skipped"] == {"voi_absent": 1, "image_missing": 0, "unmapped": 0}
    assert [item["patient"] for item in items] == [row["patient_id"] for row in picked]
    assert all(item["patient"].startswith("LIDC-IDRI-") for item in items)
    for item in items:
        roi = read_image(item["image"])
        assert roi.shape == (1, 64, 64)
        assert np.array_equal(roi, np.round(roi))
        assert -1100 <= roi.min() < -300 and 0 < roi.max() < 3100  # lung parenchyma and a nodule, in HU
    calcified = [read_image(item["image"]).max() for item in items if item["label"] == 0]
    assert min(calcified) > 150  # calcium is dense

    # Cached: a second call reuses the files; another ROI size rebuilds.
    mtime = (tmp_path / "rois" / "datalist.json").stat().st_mtime_ns
    assert prepare_lidc_rois(root, tmp_path / "rois", mapping="lesion3", roi_size=64) == path
    assert (tmp_path / "rois" / "datalist.json").stat().st_mtime_ns == mtime
    prepare_lidc_rois(root, tmp_path / "rois", mapping="lesion3", roi_size=32)
    assert read_image(read_datalist(path)["training"][0]["image"]).shape == (1, 32, 32)


def test_loader_detects_the_lidc_layout(lidc_subset, tmp_path):
    root, _ = lidc_subset
    out = load_classification_dataset(root, cache_dir=tmp_path / "cache", lidc_mapping="signs")
    assert out["source"] == "lidc_vois"
    assert out["class_names"] == ["calcification", "ground_glass", "spiculation", "lobulation", "other"]
    assert json.loads(open(out["datalist"]).read())["lidc"]["mapping"] == "signs"


def test_unknown_mapping(lidc_subset, tmp_path):
    with pytest.raises(DataError, match=r"unknown LIDC mapping 'nope' \(key 'lidc_mapping'\)"):
        prepare_lidc_rois(lidc_subset[0], tmp_path / "x", mapping="nope")


@pytest.mark.slow
def test_full_lesion3_set(lidc, tmp_path):
    datalist = read_datalist(prepare_lidc_rois(lidc, tmp_path / "rois"))
    assert datalist["counts"] == {"calcified": 94, "subsolid": 134, "solid": 587}
    assert len({item["patient"] for item in datalist["training"]}) == 445
