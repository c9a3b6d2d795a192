"""Train and apply the downstream brain tumour segmenter (MONAI ``SupervisedTrainer``) on axial slices.

Targets are BraTS's three overlapping regions (tumour core, whole tumour, enhancing tumour) as sigmoid channels,
as in MONAI's BraTS tutorial. Model selection is on the mean per-case Dice of a *validation* set of cases; the
test cases are never seen. Predictions are made slice by slice and stacked, and Dice is scored per case volume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.handlers import StatsHandler
from monai.losses import DiceCELoss
from monai.transforms import Compose, EnsureTyped, Lambdad, LoadImaged
from monai.utils import set_determinism
from torch import nn

from common.data.brain import slice_items
from common.data.brain_transforms import SelectSliced, brats_regions
from common.data.datasets import cached_dataset
from common.data.io import read_image
from common.engines.handlers import LossHistory
from common.engines.memory_format import plain_tensor, to_channels_last
from common.errors import DataError
from common.metrics.segmentation import REGIONS, brats_dice

logger = logging.getLogger(__name__)

__all__ = ["SegmenterRecipe", "evaluate_segmenter", "fit_segmenter", "predict_case", "segmentation_transforms"]


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


def _prepare_batch(batchdata, device=None, non_blocking=False, flip: bool = False, **kwargs):
    image = plain_tensor(batchdata["image"]).to(device=device, non_blocking=non_blocking).float()
    label = plain_tensor(batchdata["label"]).to(device=device, non_blocking=non_blocking).float()
    if flip and torch.rand(()) < 0.5:  # left-right flip: the two hemispheres are interchangeable
        image, label = image.flip(2), label.flip(2)
    return to_channels_last(image), to_channels_last(label)


@torch.no_grad()
def predict_case(network: nn.Module, case: dict, *, device="cpu", batch_size: int = 16) -> np.ndarray:
    """Binary regions (3, H, W, D) for one prepared case, predicted slice by slice (slices without brain: 0)."""
    image = read_image(case["image"])  # (C, H, W, D)
    out = np.zeros((len(REGIONS), *image.shape[1:]), np.uint8)
    zs = list(case.get("slices") or range(image.shape[-1]))
    network.eval()
    for i in range(0, len(zs), batch_size):
        chunk = zs[i : i + batch_size]
        x = torch.as_tensor(np.stack([image[..., z] for z in chunk])).to(device)
        logits = network(to_channels_last(x)).float().cpu().numpy()
        for j, z in enumerate(chunk):
            out[..., z] = logits[j] > 0
    return out


def evaluate_segmenter(network: nn.Module, cases: Sequence[dict], *, device="cpu") -> dict:
    """Per-case Dice (WT, TC, ET) and their means: ``{"dice_wt": mean, ..., "per_case": [{case_id, dice_*}]}``."""
    per_case = []
    for case in cases:
        scores = brats_dice(predict_case(network, case, device=device), read_image(case["label"]))
        per_case.append({"case_id": case["case_id"], **scores})
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
) -> dict:
    """Train on the slices of ``train_cases``; keep the epoch with the best mean validation Dice.

    ``init_weights``: a state-dict file to start from (fine-tuning a segmenter pre-trained on synthetic cases).
    Writes ``best_model.pt`` and ``train_log.csv``; returns ``{"network", "model_file", "best_metric", "best_epoch"}``.
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
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5),
        prepare_batch=lambda b, d=None, nb=False, **kw: _prepare_batch(b, d, nb, flip=flip),
        decollate=False,
    )
    best_file = out / "best_model.pt"
    best = {"metric": -1.0, "epoch": 0}

    def validate(engine) -> None:
        score = evaluate_segmenter(network, val_cases, device=device)["dice_mean"]
        network.train()
        if score > best["metric"]:
            best.update(metric=score, epoch=engine.state.epoch)
            tmp = best_file.with_name(f".{best_file.name}.tmp-{os.getpid()}")
            torch.save(network.state_dict(), tmp)
            os.replace(tmp, best_file)
        engine.state.metrics["val_dice_mean"] = score
        logger.info(f"epoch {engine.state.epoch}: validation mean Dice {score:.4f} (best {best['metric']:.4f})")

    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=max(1, int(val_interval))), validate)
    LossHistory(str(out)).attach(trainer)
    StatsHandler(name="synthaug.segmenter", iteration_log=False, output_transform=lambda x: None).attach(trainer)
    trainer.run()
    if best_file.is_file():
        network.load_state_dict(torch.load(best_file, map_location=device, weights_only=True))
    else:  # no validation epoch ran (max_epochs < val_interval): keep the last weights, and say so
        logger.warning("no validation epoch ran: keeping the last weights")
        tmp = best_file.with_name(f".{best_file.name}.tmp-{os.getpid()}")
        torch.save(network.state_dict(), tmp)
        os.replace(tmp, best_file)
    return {
        "network": network.eval(),
        "model_file": str(best_file),
        "best_metric": best["metric"],
        "best_epoch": best["epoch"],
    }
