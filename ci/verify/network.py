"""The network checks: ``network_shape`` (synthaug's own) and ``verify_net_in_out`` (MONAI's, as the zoo runs it).

A bundle's ``network_data_format`` is the contract with its users (MONAI Label, downstream code), so the network
that inference.json (else train.json) builds is run on dummy inputs made from it (``shapes``) and its output
compared with the first output entry. MONAI's ``verify_net_in_out`` only knows an ``image`` input, so bundles whose
network takes latents or label maps are declared in ``EXCLUDE_VERIFY_SHAPE`` with their reason, as the zoo declares
its GAN, and SKIP it. inference.json may build its network from models/model.pt (a generator's sizes travel with its
weights): without that file these checks SKIP (``model_file`` FAILs), and ``build_network`` can let train.json's
network stand in, which ``ckpt_export`` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import WEIGHTS, Bundle, Report, quiet
from .configs import load_config
from .shapes import BATCH, bind_size_variables, dummy_input, expected_output_ok

# Bundles excluded from MONAI's ``verify_net_in_out`` (the model zoo's ``exclude_verify_shape_list`` in its
# ci/bundle_custom_data.py, which lists its GAN bundle ``mednist_gan``): that function feeds a random
# ``inputs.image`` and knows no other input. A generator's input is a latent (``type: noise``) and, when conditional,
# a class index or a label map, which ``network_shape`` builds from network_data_format instead. Name -> reason.
EXCLUDE_VERIFY_SHAPE: dict[str, str] = {
    "brain_pix2pix": "pix2pix generator: its input is a one-hot label map 'condition', not an 'image'",
    "liver_lesion_gan": "DCGAN/ACGAN generator: its inputs are a latent z (type noise) and, for the ACGAN, a class",
    "lung_cisl_gan": "class-conditional generator: its inputs are a latent z (type noise) and a class index",
    "skin_melanogan": "DCGAN/LAPGAN/DDGAN-like generator: its input is a latent z (type noise)",
    "spine_stylegan2": "conditional StyleGAN2 generator: its inputs are a latent z (type noise) and a class index",
}


class NetworkError(Exception):
    """A config's network id is missing or is not a ``torch.nn.Module``."""


class WeightsMissing(Exception):
    """inference.json builds its network from models/model.pt, which is missing."""


def _instantiate(b: Bundle, config: Path, net_ids: Sequence[str]) -> tuple[Any, str]:
    """The first of ``net_ids`` that ``config`` defines, instantiated, and that id."""
    import torch

    parser = load_config([config], b.meta_file)
    net_id = next((k for k in net_ids if k in parser), None)
    if net_id is None:
        raise NetworkError(f"{config.name} defines none of {', '.join(repr(k) for k in net_ids)}")
    # the bundle's own bundle_root may locate itself from the command line; here the folder is known
    parser["bundle_root"] = str(b.root)
    parser.parse(reset=True)
    with quiet():
        net = parser.get_parsed_content(net_id, instantiate=True)
    if not isinstance(net, torch.nn.Module):
        raise NetworkError(f"'{net_id}' in {config.name} is a {type(net).__name__}, not a torch.nn.Module")
    return net, net_id


def _weights_missing_stand_in(b: Bundle) -> Path | None:
    """train.json, when models/model.pt is missing and train.json exists: its network stands in for inference's."""
    if (b.root / WEIGHTS).is_file() or not b.config("train.json").is_file():
        return None
    return b.config("train.json")


def build_network(b: Bundle, net_ids: Sequence[str], stand_in: bool = False) -> tuple[Any, str, str]:
    """(network, its id, where it came from) of inference.json, else train.json.

    inference.json may build its network from models/model.pt (a generator's sizes travel with its weights). When
    that file is missing (``model_file`` FAILs), this raises ``WeightsMissing``; with ``stand_in``, train.json's
    network (the same class, at the sizes the recipe picks on this device) stands in.
    """
    inference = b.config("inference.json")
    if not inference.is_file():
        net, net_id = _instantiate(b, b.config("train.json"), net_ids)
        return net, net_id, "train.json"
    try:
        net, net_id = _instantiate(b, inference, net_ids)
        return net, net_id, "inference.json"
    except NetworkError:
        raise
    except Exception as inference_error:
        train = _weights_missing_stand_in(b)
        if train is None:
            raise
        if not stand_in:
            raise WeightsMissing(
                f"inference.json cannot build its network without {WEIGHTS} (its sizes travel with the weights)"
            ) from inference_error
        try:
            net, net_id = _instantiate(b, train, net_ids)
        except Exception:
            raise inference_error from None  # the error the bundle's users meet
        return net, net_id, f"{train.name}: inference.json needs the missing {WEIGHTS}"


