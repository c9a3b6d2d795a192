"""A real MONAI Label server (``monailabel start_server``, monaibundle app, 127.0.0.1) serving one exported classifier
and the exported brain segmenter; ``POST /infer`` for each (ci/monai_label_server.py).

monailabel does not install beside this project's pins, so the server runs from an interpreter that has it: this one,
or ``$SYNTHAUG_MONAILABEL_PYTHON``; without either, the test makes one (``make_venv``: monailabel 0.8.5 from the
package registry into ``$SYNTHAUG_MONAILABEL_VENV``, default ``~/.cache/synthaug/monailabel-venv``; about 3 minutes
and 3.7 GB the first time, reused after). ``SYNTHAUG_NO_MONAILABEL=1`` skips it instead (offline, no registry).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from synthaug_testing import REPO, load_ci_script, tiny_exported_segmenter

from common.networks import FridAdarCNN
from common.protocol.export import export_downstream

mls = load_ci_script("monai_label_server")
LIVER = REPO / "bundles" / "liver_lesion_gan"
CLASSES = ["cyst", "metastasis", "hemangioma"]


def _exported_classifier(out):
    model = out / "fold0" / "classic"
    model.mkdir(parents=True)
    torch.manual_seed(0)
    net = FridAdarCNN(in_channels=1, num_classes=3, image_size=16, channels=[4, 4, 4])
    torch.save(net.state_dict(), model / "best_model.pt")
    (model / "result.json").write_text(json.dumps({"best_val_balanced_accuracy": 0.7}))
    record = export_downstream(
        [("classic", 0, model / "result.json")], "best_val_balanced_accuracy", out / "classifier.pt",
        kind="classification", labels=CLASSES, class_names=CLASSES,
        downstream={
            "template": str(LIVER / "configs" / "classify.json"), "source_root": str(LIVER),
            "config": {"image_size": 16, "classifier_channels": [4, 4, 4]},
            "image": {"data_type": "nifti", "modality": "CT", "num_channels": 1, "spatial_shape": [16, 16]},
        },
    )  # fmt: skip
    roi = out / "roi.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(-160, 240, (16, 16)).astype(np.float32), np.eye(4)), roi)
    return record["downstream_bundle"], roi


@pytest.mark.slow
def test_monai_label_server_answers_for_a_classifier_and_the_segmenter(tmp_path):
    python, why = mls.find_python()
    if python is None and os.environ.get("SYNTHAUG_NO_MONAILABEL") == "1":
        pytest.skip(f"SYNTHAUG_NO_MONAILABEL=1 and no interpreter with monailabel: {why}")
    if python is None:  # install it, as a user would (README, MONAI Label): it does not fit this environment's pins
        venv = os.environ.get("SYNTHAUG_MONAILABEL_VENV", str(Path.home() / ".cache" / "synthaug" / "monailabel-venv"))
        python = mls.make_venv(venv)
    classifier, roi = _exported_classifier(tmp_path / "liver")
    segmenter, case = tiny_exported_segmenter(tmp_path / "brain")
    results = mls.serve_and_infer(python, {classifier: roi, segmenter: case}, tmp_path / "server")

    cls = results["liver_lesion_gan_classification"]
    assert cls["type"] == "classification" and cls["labels"] == {n: i for i, n in enumerate(CLASSES)}
    assert [p["label"] for p in cls["prediction"]] == CLASSES and cls["score_sum"] == pytest.approx(1.0, abs=1e-5)
    seg = results["brain_pix2pix_segmentation"]
    assert seg["type"] == "segmentation" and seg["labels"] == {"necrosis": 1, "oedema": 2, "enhancing": 4}
    assert seg["shape"] == (32, 32, 12) and set(seg["values"]) <= {0, 1, 2, 4}
    # the same answer as ci/check_monai_label.py's step-by-step repetition of MONAI Label's infer task
    cml = load_ci_script("check_monai_label")
    check = cml.check_bundle(classifier, image=roi, workflow=False)
    assert [a["score"] for a in check["answer"]] == pytest.approx([p["score"] for p in cls["prediction"]], abs=1e-6)
    label = np.asarray(nib.load(seg["label_file"]).dataobj)
    loaded = cml.load_like_monai_label(segmenter)
    np.testing.assert_array_equal(label, cml.infer_one(loaded, case)["answer"])
