"""MONAI transforms for brain tumour label maps: slicing, the pix2pix condition, and label-map editing.

Label maps follow the BraTS convention (0 background, 1 necrosis / non-enhancing core, 2 oedema, 4 enhancing);
anatomy maps use 1 CSF, 2 grey matter, 3 white matter. Arrays are channel-first, (1, H, W) or (1, H, W, D).

Editing (Shin et al. 2018, section 2.2: tumours moved, resized, pasted into other brains to make new abnormal
cases whose segmentation is known) works on the label map only; the pix2pix generator then draws the images.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage

from common.errors import DataError

__all__ = [
    "BrainConditiond",
    "PasteTumourd",
    "RandTumourAffined",
    "RandTumourCompositiond",
    "SelectSliced",
    "TUMOUR_LABELS",
    "brain_condition",
    "brats_regions",
    "regions_to_label",
    "condition_channels",
]

#: BraTS tumour labels, in the order their condition channels are stacked
TUMOUR_LABELS = {"necrosis": 1, "oedema": 2, "enhancing": 4}
ANATOMY_LABELS = {"csf": 1, "gm": 2, "wm": 3}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(array: np.ndarray, ref):
    return torch.as_tensor(array) if isinstance(ref, torch.Tensor) else array


class SelectSliced(MapTransform):
    """Cut the axial slice ``d[index_key]`` (last spatial axis) out of every volume in ``keys``."""

    def __init__(self, keys: KeysCollection, index_key: str = "z", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.index_key = index_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        z = int(d[self.index_key])
        for key in self.key_iterator(d):
            d[key] = d[key][..., z]
        return d


def condition_channels(use_anatomy: bool) -> list[str]:
    """Names of the condition's channels: healthy tissue (anatomy classes or one brain channel), then tumour."""
    return [*(ANATOMY_LABELS if use_anatomy else ["brain"]), *TUMOUR_LABELS]


def brain_condition(label, brain, anatomy=None):
    """One-hot condition (K, *spatial) float32 from a tumour label map, brain mask and optional anatomy map.

    Tumour labels override healthy tissue; BraTS 2013's label 3 (non-enhancing) counts as necrosis / core.
    """
    lab = _np(label)[0]
    tumour = lab > 0
    channels = []
    if anatomy is not None:
        ana = _np(anatomy)[0]
        channels += [(ana == v) & ~tumour for v in ANATOMY_LABELS.values()]
    else:
        channels.append((_np(brain)[0] > 0) & ~tumour)
    channels += [(lab == 1) | (lab == 3), lab == 2, lab == 4]
    out = np.stack(channels).astype(np.float32)
    return _like(out, label)


class BrainConditiond(MapTransform):
    """Add ``d[condition_key]``: the pix2pix condition built by :func:`brain_condition`."""

    def __init__(
        self,
        label_key: str = "label",
        brain_key: str = "brain",
        anatomy_key: str | None = "anatomy",
        condition_key: str = "condition",
        use_anatomy: bool = True,
    ) -> None:
        super().__init__([label_key])
        self.label_key, self.brain_key, self.anatomy_key = label_key, brain_key, anatomy_key
        self.condition_key, self.use_anatomy = condition_key, use_anatomy

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        anatomy = d.get(self.anatomy_key) if (self.use_anatomy and self.anatomy_key) else None
        if self.use_anatomy and anatomy is None:
            raise DataError(
                f"use_anatomy is on but case '{d.get('case_id', '?')}' has no '{self.anatomy_key}' map: the data has "
                "only a brain mask, so set --use_anatomy false"
            )
        d[self.condition_key] = brain_condition(d[self.label_key], d[self.brain_key], anatomy)
        return d


def brats_regions(label):
    """(3, *spatial) float32: tumour core (1, 3, 4), whole tumour (1-4), enhancing tumour (4), as BraTS scores them."""
    lab = _np(label)[0]
    out = np.stack([np.isin(lab, (1, 3, 4)), lab > 0, lab == 4]).astype(np.float32)
    return _like(out, label)


def regions_to_label(regions):
    """Inverse of :func:`brats_regions` for a prediction (3, *spatial; TC, WT, ET, binary) -> BraTS label map
    (1, *spatial): whole tumour 2 (oedema), core 1 (necrosis), enhancing 4 (nested, as BraTS defines them)."""
    r = _np(regions) > 0.5
    label = np.zeros((1, *r.shape[1:]), np.int16)
    label[0][r[1]] = 2
    label[0][r[0]] = 1
    label[0][r[2]] = 4
    return _like(label, regions)


# -- label-map editing -------------------------------------------------------------------------------------------


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array([c.mean() for c in np.nonzero(mask)])


def _affine_about(label: np.ndarray, centre, matrix: np.ndarray, shift) -> np.ndarray:
    """Map ``label`` (spatial) by x -> matrix (x - centre) + centre + shift, nearest neighbour."""
    inv = np.linalg.inv(matrix)
    offset = np.asarray(centre) - inv @ (np.asarray(centre) + np.asarray(shift))
    return ndimage.affine_transform(label, inv, offset=offset, order=0, mode="constant", cval=0)


