"""The dermoscopy phantom, the ISIC ground-truth reader, the RGB load chain and the protocol's balancing options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.data.io import read_image, write_image
from common.data.phantoms import DermoscopyPhantom
from common.data.skin import load_skin_dataset, read_isic_ground_truth, rgb_classification_transforms
from common.errors import DataError
from common.protocol.augmentation import ARMS, oversample


def test_phantom_is_deterministic_imbalanced_rgb_png(tmp_path):
    phantom = DermoscopyPhantom(n_per_class=(12, 4, 3), image_size=32, seed=3)
    dataset = load_skin_dataset(tmp_path / "a", phantom=phantom, phantom_dir=tmp_path / "a")
    assert dataset["source"] == "phantom" and dataset["counts"] == {
        "nevus": 12,
        "melanoma": 4,
        "seborrheic_keratosis": 3,
    }
    first = read_image(dataset["items"][0]["image"])
    assert first.shape == (3, 32, 32) and first.max() <= 255 and first.min() >= 0
    again = load_skin_dataset(tmp_path / "b", phantom=phantom, phantom_dir=tmp_path / "b")
    for a, b in zip(dataset["items"], again["items"], strict=True):
        assert np.array_equal(read_image(a["image"]), read_image(b["image"]))
    spec = json.loads((tmp_path / "a" / "phantom.json").read_text())
    assert spec["version"] == DermoscopyPhantom.version and spec["image_size"] == 32
    other = DermoscopyPhantom(n_per_class=(12, 4, 3), image_size=32, seed=4)
    changed = load_skin_dataset(tmp_path / "a", phantom=other, phantom_dir=tmp_path / "a")
    assert not np.array_equal(read_image(changed["items"][0]["image"]), first), "a new seed rebuilds the set"


def test_phantom_classes_differ_in_the_abcd_traits():
    gen = DermoscopyPhantom(n_per_class=(30, 30, 0), image_size=48, seed=0).generate()
    samples = [next(gen) for _ in range(60)]
    area = {c: np.mean([s["lesion_area_fraction"] for s in samples if s["label"] == c]) for c in (0, 1)}
    assert area[1] > area[0], "melanomas are larger on average (D)"
    colour_spread = {
        c: np.mean([s["array"].reshape(3, -1).std(1).mean() for s in samples if s["label"] == c]) for c in (0, 1)
    }
    assert colour_spread[1] > colour_spread[0], "melanomas have more colours (C)"


def test_isic_ground_truth_reader(tmp_path):
    for i in range(3):
        write_image(tmp_path / "imgs" / f"ISIC_{i}.png", np.full((3, 8, 8), 10.0 * i, np.float32))
    csv = tmp_path / "gt.csv"
    csv.write_text("image_id,melanoma,seborrheic_keratosis\nISIC_0,1.0,0.0\nISIC_1,0,1\nISIC_2,0,0\n")
    assert [it["label"] for it in read_isic_ground_truth(csv)["items"]] == [1, 2, 0]
    assert load_skin_dataset(csv)["source"] == "isic_csv"
    csv.write_text("image_id,melanoma,seborrheic_keratosis\nISIC_0,1,1\n")
    with pytest.raises(DataError, match="both"):
        read_isic_ground_truth(csv)
    csv.write_text("image_id,melanoma,seborrheic_keratosis\nISIC_0,yes,0\n")
    with pytest.raises(DataError, match="row 2.*melanoma"):
        read_isic_ground_truth(csv)


def test_rgb_chain_resizes_and_makes_three_channels(tmp_path):
    write_image(tmp_path / "gray.png", np.full((1, 40, 40), 255.0, np.float32))
    write_image(tmp_path / "rgb.png", np.zeros((3, 40, 40), np.float32))
    chain = rgb_classification_transforms(16)
    gray = chain({"image": str(tmp_path / "gray.png")})["image"]
    rgb = chain({"image": str(tmp_path / "rgb.png")})["image"]
    assert type(gray) is torch.Tensor and gray.shape == rgb.shape == (3, 16, 16)
    assert float(gray.min()) == 1.0 and float(rgb.max()) == -1.0


def test_oversampling_balances_classes_reproducibly():
    items = [{"image": f"{i}", "label": 0} for i in range(10)] + [{"image": f"m{i}", "label": 1} for i in range(3)]
    out = oversample(items, seed=0)
    assert sum(it["label"] == 0 for it in out) == sum(it["label"] == 1 for it in out) == 10
    assert out == oversample(items, seed=0) and all(any(it is o for o in items) for it in out)
    assert ARMS["oversampling"]["oversample"] and not ARMS["oversampling"]["synthetic"]
