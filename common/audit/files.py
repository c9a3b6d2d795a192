"""The audit of image files: folders and datalists read, converted to one shape and mapped to [-1, 1] the same way
for the three sets (``audit_files``, ``audit_datalists``), the classifier of the ``classifier`` feature space
(``load_classifier``), and ``SynthesisAudit``, the audit as a bundle-config object."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.audit.core import run_audit
from common.errors import DataError

__all__ = ["SynthesisAudit", "audit_datalists", "audit_files", "load_classifier", "load_image_set"]

logger = logging.getLogger(__name__)


def _list_source(source: str | os.PathLike, max_images: int | None, seed: int) -> list[str]:
    """Image paths of a folder (recursive) or a datalist JSON (``file.json#section``, default ``training``)."""
    from common.data.io import has_image_suffix

    text = os.fspath(source)
    path_part, _, section = text.partition("#")
    path = Path(path_part)
    if path.is_dir():
        files = sorted(
            str(p) for p in path.rglob("*") if p.is_file() and has_image_suffix(p) and not p.name.startswith(".")
        )
        if not files:
            raise DataError(f"audit: folder '{path}' holds no image files (searched recursively)")
    elif path.is_file() and path.suffix.lower() == ".json":
        from common.data.datalist import read_datalist

        content = read_datalist(path)
        key = section or "training"
        items = content.get(key)
        if not isinstance(items, list) or not items:
            raise DataError(f"audit: datalist '{path}' has no non-empty '{key}' section")
        files = [it if isinstance(it, str) else it.get("image") for it in items]
        if any(not isinstance(f, str) for f in files):
            raise DataError(f"audit: datalist '{path}' section '{key}' has items without an 'image' path")
    else:
        raise DataError(f"audit: '{text}' is neither a folder nor a datalist .json file")
    if max_images is not None and len(files) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(files), max_images, replace=False))
        files = [files[i] for i in keep]
    return files


def _fit_channels(x: np.ndarray, channels: int, path: str) -> np.ndarray:
    if x.shape[0] == 4 and channels in (1, 3):  # RGBA: the alpha channel is no image content
        x = x[:3]
    if x.shape[0] == channels:
        return x
    if x.shape[0] == 3 and channels == 1:
        return x.mean(axis=0, keepdims=True)
    if x.shape[0] == 1 and channels == 3:
        return np.repeat(x, 3, axis=0)
    raise DataError(f"audit: image '{path}' has {x.shape[0]} channels, the synthetic images have {channels}")


def _resize(x: np.ndarray, spatial: Sequence[int]) -> np.ndarray:
    if tuple(x.shape[1:]) == tuple(spatial):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    shrink = all(s <= c for s, c in zip(spatial, x.shape[1:], strict=True))
    # Area averaging when shrinking (no aliasing); linear interpolation when any axis grows.
    mode = "area" if shrink else ("bilinear" if len(spatial) == 2 else "trilinear")
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(t, size=tuple(spatial), mode=mode, **kwargs)[0].numpy()


