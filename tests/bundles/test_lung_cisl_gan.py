"""lung_cisl_gan end to end, through the bundle's own configs (smoke.json keeps it to seconds on CPU): training +
inference + the paper's two-stage protocol with multi-class and binary tasks, the Turing test kit, resume after a
kill, bad input, determinism, real CT (LIDC-IDRI sign mapping, patient-separated folds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from synthaug_testing import assert_gans_saw_only_training_patients, bundle_helpers, kill_training_after_checkpoints

from common.data.datalist import read_datalist
from common.data.io import read_image, write_image
from common.errors import DataError, find_data_error
from common.protocol.turing import score_turing_test

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "lung_cisl_gan"
CONFIGS = BUNDLE / "configs"
_configs, _workflow, _cli = bundle_helpers("lung_cisl_gan")
PHANTOM_CLASSES = ["ground_glass", "calcification", "cavity", "spiculation", "lobulation", "normal"]
ARMS = {"real", "synthetic_only", "pretrain_synthetic+finetune", "real+synthetic"}


def test_protocol_two_stage_arms_and_tasks(tmp_path, check_monai_label):
    """The acceptance path in-process: evaluate.json writes report.json with the four arms, per task, with CIs."""
    _workflow(["train", "evaluate", "quick", "smoke"], tmp_path, run_audit=False).run()
    report = json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert report["dataset"] == "phantom" and report["class_names"] == PHANTOM_CLASSES and report["folds"] == 3
    assert set(report["arms"]) == ARMS and report["primary_task"] == "multiclass"
    assert set(report["tasks"]) == {"multiclass", "calcification_vs_rest", "cavity_vs_rest", "binary_mean"}
    for task in report["tasks"].values():
        for arm in task["arms"].values():
            assert len(arm["per_fold"]) == 3
            for metric in ("accuracy", "sensitivity", "specificity"):
                s = arm["metrics"][metric]
                assert 0 <= s["mean"] <= 1 and s["std"] >= 0 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    fold = report["arms"]["real"]["per_fold"][0]
    assert set(fold["per_class"]) == set(PHANTOM_CLASSES), "per-class sensitivity and specificity"
    ref = report["tasks"]["binary_mean"]["paper_reference"]
    assert ref == {"synthetic_only": {"accuracy": 0.884}, "pretrain_synthetic+finetune": {"accuracy": 0.95}}
    assert report["paper_reference"]["pretrain_synthetic+finetune"]["accuracy"] == 0.9183
    out = tmp_path / "evaluation"
    splits = json.loads((out / "splits.json").read_text())["folds"]
    for i, split in enumerate(splits):  # the fold's GAN trained on its training patients only
        assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
        gan_log = out / f"fold{i}" / "gan" / "conditional" / "training_done.json"
        assert json.loads(gan_log.read_text())["n_images"] == sum(
            1
            for it in read_datalist(tmp_path / "phantom" / "datalist.json")["training"]
            if it["patient"] in split["train"]
        )
    assert assert_gans_saw_only_training_patients(out) == len(splits)
    assert (out / "report.md").is_file() and "pretrain_synthetic+finetune" in (out / "report.md").read_text()
    # the exported multi-class classifier (chosen on validation scores) loads as MONAI Label loads a bundle
    assert json.loads((out / "classifier.json").read_text())["class_names"] == PHANTOM_CLASSES
    smoke = json.loads((CONFIGS / "smoke.json").read_text())
    wf = _workflow(
        ["classify"],
        tmp_path,
        workflow_type="infer",
        dataset_dir=str(tmp_path / "phantom"),
        image_size=smoke["image_size"],
        classifier_channels=smoke["classifier_channels"],
    )
    assert wf.check_properties() in (None, [])
    wf.run()
    with open(tmp_path / "predictions" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 48 and {int(r["prediction_index"]) for r in rows} <= set(range(6))
    assert all(abs(sum(float(r[f"prob_{c}"]) for c in PHANTOM_CLASSES) - 1) < 1e-5 for r in rows)
    assert json.loads((tmp_path / "predictions" / "metrics.json").read_text())["n_images"] == 48, "labelled: metrics"
    # ... and as a bundle folder of its own (MONAI Label's way in; runs without the repository)
    folder = out / "lung_cisl_gan_classification"
    image = read_datalist(tmp_path / "phantom" / "datalist.json")["training"][0]["image"]
    summary = check_monai_label(folder, image=image)
    assert summary["pred_shape"] == (6,) and set(summary["labels"]) == set(PHANTOM_CLASSES)


@pytest.mark.slow
def test_train_inference_and_turing_kit_through_the_cli(tmp_path):
    """The model card's commands: training, inference (N patches per class), the Turing test kit, scoring."""
    train = _cli(["training", "--config_file", str(_configs("train", "quick", "smoke")), "--output_dir", str(tmp_path)])
    assert train.returncode == 0, train.stderr[-3000:]
    folder = tmp_path / "gan" / "conditional"
    assert (folder / "generator.pt").is_file() and list((folder / "checkpoints").glob("*.pt"))
    infer = _cli(
        ["--config_file", str(_configs("inference", "quick", "smoke")), "--output_dir", str(tmp_path),
         "--n_synthetic_per_class", "5"]
    )  # fmt: skip
    assert infer.returncode == 0, infer.stderr[-3000:]
    items = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"]
    assert [it["label"] for it in items] == [c for c in range(6) for _ in range(5)]
    patch = read_image(items[0]["image"])
    assert patch.shape == (1, 16, 16) and -1000 <= patch.min() and patch.max() <= 400  # HU, inside the window

    kit = _cli(
        ["--config_file", str(_configs("train", "quick", "smoke", "turing")), "--output_dir", str(tmp_path),
         "--turing_n_real", "6", "--turing_n_synthetic", "6", "--turing_display_size", "32"]
    )  # fmt: skip
    assert kit.returncode == 0, kit.stderr[-3000:]
    reader, key = tmp_path / "turing" / "reader", tmp_path / "turing" / "answer_key" / "answer_key.json"
    assert len(list((reader / "images").glob("case_*.png"))) == 12
    with open(reader / "answers.csv", newline="") as handle:
        cases = [row["case"] for row in csv.DictReader(handle)]
    (reader / "answers.csv").write_text("case,answer\n" + "".join(f"{c},real\n" for c in cases))
    score = score_turing_test(reader / "answers.csv", key)
    assert score["synthetic_called_real"]["value"] == 1.0 and score["accuracy"]["value"] == 0.5


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path):
    reports = [
        _workflow(["train", "evaluate", "quick", "smoke"], tmp_path / run, run_audit=False).run()[1]
        for run in ("a", "b")
    ]
    for task in reports[0]["tasks"]:
        for arm in reports[0]["tasks"][task]["arms"]:
            a, b = (r["tasks"][task]["arms"][arm]["per_fold"] for r in reports)
            assert a == b, (task, arm)


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    args = [
        "training", "--config_file", str(_configs("train", "quick", "smoke")), "--output_dir", str(tmp_path),
        "--max_epochs", "400", "--checkpoint_interval", "1",
    ]  # fmt: skip
    last = kill_training_after_checkpoints(args, tmp_path / "gan" / "conditional" / "checkpoints")
    args[args.index("400")] = str(last + 2)
    again = _cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"checkpoint_epoch={last}.pt" in again.stdout + again.stderr, "it says where it resumed from"
    log = (tmp_path / "gan" / "conditional" / "train_log.csv").read_text().splitlines()[1:]
    epochs = [int(line.split(",")[0]) for line in log]
    assert epochs[-2:] == [last + 1, last + 2] and max(epochs) == last + 2, "continued, did not start over"