class RandTumourAffined(RandomizableTransform, MapTransform):
    """Move, scale and rotate the tumour inside the brain: a new abnormal case with a known segmentation.

    The tumour (all labels > 0) is cut out, transformed about its centre (rotation in the axial plane), and put
    back; the old site becomes healthy brain; voxels that would leave the brain are dropped.

    Args:
        label_key, brain_key: keys of the tumour label map and brain mask.
        prob: probability of editing a case.
        rotate_range: max rotation in degrees (uniform in [-r, r]).
        scale_range: (min, max) isotropic scale factor.
        translate_range: max shift per spatial axis as a fraction of the brain's extent.
    """

    def __init__(
        self,
        label_key: str = "label",
        brain_key: str = "brain",
        prob: float = 1.0,
        rotate_range: float = 30.0,
        scale_range: Sequence[float] = (0.8, 1.2),
        translate_range: float = 0.2,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, [label_key])
        self.label_key, self.brain_key = label_key, brain_key
        self.rotate_range, self.scale_range, self.translate_range = rotate_range, tuple(scale_range), translate_range

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        label = _np(d[self.label_key])[0]
        brain = _np(d[self.brain_key])[0] > 0
        if not self._do_transform or not (label > 0).any():
            return d
        ndim = label.ndim
        angle = np.deg2rad(self.R.uniform(-self.rotate_range, self.rotate_range))
        scale = self.R.uniform(*self.scale_range)
        matrix = np.eye(ndim) * scale
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrix[:2, :2] = rot * scale
        extent = np.array([np.ptp(ix) + 1 for ix in np.nonzero(brain)])
        shift = self.R.uniform(-1, 1, ndim) * self.translate_range * extent
        moved = _affine_about(label, _centroid(label > 0), matrix, shift)
        moved[~brain] = 0
        d[self.label_key] = _like(moved[None].astype(np.int16), d[self.label_key])
        return d


class PasteTumourd(MapTransform):
    """Paste the tumour of a donor case (``d[donor_key]``, a label map on the same grid) into this brain.

    The donor tumour keeps its position relative to the brain's bounding box (so it lands in the same region of a
    different brain); this case's own tumour is removed unless ``keep_own``. Voxels outside the brain are dropped.
    """

    def __init__(
        self,
        label_key: str = "label",
        brain_key: str = "brain",
        donor_key: str = "donor_label",
        donor_brain_key: str = "donor_brain",
        keep_own: bool = False,
    ) -> None:
        super().__init__([label_key])
        self.label_key, self.brain_key, self.donor_key, self.donor_brain_key = (
            label_key,
            brain_key,
            donor_key,
            donor_brain_key,
        )
        self.keep_own = keep_own

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        label = _np(d[self.label_key])[0]
        brain = _np(d[self.brain_key])[0] > 0
        donor = _np(d[self.donor_key])[0]
        donor_brain = _np(d.get(self.donor_brain_key, d[self.brain_key]))[0] > 0
        if donor.shape != label.shape:
            raise ValueError(f"donor label map {donor.shape} and recipient {label.shape} must share a grid")
        out = label.copy() if self.keep_own else np.zeros_like(label)
        if (donor > 0).any():
            # map the donor's brain bounding box onto the recipient's (scale + shift per axis)
            lo_d, hi_d = (np.array([f(ix) for ix in np.nonzero(donor_brain)]) for f in (np.min, np.max))
            lo_r, hi_r = (np.array([f(ix) for ix in np.nonzero(brain)]) for f in (np.min, np.max))
            scale = (hi_r - lo_r + 1) / (hi_d - lo_d + 1)
            matrix = np.diag(scale)
            shift = lo_r - lo_d
            moved = _affine_about(donor, lo_d, matrix, shift)
            tumour = (moved > 0) & brain
            out[tumour] = moved[tumour]
        d[self.label_key] = _like(out[None].astype(np.int16), d[self.label_key])
        return d


class RandTumourCompositiond(RandomizableTransform, MapTransform):
    """Vary the shares of necrosis, enhancing tumour and oedema inside the (unchanged) whole-tumour region.

    Voxels of the whole tumour are ordered by depth (distance to its border); the deepest share becomes necrosis,
    the next enhancing tumour, the rest oedema, the layering of a glioblastoma. The shares are drawn around the
    case's own (each multiplied by a factor in ``factor_range``), then renormalised.
    """

    def __init__(self, label_key: str = "label", prob: float = 1.0, factor_range: Sequence[float] = (0.5, 1.5)) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, [label_key])
        self.label_key, self.factor_range = label_key, tuple(factor_range)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        label = _np(d[self.label_key])[0]
        wt = label > 0
        n = int(wt.sum())
        if not self._do_transform or n == 0:
            return d
        shares = np.array([np.isin(label, (1, 3)).sum(), (label == 4).sum(), (label == 2).sum()], float) / n
        shares = np.maximum(shares, 0.02) * self.R.uniform(*self.factor_range, 3)
        shares /= shares.sum()
        depth = ndimage.distance_transform_edt(wt)
        order = np.argsort(-depth[wt], kind="stable")
        values = np.full(n, 2, np.int16)
        k_nec = int(round(shares[0] * n))
        k_enh = int(round(shares[1] * n))
        values[order[:k_nec]] = 1
        values[order[k_nec : k_nec + k_enh]] = 4
        out = label.copy()
        out[wt] = values
        d[self.label_key] = _like(out[None].astype(np.int16), d[self.label_key])
        return d
