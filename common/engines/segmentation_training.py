"""Train and apply the downstream brain tumour segmenter (MONAI ``SupervisedTrainer`` / ``SupervisedEvaluator``).

Targets are BraTS's three overlapping regions (tumour core, whole tumour, enhancing tumour) as sigmoid channels,
as in MONAI's BraTS tutorial. The network sees axial slices; it is trained on slices with brain and applied to whole
case volumes by MONAI's ``SliceInferer``, exactly as the deployed bundle (``brain_pix2pix/configs/segment.json``)
applies it: sigmoid, threshold 0.5, Dice per case volume. Model selection (MONAI ``ValidationHandler`` +
``CheckpointSaver`` of the key metric, as ``fit_classifier``) is on the mean per-case Dice of a *validation* set of
cases; the test cases are never seen, and ``evaluate_segmenter`` scores them with the same evaluator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import IgniteMetricHandler, StatsHandler, ValidationHandler, from_engine
from monai.inferers import Inferer, SliceInferer
from monai.losses import DiceCELoss
from monai.transforms import Activationsd, AsDiscreted, Compose, EnsureTyped, Lambdad, LoadImaged
from monai.utils import set_determinism
from torch import nn

from common.data.brain import slice_items
from common.data.brain_transforms import SelectSliced, brats_regions
from common.data.datasets import cached_dataset
from common.engines.handlers import BestWeights, LossHistory
from common.engines.memory_format import plain_tensor, to_channels_last
from common.errors import DataError
from common.metrics.segmentation import REGIONS, brats_dice_metric

logger = logging.getLogger(__name__)

__all__ = [
    "SegmenterRecipe",
    "case_evaluator",
    "case_transforms",
    "evaluate_segmenter",
    "fit_segmenter",
    "segmentation_transforms",
    "slice_inferer",
]

#: the evaluator's key metric: mean Dice over the validation cases and the three regions
KEY_METRIC = "val_dice_mean"


@dataclass
class SegmenterRecipe:
    """How to build the segmenter (MONAI ``UNet``/``SegResNet``: in = sequences, out = 3 regions) and its optimiser."""

    network: Callable[[], nn.Module]
    optimizer: Callable[..., torch.optim.Optimizer]


def segmentation_transforms() -> Compose:
    """Slice item -> ``image`` (C, H, W) and ``label`` (3, H, W): TC, WT, ET."""
    return Compose(
        [
            LoadImaged(["image", "label"], ensure_channel_first=True, image_only=True),
            SelectSliced(["image", "label"]),
            Lambdad("label", brats_regions),
            EnsureTyped(["image", "label"], track_meta=False),
        ]
    )


def case_transforms() -> Compose:
    """Case item -> ``image`` (C, H, W, D) float32 and ``label`` (3, H, W, D) float64: TC, WT, ET.

    The label is float64 so that MONAI's Dice sums voxels in double precision: each case's Dice is then the exact
    fraction ``2 |P & T| / (|P| + |T|)`` that ``common.metrics.segmentation.brats_dice`` gives.
    """
    return Compose(
        [
            LoadImaged(["image", "label"], ensure_channel_first=True, image_only=True),
            Lambdad("label", brats_regions),
            EnsureTyped(["image", "label"], dtype=[torch.float32, torch.float64], track_meta=False),
        ]
    )


def slice_inferer(roi_size: Sequence[int] = (-1, -1), sw_batch_size: int = 16) -> SliceInferer:
    """The inferer of ``segment.json``: each axial slice of a (B, C, H, W, D) volume through the 2-D network, in
    batches of ``sw_batch_size`` slices; ``roi_size`` -1 is the whole slice (the bundle's ``image_size``)."""
    return SliceInferer(roi_size=tuple(roi_size), spatial_dim=2, sw_batch_size=sw_batch_size)


def _prepare_batch(batchdata, device=None, non_blocking=False, flip: bool = False, **kwargs):
    image = plain_tensor(batchdata["image"]).to(device=device, non_blocking=non_blocking).float()
    label = plain_tensor(batchdata["label"]).to(device=device, non_blocking=non_blocking).float()
    if flip and torch.rand(()) < 0.5:  # left-right flip: the two hemispheres are interchangeable
        image, label = image.flip(2), label.flip(2)
    return to_channels_last(image), to_channels_last(label)


def case_evaluator(
    network: nn.Module,
    cases: Sequence[dict],
    *,
    device: str | torch.device = "cpu",
    inferer: Inferer | None = None,
) -> SupervisedEvaluator:
    """A MONAI ``SupervisedEvaluator`` over whole case volumes (batch 1): ``inferer`` (default ``slice_inferer()``),
    sigmoid, threshold 0.5, and the key metric ``val_dice_mean`` (BraTS Dice, ``brats_dice_metric``; MONAI reduces
    the mean in float32); the exact float64 Dice per case and region of its last run is in
    ``state.metric_details["val_dice_mean"]`` (cases in order; TC, WT, ET)."""
    items = [{"image": c["image"], "label": c["label"]} for c in cases]
    loader = DataLoader(cached_dataset(items, case_transforms()), batch_size=1, shuffle=False, num_workers=0)
    return SupervisedEvaluator(
        device=torch.device(device),
        val_data_loader=loader,
        network=network,
        inferer=inferer if inferer is not None else slice_inferer(),
        postprocessing=Compose([Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=0.5)]),
        key_val_metric={
            KEY_METRIC: IgniteMetricHandler(
                metric_fn=brats_dice_metric(), output_transform=from_engine(["pred", "label"]), save_details=True
            )
        },
    )


