"""Dermoscopy images (MelanoGANs / ISIC 2017 stand-in): nevi, melanomas and seborrheic keratoses as RGB PNG.

Each sample is one dermoscopic image of one skin lesion, built from the ABCD-style traits that dermatologists use
to tell the classes apart, on a skin background with the artefacts of dermoscopy:

- skin (all classes): a per-patient skin tone (fair to brown), low-frequency shading, fine texture;
- nevus (label 0, the majority as in ISIC): near-symmetric round/oval shape, regular soft border, one or two
  brown shades (darker centre or uniform), a faint regular pigment network; a quarter are atypical (more
  asymmetric, a darker eccentric patch), the benign lesions that look most like melanoma;
- melanoma (label 1): Asymmetric (strong low-order shape harmonics and an off-centre lobe), irregular Border
  (high-order harmonics), several Colours (2-5 of light brown, dark brown, black, blue-grey, red, white regression
  areas, in irregular patches), larger Diameter on average; a blue-white veil in some;
- seborrheic keratosis (label 2): sharply demarcated "stuck-on" lesion, light to dark brown, waxy cerebriform
  texture, milia-like cysts (white dots) and comedo-like openings (dark dots);
- then dermoscopy artefacts: dark hairs crossing the image (``hair_prob``), the circular vignette of the
  dermoscope's field of view (``vignette_prob``), slight blur and sensor noise, 8-bit quantisation.

Sizes overlap between classes (melanoma diameters are drawn from a range shifted up by about 20 %), so size alone
does not give the class away. The class counts default to ISIC 2017's training set scaled by 1/4
(1372 / 374 / 254 -> 343 / 94 / 64): strongly imbalanced, melanoma the class that synthesis should help.
One image per patient (ISIC images carry no patient id; an image is the unit of the splits).

The datalist carries each image's true lesion area (``lesion_area_fraction``, the lesion mask's share of the
image), so that the unsupervised lesion segmentation of ``common.metrics.image_statistics`` can be checked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from common.data.phantoms.base import Phantom

__all__ = ["DermoscopyPhantom"]

# RGB colours in [0, 1] of dermoscopic structures (approximate, from the usual dermoscopy atlases' descriptions)
_PALETTE = {
    "light_brown": (0.62, 0.42, 0.28),
    "dark_brown": (0.36, 0.21, 0.13),
    "black": (0.12, 0.08, 0.07),
    "blue_grey": (0.38, 0.42, 0.52),
    "red": (0.72, 0.32, 0.30),
    "white": (0.86, 0.82, 0.80),
    "tan": (0.72, 0.53, 0.38),
}


def _smooth_field(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma=max(sigma, 0.3), mode="wrap")
    return field / (field.std() + 1e-8)


class DermoscopyPhantom(Phantom):
    """Procedural 3-class dermoscopy data set (nevus / melanoma / seborrheic keratosis), RGB PNG, 8-bit.

    Args:
        n_per_class: images per class in ``class_names`` order (ISIC 2017 / 4: 343, 94, 64).
        image_size: side in pixels; every geometric parameter is relative to it.
        seed: seed of the generator; same spec -> identical files.
        diameter_range: lesion diameter as a fraction of the image side (nevus and keratosis; melanoma x 1.2).
        hair_prob: probability that an image has hairs (1-8 of them).
        vignette_prob: probability of the dermoscope's dark circular vignette.
        noise: standard deviation of the sensor noise (fraction of full scale).
        atypical_nevus_fraction: share of nevi drawn as atypical (dysplastic-looking): more asymmetric, with a
            darker eccentric patch, the nevi that are hard to tell from melanoma.
    """

    name = "dermoscopy_phantom"
    version = "1"
    class_names = ("nevus", "melanoma", "seborrheic_keratosis")
    file_formats = ("png",)

    def __init__(
        self,
        n_per_class: Sequence[int] = (343, 94, 64),
        image_size: int = 64,
        seed: int = 0,
        diameter_range: Sequence[float] = (0.3, 0.7),
        hair_prob: float = 0.4,
        vignette_prob: float = 0.5,
        noise: float = 0.02,
        atypical_nevus_fraction: float = 0.25,
        file_format: str = "png",
    ) -> None:
        super().__init__(seed=seed, file_format=file_format)
        if len(n_per_class) != len(self.class_names) or min(n_per_class) < 0:
            raise ValueError(f"n_per_class needs {len(self.class_names)} non-negative counts, got {n_per_class}")
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        self.n_per_class = tuple(int(n) for n in n_per_class)
        self.image_size = int(image_size)
        self.diameter_range = (float(diameter_range[0]), float(diameter_range[1]))
        self.hair_prob = float(hair_prob)
        self.vignette_prob = float(vignette_prob)
        self.noise = float(noise)
        self.atypical_nevus_fraction = float(atypical_nevus_fraction)

    def spec(self) -> dict[str, Any]:
        return {
            **super().spec(),
            "n_per_class": list(self.n_per_class),
            "image_size": self.image_size,
            "diameter_range": list(self.diameter_range),
            "hair_prob": self.hair_prob,
            "vignette_prob": self.vignette_prob,
            "noise": self.noise,
            "atypical_nevus_fraction": self.atypical_nevus_fraction,
        }

    def meta(self) -> dict[str, Any]:
        return {"intensity": {"unit": "uint8 RGB", "range": [0, 255]}, "channels": ["red", "green", "blue"]}

    def generate(self) -> Iterator[dict[str, Any]]:
        rng = self.rng()
        labels = np.concatenate([np.full(n, c) for c, n in enumerate(self.n_per_class)]).astype(int)
        labels = labels[rng.permutation(len(labels))]
        for index, label in enumerate(labels, start=1):
            image, info = self.render(rng, int(label))
            # (H, W, 3) in [0, 255] -> channel-first (3, X, Y) as MONAI reads PNGs (first spatial axis = columns)
            array = np.round(np.clip(image, 0.0, 1.0) * 255.0).transpose(2, 1, 0).astype(np.float32)
            yield {"array": array, "label": int(label), "patient": f"derm{index:04d}", **info}

    # ------------------------------------------------------------------ one image
    def render(self, rng: np.random.Generator, label: int) -> tuple[np.ndarray, dict[str, Any]]:
        """One image of class ``label``: ``(H, W, 3)`` float RGB in [0, 1], plus descriptive extras."""
        n = self.image_size
        yy, xx = (np.mgrid[0:n, 0:n].astype(np.float64) + 0.5) / n * 2.0 - 1.0  # [-1, 1] across the image
        skin = self._skin(rng, n)

        lo, hi = self.diameter_range
        scale = 1.2 if label == 1 else 1.0
        radius = rng.uniform(lo, hi) * scale  # diameter fraction of the side == radius in [-1, 1] units
        cx, cy = rng.uniform(-0.12, 0.12, size=2)
        angle = rng.uniform(0, 2 * math.pi)
        u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
        v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
        theta = np.arctan2(v, u)
        dysplastic = label == 0 and rng.random() < self.atypical_nevus_fraction
        if label == 0:  # nevus: symmetric, regular (atypical ones: some asymmetry, a darker eccentric patch)
            aspect = rng.uniform(0.75 if dysplastic else 0.8, 1.0)
            low = 0.1 if dysplastic else 0.05
            harmonics = self._harmonics(rng, range(2, 4), 0.0, low) + self._harmonics(rng, range(5, 12), 0.0, 0.012)
            edge = rng.uniform(0.025 if dysplastic else 0.035, 0.06)
        elif label == 1:  # melanoma: asymmetric, irregular border
            aspect = rng.uniform(0.6, 0.95)
            harmonics = self._harmonics(rng, range(1, 4), 0.04, 0.18) + self._harmonics(rng, range(5, 13), 0.005, 0.03)
            edge = rng.uniform(0.012, 0.035)
        else:  # seborrheic keratosis: sharply demarcated, moderately regular
            aspect = rng.uniform(0.65, 0.95)
            harmonics = self._harmonics(rng, range(2, 5), 0.02, 0.09) + self._harmonics(rng, range(5, 12), 0.0, 0.02)
            edge = rng.uniform(0.008, 0.02)
        r = np.hypot(u, v / aspect)
        boundary = radius * (1.0 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics))
        if label == 1 and rng.random() < 0.7:  # an off-centre lobe: asymmetry in one direction
            phi = rng.uniform(0, 2 * math.pi)
            lobe = np.exp(-((np.angle(np.exp(1j * (theta - phi)))) ** 2) / (2 * rng.uniform(0.3, 0.7) ** 2))
            boundary = boundary * (1.0 + rng.uniform(0.15, 0.35) * lobe)
        signed = (r - boundary) / max(radius, 1e-3)  # < 0 inside
        mask = 0.5 * (1.0 - np.tanh(signed / (2.0 * edge)))  # the logistic 1 / (1 + exp(signed / edge)), no overflow

        if label == 0:
            lesion, variant = self._nevus(rng, n, r / np.maximum(boundary, 1e-3), xx, yy)
            if dysplastic:
                patch = np.clip(_smooth_field(rng, n, n / 8) - 0.5, 0, 1)[..., None]
                lesion = lesion * (1 - 0.7 * patch) + 0.7 * patch * np.array(_PALETTE["dark_brown"])
                variant = "atypical_" + variant
        elif label == 1:
            lesion, variant = self._melanoma(rng, n, r / np.maximum(boundary, 1e-3))
        else:
            lesion, variant = self._keratosis(rng, n, mask)
        image = skin * (1.0 - mask[..., None]) + lesion * mask[..., None]

        if rng.random() < self.hair_prob:
            image = self._hairs(rng, image, xx, yy)
        if rng.random() < self.vignette_prob:
            rim = rng.uniform(0.92, 1.25)
            dark = np.clip((np.hypot(xx, yy) - rim) / 0.08, 0.0, 1.0)
            image = image * (1.0 - 0.92 * dark[..., None])
        image = ndimage.gaussian_filter(image, sigma=(0.5 * n / 64, 0.5 * n / 64, 0), mode="nearest")
        image = image + self.noise * rng.standard_normal(image.shape)
        area = float((mask > 0.5).mean())
        return np.clip(image, 0.0, 1.0), {"variant": variant, "lesion_area_fraction": round(area, 4)}

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _harmonics(rng: np.random.Generator, orders: range, lo: float, hi: float) -> list[tuple[int, float, float]]:
        return [(k, rng.uniform(lo, hi), rng.uniform(0, 2 * math.pi)) for k in orders]

    @staticmethod
    def _skin(rng: np.random.Generator, n: int) -> np.ndarray:
        # Skin tones from fair (pinkish) to brown; dermoscopy under polarised light looks pink-beige.
        darkness = rng.beta(2.0, 4.0)
        base = np.array([0.93, 0.74, 0.66]) * (1 - darkness) + np.array([0.62, 0.43, 0.32]) * darkness
        base = base * rng.uniform(0.92, 1.05, size=3)
        shade = 1.0 + 0.05 * _smooth_field(rng, n, n / 4)
        texture = 0.015 * _smooth_field(rng, n, 0.8 * n / 64)
        redness = 0.03 * _smooth_field(rng, n, n / 6)
        skin = base[None, None, :] * shade[..., None] + texture[..., None]
        skin[..., 0] += redness
        return skin

    @staticmethod
    def _nevus(rng, n, rho, xx, yy) -> tuple[np.ndarray, str]:
        outer = np.array(_PALETTE["tan"]) * rng.uniform(0.85, 1.1)
        inner = np.array(_PALETTE["light_brown"] if rng.random() < 0.6 else _PALETTE["dark_brown"])
        inner = inner * rng.uniform(0.85, 1.1)
        if rng.random() < 0.5:
            weight, variant = np.clip(1.0 - rho, 0, 1) ** rng.uniform(0.5, 1.2), "central_pigmented"
        else:
            weight, variant = np.full_like(rho, rng.uniform(0.3, 0.8)), "uniform"
        lesion = outer[None, None] * (1 - weight[..., None]) + inner[None, None] * weight[..., None]
        period = rng.uniform(0.08, 0.14)  # regular pigment network: a faint, fine reticular pattern
        net = np.cos(math.pi * xx / period) * np.cos(math.pi * yy / period)
        lesion = lesion * (1.0 - 0.06 * np.clip(net, 0, 1)[..., None])
        return lesion + 0.02 * _smooth_field(rng, n, n / 32)[..., None], variant

    @staticmethod
    def _melanoma(rng, n, rho) -> tuple[np.ndarray, str]:
        names = ["light_brown", "dark_brown", "black", "blue_grey", "red", "white"]
        k = int(rng.integers(2, 6))
        chosen = ["dark_brown"] + list(rng.choice([c for c in names if c != "dark_brown"], size=k - 1, replace=False))
        # Irregular colour patches: the argmax of k smooth random fields (a random partition into blotches).
        fields = np.stack([_smooth_field(rng, n, n / rng.uniform(8, 14)) for _ in range(k)])
        fields[0] += 0.6  # dark brown dominates
        soft = np.exp(3.0 * fields)
        soft = soft / soft.sum(0, keepdims=True)
        colours = np.array([_PALETTE[c] for c in chosen]) * rng.uniform(0.85, 1.1, size=(k, 1))
        lesion = np.einsum("khw,kc->hwc", soft, colours)
        variant = "multicolour_" + str(k)
        if rng.random() < 0.35:  # blue-white veil over part of the lesion
            veil = np.clip(_smooth_field(rng, n, n / 10) - 0.3, 0, 1) * (rho < 0.8)
            lesion = lesion * (1 - 0.6 * veil[..., None]) + 0.6 * veil[..., None] * np.array([0.55, 0.6, 0.72])
            variant += "_veil"
        return lesion + 0.03 * _smooth_field(rng, n, n / 40)[..., None], variant

    @staticmethod
    def _keratosis(rng, n, mask) -> tuple[np.ndarray, str]:
        base = np.array(_PALETTE["light_brown"] if rng.random() < 0.5 else _PALETTE["tan"]) * rng.uniform(0.8, 1.05)
        dark = np.array(_PALETTE["dark_brown"]) * rng.uniform(0.85, 1.1)
        # Waxy cerebriform texture: ridges of a band-passed random field.
        ridges = np.abs(_smooth_field(rng, n, n / 24) - 0.5 * _smooth_field(rng, n, n / 10))
        weight = np.clip(ridges / 2.0, 0, 1) ** 0.7 * rng.uniform(0.5, 0.9)
        lesion = base[None, None] * (1 - weight[..., None]) + dark[None, None] * weight[..., None]
        spots = np.zeros((n, n))
        inside = np.argwhere(mask > 0.7)
        variant = "cerebriform"
        if len(inside):
            for value, count in ((0.35, rng.integers(2, 7)), (-0.3, rng.integers(1, 6))):  # milia cysts, comedos
                for _ in range(int(count)):
                    y, x = inside[rng.integers(len(inside))]
                    spots[y, x] += value
            spots = ndimage.gaussian_filter(spots, sigma=0.9 * n / 64) * (2 * math.pi * (0.9 * n / 64) ** 2)
            variant += "_milia_comedo"
        return lesion + np.clip(spots, -0.4, 0.5)[..., None], variant

    @staticmethod
    def _hairs(rng, image, xx, yy) -> np.ndarray:
        colour = np.array([0.12, 0.09, 0.08]) * rng.uniform(0.6, 1.4)
        for _ in range(int(rng.integers(1, 9))):
            phi = rng.uniform(0, math.pi)
            t = np.array([math.cos(phi), math.sin(phi)])
            offset = rng.uniform(-0.9, 0.9)
            along = xx * t[0] + yy * t[1]
            across = -xx * t[1] + yy * t[0] - offset - rng.uniform(-0.3, 0.3) * along**2
            width = rng.uniform(0.35, 0.7) * 2.0 / 64  # about 1 px at 64 px, thicker at higher resolution
            start, stop = sorted(rng.uniform(-1.4, 1.4, size=2))
            hair = np.exp(-(across**2) / (2 * width**2)) * ((along > start) & (along < stop))
            image = image * (1 - 0.85 * hair[..., None]) + 0.85 * hair[..., None] * colour
        return image
