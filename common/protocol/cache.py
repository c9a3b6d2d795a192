"""What a protocol reuses (a fold's GANs and synthetic set, an arm's classifier) is keyed by the settings that made it.

A protocol restarted in the same ``output_dir`` reuses finished work, which is what makes a killed evaluation
resumable and lets ``--equal_steps`` retrain only the classifiers. Reuse must never hand back results made with
other settings (another GAN recipe, step budget, seed, set of training images): ``claim`` keys a folder by a
digest of its settings (``settings.json`` inside), and a folder made with different or unrecorded settings is moved
aside to ``<folder>.stale-N`` (nothing is deleted) before the work is redone. ``describe`` turns recipes, config
components (``functools.partial``), closures, transforms and networks into plain JSON without memory addresses, so
the same settings give the same digest in every process; an object whose attributes change while it trains (the DP
wrapper holds the engine and optimiser it wrapped) says what its settings are with a ``cache_settings()`` method.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.fs import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["KEY_FILE", "claim", "describe", "settings_digest"]

KEY_FILE = "settings.json"
_MAX_DEPTH = 6
_MAX_LISTED = 32


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def describe(obj: Any, depth: int = 0) -> Any:
    """A JSON-able description of ``obj`` that is equal for equal settings (see the module docstring)."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if depth >= _MAX_DEPTH:
        return _name(type(obj))
    d = depth + 1
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): describe(v, d) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        described = [describe(v, d) for v in items]
        if len(described) > _MAX_LISTED:  # a data set: its digest keeps settings.json short, and as exact
            return {"items": len(described), "sha256": hashlib.sha256(json.dumps(described).encode()).hexdigest()}
        return described
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().float()
        return {"tensor": list(obj.shape), "dtype": str(obj.dtype), "sum": round(float(t.sum()), 6)}
    if isinstance(obj, torch.device | torch.dtype):
        return str(obj)
    if isinstance(obj, nn.Module):
        return {"module": repr(obj)}  # the architecture: layers, widths, kernels (no addresses)
    if isinstance(obj, type):
        return _name(obj)
    if isinstance(obj, functools.partial):  # a config component with "_mode_": "callable"
        return {"call": _name(obj.func), "args": describe(obj.args, d), "kwargs": describe(obj.keywords, d)}
    if callable(obj) and hasattr(obj, "__code__"):  # a function or closure: its name and what it closes over
        cells = [describe(c.cell_contents, d) for c in (obj.__closure__ or ()) if _filled(c)]
        return {"call": _name(obj), "closure": cells, "defaults": describe(obj.__defaults__, d)}
    if hasattr(obj, "__func__") and hasattr(obj, "__self__"):  # a bound method
        return {"method": obj.__func__.__qualname__, "of": describe(obj.__self__, d)}
    if callable(getattr(obj, "cache_settings", None)):  # an object that changes as it trains names its settings
        return {"type": _name(type(obj)), **describe(obj.cache_settings(), d)}
    if dataclasses.is_dataclass(obj):
        fields = {f.name: describe(getattr(obj, f.name), d) for f in dataclasses.fields(obj)}
        return {"type": _name(type(obj)), **fields}
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        public = {k: v for k, v in state.items() if not k.startswith("_") and k != "R"}  # R: MONAI's RandomState
        return {"type": _name(type(obj)), **{k: describe(v, d) for k, v in sorted(public.items())}}
    return _name(type(obj))


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
    except ValueError:
        return False
    return True


def settings_digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(describe(settings), sort_keys=True).encode()).hexdigest()


def claim(folder: str | Path, settings: Mapping[str, Any], what: str = "results") -> Path:
    """Make ``folder`` the home of the results of ``settings``: keep it when it was made with the same settings (its
    finished work is reused, its checkpoints resumed); move it aside to ``<folder>.stale-N`` when it was made with
    others or holds files without a key (an older run); then record the key. Returns ``folder``."""
    folder = Path(folder)
    digest = settings_digest(settings)
    key_file = folder / KEY_FILE
    if folder.is_dir() and any(folder.iterdir()):
        try:
            held = json.loads(key_file.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            held = None
        if held == digest:
            return folder
        n = 1
        while folder.with_name(f"{folder.name}.stale-{n}").exists():
            n += 1
        aside = folder.with_name(f"{folder.name}.stale-{n}")
        folder.rename(aside)
        logger.warning(f"{what} in {folder} were made with other settings: moved to {aside.name}, redoing them")
    folder.mkdir(parents=True, exist_ok=True)
    record = {"sha256": digest, "settings": describe(settings)}
    atomic_write_text(key_file, json.dumps(record, indent=1, sort_keys=True))
    return folder
