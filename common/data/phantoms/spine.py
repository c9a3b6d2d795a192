"""AP (frontal) spine radiographs, normal vs abnormal: the SpineGAN (Schonfeld & Veeravagu 2022) stand-in.

Each sample is a square 8-bit grayscale radiograph (bone bright, air dark, as radiographs are displayed) of the
thoracolumbar spine, built from the anatomy a reader checks on an AP film:

- trunk soft tissue with darker lung fields in the upper half;
- 17 vertebral bodies (T1-L5) along a centreline, growing in height and width caudally, with a brighter cortical
  rim, two pedicle rings and a midline spinous process each, separated by radiolucent disc spaces;
- 12 pairs of ribs (elliptical arcs) leaving the thoracic vertebrae and curving down and out over the lungs;
- the pelvis: sacrum below L5 and two iliac wings;
- then detector blur, quantum noise and a per-patient exposure (brightness, contrast, gamma).

Normal (label 0): a straight spine up to mild physiological asymmetry (lateral deviation <= 2 % of the width, whole
spine tilted by up to 3 degrees), the same size and exposure variation as the abnormal class.
Abnormal (label 1): one or two of the findings SpineGAN's "abnormal" class covered, each with a random severity from
subtle to obvious:

- ``scoliosis``: a lateral S- or C-curve of 4-13 % of the width, with axial rotation (pedicles shift to the convex
  side) and wedged vertebrae at the apex;
- ``fracture``: one vertebral body compressed to 45-75 % of its height, wedged, slightly denser (sclerotic);
- ``disc_narrowing``: one to three disc spaces reduced to 15-45 % of their height;
- ``osteophytes``: bony spurs at the corners of two to five lumbar or lower thoracic vertebrae;
- ``implant``: posterior instrumentation, two metal rods and pedicle screws over four to seven levels (saturated white).

The item's ``findings`` key lists them. Mild cases are hard on purpose: a classifier should not be perfect at 64 px.
One image per patient (``patient`` = image id), so splits by patient are splits by image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from common.data.phantoms.base import Phantom

__all__ = ["FINDINGS", "SpinePhantom"]

FINDINGS = ("scoliosis", "fracture", "disc_narrowing", "osteophytes", "implant")
N_VERTEBRAE = 17  # T1-T12, L1-L5
N_THORACIC = 12


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class SpinePhantom(Phantom):
    """Procedural normal / abnormal AP spine radiographs as 8-bit PNG.

    Args:
        n_per_class: images of each class (normal, abnormal).
        image_size: side in pixels (square).
        seed: same spec -> identical files.
        noise: std of the quantum noise as a fraction of the full range (per patient x 0.6-1.4).
        findings: the abnormal findings to draw from (subset of ``FINDINGS``).
    """

    name = "spine_phantom"
    version = "1"
    class_names = ("normal", "abnormal")
    file_formats = ("png",)

    def __init__(
        self,
        n_per_class: Sequence[int] = (200, 200),
        image_size: int = 256,
        seed: int = 0,
        noise: float = 0.03,
        findings: Sequence[str] = FINDINGS,
        file_format: str = "png",
    ) -> None:
        super().__init__(seed=seed, file_format=file_format)
        if len(n_per_class) != 2 or min(n_per_class) < 0:
            raise ValueError(f"n_per_class needs 2 non-negative counts (normal, abnormal), got {n_per_class}")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {image_size}")
        unknown = [f for f in findings if f not in FINDINGS]
        if unknown or not findings:
            raise ValueError(f"findings must be a non-empty subset of {FINDINGS}, got {list(findings)}")
        self.n_per_class = tuple(int(n) for n in n_per_class)
        self.image_size = int(image_size)
        self.noise = float(noise)
        self.findings = tuple(findings)

    def spec(self) -> dict[str, Any]:
        return {
            **super().spec(),
            "n_per_class": list(self.n_per_class),
            "image_size": self.image_size,
            "noise": self.noise,
            "findings": list(self.findings),
        }

    def meta(self) -> dict[str, Any]:
        return {"intensity": {"unit": "uint8 radiograph (bone bright)", "range": [0, 255]}, "view": "AP"}

    def generate(self) -> Iterator[dict[str, Any]]:
        rng = self.rng()
        labels = np.concatenate([np.zeros(self.n_per_class[0], int), np.ones(self.n_per_class[1], int)])
        rng.shuffle(labels)
        for index, label in enumerate(labels, start=1):
            findings: list[str] = []
            if label == 1:
                k = 1 if rng.random() < 0.7 else 2
                findings = sorted(rng.choice(self.findings, size=min(k, len(self.findings)), replace=False).tolist())
            image = self.render(rng, findings)
            yield {
                "array": image.T[None].astype(np.float32),  # (C, x, y): MONAI's PNG axis order, so the file is upright
                "label": int(label),
                "patient": f"sp{index:04d}",
                "findings": ",".join(findings) or "none",
            }

    # ------------------------------------------------------------------ rendering
    def render(self, rng: np.random.Generator, findings: Sequence[str]) -> np.ndarray:
        """One radiograph with ``findings`` (empty: normal): an (H, W) array of integers 0..255."""
        n = self.image_size
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / n  # unit coordinates, y down
        # trunk and lungs
        body_w = rng.uniform(0.36, 0.46)
        cx0 = 0.5 + rng.uniform(-0.03, 0.03)
        img = 0.18 * _sigmoid((body_w - np.abs(xx - cx0)) * 60.0)
        lung_y = rng.uniform(0.08, 0.12)
        for side in (-1, 1):
            lx = cx0 + side * rng.uniform(0.17, 0.21)
            d = ((xx - lx) / rng.uniform(0.11, 0.14)) ** 2 + ((yy - (lung_y + 0.2)) / rng.uniform(0.2, 0.24)) ** 2
            img -= 0.09 * _sigmoid((1.0 - d) * 8.0)
        img += 0.06  # soft-tissue floor

        # centreline x(t), t in [0, 1] from T1 to L5; tilt and curve
        y_top, y_bottom = rng.uniform(0.05, 0.08), rng.uniform(0.74, 0.78)
        tilt = math.radians(rng.uniform(-3.0, 3.0))
        amp, waves, phase = rng.uniform(-0.02, 0.02), rng.uniform(0.5, 1.0), rng.uniform(0, math.pi)
        scoliosis = "scoliosis" in findings
        if scoliosis:
            amp = rng.choice([-1, 1]) * rng.uniform(0.04, 0.13)
            waves = rng.choice([1.0, 2.0]) * rng.uniform(0.45, 0.55)  # C-curve or S-curve
            phase = 0.0

        def centre(t):
            return cx0 + amp * np.sin(math.pi * waves * t * 2 + phase) * (1 if waves > 0.75 else 1) + tilt * (t - 0.5)

        # vertebral pitch grows caudally
        weights = 1.0 + 0.55 * np.linspace(0, 1, N_VERTEBRAE)
        pitch = (y_bottom - y_top) * weights / weights.sum()
        disc_frac = np.full(N_VERTEBRAE, rng.uniform(0.2, 0.26))
        height_scale = np.ones(N_VERTEBRAE)
        wedge = np.zeros(N_VERTEBRAE)
        density = np.zeros(N_VERTEBRAE)
        spurs: list[int] = []
        if "fracture" in findings:
            j = int(rng.integers(6, N_VERTEBRAE))
            height_scale[j] = rng.uniform(0.45, 0.75)
            wedge[j] = rng.choice([-1, 1]) * rng.uniform(0.1, 0.35)
            density[j] = rng.uniform(0.05, 0.12)
        if "disc_narrowing" in findings:
            for j in rng.choice(np.arange(8, N_VERTEBRAE), size=int(rng.integers(1, 4)), replace=False):
                disc_frac[j] *= rng.uniform(0.15, 0.45)
        if "osteophytes" in findings:
            spurs = rng.choice(np.arange(9, N_VERTEBRAE), size=int(rng.integers(2, 6)), replace=False).tolist()
        rotation = 0.0
        if scoliosis:
            rotation = float(np.sign(amp)) * rng.uniform(0.15, 0.4)

        bone = rng.uniform(0.55, 0.65)
        y = y_top
        levels = []
        for j in range(N_VERTEBRAE):
            t = j / (N_VERTEBRAE - 1)
            h = pitch[j] * (1 - disc_frac[j])
            yc = y + pitch[j] * disc_frac[j] / 2 + h / 2
            xc = float(centre(t))
            slope = (float(centre(min(1.0, t + 0.02))) - float(centre(max(0.0, t - 0.02)))) / (
                0.04 * (y_bottom - y_top)
            )
            angle = math.atan(slope)
            half_w = (0.032 + 0.03 * t) * rng.uniform(0.92, 1.08)
            half_h = h / 2 * height_scale[j]
            levels.append((xc, yc, half_w, half_h, angle))
            # local coordinates of the body
            ca, sa = math.cos(angle), math.sin(angle)
            u = (xx - xc) * ca - (yy - yc) * sa
            v = (xx - xc) * sa + (yy - yc) * ca
            # wedge: one side of the body lower than the other (fracture / apex of a scoliotic curve)
            wj = wedge[j] + (0.25 * rotation if scoliosis and abs(math.sin(math.pi * waves * t * 2)) > 0.8 else 0.0)
            hh = half_h * (1.0 + wj * np.clip(u / half_w, -1, 1))
            r = (np.abs(u) / half_w) ** 4 + (np.abs(v) / np.maximum(hh, 1e-4)) ** 4
            body = _sigmoid((1.0 - r) * 14.0)
            rim = np.exp(-(((r - 1.0) / 0.18) ** 2))
            img += body * (bone * 0.7 + density[j]) + rim * 0.18 * bone
            # pedicles: rings in the upper lateral body, shifted by axial rotation
            for side in (-1, 1):
                pu = side * half_w * 0.55 + rotation * half_w * 0.5
                pr = np.hypot((u - pu) / (half_w * 0.2), (v + half_h * 0.25) / (half_h * 0.32))
                img += 0.22 * bone * np.exp(-(((pr - 1.0) / 0.35) ** 2))
            # spinous process: a small midline tear drop below the body's centre
            sp = np.hypot((u - rotation * half_w * 0.4) / (half_w * 0.12), (v - half_h * 0.3) / (half_h * 0.45))
            img += 0.12 * bone * _sigmoid((1.0 - sp) * 6.0)
            if j in spurs:
                for side in rng.choice([-1, 1], size=int(rng.integers(1, 3)), replace=False):
                    for vert in (-1, 1):
                        su = side * half_w * rng.uniform(1.0, 1.12)
                        sv = vert * half_h * 0.95
                        length = half_w * rng.uniform(0.25, 0.55)
                        d = np.hypot((u - su - side * length * 0.4) / (length * 0.6), (v - sv) / (half_h * 0.14))
                        img += 0.5 * bone * _sigmoid((1.0 - d) * 8.0)
            y += pitch[j]

        # ribs from the 12 thoracic levels: lower half-ellipse arcs going out and down
        for j in range(N_THORACIC):
            xc, yc, half_w, half_h, _ = levels[j]
            for side in (-1, 1):
                rx = rng.uniform(0.14, 0.19) * (0.75 + 0.35 * min(j, 8) / 8)
                ry = rng.uniform(0.045, 0.07)
                ex, ey = xc + side * (half_w * 1.3 + rx), yc - 0.005
                d = np.hypot((xx - ex) / rx, (yy - ey) / ry)
                # the arc from the spine (angle pi on that side) through the lateral lower quadrant
                ang = np.arctan2(yy - ey, (xx - ex) * side)
                arc = (ang > -0.15) | (ang < -2.6)
                medial = (xx - xc) * side > half_w * 0.9
                band = np.exp(-(((d - 1.0) / (0.11 * 0.04 / ry)) ** 2))
                img += 0.2 * bone * band * arc * medial * (yy > ey - ry * 0.2)

        # pelvis: sacrum under L5, two iliac wings
        xc5, yc5, hw5, hh5, _ = levels[-1]
        sac_top = yc5 + hh5 + pitch[-1] * 0.25
        sac = (yy > sac_top) & (np.abs(xx - xc5) < hw5 * 1.3 * (1 - (yy - sac_top) / 0.22))
        img += 0.45 * bone * ndimage.gaussian_filter(sac.astype(float), 1.0 * n / 256)
        for side in (-1, 1):
            ix, iy = xc5 + side * rng.uniform(0.14, 0.17), sac_top + rng.uniform(0.05, 0.07)
            d = ((xx - ix) / rng.uniform(0.1, 0.12)) ** 2 + ((yy - iy) / rng.uniform(0.08, 0.1)) ** 2
            img += 0.4 * bone * _sigmoid((1.0 - d) * 6.0) + 0.15 * bone * np.exp(-(((d - 1.0) / 0.15) ** 2))

        # posterior instrumentation: two rods and pedicle screws, metal is saturated
        if "implant" in findings:
            k = int(rng.integers(4, 8))
            first = int(rng.integers(4, N_VERTEBRAE - k + 1))
            metal = np.zeros_like(img)
            for side in (-1, 1):
                pts = [(lv[0] + side * lv[2] * 0.6, lv[1]) for lv in levels[first : first + k]]
                for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
                    metal = np.maximum(metal, _segment(xx, yy, x0, y0, x1, y1, 0.007))
                for x0, y0 in pts:
                    metal = np.maximum(metal, _segment(xx, yy, x0 - side * 0.012, y0, x0 + side * 0.01, y0, 0.009))
            img = np.maximum(img, metal * 1.15)

        # detector: blur, exposure, noise
        img = ndimage.gaussian_filter(img, rng.uniform(0.5, 0.9) * n / 256)
        gain, offset, gamma = rng.uniform(0.85, 1.1), rng.uniform(-0.04, 0.04), rng.uniform(0.85, 1.15)
        img = np.clip(img * gain + offset, 0, None) ** gamma
        noise = ndimage.gaussian_filter(rng.standard_normal((n, n)), 0.5 * n / 256)
        img = img + self.noise * rng.uniform(0.6, 1.4) * noise / (noise.std() + 1e-8)
        return np.round(np.clip(img, 0.0, 1.0) * 255.0)


def _segment(xx, yy, x0, y0, x1, y1, radius) -> np.ndarray:
    """Soft mask of a capsule (a thick line segment) from (x0, y0) to (x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
    d = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
    return _sigmoid((radius - d) / (radius * 0.25))
