"""The downstream bundle writer (common.protocol.export) on a tiny fake classifier, checked the way MONAI Label loads
a bundle (ci/check_monai_label.py) and by ci/verify_bundle.py; plus the one file selection of the common copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from synthaug_testing import load_ci_script, tiny_exported_segmenter

from ci.verify import verify
from common.bundle_files import common_package_files
from common.networks import FridAdarCNN
from common.protocol.export import export_downstream, write_downstream_bundle

REPO = Path(__file__).resolve().parents[2]
LIVER = REPO / "bundles" / "liver_lesion_gan"
CLASSES = ["cyst", "metastasis", "hemangioma"]
SIZE, CHANNELS = 16, [4, 4, 4]


cml = load_ci_script("check_monai_label")


def _fake_evaluation(out: Path) -> list[tuple[str, int, Path]]:
    """Two arms x two folds of tiny classifiers with result.json (validation scores) and a report.json."""
    candidates = []
    scores = {("baseline", 0): 0.50, ("baseline", 1): 0.61, ("classic", 0): 0.72, ("classic", 1): 0.40}
    for (arm, fold), score in scores.items():
        d = out / f"fold{fold}" / arm
        d.mkdir(parents=True)
        torch.manual_seed(fold)
        net = FridAdarCNN(in_channels=1, num_classes=3, image_size=SIZE, channels=CHANNELS)
        torch.save(net.state_dict(), d / "best_model.pt")
        (d / "result.json").write_text(json.dumps({"best_val_balanced_accuracy": score}))
        candidates.append((arm, fold, d / "result.json"))
    metrics = {"accuracy": {"mean": 0.7, "std": 0.05, "ci95": [0.25, 1.0]}}
    report = {
        "paper": "Frid-Adar et al. 2018",
        "dataset": "phantom",
        "folds": 2,
        "arms": {"classic": {"metrics": metrics}, "baseline": {"metrics": metrics}},
        "paper_reference": {"classic": {"accuracy": 0.786}},
    }
    (out / "report.json").write_text(json.dumps(report))
    return candidates


def _downstream() -> dict:
    return {
        "template": str(LIVER / "configs" / "classify.json"),
        "source_root": str(LIVER),
        "config": {"image_size": SIZE, "classifier_channels": CHANNELS},
        "image": {"data_type": "nifti", "modality": "CT", "num_channels": 1, "spatial_shape": [SIZE, SIZE]},
    }


@pytest.fixture
def exported(tmp_path) -> Path:
    out = tmp_path / "evaluation"
    record = export_downstream(
        _fake_evaluation(out),
        "best_val_balanced_accuracy",
        out / "classifier.pt",
        kind="classification",
        labels=CLASSES,
        report_file=out / "report.json",
        downstream=_downstream(),
        class_names=CLASSES,
    )
    assert (record["arm"], record["fold"]) == ("classic", 0), "chosen on the validation score"
    folder = Path(record["downstream_bundle"])
    assert folder == out / "liver_lesion_gan_classification"
    assert json.loads((out / "classifier.json").read_text())["downstream_bundle"] == str(folder)
    return folder


def _roi(path: Path) -> Path:
    image = np.random.default_rng(0).uniform(-160, 240, (SIZE, SIZE)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(path))
    return path


def test_exported_folder_is_a_monai_label_bundle(exported, tmp_path):
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    source = json.loads((LIVER / "configs" / "metadata.json").read_text())
    sel = meta["synthaug_export"]
    assert meta["version"] == source["version"] == sel["source_version"] and sel["source_bundle"] == LIVER.name
    assert (sel["arm"], sel["fold"], sel["validation_score"]) == ("classic", 0, 0.72)
    assert sel["test_metrics"]["accuracy"]["ci95"] == [0.25, 1.0] and sel["paper_reference"] == {"accuracy": 0.786}
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    # an image-input model follows the general schema, not its source GAN bundle's generator schema
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    assert source["schema"].endswith("/meta_schema_generator_20220718.json")
    assert meta["required_packages_version"] == source["required_packages_version"]
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "cyst", "1": "metastasis", "2": "hemangioma"}
    inference = json.loads((exported / "configs" / "inference.json").read_text())
    assert inference["bundle_name"] == exported.name and inference["image_size"] == SIZE
    assert inference["ckpt_path"] == "$@bundle_root + '/models/model.pt'" and "run" in inference
    torch.testing.assert_close(
        torch.load(exported / "models" / "model.pt"), torch.load(exported.parent / "fold0/classic/best_model.pt")
    )
    card = (exported / "docs" / "README.md").read_text()
    assert "Demonstration only" in card and "0.786" in card and "check_monai_label.py" in card
    assert (exported / "LICENSE").read_bytes() == (LIVER / "LICENSE").read_bytes()
    assert (exported / "docs" / "data_license.txt").is_file() and (exported / "configs" / "logging.conf").is_file()
    copied = {rel for rel, _ in common_package_files(exported / "common")}
    assert copied == {rel for rel, _ in common_package_files()} and "protocol/export.py" in copied
    assert not list(exported.rglob("__pycache__"))

    # MONAI Label's steps, then the standalone infer workflow from the folder without the repository
    summary = cml.check_bundle(exported, image=_roi(tmp_path / "roi.nii.gz"))
    assert summary["pred_shape"] == (3,) and summary["raw_shape"] == (3,)
    assert summary["labels"] == {"cyst": 0, "metastasis": 1, "hemangioma": 2}
    assert summary["outputs"] == ["predictions/predictions.csv"]
    # ci/verify_bundle.py treats it as an inference-only bundle and passes it
    report = verify(exported)
    assert report.failed == 0, [r.line() for r in report.results if r.status == "FAIL"]


def test_classifier_answers_through_monai_labels_restored_and_writer(exported, tmp_path):
    """The exported classifier's postprocessing ends with ClassScoresd: MONAI Label's Restored finds no input grid to
    map the score vector onto, and its ClassificationWriter gets the MetaTensor it reads. Without that step the check
    fails as the real server did (HTTP 500), and without the MetaTensor as its writer would."""
    image = _roi(tmp_path / "roi.nii.gz")
    summary = cml.check_bundle(exported, image=image, workflow=False)
    assert summary["type"] == "classification" and [a["label"] for a in summary["answer"]] == CLASSES
    assert sum(a["score"] for a in summary["answer"]) == pytest.approx(1.0, abs=1e-5)
    config_file = exported / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    steps = config["postprocessing"]["transforms"]
    assert steps[-1]["_target_"] == "common.data.transforms.ClassScoresd"
    config["postprocessing"]["transforms"] = steps[:-1]
    config_file.write_text(json.dumps(config))
    with pytest.raises(cml.BundleCheckError, match=r"Restored fails .*broadcast together with shapes \(0,\) \(2,\)"):
        cml.check_bundle(exported, image=image, workflow=False)
    # no grid left, but the logits as the network gives them: a plain tensor (MONAI's Activationsd would have made
    # a MetaTensor of them)
    config["postprocessing"]["transforms"] = [{"_target_": "DeleteItemsd", "keys": "image_meta_dict"}]
    config_file.write_text(json.dumps(config))
    with pytest.raises(cml.BundleCheckError, match="ClassificationWriter reads pred.array"):
        cml.check_bundle(exported, image=image, workflow=False)


def test_exported_segmenter_names_the_values_it_answers_with(tmp_path):
    """brain: the network's channels are TC, WT, ET; its answer is the BraTS label map {0, 1, 2, 4}; the metadata
    names those values (MONAI Label's labels), and the check refuses a label map with values it does not name."""
    folder, case = tiny_exported_segmenter(tmp_path / "evaluation")
    assert folder.name == "brain_pix2pix_segmentation"
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    names = {"0": "background", "1": "necrosis", "2": "oedema", "4": "enhancing"}
    assert fmt["outputs"]["pred"]["channel_def"] == names and fmt["outputs"]["pred"]["num_channels"] == 3
    assert fmt["post_processed_outputs"]["pred"]["channel_def"] == names
    assert fmt["post_processed_outputs"]["pred"]["value_range"] == [0, 4]
    assert "0 TC, 1 WT, 2 ET" in meta["pred_classes"] and "4 enhancing" in meta["pred_classes"]
    assert meta["task"] == "Segmentation: necrosis, oedema, enhancing"
    summary = cml.check_bundle(folder, image=case, workflow=False)
    assert summary["labels"] == {"necrosis": 1, "oedema": 2, "enhancing": 4} and summary["type"] == "segmentation"
    assert summary["raw_shape"] == (3, 32, 32, 12) and summary["pred_shape"] == (32, 32, 12), "Restored drops C=1"
    assert set(summary["answer"]) <= {0, 1, 2, 4}
    report = verify(folder)
    assert report.failed == 0, [r.line() for r in report.results if r.status == "FAIL"]
    # the names the export declared before (the network's channels TC, WT, ET as ids 0-2) leave the value 4 unnamed
    old = {"labels": {"tc": 0, "wt": 1, "et": 2}, "type": "segmentation"}
    label_map = torch.tensor([[[0, 1], [2, 4]]])
    with pytest.raises(cml.BundleCheckError, match=r"values \[4\] that outputs.pred.channel_def does not name"):
        cml._write(old, {"pred": label_map})


def test_check_fails_when_metadata_or_weights_do_not_fit(exported, tmp_path):
    image = _roi(tmp_path / "roi.nii.gz")
    meta_file = exported / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    broken = dict(meta)
    broken["network_data_format"] = {
        "inputs": {"latent": {"type": "noise"}, **meta["network_data_format"]["inputs"]},
        "outputs": meta["network_data_format"]["outputs"],
    }
    meta_file.write_text(json.dumps(broken))
    with pytest.raises(cml.BundleCheckError, match="first input 'latent'"):
        cml.check_bundle(exported, image=image, workflow=False)
    broken["network_data_format"] = meta["network_data_format"] | {
        "outputs": {"pred": meta["network_data_format"]["outputs"]["pred"] | {"num_channels": 4}}
    }
    meta_file.write_text(json.dumps(broken))
    with pytest.raises(cml.BundleCheckError, match="3 channels"):
        cml.check_bundle(exported, image=image, workflow=False)
    meta_file.write_text(json.dumps(meta))
    (exported / "models" / "model.pt").unlink()
    with pytest.raises(cml.BundleCheckError, match="neither model.pt nor model.ts"):
        cml.check_bundle(exported, image=image, workflow=False)
    assert any(r.name == "required_files" and r.status == "FAIL" for r in verify(exported).results)
    assert cml.main([str(exported), "--no-workflow"]) == 1


def test_re_export_replaces_the_folder_and_bad_config_keys_fail(exported, tmp_path):
    out = exported.parent
    (exported / "stale.txt").write_text("from an older export")
    record = export_downstream(
        [("classic", 0, out / "fold0" / "classic" / "result.json")],
        "best_val_balanced_accuracy",
        out / "classifier.pt",
        kind="classification",
        labels=CLASSES,
        downstream=_downstream(),
    )
    assert Path(record["downstream_bundle"]) == exported and not (exported / "stale.txt").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    # the default test image (random, from the metadata) goes through as well
    assert cml.check_bundle(exported, workflow=False)["pred_shape"] == (3,)
    bad = _downstream() | {"config": {"imge_size": SIZE}}
    with pytest.raises(ValueError, match="imge_size"):
        export_downstream(
            [("classic", 0, out / "fold0" / "classic" / "result.json")],
            "best_val_balanced_accuracy",
            out / "classifier.pt",
            kind="classification",
            labels=CLASSES,
            downstream=bad,
        )
    assert (exported / "models" / "model.pt").is_file(), "a failed export leaves the previous folder"


def test_common_files_outside_git_are_walked_without_caches(tmp_path):
    copy = tmp_path / "common"
    shutil.copytree(REPO / "common", copy)
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.pyc").write_bytes(b"")
    names = {rel for rel, _ in common_package_files(copy)}
    assert "bundle_files.py" in names and not [n for n in names if "__pycache__" in n]


def test_exported_folder_packages_as_a_zip_with_its_own_common_copy(exported, tmp_path):
    pkg = load_ci_script("package_bundle")
    entry = pkg.package(exported, tmp_path / "dist")
    assert (
        entry["name"] == exported.name
        and entry["version"] == json.loads((exported / "configs" / "metadata.json").read_text())["version"]
    )
    import zipfile

    names = zipfile.ZipFile(tmp_path / "dist" / f"{exported.name}_v{entry['version']}.zip").namelist()
    assert f"{exported.name}/models/model.pt" in names and f"{exported.name}/configs/inference.json" in names
    common = [n for n in names if n.startswith(f"{exported.name}/common/")]
    assert common and len(common) == len(set(common)), "the export's common copy, once"
    shutil.rmtree(exported / "common")
    with pytest.raises(SystemExit, match="common"):
        pkg.package(exported, tmp_path / "dist2")


# ---------------------------------------------------------------- no code from data (issue 14)
EVIL = ["$__import__('os').system('touch PWNED')", "@evil", "%x#y"]


def test_class_names_from_folders_never_run_as_config(tmp_path, monkeypatch):
    """Class folders named like config expressions, a reference and a macro go through the data loader and the export;
    the exported bundle parses (whole config, metadata included), runs, and gives the names back as text."""
    from monai.bundle import ConfigParser, ConfigWorkflow

    from common.data.labelled_images import load_classification_dataset

    monkeypatch.chdir(tmp_path)  # a `touch PWNED` would land here, or in the bundle folder (the workflow's cwd)
    data = tmp_path / "folders"
    for name in EVIL:
        (data / name).mkdir(parents=True)
        _roi(data / name / "case0.nii.gz")
    names = load_classification_dataset(data)["class_names"]
    assert sorted(names) == sorted(EVIL)
    out = tmp_path / "evaluation"
    record = export_downstream(
        _fake_evaluation(out), "best_val_balanced_accuracy", out / "classifier.pt", kind="classification",
        labels=names, report_file=out / "report.json", downstream=_downstream(), class_names=names,
    )  # fmt: skip
    folder = Path(record["downstream_bundle"])
    text = (folder / "configs" / "inference.json").read_text() + (folder / "configs" / "metadata.json").read_text()
    for name in names:  # no data string where the parser acts on it: not as a value that starts with $, @ or %
        assert json.dumps(name) not in text, name
    assert json.loads((folder / "models" / "class_names.json").read_text()) == names

    # the whole config, metadata included, parsed and evaluated as `monai.bundle run` / MONAI Label read it: this
    # instantiates the network, loads the weights and runs the evaluator over a datalist of one image
    (folder / "data").mkdir()
    datalist = {"training": [{"image": str(_roi(tmp_path / "x.nii.gz"))}]}
    (folder / "data" / "datalist.json").write_text(json.dumps(datalist))
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser.read_meta(str(folder / "configs" / "metadata.json"))
    parser.config.update({"bundle_root": str(folder)})
    parsed = parser.get_parsed_content()
    assert parsed["class_names"] == names, "the names come back as the literal strings"
    assert (folder / "runs" / "predictions" / "predictions.csv").is_file(), "the whole config ran"
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        str(i): f"'{n}'" for i, n in enumerate(names)
    }, "the label names MONAI Label shows: quoted, hence text to the parser"
    channel_def = parsed["_meta_"]["network_data_format"]["outputs"]["pred"]["channel_def"]
    # text: the parser only rewrites '#' (its old id separator) to '::' inside it
    assert channel_def == {str(i): f"'{n}'".replace("#", "::") for i, n in enumerate(names)}
    wf = ConfigWorkflow(config_file=str(folder / "configs" / "inference.json"), bundle_root=str(folder),
                        meta_file=str(folder / "configs" / "metadata.json"), workflow_type="infer")  # fmt: skip
    wf.initialize()
    assert wf.channel_def == channel_def  # a MONAI property that evaluates the metadata's channel_def
    # MONAI Label's steps and the standalone `ConfigWorkflow` run from the folder (its cwd)
    summary = cml.check_bundle(folder, image=_roi(tmp_path / "roi.nii.gz"))
    assert summary["labels"] == {f"'{n}'".lower(): i for i, n in enumerate(names)}
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists(), "code from a folder name ran"


def test_parser_inert_leaves_nothing_for_the_parser_to_run(tmp_path):
    from monai.bundle import ConfigParser

    from common.protocol.export import parser_inert

    data = {"_target_": "os.system", "command": "$__import__('os').getpid()", "+x": ["@command", "%x#y", "a #b"]}
    inert = parser_inert(data)
    assert inert == {"'_target_'": "os.system", "command": "'$__import__('os').getpid()'",
                     "'+x'": ["'@command'", "'%x#y'", "a #b"]}  # fmt: skip
    parsed = ConfigParser(inert).get_parsed_content()
    assert parsed["command"] == "'$__import__('os').getpid()'" and parsed["'_target_'"] == "os.system"
    with pytest.raises(ValueError, match="config parser"):  # the evaluation's sizes must be plain values
        write_downstream_bundle(
            {"arm": "a", "fold": 0}, tmp_path / "b", kind="classification", labels=["a"],
            **_downstream() | {"config": {"image_size": "$1 + 1"}},
        )  # fmt: skip
