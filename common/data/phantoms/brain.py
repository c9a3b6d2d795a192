"""A brain MRI phantom with tumours: the embedded default data set of ``brain_pix2pix`` (Shin et al. 2018).

Each case is a head (scalp, skull) around a brain with cortical grey matter, white matter and two lateral
ventricles, and one glioma-like tumour in a hemisphere: a necrotic core, an enhancing rim and a surrounding oedema
that spreads along the white matter. Four sequences get the tissue contrasts a radiologist expects (T1: white
matter bright, CSF dark; T1c: T1 plus an enhancing rim; T2: CSF and oedema bright; FLAIR: CSF suppressed, oedema
brightest), with a smooth bias field, partial-volume blur and noise. Written in the BraTS layout::

    out_dir/<case>/<case>_t1.nii.gz, _t1ce, _t2, _flair   the sequences (float32)
    out_dir/<case>/<case>_seg.nii.gz                       tumour labels: 0, 1 necrosis, 2 oedema, 4 enhancing
    out_dir/<case>/<case>_brainmask.nii.gz                 brain mask (1 inside the brain)
    out_dir/<case>/<case>_anatomy.nii.gz                   healthy anatomy: 1 CSF, 2 grey matter, 3 white matter
    out_dir/datalist.json, out_dir/phantom.json

so that the BraTS reader (``common.data.brain.find_brain_cases``) reads it exactly like real data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from common.data.datalist import write_datalist
from common.data.io import write_image
from common.data.phantoms.base import DATALIST_NAME, SPEC_NAME, Phantom, canonical_spec
from common.fs import atomic_write_text

__all__ = ["BRAIN_PATH_KEYS", "BrainTumourPhantom", "SEQUENCE_CONTRASTS"]

#: item keys of a brain datalist that hold file paths (``image`` is a list: one file per sequence)
BRAIN_PATH_KEYS = ("image", "label", "brain", "anatomy")

#: relative signal of each tissue per sequence (background, scalp, skull, CSF, GM, WM, necrosis, oedema, enhancing)
TISSUES = ("background", "scalp", "skull", "csf", "gm", "wm", "necrosis", "oedema", "enhancing")
SEQUENCE_CONTRASTS: dict[str, tuple[float, ...]] = {
    "t1": (0.0, 0.85, 0.10, 0.20, 0.55, 0.80, 0.25, 0.45, 0.55),
    "t1ce": (0.0, 0.85, 0.10, 0.22, 0.58, 0.80, 0.25, 0.45, 1.00),
    "t2": (0.0, 0.55, 0.05, 1.00, 0.60, 0.38, 0.90, 0.80, 0.62),
    "flair": (0.0, 0.60, 0.05, 0.08, 0.55, 0.42, 0.55, 1.00, 0.75),
}


def _ellipsoid(grid: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))


class BrainTumourPhantom(Phantom):
    """Brain MRI volumes with tumours, in the BraTS layout.

    Args:
        n_cases: number of cases (patients); each has one tumour.
        shape: volume size (x, y, z) in voxels; axial slices are along z.
        spacing: voxel size in mm (written into the NIfTI affine).
        sequences: any of ``t1``, ``t1ce``, ``t2``, ``flair``.
        noise: Gaussian noise std relative to white matter signal.
        seed: the same seed gives identical files.
    """

    name = "brain_tumour_phantom"
    version = "1"
    file_formats = ("nii.gz",)

    def __init__(
        self,
        n_cases: int = 12,
        shape: tuple[int, int, int] = (96, 96, 64),
        spacing: tuple[float, float, float] = (2.0, 2.0, 2.4),
        sequences: tuple[str, ...] = ("t1", "t1ce", "t2", "flair"),
        noise: float = 0.03,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed, file_format="nii.gz")
        unknown = [s for s in sequences if s not in SEQUENCE_CONTRASTS]
        if unknown:
            raise ValueError(f"unknown sequence(s) {unknown}; known: {sorted(SEQUENCE_CONTRASTS)}")
        if n_cases < 1 or len(shape) != 3 or min(shape) < 16:
            raise ValueError(
                f"need n_cases >= 1 and a 3-D shape of at least 16 voxels per axis, got {n_cases}, {shape}"
            )
        self.n_cases = int(n_cases)
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.sequences = tuple(sequences)
        self.noise = float(noise)

    def spec(self) -> dict[str, Any]:
        return {
            **super().spec(),
            "n_cases": self.n_cases,
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "sequences": list(self.sequences),
            "noise": self.noise,
        }

    # -- geometry ---------------------------------------------------------------------------------------------
    def _case(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        sx, sy, sz = self.shape
        grid = np.meshgrid(*(np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in self.shape), indexing="ij")
        head_r = np.array([0.80, 0.92, 0.86]) * rng.uniform(0.92, 1.05, 3)
        centre = rng.uniform(-0.04, 0.04, 3)
        head = _ellipsoid(grid, centre, head_r)
        # a lumpy cortex: low-frequency noise on the brain's radius
        lumps = ndimage.gaussian_filter(rng.standard_normal(self.shape).astype(np.float32), sigma=min(self.shape) / 10)
        lumps /= np.abs(lumps).max() + 1e-6
        brain_r = head_r * 0.84
        brain_level = _ellipsoid(grid, centre, brain_r) + 0.08 * lumps
        brain = brain_level < 1.0
        skull = (head < (1.0 / 0.92) ** 2) & ~brain & (_ellipsoid(grid, centre, head_r * 0.93) < 1.0)
        scalp = (head < 1.0) & ~brain & ~skull
        # cortex = outer shell of the brain, with a wavy inner border (gyri)
        gyri = ndimage.gaussian_filter(rng.standard_normal(self.shape).astype(np.float32), sigma=1.2)
        gm = brain & (brain_level > 0.62 + 0.35 * gyri / (np.abs(gyri).max() + 1e-6))
        wm = brain & ~gm
        # two lateral ventricles (crescent-like ellipsoids either side of the midline) and a thin third ventricle
        vent = np.zeros(self.shape, bool)
        vr = np.array([0.08, 0.26, 0.16]) * rng.uniform(0.8, 1.3, 3)
        for side in (-1, 1):
            vc = centre + np.array([side * 0.11, 0.02, 0.05])
            vent |= _ellipsoid(grid, vc, vr) < 1.0
        vent |= _ellipsoid(grid, centre + np.array([0.0, 0.05, -0.05]), np.array([0.025, 0.12, 0.10])) < 1.0
        vent &= brain
        csf = vent | (brain & (brain_level > 0.95))  # sulcal CSF at the brain surface
        anatomy = np.zeros(self.shape, np.int16)
        anatomy[wm] = 3
        anatomy[gm] = 2
        anatomy[csf] = 1

        # tumour in one hemisphere, away from the surface; irregular boundary from smooth noise
        side = rng.choice([-1.0, 1.0])
        tc = centre + np.array([side * rng.uniform(0.25, 0.45), rng.uniform(-0.35, 0.35), rng.uniform(-0.3, 0.3)])
        size = rng.uniform(0.14, 0.26)
        wt_r = size * rng.uniform(0.8, 1.25, 3)
        bumps = ndimage.gaussian_filter(rng.standard_normal(self.shape).astype(np.float32), sigma=2.0)
        bumps /= np.abs(bumps).max() + 1e-6
        t_level = np.sqrt(_ellipsoid(grid, tc, wt_r)) + 0.25 * bumps
        core = brain & (t_level < 1.0)
        necrosis_frac, rim = rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.3)
        necrosis = core & (t_level < necrosis_frac)
        enhancing = core & ~necrosis & (t_level < necrosis_frac + rim + 0.5 * (1 - necrosis_frac - rim))
        # oedema: a wider, white-matter-preferring halo around the core
        halo = brain & ~core & (t_level < rng.uniform(1.5, 1.9) + 0.3 * bumps)
        oedema = (halo & (wm | (rng.random(self.shape) < 0.15))) | (core & ~necrosis & ~enhancing)
        seg = np.zeros(self.shape, np.int16)
        seg[oedema] = 2
        seg[enhancing] = 4
        seg[necrosis] = 1

        tissue = np.zeros(self.shape, np.int16)  # index into TISSUES
        tissue[scalp] = 1
        tissue[skull] = 2
        tissue[anatomy == 1] = 3
        tissue[anatomy == 2] = 4
        tissue[anatomy == 3] = 5
        tissue[seg == 1] = 6
        tissue[seg == 2] = 7
        tissue[seg == 4] = 8
        bias = 1.0 + 0.12 * sum(rng.uniform(-1, 1) * g for g in grid)
        images = {}
        for seq in self.sequences:
            lut = np.asarray(SEQUENCE_CONTRASTS[seq], np.float32) * rng.uniform(0.95, 1.05)
            img = lut[tissue]
            img = ndimage.gaussian_filter(img, sigma=0.7) * bias
            img = img + self.noise * rng.standard_normal(self.shape).astype(np.float32) * (tissue > 0)
            images[seq] = np.clip(img, 0.0, None).astype(np.float32) * 1000.0  # MRI-like arbitrary units
        return {"images": images, "seg": seg, "brain": brain.astype(np.int16), "anatomy": anatomy}

    def generate(self) -> Iterator[dict[str, Any]]:
        rng = self.rng()
        for i in range(self.n_cases):
            yield {"case_id": f"phantom{i:03d}", **self._case(rng)}

    # -- files ------------------------------------------------------------------------------------------------
    def write(self, out_dir: str | os.PathLike) -> str:
        out_dir = Path(out_dir)
        items = []
        for case in self.generate():
            cid = case["case_id"]
            folder = out_dir / cid
            paths = []
            for seq, array in case["images"].items():
                paths.append(write_image(folder / f"{cid}_{seq}.nii.gz", array[None], spacing=self.spacing))
            item = {"case_id": cid, "patient": cid, "image": paths}
            for key, suffix in (("label", "seg"), ("brain", "brainmask"), ("anatomy", "anatomy")):
                array = case[suffix if key == "label" else key][None]
                item[key] = write_image(folder / f"{cid}_{suffix}.nii.gz", array, spacing=self.spacing)
            items.append(item)
        datalist = write_datalist(
            out_dir / DATALIST_NAME,
            items,
            path_keys=BRAIN_PATH_KEYS,
            name=self.name,
            sequences=list(self.sequences),
            labels={"0": "background", "1": "necrosis", "2": "oedema", "4": "enhancing tumour"},
            anatomy_labels={"1": "csf", "2": "grey matter", "3": "white matter"},
            phantom=canonical_spec(self.spec()),
        )
        atomic_write_text(out_dir / SPEC_NAME, json.dumps(canonical_spec(self.spec()), indent=1) + "\n")
        return datalist
