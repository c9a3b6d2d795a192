"""Each fold's synthetic images: GANs trained on the fold's training patients only, and the set they generate.

No test image ever reaches a generator. The images are written to files + a datalist under
``<output_dir>/fold<k>/synthetic`` (the GANs under ``fold<k>/gan``), both keyed by the settings that made them
(``common.protocol.cache``), so a restarted protocol reuses them, resumes the GANs' training, or moves them aside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose

from common.data.datalist import read_datalist
from common.engines.gan_training import GANRecipe, fit_gans, load_generators
from common.engines.generation import generate_synthetic_set
from common.protocol.cache import claim, settings_digest

__all__ = ["FoldSynthesis"]

logger = logging.getLogger(__name__)


@dataclass(eq=False, repr=False, kw_only=True)
class FoldSynthesis:
    """Make (or reuse) a fold's GANs and synthetic set: :meth:`fold_set`. The arguments are the protocol's of the same
    names (``ClassificationProtocol``); ``notes`` is its list of report notes, where a class too small for a GAN is
    noted."""

    output_dir: Path
    class_names: list[str]
    gan_recipe: GANRecipe
    per_class_gan: bool
    transforms: Compose
    augmentation: Callable[[torch.Tensor], torch.Tensor]
    gan_epochs: int
    gan_batch_size: int
    gan_steps: int | None
    gan_augment: bool
    augment_repeats: int
    n_synthetic_per_class: int
    synthetic_balance: float | None
    synthetic_classes: Sequence[str] | None
    checkpoint_interval: int
    sample_interval: int
    a_min: float
    a_max: float
    synthetic_format: str
    seed: int
    device: torch.device
    num_workers: int
    progress: bool
    notes: list[str]
    #: fold -> digest of the settings that made its synthetic set (what the arms trained on it are keyed by)
    keys: dict[int, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.synthetic_balance = None if self.synthetic_balance is None else float(self.synthetic_balance)
        self.synthetic_classes = None if self.synthetic_classes is None else [str(c) for c in self.synthetic_classes]
        unknown_classes = [c for c in self.synthetic_classes or [] if c not in self.class_names]
        if unknown_classes:
            raise ValueError(f"synthetic_classes {unknown_classes} are not among {self.class_names}")

    def key(self, fold: int) -> str | None:
        """The digest of the settings that made ``fold``'s synthetic set (None before :meth:`fold_set` made it)."""
        return self.keys.get(fold)

    def counts(self, train: list[dict]) -> list[int]:
        """Synthetic images per class for a fold's training items (see ``synthetic_balance``)."""
        if self.synthetic_balance is None:
            return [self.n_synthetic_per_class] * len(self.class_names)
        real = np.bincount([int(it["label"]) for it in train], minlength=len(self.class_names))
        target = int(round(self.synthetic_balance * real.max()))
        allowed = set(self.synthetic_classes) if self.synthetic_classes is not None else set(self.class_names)
        return [max(0, target - int(n)) if c in allowed else 0 for c, n in zip(self.class_names, real, strict=True)]

    def fold_set(self, fold: int, train: list[dict]) -> list[dict]:
        """The synthetic items of ``fold``, from GANs trained on its ``train`` items (both reused when on disk)."""
        fold_dir = self.output_dir / f"fold{fold}"
        syn_dir = fold_dir / "synthetic"
        datalist = syn_dir / "datalist.json"
        counts = self.counts(train)
        # a small set: a class with fewer training images in this fold than a GAN needs (fit_gan: 2, counting the
        # augmented repeats) gets no GAN and no synthetic image, and the report says so
        repeats = self.augment_repeats if self.gan_augment else 1
        real = np.bincount([int(it["label"]) for it in train], minlength=len(self.class_names))
        few = [c for c, n, r in zip(self.class_names, counts, real, strict=True) if n and r * repeats < 2]
        if few:
            note = (
                f"fold {fold}: too few training images of class(es) {few} for a GAN "
                f"({', '.join(str(int(real[self.class_names.index(c)])) for c in few)}): no synthetic image of them"
            )
            logger.warning(note)
            self.notes.append(note)
            counts = [0 if c in few else n for c, n in zip(self.class_names, counts, strict=True)]
        if not sum(counts):
            return []
        # per-class GANs only for the classes that get images (all classes when not balancing)
        gan_classes = (
            [c for c, n in zip(self.class_names, counts, strict=True) if n > 0] if self.per_class_gan else None
        )
        gan_dir = fold_dir / "gan"
        settings = {
            "gan_recipe": self.gan_recipe, "per_class": self.per_class_gan, "classes": gan_classes, "counts": counts,
            "train": train, "transforms": self.transforms, "gan_epochs": self.gan_epochs,
            "gan_batch_size": self.gan_batch_size, "gan_steps": self.gan_steps, "seed": self.seed + fold,
            "repeats": self.augment_repeats if self.gan_augment else 1,
            "augment": self.augmentation if self.gan_augment else None, "a_min": self.a_min, "a_max": self.a_max,
            "format": self.synthetic_format,
        }  # fmt: skip
        # reuse (or resume) only what these settings made; other settings' GANs and images are moved aside
        self.keys[fold] = settings_digest(settings)
        claim(gan_dir, settings, "GANs")
        claim(syn_dir, settings, "synthetic images")
        if datalist.is_file():
            return read_datalist(str(datalist))["training"]
        fit_gans(
            self.gan_recipe,
            train,
            self.transforms,
            str(gan_dir),
            class_names=self.class_names,
            per_class=self.per_class_gan,
            classes=gan_classes,
            max_epochs=self.gan_epochs,
            batch_size=self.gan_batch_size,
            device=self.device,
            seed=self.seed + fold,
            num_workers=self.num_workers,
            repeats=self.augment_repeats if self.gan_augment else 1,
            augment=self.augmentation if self.gan_augment else None,
            total_steps=self.gan_steps,
            checkpoint_interval=self.checkpoint_interval,
            sample_interval=self.sample_interval,
            progress=self.progress,
            tensorboard=False,
        )
        gens = load_generators(self.gan_recipe, str(gan_dir), self.class_names, device=self.device, classes=gan_classes)
        path = generate_synthetic_set(
            gens,
            self.class_names,
            counts,
            str(syn_dir),
            a_min=self.a_min,
            a_max=self.a_max,
            seed=self.seed + 100 + fold,
            device=self.device,
            file_format=self.synthetic_format,
            source=str(gan_dir),
        )
        return read_datalist(path)["training"]
