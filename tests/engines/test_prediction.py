"""The deployed classifier (issue 16, item 2): raw inputs read by the training code, per-class probabilities in
predictions.csv, metrics with patient-bootstrap CIs in metrics.json, one line for bad input. Tiny data made here; the
end-to-end test runs the exported bundle folder on a LIDC-VOI layout in a subprocess without this repository."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import AsDiscreted, Compose

from common.data.io import write_image
from common.data.transforms import roi_classification_transforms
from common.engines.prediction import PredictionSaver, map_classes, read_prediction_set, recorded_class_names
from common.errors import DataError
from common.metrics.classification import FAST_METRICS, classification_metrics, classification_metrics_with_ci
from common.networks import FridAdarCNN
from common.protocol.export import export_downstream

REPO = Path(__file__).resolve().parents[2]
LIVER = REPO / "bundles" / "liver_lesion_gan"
SIZE, CHANNELS = 16, [4, 4, 4]
NAMES = ["cyst", "metastasis", "hemangioma"]


def _roi(path: Path, seed: int, value: float = 0.0) -> Path:
    image = np.random.default_rng(seed).uniform(-160, 240, (1, SIZE, SIZE)).astype(np.float32) + value
    write_image(path, image)
    return path


def _folders(root: Path, names=NAMES, per_class: int = 2) -> Path:
    for c, name in enumerate(names):
        for i in range(per_class):
            _roi(root / name / f"p{c}{i}.nii.gz", seed=10 * c + i, value=40.0 * c)
    return root


def _network(seed: int = 0) -> FridAdarCNN:
    torch.manual_seed(seed)
    return FridAdarCNN(in_channels=1, num_classes=len(NAMES), image_size=SIZE, channels=CHANNELS).eval()


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _run(items_set: dict, network, out_dir: Path, postprocessing=None) -> None:
    """The evaluator as classify.json wires it (dataset items -> preprocessing -> network), with the saver attached."""
    transforms = roi_classification_transforms(-160, 240)
    loader = DataLoader(Dataset(items_set["items"], transforms), batch_size=4, shuffle=False, num_workers=0)
    saver = PredictionSaver(out_dir, items_set["class_names"], dataset=items_set, n_resamples=200)
    SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=network,
                        postprocessing=postprocessing, val_handlers=[saver], decollate=False).run()  # fmt: skip


def test_probabilities_sum_to_one_and_match_the_network(tmp_path):
    data = read_prediction_set(_folders(tmp_path / "data"), NAMES, image_shape=[SIZE, SIZE], channels="gray")
    assert data["labelled"] and data["source"] == "folder" and len(data["items"]) == 6
    net = _network()
    # a postprocessing that discretises (as an app may): the CSV still reports the network's probabilities
    _run(data, net, tmp_path / "out", postprocessing=Compose([AsDiscreted(keys="pred", argmax=True)]))
    rows = _read_csv(tmp_path / "out" / "predictions.csv")
    assert list(rows[0]) == ["file", "patient", "prediction", "prediction_index", "prob_cyst", "prob_metastasis",
                             "prob_hemangioma", "label", "label_index"]  # fmt: skip
    transforms = roi_classification_transforms(-160, 240)
    for row, item in zip(rows, data["items"], strict=True):
        assert row["file"] == item["image"] and row["patient"] == Path(item["image"]).name.split(".")[0]
        probs = np.array([float(row[f"prob_{c}"]) for c in NAMES])
        assert probs.sum() == pytest.approx(1.0, abs=1e-6)
        with torch.no_grad():
            expected = torch.softmax(net(transforms(item)["image"][None]), 1)[0].numpy()
        np.testing.assert_allclose(probs, expected, atol=1e-6)
        assert int(row["prediction_index"]) == int(probs.argmax()) and row["prediction"] == NAMES[probs.argmax()]
        assert row["label"] == NAMES[item["label"]] and int(row["label_index"]) == item["label"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == set(FAST_METRICS) and metrics["n_images"] == 6


#: 6 images of 5 patients, 3 classes: predicted (argmax) 0, 1, 1, 1, 2, 0 for true 0, 0, 1, 1, 2, 2
PROBS = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4], [0.1, 0.2, 0.7], [0.5, 0.2, 0.3]])
LABELS = np.array([0, 0, 1, 1, 2, 2])
PATIENTS = ["a", "a", "b", "c", "d", "e"]


def test_metrics_match_a_hand_computation(tmp_path, caplog):
    # by hand: accuracy 4/6; recall per class 1/2, 2/2, 1/2 -> balanced accuracy = macro sensitivity = 2/3;
    # specificity per class (negatives predicted as another class) 3/4, 3/4, 4/4 -> macro 5/6; one-vs-rest AUC per
    # class: positives beat 4 + 3 of the 2 x 4 negatives in each -> 7/8, macro 7/8
    hand = {"accuracy": 4 / 6, "balanced_accuracy": 2 / 3, "sensitivity": 2 / 3, "specificity": 5 / 6, "auc": 7 / 8}
    # the saver, fed batches as the evaluator feeds it (logits whose softmax is PROBS)
    saver = PredictionSaver(tmp_path, NAMES, n_resamples=300, seed=1)
    for rows in (slice(0, 4), slice(4, 6)):
        batch = {"file": [f"img{i}.png" for i in range(6)][rows], "patient": PATIENTS[rows],
                 "label": torch.as_tensor(LABELS[rows])}  # fmt: skip
        engine = SimpleNamespace(
            state=SimpleNamespace(batch=batch, output={"pred": torch.log(torch.tensor(PROBS[rows]))})
        )
        saver._collect(engine)
    with caplog.at_level(logging.INFO, logger="common.engines.prediction"):
        saver.write()
    result = json.loads((tmp_path / "metrics.json").read_text())
    for name, value in hand.items():
        entry = result["metrics"][name]
        assert entry["value"] == pytest.approx(value, abs=1e-9), name
        assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1] and entry["n_resamples"] > 0, name
    assert result["n_images"] == 6 and result["n_patients"] == 5 and result["counts"] == dict.fromkeys(NAMES, 2)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["per_class"]["hemangioma"]["specificity"] == pytest.approx(1.0)
    # the same numbers as the project's classification_metrics, and the same CIs when called directly
    full = classification_metrics(PROBS, LABELS, NAMES)
    direct = classification_metrics_with_ci(PROBS, LABELS, PATIENTS, NAMES, n_resamples=300, seed=1)
    assert direct["metrics"] == result["metrics"] and all(hand[m] == pytest.approx(full[m]) for m in hand)
    lines = [r.getMessage() for r in caplog.records if "metrics.json" in r.getMessage()]
    assert len(lines) == 1 and "accuracy 0.667 [" in lines[0] and "5 patients" in lines[0]

    # two classes: sensitivity and specificity of the positive class 1 (as the reports give them)
    probs2, labels2 = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]]), np.array([0, 0, 1, 1])
    binary = classification_metrics_with_ci(probs2, labels2, ["p", "q", "r", "s"], ["rest", "melanoma"], n_resamples=50)
    assert binary["metrics"]["sensitivity"]["value"] == pytest.approx(1 / 2)  # 1 of 2 positives found
    assert binary["metrics"]["specificity"]["value"] == pytest.approx(1 / 2)  # 1 of 2 negatives kept
    assert binary["metrics"]["auc"]["value"] == pytest.approx(3 / 4)  # 0.7 > 0.1, 0.6; 0.4 > 0.1 only


def test_bootstrap_is_over_patients(tmp_path):
    """A patient's images go together: with every image of one patient, the CI is that of 2 patients, not 6 images."""
    probs = np.tile([[0.9, 0.1], [0.1, 0.9]], (3, 1))
    labels = np.array([0, 1] * 3)
    one = classification_metrics_with_ci(probs, labels, ["x"] * 6, ["n", "y"], n_resamples=100)
    assert one["n_patients"] == 1 and one["metrics"]["accuracy"]["ci95"] == [1.0, 1.0]