def _fail(tmp_path, dataset_dir) -> DataError:
    with pytest.raises(Exception) as info:
        _workflow(["train", "quick", "smoke"], tmp_path / "out", dataset_dir=str(dataset_dir)).run()
    err = find_data_error(info.value)
    assert err is not None, f"not a DataError: {info.value!r}"
    return err


def _folder_set(root: Path, counts=(3, 3, 3), size=16) -> Path:
    for name, n in zip(("ground_glass", "cavity", "normal"), counts, strict=True):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_image(root / name / f"{name}{i}.nii.gz", np.full((1, size, size), -850.0 + i, np.float32))
    return root


def test_own_patches_and_bad_input_messages(tmp_path):
    """Your own patches, folder per class or CSV, are read; bad ones stop with one message naming the file/key."""
    own = _folder_set(tmp_path / "own")
    wf = _workflow(["train", "quick", "smoke"], tmp_path / "ok", dataset_dir=str(own))
    assert wf.parser.get_parsed_content("class_names") == ["cavity", "ground_glass", "normal"]
    (own / "labels.csv").write_text(
        "path,label,patient\n"
        + "".join(f"{c}/{c}{i}.nii.gz,{c},p{i}\n" for c in ("cavity", "normal") for i in range(3))
    )
    data = _workflow(["train", "quick", "smoke"], tmp_path / "csv", dataset_dir=str(own)).parser.get_parsed_content(
        "train#dataset"
    )
    assert data["source"] == "csv" and {it["patient"] for it in data["items"]} == {"p0", "p1", "p2"}

    missing = tmp_path / "nowhere"
    assert "dataset_dir" in str(_fail(tmp_path, missing)) and str(missing) in str(_fail(tmp_path, missing))
    assert "cavity" in str(_fail(tmp_path, _folder_set(tmp_path / "empty", counts=(3, 0, 3))))
    corrupt = _folder_set(tmp_path / "corrupt")
    bad = corrupt / "normal" / "normal1.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    assert "normal1.nii.gz" in str(_fail(tmp_path, corrupt))
    wrong = _folder_set(tmp_path / "wrong")
    write_image(wrong / "cavity" / "big.nii.gz", np.zeros((1, 48, 48), np.float32))
    msg = str(_fail(tmp_path, wrong))
    assert "big.nii.gz" in msg and "48" in msg
    nan = _folder_set(tmp_path / "nan")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((16, 16), np.nan, np.float32), np.eye(4)), str(nan / "normal" / "nan.nii.gz"))
    assert "nan.nii.gz" in str(_fail(tmp_path, nan))


