"""read_image / write_image: exact round trips in MONAI's axis order, and one clear error per kind of bad file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from common.data.io import read_image, write_image
from common.errors import DataError


@pytest.mark.parametrize(
    "name, array",
    [
        ("gray.png", np.arange(5 * 7, dtype=np.float32).reshape(1, 5, 7)),  # non-square: catches a transpose
        ("rgb.png", np.random.default_rng(0).integers(0, 256, (3, 6, 9)).astype(np.float32)),
        ("hu2d.nii.gz", np.random.default_rng(1).integers(-1024, 2000, (1, 6, 9)).astype(np.float32)),  # int16
        ("float2d.nii", np.random.default_rng(2).normal(size=(1, 6, 9)).astype(np.float32)),
        ("vol3d.nii.gz", np.random.default_rng(3).normal(size=(1, 4, 5, 6)).astype(np.float32)),
        ("multi3d.nii.gz", np.random.default_rng(4).normal(size=(2, 4, 5, 6)).astype(np.float32)),
    ],
)
def test_round_trip_is_exact(tmp_path, name, array):
    path = tmp_path / name
    write_image(path, array, spacing=(0.7, 0.8, 2.5)[: array.ndim - 1] if "nii" in name else None)
    back = read_image(path)
    assert back.dtype == np.float32
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_png_orientation_matches_monai_pil_reader(tmp_path):
    """The first spatial axis is image x (columns), as MONAI's PILReader (reverse_indexing=True) returns it."""
    from PIL import Image

    array = np.zeros((1, 8, 4), dtype=np.float32)
    array[0, 7, 0] = 255  # x = 7, y = 0: top-right pixel of an 8-wide, 4-tall image
    write_image(tmp_path / "o.png", array)
    with Image.open(tmp_path / "o.png") as image:
        assert image.size == (8, 4)
        assert image.getpixel((7, 0)) == 255


def test_nifti_dtype_and_spacing(tmp_path):
    import nibabel as nib

    write_image(tmp_path / "i.nii.gz", np.full((1, 3, 4), 40.0), spacing=(0.5, 0.6))
    write_image(tmp_path / "f.nii.gz", np.full((1, 3, 4), 0.5))
    assert nib.load(tmp_path / "i.nii.gz").get_data_dtype() == np.int16
    assert nib.load(tmp_path / "f.nii.gz").get_data_dtype() == np.float32
    assert nib.load(tmp_path / "i.nii.gz").header.get_zooms()[:2] == pytest.approx((0.5, 0.6))


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="PNG stores integers"):
        write_image(tmp_path / "b.png", np.full((1, 4, 4), -5.0))  # negative: refused, not clipped
    with pytest.raises(ValueError, match=r"PNG stores integers 0\.\.255"):
        write_image(tmp_path / "c.png", np.full((1, 4, 4), 300.0))  # PNGs read on the 0..255 scale: no 16-bit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_write_refuses_nan_and_bad_suffix(tmp_path):
    with pytest.raises(DataError, match="NaN"):
        write_image(tmp_path / "n.nii.gz", np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="use .png, .nii or .nii.gz"):
        write_image(tmp_path / "x.jpg", np.zeros((1, 2, 2)))


def test_missing_file(tmp_path):
    path = tmp_path / "absent.nii.gz"
    with pytest.raises(DataError, match=f"cannot read image '{path}': file not found"):
        read_image(path)


def test_truncated_gzip_nifti(tmp_path):
    good = tmp_path / "good.nii.gz"
    write_image(good, np.random.default_rng(0).normal(size=(1, 32, 32, 8)))
    raw = good.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cannot read image '.*truncated\.nii\.gz'"):
        read_image(bad)


def test_corrupt_png(tmp_path):
    good = tmp_path / "good.png"
    write_image(good, np.random.default_rng(0).integers(0, 256, (1, 32, 32)).astype(float))
    raw = good.read_bytes()
    for name, data in [("cut.png", raw[:-20]), ("garbage.png", b"\x89PNG\r\n\x1a\n" + b"x" * 50)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=f"cannot read image '.*{name}'"):
            read_image(tmp_path / name)


def test_nan_in_nifti_is_counted(tmp_path):
    import nibabel as nib

    data = np.zeros((4, 4), dtype=np.float32)
    data[1, 1] = np.nan
    data[2, 2] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"nan\.nii\.gz' has non-finite values: 1 NaN and 1 Inf"):
        read_image(tmp_path / "nan.nii.gz")


def test_not_an_image(tmp_path):
    path = tmp_path / "text.nii.gz"
    path.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(DataError, match="cannot read image"):
        read_image(path)
