"""The arms of the classification protocol: what each one trains its classifier on, and that training set per fold.

An arm is a recipe for a fold's training set: the fold's real training images (as they are, repeated for online
classic augmentation, or re-sampled until the classes are balanced), its synthetic images, or both. Every arm of a
fold is trained and scored on the same patients (:mod:`common.protocol.augmentation.fold_runner`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.protocol.tasks import ClassificationTask

__all__ = ["ARMS", "arm_dir", "arm_items", "check_arms", "equal_steps_arm", "needs_synthetic", "oversample"]

#: what each arm trains the classifier on: real images?, synthetic images?, classic augmentation?
ARMS: dict[str, dict[str, bool]] = {
    "baseline": {"real": True, "synthetic": False, "augment": False},
    # MelanoGANs' classic answer to class imbalance: re-sample the real training images until the classes are balanced.
    "oversampling": {"real": True, "synthetic": False, "augment": False, "oversample": True},
    "classic": {"real": True, "synthetic": False, "augment": True},
    "classic+synthetic": {"real": True, "synthetic": True, "augment": True},
    "real+synthetic": {"real": True, "synthetic": True, "augment": False},
    "synthetic_only": {"real": False, "synthetic": True, "augment": False},
    # He et al. 2019 name the baseline "real": trained on real images only (the same as "baseline").
    "real": {"real": True, "synthetic": False, "augment": False},
    # He et al. 2019: start from the synthetic_only arm's selected model, then fine-tune it on the real images.
    "pretrain_synthetic+finetune": {"real": True, "synthetic": False, "augment": False, "pretrain_synthetic": True},
}


def check_arms(arms: Sequence[str]) -> list[str]:
    """``arms`` as a list; a name not in ``ARMS`` stops with the known ones."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; known: {sorted(ARMS)}")
    return list(arms)


def equal_steps_arm(equal_steps: bool | str | None, arms: Sequence[str]) -> str | None:
    """The arm whose gradient steps every arm gets (``equal_steps``): ``true`` is the first of ``arms``; None/False:
    none, every arm trains the same epochs."""
    if equal_steps is True:
        equal_steps = arms[0]
    if equal_steps and equal_steps not in ARMS:
        raise ValueError(f"equal_steps must be an arm name, true or null, got {equal_steps!r}")
    return equal_steps or None


def needs_synthetic(arms: Sequence[str]) -> bool:
    """Whether any of ``arms`` trains on synthetic images, directly or through the model it starts from."""
    return any(ARMS[a]["synthetic"] or ARMS[a].get("pretrain_synthetic") for a in arms)


def arm_items(
    arm: str, train: Sequence[dict], synthetic: Sequence[dict], *, augment_repeats: int, seed: int
) -> list[dict]:
    """The training items of ``arm``: real (repeated ``augment_repeats`` times for classic augmentation, or
    oversampled with ``seed``) + synthetic."""
    spec = ARMS[arm]
    real = list(train) * (augment_repeats if spec["augment"] else 1) if spec["real"] else []
    if spec.get("oversample"):
        real = oversample(real, seed=seed)
    return real + (list(synthetic) if spec["synthetic"] else [])


def arm_dir(output_dir: str | os.PathLike, fold: int, arm: str, task: ClassificationTask | None = None) -> Path:
    """Where ``arm`` keeps its selected model and results: ``<output_dir>/fold<fold>[/tasks/<task>]/arms/<arm>``."""
    base = Path(output_dir) / f"fold{fold}"
    if task is not None:
        base = base / "tasks" / task.name
    return base / "arms" / arm.replace("+", "_plus_")


def oversample(items: Sequence[dict], seed: int = 0, label_key: str = "label") -> list[dict]:
    """Class-balanced re-sampling: every class repeated (whole copies, then a seeded random remainder) up to the
    largest class's count, so that each epoch shows the classes equally often. Items are the same dict objects, so
    ``cached_dataset`` loads each file once."""
    by_class: dict[int, list[dict]] = {}
    for it in items:
        by_class.setdefault(int(it[label_key]), []).append(it)
    if not by_class:
        return []
    target = max(len(v) for v in by_class.values())
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for label in sorted(by_class):
        group = by_class[label]
        whole, rest = divmod(target, len(group))
        out += group * whole + [group[i] for i in sorted(rng.choice(len(group), rest, replace=False))]
    return out
