"""Small sets (issue 16, item 4): fewer patients than folds fall back to leave-one-patient-out with a warning; a part
of the audit that a set is too small for is skipped with a warning; a late step (audit, generator comparison, quality
audit) that fails never costs the report or the export, and the report says what is missing."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from synthaug_testing import bundle_helpers

import common.protocol.quality as quality_module
from common.data import load_classification_dataset
from common.data.augment import ClassicAugmentation
from common.data.io import write_image
from common.data.transforms import roi_classification_transforms
from common.engines import ClassifierRecipe
from common.errors import DataError
from common.networks import FridAdarCNN
from common.protocol import ClassificationProtocol, load_or_make_splits, make_splits
from common.protocol.generators import evaluate_with_generators


def _items(n_patients, per_patient=2):
    return [
        {"image": f"/d/p{p}_{i}.png", "label": p % 2, "patient": f"p{p}"}
        for p in range(n_patients)
        for i in range(per_patient)
    ]


def test_fewer_patients_than_folds_is_leave_one_patient_out(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="common.protocol.folds"):
        splits = make_splits(_items(4), k=5, seed=0)
    assert splits["k"] == 4 and splits["k_requested"] == 5 and len(splits["folds"]) == 4
    assert sorted(p for f in splits["folds"] for p in f["test"]) == ["p0", "p1", "p2", "p3"]
    for fold in splits["folds"]:
        assert len(fold["test"]) == 1 and fold["train"] and fold["val"], "one test patient; training and validation"
        assert not set(fold["train"]) & set(fold["val"]) and not set(fold["test"]) & set(fold["train"] + fold["val"])
    assert "only 4 patients for 5 folds: 4 folds instead, leave-one-patient-out" in splits["fallback"]
    assert splits["fallback"] in caplog.text
    assert make_splits(_items(6), k=5, seed=0)["fallback"] is None, "enough patients: no fallback"

    # saved once; reused when asked again with the folds asked for or those made, refused for other settings
    path = str(tmp_path / "splits.json")
    saved = load_or_make_splits(path, _items(4), 5, 0)
    assert load_or_make_splits(path, _items(4), 5, 0) == saved == load_or_make_splits(path, _items(4), 4, 0)
    with pytest.raises(DataError, match="splits for other data or settings"):
        load_or_make_splits(path, _items(4), 3, 0)


def test_folds_that_would_leave_no_training_patient_fall_back_too():
    """3 patients in 2 folds: the fold of 2 test patients would keep 1 for training and validation together."""
    splits = make_splits(_items(3, per_patient=1), k=2, seed=0)
    assert splits["k"] == 3 and splits["fallback"]
    assert all(len(f["train"]) == 1 and len(f["val"]) == 1 and len(f["test"]) == 1 for f in splits["folds"])
    assert make_splits(_items(4), k=3, seed=0)["fallback"] is None, "4 patients in 3 folds keep training + validation"
    with pytest.raises(DataError, match=r"only 2 patient\(s\)"):
        make_splits(_items(2), k=2, seed=0)


# ---------------------------------------------------------------------------------------------- protocol runs
def _folders(root, per_class=2):
    """Two classes of ``per_class`` 16 px PNGs, one patient each (patient = file stem)."""
    for c, name in enumerate(("benign", "malignant")):
        for i in range(per_class):
            write_image(root / name / f"{name}{i}.png", np.full((1, 16, 16), 60.0 + 120 * c + 10 * i))
    return load_classification_dataset(root)


def _protocol(tmp_path, data, **kwargs):
    args = dict(
        gan_recipe=None,
        classifier_recipe=ClassifierRecipe(
            partial(FridAdarCNN, num_classes=2, image_size=16, channels=(4, 8), hidden=8),
            partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        ),
        transforms=roi_classification_transforms(0, 255),
        augmentation=ClassicAugmentation(seed=0),
        arms=["baseline"],
        comparisons=[],
        folds=5,
        classifier_epochs=1,
        classifier_batch_size=4,
        a_min=0,
        a_max=255,
        audit=False,
    )
    args.update(kwargs)
    return ClassificationProtocol(data, str(tmp_path / "eval"), **args)


def test_protocol_on_four_patients_with_five_folds_reports_and_exports(tmp_path):
    protocol = _protocol(tmp_path, _folders(tmp_path / "data"))
    report = protocol.run()
    assert report["folds"] == 4 and len(report["arms"]["baseline"]["per_fold"]) == 4
    assert any("leave-one-patient-out" in n for n in report["notes"])
    assert "leave-one-patient-out" in (tmp_path / "eval" / "report.md").read_text()
    record = protocol.export_best_classifier()
    assert (tmp_path / "eval" / "classifier.pt").is_file() and record["fold"] in range(4)
    # a new protocol object (a resumed run) reads the saved 4-fold splits, as asked with 5 folds
    assert _protocol(tmp_path, _folders(tmp_path / "data")).run()["folds"] == 4


def test_a_class_without_training_images_in_a_fold_gets_no_gan(tmp_path):
    """4 patients, leave-one-patient-out: in each fold a class keeps 0 or 1 training patient (the validation split
    takes one). Too few for a GAN: that class gets no GAN and no synthetic image there, with a note."""
    from common.engines import GANRecipe
    from common.losses import BCEObjective
    from common.networks import DCGANDiscriminator, DCGANGenerator

    gan = GANRecipe(
        partial(DCGANGenerator, latent_dim=8, image_size=16, channels=(16, 8)),
        partial(DCGANDiscriminator, image_size=16, channels=(8, 16)),
        partial(torch.optim.Adam, lr=2e-4),
        partial(torch.optim.Adam, lr=2e-4),
        BCEObjective(),
    )
    protocol = _protocol(tmp_path, _folders(tmp_path / "data"), gan_recipe=gan, arms=["baseline", "real+synthetic"],
                         gan_epochs=1, gan_batch_size=2, n_synthetic_per_class=2)  # fmt: skip
    report = protocol.run()
    notes = [n for n in report["notes"] if "for a GAN" in n]
    assert len(notes) == 4, "every fold of this split has a class with fewer than 2 training images"
    for note in notes:
        fold = int(note.split()[1].rstrip(":"))
        absent = note.split("class(es) ")[1].split(" for a GAN")[0]
        datalist = tmp_path / "eval" / f"fold{fold}" / "synthetic" / "datalist.json"
        if not datalist.is_file():  # no class had enough: no GAN at all in this fold
            assert all(f"'{c}'" in absent for c in protocol.class_names)
            continue
        synthetic = json.loads(datalist.read_text())["training"]
        assert synthetic and all(f"'{protocol.class_names[it['label']]}'" not in absent for it in synthetic)
    assert len(report["arms"]["real+synthetic"]["per_fold"]) == 4


def test_a_failing_audit_costs_neither_report_nor_export(tmp_path, monkeypatch):
    protocol = _protocol(tmp_path, _folders(tmp_path / "data", per_class=3), folds=2)

    def broken(*args, **kwargs):
        raise RuntimeError("feature network out of memory")

    monkeypatch.setattr(protocol, "_audit", broken)
    report = protocol.run()
    notes = [n for n in report["notes"] if "audit failed" in n]
    assert (
        len(notes) == 2 and "fold 0: synthesis/privacy audit failed (RuntimeError: feature network out of" in notes[0]
    )
    assert "the report and the export went on without it" in (tmp_path / "eval" / "report.md").read_text()
    protocol.export_best_classifier()
    assert (tmp_path / "eval" / "classifier.pt").is_file()


def test_a_failing_generator_comparison_keeps_the_report(tmp_path):
    protocol = _protocol(tmp_path, _folders(tmp_path / "data", per_class=3), folds=2)

    def comparison(**kwargs):
        raise DataError("fold 0: class 'melanoma' has 1 training / 0 test images")

    report = evaluate_with_generators(protocol, comparison)
    assert any(
        n.startswith("generator comparison failed (DataError: fold 0: class 'melanoma'") for n in report["notes"]
    )
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["notes"] == report["notes"] and "image_statistics" not in saved
    assert "generator comparison failed" in (tmp_path / "eval" / "report.md").read_text()


def test_a_failing_quality_audit_still_writes_the_generator(tmp_path, monkeypatch):
    """The end of GAN training: the model file is written even when its quality audit fails, saying why."""
    import common.engines.gan_training as gan_training
    import common.engines.model_file as model_file

    written = {}
    monkeypatch.setattr(gan_training, "load_generators", lambda *a, **k: {"conditional": torch.nn.Identity()})
    monkeypatch.setattr(model_file, "write_model_file", lambda gens, path, info: written.update(info=info))

    def quality(*args, **kwargs):
        raise ValueError("PRDC needs k + 1 images")

    split = {"train": _items(10), "holdout": _items(10)}
    info = quality_module.finish_training(None, tmp_path, ["a", "b"], tmp_path / "model.pt", split, None, quality)
    assert written["info"] is info
    assert info["quality"]["skipped"].startswith("quality audit failed (ValueError: PRDC needs k + 1 images)")
    assert info["quality"]["coverage"] is None


def test_quality_audit_is_skipped_for_a_small_class(tmp_path, caplog):
    audit = quality_module.GeneratorQuality(tmp_path)
    with caplog.at_level(logging.WARNING, logger="common.protocol.quality"):
        assert audit({}, ["a", "b"], _items(2), _items(10), transforms=None) == {}
    assert "4 training / 20 held-out images (a set < 8): no quality audit" in caplog.text


# ---------------------------------------------------------------------------- the skin run that lost its export
@pytest.mark.slow
def test_skin_run_with_a_small_melanoma_class_writes_report_and_export(tmp_path):
    """MelanoGANs on a tiny set: the generator comparison's held-out melanoma images are fewer than the audit needs.
    That audit is skipped with a note; the comparison's image statistics, the report and the export are there."""
    _, workflow, _ = bundle_helpers("skin_melanogan")
    wf = workflow(["train", "evaluate", "quick", "smoke"], tmp_path, **{"phantom#n_per_class": [14, 10, 4]})
    report = wf.run()[1]
    out = Path(tmp_path) / "evaluation"
    skipped = [n for n in report["notes"] if "synthesis/privacy audit skipped" in n]
    assert len(skipped) == 3 and "class 'melanoma' has 3 < 8 images" in skipped[0], "one per generator"
    assert report["image_statistics"]["summary"], "the comparison itself ran"
    assert (out / "classifier.pt").is_file() and (out / "skin_melanogan_classification").is_dir()
    assert "synthesis/privacy audit skipped" in (out / "report.md").read_text()