@pytest.mark.slow
@pytest.mark.realdata
def test_lidc_signs_mapping_and_patient_folds(tmp_path, shared_data):
    lidc = shared_data("lidc_vois")
    wf = _workflow(
        ["train", "evaluate", "quick", "smoke", "lidc_vois"],
        tmp_path,
        dataset_dir=str(lidc),
        run_audit=False,
        tasks=["multiclass", "calcification_vs_rest"],
        max_per_class="$None",  # the whole set: quick.json caps a real set per class
    )
    data = wf.parser.get_parsed_content("train#dataset")
    assert data["source"] == "lidc_vois"
    assert data["class_names"] == ["calcification", "ground_glass", "spiculation", "lobulation", "other"]
    assert len(data["items"]) > 700
    for item in data["items"]:  # several signs: the first in priority order names the class
        signs = item["signs"]
        assert item["label"] == (signs.index(1) if 1 in signs else 4)
    report = wf.run()[1]  # [set_determinism, protocol.run() -> report, export]
    assert set(report["arms"]) == ARMS
    splits = json.loads((tmp_path / "evaluation" / "splits.json").read_text())["folds"]
    tests = [set(f["test"]) for f in splits]
    assert all(not (a & b) for i, a in enumerate(tests) for b in tests[i + 1 :]), "a patient is in one fold only"
    assert set().union(*tests) == {it["patient"] for it in data["items"]}
