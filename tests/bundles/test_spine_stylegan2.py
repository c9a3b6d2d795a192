"""spine_stylegan2 end to end through the bundle's configs (smoke.json keeps it to seconds): training with and
without the clinical loss, DP training with epsilon, inference, the synthetic-learning report, resume after a kill,
bad input, determinism, PneumoniaMNIST, the unlabelled spine_xray set (one class)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthaug_testing import assert_gans_saw_only_training_patients, bundle_helpers, kill_training_after_checkpoints

from common.data.datalist import read_datalist
from common.data.io import read_image, write_image
from common.errors import DataError, find_data_error

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "spine_stylegan2"
CONFIGS = BUNDLE / "configs"
_configs, _workflow, _cli = bundle_helpers("spine_stylegan2")


def test_training_with_the_clinical_loss_then_inference(tmp_path):
    wf = _workflow(["train", "quick", "smoke"], tmp_path, clinical_loss_weight=0.1)
    wf.run()
    folder = tmp_path / "gan" / "conditional"
    assert (folder / "generator.pt").is_file() and (folder / "clinical_classifier" / "done.json").is_file()
    header = (folder / "train_log.csv").read_text().splitlines()[0].split(",")
    for key in ("g_clinical", "r1_penalty", "pl_penalty", "ada_p", "d_real_sign"):
        assert key in header, key
    inf = _workflow(["inference", "quick", "smoke", "smoke_inference"], tmp_path)
    inf.run()
    items = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"]
    assert [it["label"] for it in items] == [0] * 4 + [1] * 4
    img = read_image(items[0]["image"])
    assert img.shape == (1, 32, 32) and 0 <= img.min() and img.max() <= 255


def test_clinical_loss_off_trains_no_classifier(tmp_path):
    _workflow(["train", "quick", "smoke"], tmp_path).run()
    folder = tmp_path / "gan" / "conditional"
    assert (folder / "generator.pt").is_file() and not (folder / "clinical_classifier").exists()
    assert "g_clinical" not in (folder / "train_log.csv").read_text().splitlines()[0]


def test_dp_training_reports_epsilon(tmp_path):
    wf = _workflow(["train", "quick", "smoke", "train_dp"], tmp_path, dp_target_epsilon=5.0)
    wf.run()
    summary = json.loads((tmp_path / "gan_dp" / "conditional" / "privacy.json").read_text())
    assert summary["mode"] == "dp-sgd" and summary["accountant"] == "prv" and summary["delta"] == 1e-5
    assert 0 < summary["epsilon"] <= 5.0 + 1e-3 and summary["noise_multiplier"] > 0
    assert "r1_penalty" not in (tmp_path / "gan_dp" / "conditional" / "train_log.csv").read_text()
    audit = summary["audit"]  # the canary audit at the run's own settings (train_dp.json: 1000 canaries)
    assert audit["canaries"] == 1000 and audit["noise_multiplier"] == summary["noise_multiplier"]
    assert audit["steps"] == summary["steps"] and audit["sample_rate"] == summary["sample_rate"]
    assert 0 <= audit["epsilon_lower_bound"] < summary["epsilon"]


def test_protocol_report_has_every_arm_auc_ci_and_epsilon(tmp_path, check_monai_label):
    wf = _workflow(["train", "evaluate", "quick", "smoke"], tmp_path, run_audit=False)
    results = wf.run()
    report, chosen = results[1], results[-1]  # run: [set_determinism, protocol.run() -> report, export]
    arms = report["arms"]
    assert set(arms) == {"real", "synthetic_only:stylegan2", "synthetic_only:spinegan", "synthetic_only:dp_eps10"}
    for arm in arms.values():
        auc = arm["metrics"]["auc"]
        assert 0 <= auc["mean"] <= 1 and auc["ci95"][0] <= auc["mean"] <= auc["ci95"][1]
        for boot in arm["auc_bootstrap_per_fold"]:
            assert boot["ci95"][0] <= boot["value"] <= boot["ci95"][1]
    dp = report["privacy"]["dp"]["synthetic_only:dp_eps10"]
    assert dp["accountant"] == "prv" and all(0 < e <= 10.0 + 1e-3 for e in dp["epsilon_per_fold"])
    assert all(0 <= lb < e for lb, e in zip(dp["epsilon_lower_bound_per_fold"], dp["epsilon_per_fold"], strict=True))
    assert report["paper_reference"]["synthetic_only:spinegan"] == {"auc": 0.830}
    out = tmp_path / "evaluation"
    splits = json.loads((out / "splits.json").read_text())["folds"]
    for fold, split in enumerate(splits):
        assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
        assert (
            out / f"fold{fold}" / "gan" / "spinegan" / "conditional" / "clinical_classifier" / "done.json"
        ).is_file()
    assert assert_gans_saw_only_training_patients(out) >= len(splits)
    assert (out / "report.md").is_file()
    # the export: the best arm on validation AUC among those that never saw a real training image
    assert chosen["arm"].startswith("synthetic_only:") and chosen["choice"] == "synthetic_only"
    arm_dir = out / f"fold{chosen['fold']}" / "arms" / chosen["arm"].replace(":", "_")
    val = json.loads((arm_dir / "validation.json").read_text())
    assert chosen["best_val_auc"] == val["best_val_auc"]
    assert (chosen["privacy"] is not None) == (chosen["arm"] == "synthetic_only:dp_eps10")
    folder = out / "spine_stylegan2_classification"
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["synthaug_export"]["choice"] == "synthetic_only" and meta["synthaug_export"]["test_metrics"]["auc"]
    image = read_datalist(tmp_path / "phantom" / "datalist.json")["training"][0]["image"]
    summary = check_monai_label(folder, image=image)
    assert summary["pred_shape"] == (2,) and summary["labels"] == {"normal": 0, "abnormal": 1}
    # the DP export is labelled with the composition of every DP run it was chosen among (all folds), not one run's
    dp_choice = wf.parser.get_parsed_content("evaluate#protocol").export_best_classifier(arms="dp")
    privacy = dp_choice["privacy"]
    assert privacy["composition"]["runs"] == len(dp["epsilon_per_fold"]) > 1 and privacy["privacy_unit"] == "one image"
    assert privacy["epsilon"] == pytest.approx(sum(dp["epsilon_per_fold"]))
    assert privacy["epsilon"] > privacy["selected_run"]["epsilon"]
    # the phantom has one image per patient id: the per-patient (group-privacy) bound is the composed epsilon itself
    assert all(p["max_images_per_patient"] == 1 for p in dp["per_patient_per_fold"])
    assert privacy["per_patient"]["group_size"] == 1 and privacy["per_patient"]["epsilon"] == privacy["epsilon"]


def test_same_seed_same_numbers(tmp_path):
    logs = []
    for run in ("a", "b"):
        _workflow(["train", "quick", "smoke"], tmp_path / run, clinical_loss_weight=0.1).run()
        logs.append((tmp_path / run / "gan" / "conditional" / "train_log.csv").read_text())
    assert logs[0] == logs[1]


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    args = ["training", "--config_file", str(_configs("train", "quick", "smoke")), "--output_dir", str(tmp_path),
            "--max_epochs", "400", "--checkpoint_interval", "1"]  # fmt: skip
    last = kill_training_after_checkpoints(args, tmp_path / "gan" / "conditional" / "checkpoints")
    args[args.index("400")] = str(last + 2)
    again = _cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"checkpoint_epoch={last}.pt" in again.stdout + again.stderr
    epochs = [
        int(line.split(",")[0])
        for line in (tmp_path / "gan" / "conditional" / "train_log.csv").read_text().splitlines()[1:]
    ]
    assert epochs[-2:] == [last + 1, last + 2]


def _fail(tmp_path, dataset_dir) -> DataError:
    with pytest.raises(Exception) as info:
        _workflow(["train", "quick", "smoke"], tmp_path / "out", dataset_dir=str(dataset_dir)).run()
    err = find_data_error(info.value)
    assert err is not None, f"not a DataError: {info.value!r}"
    return err


def _folder_set(root: Path, counts=(3, 3)) -> Path:
    for name, n in zip(("normal", "abnormal"), counts, strict=True):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_image(root / name / f"{name}{i}.png", np.full((1, 40, 48), 30.0 * i, np.float32))
    return root


def test_bad_input_messages_name_the_file_or_key(tmp_path):
    missing = tmp_path / "nowhere"
    assert str(missing) in str(_fail(tmp_path, missing))
    assert "abnormal" in str(_fail(tmp_path, _folder_set(tmp_path / "empty", counts=(3, 0))))
    corrupt = _folder_set(tmp_path / "corrupt")
    bad = corrupt / "normal" / "normal1.png"
    bad.write_bytes(bad.read_bytes()[:30])
    assert "normal1.png" in str(_fail(tmp_path, corrupt))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "labels.csv").write_text("path,label\nmissing.png,abnormal\n")
    assert "missing.png" in str(_fail(tmp_path, tmp_path / "labels"))


def test_own_radiographs_with_a_csv_of_labels(tmp_path):
    data = _folder_set(tmp_path / "own", counts=(4, 4))
    rows = ["path,label,patient"] + [f"{c}/{c}{i}.png,{c},pt{i}" for c in ("normal", "abnormal") for i in range(4)]
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    wf = _workflow(["train", "quick", "smoke"], tmp_path / "out", dataset_dir=str(data))
    wf.run()
    assert (tmp_path / "out" / "gan" / "conditional" / "generator.pt").is_file()


@pytest.mark.slow
@pytest.mark.realdata
def test_pneumoniamnist_training_step(tmp_path, shared_data):
    data = shared_data("pneumoniamnist")
    # the whole set (quick.json caps a real set per class)
    wf = _workflow(
        ["train", "quick", "smoke", "pneumoniamnist"], tmp_path, dataset_dir=str(data), image_size=32,
        max_per_class="$None",
    )  # fmt: skip
    ds = wf.parser.get_parsed_content("train#dataset")
    assert ds["source"] == "pneumoniamnist" and len(ds["items"]) == 3882 + 524
    assert ds["class_names"] == ["normal", "pneumonia"]


def test_unlabelled_folder_becomes_a_one_class_csv(tmp_path):
    from common.data import load_classification_dataset
    from common.data.radiograph import unlabelled_image_csv

    images = tmp_path / "valid" / "images"
    images.mkdir(parents=True)
    (tmp_path / "valid" / "labels").mkdir()
    (tmp_path / "valid" / "labels" / "a_jpg.rf.1.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    for name in ("a_jpg.rf.1.png", "b_jpg.rf.2.png", "notes.txt"):
        if name.endswith(".png"):
            write_image(images / name, np.zeros((1, 8, 6), np.float32))
        else:
            (images / name).write_text("not an image")
    csv = unlabelled_image_csv(images, tmp_path / "cache", class_name="spine")
    ds = load_classification_dataset(csv)
    assert ds["class_names"] == ["spine"] and [it["label"] for it in ds["items"]] == [0, 0]
    assert [it["patient"] for it in ds["items"]] == ["a_jpg", "b_jpg"]
    # the folder as published (Roboflow: <split>/images/): the reader takes the folder it is given
    assert (
        load_classification_dataset(unlabelled_image_csv(tmp_path, tmp_path / "cache2"))["items"][1]["patient"]
        == "b_jpg"
    )
    with pytest.raises(DataError, match="nowhere"):
        unlabelled_image_csv(tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(DataError, match="no image"):
        unlabelled_image_csv(tmp_path / "valid" / "labels", tmp_path / "cache")


@pytest.mark.realdata
def test_spine_xray_one_class_training_epoch_then_inference(tmp_path, shared_data):
    data = shared_data("spine_xray")
    tiny = {"image_size": 16, "batch_size": 16, "spine_xray_dir": str(data), "max_per_class": "$None"}
    wf = _workflow(["train", "quick", "smoke", "spine_xray"], tmp_path, **tiny)
    ds = wf.parser.get_parsed_content("train#dataset")
    assert ds["class_names"] == ["spine"] and len(ds["items"]) == 262  # valid/labels (YOLO boxes) is not a class
    wf.run()
    folder = tmp_path / "gan" / "conditional"
    assert (folder / "generator.pt").is_file() and not (folder / "clinical_classifier").exists()
    inf = _workflow(["inference", "quick", "smoke", "smoke_inference", "spine_xray"], tmp_path, image_size=16)
    inf.run()
    items = read_datalist(tmp_path / "synthetic" / "datalist.json")["training"]
    assert [it["label"] for it in items] == [0] * 4
    assert read_image(items[0]["image"]).shape == (1, 16, 16)
