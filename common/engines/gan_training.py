"""Train a GAN from a datalist with every handler a real run needs; the one path for bundles and protocols.

``GANRecipe`` describes *how to build* a GAN (callables, so that every fold or class gets fresh networks and
optimisers); ``fit_gan`` builds and trains one; ``fit_gans`` trains one per class (Frid-Adar's DCGAN-per-class)
or one conditional GAN over all classes (ACGAN); ``load_generators`` reads their final weights back
(``common.engines.generation`` turns them into synthetic data sets).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from ignite.handlers import ProgressBar
from monai.data import DataLoader
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler
from monai.transforms import Compose
from monai.utils import set_determinism
from torch import nn

from common.data.datasets import cached_dataset
from common.engines.gan_trainer import GANTrainer, prepare_gan_batch
from common.engines.handlers import FinalCheckpoint, LossHistory, NaNGuard, SampleGridSaver, attach_resume
from common.engines.memory_format import to_channels_last
from common.errors import DataError
from common.losses.adversarial import GANObjective

logger = logging.getLogger(__name__)

GENERATOR_FILE = "generator.pt"
DONE_FILE = "training_done.json"


@dataclass
class GANRecipe:
    """How to build one GAN. Every field that makes an object is a zero-argument (or params) callable.

    In a bundle config these are ``{"_target_": ..., "_mode_": "callable"}`` components.
    """

    generator: Callable[[], nn.Module]
    discriminator: Callable[[], nn.Module]
    g_optimizer: Callable[[Any], torch.optim.Optimizer]
    d_optimizer: Callable[[Any], torch.optim.Optimizer]
    objective: GANObjective
    d_steps: int = 1
    ema_decay: float | None = None
    d_regularizer: Callable | None = None
    d_reg_interval: int = 16
    g_regularizer: Callable | None = None
    g_reg_interval: int = 4
    amp: bool = False

    @property
    def conditional(self) -> bool:
        return bool(self.objective.conditional)


def _loader(items, transforms, batch_size, num_workers, seed):
    gen = torch.Generator().manual_seed(seed)
    dataset = cached_dataset(items, transforms)
    # drop_last: a last batch of one image would break BatchNorm and skew D's statistics
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers, generator=gen
    )


def fit_gan(
    recipe: GANRecipe,
    items: Sequence[dict],
    transforms: Compose,
    output_dir: str,
    *,
    max_epochs: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_workers: int = 0,
    checkpoint_interval: int = 1,
    sample_interval: int = 1,
    resume: bool = True,
    repeats: int = 1,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tensorboard: bool = True,
    progress: bool = True,
    extra_handlers: Sequence | None = None,
) -> dict:
    """Train one GAN on ``items`` and write into ``output_dir``:

    ``checkpoints/checkpoint_epoch=N.pt`` (G, D, both optimisers, EMA, trainer state: the resume point),
    ``samples_epoch_NNNN.png``, ``train_log.csv``, ``tensorboard/``, and at the end ``generator.pt`` (the
    sampling generator's state dict, the EMA one when enabled) and ``training_done.json``.

    ``augment``: a batch augmentation (e.g. ``common.data.augment.ClassicAugmentation``) applied to every real
    batch on the device; ``repeats``: each image appears this many times per epoch, so with ``augment`` it is seen
    in that many variants (Frid-Adar trained the GANs on the classic-augmented training set).

    A run whose ``checkpoints/`` exist continues from the newest one (``resume=True``), so a killed run picks up
    where it stopped and a finished one returns at once.

    Returns ``{"generator": nn.Module (eval mode), "generator_file": str, "history": [...], "output_dir": str}``.
    """
    items = list(items) * max(1, int(repeats))
    if len(items) < 2:
        raise DataError(f"a GAN needs at least 2 training images, got {len(items)} (output_dir={output_dir})")
    out = Path(output_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)

    set_determinism(seed)
    transforms.set_random_state(seed=seed)
    if hasattr(augment, "set_random_state"):
        augment.set_random_state(seed)
    loader = _loader(items, transforms, min(batch_size, len(items)), num_workers, seed)

    generator = to_channels_last(recipe.generator().to(device))
    discriminator = to_channels_last(recipe.discriminator().to(device))
    g_opt = recipe.g_optimizer(generator.parameters())
    d_opt = recipe.d_optimizer(discriminator.parameters())

    trainer = GANTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=loader,
        generator=generator,
        discriminator=discriminator,
        g_optimizer=g_opt,
        d_optimizer=d_opt,
        objective=recipe.objective,
        d_steps=recipe.d_steps,
        d_regularizer=recipe.d_regularizer,
        d_reg_interval=recipe.d_reg_interval,
        g_regularizer=recipe.g_regularizer,
        g_reg_interval=recipe.g_reg_interval,
        ema_decay=recipe.ema_decay,
        amp=recipe.amp,
        prepare_batch=partial(prepare_gan_batch, augment=augment),
    )
    state = {"generator": generator, "discriminator": discriminator, "g_opt": g_opt, "d_opt": d_opt, "trainer": trainer}
    if trainer.g_ema is not None:
        state["g_ema"] = trainer.g_ema

    # order matters: resume first (on STARTED), epoch averages before the loggers read them
    if resume:
        attach_resume(trainer, str(ckpt_dir), state)
    LossHistory(str(out)).attach(trainer)
    NaNGuard(checkpoint_dir=str(ckpt_dir)).attach(trainer)
    StatsHandler(name="synthaug.gan", iteration_log=False, output_transform=lambda x: None).attach(trainer)
    if tensorboard:
        TensorBoardStatsHandler(
            log_dir=str(out / "tensorboard"), iteration_log=True, epoch_log=True, output_transform=lambda x: x
        ).attach(trainer)
    saver = CheckpointSaver(save_dir=str(ckpt_dir), save_dict=state, save_interval=checkpoint_interval, n_saved=2)
    saver.attach(trainer)
    FinalCheckpoint(str(ckpt_dir), state).attach(trainer)
    SampleGridSaver(str(out), interval=sample_interval).attach(trainer)
    if progress:
        ProgressBar(persist=False).attach(trainer, output_transform=lambda o: {"g": o["g_loss"], "d": o["d_loss"]})
    for handler in extra_handlers or ():
        handler.attach(trainer)

    trainer.run()

    sampler = trainer.sampling_generator().eval()
    gen_file = out / GENERATOR_FILE
    tmp = gen_file.with_name(f".{gen_file.name}.tmp-{os.getpid()}")
    torch.save(sampler.state_dict(), tmp)
    os.replace(tmp, gen_file)
    history = getattr(trainer.state, "history", [])
    (out / DONE_FILE).write_text(json.dumps({"epochs": trainer.state.epoch, "n_images": len(items)}, indent=1))
    return {"generator": sampler, "generator_file": str(gen_file), "history": history, "output_dir": str(out)}


def fit_gans(
    recipe: GANRecipe,
    items: Sequence[dict],
    transforms: Compose,
    output_dir: str,
    *,
    class_names: Sequence[str],
    per_class: bool,
    label_key: str = "label",
    **fit_kwargs,
) -> dict[str, str]:
    """Train the GAN(s) of a classification data set and return ``{model name: output folder}``.

    ``per_class=True`` trains one unconditional GAN per class in ``<output_dir>/<class name>/`` (Frid-Adar's
    DCGAN-per-class); ``per_class=False`` trains one conditional GAN in ``<output_dir>/conditional/``.
    """
    if per_class and recipe.conditional:
        raise ValueError("per_class=True needs an unconditional objective; use per_class=False for a conditional GAN")
    if not per_class and not recipe.conditional:
        raise ValueError("per_class=False needs a conditional objective (e.g. ACGANObjective)")
    folders: dict[str, str] = {}
    if per_class:
        for label, name in enumerate(class_names):
            subset = [it for it in items if int(it[label_key]) == label]
            if not subset:
                raise DataError(f"class '{name}' has no training images: cannot train its GAN")
            logger.info(f"training the GAN of class '{name}' on {len(subset)} images")
            folders[name] = fit_gan(recipe, subset, transforms, str(Path(output_dir) / name), **fit_kwargs)[
                "output_dir"
            ]
    else:
        folders["conditional"] = fit_gan(
            recipe, items, transforms, str(Path(output_dir) / "conditional"), **fit_kwargs
        )["output_dir"]
    return folders


def load_generators(recipe: GANRecipe, gan_dir: str, class_names: Sequence[str], device="cpu") -> dict[str, nn.Module]:
    """Load the generators that ``fit_gans`` wrote under ``gan_dir``: one per class, or ``{"conditional": G}``."""
    gan_dir = Path(gan_dir)
    folders = {"conditional": gan_dir / "conditional"} if recipe.conditional else {n: gan_dir / n for n in class_names}
    gens = {}
    for name, folder in folders.items():
        path = folder / GENERATOR_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no trained generator at '{path}': run the bundle's 'training' first or set 'gan_dir'"
            )
        gen = recipe.generator()
        gen.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        gens[name] = to_channels_last(gen.to(device)).eval()
    return gens
