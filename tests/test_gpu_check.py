"""benchmarks/gpu_check.py runs end to end on CPU at --tiny size: one latent GAN (liver_lesion_gan) and the paired
brain_pix2pix, every mode's paper-recipe GAN step timed, and each bundle's smoke training + inference through the CLI.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ["liver_lesion_gan", "brain_pix2pix"]


def _gpu_check():
    name = "gpu_check"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.slow
def test_tiny_cpu_run_writes_a_complete_report(tmp_path, capsys):
    gpu_check = _gpu_check()
    out = tmp_path / "gpu_check.json"
    argv = ["--device", "cpu", "--tiny", "--bundles", *BUNDLES, "--out", str(out), "--work-dir", str(tmp_path / "w")]
    assert gpu_check.main(argv) == 0
    report = json.loads(out.read_text())
    modes = list(gpu_check.MODES)

    assert report["ok"] is True and report["seconds"] > 0
    assert report["env"]["device"] == "cpu" and report["env"]["torch"]
    assert report["settings"] == {
        "bundles": BUNDLES, "modes": modes, "steps": 2, "warmup": 1, "max_case_s": 10.0, "tiny": True,
    }  # fmt: skip

    # (a) the paper recipe's GAN step, from the bundle's own configs (smoke.json sizes), in every mode
    assert list(report["train_step"]) == BUNDLES
    for bundle, entry in report["train_step"].items():
        assert entry["recipe"] == "paper"
        assert entry["configs"] == [f"bundles/{bundle}/configs/train.json", f"bundles/{bundle}/configs/smoke.json"]
        assert entry["batch_size"] > 0 and entry["generator_params"] > 0 and entry["discriminator_params"] > 0
        assert list(entry["cases"]) == modes
        for mode, case in entry["cases"].items():
            assert "error" not in case, case.get("traceback")
            assert case["bundle"] == bundle and case["mode"] == mode
            assert case["images_per_s"] > 0 and case["seconds"] > 0 and case["peak_mb"] > 0
            assert case["iterations"] == 2 and case["warmup"] == 1
            assert case["amp"] == case["amp_active"] == ("bf16" in mode)  # bf16 autocast on CUDA and on the CPU
            assert math.isfinite(case["g_loss"]) and math.isfinite(case["d_loss"])
            layout = case["layout"]
            for net in ("generator", "discriminator"):
                assert layout[net]["target_format"] == "channels_last" and layout[net]["param_ranks"] == [4]
                assert layout[net]["converted"] is ("channels_last" in mode)
    # the shapes the bundles train on: liver's 1-channel ROIs (+ a class label), pix2pix's sequences from a label map
    assert report["train_step"]["liver_lesion_gan"]["image_shape"] == [1, 32, 32]
    assert report["train_step"]["liver_lesion_gan"]["augment"] == "ClassicAugmentation"  # the paper recipe's
    pix = report["train_step"]["brain_pix2pix"]
    assert pix["image_shape"] == [4, 32, 32] and pix["condition_shape"][1:] == [32, 32]
    assert pix["generator"] == "Pix2PixUNet" and pix["discriminator"] == "ConditionalPatchDiscriminator"
    assert pix["cases"]["fp32"]["layout"]["batch"] == "contiguous"
    assert pix["cases"]["channels_last"]["layout"]["batch"] == "channels_last"

    # (b) the smoke training + inference through the bundle's CLI, on the device asked for
    assert list(report["smoke"]) == BUNDLES
    for smoke in report["smoke"].values():
        for step in ("training", "inference"):
            run = smoke[step]
            assert run["exit_code"] == 0, run.get("log_tail")
            assert run["seconds"] > 0 and run["command"][-2:] == ["--device", "cpu"]
        assert (Path(smoke["output_dir"]) / "model.pt").is_file()

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("train_step", "smoke"))]
    assert len(lines) == len(BUNDLES) * (len(modes) + 2), "one line per case"
