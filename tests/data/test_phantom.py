"""The phantom framework (determinism, reuse, rebuild, kill safety) and the liver lesion phantom's class structure."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from common.data.datalist import read_datalist
from common.data.io import read_image
from common.data.phantoms import LiverLesionPhantom, LungSignPhantom, Phantom

SMALL = {"n_per_class": (6, 6, 6), "image_size": 32}


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ensure_writes_a_complete_set(tmp_path):
    phantom = LiverLesionPhantom(**SMALL)
    datalist = read_datalist(phantom.ensure(tmp_path / "liver"))
    items = datalist["training"]
    assert datalist["class_names"] == ["cyst", "metastasis", "hemangioma"]
    assert [sum(item["label"] == c for item in items) for c in range(3)] == [6, 6, 6]
    assert json.loads((tmp_path / "liver" / "phantom.json").read_text()) == json.loads(json.dumps(phantom.spec()))
    image = read_image(items[0]["image"])
    assert image.shape == (1, 32, 32)
    assert np.array_equal(image, np.round(image))  # integer HU
    assert -1024 <= image.min() and image.max() <= 400


def test_patients_group_one_to_three_lesions(tmp_path):
    phantom = LiverLesionPhantom(n_per_class=(20, 20, 20), image_size=32)
    items = read_datalist(phantom.ensure(tmp_path / "p"))["training"]
    per_patient: dict[str, list[int]] = {}
    for item in items:
        per_patient.setdefault(item["patient"], []).append(item["label"])
    assert all(1 <= len(labels) <= 3 for labels in per_patient.values())
    assert all(p.startswith("liv") and len(p) == 7 for p in per_patient)
    assert any(len(labels) > 1 for labels in per_patient.values())
    assert any(len(set(labels)) > 1 for labels in per_patient.values())  # some patients have mixed classes


def test_same_seed_identical_files_other_seed_different(tmp_path):
    LiverLesionPhantom(**SMALL, seed=3).ensure(tmp_path / "a")
    LiverLesionPhantom(**SMALL, seed=3).ensure(tmp_path / "b")
    LiverLesionPhantom(**SMALL, seed=4).ensure(tmp_path / "c")
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    image = "images/liv0001_01.nii.gz"
    assert read_image(tmp_path / "a" / image).tolist() != read_image(tmp_path / "c" / image).tolist()


def test_second_ensure_reuses_files(tmp_path, monkeypatch):
    phantom = LiverLesionPhantom(**SMALL)
    first = phantom.ensure(tmp_path / "liver")
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "liver").rglob("*")}
    monkeypatch.setattr(LiverLesionPhantom, "generate", lambda self: pytest.fail("regenerated although current"))
    assert LiverLesionPhantom(**SMALL).ensure(tmp_path / "liver") == first
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "liver").rglob("*")}


def test_changed_spec_regenerates(tmp_path):
    out = tmp_path / "liver"
    LiverLesionPhantom(**SMALL, seed=0).ensure(out)
    old = _files(out)
    LiverLesionPhantom(n_per_class=(2, 2, 2), image_size=32, seed=0).ensure(out)
    assert _files(out) != old
    assert len(read_datalist(out / "datalist.json")["training"]) == 6
    assert json.loads((out / "phantom.json").read_text())["n_per_class"] == [2, 2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["liver"]  # no tmp/old folders left


def test_killed_generation_leaves_the_old_set_intact(tmp_path):
    out = tmp_path / "liver"
    LiverLesionPhantom(**SMALL).ensure(out)
    old = _files(out)

    class Crashing(LiverLesionPhantom):
        def generate(self):
            yield from list(super().generate())[:3]
            raise KeyboardInterrupt  # stands in for a kill in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        Crashing(**SMALL, seed=1).ensure(out)
    assert _files(out) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["liver"]


def test_stale_folder_of_a_dead_process_is_cleaned(tmp_path):
    stale = tmp_path / "liver.tmp-999999999"  # a pid that cannot be running
    stale.mkdir()
    (stale / "half.nii.gz").write_bytes(b"partial")
    LiverLesionPhantom(**SMALL).ensure(tmp_path / "liver")
    assert not stale.exists()


def test_png_variant(tmp_path):
    datalist = read_datalist(LiverLesionPhantom(**SMALL, file_format="png").ensure(tmp_path / "png"))
    image = read_image(datalist["training"][0]["image"])
    assert datalist["training"][0]["image"].endswith(".png")
    assert image.shape == (1, 32, 32) and 0 <= image.min() and image.max() <= 255
    assert datalist["intensity"]["window_hu"] == [-160.0, 240.0]


def test_spec_names_every_parameter():
    spec = LiverLesionPhantom().spec()
    assert spec["seed"] == 0 and spec["version"] and spec["n_per_class"] == [53, 64, 65]
    assert {"image_size", "noise_hu", "lesions_per_patient", "file_format"} <= set(spec)
    assert isinstance(LiverLesionPhantom(), Phantom)


def test_config_target_instantiates(tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser({"p": {"_target_": "common.data.phantoms.LiverLesionPhantom", "seed": 2, "image_size": 32}})
    phantom = parser.get_parsed_content("p")
    assert isinstance(phantom, LiverLesionPhantom) and phantom.seed == 2


# --------------------------------------------------------------------------- class structure
def _radial_features(image: np.ndarray, bins: int = 8) -> np.ndarray:
    """Mean, spread and 95th percentile of HU in rings around the ROI centre (the lesion is near the centre)."""
    n = image.shape[-1]
    yy, xx = np.mgrid[0:n, 0:n] + 0.5 - n / 2
    r = np.hypot(xx, yy) / (n / 2)
    out = []
    for i in range(bins):
        ring = image[(r >= 0.8 * i / bins) & (r < 0.8 * (i + 1) / bins)]
        out += [ring.mean(), ring.std(), np.percentile(ring, 95)]
    return np.array(out)


def test_classes_are_learnable_but_not_trivially():
    """Nearest class mean on radial profiles, trained and tested on disjoint patients: well above chance (1/3),
    clearly below perfect (the CNN-level difficulty is measured in the phantom's docs, not here)."""
    phantom = LiverLesionPhantom(n_per_class=(60, 60, 60), image_size=32, seed=7)
    samples = list(phantom.generate())
    x = np.stack([_radial_features(s["array"][0]) for s in samples])
    y = np.array([s["label"] for s in samples])
    patients = np.array([s["patient"] for s in samples])
    unique = np.unique(patients)
    test = np.isin(patients, np.random.default_rng(0).permutation(unique)[: len(unique) // 3])
    mean, std = x[~test].mean(0), x[~test].std(0) + 1e-6
    z = (x - mean) / std
    centroids = np.stack([z[~test & (y == c)].mean(0) for c in range(3)])
    pred = np.argmin(((z[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float((pred == y[test]).mean())
    assert 0.55 < accuracy < 0.95, accuracy
    assert set(pred) == {0, 1, 2}


def test_invalid_arguments():
    with pytest.raises(ValueError, match="n_per_class"):
        LiverLesionPhantom(n_per_class=(1, 2))
    with pytest.raises(ValueError, match="file_format"):
        LiverLesionPhantom(file_format="jpg")
    with pytest.raises(ValueError, match="lesions_per_patient"):
        LiverLesionPhantom(lesions_per_patient=(0, 2))


def test_pid_of_this_process_is_in_the_staging_name(tmp_path, monkeypatch):
    seen = []
    original = LiverLesionPhantom.write

    def spy(self, out_dir):
        seen.append(os.path.basename(out_dir))
        return original(self, out_dir)

    monkeypatch.setattr(LiverLesionPhantom, "write", spy)
    LiverLesionPhantom(**SMALL).ensure(tmp_path / "liver")
    assert seen == [f"liver.tmp-{os.getpid()}"]


@pytest.mark.parametrize(
    "phantom_type, counts, window",
    [(LiverLesionPhantom, (4, 4, 4), [-160.0, 240.0]), (LungSignPhantom, (2,) * 6, [-1350.0, 150.0])],
)
def test_ct_patch_phantoms_share_patients_degradation_and_windows(phantom_type, counts, window):
    """Both CT patch phantoms (common.data.phantoms.ct_patches): exact class counts grouped into patients of their
    own prefix, integer HU in the int16 range, and the PNG variant in 0..255 with its window named in the meta."""
    hu = list(phantom_type(n_per_class=counts, image_size=32, seed=1).generate())
    assert [sum(s["label"] == c for s in hu) for c in range(len(counts))] == list(counts)
    assert all(s["patient"].startswith(phantom_type.patient_prefix) for s in hu)
    arrays = np.stack([s["array"] for s in hu])
    assert np.array_equal(arrays, np.round(arrays)) and arrays.min() >= -1024 and arrays.max() <= 3071
    png = phantom_type(n_per_class=counts, image_size=32, seed=1, file_format="png")
    pixels = np.stack([s["array"] for s in png.generate()])
    assert pixels.min() >= 0 and pixels.max() <= 255 and len(np.unique(pixels)) > 50
    assert png.meta()["intensity"]["window_hu"] == window
    # the same draws, only stored through the window: the PNG is the HU image windowed
    lo, hi = window
    assert np.array_equal(pixels, np.round(np.clip((arrays - lo) / (hi - lo), 0, 1) * 255))
