"""Issue 14, item 6: every odd input file is read correctly or refused in one line naming it, when the data set is
loaded (before any training writes anything), never silently turned into wrong pixels or a traceback in collate."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from common.data import load_classification_dataset, read_image, write_image
from common.data.brain import find_brain_cases, prepare_cases
from common.data.phantoms import BrainTumourPhantom
from common.data.radiograph import radiograph_transforms
from common.data.skin import load_skin_dataset, rgb_classification_transforms
from common.data.transforms import roi_classification_transforms
from common.errors import DataError, find_data_error


def _png(path, pixels):
    """``pixels`` as PIL stores them: (rows, cols) grey or (rows, cols, 3) RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _chain_refuses(chain, path, match):
    """The load chain stops with a DataError matching ``match`` (MONAI's Compose wraps it in a RuntimeError; the
    bundle runner's excepthook prints the DataError's line alone, found the same way)."""
    with pytest.raises(Exception) as info:
        chain({"image": str(path)})
    error = find_data_error(info.value)
    assert error is not None, f"no DataError in {info.value!r}"
    assert re.search(match, str(error)), str(error)


def _grey_folders(root, n=2, size=16):
    for name in ("normal", "abnormal"):
        for i in range(n):
            _png(root / name / f"{name}{i}.png", np.full((size, size), 40 * i + 20, np.uint8))
    return root


# -- 1. 16-bit PNG ------------------------------------------------------------------------------------------------


def test_16bit_png_is_read_on_the_8bit_scale_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    path = _png(tmp_path / "radiograph16.png", ramp)
    assert Image.open(path).mode == "I;16", "the fixture really is a 16-bit PNG"
    expected = ramp.T[None].astype(np.float32) / 257.0  # MONAI axis order (x first), 65535 -> 255
    np.testing.assert_allclose(read_image(path), expected, rtol=0, atol=1e-4)

    # every chain that reads PNG reads it the same way: a 0..255 window gives the full [-1, 1] ramp, not all +1
    for chain in (roi_classification_transforms(0, 255), radiograph_transforms(32, 0, 255)):
        out = chain({"image": str(path)})["image"]
        np.testing.assert_allclose(out.numpy(), expected / 127.5 - 1.0, rtol=0, atol=1e-4)
    rgb = rgb_classification_transforms(32)({"image": str(path)})["image"]
    assert rgb.shape == (3, 32, 32) and float(rgb.min()) == -1.0 and float(rgb.max()) == 1.0
    assert 0.4 < float((rgb > 0).float().mean()) < 0.6, "half the ramp above mid-grey"

    # an 8-bit PNG of the same picture reads as the same values (within 8-bit quantisation)
    eight = _png(tmp_path / "radiograph8.png", (ramp // 257).astype(np.uint8))
    np.testing.assert_allclose(read_image(eight), expected, atol=1.0)


# -- 2. absurdly small image ----------------------------------------------------------------------------------------


def test_tiny_image_is_refused_naming_file_and_size(tmp_path):
    root = _grey_folders(tmp_path / "spine")
    _png(root / "normal" / "dot.png", np.full((1, 1), 200, np.uint8))
    with pytest.raises(DataError, match=r"image '.*normal/dot\.png' is only 1 x 1 px: smaller than 8 px"):
        load_classification_dataset(root, channels="gray")
    # the load chain refuses it too (e.g. a single image given to inference), rather than stretching it
    _chain_refuses(radiograph_transforms(32), root / "normal" / "dot.png", r"dot\.png' is only 1 x 1 px")

    skin = tmp_path / "skin"
    for name in ("nevus", "melanoma"):
        for i in range(2):
            _png(skin / name / f"{name}{i}.png", np.full((16, 16, 3), 100, np.uint8))
    _png(skin / "melanoma" / "sliver.png", np.full((3, 40, 3), 100, np.uint8))  # 40 wide, 3 high
    with pytest.raises(DataError, match=r"sliver\.png' is only 40 x 3 px"):
        load_skin_dataset(skin)
    (skin / "melanoma" / "sliver.png").unlink()
    assert load_skin_dataset(skin)["counts"] == {"melanoma": 2, "nevus": 2}, "8 x 8 and up are fine"


# -- 3. label map stored as floats ----------------------------------------------------------------------------------

SMALL = dict(n_cases=2, shape=(24, 24, 16))


@pytest.fixture(scope="module")
def brain_phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("brain") / "phantom"
    BrainTumourPhantom(**SMALL, seed=1).ensure(out)
    return out


def _brats_copy(phantom, tmp_path):
    import shutil

    out = tmp_path / "brats"
    shutil.copytree(phantom, out, ignore=shutil.ignore_patterns("*.json"))
    return out


def _save_nifti(path, data):
    image = nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4))
    image.header.set_data_dtype(np.float32)
    nib.save(image, str(path))