def test_unlabelled_input_writes_no_metrics(tmp_path, caplog):
    data_dir = tmp_path / "new_patients"  # images directly in a folder: no labels
    for i in range(3):
        _roi(data_dir / f"case{i}.nii.gz", seed=i)
    data = read_prediction_set(data_dir, NAMES, image_shape=[SIZE, SIZE], channels="gray")
    assert not data["labelled"] and all("label" not in it for it in data["items"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # from an older, labelled run: it must not survive as if it were this one's
    with caplog.at_level(logging.INFO, logger="common.engines.prediction"):
        _run(data, _network(), out)
    rows = _read_csv(out / "predictions.csv")
    assert len(rows) == 3 and "label" not in rows[0] and "prob_hemangioma" in rows[0]
    assert not (out / "metrics.json").exists()
    lines = [r.getMessage() for r in caplog.records if "no labels" in r.getMessage()]
    assert len(lines) == 1 and "no metrics" in lines[0]
    # a datalist without labels (what MONAI Label's checks write), and one image file, are unlabelled too
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": str(data_dir / "case0.nii.gz")}]}))
    assert not read_prediction_set(tmp_path / "list.json", NAMES)["labelled"]
    single = read_prediction_set(data_dir / "case1.nii.gz", NAMES)
    assert not single["labelled"] and [it["patient"] for it in single["items"]] == ["case1"]


def test_labels_are_mapped_to_the_model_classes(tmp_path):
    # a melanoma-vs-rest model on a folder per class of the data set's own classes
    data = read_prediction_set(_folders(tmp_path / "skin", names=["melanoma", "nevus"]), ["rest", "melanoma"])
    assert [it["label"] for it in data["items"]] == [1, 1, 0, 0]
    assert data["label_map"] == {"melanoma": "melanoma", "nevus": "rest"}
    # a subset of the model's classes, by name; integer labels without names, in the model's order
    assert map_classes(["hemangioma"], NAMES, "x") == [2] and map_classes(["0", "1"], NAMES, "x") == [0, 1]
    with pytest.raises(DataError, match=r"dataset_dir '.*': its classes \['cat', 'dog'\] are not the model's"):
        read_prediction_set(_folders(tmp_path / "pets", names=["dog", "cat"]), NAMES)


def test_bad_input_is_one_line_naming_the_file_or_key(tmp_path):
    with pytest.raises(DataError, match=r"dataset_dir '.*nowhere' does not exist \(key 'dataset_dir'\)"):
        read_prediction_set(tmp_path / "nowhere", NAMES)
    root = _folders(tmp_path / "data")
    (root / "cyst" / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="broken.nii.gz"):
        read_prediction_set(root, NAMES, image_shape=[SIZE, SIZE], channels="gray")
    big = tmp_path / "big"
    write_image(big / "cyst" / "a.nii.gz", np.zeros((1, 2 * SIZE, 2 * SIZE), np.float32))
    with pytest.raises(DataError, match=r"a.nii.gz' has spatial shape \(32, 32\), expected \(16, 16\)"):
        read_prediction_set(big, NAMES, image_shape=[SIZE, SIZE], channels="gray")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no recognised data set") as err:
        read_prediction_set(tmp_path / "odd", NAMES)
    assert "\n" not in str(err.value)


def test_recorded_class_names(tmp_path):
    assert recorded_class_names(tmp_path / "classifier.pt", ["a"]) == ["a"]
    (tmp_path / "classifier.json").write_text(json.dumps({"class_names": ["$x", "solid"]}))
    assert recorded_class_names(tmp_path / "classifier.pt", ["a"]) == ["$x", "solid"]


# ------------------------------------------------------------------ the exported bundle folder, end to end

LESION3 = ["calcified", "subsolid", "solid"]
COLUMNS = ["patient_id", "nodule_id", "Texture_value", "Calcification_value", "Spiculation_value",
           "Lobulation_value", "Malignancy_value"]  # fmt: skip
#: calcified, subsolid, solid, solid (lesion3), over 3 patients
ROWS = [
    ("LIDC-IDRI-0001", 1, 5, 3, 1, 1, 2),
    ("LIDC-IDRI-0002", 1, 2, 6, 1, 1, 3),
    ("LIDC-IDRI-0002", 2, 5, 6, 4, 1, 4),
    ("LIDC-IDRI-0003", 1, 5, 6, 1, 5, 5),
]


def _lidc(root: Path, metadata: bool = True) -> Path:
    """A LIDC-VOI folder as published in the shared copy: image/ and nodule_mask/ VOIs (20 x 20 x 4, HU) and
    metadata.csv with the radiologists' ratings."""
    rng = np.random.default_rng(0)
    for patient, nodule, *_ in ROWS:
        name = f"{patient}_R_{nodule}.nii.gz"
        volume = rng.integers(-1000, -700, (1, 20, 20, 4)).astype(np.int16)
        volume[0, 6:11, 7:12, 2] = 80  # the nodule is largest on slice 2
        mask = (volume > 0).astype(np.int16)
        write_image(root / "image" / name, volume, spacing=(0.7, 0.7, 1.25))
        write_image(root / "nodule_mask" / name, mask, spacing=(0.7, 0.7, 1.25))
    if metadata:
        with open(root / "metadata.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(ROWS)
    return root


def _export(out: Path) -> Path:
    """A tiny 3-class classifier exported as the liver bundle's evaluation exports its classifier."""
    (out / "fold0" / "baseline").mkdir(parents=True)
    torch.save(_network().state_dict(), out / "fold0" / "baseline" / "best_model.pt")
    (out / "fold0" / "baseline" / "result.json").write_text(json.dumps({"best_val_balanced_accuracy": 0.5}))
    record = export_downstream(
        [("baseline", 0, out / "fold0" / "baseline" / "result.json")], "best_val_balanced_accuracy",
        out / "classifier.pt", kind="classification", labels=LESION3, class_names=LESION3,
        downstream={"template": str(LIVER / "configs" / "classify.json"), "source_root": str(LIVER),
                    "config": {"image_size": SIZE, "classifier_channels": CHANNELS, "lidc_mapping": "lesion3",
                               "a_min": -1000, "a_max": 400},
                    "image": {"data_type": "nifti", "num_channels": 1, "spatial_shape": [SIZE, SIZE]}},
    )  # fmt: skip
    return Path(record["downstream_bundle"])


def _bundle_run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` from the exported folder, without this repository on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def test_exported_bundle_classifies_a_lidc_voi_folder(tmp_path):
    folder = _export(tmp_path / "evaluation")
    inference = json.loads((folder / "configs" / "inference.json").read_text())
    assert inference["lidc_mapping"] == "lesion3" and inference["prediction_set"]["lidc_roi_size"] == "@image_size"
    card = (folder / "docs" / "README.md").read_text()
    assert "LIDC VOIs with their metadata table" in card and "metrics.json" in card and "prob_<class>" in card
    lidc = _lidc(tmp_path / "lidc_vois")
    out = tmp_path / "run"
    proc = _bundle_run(folder, "--dataset_dir", str(lidc), "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _read_csv(out / "predictions" / "predictions.csv")
    names = [f"{p}_R_{n}.nii.gz" for p, n, *_ in ROWS]
    assert [row["file"] for row in rows] == [str(lidc / "image" / n) for n in names], "the CSV names the VOIs"
    assert [row["label"] for row in rows] == ["calcified", "subsolid", "solid", "solid"]
    assert [row["patient"] for row in rows] == [p for p, *_ in ROWS]
    for row in rows:
        assert sum(float(row[f"prob_{c}"]) for c in LESION3) == pytest.approx(1.0, abs=1e-6)
    # the network saw the ROI training makes: largest-area slice, crop, resize to SIZE, the HU window
    roi = next((out / "prediction_cache").rglob("LIDC-IDRI-0001_R_1.nii.gz"))
    from common.data.io import read_image

    assert read_image(roi).shape == (1, SIZE, SIZE)
    metrics = json.loads((out / "predictions" / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and metrics["n_patients"] == 3 and metrics["source"] == "lidc_vois"
    acc = np.mean([row["prediction"] == row["label"] for row in rows])
    assert metrics["metrics"]["accuracy"]["value"] == pytest.approx(acc)
    assert "balanced_accuracy" in proc.stdout and "bootstrap over patients" in proc.stdout

    # the same VOIs without their metadata table: predictions only, no metrics, one line that says so
    unlabelled = _lidc(tmp_path / "new_vois", metadata=False)
    proc = _bundle_run(folder, "--dataset_dir", str(unlabelled), "--output_dir", str(tmp_path / "run2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = _read_csv(tmp_path / "run2" / "predictions" / "predictions.csv")
    assert [r["prob_solid"] for r in again] == [r["prob_solid"] for r in rows] and "label" not in again[0]
    assert not (tmp_path / "run2" / "predictions" / "metrics.json").exists()
    assert sum("has no labels: no metrics" in line for line in proc.stdout.splitlines()) == 1

    # bad input: one line naming the key, no traceback
    proc = _bundle_run(folder, "--dataset_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "run3"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"synthaug: error: dataset_dir '{tmp_path / 'nowhere'}' does not exist (key 'dataset_dir')"
    )


# ------------------------------------------------------------------ every bundle's classify.json on raw inputs

#: bundle -> (size key, in_channels, kernel_size, file suffix, image channels, the model's classes, the data's classes)
BUNDLES = {
    "liver_lesion_gan": ("image_size", 1, 5, ".nii.gz", 1, LESION3, LESION3),
    "lung_cisl_gan": ("image_size", 1, 5, ".nii.gz", 1, ["calcification", "ground_glass", "other"],
                      ["calcification", "other"]),
    "skin_melanogan": ("resolution", 3, 5, ".png", 3, ["rest", "melanoma"], ["melanoma", "nevus", "seborrheic"]),
    "spine_stylegan2": ("image_size", 1, 3, ".png", 1, ["normal", "pneumonia"], ["normal", "pneumonia"]),
}  # fmt: skip


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_every_classify_config_reads_raw_folders(bundle, tmp_path):
    """Each bundle's classify.json (MONAI's infer workflow, as `monai.bundle run` runs it) on a folder per class of
    its kind of image: the classes recorded beside the weights, per-class probabilities, metrics."""
    from monai.bundle import ConfigWorkflow

    size_key, in_channels, kernel, suffix, channels, model_names, data_names = BUNDLES[bundle]
    rng = np.random.default_rng(0)
    for name in data_names:
        for i in range(2):
            if suffix == ".png":  # 8-bit, larger than the network's input: the load chain resizes, as in training
                pixels = rng.integers(0, 256, (channels, 24, 20)).astype(np.float32)
            else:
                pixels = rng.uniform(-1000, 400, (1, SIZE, SIZE)).astype(np.float32)
            write_image(tmp_path / "data" / name / f"{name}{i}{suffix}", pixels)
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    torch.manual_seed(0)
    net = FridAdarCNN(in_channels=in_channels, num_classes=len(model_names), image_size=SIZE, channels=CHANNELS,
                           kernel_size=kernel)  # fmt: skip
    torch.save(net.state_dict(), evaluation / "classifier.pt")
    (evaluation / "classifier.json").write_text(json.dumps({"class_names": model_names}))
    configs = REPO / "bundles" / bundle / "configs"
    wf = ConfigWorkflow(config_file=str(configs / "classify.json"), meta_file=str(configs / "metadata.json"),
                        logging_file=False, workflow_type="infer", bundle_root=str(configs.parent),
                        output_dir=str(tmp_path), dataset_dir=str(tmp_path / "data"),
                        classifier_channels=CHANNELS, **{size_key: SIZE})  # fmt: skip
    wf.initialize()
    assert wf.check_properties() in (None, [])
    wf.run()
    rows = _read_csv(tmp_path / "predictions" / "predictions.csv")
    assert len(rows) == 2 * len(data_names)
    assert [k for k in rows[0] if k.startswith("prob_")] == [f"prob_{c}" for c in model_names]
    for row in rows:
        assert sum(float(row[f"prob_{c}"]) for c in model_names) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] in model_names and row["prediction"] in model_names
    metrics = json.loads((tmp_path / "predictions" / "metrics.json").read_text())
    assert metrics["class_names"] == model_names and metrics["n_images"] == len(rows)
    if bundle == "skin_melanogan":  # the data set's classes scored as the model's melanoma vs rest
        assert metrics["label_map"] == {"melanoma": "melanoma", "nevus": "rest", "seborrheic": "rest"}
