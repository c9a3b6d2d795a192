"""The spine radiograph phantom and the MedMNIST .npz reader."""

from __future__ import annotations

import numpy as np
import pytest

from common.data import load_classification_dataset, read_image
from common.data.phantoms.spine import SpinePhantom
from common.data.radiograph import radiograph_transforms
from common.errors import DataError


def test_spine_phantom_is_deterministic_labelled_png(tmp_path):
    ph = SpinePhantom(n_per_class=(4, 5), image_size=64, seed=3)
    ds = load_classification_dataset(tmp_path / "p", phantom=ph, phantom_dir=tmp_path / "p")
    assert ds["class_names"] == ["normal", "abnormal"] and len(ds["items"]) == 9
    assert sorted(it["label"] for it in ds["items"]) == [0] * 4 + [1] * 5
    img = read_image(ds["items"][0]["image"])
    assert img.shape == (1, 64, 64) and 0 <= img.min() and img.max() <= 255
    again = list(SpinePhantom(n_per_class=(4, 5), image_size=64, seed=3).generate())
    assert np.array_equal(again[0]["array"], img)
    for it in ds["items"]:
        assert (it["findings"] == "none") == (it["label"] == 0)


def test_abnormal_findings_change_the_image():
    ph = SpinePhantom(image_size=64)
    a = ph.render(np.random.default_rng(0), [])
    b = ph.render(np.random.default_rng(0), ["implant"])
    assert b.max() == 255 and np.abs(a - b).mean() > 0.1  # saturated metal


def _npz(path, n=6, labels=(0, 1)):
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 255, (n, 28, 28), dtype=np.uint8),
             train_labels=np.array([[labels[i % 2]] for i in range(n)], dtype=np.uint8),
             val_images=rng.integers(0, 255, (2, 28, 28), dtype=np.uint8),
             val_labels=np.array([[0], [1]], dtype=np.uint8))  # fmt: skip
    return path


def test_medmnist_npz_becomes_pngs_and_a_datalist(tmp_path):
    npz = _npz(tmp_path / "pneumoniamnist_trainval.npz")
    ds = load_classification_dataset(npz, cache_dir=tmp_path / "cache")
    assert ds["class_names"] == ["normal", "pneumonia"] and len(ds["items"]) == 8
    assert ds["source"] == "pneumoniamnist"
    raw = np.load(npz)["train_images"][0]
    img = read_image(ds["items"][0]["image"])
    assert np.array_equal(img[0].T, raw)  # the PNG is upright, MONAI reads it (x, y)
    out = radiograph_transforms(32)({"image": ds["items"][0]["image"]})["image"]
    assert tuple(out.shape) == (1, 32, 32) and -1 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(DataError, match="cache_dir"):
        load_classification_dataset(npz)


def test_bad_npz_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="x.npz"):
        load_classification_dataset(bad, cache_dir=tmp_path / "c")
    np.savez(tmp_path / "y.npz", images=np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="train_images"):
        load_classification_dataset(tmp_path / "y.npz", cache_dir=tmp_path / "c")


def test_radiograph_transform_pads_non_square_rgb_to_a_square(tmp_path):
    from common.data.io import write_image

    path = write_image(tmp_path / "r.png", np.stack([np.full((40, 80), 200.0)] * 3))
    out = radiograph_transforms(16)({"image": path})["image"]
    assert tuple(out.shape) == (1, 16, 16)
