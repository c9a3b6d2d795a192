"""Read and write single images exactly as the training transforms see them.

``read_image`` goes through MONAI ``LoadImage`` (the reader ``LoadImaged`` uses), so an array read here has the same
axis order as a training batch: MONAI's convention, first spatial axis = image x (columns) for PNG/JPG, the NIfTI
voxel axes for NIfTI. ``write_image`` is its exact inverse for PNG and NIfTI.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.data._fs import atomic_path
from common.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "has_image_suffix", "read_image", "write_image"]

#: File endings recognised as images when scanning folders (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm", ".nrrd", ".mha", ".mhd")

_INT16 = np.iinfo(np.int16)


def has_image_suffix(path: str | os.PathLike) -> bool:
    """True when the file name ends with one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


_LOCAL = threading.local()


def _loader():
    # Built once per thread: LoadImage registers its readers at construction (costlier than reading a small image),
    # and its readers keep per-call state (the file names), so threads must not share one.
    loader = getattr(_LOCAL, "loader", None)
    if loader is None:
        from monai.transforms import LoadImage

        loader = _LOCAL.loader = LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)
    return loader


def _short_reason(exc: BaseException) -> str:
    # MONAI wraps reader errors in RuntimeError with long multi-line messages; the innermost cause is the useful part.
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _verify_png(path: str) -> None:
    # PIL decodes leniently and accepts a PNG whose end was cut off; verify() checks chunk CRCs and the IEND marker.
    from PIL import Image

    with Image.open(path) as image:
        image.verify()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image as a float32 channel-first array, (C, H, W) for 2-D or (C, H, W, D) for 3-D.

    PNG/JPG are read by PIL, NIfTI by nibabel, DICOM (file or series folder) by ITK, all through MONAI ``LoadImage``
    with ``ensure_channel_first=True``: the same reader and axis order as the training transforms.

    Raises:
        DataError: the file is missing, truncated, corrupt or unreadable (``cannot read image '<path>': <reason>``),
            or it holds NaN/Inf values (the message gives their count).
    """
    path = str(path)
    if not os.path.exists(path):
        raise DataError(f"cannot read image '{path}': file not found")
    try:
        if path.lower().endswith(".png"):
            _verify_png(path)
        image = _loader()(path)
        array = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
    except Exception as exc:  # every reader raises its own types (EOFError, zlib.error, OSError, RuntimeError, ...)
        raise DataError(f"cannot read image '{path}': {_short_reason(exc)}") from exc
    n_nan = int(np.isnan(array).sum())
    n_inf = int(np.isinf(array).sum())
    if n_nan or n_inf:
        raise DataError(f"image '{path}' has non-finite values: {n_nan} NaN and {n_inf} Inf of {array.size}")
    return array


def _is_integer_valued(array: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(array)) and np.all(np.round(array) == array))


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    channels = array.shape[0]
    if array.ndim != 3 or channels not in (1, 3):
        raise ValueError(f"PNG needs a (1|3, H, W) array, got shape {tuple(array.shape)} for '{path}'")
    if not _is_integer_valued(array) or array.min() < 0 or array.max() > 65535:
        raise ValueError(
            f"PNG stores integers 0..65535 exactly; '{path}' has values in [{array.min():g}, {array.max():g}] "
            "or non-integers: rescale/round first, or write NIfTI"
        )
    if array.max() <= 255:
        dtype = np.uint8
    elif channels == 1:
        dtype = np.uint16
    else:
        raise ValueError(f"RGB PNG holds 0..255 only (Pillow has no 16-bit RGB); '{path}' reaches {array.max():g}")
    # PIL arrays are (rows, cols[, C]); MONAI's PILReader transposes them to (cols, rows), so transpose back here.
    pixels = np.ascontiguousarray(np.moveaxis(array, 0, -1).transpose(1, 0, 2).astype(dtype))
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float] | None) -> None:
    import nibabel as nib

    spatial = array.shape[1:]
    if len(spatial) not in (2, 3):
        raise ValueError(f"NIfTI needs a (C, H, W) or (C, H, W, D) array, got shape {tuple(array.shape)} for '{path}'")
    if array.shape[0] == 1:
        data = array[0]
    elif len(spatial) == 3:
        data = np.moveaxis(array, 0, -1)  # NIfTI keeps channels in the 4th axis; LoadImage moves them back to front
    else:
        # (H, W, C) would read back as a 3-D volume: there is no unambiguous 2-D multi-channel NIfTI.
        raise ValueError(f"2-D multi-channel NIfTI is ambiguous ('{path}', shape {tuple(array.shape)}): write PNG")
    if _is_integer_valued(data) and data.min() >= _INT16.min and data.max() <= _INT16.max:
        data = data.astype(np.int16)
    else:
        data = data.astype(np.float32)
    affine = np.eye(4)
    if spacing is not None:
        spacing = [float(s) for s in spacing]
        if len(spacing) != len(spatial):
            raise ValueError(f"spacing {spacing} has {len(spacing)} values for {len(spatial)} spatial axes ('{path}')")
        affine[: len(spacing), : len(spacing)] = np.diag(spacing)
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)  # no scl_slope/inter: values are stored as they are
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def write_image(path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float] | None = None) -> str:
    """Write a channel-first array so that :func:`read_image` gives back the same shape, orientation and values.

    - ``.png``: 1 (gray) or 3 (RGB) channels, integer values only. Stored as uint8 when all values fit 0..255,
      else (gray only) as uint16 up to 65535. Negative or non-integer values raise ``ValueError`` rather than being
      silently rounded or clipped: window and round first (or use NIfTI). ``spacing`` is ignored (PNG has none).
    - ``.nii`` / ``.nii.gz``: 2-D (1, H, W), 3-D (1, H, W, D) or multi-channel 3-D (C, H, W, D). Stored as int16 when
      every value is an integer within the int16 range (CT in HU), else float32. ``spacing`` (one value per spatial
      axis, mm) goes into the affine; the identity otherwise.

    The file is written to a temporary name in the same folder and renamed into place, so a killed process never
    leaves a half-written file. Accepts numpy arrays and torch tensors. Returns the path written.
    """
    path = Path(path)
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim < 3:
        raise ValueError(f"write_image expects a channel-first array (C, H, W[, D]), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"refusing to write '{path}': the array has {int((~np.isfinite(array)).sum())} NaN/Inf values")
    name = path.name.lower()
    if name.endswith(".png"):
        _write_png(path, array)
    elif name.endswith((".nii", ".nii.gz")):
        _write_nifti(path, array, spacing)
    else:
        raise ValueError(f"cannot write '{path}': use .png, .nii or .nii.gz")
    return str(path)
