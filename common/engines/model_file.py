"""A bundle's trained generator(s) as one ``models/model.pt``, the model zoo's layout.

One checkpoint holds every generator of the bundle, keyed as ``fit_gans`` names them (one per class name for
Frid-Adar's DCGAN-per-class, ``"conditional"`` for one class-conditional G, ``"generator"`` for pix2pix), so MONAI's
``CheckpointLoader(load_dict={name: G, ...})`` loads them in one go. Beside them, under ``"synthaug"``, the settings
the networks were built with (class names, channel widths, image size, recipe) and the provenance: the network
sizes travel with the weights, so ``inference.json`` builds matching networks from the file itself.

The ``"synthaug"`` entry holds plain values only (strings, numbers, lists): it is read with ``weights_only=True``,
and a config never evaluates what it holds (class names are data, not code).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from common.errors import DataError

__all__ = ["MODEL_INFO_KEY", "build_generators", "read_model_info", "write_model_file"]

MODEL_INFO_KEY = "synthaug"


def build_generators(recipe, class_names: Sequence[str], classes: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """Fresh generators in eval mode, keyed as in the model file: ``{"conditional": G}`` or ``{class name: G}``."""
    if recipe.conditional:
        names = ["conditional"]
    else:
        names = [n for n in class_names if classes is None or n in set(classes)]
    return {name: recipe.generator().eval() for name in names}


def write_model_file(generators: Mapping[str, nn.Module], path: str | os.PathLike, info: Mapping | None = None) -> str:
    """Save ``{name: G.state_dict()}`` plus ``info`` under ``"synthaug"`` to ``path`` (written aside, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if MODEL_INFO_KEY in generators:
        raise ValueError(f"'{MODEL_INFO_KEY}' is reserved for the model information")
    state = {name: {k: v.detach().cpu() for k, v in g.state_dict().items()} for name, g in generators.items()}
    state[MODEL_INFO_KEY] = dict(info or {})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return str(path)


def read_model_info(path: str | os.PathLike) -> dict:
    """The ``"synthaug"`` entry of a model file; one clear line when the file is missing or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"no model file at '{path}' (key 'model_file'): the bundle ships models/model.pt; after your own "
            "'training' run pass --model_file <output_dir>/model.pt"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"'{path}' is not a readable model file (key 'model_file'): {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get(MODEL_INFO_KEY), dict):
        raise DataError(f"'{path}' holds no '{MODEL_INFO_KEY}' model information: not a synthaug model file")
    return dict(state[MODEL_INFO_KEY])
