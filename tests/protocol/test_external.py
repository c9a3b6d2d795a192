"""External test sets: every model a protocol trains anyway is also scored on data from elsewhere (issue 16, item 1).

Unit parts (fast metrics, the patient bootstrap, the report section and table) use made-up probabilities; the
protocol runs train 2 folds x 2 arms of a tiny classifier on 16 px phantoms, with no GAN (no synthetic arm).
"""

from __future__ import annotations

import json
import logging
from functools import partial

import numpy as np
import pytest
import torch

import common.protocol.augmentation.fold_runner as fold_runner
import common.protocol.external as external
from common.data import load_classification_dataset
from common.data.augment import ClassicAugmentation
from common.data.phantoms import LiverLesionPhantom
from common.data.transforms import roi_classification_transforms
from common.engines import ClassifierRecipe
from common.metrics.classification import FAST_METRICS, classification_metrics
from common.networks import FridAdarCNN
from common.protocol import ClassificationProtocol
from common.protocol.report import render_markdown, write_report

NAMES = ["cyst", "metastasis", "hemangioma"]


@pytest.mark.parametrize("k", [2, 3])
def test_fast_metrics_are_those_of_classification_metrics(k):
    rng = np.random.default_rng(k)
    probs = rng.dirichlet(np.ones(k), size=40)
    labels = np.arange(40) % k
    full = classification_metrics(probs, labels, [str(c) for c in range(k)])
    for m in FAST_METRICS:  # BOOTSTRAP_METRICS and the deployed classifier's sensitivity / specificity
        assert external.fast_metric(m, probs, labels, k) == pytest.approx(full[m], abs=1e-9), m
    lacking = labels.copy()
    lacking[lacking == k - 1] = 0  # a class absent: undefined, as classification_metrics says
    assert np.isnan(external.fast_metric("auc", probs, lacking, k))
    assert np.isnan(external.fast_metric("balanced_accuracy", probs, lacking, k))
    assert np.isnan(external.fast_metric("specificity", probs, lacking, k))
    assert external.fast_metric("accuracy", probs, lacking, k) == pytest.approx(np.mean(probs.argmax(1) == lacking))


