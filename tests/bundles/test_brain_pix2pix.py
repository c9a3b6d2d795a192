"""brain_pix2pix end to end through the bundle's own configs (smoke.json keeps it to seconds on CPU): training,
synthetic cases, the four-arm segmentation protocol, the exported segmenter as MONAI Label loads it, 3-D mode,
resume after a kill, bad input, determinism, and BRATS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synthaug_testing import assert_gans_saw_only_training_patients, bundle_helpers, kill_training_after_checkpoints

from common.data.datalist import read_datalist
from common.data.io import read_image, write_image
from common.data.phantoms import BrainTumourPhantom
from common.errors import find_data_error

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "brain_pix2pix"
CONFIGS = BUNDLE / "configs"
_configs, _workflow, _cli = bundle_helpers("brain_pix2pix")
SEQUENCES = ["t1", "t1ce", "t2", "flair"]


@pytest.mark.slow
def test_design_card_command_then_inference_writes_cases(tmp_path):
    train = _cli(["training", "--config_file", str(_configs("train", "quick", "smoke")), "--output_dir", str(tmp_path)])
    assert train.returncode == 0, train.stderr[-3000:]
    gan = tmp_path / "gan"
    assert (gan / "generator.pt").is_file() and list((gan / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert (gan / "samples_epoch_0001.png").is_file() and (gan / "train_log.csv").is_file()
    grid = read_image(gan / "samples_epoch_0001.png")
    assert grid.shape[1] > 4 * grid.shape[2] / 4, "rows of label map | 4 synthetic | 4 real sequences"
    infer = _cli(
        [
            "--config_file",
            str(_configs("inference", "quick", "smoke")),
            "--output_dir",
            str(tmp_path),
            "--n_synthetic_cases",
            "3",
        ]
    )
    assert infer.returncode == 0, infer.stderr[-3000:]
    content = read_datalist(tmp_path / "synthetic" / "datalist.json", path_keys=("image", "label", "brain", "anatomy"))
    assert content["sequences"] == SEQUENCES and len(content["training"]) == 3
    case = content["training"][0]
    image, label, brain = (read_image(case[k]) for k in ("image", "label", "brain"))
    assert image.shape == (4, 32, 32, 12) and label.shape == brain.shape == (1, 32, 32, 12)
    assert image.min() >= -1 and image.max() <= 1 and np.all(image[:, brain[0] == 0] == -1)
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 4} and np.all(brain[label > 0] == 1)


@pytest.mark.slow
def test_protocol_report_and_exported_segmenter_for_monai_label(tmp_path, check_monai_label):
    wf = _workflow(["train", "evaluate", "quick", "smoke"], tmp_path)
    wf.run()
    out = tmp_path / "evaluation"
    report = json.loads((out / "report.json").read_text())
    assert report["folds"] == 2 and report["dataset"] == "brain_tumour_phantom" and report["sequences"] == SEQUENCES
    assert set(report["arms"]) == {"real", "real+synthetic", "synthetic_only", "synthetic_only+finetune"}
    for arm in report["arms"].values():
        for metric in ("dice_wt", "dice_tc", "dice_et"):
            s = arm["metrics"][metric]
            assert 0 <= s["mean"] <= 1 and s["std"] >= 0 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
            assert arm["per_case_metrics"][metric]["n"] == report["n_cases"], "every case tested exactly once"
        assert all(len(fold["per_case"]) >= 1 for fold in arm["per_fold"])
    similarity = report["synthesis"]["image_similarity"]
    for seq in SEQUENCES:
        assert set(similarity[seq]) == {"mae", "psnr", "ssim"} and similarity[seq]["mae"]["mean"] > 0
    assert "synthetic_only vs real" in report["comparisons"]
    assert (out / "report.md").is_file() and (out / "report_arms.png").is_file()
    splits = json.loads((out / "splits.json").read_text())["folds"]
    for fold, split in enumerate(splits):  # pix2pix never saw a test case, synthetic cases come from training ones
        assert not set(split["train"]) & set(split["test"])
        syn = read_datalist(out / f"fold{fold}" / "synthetic" / "datalist.json")["training"]
        assert {s["source_case"] for s in syn} <= set(split["train"])
    assert assert_gans_saw_only_training_patients(out) == len(splits)
    assert report["privacy"]["per_fold"] or any("audit skipped" in n for n in report["notes"])

    chosen = json.loads((out / "segmenter.json").read_text())
    assert chosen["arm"] in report["arms"] and (out / "segmenter.pt").is_file()
    # MONAI Label's way in: ConfigWorkflow(workflow_type="infer") reads the properties, then runs
    seg = _workflow(["segment"], tmp_path, workflow_type="infer", seg_channels=[4, 8, 16], image_size=32)
    assert seg.check_properties() in (None, [])
    seg.run()
    preds = sorted((tmp_path / "segmentations").rglob("*_seg.nii.gz"))
    assert len(preds) == report["n_cases"]
    pred = read_image(preds[0])
    assert pred.shape == (1, 32, 32, 12) and set(np.unique(pred).tolist()) <= {0, 1, 2, 4}
    # ... and as a bundle folder of its own (MONAI Label's way in; runs without the repository)
    folder = out / "brain_pix2pix_segmentation"
    assert chosen["downstream_bundle"] == str(folder)
    case = read_datalist(tmp_path / "prepared" / "datalist.json", path_keys=("image",))["training"][0]["image"]
    summary = check_monai_label(folder, image=case)
    assert summary["raw_shape"] == (3, 32, 32, 12) and summary["pred_shape"] == (32, 32, 12)  # after Restored
    # the names of the label map's values, as MONAI Label shows them (not the network's channels TC, WT, ET)
    assert summary["labels"] == {"necrosis": 1, "oedema": 2, "enhancing": 4} and len(summary["outputs"]) == 1
    assert set(summary["answer"]) <= {0, 1, 2, 4}


@pytest.mark.slow
def test_three_d_mode_is_one_key_away(tmp_path):
    keys = {"spatial_dims": 3, "g_channels": [8, 16], "d_layers": 1}
    _workflow(["train", "quick", "smoke"], tmp_path, crop_size=[16, 16, 8], **keys).run()  # trained on 3-D crops
    assert (tmp_path / "gan" / "generator.pt").is_file() and (tmp_path / "gan" / "samples_epoch_0001.png").is_file()
    wf = _workflow(["inference", "quick", "smoke", "smoke_inference"], tmp_path, **keys)  # whole volumes
    wf.run()
    case = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"][0]
    assert read_image(case["image"]).shape == (4, 32, 32, 12)


@pytest.mark.slow
def test_same_seed_same_generator(tmp_path):
    weights = []
    for run in ("a", "b"):
        _workflow(["train", "quick", "smoke"], tmp_path / run).run()
        weights.append(torch.load(tmp_path / run / "gan" / "generator.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    args = ["training", "--config_file", str(_configs("train", "quick", "smoke")), "--output_dir", str(tmp_path)]
    args += ["--max_epochs", "400", "--checkpoint_interval", "1"]
    last = kill_training_after_checkpoints(args, tmp_path / "gan" / "checkpoints")
    args[args.index("400")] = str(last + 2)
    again = _cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"checkpoint_epoch={last}.pt" in again.stdout + again.stderr, "it says where it resumed from"
    epochs = [int(line.split(",")[0]) for line in (tmp_path / "gan" / "train_log.csv").read_text().splitlines()[1:]]
    assert epochs[-2:] == [last + 1, last + 2], "continued, did not start over"


def _fail(tmp_path, dataset_dir, **overrides):
    with pytest.raises(Exception) as info:
        _workflow(["train", "quick", "smoke"], tmp_path / "out", dataset_dir=str(dataset_dir), **overrides).run()
    err = find_data_error(info.value)
    assert err is not None, f"not a DataError: {info.value!r}"
    return str(err)


def test_bad_input_messages_name_the_case_or_file(tmp_path):
    source = tmp_path / "phantom"
    BrainTumourPhantom(n_cases=3, shape=(32, 32, 20), seed=0).ensure(source)

    def copy(name):
        out = tmp_path / name
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("*.json"))
        return out

    assert str(tmp_path / "nowhere") in _fail(tmp_path, tmp_path / "nowhere")

    missing = copy("missing")
    (missing / "phantom001" / "phantom001_flair.nii.gz").unlink()
    msg = _fail(tmp_path, missing)  # train.json asks for all four sequences
    assert "phantom001" in msg and "flair" in msg

    mismatched = copy("mismatched")
    write_image(mismatched / "phantom002" / "phantom002_seg.nii.gz", np.zeros((1, 32, 30, 20), np.int16))
    assert "phantom002_seg.nii.gz" in _fail(tmp_path, mismatched)

    corrupt = copy("corrupt")
    (corrupt / "phantom000" / "phantom000_t2.nii.gz").write_bytes(b"not a nifti")
    assert "phantom000_t2.nii.gz" in _fail(tmp_path, corrupt)

    no_anatomy = copy("no_anatomy")
    for p in no_anatomy.rglob("*_anatomy.nii.gz"):
        p.unlink()
    assert "use_anatomy" in _fail(tmp_path, no_anatomy)


@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path):
    res = _cli(
        ["training", "--config_file", str(_configs("train", "quick", "smoke")), "--output_dir", str(tmp_path)]
        + ["--dataset_dir", str(tmp_path / "nowhere")]
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"synthaug: error: dataset_dir '{tmp_path / 'nowhere'}' not found" in res.stderr


@pytest.mark.slow
@pytest.mark.realdata
def test_training_and_synthesis_on_brats2015(tmp_path, shared_data):
    data = shared_data("brats2015")
    wf = _workflow(["train", "quick", "smoke", "brats2015"], tmp_path, dataset_dir=str(data))
    wf.run()
    assert (tmp_path / "gan" / "generator.pt").is_file()
    prepared = read_datalist(tmp_path / "prepared" / "datalist.json")
    assert prepared["sequences"] == ["t1ce", "flair"] and len(prepared["training"]) == 4
    inf = _workflow(["inference", "quick", "smoke", "smoke_inference", "brats2015"], tmp_path, dataset_dir=str(data))
    inf.run()
    case = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"][0]
    assert read_image(case["image"]).shape == (2, 32, 32, 12)
    assert "anatomy" not in case, "BRATS has a brain mask only"
