"""The lung CT sign phantom: files + datalist, determinism, and the radiological traits that define each class."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.datalist import read_datalist
from common.data.io import read_image
from common.data.phantoms import PHANTOMS, LungSignPhantom

SMALL = {"n_per_class": (6,) * 6, "image_size": 32}


def _by_class(phantom: LungSignPhantom) -> dict[int, list[np.ndarray]]:
    out: dict[int, list[np.ndarray]] = {}
    for sample in phantom.generate():
        out.setdefault(sample["label"], []).append(sample["array"][0])
    return out


def test_ensure_writes_nifti_in_hu_and_a_datalist(tmp_path):
    phantom = LungSignPhantom(**SMALL)
    datalist = read_datalist(phantom.ensure(tmp_path / "lung"))
    items = datalist["training"]
    assert datalist["class_names"] == ["ground_glass", "calcification", "cavity", "spiculation", "lobulation", "normal"]
    assert [sum(it["label"] == c for it in items) for c in range(6)] == [6] * 6
    image = read_image(items[0]["image"])
    assert image.shape == (1, 32, 32) and np.array_equal(image, np.round(image))
    assert -1024 <= image.min() and image.max() <= 3071
    patients = {it["patient"] for it in items}
    assert len(patients) < len(items), "patients hold 1-3 patches"
    assert PHANTOMS["lung_sign_phantom"] is LungSignPhantom


def test_same_seed_same_images_other_seed_different():
    a = [s["array"] for s in LungSignPhantom(**SMALL, seed=1).generate()]
    b = [s["array"] for s in LungSignPhantom(**SMALL, seed=1).generate()]
    c = [s["array"] for s in LungSignPhantom(**SMALL, seed=2).generate()]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_classes_carry_their_radiological_traits():
    images = _by_class(LungSignPhantom(n_per_class=(20,) * 6, image_size=32, noise_hu=20.0))

    def centre(img, r=3):
        return img[16 - r : 16 + r, 16 - r : 16 + r]

    lung = np.median([np.median(img) for c in images for img in images[c]])
    assert -880 < lung < -800, "parenchyma at about -850 HU"
    # calcification: the densest pixels of the set (bone-like, > 200 HU)
    assert np.median([img.max() for img in images[1]]) > 200
    assert np.median([img.max() for img in images[3]]) < 150 and np.median([img.max() for img in images[4]]) < 150
    # ground glass: hazy, between air and soft tissue at its centre
    ggo = np.median([np.median(centre(img)) for img in images[0]])
    assert -750 < ggo < -350
    # cavity: air inside a soft-tissue wall -> the darkest centre of all classes, with a dense ring around it
    cavity_min = np.median([centre(img, 4).min() for img in images[2]])
    assert cavity_min < lung - 50 and np.median([img.max() for img in images[2]]) > -100
    # solid nodules (spiculation, lobulation) are soft tissue at their centre; normal patches are lung there
    assert np.median([np.median(centre(img, 2)) for img in images[4]]) > -200
    assert np.median([np.median(centre(img, 2)) for img in images[5]]) < -600


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_per_class"):
        LungSignPhantom(n_per_class=(1, 2))
    with pytest.raises(ValueError, match="image_size"):
        LungSignPhantom(image_size=8)
