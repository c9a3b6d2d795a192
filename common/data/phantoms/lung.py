"""Lung CT imaging-sign patches (He et al. 2019 stand-in): ground glass, calcification, cavity, spiculation,
lobulation and normal parenchyma, in Hounsfield units.

Each sample is a small 2-D lung-window CT patch centred on one finding (or on nothing, for ``normal``), built from
the radiological traits that define the sign, then degraded the way CT degrades them:

- parenchyma: -870..-820 HU per patient with a low-frequency texture (8-20 HU); 0-2 vessels, i.e. gently curved
  tubes 0.4-1.2 px wide (32-px scale) at -150..+40 HU after partial volume, some seen end-on as small round dots;
- ground_glass (label 0): a hazy area -700..-450 HU with a soft (1.5-3 px) irregular margin; vessels stay visible
  through it (the haze is added to what is there, it does not replace it); 30 % have a small solid core
  (part-solid, as in LIDC's "part-solid / mixed" texture);
- calcification (label 1): a small sharp round nodule, either calcified throughout (250-900 HU), or a soft-tissue
  nodule (10-50 HU) with a central, laminated (ring) or popcorn (3-5 blobs) calcification of 200-700 HU;
- cavity (label 2): a soft-tissue wall (10-50 HU) of irregular thickness (1.2-4 px) around an eccentric air-filled
  lumen (-990..-930 HU, darker than the lung around it);
- spiculation (label 3): a soft-tissue nodule (10-50 HU) with mild lobulation and 6-14 thin spicules radiating
  0.6-1.6 radii into the lung, fading outwards;
- lobulation (label 4): a soft-tissue nodule (10-50 HU) with a scalloped margin (harmonics of order 2-5, amplitude
  0.12-0.24) and no spicules;
- normal (label 5): parenchyma and vessels only; in half of them a vessel crosses the centre, end-on (a round dot
  1.5-3 px, the classic nodule mimic) or in plane;
- then partial-volume blur (Gaussian, 0.4-0.7 px), correlated CT noise (``noise_hu`` std per patient x 0.7-1.05),
  rounding to integer HU.

Nodule diameter (``diameter_range``, 32-px scale) and position jitter are drawn with the same ranges for the solid
classes, so size carries little class information; spiculated nodules have some lobulation and lobulated ones are
smooth, so the two overlap at their low ends, as in reader ratings. Patients have 1-3 patches, grouped mostly by
class with ``mixed_fraction`` swapped between patients (shared density and noise make one patient's patches alike:
splits must be by patient).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from common.data.phantoms.ct_patches import CTPatchPhantom

__all__ = ["LungSignPhantom"]

#: Lung window (level -600, width 1500) used to store the PNG variant as 8-bit gray.
PNG_WINDOW_HU = (-1350.0, 150.0)


def _soft_inside(rho: np.ndarray, radius_px: float, margin_px: float) -> np.ndarray:
    """Soft indicator of ``rho < 1`` whose transition is ``margin_px`` pixels wide at a boundary of ``radius_px``."""
    return 1.0 / (1.0 + np.exp(-np.clip((1.0 - rho) * radius_px / max(margin_px, 1e-3), -50.0, 50.0)))


class LungSignPhantom(CTPatchPhantom):
    """Procedural 6-class lung CT imaging-sign patch set in HU (see the module docstring for each class).

    Args:
        n_per_class: patches of each class, in ``class_names`` order.
        image_size: patch side in pixels. Sizes, widths and blur below are given for a 32-px patch and scale with
            ``image_size / 32`` (same field of view, as when resampling a real patch).
        seed: seed of the generator; same spec -> identical files.
        lesions_per_patient: inclusive range of patches per patient.
        file_format: ``"nii.gz"`` (int16 HU) or ``"png"`` (8-bit, the lung window ``PNG_WINDOW_HU``).
        noise_hu: CT noise std in HU of the noisiest patients.
        diameter_range: nodule diameter range in pixels of a 32-px patch.
        jitter: maximum offset of the finding from the patch centre (pixels of a 32-px patch).
        mixed_fraction: fraction of patches swapped between patients (patients with several signs).
        pixel_mm: pixel spacing at 32 px written into the NIfTI header (scaled with image_size).
    """

    name = "lung_sign_phantom"
    version = "1"
    class_names = ("ground_glass", "calcification", "cavity", "spiculation", "lobulation", "normal")
    reference_px, patient_prefix = 32, "lung"
    png_window_hu, window_name, suggested_window_hu = PNG_WINDOW_HU, "lung", (-1000, 400)

    def __init__(
        self,
        n_per_class: Sequence[int] = (40, 40, 40, 40, 40, 40),
        image_size: int = 32,
        seed: int = 0,
        lesions_per_patient: Sequence[int] = (1, 3),
        file_format: str = "nii.gz",
        noise_hu: float = 60.0,
        diameter_range: Sequence[float] = (7.0, 16.0),
        jitter: float = 2.5,
        mixed_fraction: float = 0.2,
        pixel_mm: float = 0.95,
    ) -> None:
        super().__init__(
            n_per_class, image_size, seed, lesions_per_patient, file_format, noise_hu, diameter_range, jitter,
            mixed_fraction, pixel_mm,
        )  # fmt: skip

    def new_patient(self, rng: np.random.Generator, patient_id: str) -> dict[str, Any]:
        return {
            "id": patient_id,
            "lung_hu": rng.uniform(-870.0, -820.0),
            "texture": rng.uniform(8.0, 20.0),
            "noise": self.noise_hu * rng.uniform(0.7, 1.05),
        }

    def render(self, rng: np.random.Generator, label: int, patient: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """One patch of class ``label`` for ``patient``: a (H, W) float array of integer HU, plus descriptive extras."""
        n = self.image_size
        s = n / 32.0
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5 - n / 2.0
        low = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma=4.0 * s, mode="wrap")
        image = patient["lung_hu"] + patient["texture"] * low / (low.std() + 1e-8)
        lung = float(patient["lung_hu"])

        diameter = rng.uniform(*self.diameter_range) * s
        radius = diameter / 2.0
        cx, cy = rng.uniform(-self.jitter, self.jitter, size=2) * s
        u, v = xx - cx, yy - cy
        r = np.hypot(u, v)
        theta = np.arctan2(v, u)

        for _ in range(int(rng.integers(0, 3))):  # background vessels, away from the centre
            image += self._vessel(rng, xx, yy, offset=rng.uniform(radius + 2.0 * s, 0.5 * n), s=s) * (
                rng.uniform(-150.0, 40.0) - lung
            )

        variant = self.class_names[label]
        if label == 0:
            variant = self._ground_glass(rng, image, r, theta, radius, lung, s)
        elif label == 1:
            image, variant = self._calcification(rng, image, u, v, r, radius, s)
        elif label == 2:
            image = self._cavity(rng, image, u, v, r, theta, radius, s)
        elif label == 3:
            image = self._spiculated(rng, image, u, v, r, theta, radius, s)
        elif label == 4:
            boundary = radius * (1.0 + self._lobes(rng, theta, range(2, 6), 0.12, 0.24, total=0.45))
            inside = _soft_inside(r / np.maximum(boundary, 1e-3), radius, rng.uniform(0.4, 0.8) * s)
            image = image + (rng.uniform(10.0, 50.0) - image) * inside
        else:
            variant = self._normal(rng, image, xx, yy, cx, cy, lung, s)

        image = self.degrade(rng, image, patient["noise"], blur_px=(0.4, 0.7), grain_px=0.5)
        return image, {"diameter_px": round(float(diameter), 1), "variant": variant}

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _lobes(
        rng: np.random.Generator, theta: np.ndarray, orders: range, lo: float, hi: float, total: float | None = None
    ) -> np.ndarray:
        """Sum of harmonics ``a_k cos(k theta + phi_k)``; ``total`` caps the summed amplitude (the radius stays > 0)."""
        amps = rng.uniform(lo, hi, size=len(orders))
        if total is not None and amps.sum() > total:
            amps = amps * total / amps.sum()
        phases = rng.uniform(0, 2 * math.pi, size=len(orders))
        return sum(a * np.cos(k * theta + p) for k, a, p in zip(orders, amps, phases, strict=True))

    @staticmethod
    def _vessel(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, offset: float, s: float) -> np.ndarray:
        """Weight map (0..1) of a gently curved tube at distance ``offset`` from the centre."""
        direction = rng.uniform(0, math.pi)
        t = np.array([math.cos(direction), math.sin(direction)])
        normal = np.array([-t[1], t[0]]) * rng.choice([-1.0, 1.0])
        px, py = normal * offset
        along = (xx - px) * t[0] + (yy - py) * t[1]
        across = (xx - px) * normal[0] + (yy - py) * normal[1]
        dist = across - rng.uniform(-0.006, 0.006) / s * along**2
        width = rng.uniform(0.4, 1.2) * s
        return np.exp(-(dist**2) / (2.0 * width * width))

    def _ground_glass(self, rng, image, r, theta, radius, lung, s) -> str:
        # Larger and fainter than a solid nodule: a hazy area whose margin fades over 1.5-3 px.
        radius = radius * rng.uniform(1.0, 1.4)
        boundary = radius * (1.0 + self._lobes(rng, theta, range(2, 5), 0.03, 0.12, total=0.3))
        inside = _soft_inside(r / np.maximum(boundary, 1e-3), radius, rng.uniform(1.5, 3.0) * s)
        haze = rng.uniform(-700.0, -450.0) - lung
        n = image.shape[0]
        grain = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma=1.0 * s, mode="wrap")
        # Added to what is there: vessels inside the ground glass stay visible (it does not obscure them).
        image += inside * (haze + 25.0 * grain / (grain.std() + 1e-8))
        if rng.random() < 0.3:  # part-solid: a small solid component
            core = _soft_inside(r / (radius * rng.uniform(0.25, 0.4)), radius * 0.3, 0.5 * s)
            image += core * (rng.uniform(-50.0, 30.0) - image)
            return "part_solid"
        return "ground_glass"

    @staticmethod
    def _calcification(rng, image, u, v, r, radius, s) -> tuple[np.ndarray, str]:
        if rng.random() < 0.4:  # calcified granuloma: small, round, sharp, dense throughout
            rad = radius * rng.uniform(0.45, 0.8)
            inside = _soft_inside(r / rad, rad, 0.3 * s)
            return image + (rng.uniform(250.0, 900.0) - image) * inside, "dense"
        inside = _soft_inside(r / radius, radius, rng.uniform(0.3, 0.6) * s)
        image = image + (rng.uniform(10.0, 50.0) - image) * inside
        calc_hu = rng.uniform(200.0, 700.0)
        pattern = rng.choice(["central", "laminated", "popcorn"])
        if pattern == "central":
            w = _soft_inside(r / (radius * rng.uniform(0.3, 0.5)), radius * 0.4, 0.4 * s)
        elif pattern == "laminated":
            ring = radius * rng.uniform(0.45, 0.7)
            w = np.exp(-((r - ring) ** 2) / (2.0 * (0.6 * s) ** 2))
        else:
            w = np.zeros_like(r)
            for _ in range(int(rng.integers(3, 6))):
                phi, pos = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.6) * radius
                du, dv = u - pos * math.cos(phi), v - pos * math.sin(phi)
                size = max(0.7 * s, rng.uniform(0.12, 0.22) * radius)
                w = np.maximum(w, np.exp(-(du * du + dv * dv) / (2.0 * size * size)))
        return image + (calc_hu - image) * w * inside, str(pattern)

    def _cavity(self, rng, image, u, v, r, theta, radius, s) -> np.ndarray:
        radius = max(radius, 4.0 * s)
        boundary = radius * (1.0 + self._lobes(rng, theta, range(2, 5), 0.02, 0.1, total=0.25))
        outer = _soft_inside(r / np.maximum(boundary, 1e-3), radius, rng.uniform(0.4, 0.9) * s)
        image = image + (rng.uniform(10.0, 50.0) - image) * outer
        # Lumen: eccentric, so the wall's thickness varies around the circumference (thick-walled cavities).
        wall = rng.uniform(1.2, 4.0) * s
        lumen_r = max(1.0 * s, radius - wall)
        shift = rng.uniform(0.0, 0.6) * (radius - lumen_r)
        phi = rng.uniform(0, 2 * math.pi)
        lr = np.hypot(u - shift * math.cos(phi), v - shift * math.sin(phi))
        lumen = _soft_inside(lr / lumen_r, lumen_r, 0.4 * s)
        return image + (rng.uniform(-990.0, -930.0) - image) * lumen

    def _spiculated(self, rng, image, u, v, r, theta, radius, s) -> np.ndarray:
        nodule_hu = rng.uniform(10.0, 50.0)
        boundary = radius * (1.0 + self._lobes(rng, theta, range(2, 6), 0.0, 0.1, total=0.25))
        inside = _soft_inside(r / np.maximum(boundary, 1e-3), radius, rng.uniform(0.6, 1.1) * s)
        spicules = np.zeros_like(r)
        for _ in range(int(rng.integers(6, 15))):
            phi = rng.uniform(0, 2 * math.pi)
            length = radius * rng.uniform(0.6, 1.6)
            width = rng.uniform(0.4, 0.8) * s
            along = u * math.cos(phi) + v * math.sin(phi)
            across = -u * math.sin(phi) + v * math.cos(phi)
            extent = (along - radius * 0.8) / length  # 0 at the margin, 1 at the tip
            fade = np.where((extent > 0) & (extent < 1), 1.0 - extent, 0.0) + (extent <= 0) * (along > 0)
            spicules = np.maximum(spicules, fade * np.exp(-(across**2) / (2.0 * width * width)))
        weight = np.maximum(inside, spicules)
        return image + (nodule_hu - image) * weight

    def _normal(self, rng, image, xx, yy, cx, cy, lung, s) -> str:
        if rng.random() < 0.5:
            return "parenchyma"
        if rng.random() < 0.5:  # a vessel seen end-on: a small round dot, the classic nodule mimic
            rad = rng.uniform(0.75, 1.5) * s
            dot = _soft_inside(np.hypot(xx - cx, yy - cy) / rad, rad, 0.4 * s)
            image += dot * (rng.uniform(-60.0, 40.0) - image)
            return "vessel_end_on"
        image += self._vessel(rng, xx, yy, offset=rng.uniform(0.0, 2.0) * s, s=s) * (rng.uniform(-120.0, 40.0) - lung)
        return "vessel_in_plane"
