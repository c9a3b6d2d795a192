#!/usr/bin/env python
"""Load a bundle folder the way MONAI Label does, run one image through exactly what its infer task runs, and run
its infer workflow standalone.

Usage::

    python ci/check_monai_label.py BUNDLE_DIR [--image PATH] [--no-workflow] [--timeout S]

What MONAI Label 0.8.5 runs for ``POST /infer/<bundle>`` of the monaibundle app (``BundleInferTask(path, conf)``
with its defaults; ``monailabel/tasks/infer/bundle.py`` and ``basic_infer.py``), repeated here step by step:

1. ``configs/inference.json`` (else ``inference.yaml``) must exist; the folder goes first on ``sys.path``;
2. ``ConfigParser().read_config(<config>)``, then ``config.update({"bundle_root": <folder>})``;
3. ``models/model.pt`` present: ``network_def`` is instantiated (else ``models/model.ts`` must exist: TorchScript);
4. ``configs/metadata.json``: the FIRST key of ``network_data_format.inputs`` is the image key, the FIRST key of
   ``outputs`` the pred key; the output's ``channel_def`` gives the label names and ids (``{name.lower(): int(key)}``,
   "background" left out), the input's ``spatial_shape`` the dimension; the task type comes from the folder name
   ("classification", "segmentation", ... in it; segmentation otherwise);
5. pre-transforms: ``preprocessing`` (or ``pre_transforms``), a ``Compose`` flattened to its transforms, every
   ``LoadImaged`` switched to ``image_only=False`` (so ``<key>_meta_dict`` is written beside the image) and wrapped in
   MONAI Label's ``LoadImageTensord`` (which, for a file path, only calls the ``LoadImaged``), applied to the request
   ``{"image": <path>, "image_path": <path>, "device": ...}``;
6. ``inferer`` (``SimpleInferer`` when absent) on ``data["image"][None]`` with the network of step 3, whose weights
   ``torch.load(model.pt)`` (``checkpoint.get("model", checkpoint)``) gives; the first item becomes ``data["pred"]``;
7. post-transforms: ``postprocessing`` (or ``post_transforms``) without ``SaveImaged``, then MONAI Label's
   ``Restored(keys=<pred key>, ref_image=<image key>)`` (every type but detection): it maps the prediction back onto
   the grid of the input, read from the image's ``MetaTensor`` meta or ``<image key>_meta_dict`` (``spatial_shape``,
   resized with nearest neighbour where it differs; a channel of one is dropped; ``original_affine`` becomes the
   pred's affine). A prediction with no grid (class scores) must find no ``spatial_shape`` there: with one, MONAI
   Label answers HTTP 500 ("operands could not be broadcast together with shapes (0,) (2,)");
8. the writer: a classification's ``ClassificationWriter`` reads ``data["pred"].array`` (so a ``MetaTensor``) and
   names score ``i`` by the label whose id is ``i`` (a score without a name is dropped); a segmentation's ``Writer``
   writes ``data["pred"]`` (after step 7) as an image with the input's suffix.

When ``monailabel`` is importable, the real ``BundleInferTask`` runs the image (steps 1-8, through its ``__call__``)
as well, and both must pass. It is not importable beside this project's pins (see the README's MONAI Label
section: its torchvision and pydicom-seg do not install or import here), so steps 5-8 are re-implemented in this
file: ``_restored`` and ``_write`` repeat what ``Restored``, ``ClassificationWriter`` and ``Writer`` do with the
defaults BundleInferTask uses, no more. ``ci/monai_label_server.py`` runs the real server.

Four differences, all stricter: weights load with ``strict=True`` (MONAI Label's default ``load_strict=False`` only
warns, and would serve a model with random layers); the image key of step 4 must be a key of the preprocessed data
(else ``Restored`` silently finds no grid); every score of a classifier must have a label name; and every value of a
segmentation must be one the metadata names (``channel_def``), or 0: MONAI Label would show it unnamed.

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


def task_type(folder_name: str) -> str:
    """The task type MONAI Label's BundleInferTask gives a bundle folder without an explicit type (step 4)."""
    name = folder_name.lower()
    for kind in ("deepedit", "deepgrow", "detection", "segmentation", "classification"):
        if kind in name:
            return kind
    return "segmentation"


