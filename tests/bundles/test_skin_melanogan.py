"""skin_melanogan end to end, through the bundle's own configs (smoke.json keeps it to seconds on CPU):
training of the three generators + inference, the imbalance protocol with the generator comparison, resume of a
killed LAPGAN, bad input, determinism, and the real isic9 set."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthaug_testing import assert_gans_saw_only_training_patients, bundle_helpers

from common.data.datalist import read_datalist
from common.data.io import read_image, write_image
from common.engines import latest_checkpoint
from common.errors import DataError, find_data_error

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "skin_melanogan"
CONFIGS = BUNDLE / "configs"
_configs, _workflow, _cli = bundle_helpers("skin_melanogan")
SMOKE = ("quick", "smoke")


@pytest.mark.slow
@pytest.mark.parametrize("gan_type", ["dcgan", "lapgan", "ddgan"])
def test_one_key_switches_the_generator_train_then_inference(tmp_path, gan_type):
    _workflow(["train", *SMOKE], tmp_path, gan_type=gan_type).run()
    folder = tmp_path / "gan" / "melanoma"
    assert (folder / "generator.pt").is_file(), "the melanoma generator (gan_classes) was trained"
    assert not (tmp_path / "gan" / "nevus").exists(), "no GAN for classes outside gan_classes"
    if gan_type == "lapgan":  # one GAN per pyramid level, each with its own checkpoints and sample grid
        for level in range(3):
            assert list((folder / f"level{level}" / "checkpoints").glob("*.pt"))
            assert (folder / f"level{level}" / "samples_epoch_0001.png").is_file()
    else:
        assert (folder / "samples_epoch_0001.png").is_file() and (folder / "train_log.csv").is_file()
    wf = _workflow(["inference", *SMOKE, "smoke_inference"], tmp_path, gan_type=gan_type)
    wf.run()
    content = read_datalist(tmp_path / "synthetic" / "datalist.json")
    assert [it["label"] for it in content["training"]] == [1] * 4, "melanoma images only"
    image = read_image(content["training"][0]["image"])
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 255  # RGB PNG, 8-bit


@pytest.mark.slow
def test_protocol_report_has_arms_tasks_and_statistics_per_generator(tmp_path, check_monai_label):
    report = _workflow(["train", "evaluate", *SMOKE], tmp_path).run()[1]  # [determinism, report, export]
    saved = json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert saved["arms"].keys() == report["arms"].keys() == {"baseline", "oversampling", "classic", "classic+synthetic"}
    assert saved["primary_task"] == "melanoma_vs_rest" and set(saved["tasks"]) == {"melanoma_vs_rest", "multiclass"}
    assert saved["tasks"]["melanoma_vs_rest"]["class_names"] == ["rest", "melanoma"]
    for task in saved["tasks"].values():
        for arm in task["arms"].values():
            assert len(arm["per_fold"]) == 3
            for metric in ("balanced_accuracy", "sensitivity", "specificity", "auc"):
                s = arm["metrics"][metric]
                assert s["mean"] is None or (0 <= s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= 1)
    # synthetic melanomas until balanced, per fold, from GANs that saw only the fold's training patients
    out = tmp_path / "evaluation"
    splits = json.loads((out / "splits.json").read_text())["folds"]
    items = {Path(it["image"]).stem: it for it in read_datalist(tmp_path / "phantom" / "datalist.json")["training"]}
    for fold, split in enumerate(splits):
        assert not set(split["train"]) & set(split["test"])
        train_labels = [it["label"] for it in items.values() if it["patient"] in set(split["train"])]
        counts = np.bincount(train_labels, minlength=3)
        synthetic = read_datalist(out / f"fold{fold}" / "synthetic" / "datalist.json")["training"]
        assert len(synthetic) == counts.max() - counts[1] and {it["label"] for it in synthetic} == {1}
        gan_log = (out / f"fold{fold}" / "gan" / "melanoma" / "training_done.json").read_text()
        assert json.loads(gan_log)["n_images"] == counts[1], "the GAN saw the fold's training melanomas only"
    assert assert_gans_saw_only_training_patients(out) >= len(splits)
    # the oversampling arm trained on a balanced, larger set
    for fold in range(3):
        base = json.loads((out / f"fold{fold}/tasks/multiclass/arms/baseline/result.json").read_text())
        over = json.loads((out / f"fold{fold}/tasks/multiclass/arms/oversampling/result.json").read_text())
        assert over["n_train"] > base["n_train"]
    # the three generators side by side: image statistics and feature-space quality, beside real held-out images
    stats = saved["image_statistics"]
    assert {row["set"] for row in stats["summary"]} == {"real_heldout", "dcgan", "lapgan", "ddgan"}
    assert set(saved["synthesis"]) == {"dcgan", "lapgan", "ddgan"}
    # the exported melanoma-vs-rest classifier (chosen on validation) loads as MONAI Label loads a bundle
    assert json.loads((out / "classifier.json").read_text())["class_names"] == ["rest", "melanoma"]
    smoke = json.loads((CONFIGS / "smoke.json").read_text())
    wf = _workflow(
        ["classify"],
        tmp_path,
        workflow_type="infer",
        dataset_dir=str(tmp_path / "phantom"),
        resolution=smoke["resolution"],
        classifier_channels=smoke["classifier_channels"],
    )
    assert wf.check_properties() in (None, [])
    wf.run()
    with open(tmp_path / "predictions" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(items) and {r["prediction"] for r in rows} <= {"rest", "melanoma"}
    # the phantom's three classes are scored as the model's melanoma vs rest
    assert {r["label"] for r in rows} == {"rest", "melanoma"} and "prob_melanoma" in rows[0]
    metrics = json.loads((tmp_path / "predictions" / "metrics.json").read_text())
    assert metrics["label_map"]["melanoma"] == "melanoma" and metrics["n_images"] == len(items)
    # ... and as a bundle folder of its own (MONAI Label's way in; runs without the repository)
    summary = check_monai_label(out / "skin_melanogan_classification", image=next(iter(items.values()))["image"])
    assert summary["pred_shape"] == (2,) and summary["labels"] == {"rest": 0, "melanoma": 1}
    for section in saved["synthesis"].values():
        assert "frechet_distance_randcnn_real_baseline" in section and "precision_randcnn" in section
    for name in ("dcgan", "lapgan", "ddgan", "real_train"):
        assert (out / "generators" / f"samples_{name}.png").is_file()
    for figure in stats["figures"]:
        assert (out / figure).is_file()
    md = (out / "report.md").read_text()
    assert "Generators: image statistics" in md and "| lapgan |" in md
    # the protocol's own DCGAN of fold 0 is the comparison's DCGAN: trained once
    assert not (out / "generators" / "dcgan" / "gan").exists()


@pytest.mark.slow
def test_efficient_recipe_protocol_compares_its_own_dcgan_without_training_it_further(tmp_path):
    """--recipe efficient: the generator comparison takes the protocol's efficient DCGAN of fold 0 as it is (same
    recipe, same step budget; it once loaded it into the paper's D and failed) and gives LAPGAN and DDGAN the same
    G-step budget."""
    report = _workflow(
        ["train", "evaluate", *SMOKE], tmp_path, recipe="efficient", gan_steps=70, run_audit=False
    ).run()[1]
    assert not [n for n in report["notes"] if "comparison failed" in n], report["notes"]
    assert {row["set"] for row in report["image_statistics"]["summary"]} == {"real_heldout", "dcgan", "lapgan", "ddgan"}
    out = tmp_path / "evaluation"
    assert not (out / "generators" / "dcgan" / "gan").exists(), "the protocol's DCGAN was reused, not retrained"
    # 70 steps = 2 epochs of the smoke phantom's 280 melanomas at batch 8 (smoke.json's max_epochs is 1)
    lapgan = sorted((out / "generators" / "lapgan" / "gan" / "melanoma").glob("level*"))
    assert len(lapgan) == 3
    for log in [out / "fold0" / "gan" / "melanoma", out / "generators" / "ddgan" / "gan" / "melanoma", *lapgan]:
        done = json.loads((log / "training_done.json").read_text())
        assert done["iterations"] == 70, f"{log}: {done['iterations']} G steps, not the budget of 70"


@pytest.mark.slow
def test_same_seed_same_generator(tmp_path):
    weights = []
    for run in ("a", "b"):
        _workflow(["train", *SMOKE], tmp_path / run, gan_type="ddgan", phantom_dir=str(tmp_path / "phantom")).run()
        weights.append(torch.load(tmp_path / run / "gan" / "melanoma" / "generator.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.slow
def test_killed_lapgan_resumes_in_the_level_it_stopped(tmp_path, caplog):
    # A real CLI run, SIGKILLed in level 0 (given 400 epochs so that it cannot finish first). Levels 1 and 2 get one
    # epoch each, and the resume runs in-process: the same fit path without a second interpreter start.
    args = ["training", "--config_file", str(_configs("train", *SMOKE)), "--output_dir", str(tmp_path)]
    args += ["--gan_type", "lapgan", "--gan#lapgan#level_epochs", "[400, 1, 1]"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpts = tmp_path / "gan" / "melanoma" / "level0" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(ckpts.glob("*epoch=*.pt"))) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "gan" / "melanoma" / "level1").exists(), "killed inside level 0"
    # the kill may cut a save short (MONAI's saver writes in place); a torn newer file must be skipped, not loaded
    last = int(Path(latest_checkpoint(str(ckpts), complete_only=True)).stem.split("=")[-1])
    (ckpts / f"checkpoint_epoch={last + 50}.pt").write_bytes(b"PK\x03\x04 cut short by a kill")

    caplog.set_level(logging.INFO)
    _workflow(["train", *SMOKE], tmp_path, gan_type="lapgan", **{"gan#lapgan#level_epochs": [last + 1, 1, 1]}).run()
    assert f"resuming from {ckpts / f'checkpoint_epoch={last}.pt'}" in caplog.text, "it says where it resumed from"
    assert f"incomplete checkpoint {ckpts / f'checkpoint_epoch={last + 50}.pt'}" in caplog.text
    messages = [r.getMessage() for r in caplog.records]
    level0 = messages[
        messages.index(f"LAPGAN level 0: 8 px, {last + 1} epochs") : messages.index("LAPGAN level 1: 16 px, 1 epochs")
    ]
    epochs_run = [m.split("]")[0] for m in level0 if m.startswith("Epoch[") and "Complete" in m]
    assert epochs_run == [f"Epoch[{last + 1}"], "level 0 ran one more epoch, did not start over"
    log = (tmp_path / "gan" / "melanoma" / "level0" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in log][-1] == last + 1
    for level in (1, 2):
        assert (tmp_path / "gan" / "melanoma" / f"level{level}" / "generator.pt").is_file()
    assert (tmp_path / "gan" / "melanoma" / "generator.pt").is_file(), "levels composed after the resume"


def _fail(tmp_path, dataset_dir) -> DataError:
    with pytest.raises(Exception) as info:
        _workflow(["train", *SMOKE], tmp_path / "out", dataset_dir=str(dataset_dir)).run()
    err = find_data_error(info.value)
    assert err is not None, f"not a DataError: {info.value!r}"
    return err


def _jpg(path: Path, value: int = 120, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (24, 24, 3) if mode == "RGB" else (24, 24, 2)
    Image.fromarray(np.full(shape, value, np.uint8), mode if mode == "RGB" else "LA").save(
        path, format="JPEG" if mode == "RGB" else "PNG"
    )


def test_bad_input_messages_name_the_file_or_key(tmp_path):
    missing = tmp_path / "nowhere"
    assert "dataset_dir" in str(_fail(tmp_path, missing)) and str(missing) in str(_fail(tmp_path, missing))

    empty = tmp_path / "empty" / "Train"
    for name, n in (("melanoma", 3), ("nevus", 0)):
        (empty / name).mkdir(parents=True)
        for i in range(n):
            _jpg(empty / name / f"{name}{i}.jpg")
    assert "nevus" in str(_fail(tmp_path, empty.parent))

    corrupt = tmp_path / "corrupt"
    for name in ("melanoma", "nevus"):
        for i in range(3):
            _jpg(corrupt / name / f"{name}{i}.jpg")
    (corrupt / "nevus" / "nevus1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert "nevus1.jpg" in str(_fail(tmp_path, corrupt))

    two_channels = tmp_path / "la"
    for name in ("melanoma", "nevus"):
        _jpg(two_channels / name / f"{name}0.jpg")
    _jpg(two_channels / "nevus" / "gray_alpha.png", mode="LA")
    assert "gray_alpha.png" in str(_fail(tmp_path, two_channels))

    no_melanoma = tmp_path / "no_melanoma"
    for name in ("nevus", "keratosis"):
        _jpg(no_melanoma / name / f"{name}0.jpg")
    assert "melanoma" in str(_fail(tmp_path, no_melanoma)), "gan_classes names a class the data lacks"


def test_isic_ground_truth_csv_works_through_dataset_dir(tmp_path):
    rows = ["image_id,melanoma,seborrheic_keratosis"]
    for i, (mel, sk) in enumerate([(1, 0), (0, 1), (0, 0), (0.0, 0.0), (1, 0)]):
        write_image(tmp_path / "images" / f"ISIC_{i:07d}.png", np.full((3, 20, 20), 40.0 * i, np.float32))
        rows.append(f"ISIC_{i:07d},{mel},{sk}")
    (tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    dataset = _workflow(["train", *SMOKE], tmp_path / "out", dataset_dir=str(tmp_path)).train_dataset
    assert dataset["class_names"] == ["nevus", "melanoma", "seborrheic_keratosis"]
    assert [it["label"] for it in dataset["items"]] == [1, 2, 0, 0, 1]
    (tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text("\n".join(rows + ["ISIC_0000009,1,0"]))
    assert "ISIC_0000009" in str(_fail(tmp_path, tmp_path))


@pytest.mark.slow
@pytest.mark.realdata
def test_isic9_works_out_of_the_box(tmp_path, shared_data):
    isic9 = shared_data("isic9")
    wf = _workflow(
        ["train", *SMOKE, "isic9"], tmp_path, dataset_dir=str(isic9), max_epochs=1, augment_repeats=1,
        max_per_class="$None",  # the whole set: quick.json caps a real set per class
    )  # fmt: skip
    dataset = wf.train_dataset
    assert dataset["source"] == "folder" and len(dataset["class_names"]) == 9 and len(dataset["items"]) == 2241
    assert dataset["counts"]["melanoma"] == 438
    image = wf.train_preprocessing(dict(dataset["items"][0]))["image"]
    assert tuple(image.shape) == (3, 32, 32) and -1 <= float(image.min()) and float(image.max()) <= 1
    wf.run()
    assert (tmp_path / "gan" / "melanoma" / "generator.pt").is_file()
