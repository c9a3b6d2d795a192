"""The segmenter's evaluation and model selection: MONAI's SupervisedEvaluator with the deployed bundle's inferer
(segment.json's SliceInferer), its key metric kept by CheckpointSaver; Dice per case against known values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.inferers import SliceInferer
from monai.networks.nets import UNet
from torch import nn

from common.data.io import write_image
from common.engines.segmentation_training import (
    SegmenterRecipe,
    case_evaluator,
    evaluate_segmenter,
    fit_segmenter,
    slice_inferer,
)
from common.metrics.segmentation import brats_dice

REPO = Path(__file__).resolve().parents[2]
BRAIN = REPO / "bundles" / "brain_pix2pix" / "configs"


class RegionsFromImage(nn.Module):
    """A 'segmenter' that reads the three regions off image channels 0-2 (logit = channel value): its predictions
    are known exactly, so the Dice is too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3]


def _case(folder: Path, name: str, label: np.ndarray, predicted: np.ndarray) -> dict:
    """A prepared case whose image encodes ``predicted`` regions (3, H, W, D) as +1 / -1 in channels 0-2."""
    image = np.concatenate([np.where(predicted > 0, 1.0, -1.0), -np.ones((1, *label.shape[1:]))]).astype(np.float32)
    write_image(folder / f"{name}_image.nii.gz", image)
    write_image(folder / f"{name}_label.nii.gz", label.astype(np.int16))
    return {
        "image": str(folder / f"{name}_image.nii.gz"),
        "label": str(folder / f"{name}_label.nii.gz"),
        "case_id": name,
        "patient": name,
        "slices": list(range(label.shape[-1])),
    }


@pytest.fixture
def known_cases(tmp_path):
    shape = (1, 16, 16, 4)
    label = np.zeros(shape, np.int16)
    label[0, 4:12, 4:12, 1:3] = 2  # oedema: whole tumour 8 x 8 x 2 = 128 voxels
    label[0, 6:10, 6:10, 1:3] = 1  # core 4 x 4 x 2 = 32 voxels; no enhancing tumour
    perfect = np.stack([np.isin(label[0], (1, 3, 4)), label[0] > 0, label[0] == 4]).astype(np.uint8)
    off = perfect.copy()
    off[1, 4:12, 4:8, 1:3] = 0  # half the whole tumour missed: Dice 2 * 64 / (64 + 128) = 2/3
    off[0, 0:4, 0:4, 0] = 1  # 16 false core voxels: Dice 2 * 32 / (48 + 32) = 4/5
    off[2, 0, 0, 3] = 1  # one enhancing voxel where there is none: Dice 0
    return [_case(tmp_path, "perfect", label, perfect), _case(tmp_path, "off", label, off)], (perfect, off)


def test_evaluate_segmenter_known_dice_per_case(known_cases):
    cases, (perfect, off) = known_cases
    result = evaluate_segmenter(RegionsFromImage(), cases)
    assert result["per_case"] == [
        {"case_id": "perfect", "dice_tc": 1.0, "dice_wt": 1.0, "dice_et": 1.0},  # ET: nothing to find, nothing found
        {"case_id": "off", "dice_tc": 2 * 32 / (48 + 32), "dice_wt": 2 * 64 / (64 + 128), "dice_et": 0.0},
    ]
    assert result["dice_tc"] == np.mean([1.0, 0.8]) and result["dice_et"] == 0.5
    assert result["dice_mean"] == pytest.approx(np.mean([0.9, np.mean([1.0, 2 / 3]), 0.5]), abs=1e-15)
    # ... the same numbers as brats_dice (common.metrics) of the predictions themselves
    label = np.zeros((1, 16, 16, 4), np.int16)
    label[0, 4:12, 4:12, 1:3], label[0, 6:10, 6:10, 1:3] = 2, 1
    for case, pred in zip(result["per_case"], (perfect, off), strict=True):
        assert {k: v for k, v in case.items() if k != "case_id"} == brats_dice(pred, label)


def test_evaluation_uses_the_deployed_inferer(known_cases):
    """Validation and test go through segment.json's inferer (evaluate.json passes the same definition), so the
    Dice a report gives is that of the exported segmenter's own predictions."""
    segment = ConfigParser.load_config_file(BRAIN / "segment.json")
    evaluate = ConfigParser.load_config_file(BRAIN / "evaluate.json")
    assert evaluate["seg_inferer"] == segment["inferer"]
    assert evaluate["evaluate"]["protocol"]["inferer"] == "@seg_inferer"
    parser = ConfigParser({"image_size": 16, "inferer": segment["inferer"]})
    deployed = parser.get_parsed_content("inferer")
    assert isinstance(deployed, SliceInferer) and isinstance(slice_inferer(), SliceInferer)
    cases, _ = known_cases
    evaluator = case_evaluator(RegionsFromImage(), cases, inferer=deployed)
    assert evaluator.inferer is deployed
    torch.manual_seed(0)
    net = UNet(2, 4, 3, channels=(4, 8), strides=(2,), num_res_units=0)
    x = torch.randn(1, 4, 16, 16, 4)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x, net), slice_inferer()(x, net), rtol=0, atol=0)


def test_fit_segmenter_keeps_the_best_validation_epoch_with_monai_handlers(known_cases, tmp_path):
    cases, _ = known_cases
    recipe = SegmenterRecipe(
        network=lambda: UNet(2, 4, 3, channels=(4, 8), strides=(2,), num_res_units=0),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
    )
    out = tmp_path / "fit"
    fit = fit_segmenter(recipe, cases, cases[:1], str(out), max_epochs=3, batch_size=4, seed=0)
    assert fit["model_file"] == str(out / "best_model.pt") and 1 <= fit["best_epoch"] <= 3
    assert 0.0 <= fit["best_metric"] <= 1.0
    again = recipe.network()
    again.load_state_dict(torch.load(fit["model_file"], weights_only=True))  # a plain state dict, as segment.json loads
    # the key metric is MONAI's DiceMetric mean (reduced in float32); the report's Dice are the exact float64 ones
    assert evaluate_segmenter(again, cases[:1])["dice_mean"] == pytest.approx(fit["best_metric"], abs=1e-6)
    assert json.dumps(fit["best_metric"])  # a plain float for result.json