def test_bootstrap_resamples_patients_not_images():
    """Each patient has 3 images (0-2, 3-5, ...): every resample must hold each drawn patient's 3 images together."""
    patients = [f"p{i // 3}" for i in range(30)]
    correct = np.repeat(np.arange(10) % 2, 3).astype(float)  # patients alternately right and wrong
    seen = []

    def statistic(idx):
        per_patient = np.bincount(np.asarray(idx) // 3, minlength=10)
        assert (per_patient % 3 == 0).all(), "a patient's 3 images are drawn together"
        seen.append(len(idx))
        return float(correct[idx].mean())

    result = external.bootstrap_over_patients(patients, statistic, n_resamples=200, seed=0)
    assert result["n_patients"] == 10 and result["value"] == pytest.approx(0.5)
    assert result["n_resamples"] == 200 and result["ci95"][0] < 0.5 < result["ci95"][1]
    assert set(seen) == {30}, "every resample draws 10 whole patients"


def _scores(n_folds, labels, rng, skill):
    out = []
    for _ in range(n_folds):
        logits = rng.normal(size=(len(labels), 3)) + skill * np.eye(3)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        out.append({"metrics": classification_metrics(probs, labels, NAMES), "probs": probs.tolist(),
                    "labels": labels.tolist()})  # fmt: skip
    return out


def test_section_and_table_from_per_fold_scores(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    ext = {"items": [{"image": f"/x/{i}.png", "label": int(y), "patient": f"q{i // 2}"} for i, y in enumerate(labels)],
           "class_names": NAMES, "source": "datalist", "dataset_dir": "/x", "origin": "test_dir"}  # fmt: skip
    scores = {"baseline": _scores(3, labels, rng, 0.5), "classic": _scores(3, labels, rng, 3.0)}
    sec = external.classification_section(ext, scores, n_resamples=100, comparisons=[("classic", "baseline")])
    assert sec["n_images"] == 60 and sec["n_patients"] == 30 and sec["origin"] == "test_dir"
    for arm, folds in scores.items():
        acc = sec["arms"][arm]["metrics"]["accuracy"]
        assert acc["n"] == 3 and set(acc) >= {"mean", "std", "ci95"}
        boot = sec["bootstrap"][arm]["accuracy"]
        assert boot["value"] == pytest.approx(np.mean([f["metrics"]["accuracy"] for f in folds])), "fold-averaged"
        assert boot["ci95"][0] <= boot["value"] <= boot["ci95"][1] and boot["n_patients"] == 30
        assert "probs" not in json.dumps(sec["arms"]), "the report carries metrics, not per-image probabilities"
    assert sec["comparisons"]["classic vs baseline"]["accuracy"]["verdict"] == "better"
    report = {"bundle": "b", "folds": 3, "arms": sec["arms"], "paper_reference": {}, "external": sec}
    text = render_markdown(report)
    assert "## External test set" in text and "| classic |" in text.split("## External test set")[1]
    assert "bootstrap 95 % CI over the 30 external patients" in text
    assert "60 images of 30 patients, used for no training" in text
    one_case = {**report, "n_cases": 1, "external": {**sec, "n_images": 1, "n_patients": 1, "unit": "case"}}
    assert "1 case of 1 patient, used for" in render_markdown(one_case)  # a segmentation report counts volumes
    write_report(report, str(tmp_path))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["external"]["bootstrap"]["classic"]["auc"]["ci95"][1] <= 1.0
    assert "## External test set" not in render_markdown({k: v for k, v in report.items() if k != "external"})
    # the model cards' tables (ci/render_results.py) render it by the same function
    from synthaug_testing import load_ci_script

    card = load_ci_script("render_results").protocol_table(tmp_path / "report.json")
    assert "#### External test set" in card and "| classic |" in card.split("External test set")[1]


# ------------------------------------------------------------------------------------------------ protocol runs
def _data(tmp_path, test_dir=None):
    phantom = LiverLesionPhantom(n_per_class=(4, 4, 4), image_size=16, seed=0)
    return load_classification_dataset(
        tmp_path / "phantom", phantom=phantom, phantom_dir=tmp_path / "phantom", test_dir=test_dir
    )


def _external_dir(tmp_path):
    """Another phantom draw (other seed): a second data set in the same layout (a datalist folder)."""
    LiverLesionPhantom(n_per_class=(3, 2, 3), image_size=16, seed=7).ensure(tmp_path / "other")
    return tmp_path / "other"


def _protocol(tmp_path, data, **kwargs) -> ClassificationProtocol:
    args = dict(
        gan_recipe=None,
        classifier_recipe=ClassifierRecipe(
            partial(FridAdarCNN, num_classes=3, image_size=16, channels=(4, 8), hidden=8),
            partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        ),
        transforms=roi_classification_transforms(-160, 240),
        augmentation=ClassicAugmentation(seed=0),
        arms=["baseline", "classic"],
        comparisons=[("classic", "baseline")],
        folds=2,
        classifier_epochs=1,
        classifier_batch_size=8,
        a_min=-160,
        a_max=240,
        audit=False,
        bootstrap_resamples=50,
    )
    args.update(kwargs)
    return ClassificationProtocol(data, str(tmp_path / "eval"), **args)


def test_protocol_scores_every_model_on_the_external_set(tmp_path, monkeypatch):
    data = _data(tmp_path, test_dir=_external_dir(tmp_path))
    assert data["external_test"]["origin"] == "test_dir" and len(data["external_test"]["items"]) == 8
    fits = []
    real_fit = fold_runner.fit_classifier
    monkeypatch.setattr(fold_runner, "fit_classifier", lambda *a, **k: fits.append(a[5]) or real_fit(*a, **k))
    report = _protocol(tmp_path, data).run()
    assert len(fits) == 4, "2 folds x 2 arms: no model is trained for the external set"
    ext = report["external"]
    assert ext["n_images"] == 8 and ext["origin"] == "test_dir" and set(ext["arms"]) == {"baseline", "classic"}
    for arm in ("baseline", "classic"):
        per_fold = ext["arms"][arm]["per_fold"]
        assert len(per_fold) == 2 and all(sum(map(sum, f["confusion_matrix"])) == 8 for f in per_fold)
        assert ext["bootstrap"][arm]["accuracy"]["value"] == pytest.approx(np.mean([f["accuracy"] for f in per_fold]))
        for fold in range(2):
            folder = "classic" if arm == "classic" else "baseline"
            assert (tmp_path / "eval" / f"fold{fold}" / "arms" / folder / "external" / "external.json").is_file()
    assert "## External test set" in (tmp_path / "eval" / "report.md").read_text()
    patients = {it["patient"] for it in data["external_test"]["items"]}
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["external"]["n_patients"] == len(patients)
    assert ext["shared_patients"] == len(patients), "the two phantom draws reuse patient ids: counted and warned"

    # Resume: nothing is trained or scored again.
    scored = []
    real_score = external.predict_probs
    monkeypatch.setattr(external, "predict_probs", lambda *a, **k: scored.append(1) or real_score(*a, **k))
    again = _protocol(tmp_path, data).run()
    assert len(fits) == 4 and scored == []
    assert again["external"]["bootstrap"] == report["external"]["bootstrap"]


def test_no_external_section_without_an_external_set(tmp_path):
    data = _data(tmp_path)
    assert data["external_test"] is None
    report = _protocol(tmp_path, data, arms=["baseline"], comparisons=[]).run()
    assert "external" not in report
    assert not list((tmp_path / "eval").rglob("external.json"))


def test_external_set_with_tasks(tmp_path):
    data = _data(tmp_path, test_dir=_external_dir(tmp_path))
    report = _protocol(tmp_path, data, arms=["baseline"], comparisons=[], tasks=["multiclass", "cyst_vs_rest"]).run()
    ext = report["external"]
    assert set(ext["tasks"]) == {"multiclass", "cyst_vs_rest"}
    assert ext["arms"] == ext["tasks"]["multiclass"]["arms"], "the top-level arms are the primary task's"
    binary = ext["tasks"]["cyst_vs_rest"]
    assert binary["class_names"] == ["rest", "cyst"]
    assert len(binary["arms"]["baseline"]["per_fold"][0]["confusion_matrix"]) == 2
    assert "### cyst_vs_rest (rest, cyst)" in (tmp_path / "eval" / "report.md").read_text()


# ------------------------------------------------------------------------------------------------ the data side
def test_test_dir_must_be_other_data(tmp_path):
    with pytest.raises(Exception, match="test_dir .* is dataset_dir"):
        _data(tmp_path, test_dir=tmp_path / "phantom")
    _data(tmp_path)  # the phantom exists now: a folder holding its images in another datalist is refused too
    phantom_list = json.loads((tmp_path / "phantom" / "datalist.json").read_text())
    (tmp_path / "copy").mkdir()
    for item in phantom_list["training"]:
        item["image"] = str(tmp_path / "phantom" / item["image"])
    (tmp_path / "copy" / "datalist.json").write_text(json.dumps(phantom_list))
    with pytest.raises(Exception, match="also in dataset_dir"):
        _data(tmp_path, test_dir=tmp_path / "copy")


def test_external_set_may_lack_a_class_with_a_warning(tmp_path, caplog):
    ext = _external_dir(tmp_path)
    content = json.loads((ext / "datalist.json").read_text())
    content["training"] = [it for it in content["training"] if it["label"] != 2]
    (ext / "datalist.json").write_text(json.dumps(content))
    with caplog.at_level(logging.WARNING, logger="common.data.labelled_images"):
        data = _data(tmp_path, test_dir=ext)
    assert data["external_test"]["counts"]["hemangioma"] == 0
    assert "no image of class(es) ['hemangioma']" in caplog.text


# ------------------------------------------------------------------- MedMNIST: the test split, and SyntheticLearning
def _npz(path, n_train=12, n_val=4, n_test=6, extra=None):
    rng = np.random.default_rng(0)

    def split(n):
        return rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 2).astype(np.uint8)[:, None]

    arrays = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n:
            arrays[f"{name}_images"], arrays[f"{name}_labels"] = split(n)
    np.savez(path, **arrays, **(extra or {}))
    return path


def test_medmnist_test_split_is_the_external_set_by_default(tmp_path, caplog):
    npz = _npz(tmp_path / "pneumoniamnist.npz")
    with caplog.at_level(logging.INFO, logger="common.data.labelled_images"):
        data = load_classification_dataset(npz, cache_dir=tmp_path / "cache")
    assert len(data["items"]) == 16 and {it["split"] for it in data["items"]} == {"train", "val"}
    ext = data["external_test"]
    assert ext["origin"] == "test split of pneumoniamnist.npz" and len(ext["items"]) == 6
    assert {it["split"] for it in ext["items"]} == {"test"} and ext["class_names"] == ["normal", "pneumonia"]
    assert "no test_dir: the test split of pneumoniamnist.npz (6 images) is the external test set" in caplog.text

    # test_dir given: it is the external set, and the unused test split is named in a warning (never dropped silently)
    other = _npz(tmp_path / "other.npz", n_train=3, n_val=0, n_test=2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="common.data.labelled_images"):
        data = load_classification_dataset(npz, cache_dir=tmp_path / "cache", test_dir=other)
    assert data["external_test"]["origin"] == "test_dir" and len(data["external_test"]["items"]) == 5, "all splits"
    assert "test_dir given: the test split of pneumoniamnist.npz (6 images) is not used" in caplog.text

    # a file without a test split: no external set; arrays that no reader uses are named
    lone = _npz(tmp_path / "lone.npz", n_test=0, extra={"notes": np.zeros(3)})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="common.data.labelled_images"):
        assert load_classification_dataset(lone, cache_dir=tmp_path / "cache")["external_test"] is None
    assert "not read: split(s) [], array(s) ['notes']" in caplog.text