def test_float_label_map_integral_accepted_fractional_refused(brain_phantom, tmp_path):
    cases = _brats_copy(brain_phantom, tmp_path)
    seg_path = cases / "phantom000" / "phantom000_seg.nii.gz"
    as_int = prepare_cases(find_brain_cases(cases), tmp_path / "int", image_size=16, n_slices=8)
    seg = read_image(seg_path)[0]
    # float32 on disk, integral up to storage noise (as BraTS 2015's OTMultiClass is float32): read as the classes
    _save_nifti(seg_path, seg + 2e-4)
    as_float = prepare_cases(find_brain_cases(cases), tmp_path / "float", image_size=16, n_slices=8)
    labels = read_image(as_float["items"][0]["label"])
    np.testing.assert_array_equal(labels, read_image(as_int["items"][0]["label"]))
    assert labels.max() == 4, "integral floats read as their classes"

    # 1.5 is not a class: refused naming the file and the value, not rounded into class 2
    bad = seg.copy()
    bad[bad == 2] = 1.5
    _save_nifti(seg_path, bad)
    with pytest.raises(DataError, match=r"phantom000.*label map '.*phantom000_seg\.nii\.gz' holds non-integer .*1\.5"):
        prepare_cases(find_brain_cases(cases), tmp_path / "bad", image_size=16, n_slices=8)
    assert not (tmp_path / "bad" / "datalist.json").exists(), "no half-prepared set is left to be taken as complete"


# -- 4. RGB image in a grey set, grey image in an RGB set -----------------------------------------------------------


def test_colour_image_in_grey_set_refused_grey_as_rgb_converted(tmp_path):
    root = _grey_folders(tmp_path / "lung")
    grey_as_rgb = np.repeat(np.full((16, 16, 1), 90, np.uint8), 3, axis=2)
    _png(root / "normal" / "saved_as_rgb.png", grey_as_rgb)
    dataset = load_classification_dataset(root, image_shape=(16, 16), channels="gray")
    chain = roi_classification_transforms(0, 255)
    batch = torch.stack([chain(dict(item))["image"] for item in dataset["items"]])  # collates: one channel each
    assert batch.shape == (5, 1, 16, 16)
    converted = chain({"image": str(root / "normal" / "saved_as_rgb.png")})["image"]
    assert torch.allclose(converted, torch.full((1, 16, 16), 90 / 127.5 - 1))

    colour = grey_as_rgb.copy()
    colour[..., 0] = 250  # a red tint: not a grey picture
    _png(root / "abnormal" / "colour.png", colour)
    with pytest.raises(
        DataError, match=r"image '.*abnormal/colour\.png' is colour \(3 channels .*\); the other images are grey \(1"
    ):
        load_classification_dataset(root, image_shape=(16, 16), channels="gray")
    _chain_refuses(chain, root / "abnormal" / "colour.png", r"colour\.png' is colour")


def test_grey_image_in_rgb_set_is_made_rgb(tmp_path):
    skin = tmp_path / "skin"
    for name in ("nevus", "melanoma"):
        for i in range(2):
            _png(skin / name / f"{name}{i}.png", np.full((20, 20, 3), (200, 120, 80), np.uint8))
    _png(skin / "nevus" / "grey.png", np.full((20, 20), 60, np.uint8))
    dataset = load_skin_dataset(skin)
    chain = rgb_classification_transforms(16)
    batch = torch.stack([chain(dict(item))["image"] for item in dataset["items"]])
    assert batch.shape == (5, 3, 16, 16)
    grey = chain({"image": str(skin / "nevus" / "grey.png")})["image"]
    assert torch.allclose(grey, torch.full((3, 16, 16), 60 / 127.5 - 1)), "grey repeated into R, G and B"

    two = np.zeros((20, 20, 2), np.uint8)  # grey + alpha has no RGB reading
    Image.fromarray(two[..., 0]).convert("LA").save(skin / "nevus" / "alpha.png")
    with pytest.raises(DataError, match=r"alpha\.png' has 2 channels; the other images are RGB"):
        load_skin_dataset(skin)


# -- 5. a 2-D sequence among 3-D ones -------------------------------------------------------------------------------


def test_2d_nifti_sequence_among_3d_refused_naming_file_shape_and_dims(brain_phantom, tmp_path):
    cases = _brats_copy(brain_phantom, tmp_path)
    flair = cases / "phantom001" / "phantom001_flair.nii.gz"
    _save_nifti(flair, read_image(flair)[0, :, :, 6])  # one axial slice saved as a 2-D file
    with pytest.raises(DataError, match=r"phantom001_flair\.nii\.gz' is 2-D with shape \(24, 24\): expected a 3-D"):
        prepare_cases(find_brain_cases(cases), tmp_path / "p", image_size=16, n_slices=8)

    write_image(flair, np.zeros((1, 24, 24, 1)))  # a one-slice "volume": refused by shape, naming both files
    with pytest.raises(DataError, match=r"phantom001_flair\.nii\.gz' has shape \(24, 24, 1\), '.*_t1\.nii\.gz'"):
        prepare_cases(find_brain_cases(cases), tmp_path / "p", image_size=16, n_slices=8)
