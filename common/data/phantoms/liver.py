"""Liver lesion CT ROIs (Frid-Adar et al. 2018 stand-in): cysts, metastases and hemangiomas in Hounsfield units.

Each sample is a 2-D portal-venous-phase CT ROI centred on one lesion, built from the radiological traits that
distinguish the three classes, then degraded the way CT degrades them:

- liver parenchyma: 55-70 HU per patient, low-frequency texture (3-7 HU) and mottling, optional hepatic/portal
  vessels (liver + 60-110 HU, i.e. ~120-180 HU) and an optional liver edge with perihepatic fat (about -100 HU);
- cyst (label 0): round/oval, smooth, homogeneous, sharp margin, water density 0-15 HU;
- metastasis (label 1): lobulated, irregular, less sharp margin; hypodense centre 25-45 HU; enhancing rim
  (liver + 20-50 HU scaled by the patient's enhancement, i.e. ~80-110 HU) that is faint in 15 % and incomplete in
  20 %; a necrotic core (5-20 HU) in 40 % of the larger ones;
- hemangioma (label 2): hypodense centre 30-50 HU with 4-8 discontinuous peripheral nodules at near-vessel density
  (liver + 65-105 HU, i.e. ~130-170 HU); centripetal fill in 35 % (5-9 nodules further in, centre partly filled), and
  20 % of the small ones "flash-filling", bright throughout;
- then partial-volume blur (Gaussian, 0.5-0.9 px), correlated CT noise (``noise_hu`` std), rounding to integer HU.

Lesion diameter (8-28 px in a 64-px ROI), position jitter and rotation are drawn per lesion with the same ranges
for every class, so size and position carry no class information. Per patient, the liver density, the contrast
enhancement (bolus timing, a factor 0.75-1.15 on every enhancement) and the noise level (``noise_hu`` x 0.7-1.05,
body habitus / dose) are shared by all of that patient's lesions: images of one patient look alike, which is why
splits must be by patient.

Difficulty (measured while tuning, see the bundle's model card for the protocol's numbers): a 4-block CNN trained
from scratch on the default set (53/64/65, rot90/flip augmentation, 60 epochs, 2/3 of the patients) reaches about
0.70-0.80 accuracy on the held-out third (mean 0.75 over 3 seeds; near Frid-Adar's 78.6 % with classic
augmentation), and 0.93, still rising, after 12 epochs on 1,800 images (tested on 600 of other patients): the
classes are learnable, the default set is data-limited (the regime where augmentation matters), and the remaining
confusions are small cysts taken for metastases and small hemangiomas with few nodules taken for metastases.
``noise_hu`` is the main difficulty knob (at an earlier tuning step, 6 HU instead of 12 raised the default-set
accuracy by about 0.07).

Patients: each has 1-3 lesions (``lesions_per_patient``). Lesions are grouped mostly by class (patients with
metastases usually have several; incidental cysts and hemangiomas are common), and ``mixed_fraction`` of the
lesions are swapped between patients at random, so some patients carry two classes, as in real cohorts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from common.data.phantoms.ct_patches import CTPatchPhantom, smoothstep

__all__ = ["LiverLesionPhantom"]

#: Abdominal window (level 40, width 400) used to store the PNG variant as 8-bit gray.
PNG_WINDOW_HU = (-160.0, 240.0)


class LiverLesionPhantom(CTPatchPhantom):
    """Procedural 3-class liver lesion ROI data set (cyst / metastasis / hemangioma) in HU.

    Args:
        n_per_class: number of lesions of each class, in ``class_names`` order (Frid-Adar's 53/64/65 by default).
        image_size: ROI side in pixels. Sizes, jitter, blur and vessel widths below are given for a 64-px ROI and
            scale with ``image_size / 64`` (the field of view stays the same, as when resampling a real ROI).
        seed: seed of the generator; same spec -> identical files.
        lesions_per_patient: inclusive range of lesions per patient.
        file_format: ``"nii.gz"`` (int16 HU, the default) or ``"png"`` (8-bit, the abdominal window
            ``PNG_WINDOW_HU`` mapped to 0..255).
        noise_hu: standard deviation of the (slightly correlated) CT noise in HU of the noisiest patients (each
            patient's noise is ``noise_hu`` x U(0.7, 1.05)).
        diameter_range: lesion diameter range in pixels of a 64-px ROI.
        jitter: maximum offset of the lesion centre from the ROI centre, in pixels of a 64-px ROI.
        vessel_prob: probability that a ROI shows one or two vessels.
        edge_prob: probability that a ROI includes the liver edge with perihepatic fat.
        mixed_fraction: fraction of lesions swapped between patients, giving patients with mixed classes.
        pixel_mm: pixel spacing at 64 px written into the NIfTI header (scaled with image_size).
    """

    name = "liver_lesion_phantom"
    version = "2"
    class_names = ("cyst", "metastasis", "hemangioma")
    reference_px, patient_prefix = 64, "liv"
    png_window_hu, window_name, suggested_window_hu = PNG_WINDOW_HU, "abdominal", (-100, 250)

    def __init__(
        self,
        n_per_class: Sequence[int] = (53, 64, 65),
        image_size: int = 64,
        seed: int = 0,
        lesions_per_patient: Sequence[int] = (1, 3),
        file_format: str = "nii.gz",
        noise_hu: float = 12.0,
        diameter_range: Sequence[float] = (8.0, 28.0),
        jitter: float = 5.0,
        vessel_prob: float = 0.35,
        edge_prob: float = 0.2,
        mixed_fraction: float = 0.2,
        pixel_mm: float = 0.8,
    ) -> None:
        super().__init__(
            n_per_class, image_size, seed, lesions_per_patient, file_format, noise_hu, diameter_range, jitter,
            mixed_fraction, pixel_mm,
        )  # fmt: skip
        self.vessel_prob = float(vessel_prob)
        self.edge_prob = float(edge_prob)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "vessel_prob": self.vessel_prob, "edge_prob": self.edge_prob}

    def new_patient(self, rng: np.random.Generator, patient_id: str) -> dict[str, Any]:
        return {
            "id": patient_id,
            "liver_hu": rng.uniform(55.0, 70.0),
            "enhancement": rng.uniform(0.75, 1.15),
            "noise": self.noise_hu * rng.uniform(0.7, 1.05),
            "texture": rng.uniform(3.0, 7.0),
        }

    def render(self, rng: np.random.Generator, label: int, patient: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """One ROI of class ``label`` for ``patient``: a (H, W) float array of integer HU, plus descriptive extras."""
        n = self.image_size
        s = n / 64.0
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5 - n / 2.0
        enh = patient["enhancement"]
        liver = patient["liver_hu"]

        # Parenchyma: per-patient density, low-frequency heterogeneity and a finer mottling.
        low = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma=8.0 * s, mode="wrap")
        mid = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma=2.0 * s, mode="wrap")
        image = liver + patient["texture"] * low / (low.std() + 1e-8) + 2.0 * mid / (mid.std() + 1e-8)

        # Lesion geometry, drawn before the surroundings so that vessels and the liver edge can avoid it.
        diameter = rng.uniform(*self.diameter_range) * s
        radius = diameter / 2.0
        cx, cy = rng.uniform(-self.jitter, self.jitter, size=2) * s
        angle = rng.uniform(0, 2 * math.pi)

        if rng.random() < self.vessel_prob:
            for _ in range(int(rng.integers(1, 3))):
                image += self._vessel(rng, xx, yy, (cx, cy), radius, s) * enh * rng.uniform(60.0, 110.0)
        if rng.random() < self.edge_prob:
            image = self._liver_edge(rng, image, xx, yy, (cx, cy), radius, s)

        # Normalised radius rho (0 at the centre, 1 on the margin) of a rotated, possibly lobulated ellipse.
        u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
        v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
        if label == 0:
            aspect, lobes = rng.uniform(0.75, 1.0), self._harmonics(rng, range(2, 4), 0.0, 0.03)
            margin_px = rng.uniform(0.3, 0.6)
        elif label == 1:
            aspect, lobes = rng.uniform(0.65, 1.0), self._harmonics(rng, range(3, 7), 0.04, 0.14)
            lobes += self._harmonics(rng, range(7, 12), 0.0, 0.03)
            margin_px = rng.uniform(0.8, 1.6)
        else:
            aspect, lobes = rng.uniform(0.7, 1.0), self._harmonics(rng, range(2, 5), 0.0, 0.07)
            margin_px = rng.uniform(0.5, 1.1)
        v = v / aspect
        r = np.hypot(u, v)
        theta = np.arctan2(v, u)
        boundary = radius * (1.0 + sum(a * np.cos(k * theta + p) for k, a, p in lobes))
        rho = r / np.maximum(boundary, 1e-3)

        outer = 1.0  # where the soft margin is centred, in rho units
        if label == 0:
            lesion, variant = np.full_like(image, self._cyst(rng)), "cyst"
        elif label == 1:
            lesion, variant, rim_width = self._metastasis(rng, rho, theta, radius / s, liver, enh)
            # The enhancing rim is the lesion's periphery: centre the soft margin beyond it, or the margin's
            # transition would wash the rim out.
            outer = 1.0 + 0.5 * rim_width
        else:
            lesion, variant = self._hemangioma(rng, rho, theta, u, v, radius, liver, enh, s)
        # Soft inside-mask: the transition width (in px) is the margin sharpness of the class.
        inside = 1.0 / (1.0 + np.exp(-(outer - rho) * radius / (margin_px * s)))
        image = image * (1.0 - inside) + lesion * inside

        # Partial volume: the lesion and everything else is seen through the slice profile and the in-plane PSF.
        image = self.degrade(rng, image, patient["noise"], blur_px=(0.5, 0.9), grain_px=0.6)
        return image, {"diameter_px": round(float(diameter), 1), "variant": variant}

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _harmonics(rng: np.random.Generator, orders: range, lo: float, hi: float) -> list[tuple[int, float, float]]:
        return [(k, rng.uniform(lo, hi), rng.uniform(0, 2 * math.pi)) for k in orders]

    @staticmethod
    def _cyst(rng: np.random.Generator) -> float:
        # Simple cysts: water density, homogeneous (no internal structure; the noise is the only texture).
        return rng.uniform(0.0, 15.0)

    @staticmethod
    def _metastasis(
        rng: np.random.Generator, rho: np.ndarray, theta: np.ndarray, radius_64: float, liver: float, enh: float
    ) -> tuple[np.ndarray, str, float]:
        core = rng.uniform(25.0, 45.0)
        variant = "rim"
        rim_gain = rng.uniform(20.0, 50.0)
        if rng.random() < 0.15:  # hypovascular metastasis: faint rim, a plain hypodense lesion
            rim_gain, variant = rng.uniform(5.0, 15.0), "faint_rim"
        rim = liver + enh * rim_gain
        # Rim band as a fraction of the radius; at least ~1.6 px so that small lesions still show a rim.
        width = min(0.6, max(rng.uniform(0.22, 0.4), 1.6 / radius_64))
        # Rim weight rises over the inner 40 % of the rim band and stays up to the margin.
        rim_w = smoothstep((rho - (1.0 - width)) / (0.4 * width))
        if rng.random() < 0.2:  # incomplete rim: enhancement missing over part of the circumference
            gap_centre, gap_half = rng.uniform(0, 2 * math.pi), rng.uniform(0.4, 1.2)
            dist = np.abs(np.angle(np.exp(1j * (theta - gap_centre))))
            rim_w = rim_w * smoothstep((dist - gap_half) / 0.4)
            variant += "_incomplete"
        lesion = core + (rim - core) * rim_w
        if radius_64 > 6.0 and rng.random() < 0.4:  # necrotic core in larger lesions
            necrotic = rng.uniform(5.0, 20.0)
            lesion = lesion + (necrotic - lesion) * (1.0 - smoothstep((rho - rng.uniform(0.2, 0.45)) / 0.15))
            variant += "_necrotic"
        return lesion, variant, width

    @staticmethod
    def _hemangioma(
        rng: np.random.Generator,
        rho: np.ndarray,
        theta: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        radius: float,
        liver: float,
        enh: float,
        s: float,
    ) -> tuple[np.ndarray, str]:
        nodule_hu = liver + enh * rng.uniform(65.0, 105.0)
        if radius / s < 6.0 and rng.random() < 0.2:  # small flash-filling hemangioma: bright throughout
            return np.full_like(rho, liver + enh * rng.uniform(50.0, 90.0)), "flash_fill"
        centre = rng.uniform(30.0, 50.0)
        if rng.random() < 0.35:  # centripetal fill under way: nodules further in, centre partly enhanced
            variant, n_nod, ring = "centripetal", int(rng.integers(5, 10)), (0.45, 0.8)
            centre = centre + rng.uniform(0.15, 0.35) * (nodule_hu - centre)
        else:
            variant, n_nod, ring = "peripheral_nodular", int(rng.integers(4, 9)), (0.7, 0.92)
        lesion = np.full_like(rho, centre)
        weight = np.zeros_like(rho)
        for _ in range(n_nod):
            phi = rng.uniform(0, 2 * math.pi)
            pos = rng.uniform(*ring) * radius
            size = max(1.6 * s, rng.uniform(0.14, 0.28) * radius)
            du = u - pos * math.cos(phi)
            dv = v - pos * math.sin(phi)
            weight = np.maximum(weight, np.exp(-(du * du + dv * dv) / (2.0 * size * size)))
        lesion = lesion + (nodule_hu - lesion) * weight
        return lesion, variant

    @staticmethod
    def _vessel(
        rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, centre: tuple[float, float], radius: float, s: float
    ) -> np.ndarray:
        """Weight map (0..1) of a gently curved tube that passes beside the lesion (vessels are displaced by it)."""
        direction = rng.uniform(0, math.pi)
        t = np.array([math.cos(direction), math.sin(direction)])
        normal = np.array([-t[1], t[0]])
        offset = (radius + rng.uniform(3.0, 14.0) * s) * rng.choice([-1.0, 1.0])
        px, py = centre[0] + normal[0] * offset, centre[1] + normal[1] * offset
        along = (xx - px) * t[0] + (yy - py) * t[1]
        across = (xx - px) * normal[0] + (yy - py) * normal[1]
        curvature = rng.uniform(-0.005, 0.005) / s
        dist = across - curvature * along**2
        width = rng.uniform(0.8, 2.0) * s
        return np.exp(-(dist**2) / (2.0 * width * width))

    @staticmethod
    def _liver_edge(
        rng: np.random.Generator,
        image: np.ndarray,
        xx: np.ndarray,
        yy: np.ndarray,
        centre: tuple[float, float],
        radius: float,
        s: float,
    ) -> np.ndarray:
        """Replace the region beyond a curved liver capsule (away from the lesion) by perihepatic fat."""
        n = image.shape[0]
        direction = rng.uniform(0, 2 * math.pi)
        t = np.array([math.cos(direction), math.sin(direction)])
        # Capsule beyond the lesion: at least 4 px (64-px scale) outside its margin, and no nearer than 0.28 n.
        distance = max(0.28 * n, t[0] * centre[0] + t[1] * centre[1] + radius + 4.0 * s) + rng.uniform(0, 0.1 * n)
        proj = xx * t[0] + yy * t[1]
        lateral = -xx * t[1] + yy * t[0]
        capsule = distance + rng.uniform(-0.006, 0.006) / s * lateral**2
        outside = smoothstep((proj - capsule) / (1.5 * s) + 0.5)
        fat = rng.uniform(-115.0, -80.0) + 6.0 * ndimage.gaussian_filter(rng.standard_normal((n, n)), 3.0 * s)
        return image * (1.0 - outside) + fat * outside
