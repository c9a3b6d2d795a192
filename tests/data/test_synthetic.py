"""Generator output in [-1, 1] -> native-unit files + datalist, read back exactly by read_image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.data.datalist import read_datalist
from common.data.io import read_image
from common.data.synthetic import from_unit_range, write_synthetic_set
from common.errors import DataError


def test_nifti_round_trip_in_hu(tmp_path):
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    path = write_synthetic_set(
        images,
        torch.tensor([0, 1, 2, 1]),
        tmp_path,
        class_names=["a", "b", "c"],
        a_min=-100,
        a_max=250,
        source="gen.pt",
    )
    datalist = read_datalist(path)
    assert datalist["source"] == "gen.pt" and datalist["class_names"] == ["a", "b", "c"]
    assert datalist["counts"] == {"a": 1, "b": 2, "c": 1}
    for i, item in enumerate(datalist["training"]):
        assert item["synthetic"] is True and item["patient"] == "synthetic" and item["label"] == [0, 1, 2, 1][i]
        back = read_image(item["image"])
        expected = ((images[i].numpy().astype(np.float64) + 1) / 2 * 350 - 100).astype(np.float32)
        np.testing.assert_array_equal(back, expected)
    # The window applied at training time maps the files back to the generator output.
    np.testing.assert_allclose((read_image(datalist["training"][0]["image"]) + 100) / 350 * 2 - 1, images[0], atol=1e-5)


def test_png_round_trip_is_rounded_and_clipped(tmp_path):
    images = np.stack([np.linspace(-1.2, 1.2, 3 * 8 * 8).reshape(3, 8, 8)]).astype(np.float32)
    path = write_synthetic_set(images, None, tmp_path, class_names=[], a_min=0, a_max=255, file_format="png")
    item = read_datalist(path)["training"][0]
    assert "label" not in item and item["image"].endswith("syn_00000.png")
    back = read_image(item["image"])
    np.testing.assert_array_equal(back, np.round(from_unit_range(images[0], 0, 255)))
    assert back.min() == 0 and back.max() == 255


def test_relative_paths_and_errors(tmp_path):
    path = write_synthetic_set(np.zeros((1, 1, 4, 4)), [0], tmp_path, class_names=["a"], a_min=0, a_max=1)
    assert json.loads(open(path).read())["training"][0]["image"] == "images/syn_00000.nii.gz"
    with pytest.raises(DataError, match="NaN/Inf values \\(first in sample 1\\)"):
        write_synthetic_set(
            np.array([[[[0.0]]], [[[np.nan]]]]), [0, 0], tmp_path / "x", class_names=["a"], a_min=0, a_max=1
        )
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        write_synthetic_set(np.zeros((2, 1, 4, 4)), [0], tmp_path / "y", class_names=["a"], a_min=0, a_max=1)
