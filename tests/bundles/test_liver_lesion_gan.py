"""liver_lesion_gan end to end, through the bundle's own configs (smoke.json keeps it to seconds on CPU):
training + inference + the paper's protocol, resume after a kill, bad input, determinism, real CT."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from synthaug_testing import assert_gans_saw_only_training_patients, bundle_helpers, kill_training_after_checkpoints

from common.data.datalist import read_datalist
from common.data.io import read_image, write_image
from common.errors import DataError, find_data_error

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "liver_lesion_gan"
CONFIGS = BUNDLE / "configs"
_configs, _workflow, _cli = bundle_helpers("liver_lesion_gan")


@pytest.mark.slow
def test_train_then_inference_through_the_cli(tmp_path):
    """The README's commands: `run training` then `run` of inference.json (with the same size overrides)."""
    train = _cli(["training", "--config_file", str(_configs("train", "quick", "smoke")), "--output_dir", str(tmp_path)])
    assert train.returncode == 0, train.stderr[-3000:]
    for name in ("cyst", "metastasis", "hemangioma"):
        folder = tmp_path / "gan" / name
        assert (folder / "generator.pt").is_file() and list((folder / "checkpoints").glob("*.pt"))
        assert (folder / "samples_epoch_0001.png").is_file() and (folder / "train_log.csv").is_file()
    infer = _cli(
        [
            "--config_file",
            str(_configs("inference", "quick", "smoke")),
            "--output_dir",
            str(tmp_path),
            "--n_synthetic_per_class",
            "5",
        ]
    )
    assert infer.returncode == 0, infer.stderr[-3000:]
    items = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"]
    assert [it["label"] for it in items] == [0] * 5 + [1] * 5 + [2] * 5
    roi = read_image(items[0]["image"])
    assert roi.shape == (1, 32, 32) and -160 <= roi.min() and roi.max() <= 240  # back in HU, inside the window


@pytest.mark.slow
def test_acgan_is_one_key_away(tmp_path):
    common = ["--config_file", None, "--output_dir", str(tmp_path), "--gan_type", "acgan"]
    train = _cli(["training", *[str(_configs("train", "quick", "smoke")) if a is None else a for a in common]])
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "gan" / "conditional" / "generator.pt").is_file(), "one class-conditional GAN"
    infer = _cli(
        [*[str(_configs("inference", "quick", "smoke", "smoke_inference")) if a is None else a for a in common]]
    )
    assert infer.returncode == 0, infer.stderr[-3000:]
    items = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"]
    assert sorted({it["label"] for it in items}) == [0, 1, 2]