def test_synthetic_learning_scores_the_real_arm_on_the_medmnist_test_split(tmp_path):
    from common.data.radiograph import radiograph_transforms
    from common.protocol.synthetic_learning import SyntheticLearningProtocol

    data = load_classification_dataset(_npz(tmp_path / "pneumoniamnist.npz", n_train=16), cache_dir=tmp_path / "c")
    protocol = SyntheticLearningProtocol(
        data,
        str(tmp_path / "eval"),
        generators={},
        classifier_recipe=ClassifierRecipe(
            partial(FridAdarCNN, num_classes=2, image_size=32, channels=(4, 8), hidden=8),
            partial(torch.optim.Adam, lr=1e-3),
        ),
        transforms=radiograph_transforms(32),
        folds=2,
        classifier_epochs=1,
        classifier_batch_size=8,
        bootstrap_resamples=50,
        audit=False,
    )
    report = protocol.run()
    ext = report["external"]
    assert ext["n_images"] == 6 and set(ext["arms"]) == {"real"} and len(ext["arms"]["real"]["per_fold"]) == 2
    assert set(ext["bootstrap"]["real"]) >= {"accuracy", "auc"}
    assert (tmp_path / "eval" / "fold1" / "arms" / "real" / "external" / "external.json").is_file()
    assert "## External test set" in (tmp_path / "eval" / "report.md").read_text()


