"""What the two CT patch phantoms (liver lesion ROIs, lung imaging-sign patches) share: lesions of several classes
grouped into patients, per-patient look (density, texture, noise), CT degradation and storage in HU or as an 8-bit
window. Each subclass draws its own patient traits (:meth:`CTPatchPhantom.new_patient`) and renders its classes
(:meth:`CTPatchPhantom.render`); the random draws happen in the same order as before this base existed, so the
files of a given spec are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from common.data.phantoms.base import Phantom

__all__ = ["CTPatchPhantom", "smoothstep"]


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a cubic ramp in between: soft lesion margins and blends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class CTPatchPhantom(Phantom):
    """Base of the 2-D CT patch phantoms. Subclasses set the class attributes below and implement
    :meth:`new_patient` and :meth:`render`.

    Args:
        n_per_class: patches of each class, in ``class_names`` order.
        image_size: patch side in pixels; sizes given "in pixels" are those of a ``reference_px`` patch and scale
            with ``image_size / reference_px`` (the field of view stays the same, as when resampling a real patch).
        seed: seed of the generator; same spec -> identical files.
        lesions_per_patient: inclusive range of patches per patient.
        file_format: ``"nii.gz"`` (int16 HU) or ``"png"`` (8-bit, ``png_window_hu`` mapped to 0..255).
        noise_hu: CT noise std in HU of the noisiest patients (each patient's is ``noise_hu`` x U(0.7, 1.05)).
        diameter_range: lesion diameter range in pixels of a ``reference_px`` patch.
        jitter: maximum offset of the lesion centre from the patch centre, in pixels of a ``reference_px`` patch.
        mixed_fraction: fraction of patches swapped between patients, giving patients with mixed classes.
        pixel_mm: pixel spacing at ``reference_px`` written into the NIfTI header (scaled with image_size).
    """

    #: side of the patch that sizes, widths and blurs are given for
    reference_px: int = 64
    #: prefix of the patient ids (``<prefix>0001``)
    patient_prefix: str = "ct"
    #: the window stored in the PNG variant, its name, and the window suggested for viewing the HU files
    png_window_hu: tuple[float, float] = (-160.0, 240.0)
    window_name: str = "abdominal"
    suggested_window_hu: tuple[float, float] = (-100.0, 250.0)

    def __init__(
        self,
        n_per_class: Sequence[int],
        image_size: int,
        seed: int,
        lesions_per_patient: Sequence[int],
        file_format: str,
        noise_hu: float,
        diameter_range: Sequence[float],
        jitter: float,
        mixed_fraction: float,
        pixel_mm: float,
    ) -> None:
        super().__init__(seed=seed, file_format=file_format)
        if len(n_per_class) != len(self.class_names) or min(n_per_class) < 0:
            raise ValueError(f"n_per_class needs {len(self.class_names)} non-negative counts, got {n_per_class}")
        lo, hi = (int(v) for v in lesions_per_patient)
        if not 1 <= lo <= hi:
            raise ValueError(f"lesions_per_patient must be (lo, hi) with 1 <= lo <= hi, got {lesions_per_patient}")
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        self.n_per_class = tuple(int(n) for n in n_per_class)
        self.image_size = int(image_size)
        self.lesions_per_patient = (lo, hi)
        self.noise_hu = float(noise_hu)
        self.diameter_range = (float(diameter_range[0]), float(diameter_range[1]))
        self.jitter = float(jitter)
        self.mixed_fraction = float(mixed_fraction)
        self.pixel_mm = float(pixel_mm)

    def spec(self) -> dict[str, Any]:
        return {
            **super().spec(),
            "n_per_class": list(self.n_per_class),
            "image_size": self.image_size,
            "lesions_per_patient": list(self.lesions_per_patient),
            "noise_hu": self.noise_hu,
            "diameter_range": list(self.diameter_range),
            "jitter": self.jitter,
            "mixed_fraction": self.mixed_fraction,
            "pixel_mm": self.pixel_mm,
        }

    def meta(self) -> dict[str, Any]:
        if self.file_format == "png":
            unit = f"uint8 ({self.window_name} window)"
            return {"intensity": {"unit": unit, "window_hu": list(self.png_window_hu), "range": [0, 255]}}
        return {"intensity": {"unit": "HU", "range": [-1024, 3071], "suggested_window": list(self.suggested_window_hu)}}

    # ------------------------------------------------------------------ patients
    def patients(self, rng: np.random.Generator) -> list[list[int]]:
        """Group the patch labels into patients: a list of label lists, each ``lesions_per_patient`` long at most,
        with exact class counts."""
        labels = np.concatenate([np.full(n, c) for c, n in enumerate(self.n_per_class)]).astype(int)
        # Sorted by class, then random swaps of positions: mostly one class per patient, some mixed.
        n = len(labels)
        n_swap = int(round(self.mixed_fraction * n / 2))
        for _ in range(n_swap):
            i, j = rng.integers(0, n, size=2)
            labels[i], labels[j] = labels[j], labels[i]
        groups, start = [], 0
        lo, hi = self.lesions_per_patient
        while start < n:
            size = int(rng.integers(lo, hi + 1))
            groups.append(labels[start : start + size].tolist())
            start += size
        return groups

    def new_patient(self, rng: np.random.Generator, patient_id: str) -> dict[str, Any]:
        """The traits all of one patient's patches share: ``{"id": patient_id, "noise": HU std, ...}``."""
        raise NotImplementedError

    def render(self, rng: np.random.Generator, label: int, patient: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """One patch of class ``label`` for ``patient``: a (H, W) float array (HU or the PNG window's 0..255, see
        :meth:`degrade`), plus descriptive extras."""
        raise NotImplementedError

    # ------------------------------------------------------------------ generation
    def generate(self) -> Iterator[dict[str, Any]]:
        rng = self.rng()
        groups = self.patients(rng)
        spacing = (self.pixel_mm * self.reference_px / self.image_size,) * 2
        for index, labels in enumerate(groups, start=1):
            patient = self.new_patient(rng, f"{self.patient_prefix}{index:04d}")
            for label in labels:
                image, info = self.render(rng, int(label), patient)
                yield {
                    "array": image[None].astype(np.float32),
                    "label": int(label),
                    "patient": patient["id"],
                    "spacing": spacing,
                    **info,
                }

    def degrade(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        noise_hu: float,
        blur_px: tuple[float, float],
        grain_px: float,
    ) -> np.ndarray:
        """What CT does to the ideal patch: partial-volume blur (Gaussian, ``blur_px`` range), correlated noise of
        std ``noise_hu`` (white noise smoothed by ``grain_px``), integer HU in the int16 range; then, for the PNG
        variant, the window mapped to 0..255. Sizes in pixels of a ``reference_px`` patch."""
        s = self.image_size / self.reference_px
        image = ndimage.gaussian_filter(image, sigma=rng.uniform(*blur_px) * s, mode="nearest")
        noise = ndimage.gaussian_filter(rng.standard_normal(image.shape), sigma=grain_px * s, mode="wrap")
        image = image + noise_hu * noise / (noise.std() + 1e-8)
        image = np.clip(np.round(image), -1024, 3071)
        if self.file_format == "png":
            lo, hi = self.png_window_hu
            image = np.round(np.clip((image - lo) / (hi - lo), 0.0, 1.0) * 255.0)
        return image