def load_image_set(
    source: str | os.PathLike,
    max_images: int | None = None,
    seed: int = 0,
    shape: Sequence[int] | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """Read the images of a folder (recursive) or datalist JSON with ``common.data.io.read_image``.

    Args:
        source: folder, or ``datalist.json`` / ``datalist.json#section``.
        max_images: read only a seeded random subset of this many files.
        shape: ``(C, *spatial)`` to convert every image to (channels: RGB <-> grey; spatial: area / linear resize);
            None: as read.

    Returns:
        ``(arrays, paths)``: float32 arrays ``(C, *spatial)`` in their file intensities, and their paths.
    """
    from common.data.io import read_image

    paths = _list_source(source, max_images, seed)
    arrays = []
    for p in paths:
        a = read_image(p)
        if shape is not None:
            a = _resize(_fit_channels(a, int(shape[0]), p), shape[1:])
        arrays.append(a.astype(np.float32))
    return arrays, paths


def _normalise_sets(sets: list[np.ndarray], mode: str) -> tuple[list[np.ndarray], dict]:
    """Map file intensities to [-1, 1] the same way for all sets (``sets[0]`` is the training set).

    ``auto``: integer data in 0..255 (8-bit PNG/JPG) -> ``x / 127.5 - 1``; anything else -> ``percentile``.
    ``percentile``: the training set's 0.5 / 99.5 percentiles -> -1 / 1, clipped (robust to outliers, shared by the
    three sets so that an intensity shift of the generator stays visible). ``per_image``: each image's min/max.
    ``none``: values are already in [-1, 1] (clipped).
    """
    if mode == "auto":
        eight_bit = all(s.size and s.min() >= 0 and s.max() <= 255 and np.array_equal(s, np.round(s)) for s in sets)
        mode = "uint8" if eight_bit else "percentile"
    if mode == "uint8":
        return [np.clip(s / 127.5 - 1.0, -1, 1) for s in sets], {"intensity": "uint8: x / 127.5 - 1"}
    if mode == "percentile":
        sample = sets[0].ravel()
        if sample.size > 10_000_000:
            sample = np.random.default_rng(0).choice(sample, 10_000_000, replace=False)
        lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
        scale = hi - lo if hi > lo else 1.0
        out = [np.clip(2.0 * (s - lo) / scale - 1.0, -1, 1) for s in sets]
        return out, {"intensity": "train percentiles 0.5/99.5 -> [-1, 1]", "intensity_range": [lo, hi]}
    if mode == "per_image":
        out = []
        for s in sets:
            axes = tuple(range(1, s.ndim))
            lo, hi = s.min(axis=axes, keepdims=True), s.max(axis=axes, keepdims=True)
            out.append(2.0 * (s - lo) / np.where(hi > lo, hi - lo, 1.0) - 1.0)
        return out, {"intensity": "per image min/max -> [-1, 1]"}
    if mode == "none":
        return [np.clip(s, -1, 1) for s in sets], {"intensity": "none (already in [-1, 1])"}
    raise ValueError(f"unknown intensity mode {mode!r}: use auto, uint8, percentile, per_image or none")


def load_classifier(
    checkpoint: str | os.PathLike, definition: str | dict | None = None, device: str | torch.device | None = None
) -> nn.Module:
    """Build the classifier for the ``classifier`` feature space.

    A TorchScript model (no ``definition``) can serve the ``classifier`` feature space only from Python, with a
    callable ``classifier_layer``: TorchScript takes no forward hooks. The command line therefore needs a definition.

    Args:
        checkpoint: TorchScript file (when ``definition`` is None) or a state dict file (``torch.save``); a dict that
            nests the weights under ``model``/``network``/``state_dict``/``classifier``/``net`` (Ignite
            ``CheckpointSaver``) works too, and a ``module.`` prefix (DataParallel) is removed.
        definition: a MONAI config of the network: a dict or JSON string with ``_target_``
            (``{"_target_": "monai.networks.nets.DenseNet121", "spatial_dims": 2, ...}``), or a bundle config file
            whose ``network_def`` (or ``file.json#<id>``) is parsed with ``monai.bundle.ConfigParser``.
    """
    from monai.bundle import ConfigParser

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if definition is None:
        return torch.jit.load(str(checkpoint), map_location=dev).eval()
    if isinstance(definition, str) and definition.lstrip().startswith("{"):
        definition = json.loads(definition)
    if isinstance(definition, dict):
        parser = ConfigParser({"network_def": definition})
        key = "network_def"
    else:
        path_part, _, key = str(definition).partition("#")
        parser = ConfigParser()
        parser.read_config(path_part)
        key = key or "network_def"
    net = parser.get_parsed_content(key)
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for nested in ("model", "network", "state_dict", "classifier", "net"):
            if isinstance(state.get(nested), dict):
                state = state[nested]
                break
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    net.load_state_dict(state)
    return net.to(dev).eval()


def _as_items(source: Sequence[dict | str | os.PathLike]) -> list[dict]:
    return [dict(it) if isinstance(it, dict) else {"image": os.fspath(it)} for it in source]


def _subsample_items(items: list[dict], max_images: int | None, seed: int) -> list[dict]:
    if max_images is None or len(items) <= max_images:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), max_images, replace=False))
    return [items[i] for i in keep]