@pytest.mark.slow
def test_protocol_report_has_arms_with_uncertainty_and_paper_numbers(tmp_path, check_monai_label):
    wf = _workflow(["train", "evaluate", "quick", "smoke"], tmp_path)
    wf.run()
    report = json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert report["folds"] == 3 and report["dataset"] == "phantom"
    assert set(report["arms"]) == {"baseline", "classic", "classic+synthetic", "synthetic_only"}
    for arm in report["arms"].values():
        assert len(arm["per_fold"]) == 3
        for metric in ("accuracy", "sensitivity", "specificity"):
            s = arm["metrics"][metric]
            assert 0 <= s["mean"] <= 1 and s["std"] >= 0 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert report["paper_reference"]["classic+synthetic"] == {"sensitivity": 0.857, "specificity": 0.924}
    assert "classic+synthetic vs classic" in report["comparisons"]
    assert report["synthesis"]["per_fold"] and report["privacy"]["per_fold"], "the audit ran in every fold"
    out = tmp_path / "evaluation"
    assert (out / "report.md").is_file() and (out / "report_arms.png").is_file() and (out / "splits.json").is_file()
    splits = json.loads((out / "splits.json").read_text())["folds"]
    for fold, split in enumerate(splits):
        assert not set(split["train"]) & set(split["test"])
        assert (out / f"fold{fold}" / "synthetic" / "datalist.json").is_file()
    # what each fold's three per-class GANs were fed, as they recorded it: training patients only
    assert assert_gans_saw_only_training_patients(out) == 3 * len(splits)

    # the exported classifier, chosen on validation scores, loads as MONAI Label loads a bundle (infer workflow)
    chosen = json.loads((out / "classifier.json").read_text())
    assert chosen["arm"] in report["arms"] and (out / "classifier.pt").is_file()
    wf = ConfigWorkflow(
        config_file=_configs("classify"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        output_dir=str(tmp_path),
        bundle_root=str(BUNDLE),
        dataset_dir=str(tmp_path / "phantom"),
        image_size=32,
        classifier_channels=[8, 8, 8],
    )
    wf.initialize()
    assert wf.check_properties() in (None, [])
    wf.run()
    with open(tmp_path / "predictions" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 36 and {r["prediction_index"] for r in rows} <= {"0", "1", "2"}
    assert all(abs(sum(float(r[f"prob_{c}"]) for c in chosen["class_names"]) - 1) < 1e-5 for r in rows)
    assert json.loads((tmp_path / "predictions" / "metrics.json").read_text())["n_images"] == 36, "labelled: metrics"
    # ... and as a bundle folder of its own, which MONAI Label's BundleInferTask loads and which runs without the repo
    folder = out / "liver_lesion_gan_classification"
    assert chosen["downstream_bundle"] == str(folder)
    image = read_datalist(tmp_path / "phantom" / "datalist.json")["training"][0]["image"]
    summary = check_monai_label(folder, image=image)
    assert summary["pred_shape"] == (3,) and summary["outputs"] == ["predictions/predictions.csv"]
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["synthaug_export"]["arm"] == chosen["arm"] and meta["synthaug_export"]["test_metrics"]


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path):
    reports = []
    for run in ("a", "b"):
        wf = _workflow(["train", "evaluate", "quick", "smoke"], tmp_path / run, run_audit=False)
        reports.append(wf.run()[1])  # run: [set_determinism, protocol.run() -> report, export]
    for arm in reports[0]["arms"]:
        assert reports[0]["arms"][arm]["per_fold"] == reports[1]["arms"][arm]["per_fold"]


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    args = [
        "training",
        "--config_file",
        str(_configs("train", "quick", "smoke")),
        "--output_dir",
        str(tmp_path),
        "--max_epochs",
        "400",
        "--checkpoint_interval",
        "1",
    ]
    last = kill_training_after_checkpoints(args, tmp_path / "gan" / "cyst" / "checkpoints")
    target = last + 2
    args[args.index("400")] = str(target)
    again = _cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"checkpoint_epoch={last}.pt" in again.stdout + again.stderr, "it says where it resumed from"
    log = (tmp_path / "gan" / "cyst" / "train_log.csv").read_text().splitlines()[1:]
    epochs = [int(line.split(",")[0]) for line in log]
    assert epochs[-2:] == [last + 1, last + 2] and max(epochs) == target, "continued, did not start over"
    # exact resume: killed at an arbitrary point (mid-epoch, or mid-save), it ends as a run never stopped would
    whole_dir = tmp_path / "uninterrupted"
    args[args.index(str(tmp_path))] = str(whole_dir)
    whole = _cli(args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    for name in ("cyst", "metastasis", "hemangioma"):
        resumed, reference = (torch.load(run / "gan" / name / "generator.pt") for run in (tmp_path, whole_dir))
        assert all(torch.equal(resumed[k], reference[k]) for k in reference), f"{name}: resumed != uninterrupted"


@pytest.mark.slow
def test_killed_evaluation_resumes_to_the_same_report(tmp_path):
    """The paper protocol SIGKILLed inside fold 1's GAN training (fold 0 finished: its GANs, synthetic set and arms
    are reused), then started again with the same command, ends with the report of a run never stopped."""

    def args(out: Path) -> list[str]:
        return [
            "--config_file", str(_configs("train", "evaluate", "quick", "smoke")), "--output_dir", str(out),
            "--max_epochs", "40", "--checkpoint_interval", "1", "--run_audit", "false",
        ]  # fmt: skip

    killed, whole = tmp_path / "killed", tmp_path / "whole"
    gan_dir = killed / "evaluation" / "fold1" / "gan" / "metastasis"
    kill_training_after_checkpoints(args(killed), gan_dir / "checkpoints", n=2, timeout=600)
    assert not (gan_dir / "generator.pt").exists(), "the kill landed inside the GAN's training, not after it"
    assert not (killed / "evaluation" / "report.json").exists()
    for out in (killed, whole):
        done = _cli(args(out))
        assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((out / "evaluation" / "report.json").read_text()) for out in (killed, whole)]
    assert reports[0]["arms"].keys() == reports[1]["arms"].keys()
    for arm in reports[1]["arms"]:
        assert reports[0]["arms"][arm]["per_fold"] == reports[1]["arms"][arm]["per_fold"], f"{arm}: resumed != whole"
    resumed, reference = (
        torch.load(out / "evaluation" / "fold1" / "gan" / "metastasis" / "generator.pt") for out in (killed, whole)
    )
    assert all(torch.equal(resumed[k], reference[k]) for k in reference), "the killed GAN ended elsewhere"


def _fail(tmp_path, dataset_dir) -> DataError:
    with pytest.raises(Exception) as info:
        _workflow(["train", "quick", "smoke"], tmp_path / "out", dataset_dir=str(dataset_dir)).run()
    err = find_data_error(info.value)
    assert err is not None, f"not a DataError: {info.value!r}"
    return err


def _folder_set(root: Path, counts=(3, 3, 3), size=32) -> Path:
    for name, n in zip(("cyst", "metastasis", "hemangioma"), counts, strict=True):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_image(root / name / f"{name}{i}.nii.gz", np.full((1, size, size), 40.0 + i, np.float32))
    return root


def test_bad_input_messages_name_the_file_or_key(tmp_path):
    missing = tmp_path / "nowhere"
    assert "dataset_dir" in str(_fail(tmp_path, missing)) and str(missing) in str(_fail(tmp_path, missing))

    empty = _folder_set(tmp_path / "empty", counts=(3, 0, 3))
    assert "metastasis" in str(_fail(tmp_path, empty))

    corrupt = _folder_set(tmp_path / "corrupt")
    bad = corrupt / "cyst" / "cyst1.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    assert "cyst1.nii.gz" in str(_fail(tmp_path, corrupt))

    wrong = _folder_set(tmp_path / "wrong")
    write_image(wrong / "hemangioma" / "big.nii.gz", np.zeros((1, 48, 48), np.float32))
    msg = str(_fail(tmp_path, wrong))
    assert "big.nii.gz" in msg and "48" in msg

    nan = _folder_set(tmp_path / "nan")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((32, 32), np.nan, np.float32), np.eye(4)), str(nan / "cyst" / "nan.nii.gz"))
    assert "nan.nii.gz" in str(_fail(tmp_path, nan))


@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path):
    res = _cli(
        [
            "training",
            "--config_file",
            str(_configs("train", "quick", "smoke")),
            "--output_dir",
            str(tmp_path),
            "--dataset_dir",
            str(tmp_path / "nowhere"),
        ]
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert f"synthaug: error: dataset_dir '{tmp_path / 'nowhere'}' does not exist" in res.stderr


@pytest.mark.slow
@pytest.mark.realdata
def test_protocol_on_lidc_vois(tmp_path, shared_data):
    lidc = shared_data("lidc_vois")
    wf = _workflow(
        ["train", "evaluate", "quick", "smoke", "lidc_vois"],
        tmp_path,
        dataset_dir=str(lidc),
        run_audit=False,
    )
    report = wf.run()[1]  # [set_determinism, protocol.run() -> report, export]
    assert report["dataset"] == "lidc_vois" and report["class_names"] == ["calcified", "subsolid", "solid"]
    # quick.json on a real set: at most 60 VOIs per class, whole patients (815 in the set)
    assert 100 < report["n_images"] <= 3 * 60
