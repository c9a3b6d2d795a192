#!/usr/bin/env python
"""Load a bundle folder the way MONAI Label does, run one image through it, and run its infer workflow standalone.

Usage::

    python ci/check_monai_label.py BUNDLE_DIR [--image PATH] [--no-workflow] [--timeout S]

MONAI Label itself cannot be installed with this project's pins (monailabel 0.8.5 requires torchvision and sam2, and
``monailabel/transform/post.py`` imports torchvision at import time), so this script repeats the steps of
monailabel 0.8.5's ``monailabel/tasks/infer/bundle.py`` (``BundleInferTask.__init__``, ``pre_transforms``,
``inferer``, ``post_transforms``) and ``basic_infer.py`` (``_get_network``, ``run_inferer``), in that order:

1. ``configs/inference.json`` (else ``inference.yaml``) must exist; the folder goes first on ``sys.path``;
2. ``ConfigParser().read_config(<config>)``, then ``config.update({"bundle_root": <folder>})``;
3. ``models/model.pt`` present: ``network_def`` is instantiated (else ``models/model.ts`` must exist: TorchScript);
4. ``configs/metadata.json``: the FIRST key of ``network_data_format.inputs`` is the image key, the FIRST key of
   ``outputs`` the pred key; the output's ``channel_def`` gives the label names, the input's ``spatial_shape`` the
   dimension;
5. pre-transforms: ``preprocessing`` (or ``pre_transforms``), a ``Compose`` flattened to its transforms, applied to
   ``{"image": <path>}`` (MONAI Label's request; the image key of step 4 must be in the result: MONAI Label's
   ``Restored`` post-transform reads it);
6. ``inferer`` (``SimpleInferer`` when absent) on ``data["image"][None]`` with the network of step 3, whose weights
   ``torch.load(model.pt)`` (``checkpoint.get("model", checkpoint)``) gives; the first item becomes ``data["pred"]``;
7. post-transforms: ``postprocessing`` (or ``post_transforms``) without ``SaveImaged``; the pred key of step 4 must
   be in the result.

Two differences, both stricter: weights load with ``strict=True`` (MONAI Label's default ``load_strict=False`` only
warns, and would serve a model with random layers), and MONAI Label's own transforms (``LoadImageTensord`` around
``LoadImaged``, ``Restored`` at the end) are not available here and are left out. When ``monailabel`` happens to be
importable, its real ``BundleInferTask`` loads the folder as well.

Then, unless ``--no-workflow``: a fresh Python process, with the bundle folder as working directory and this
repository NOT on ``PYTHONPATH``, runs ``ConfigWorkflow(config_file=configs/inference.json, workflow_type="infer")``:
``initialize()``, ``check_properties()`` (no missing property), ``run()`` over a datalist holding the one image, and
checks that ``common`` was imported from the bundle's own copy and that the run wrote a prediction file.

Without ``--image`` a random image is made from ``network_data_format.inputs.image`` (``data_type`` png or nifti).
Prints one line per step and the pred shape; exit status 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["BundleCheckError", "check_bundle", "infer_one", "load_like_monai_label", "make_test_image", "run_workflow"]


class BundleCheckError(RuntimeError):
    """A bundle that MONAI Label would not load or run; the message names the file and key."""


def _sequence(obj: Any) -> list:
    from monai.transforms import Compose

    return list(obj.transforms) if isinstance(obj, Compose) else list(obj or [])


def load_like_monai_label(bundle_dir: str | os.PathLike) -> dict:
    """Steps 1-4 of the module docstring; returns ``config`` (the ConfigParser), ``network`` (None for TorchScript),
    ``model_path``, ``key_image``, ``key_pred``, ``labels``, ``dimension``, ``metadata``."""
    from monai.bundle import ConfigParser

    path = str(Path(bundle_dir).resolve())
    configs = [c for c in ("inference.json", "inference.yaml") if os.path.exists(os.path.join(path, "configs", c))]
    if not configs:
        raise BundleCheckError(f"{path}/configs has neither inference.json nor inference.yaml: MONAI Label ignores it")
    sys.path.insert(0, path)
    try:
        config = ConfigParser()
        config.read_config(os.path.join(path, "configs", configs[0]))
        config.config.update({"bundle_root": path})
        network = None
        model_path = os.path.join(path, "models", "model.pt")
        if os.path.exists(model_path):
            if "network_def" not in config:
                raise BundleCheckError(f"configs/{configs[0]} has no 'network_def' (MONAI Label instantiates it)")
            network = config.get_parsed_content("network_def", instantiate=True)
        else:
            model_path = os.path.join(path, "models", "model.ts")
            if not os.path.exists(model_path):
                raise BundleCheckError(f"{path}/models has neither model.pt nor model.ts: MONAI Label ignores it")
        meta_file = os.path.join(path, "configs", "metadata.json")
        if not os.path.exists(meta_file):
            raise BundleCheckError(f"{meta_file} not found")
        with open(meta_file) as fp:
            metadata = json.load(fp)
        fmt = metadata.get("network_data_format", {})
        if not fmt.get("inputs") or not fmt.get("outputs"):
            raise BundleCheckError(f"{meta_file}: network_data_format needs 'inputs' and 'outputs'")
        key_image, image = next(iter(fmt["inputs"].items()))
        key_pred, pred = next(iter(fmt["outputs"].items()))
        labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
        spatial_shape = image.get("spatial_shape")
    finally:
        sys.path.remove(path)
    return {
        "path": path,
        "config": config,
        "network": network,
        "model_path": model_path,
        "key_image": key_image,
        "key_pred": key_pred,
        "image_spec": image,
        "pred_spec": pred,
        "labels": labels,
        "dimension": len(spatial_shape) if spatial_shape else 3,
        "metadata": metadata,
    }


def infer_one(loaded: dict, image_path: str | os.PathLike, device: str = "cpu") -> dict:
    """Steps 5-7 on one image; returns ``pred`` (after post-transforms), ``raw_shape`` (the inferer's output for
    the image, batch removed) and ``pred_shape``."""
    import torch
    from monai.data import decollate_batch
    from monai.inferers import SimpleInferer
    from monai.transforms import SaveImaged

    config, path = loaded["config"], loaded["path"]
    sys.path.insert(0, path)
    try:
        config.config.update({"device": device})
        config.parse(reset=True)
        pre: list = []
        for k in ("preprocessing", "pre_transforms"):
            if config.get(k):
                pre = _sequence(config.get_parsed_content(k, instantiate=True))
        inferer = (
            next((config.get_parsed_content(k, instantiate=True) for k in ("inferer",) if config.get(k)), None)
            or SimpleInferer()
        )
        post: list = []
        for k in ("postprocessing", "post_transforms"):
            if config.get(k):
                post = _sequence(config.get_parsed_content(k, instantiate=True))
        post = [t for t in post if not isinstance(t, SaveImaged)]
    finally:
        sys.path.remove(path)

    data: dict = {"image": str(image_path)}
    for t in pre:
        data = t(data)
    if loaded["key_image"] not in data:
        raise BundleCheckError(
            f"metadata's first input '{loaded['key_image']}' is not a key of the preprocessed data "
            f"{sorted(data)}: MONAI Label reads the image under it"
        )
    if loaded["network"] is not None:
        network = copy.deepcopy(loaded["network"]).to(torch.device(device))
        checkpoint = torch.load(loaded["model_path"], map_location=torch.device(device), weights_only=True)
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise BundleCheckError(f"models/model.pt does not fit network_def: {first}") from exc
    else:
        network = torch.jit.load(loaded["model_path"], map_location=torch.device(device))
    network.eval()
    inputs = data["image"]
    inputs = inputs if torch.is_tensor(inputs) else torch.from_numpy(np.asarray(inputs))
    with torch.no_grad():
        outputs = inferer(inputs[None].to(torch.device(device)), network)
    outputs = decollate_batch(outputs)[0] if isinstance(outputs, dict) else outputs[0]
    data["pred"] = outputs
    raw_shape = tuple(outputs.shape)
    for t in post:
        data = t(data)
    if loaded["key_pred"] not in data:
        raise BundleCheckError(
            f"metadata's first output '{loaded['key_pred']}' is not a key after postprocessing {sorted(data)}"
        )
    want = int(loaded["pred_spec"].get("num_channels", raw_shape[0]))
    if raw_shape[0] != want:
        raise BundleCheckError(f"the network gives {raw_shape[0]} channels, metadata outputs.pred says {want}")
    pred = data[loaded["key_pred"]]
    return {"pred": pred, "raw_shape": raw_shape, "pred_shape": tuple(np.shape(pred))}


def make_test_image(spec: dict, data_type: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """A random image file that fits ``network_data_format.inputs.image`` (``*`` sizes -> 32). A patch-based 2-D
    input (``is_patch_data``) in NIfTI gets a depth of 8: such networks are fed slices of a volume."""
    rng = np.random.default_rng(seed)
    shape = [32 if isinstance(s, str) else int(s) for s in spec.get("spatial_shape", [])] or [32, 32]
    channels = int(spec.get("num_channels", 1))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if data_type in ("png", "jpeg", "jpg"):
        from PIL import Image

        pixels = rng.integers(0, 256, size=[*shape, channels] if channels > 1 else shape, dtype=np.uint8)
        out = folder / "image.png"
        Image.fromarray(pixels).save(out)
        return out
    import nibabel as nib

    if spec.get("is_patch_data") and len(shape) == 2:
        shape = [*shape, 8]
    lo, hi = (spec.get("value_range") or [-1, 1])[:2]
    pixels = rng.uniform(lo, hi, size=[*shape, channels] if channels > 1 else shape).astype(np.float32)
    out = folder / "image.nii.gz"
    nib.save(nib.Nifti1Image(pixels, np.eye(4)), str(out))
    return out


_WORKFLOW = textwrap.dedent(
    """
    import json, os, sys
    from monai.bundle import ConfigWorkflow
    override = json.loads(sys.argv[1])
    wf = ConfigWorkflow(config_file="configs/inference.json", meta_file="configs/metadata.json",
                        logging_file="configs/logging.conf", workflow_type="infer", **override)
    wf.initialize()
    missing = wf.check_properties()
    if missing:
        sys.exit(f"missing infer properties: {missing}")
    wf.run()
    wf.finalize()
    import common
    print("COMMON_FROM=" + os.path.abspath(common.__file__))
    """
)


def run_workflow(bundle_dir: str | os.PathLike, image_path: str | os.PathLike, timeout: float = 600) -> dict:
    """The standalone run of the module docstring; returns ``outputs`` (files written) and ``common_from``."""
    bundle_dir = Path(bundle_dir).resolve()
    work = Path(tempfile.mkdtemp(prefix="check_monai_label_"))
    data_dir, out_dir = work / "data", work / "out"
    data_dir.mkdir()
    (data_dir / "datalist.json").write_text(json.dumps({"training": [{"image": str(Path(image_path).resolve())}]}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    override = {"dataset_dir": str(data_dir), "output_dir": str(out_dir), "device": "$torch.device('cpu')"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _WORKFLOW, json.dumps(override)],
            cwd=bundle_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise BundleCheckError(f"ConfigWorkflow(infer) run in {bundle_dir} failed:\n{tail}")
        lines = proc.stdout.splitlines()
        common_from = next((ln.split("=", 1)[1] for ln in lines if ln.startswith("COMMON_FROM=")), "")
        if not Path(common_from).is_relative_to(bundle_dir):
            raise BundleCheckError(f"the run imported common from '{common_from}', not from the bundle's own copy")
        outputs = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
        if not outputs:
            raise BundleCheckError(f"ConfigWorkflow(infer) run in {bundle_dir} wrote no prediction under output_dir")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"outputs": outputs, "common_from": common_from}


def _real_monai_label(bundle_dir: Path) -> str | None:
    """Load with the real BundleInferTask when monailabel is installed; None when it is not."""
    try:
        from monailabel.tasks.infer.bundle import BundleInferTask
    except ImportError:
        return None
    task = BundleInferTask(str(bundle_dir), {})
    if not task.is_valid():
        raise BundleCheckError(f"monailabel's BundleInferTask rejected {bundle_dir} (see its log)")
    return f"monailabel BundleInferTask: valid, type {task.type}, labels {task.labels}"


def check_bundle(
    bundle_dir: str | os.PathLike,
    image: str | os.PathLike | None = None,
    workflow: bool = True,
    timeout: float = 600,
    stream=None,
) -> dict:
    """Every step of the module docstring; raises ``BundleCheckError`` at the first failing one. Returns
    ``pred_shape``, ``raw_shape``, ``labels``, ``key_image``, ``key_pred`` and, with ``workflow``, ``outputs``."""
    stream = stream or sys.stdout
    bundle_dir = Path(bundle_dir).resolve()
    loaded = load_like_monai_label(bundle_dir)
    print(
        f"PASS load: network_def + models/{Path(loaded['model_path']).name}, image key '{loaded['key_image']}', "
        f"pred key '{loaded['key_pred']}', labels {loaded['labels']}, dimension {loaded['dimension']}",
        file=stream,
    )
    scratch = None
    if image is None:
        scratch = tempfile.mkdtemp(prefix="check_monai_label_img_")
        image = make_test_image(loaded["image_spec"], loaded["metadata"].get("data_type", "nifti"), scratch)
    try:
        result = infer_one(loaded, image)
        print(f"PASS infer: {image} -> raw {result['raw_shape']} -> pred {result['pred_shape']}", file=stream)
        real = _real_monai_label(bundle_dir)
        if real:
            print(f"PASS {real}", file=stream)
        summary = {k: result[k] for k in ("pred_shape", "raw_shape")} | {
            k: loaded[k] for k in ("labels", "key_image", "key_pred", "dimension")
        }
        if workflow:
            run = run_workflow(bundle_dir, image, timeout=timeout)
            print(f"PASS workflow: standalone run wrote {run['outputs']} (common from the bundle)", file=stream)
            summary["outputs"] = run["outputs"]
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle_dir", type=Path)
    ap.add_argument("--image", type=Path, help="one input image (default: a random one that fits the metadata)")
    ap.add_argument("--no-workflow", action="store_true", help="skip the standalone ConfigWorkflow run")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for the standalone run")
    args = ap.parse_args(argv)
    try:
        summary = check_bundle(args.bundle_dir, args.image, workflow=not args.no_workflow, timeout=args.timeout)
    except (BundleCheckError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"FAIL {args.bundle_dir}: {type(exc).__name__}: {exc}")
        return 1
    print(f"{args.bundle_dir}: pred shape {tuple(summary['pred_shape'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
