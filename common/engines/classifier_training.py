"""Train and apply the downstream classifiers (MONAI ``SupervisedTrainer``/``SupervisedEvaluator``).

The model kept is the one with the best *validation* score (a patient-separate split of the training part);
the test fold is never seen during training or selection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ignite.metrics import EpochMetric
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import StatsHandler, ValidationHandler
from monai.transforms import Compose
from monai.utils import set_determinism
from torch import nn

from common.data.datasets import cached_dataset
from common.engines.handlers import BestWeights, LossHistory
from common.engines.memory_format import plain_tensor, to_channels_last
from common.errors import DataError
from common.metrics.classification import classification_metrics

logger = logging.getLogger(__name__)


@dataclass
class ClassifierRecipe:
    """How to build a classifier and its optimiser (callables, so each fold and arm gets fresh ones).

    ``class_weighted_loss`` weights the cross-entropy by inverse class frequency of the training set (for the
    imbalanced sets of MelanoGANs / SpineGAN); off by default as in Frid-Adar.
    """

    network: Callable[[], nn.Module]
    optimizer: Callable[..., torch.optim.Optimizer]
    class_weighted_loss: bool = False


def _balanced_accuracy(y_pred: torch.Tensor, y: torch.Tensor) -> float:
    pred = y_pred.argmax(1).cpu().numpy()
    true = y.view(-1).cpu().numpy()
    recalls = [float((pred[true == c] == c).mean()) for c in np.unique(true)]
    return float(np.mean(recalls)) if recalls else 0.0


def fit_classifier(
    recipe: ClassifierRecipe,
    train_items: Sequence[dict],
    val_items: Sequence[dict],
    train_transforms: Compose,
    eval_transforms: Compose,
    output_dir: str,
    *,
    num_classes: int,
    max_epochs: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_workers: int = 0,
    val_interval: int = 1,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """Train on ``train_items``, select the epoch with the best validation balanced accuracy, return it.

    ``augment`` (a batch transform such as ``ClassicAugmentation``) is applied to training batches only.

    Writes ``<output_dir>/best_model.pt`` (state dict) and ``train_log.csv``. Returns
    ``{"network": nn.Module (eval, best weights), "model_file": str, "best_metric": float, "best_epoch": int}``.
    """
    train_items, val_items = list(train_items), list(val_items)
    if not train_items:
        raise DataError(f"no training images for the classifier (output_dir={output_dir})")
    if not val_items:
        raise DataError(f"no validation images for model selection (output_dir={output_dir})")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    set_determinism(seed)
    train_transforms.set_random_state(seed=seed)
    if hasattr(augment, "set_random_state"):
        augment.set_random_state(seed)

    train_ds = cached_dataset(train_items, train_transforms)
    val_ds = cached_dataset(val_items, eval_transforms)
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train_ds, batch_size=min(batch_size, len(train_items)), shuffle=True, num_workers=num_workers, generator=gen
    )
    val_loader = DataLoader(val_ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)

    network = to_channels_last(recipe.network().to(device))
    optimizer = recipe.optimizer(network.parameters())
    weight = None
    if recipe.class_weighted_loss:
        counts = np.bincount([int(it["label"]) for it in train_items], minlength=num_classes).astype(float)
        weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / num_classes, dtype=torch.float32, device=device)
    loss = nn.CrossEntropyLoss(weight=weight)

    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=val_loader,
        network=network,
        key_val_metric={
            "val_balanced_accuracy": EpochMetric(
                _balanced_accuracy, output_transform=lambda o: (o["pred"], o["label"].view(-1)), check_compute_fn=False
            )
        },
        decollate=False,
    )
    best = BestWeights(out, network)
    best.attach(evaluator)

    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=train_loader,
        network=network,
        optimizer=optimizer,
        loss_function=loss,
        prepare_batch=partial(_prepare_classification_batch, augment=augment),
        decollate=False,
        train_handlers=[ValidationHandler(validator=evaluator, interval=val_interval, epoch_level=True)],
    )
    evaluator.prepare_batch = _prepare_classification_batch
    LossHistory(str(out)).attach(trainer)
    StatsHandler(name="synthaug.classifier", iteration_log=False, output_transform=lambda x: None).attach(trainer)
    trainer.run()

    return best.restore(evaluator, device)


def _prepare_classification_batch(batchdata, device=None, non_blocking=False, augment=None, **kwargs):
    image = to_channels_last(plain_tensor(batchdata["image"]).to(device=device, non_blocking=non_blocking).float())
    if augment is not None:
        image = to_channels_last(augment(image))
    label = plain_tensor(batchdata["label"]).to(device=device, non_blocking=non_blocking).long().view(-1)
    return image, label


@torch.no_grad()
def predict_probs(
    network: nn.Module,
    items: Sequence[dict],
    transforms: Compose,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, K) and labels (N,) of ``items`` (labels -1 where an item has none)."""
    loader = DataLoader(cached_dataset(list(items), transforms), batch_size=batch_size, num_workers=num_workers)
    network.eval()
    probs, labels = [], []
    for batch in loader:
        logits = network(to_channels_last(plain_tensor(batch["image"]).to(device).float()))
        probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
        lab = batch.get("label")
        labels.append(np.asarray(lab).reshape(-1) if lab is not None else -np.ones(len(logits), dtype=int))
    return np.concatenate(probs), np.concatenate(labels).astype(int)


def evaluate_classifier(network, items, transforms, class_names, **kwargs) -> dict:
    """``classification_metrics`` of ``network`` on ``items``."""
    probs, labels = predict_probs(network, items, transforms, **kwargs)
    return classification_metrics(probs, labels, list(class_names))