def audit_datalists(
    train: Sequence[dict | str | os.PathLike],
    real: Sequence[dict | str | os.PathLike],
    synthetic: Sequence[dict | str | os.PathLike],
    out_dir: str | os.PathLike,
    transforms: Callable[[dict], dict] | None = None,
    intensity: str = "auto",
    image_shape: Sequence[int] | None = None,
    max_images: int | None = 1000,
    seed: int = 0,
    **kwargs: Any,
) -> dict:
    """``run_audit`` on three lists of datalist items (``{"image": path, ...}``) or paths, e.g. one fold's sets.

    Args:
        train / real / synthetic: the generator's training items, held-out real items (e.g. the fold's test split,
            which the generator never saw) and synthetic items.
        transforms: optional MONAI dictionary transform (``LoadImaged`` + intensity window to [-1, 1], as the
            bundles' training pipeline) applied to each item; its ``"image"`` output is used as it is (clipped to
            [-1, 1]). It must be deterministic (no random augmentation). None: files are read with
            ``common.data.io.read_image`` and mapped to [-1, 1] by ``intensity`` (see ``_normalise_sets``).
        image_shape: ``(C, *spatial)`` every image is converted to; default: that of the first synthetic image.
        max_images: seeded random subset per set, drawn before anything is read.
        kwargs: passed to ``run_audit`` (``features``, ``classifier``, ``n_resamples``, ``device``, ...).
    """
    from common.data.io import read_image

    sets = [_subsample_items(_as_items(x), max_images, seed) for x in (train, real, synthetic)]
    for name, items in zip(("train", "real", "synthetic"), sets, strict=True):
        if not items:
            raise DataError(f"audit: the {name} set is empty")

    def load(item: dict) -> np.ndarray:
        if transforms is None:
            return read_image(item["image"])
        out = transforms(dict(item))
        img = out["image"] if isinstance(out, dict) else out
        return np.asarray(img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else img, dtype=np.float32)

    first = load(sets[2][0])
    shape = tuple(image_shape) if image_shape is not None else tuple(first.shape)
    stacked = [
        np.stack([_resize(_fit_channels(load(it), int(shape[0]), it["image"]), shape[1:]) for it in items])
        for items in sets
    ]
    if transforms is None:
        normalised, info = _normalise_sets(stacked, intensity)
    else:
        normalised, info = [np.clip(a, -1.0, 1.0) for a in stacked], {"intensity": "the given transforms"}
    tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in normalised]
    info.update(kwargs.pop("setup_info", None) or {})
    return run_audit(*tensors, out_dir=out_dir, max_images=max_images, seed=seed, setup_info=info, **kwargs)


def audit_files(
    train: str | os.PathLike,
    real: str | os.PathLike,
    synthetic: str | os.PathLike,
    out_dir: str | os.PathLike,
    intensity: str = "auto",
    image_shape: Sequence[int] | None = None,
    max_images: int | None = 1000,
    seed: int = 0,
    **kwargs: Any,
) -> dict:
    """``audit_datalists`` on three folders (searched recursively) or datalist JSONs (``file.json#section``).

    Every image is converted to the channels and spatial shape of the first synthetic image (the generator's output
    size) unless ``image_shape`` ``(C, *spatial)`` is given, then mapped to [-1, 1] with ``intensity`` (see
    ``_normalise_sets``; the same mapping for the three sets). Other keyword arguments go to ``run_audit``.
    """
    paths = [_list_source(src, None, seed) for src in (train, real, synthetic)]
    sources = {"train": os.fspath(train), "real": os.fspath(real), "synthetic": os.fspath(synthetic)}
    info = dict(kwargs.pop("setup_info", None) or {}, sources=sources)
    return audit_datalists(
        *paths,
        out_dir,
        intensity=intensity,
        image_shape=image_shape,
        max_images=max_images,
        seed=seed,
        setup_info=info,
        **kwargs,
    )


class SynthesisAudit:
    """The audit as a bundle-config object: settings at construction, the three image sets at call time.

    Config use::

        "audit": {"_target_": "common.audit.SynthesisAudit", "out_dir": "@output_dir", "max_images": 1000},
        "audit_result": "$@audit(@train_images, @heldout_images, @synthetic_images)"

    ``__call__(train, real, synthetic)`` takes tensors ``(N, C, *spatial)`` in [-1, 1] (``run_audit``);
    ``from_files(train, real, synthetic)`` takes folders / datalists (``audit_files``). Both return
    ``{"synthesis": ..., "privacy": ...}``, ready to merge into ``report.json``.
    Keyword arguments are those of ``run_audit`` (``features``, ``classifier``, ``seed``, ``device``, ...).
    """

    def __init__(self, out_dir: str | os.PathLike | None = None, **kwargs: Any) -> None:
        self.out_dir = out_dir
        self.kwargs = kwargs

    def __call__(
        self,
        train_images: torch.Tensor | np.ndarray,
        real_images: torch.Tensor | np.ndarray,
        synthetic_images: torch.Tensor | np.ndarray,
    ) -> dict:
        return run_audit(train_images, real_images, synthetic_images, out_dir=self.out_dir, **self.kwargs)

    def from_files(self, train: str | os.PathLike, real: str | os.PathLike, synthetic: str | os.PathLike) -> dict:
        if self.out_dir is None:
            raise ValueError("SynthesisAudit.from_files needs out_dir")
        return audit_files(train, real, synthetic, self.out_dir, **self.kwargs)
