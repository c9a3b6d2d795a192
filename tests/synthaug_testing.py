"""Helpers the bundle tests share: a bundle's config paths, its workflow in-process, its CLI in a subprocess, and a
training run killed mid-way; and the scripts of ``ci/`` as modules.

``tests/conftest.py`` puts this folder on ``sys.path``; a test file does
``configs, workflow, cli = bundle_helpers("<bundle name>")``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parents[1]


def bundle_helpers(name: str) -> tuple[Callable[..., list[str]], Callable[..., ConfigWorkflow], Callable]:
    """``(configs, workflow, cli)`` for ``bundles/<name>``:

    - ``configs(*names)``: the paths of ``configs/<n>.json``, in order (later files override earlier ones);
    - ``workflow(names, output_dir, workflow_type="train", **overrides)``: an initialised ``ConfigWorkflow`` of those
      configs with the bundle's metadata, ``output_dir`` and ``bundle_root`` set, and ``overrides`` as config keys;
    - ``cli(args, **kwargs)``: ``python -m monai.bundle run *args`` from the repository root (the README's way),
      output captured.
    """
    bundle = REPO / "bundles" / name
    config_dir = bundle / "configs"

    def configs(*names: str) -> list[str]:
        return [str(config_dir / f"{n}.json") for n in names]

    def workflow(names, output_dir, workflow_type="train", **overrides) -> ConfigWorkflow:
        wf = ConfigWorkflow(
            config_file=configs(*names),
            meta_file=str(config_dir / "metadata.json"),
            logging_file=False,
            output_dir=str(output_dir),
            bundle_root=str(bundle),
            workflow_type=workflow_type,
            **overrides,
        )
        wf.initialize()
        return wf

    def cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "monai.bundle", "run", *args], cwd=REPO, capture_output=True, text=True, **kwargs
        )

    return configs, workflow, cli


def kill_training_after_checkpoints(args: list[str], checkpoint_dir: Path, n: int = 2, timeout: float = 240) -> int:
    """Start ``python -m monai.bundle run *args`` from the repository root, SIGKILL its process group once
    ``checkpoint_dir`` holds ``n`` epoch checkpoints (or after ``timeout`` s), as a crash or a pre-empted job would, and
    return the epoch of the newest *complete* checkpoint: the kill may cut the newest save short (MONAI's saver writes
    in place), and resuming skips such a file, so the test must expect the one before it."""
    from common.engines import latest_checkpoint

    proc = subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(checkpoint_dir.glob("*epoch=*.pt"))) < n:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    newest = latest_checkpoint(str(checkpoint_dir), complete_only=True)
    assert newest is not None, f"no complete checkpoint in {checkpoint_dir} before the kill"
    return int(Path(newest).stem.split("=")[-1])


def assert_gans_saw_only_training_patients(evaluation_dir: Path) -> int:
    """Every GAN a protocol trained (each ``training_done.json`` under ``fold<i>/``) records the patients it was fed;
    they must all be fold i's *training* patients, never a validation or test one. Returns the number of GAN records
    checked (at least one per fold), so a protocol that stops recording cannot pass by checking nothing."""
    splits = json.loads((evaluation_dir / "splits.json").read_text())["folds"]
    checked = 0
    for fold, split in enumerate(splits):
        train = {str(p) for p in split["train"]}
        records = sorted((evaluation_dir / f"fold{fold}").rglob("training_done.json"))
        assert records, f"fold {fold}: no GAN training record under {evaluation_dir / f'fold{fold}'}"
        for record in records:
            seen = set(json.loads(record.read_text())["patients"])
            assert seen, f"{record}: no patients recorded"
            outside = sorted(seen - train)
            assert not outside, f"{record}: the GAN saw {len(outside)} non-training patients, e.g. {outside[:3]}"
            checked += 1
    return checked


def load_ci_script(name: str) -> ModuleType:
    """Import ``ci/<name>.py`` by path (``ci`` is a folder of scripts, not a package), registered in ``sys.modules``
    (dataclasses look their module up while a class is built)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "ci" / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_exported_segmenter(out: Path, size: int = 32, depth: int = 12) -> tuple[Path, Path]:
    """The brain evaluation's downstream export (``SegmentationProtocol.export_best_segmenter``'s labels, channels
    and template) of a tiny random-weight UNet, written as ``out/brain_pix2pix_segmentation``; plus one prepared case
    (NIfTI, sequences last) of ``size`` x ``size`` x ``depth``. Returns ``(folder, case)``."""
    import nibabel as nib
    import numpy as np
    import torch
    from monai.networks.nets import UNet

    from common.protocol.export import export_downstream
    from common.protocol.segmentation import SEGMENTER_CHANNELS, SEGMENTER_LABELS

    brain = REPO / "bundles" / "brain_pix2pix"
    sequences, channels = ["t1", "t1ce", "t2", "flair"], [4, 8, 16]
    model = out / "fold0" / "real"
    model.mkdir(parents=True)
    torch.manual_seed(0)
    net = UNet(spatial_dims=2, in_channels=4, out_channels=3, channels=channels, strides=[2, 2], num_res_units=2)
    torch.save(net.state_dict(), model / "best_model.pt")
    (model / "result.json").write_text(json.dumps({"best_val_dice_mean": 0.5}))
    record = export_downstream(
        [("real", 0, model / "result.json")], "best_val_dice_mean", out / "segmenter.pt", kind="segmentation",
        labels=SEGMENTER_LABELS,
        downstream={
            "template": str(brain / "configs" / "segment.json"), "source_root": str(brain),
            "channels": SEGMENTER_CHANNELS,
            "config": {"sequences": sequences, "image_size": size, "seg_channels": channels},
            "image": {"data_type": "nifti", "modality": "MR", "num_channels": len(sequences),
                      "spatial_shape": [size, size], "is_patch_data": True,
                      "channel_def": {str(i): s for i, s in enumerate(sequences)}},
        },
    )  # fmt: skip
    case = out / "case.nii.gz"
    pixels = np.random.default_rng(0).uniform(-1, 1, (size, size, depth, len(sequences))).astype(np.float32)
    nib.save(nib.Nifti1Image(pixels, np.eye(4)), str(case))
    return Path(record["downstream_bundle"]), case
