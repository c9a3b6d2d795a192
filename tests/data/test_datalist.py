"""Decathlon-style datalists: relative on disk, absolute in memory, one clear error per defect."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.data.datalist import read_datalist, write_datalist
from common.data.io import write_image
from common.errors import DataError


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(3):
        paths.append(write_image(tmp_path / "set" / "images" / f"p{i}.nii.gz", np.full((1, 4, 4), float(i))))
    return paths


def test_round_trip_relative_on_disk_absolute_in_memory(tmp_path, images):
    outside = write_image(tmp_path / "elsewhere.png", np.zeros((1, 4, 4)))
    items = [{"image": p, "label": i, "patient": f"p{i}"} for i, p in enumerate(images)]
    items.append({"image": outside, "label": 1, "patient": "x", "seg": "images/p0.nii.gz"})
    path = write_datalist(tmp_path / "set" / "datalist.json", items, name="demo", class_names=["a", "b", "c"])

    raw = json.loads(open(path).read())
    assert raw["name"] == "demo" and raw["class_names"] == ["a", "b", "c"]
    assert raw["training"][0]["image"] == "images/p0.nii.gz"  # under the folder: relative
    assert raw["training"][3]["image"] == outside  # not under it: kept absolute

    back = read_datalist(path)
    assert [item["image"] for item in back["training"][:3]] == images
    assert back["training"][3]["seg"] == images[0]
    assert [item["label"] for item in back["training"]] == [0, 1, 2, 1]
    assert all(isinstance(item["label"], int) for item in back["training"])


def test_numpy_values_and_other_sections(tmp_path, images):
    path = write_datalist(
        tmp_path / "set" / "datalist.json",
        [{"image": images[0], "label": np.int64(2)}],
        validation=[{"image": images[1], "label": 0}],
        test=[images[2]],
        class_names=["a", "b", "c"],
    )
    back = read_datalist(path)
    assert back["training"][0]["label"] == 2
    assert back["validation"][0]["image"] == images[1]
    assert back["test"] == [images[2]]


def test_class_name_label_is_not_taken_for_a_path(tmp_path, images):
    path = write_datalist(tmp_path / "set" / "dl.json", [{"image": images[0], "label": "cyst"}])
    assert read_datalist(path)["training"][0]["label"] == "cyst"


def test_missing_datalist(tmp_path):
    with pytest.raises(DataError, match=r"datalist '.*nope\.json' not found"):
        read_datalist(tmp_path / "nope.json")


def test_bad_json(tmp_path):
    (tmp_path / "bad.json").write_text('{"training": [')
    with pytest.raises(DataError, match=r"datalist '.*bad\.json' is not valid JSON"):
        read_datalist(tmp_path / "bad.json")


def test_missing_training_key(tmp_path):
    (tmp_path / "d.json").write_text('{"validation": []}')
    with pytest.raises(DataError, match=r"datalist '.*d\.json' has no 'training' list"):
        read_datalist(tmp_path / "d.json")


def test_item_without_image(tmp_path, images):
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"image": images[0]}, {"label": 1}]}))
    with pytest.raises(DataError, match=r"d\.json': training\[1\] has no 'image' key"):
        read_datalist(tmp_path / "d.json")


def test_referenced_file_missing(tmp_path, images):
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"image": "images/gone.nii.gz", "label": 0}]}))
    with pytest.raises(DataError, match=r"d\.json': training\[0\]\['image'\] names 'images/gone\.nii\.gz'"):
        read_datalist(tmp_path / "d.json")