def load_like_monai_label(bundle_dir: str | os.PathLike) -> dict:
    """Steps 1-4 of the module docstring; returns ``config`` (the ConfigParser), ``network`` (None for TorchScript),
    ``model_path``, ``key_image``, ``key_pred``, ``labels``, ``dimension``, ``type``, ``metadata``."""
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
        "type": task_type(Path(path).name),
        "metadata": metadata,
    }


def _restored(data: dict, key_pred: str, key_image: str) -> dict:
    """Step 7's ``Restored`` with the arguments BundleInferTask gives it (channel first, no orientation undone, no
    label remapping), in MONAI Label 0.8.5's order of operations."""
    from monai.data import MetaTensor
    from monai.transforms import Resize

    ref = data.get(key_image)
    meta = ref.meta if isinstance(ref, MetaTensor) else data.get(f"{key_image}_meta_dict", {})
    pred = data[key_pred]
    current = pred.shape[1:]
    spatial_shape = meta.get("spatial_shape", current)
    # MONAI Label takes the trailing len(current) sizes as spatial_shape[-len(current):]: for a prediction without
    # spatial dimensions that is the whole spatial_shape, and the comparison below fails to broadcast
    target = spatial_shape[-len(current) :]
    try:
        differs = np.any(np.not_equal(current, target))
    except ValueError as exc:
        raise BundleCheckError(
            f"MONAI Label's Restored fails on a '{key_pred}' of shape {tuple(pred.shape)} against the input's "
            f"spatial_shape {tuple(np.asarray(spatial_shape).tolist())} ({exc}): HTTP 500. A prediction without a "
            f"grid (class scores) must leave no spatial_shape in '{key_image}' ({key_image}_meta_dict or its "
            "MetaTensor meta) after postprocessing"
        ) from exc
    if differs:
        pred = Resize(spatial_size=target, mode="nearest")(pred)
    data[key_pred] = pred if len(pred.shape) <= 3 else pred[0] if pred.shape[0] == 1 else pred
    data.setdefault(f"{key_pred}_meta_dict", {})["affine"] = meta.get("original_affine")
    return data


def _write(loaded: dict, data: dict) -> Any:
    """Step 8 on ``data["pred"]``: the classification answer (``[{"idx", "label", "score"}]``), or the label image
    (numpy) a segmentation's writer saves; plus the stricter checks of the module docstring."""
    import torch
    from monai.data import MetaTensor

    pred, labels = data["pred"], loaded["labels"]
    if loaded["type"] == "classification":
        if not isinstance(pred, MetaTensor):
            raise BundleCheckError(
                f"after postprocessing 'pred' is a {type(pred).__name__}: MONAI Label's ClassificationWriter reads "
                "pred.array, which only a MetaTensor has (HTTP 500)"
            )
        names = {v: k for k, v in labels.items()}
        scores = [float(s) for s in pred]  # one number per class: a pred with more dimensions fails here, as there
        unnamed = [i for i in range(len(scores)) if i not in names]
        if unnamed:
            raise BundleCheckError(
                f"scores {unnamed} have no label name in outputs.pred.channel_def: MONAI Label drops them"
            )
        return [{"idx": i, "label": names[i], "score": s} for i, s in enumerate(scores)]
    image = pred.array if isinstance(pred, MetaTensor) else pred
    image = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if image.ndim < 2 or (image.ndim == 4 and image.shape[0] == 1):
        raise BundleCheckError(f"after Restored 'pred' has shape {image.shape}: MONAI Label cannot write it as a label")
    named = {0, *labels.values()}
    unnamed = sorted(set(np.unique(image).tolist()) - named)
    if unnamed:
        raise BundleCheckError(
            f"the label map holds values {unnamed} that outputs.pred.channel_def does not name "
            f"(it names {dict(sorted((v, k) for k, v in labels.items()))}): MONAI Label would show them unnamed"
        )
    return image


