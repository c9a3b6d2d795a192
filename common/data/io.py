"""Read and write single images exactly as the training transforms see them.

``read_image`` goes through MONAI ``LoadImage`` (the reader ``LoadImaged`` uses), so an array read here has the same
axis order as a training batch: MONAI's convention, first spatial axis = image x (columns) for PNG/JPG, the NIfTI
voxel axes for NIfTI. ``write_image`` is its exact inverse for PNG and NIfTI.

PNG/JPG/BMP intensities are on the 8-bit scale 0..255 whatever the file's bit depth: a 16-bit grey PNG (0..65535) is
divided by 257 when read (:class:`BitDepthPILReader`), so a window of 0..255 fits 8- and 16-bit files alike. The
training transforms load with :func:`image_loader`, which uses the same reader.

:func:`check_image` is the one policy for a 2-D image's channels and size in a data set (grey or RGB), applied when a
data set is validated (``common.data.labelled_images.validate_images``) and again in the load chains
(``common.data.transforms.CheckImaged``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data.image_reader import PILReader

from common.errors import DataError
from common.fs import atomic_path

__all__ = [
    "CHANNEL_LAYOUTS",
    "IMAGE_SUFFIXES",
    "MIN_SIDE",
    "BitDepthPILReader",
    "check_image",
    "file_stem",
    "has_image_suffix",
    "image_loader",
    "read_image",
    "write_image",
]

#: File endings recognised as images when scanning folders (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm", ".nrrd", ".mha", ".mhd")
#: The channel layouts a data set can declare (see :func:`check_image`).
CHANNEL_LAYOUTS = ("gray", "rgb")
#: Smallest in-plane side (px) of an image that a load chain resizes: a smaller one is refused, not stretched.
MIN_SIDE = 8

_INT16 = np.iinfo(np.int16)
#: Pillow modes of 16-bit grey images ("I" is how older Pillow versions open a 16-bit grey PNG).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
#: Largest difference between the R, G and B values of a pixel (on the 0..255 scale) for an image to count as grey.
_GRAY_TOLERANCE = 1.0


def has_image_suffix(path: str | os.PathLike) -> bool:
    """True when the file name ends with one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its image ending (``a.nii.gz`` -> ``a``, ``b.png`` -> ``b``): a file's default id."""
    name = os.path.basename(str(path).rstrip("/"))
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else os.path.splitext(name)[0]


class BitDepthPILReader(PILReader):
    """MONAI's ``PILReader`` with every PNG/JPG/BMP on the 8-bit scale: 16-bit grey (0..65535) is divided by 257.

    Without it a 16-bit radiograph reaches 65535 and a 0..255 intensity window saturates it to +1 everywhere.
    8-bit, RGB(A) and grey+alpha images are returned as they are (Pillow opens 16-bit RGB PNGs as 8-bit RGB).
    """

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        data, meta = super().get_data(img)
        mode, file_format = meta.get("mode"), meta.get("format")
        if mode in _SIXTEEN_BIT_MODES or (mode == "I" and file_format == "PNG"):
            data = data.astype(np.float32) / 257.0  # 65535 / 255: full scale maps to full scale
        return data, meta


def image_loader(keys, allow_missing_keys: bool = False):
    """``LoadImaged(keys, ensure_channel_first=True, image_only=True)`` reading PNG/JPG with :class:`BitDepthPILReader`.

    The 2-D load chains start with it, so they read exactly what :func:`read_image` reads. The reader is registered
    after MONAI's defaults, so it takes the PIL suffixes (png, jpg, jpeg, bmp) and every other format keeps its
    usual reader.
    """
    from monai.transforms import LoadImaged

    load = LoadImaged(keys, ensure_channel_first=True, image_only=True, allow_missing_keys=allow_missing_keys)
    load.register(BitDepthPILReader())
    return load


_LOCAL = threading.local()


def _loader():
    # Built once per thread: LoadImage registers its readers at construction (costlier than reading a small image),
    # and its readers keep per-call state (the file names), so threads must not share one.
    loader = getattr(_LOCAL, "loader", None)
    if loader is None:
        from monai.transforms import LoadImage

        loader = _LOCAL.loader = LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)
        loader.register(BitDepthPILReader())  # last registered = first tried for its suffixes
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

    PNG/JPG are read by PIL (on the 0..255 scale: 16-bit grey PNGs are divided by 257), NIfTI by nibabel, DICOM (file
    or series folder) by ITK, all through MONAI ``LoadImage`` with ``ensure_channel_first=True``: the same readers
    and axis order as the training transforms (:func:`image_loader`).

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