def evaluate_segmenter(
    network: nn.Module, cases: Sequence[dict], *, device="cpu", inferer: Inferer | None = None
) -> dict:
    """Per-case Dice (WT, TC, ET) and their means: ``{"dice_tc": mean, ..., "dice_mean", "per_case": [{case_id,
    dice_*}]}``, by ``case_evaluator`` (the deployed bundle's inference path)."""
    cases = list(cases)
    evaluator = case_evaluator(network, cases, device=device, inferer=inferer)
    evaluator.run()
    scores = evaluator.state.metric_details[KEY_METRIC].double().cpu()  # (cases, regions)
    per_case = [
        {"case_id": case["case_id"], **{f"dice_{r}": float(row[i]) for i, r in enumerate(REGIONS)}}
        for case, row in zip(cases, scores, strict=True)
    ]
    out = {f"dice_{r}": float(np.mean([c[f"dice_{r}"] for c in per_case])) for r in REGIONS}
    out["dice_mean"] = float(np.mean([out[f"dice_{r}"] for r in REGIONS]))
    out["per_case"] = per_case
    return out


def fit_segmenter(
    recipe: SegmenterRecipe,
    train_cases: Sequence[dict],
    val_cases: Sequence[dict],
    output_dir: str,
    *,
    max_epochs: int,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_workers: int = 0,
    val_interval: int = 1,
    init_weights: str | None = None,
    flip: bool = True,
    inferer: Inferer | None = None,
) -> dict:
    """Train on the slices of ``train_cases``; keep the epoch with the best mean validation Dice of ``val_cases``
    (``case_evaluator`` with ``inferer``, every ``val_interval`` epochs).

    ``init_weights``: a state-dict file to start from (fine-tuning a segmenter pre-trained on synthetic cases).
    Writes ``best_model.pt`` (the network's state dict) and ``train_log.csv``; returns ``{"network" (eval, best
    weights), "model_file", "best_metric", "best_epoch"}``.
    """
    items = slice_items(train_cases, keys=("image", "label"))
    if not items:
        raise DataError(f"no training slices for the segmenter (output_dir={output_dir})")
    if not val_cases:
        raise DataError(f"no validation cases for model selection (output_dir={output_dir})")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    set_determinism(seed)
    transforms = segmentation_transforms()
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        cached_dataset(items, transforms, keys=("image", "label", "z")),
        batch_size=min(batch_size, len(items)),
        shuffle=True,
        num_workers=num_workers,
        generator=gen,
    )
    network = to_channels_last(recipe.network().to(device))
    if init_weights:
        network.load_state_dict(torch.load(init_weights, map_location=device, weights_only=True))
    optimizer = recipe.optimizer(network.parameters())
    evaluator = case_evaluator(network, val_cases, device=device, inferer=inferer)
    best = BestWeights(out, network)
    best.attach(evaluator)
    StatsHandler(name="synthaug.segmenter", iteration_log=False, output_transform=lambda x: None).attach(evaluator)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5),
        prepare_batch=lambda b, d=None, nb=False, **kw: _prepare_batch(b, d, nb, flip=flip),
        decollate=False,
        train_handlers=[ValidationHandler(validator=evaluator, interval=max(1, int(val_interval)), epoch_level=True)],
    )
    LossHistory(str(out)).attach(trainer)
    StatsHandler(name="synthaug.segmenter", iteration_log=False, output_transform=lambda x: None).attach(trainer)
    trainer.run()
    return best.restore(evaluator, device)
