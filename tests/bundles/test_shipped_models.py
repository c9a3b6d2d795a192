"""Every bundle ships a generator: `inference.json` writes synthetic data from `models/model.pt`, no training.

The README's command, run as a user runs it (a subprocess from the repository root, only --output_dir and a small
count added), and the model card's quality figures are those of the shipped weights' report.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.data.datalist import read_datalist
from common.data.io import read_image
from common.engines.model_file import read_model_info

REPO = Path(__file__).resolve().parents[2]
BUNDLES = ["liver_lesion_gan", "lung_cisl_gan", "skin_melanogan", "spine_stylegan2", "brain_pix2pix"]


def _infer(bundle: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"bundles/{bundle}/configs/inference.json"]
    return subprocess.run([*cmd, "--output_dir", str(out), *extra], cwd=REPO, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_from_the_shipped_weights(tmp_path, bundle):
    model = REPO / "bundles" / bundle / "models" / "model.pt"
    assert model.is_file(), f"{bundle} ships no models/model.pt"
    assert model.stat().st_size < 25 * 2**20, "the zoo's limit for a file in the bundle"
    info = read_model_info(model)
    if bundle == "brain_pix2pix":  # label maps of the embedded phantom -> MRI
        run = _infer(bundle, tmp_path, "--n_synthetic_cases", "1", "--phantom_dir", str(tmp_path / "phantom"))
        assert run.returncode == 0, run.stderr[-3000:]
        case = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"][0]
        image = read_image(case["image"])
        assert image.shape[0] == len(info["sequences"]) and image.shape[1:3] == (info["image_size"],) * 2
        assert -1.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
        return
    run = _infer(bundle, tmp_path, "--n_synthetic_per_class", "3")
    assert run.returncode == 0, run.stderr[-3000:]
    items = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"]
    names = info["class_names"]
    with_generator = info.get("gan_classes") or names  # MelanoGANs: melanoma only
    assert sorted({it["label"] for it in items}) == sorted(names.index(c) for c in with_generator)
    assert len(items) == 3 * len(with_generator)
    images = np.stack([read_image(it["image"]) for it in items])
    size = info.get("image_size") or info.get("resolution")
    assert images.shape[-2:] == (size, size)
    assert images.std(axis=0).mean() > 0, "different latents give different images"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_carries_the_shipped_models_provenance(bundle):
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    quality = json.loads((REPO / "bundles" / bundle / "docs" / "results" / "quality.json").read_text())
    provenance = meta["synthaug_model"]
    for key in ("dataset", "data_licence", "command", "generator_steps", "training_seconds", "sha256"):
        assert provenance.get(key) not in (None, ""), key
    assert provenance["generator_steps"] == quality["training"]["iterations"]
    for metric in ("precision", "recall", "coverage", "frechet_ratio"):
        assert meta["eval_metrics"][metric] == pytest.approx(quality[metric], abs=1e-4)
    digest = hashlib.sha256((REPO / "bundles" / bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert provenance["sha256"] == digest, "metadata describes the weights that are shipped"