def _as_numpy(image) -> np.ndarray:
    return image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)


def check_image(image, name: str, *, channels: str | None = None, min_side: int | None = None):
    """Bring one channel-first image ``(C, H, W[, D])`` to its data set's channel layout, or refuse it.

    The one policy for mixed files in a 2-D data set, applied when the data set is validated and in the load chains:

    - ``channels="gray"``: 1 channel is kept; grey + alpha (2) and RGB/RGBA whose R, G and B agree within one grey
      level (a grey image saved as colour, as the Roboflow spine export) become that one grey channel; a colour image
      is refused.
    - ``channels="rgb"``: 3 channels are kept; grey (1) is repeated to 3, RGBA (4) loses its alpha; other channel
      counts (grey + alpha, multi-channel) are refused.
    - ``channels=None``: channels are not looked at.
    - ``min_side``: an image whose in-plane size (the first two spatial axes) is below it is refused: resizing a
      1 x 1 or 3 x 5 image to a training frame would only stretch a blur.

    Works on numpy arrays and torch tensors (a ``MetaTensor`` keeps its metadata). ``name`` (the file) goes into the
    error.

    Raises:
        DataError: ``image '<name>' ...`` with its size or its channel count and what the data set holds.
    """
    if min_side is not None:
        plane = tuple(int(s) for s in image.shape[1:3])
        if plane and min(plane) < min_side:
            size = " x ".join(str(s) for s in plane)
            raise DataError(
                f"image '{name}' is only {size} px: smaller than {min_side} px on a side, too small to resize to a "
                "training image (remove it)"
            )
    if channels is None:
        return image
    count = int(image.shape[0])
    if channels == "gray":
        if count == 1:
            return image
        if count == 2:  # grey + alpha
            return image[:1]
        if count in (3, 4):
            rgb = _as_numpy(image[:3])
            spread = float(max(np.abs(rgb[0] - rgb[1]).max(), np.abs(rgb[0] - rgb[2]).max()))
            if spread <= _GRAY_TOLERANCE:
                return image[:1]
            raise DataError(
                f"image '{name}' is colour ({count} channels whose R, G and B differ by up to {spread:g}); the other "
                "images are grey (1 channel): convert it to grey or remove it"
            )
        raise DataError(f"image '{name}' has {count} channels; the other images are grey (1 channel)")
    if channels == "rgb":
        if count == 3:
            return image
        if count == 4:  # RGBA
            return image[:3]
        if count == 1:
            reps = (3,) + (1,) * (image.ndim - 1)
            return image.repeat(*reps) if hasattr(image, "detach") else np.tile(image, reps)
        raise DataError(
            f"image '{name}' has {count} channels; the other images are RGB (3 channels; grey and RGBA are converted)"
        )
    raise ValueError(f"channels must be one of {CHANNEL_LAYOUTS} or None, got {channels!r}")


def _is_integer_valued(array: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(array)) and np.all(np.round(array) == array))


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    channels = array.shape[0]
    if array.ndim != 3 or channels not in (1, 3):
        raise ValueError(f"PNG needs a (1|3, H, W) array, got shape {tuple(array.shape)} for '{path}'")
    if not _is_integer_valued(array) or array.min() < 0 or array.max() > 255:
        # PNGs are read on the 0..255 scale (16-bit ones divided by 257), so wider values would not read back.
        raise ValueError(
            f"PNG stores integers 0..255 exactly; '{path}' has values in [{array.min():g}, {array.max():g}] "
            "or non-integers: rescale/round first, or write NIfTI"
        )
    # PIL arrays are (rows, cols[, C]); MONAI's PILReader transposes them to (cols, rows), so transpose back here.
    pixels = np.ascontiguousarray(np.moveaxis(array, 0, -1).transpose(1, 0, 2).astype(np.uint8))
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

    - ``.png``: 1 (gray) or 3 (RGB) channels, integers 0..255, stored as uint8 (PNG is read on that scale, see the
      module docstring). Values outside it or non-integers raise ``ValueError`` rather than being silently rounded or
      clipped: window and round first (or use NIfTI). ``spacing`` is ignored (PNG has none).
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