# ------------------------------------------------------------------------------------ segmentation (brain_pix2pix)
def test_segmentation_protocol_scores_every_segmenter_on_external_cases(tmp_path):
    from monai.networks.nets import UNet

    from common.data.brain import load_brain_dataset
    from common.data.phantoms import BrainTumourPhantom
    from common.engines.segmentation_training import SegmenterRecipe
    from common.protocol.segmentation import SegmentationProtocol

    BrainTumourPhantom(n_cases=2, shape=(24, 24, 16), seed=5).ensure(tmp_path / "other")
    data = load_brain_dataset(
        str(tmp_path / "phantom"), phantom=BrainTumourPhantom(n_cases=4, shape=(24, 24, 16), seed=0),
        phantom_dir=str(tmp_path / "phantom"), prepared_dir=str(tmp_path / "prepared"), image_size=16, n_slices=6,
        test_dir=str(tmp_path / "other"),
    )  # fmt: skip
    assert len(data["external_test"]["items"]) == 2 and (tmp_path / "prepared_external" / "datalist.json").is_file()
    recipe = SegmenterRecipe(
        partial(UNet, spatial_dims=2, in_channels=len(data["sequences"]), out_channels=3, channels=(4, 8),
                strides=(2,), num_res_units=0),
        partial(torch.optim.Adam, lr=1e-3),
    )  # fmt: skip
    protocol = SegmentationProtocol(
        data, str(tmp_path / "eval"), gan_recipe=None, segmenter_recipe=recipe, arms=["real"], comparisons=[],
        folds=2, seg_epochs=1, seg_batch_size=4, audit=False, bootstrap_resamples=20,
    )  # fmt: skip
    report = protocol.run()
    ext = report["external"]
    assert ext["n_images"] == 2 and len(ext["arms"]["real"]["per_fold"]) == 2
    assert set(ext["arms"]["real"]["metrics"]) == {"dice_wt", "dice_tc", "dice_et", "dice_mean"}
    boot = ext["bootstrap"]["real"]["dice_mean"]
    assert boot["value"] == pytest.approx(np.mean([f["dice_mean"] for f in ext["arms"]["real"]["per_fold"]]))
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "## External test set" in text and "dice_mean" in text.split("## External test set")[1]
