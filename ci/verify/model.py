"""Checks of the trained weights, models/model.pt: ``model_file`` and ``ckpt_export``.

A zoo bundle ships its trained weights (MONAI's ``ckpt_export`` and ``CheckpointLoader`` read models/model.pt); a
bundle without them is a recipe, not a model, and FAILs. ``ckpt_export`` does what ``python -m monai.bundle
ckpt_export network_def --config_file configs/inference.json`` does, with MONAI's own function, once per network of
a synthaug model file, and reloads the TorchScript, as the zoo's CI does for every bundle it does not exclude;
without weights, ``network_def`` (or train.json's network standing in) is scripted without them. A network that
cannot be scripted is declared in ``EXCLUDE_VERIFY_TORCHSCRIPT`` with its reason (the zoo's
``exclude_verify_torchscript_list``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .base import WEIGHTS, Bundle, Report, quiet
from .network import build_network

#: key of the model information in a synthaug model file (``common.engines.model_file.MODEL_INFO_KEY``): every other
#: top-level key of such a file holds one network's state dict
MODEL_INFO_KEY = "synthaug"
# Bundles whose network_def does not script (the zoo's ``exclude_verify_torchscript_list``). Name -> reason.
EXCLUDE_VERIFY_TORCHSCRIPT: dict[str, str] = {}


def check_model_file(b: Bundle, r: Report) -> None:
    weights = b.root / WEIGHTS
    if weights.is_file():
        r.ok("model_file", f"{WEIGHTS} ({weights.stat().st_size / 1e6:.1f} MB)")
    else:
        r.fail(
            "model_file",
            f"{WEIGHTS} is missing: a zoo bundle ships its trained weights (add them, or list them in "
            "large_files.yml and run python -m monai.bundle download_large_files first)",
        )


def _checkpoint_keys(weights: Path) -> list[str]:
    """``key_in_ckpt`` values for ``ckpt_export``: one per network of a synthaug model file, else ``[""]``."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get(MODEL_INFO_KEY), dict):
        return [k for k, v in state.items() if k != MODEL_INFO_KEY and isinstance(v, dict)]
    return [""]


def check_ckpt_export(b: Bundle, r: Report) -> None:
    import torch

    name = "ckpt_export"
    reason = EXCLUDE_VERIFY_TORCHSCRIPT.get(b.root.name)
    if reason:
        r.skip(name, f"{b.root.name} is in EXCLUDE_VERIFY_TORCHSCRIPT: {reason}")
        return
    config = b.config("inference.json")
    if not config.is_file():
        r.skip(name, "inference.json is missing")
        return
    weights = b.root / WEIGHTS
    if not weights.is_file():
        # what ckpt_export does, minus loading the weights: build network_def and script it
        net, _, source = build_network(b, ("network_def",), stand_in=True)
        with quiet():
            torch.jit.script(net.eval())
        r.ok(name, f"network_def scripts (torch.jit.script), without weights [{source}; no {WEIGHTS} to load]")
        return
    from monai.bundle import ckpt_export

    keys = _checkpoint_keys(weights)
    with tempfile.TemporaryDirectory(prefix="ckpt_export_") as tmp:
        for key in keys:
            target = Path(tmp) / f"model_{key or 'net'}.ts"
            with quiet():
                ckpt_export(
                    net_id="network_def",
                    filepath=str(target),
                    ckpt_file=str(weights),
                    meta_file=str(b.meta_file),
                    config_file=str(config),
                    key_in_ckpt=key,
                    bundle_root=str(b.root),
                )
                torch.jit.load(str(target), map_location="cpu")
    which = f" [{', '.join(keys)}]" if keys != [""] else ""
    r.ok(name, f"network_def of inference.json + {WEIGHTS}{which} -> TorchScript, reloads")