def _first_output(out: Any, name: str) -> Any:
    if isinstance(out, dict):
        return out[name] if name in out else next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def check_network(b: Bundle, r: Report, meta: dict | None) -> None:
    import torch

    name = "network_shape"
    fmt = (meta or {}).get("network_data_format")
    if not isinstance(fmt, dict) or not isinstance(fmt.get("inputs"), dict) or not isinstance(fmt.get("outputs"), dict):
        r.skip(name, "metadata has no network_data_format with inputs and outputs")
        return
    if not fmt["inputs"] or not fmt["outputs"]:
        r.skip(name, "network_data_format.inputs/outputs is empty")
        return
    if not any(c.is_file() for c in (b.config("inference.json"), b.config("train.json"))):
        r.skip(name, "neither inference.json nor train.json exists")
        return
    try:
        net, net_id, source = build_network(b, ("network", "network_def"))
    except WeightsMissing as e:
        r.skip(name, str(e))
        return

    inputs: dict[str, Any] = fmt["inputs"]
    out_name, out_spec = next(iter(fmt["outputs"].items()))
    env = bind_size_variables([s.get("spatial_shape", []) for s in inputs.values() if isinstance(s, dict)])
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    args = [dummy_input(spec, env, generator) for spec in inputs.values()]
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    described = ", ".join(
        f"{k}{tuple(a.shape) if isinstance(a, torch.Tensor) else '=' + repr(a)}"
        for k, a in zip(inputs, args, strict=True)
    )
    net.eval()
    with torch.no_grad():
        out = _first_output(net(*args), out_name)
    if not isinstance(out, torch.Tensor):
        r.fail(name, f"forward({described}) returned {type(out).__name__}, not a tensor")
        return
    shape = tuple(out.shape)
    if expected_output_ok(out_spec, shape, env):
        r.ok(
            name, f"{net_id}({described}) -> {out_name}{shape}" + ("" if source == "inference.json" else f" [{source}]")
        )
    else:
        channels, spatial = out_spec.get("num_channels"), out_spec.get("spatial_shape")
        want = f"(batch {BATCH}, num_channels={channels}, spatial_shape={spatial})"
        r.fail(name, f"{net_id}({described}) -> {shape}, but outputs.{out_name} says {want}")


def check_net_in_out(b: Bundle, r: Report, meta: dict | None) -> None:
    name = "verify_net_in_out"
    reason = EXCLUDE_VERIFY_SHAPE.get(b.root.name)
    if reason:
        r.skip(name, f"{b.root.name} is in EXCLUDE_VERIFY_SHAPE: {reason} (network_shape checks its inputs)")
        return
    fmt = (meta or {}).get("network_data_format")
    inputs = fmt.get("inputs") if isinstance(fmt, dict) else None
    if not isinstance(inputs, dict) or "image" not in inputs:
        r.fail(
            name,
            "network_data_format.inputs has no 'image', the only input MONAI's verify_net_in_out feeds: a network "
            "whose inputs are latents or label maps belongs in EXCLUDE_VERIFY_SHAPE (ci/verify/network.py) with the "
            "reason",
        )
        return
    config = b.config("inference.json")
    if not config.is_file():
        r.skip(name, "inference.json is missing")
        return
    from monai.bundle import verify_net_in_out

    def run(config_file: Path) -> None:
        with quiet():
            verify_net_in_out(
                net_id="network_def",
                meta_file=str(b.meta_file),
                config_file=str(config_file),
                device="cpu",
                bundle_root=str(b.root),
            )

    try:
        run(config)
    except Exception:
        if _weights_missing_stand_in(b) is None:
            raise
        r.skip(name, f"inference.json cannot build its network without {WEIGHTS} (its sizes travel with the weights)")
        return
    r.ok(name, "network_def of inference.json: inputs.image -> outputs.pred channels and dtype match")