def infer_one(loaded: dict, image_path: str | os.PathLike, device: str = "cpu") -> dict:
    """Steps 5-8 on one image; returns ``pred`` (after post-transforms and Restored), ``raw_shape`` (the inferer's
    output for the image, batch removed), ``pred_shape`` and ``answer`` (the writer's: class scores with names, or
    the label image)."""
    import torch
    from monai.data import decollate_batch
    from monai.inferers import SimpleInferer
    from monai.transforms import LoadImaged, SaveImaged

    config, path = loaded["config"], loaded["path"]
    sys.path.insert(0, path)
    try:
        config.config.update({"device": device})
        config.parse(reset=True)
        pre: list = []
        for k in ("preprocessing", "pre_transforms"):
            if config.get(k):
                pre = _sequence(config.get_parsed_content(k, instantiate=True))
        for t in pre:
            if isinstance(t, LoadImaged):
                t._loader.image_only = False  # as BundleInferTask.pre_transforms does
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

    data: dict = {"image": str(image_path), "image_path": str(image_path), "device": device}
    for t in pre:
        data = t(data)
    if loaded["key_image"] not in data:
        raise BundleCheckError(
            f"metadata's first input '{loaded['key_image']}' is not a key of the preprocessed data "
            f"{sorted(data)}: MONAI Label's Restored reads the input's grid under it"
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
    want = int(loaded["pred_spec"].get("num_channels", raw_shape[0]))
    if raw_shape[0] != want:
        raise BundleCheckError(f"the network gives {raw_shape[0]} channels, metadata outputs.pred says {want}")
    for t in post:
        data = t(data)
    if loaded["key_pred"] not in data:
        raise BundleCheckError(
            f"metadata's first output '{loaded['key_pred']}' is not a key after postprocessing {sorted(data)}"
        )
    if loaded["type"] != "detection":
        data = _restored(data, loaded["key_pred"], loaded["key_image"])
    answer = _write(loaded, data)
    pred = data[loaded["key_pred"]]
    return {"pred": pred, "raw_shape": raw_shape, "pred_shape": tuple(np.shape(pred)), "answer": answer}


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


def _real_monai_label(bundle_dir: Path, image: str | os.PathLike, device: str = "cpu") -> str:
    """Steps 1-8 by the real BundleInferTask when monailabel imports; a line saying what ran, or why not."""
    try:
        from monailabel.tasks.infer.bundle import BundleInferTask
    except Exception as exc:  # not installed, or installed without an importable torchvision (RuntimeError)
        return f"SKIP monailabel's own BundleInferTask: monailabel does not import ({type(exc).__name__}: {exc})"
    task = BundleInferTask(str(bundle_dir), {})
    if not task.is_valid():
        raise BundleCheckError(f"monailabel's BundleInferTask rejected {bundle_dir} (see its log)")
    try:
        result_file, result = task({"image": str(image), "device": device})
    except Exception as exc:
        raise BundleCheckError(f"monailabel's BundleInferTask failed on {image}: {type(exc).__name__}: {exc}") from exc
    if isinstance(result_file, str) and os.path.isfile(result_file):
        os.unlink(result_file)
    answer = result.get("prediction", f"label file {result_file}")
    return f"PASS monailabel BundleInferTask: type {task.type}, labels {task.labels}, answer {answer}"


def check_bundle(
    bundle_dir: str | os.PathLike,
    image: str | os.PathLike | None = None,
    workflow: bool = True,
    timeout: float = 600,
    stream=None,
) -> dict:
    """Every step of the module docstring; raises ``BundleCheckError`` at the first failing one. Returns
    ``pred_shape``, ``raw_shape``, ``labels``, ``key_image``, ``key_pred``, ``dimension``, ``type``, ``answer`` (a
    classifier's named scores, a segmenter's label values) and, with ``workflow``, ``outputs``."""
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
        answer = result["answer"]
        if loaded["type"] != "classification":
            answer = sorted(np.unique(answer).tolist())
        print(
            f"PASS infer ({loaded['type']}: preprocessing, inferer, postprocessing + Restored, writer): {image} -> "
            f"raw {result['raw_shape']} -> pred {result['pred_shape']}; "
            f"{'answer' if loaded['type'] == 'classification' else 'label values'} {answer}",
            file=stream,
        )
        print(_real_monai_label(bundle_dir, image), file=stream)
        summary = {k: result[k] for k in ("pred_shape", "raw_shape")} | {
            k: loaded[k] for k in ("labels", "key_image", "key_pred", "dimension", "type")
        }
        summary["answer"] = answer
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
