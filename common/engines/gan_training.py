"""Train a GAN from a datalist with every handler a real run needs; the one path for bundles and protocols.

``GANRecipe`` describes *how to build* a GAN (callables, so that every fold or class gets fresh networks and
optimisers); ``gan_trainer`` builds the Ignite engine that trains one (a bundle's ``train#trainer``), ``fit_gan``
builds and runs it; ``fit_gans`` trains one per class (Frid-Adar's DCGAN-per-class)
or one conditional GAN over all classes (ACGAN); ``load_generators`` reads their final weights back
(``common.engines.generation`` turns them into synthetic data sets).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar
from monai.data import DataLoader
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler
from monai.transforms import Compose
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import DistributedSampler

from common.data.datasets import cached_dataset
from common.engines import distributed
from common.engines.gan_engine import GANTrainer, prepare_gan_batch
from common.engines.handlers import FinalCheckpoint, LossHistory, NaNGuard, RNGState, SampleGridSaver, attach_resume
from common.engines.memory_format import to_channels_last
from common.errors import DataError
from common.losses.adversarial import GANObjective

logger = logging.getLogger(__name__)

GENERATOR_FILE = "generator.pt"
DONE_FILE = "training_done.json"
#: with a budget in steps (``total_steps``), an epoch has at least this many (see ``epoch_padding``)
MIN_EPOCH_STEPS = 20


def epoch_padding(total_steps: int | None, privacy: Any = None) -> int:
    """``gan_dataloader``'s ``min_epoch_steps``: with a budget in steps, short epochs are padded to
    ``MIN_EPOCH_STEPS`` batches (every epoch pays the handlers, and a class of 50 images makes 1-2 steps); with a
    budget in epochs nothing is padded, and under privacy never (a repeated image would be clipped more than once
    per epoch)."""
    return MIN_EPOCH_STEPS if total_steps is not None and privacy is None else 1


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
    #: StyleGAN2-ADA: a zero-argument callable making the augmentation pipe (``common.data.ada.AdaptiveAugment``)
    #: that every image D sees goes through (reals and fakes, in D's, G's and R1's passes); None: no pipe
    augment_pipe: Callable[[], nn.Module] | None = None
    #: adapt the pipe's p towards this overfitting target r_t (ADA: 0.6); None keeps p fixed (required under DP)
    ada_target: float | None = None
    ada_interval: int = 4
    ada_speed_kimg: float = 500.0
    #: differential privacy: ``common.privacy.DPSGDDiscriminator`` (DP-SGD on D) or the SpineGAN paper's
    #: ``PaperNoiseThenClip`` ablation; None trains without
    privacy: Any = None

    @property
    def conditional(self) -> bool:
        return bool(self.objective.conditional)

    def trainer_kwargs(self) -> dict[str, Any]:
        """The ``GANTrainer`` arguments this recipe fixes (objective, D steps, regularisers, EMA, AMP)."""
        return {
            "objective": self.objective, "d_steps": self.d_steps, "d_regularizer": self.d_regularizer,
            "d_reg_interval": self.d_reg_interval, "g_regularizer": self.g_regularizer,
            "g_reg_interval": self.g_reg_interval, "ema_decay": self.ema_decay, "amp": self.amp,
        }  # fmt: skip


class GANDataLoader(DataLoader):
    """The loader of a GAN's real images (``gan_dataloader``); it keeps the item list it serves (after repeats), which
    the run's outputs report (image count, the patients the GAN saw)."""

    def __init__(self, items: Sequence[dict], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.items = list(items)


def gan_dataloader(
    items: Sequence[dict],
    transforms: Compose,
    *,
    batch_size: int,
    seed: int = 0,
    num_workers: int = 0,
    repeats: int = 1,
    min_epoch_steps: int = 1,
    keys: Sequence[str] | None = ("image", "label"),
) -> GANDataLoader:
    """The loader a GAN trains from (a bundle's ``train#dataloader``; ``gan_trainer`` builds the same one when it is
    given none): ``items`` through ``transforms``, each image ``repeats`` times per epoch, the list repeated further
    until an epoch has at least ``min_epoch_steps`` batches (``epoch_padding``); ``keys``: the item keys the
    transforms need (None keeps every key).

    Shuffled with a stateless, epoch-seeded sampler (seed + epoch), so that a resumed run shuffles exactly as an
    uninterrupted one; the last incomplete batch is dropped (a batch of one image breaks BatchNorm)."""
    items = list(items) * max(1, int(repeats))
    if len(items) < 2:
        raise DataError(f"a GAN needs at least 2 training images, got {len(items)}")
    per_epoch = max(1, len(items) // min(int(batch_size), len(items)))
    if per_epoch < int(min_epoch_steps):
        items = items * math.ceil(int(min_epoch_steps) / per_epoch)
    batch_size = min(int(batch_size), len(items))
    gen = torch.Generator().manual_seed(seed)  # the workers' base seed (their random transforms): in RNGState
    dataset = cached_dataset(items, transforms, keys=keys)
    # The shuffle of epoch e is seeded with seed + e (set_epoch in gan_trainer), on one rank as on several (each its
    # own shard): a stateless shuffle that a resumed run repeats exactly. torch's RandomSampler would draw one more
    # permutation from its generator when Ignite finishes off the previous epoch's exhausted iterator, at the start
    # of the next epoch: after the checkpoint, so a run resumed there would shuffle differently.
    if distributed.is_distributed():
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
        return GANDataLoader(
            items, dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers
        )
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    return GANDataLoader(
        items, dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers, generator=gen
    )


def gan_trainer(
    recipe: GANRecipe,
    items: Sequence[dict],
    transforms: Compose,
    output_dir: str,
    *,
    max_epochs: int,
    batch_size: int | None = None,
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
    train_handlers: Sequence | None = None,
    prepare_batch: Callable | None = None,
    sample_saver: Any | None = None,
    dataset_keys: Sequence[str] | None = ("image", "label"),
    total_steps: int | None = None,
    log_interval: int = 10,
    train_data_loader: DataLoader | None = None,
) -> GANTrainer:
    """The Ignite engine (a ``GANTrainer``) that trains one GAN on ``items``, every handler attached: ``.run()`` it
    (``fit_gan`` does, and so does a bundle's ``training``: ``train#trainer`` is this engine). It writes into
    ``output_dir``:

    ``checkpoints/checkpoint_epoch=N.pt`` (G, D, both optimisers, EMA, trainer state, RNG states: the resume point),
    ``samples_epoch_NNNN.png``, ``train_log.csv``, ``tensorboard/``, and at the end ``generator.pt`` (the
    sampling generator's state dict, the EMA one when enabled) and ``training_done.json``: ``GANRunOutputs``, the
    last ``Events.COMPLETED`` handler, writes those and leaves ``fit_gan``'s result dict in ``engine.state.result``.

    ``train_handlers``: more handlers (e.g. a bundle's ``train#handlers``: MLflow, a clock), attached on rank 0
    after the loggers and before the checkpoint saver (so that they see the epoch's averaged metrics and the
    checkpoint stays the last thing an epoch does). ``max_epochs`` is fixed here (with ``total_steps`` it is
    computed, and the privacy engine plans its noise for it): set it when building the engine, not on its state.

    ``augment``: a batch augmentation (e.g. ``common.data.augment.ClassicAugmentation``) applied to every real
    batch on the device; ``repeats``: each image appears this many times per epoch, so with ``augment`` it is seen
    in that many variants (Frid-Adar trained the GANs on the classic-augmented training set).

    Paired GANs (pix2pix) pass their own ``prepare_batch`` (``(batch, device, non_blocking) -> (reals,
    condition)``), a ``sample_saver`` handler (default: ``SampleGridSaver`` of latent samples) and the item keys
    their transforms need (``dataset_keys``; None keeps every key).

    ``train_data_loader``: the loader of real images (a bundle's ``train#dataloader``, made by ``gan_dataloader``);
    None builds that same loader from ``items``, ``transforms``, ``batch_size``, ``repeats``, ``num_workers`` and
    ``dataset_keys``. ``items`` is still needed (the unrepeated training items: the objective's ``prepare``, the
    privacy unit). Under DP the loader must serve each item once per epoch; the privacy engine swaps it for its
    Poisson-sampled one.

    ``log_interval``: the engine's losses are device tensors, and reading one is a device sync; the per-iteration
    readers read them every ``log_interval`` iterations (TensorBoard's iteration scalars, the progress bar, the NaN
    guard, which also checks at each epoch's end, before the checkpoint). ``train_log.csv`` averages every step.

    ``total_steps``: when set, train for about this many generator steps instead of ``max_epochs`` (the epochs are
    ``ceil(total_steps / batches per epoch)``): a budget in steps means the same work for a class of 60 images as
    for one of 600, which epochs do not.

    A run whose ``checkpoints/`` exist continues from the newest one (``resume=True``), so a killed run picks up
    where it stopped and a finished one returns at once. Checkpoints hold every random stream (``RNGState``), so a run
    killed at any point (mid-epoch too: it resumes from the last epoch checkpoint) and resumed ends bit-identical,
    on CPU, to one never stopped; the secret streams of DP are never saved and never replayed.

    StyleGAN2-ADA / DP (``recipe.augment_pipe``, ``recipe.privacy``): an objective with a ``prepare(items=...,
    transforms=..., output_dir=..., device=..., seed=...)`` method gets the (unrepeated) training items first (the
    SpineGAN clinical loss trains its classifier there); the privacy engine replaces D, its optimiser and the
    loader, wraps G's step (``generator_step_context``) and writes ``privacy.json`` (epsilon, delta) at the end.

    ``engine.state.result`` after the run: ``{"generator": nn.Module (eval mode), "discriminator": the trained D
    (Opacus-wrapped under DP), "generator_file": str, "history": [...], "output_dir": str}`` (plus ``"privacy"``: the
    privacy summary, when ``recipe.privacy`` is set).
    """
    unique_items = list(items)
    privacy = getattr(recipe, "privacy", None)
    if getattr(privacy, "formal_guarantee", False) and int(repeats) != 1:
        raise ValueError(f"privacy: repeats must be 1 (a repeated image is clipped more than once), got {repeats}")
    out = Path(output_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)

    set_determinism(seed)
    transforms.set_random_state(seed=seed)
    if hasattr(augment, "set_random_state"):
        augment.set_random_state(seed)
    if total_steps is not None and int(total_steps) < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if train_data_loader is None:
        if batch_size is None:
            raise ValueError("gan_trainer: pass batch_size, or a train_data_loader")
        try:
            loader = gan_dataloader(
                unique_items, transforms, batch_size=batch_size, seed=seed, num_workers=num_workers, repeats=repeats,
                min_epoch_steps=epoch_padding(total_steps, privacy), keys=dataset_keys,
            )  # fmt: skip
        except DataError as err:  # name the run: a per-class bundle trains several GANs
            raise DataError(f"{err} (output_dir={output_dir})") from None
    else:
        loader = train_data_loader
        dataset = getattr(loader.dataset, "dataset", loader.dataset)  # a Subset when images repeat
        if getattr(dataset, "transform", transforms) is not transforms:
            # the run seeds `transforms` (above) and saves its random state in every checkpoint: a loader running
            # other transforms would draw from an unseeded stream, and a resume would not be exact
            raise ValueError("train_data_loader must apply the `transforms` passed to gan_trainer (the same object)")
        if privacy is not None and len(loader.dataset) != len(unique_items):
            raise ValueError(
                f"privacy: train_data_loader serves {len(loader.dataset)} images for {len(unique_items)} training "
                "items; under DP each image is sampled once per epoch (repeats 1, min_epoch_steps 1)"
            )
        if batch_size is not None and int(batch_size) != int(loader.batch_size):
            raise ValueError(
                f"batch_size {batch_size} given beside a train_data_loader of batch size {loader.batch_size}: the "
                "loader decides it (in a bundle: train#dataloader#batch_size, or --batch_size)"
            )
        batch_size = int(loader.batch_size)
    items = list(getattr(loader, "items", unique_items))
    loader_batch_size = int(loader.batch_size)  # before DP swaps in its Poisson loader (which has none)
    if total_steps is not None:
        max_epochs = max(1, math.ceil(int(total_steps) / max(1, len(loader))))

    generator = to_channels_last(recipe.generator().to(device))
    discriminator = to_channels_last(recipe.discriminator().to(device))
    rank0 = distributed.is_rank0()
    if distributed.is_distributed():
        distributed.sync_ignite()
        distributed.broadcast_module(generator)  # identical start on every rank
        distributed.broadcast_module(discriminator)
        torch.manual_seed(seed + 1000 * distributed.rank())  # but each rank draws its own latents
    g_opt = recipe.g_optimizer(generator.parameters())
    d_opt = recipe.d_optimizer(discriminator.parameters())
    if callable(getattr(recipe.objective, "prepare", None)):  # e.g. the SpineGAN clinical loss trains its classifier
        recipe.objective.prepare(
            items=unique_items, transforms=transforms, output_dir=str(out), device=device, seed=seed
        )
    for reg in (recipe.d_regularizer, recipe.g_regularizer):  # a recipe serves several GANs: fresh running stats
        if callable(getattr(reg, "reset", None)):
            reg.reset()
    augment_pipe = getattr(recipe, "augment_pipe", None)
    augment_pipe = augment_pipe().to(device) if augment_pipe is not None else None
    if hasattr(augment_pipe, "set_random_state"):
        augment_pipe.set_random_state(seed + 1)
    # every random stream the run draws from, found before the privacy engine swaps in its secret generators
    # (which a checkpoint must never hold); see RNGState for what keeps a resume exact
    rng_state = RNGState(
        transforms, augment, augment_pipe, recipe.objective, recipe.d_regularizer, recipe.g_regularizer,
        loader.generator, getattr(loader.sampler, "generator", None),
    )  # fmt: skip
    step_context = None
    if privacy is not None:
        if recipe.ada_target is not None and getattr(privacy, "formal_guarantee", False):
            raise ValueError("privacy: ADA's adaptive p is computed from D(real) and leaks; set ada_target to null")
        replaced = privacy.wrap(
            generator=generator, discriminator=discriminator, g_optimizer=g_opt, d_optimizer=d_opt, data_loader=loader,
            objective=recipe.objective, max_epochs=max_epochs, d_steps=recipe.d_steps,
            d_regularizer=recipe.d_regularizer,
        )  # fmt: skip
        discriminator = replaced.get("discriminator", discriminator)
        g_opt = replaced.get("g_optimizer", g_opt)
        d_opt = replaced.get("d_optimizer", d_opt)
        loader = replaced.get("data_loader", loader)
        step_context = privacy.generator_step_context

    trainer = GANTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=loader,
        generator=generator,
        discriminator=discriminator,
        g_optimizer=g_opt,
        d_optimizer=d_opt,
        **recipe.trainer_kwargs(),
        prepare_batch=prepare_batch or partial(prepare_gan_batch, augment=augment),
        augment_pipe=augment_pipe,
        generator_step_context=step_context,
    )
    state = {"generator": generator, "discriminator": discriminator, "g_opt": g_opt, "d_opt": d_opt, "trainer": trainer}
    if trainer.g_ema is not None:
        state["g_ema"] = trainer.g_ema
    ada_handler = None
    if augment_pipe is not None and recipe.ada_target is not None:
        from common.data.ada import AdaptiveAugmentHandler

        ada_handler = AdaptiveAugmentHandler(
            augment_pipe, recipe.ada_target, recipe.ada_interval, recipe.ada_speed_kimg, batch_size
        )
    # stateful extras resume too: ADA's p and its r_t count, the path-length running mean, the privacy accountant's
    # history, and every random stream (so that a resumed run ends bit-identical to an uninterrupted one)
    extras = {
        "augment_pipe": augment_pipe, "ada": ada_handler, "g_regularizer": recipe.g_regularizer, "privacy": privacy,
        "rng": rng_state,
    }  # fmt: skip
    for name, obj in extras.items():
        if obj is not None and callable(getattr(obj, "state_dict", None)) and hasattr(obj, "load_state_dict"):
            state[name] = obj

    run_outputs = GANRunOutputs(
        str(out), items=items, unique_items=unique_items, batch_size=loader_batch_size, privacy=privacy,
        rank0=rank0,
    )  # fmt: skip
    # order matters: the run's clock and the resume first (on STARTED), epoch averages before the loggers read them,
    # checkpoints last, the run's outputs after them (run_outputs.attach below)
    trainer.add_event_handler(Events.STARTED, run_outputs.start)
    if resume:  # checkpoints written before exact resume have no RNG state: they resume, not bit-identically
        attach_resume(trainer, str(ckpt_dir), state, optional=("rng", "ada"))
    if ada_handler is not None:  # before LossHistory, which logs ada_p
        ada_handler.attach(trainer)
    if privacy is not None and callable(getattr(privacy, "attach", None)):
        privacy.attach(trainer)
    # checks every log_interval steps and at the epoch's end, before the checkpoint below (see NaNGuard)
    NaNGuard(checkpoint_dir=str(ckpt_dir), interval=log_interval).attach(trainer)
    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: loader.sampler.set_epoch(e.state.epoch))
    elif callable(getattr(getattr(loader, "batch_sampler", None), "set_epoch", None)):  # DP: new shards each epoch
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: loader.batch_sampler.set_epoch(e.state.epoch))
    if rank0:  # only rank 0 writes: logs, checkpoints, sample grids (the other ranks hold the same weights)
        LossHistory(str(out)).attach(trainer)
        StatsHandler(name="synthaug.gan", iteration_log=False, output_transform=lambda x: None).attach(trainer)
        if tensorboard:
            # MONAI's writer calls .item() on each tensor: every log_interval iterations, not every step
            TensorBoardStatsHandler(
                log_dir=str(out / "tensorboard"), iteration_log=max(1, int(log_interval)), epoch_log=True,
                output_transform=lambda x: x,
            ).attach(trainer)  # fmt: skip
        (sample_saver or SampleGridSaver(str(out), interval=sample_interval)).attach(trainer)
        if progress:
            # under DP the output holds G's losses only (common.privacy.dp): show what is there
            # (Ignite's bar calls .item() on them: every log_interval iterations)
            ProgressBar(persist=False).attach(
                trainer,
                output_transform=lambda o: {k[0]: o[k] for k in ("g_loss", "d_loss") if k in o},
                event_name=Events.ITERATION_COMPLETED(every=max(1, int(log_interval))),
            )
        for handler in train_handlers or ():
            handler.attach(trainer)
        # the checkpoint is the last thing an epoch does: the random streams it saves are those the next epoch
        # starts from, even when a handler above draws from them (e.g. a sample grid of a generator with noise)
        saver = CheckpointSaver(save_dir=str(ckpt_dir), save_dict=state, save_interval=checkpoint_interval, n_saved=2)
        saver.attach(trainer)
        FinalCheckpoint(str(ckpt_dir), state).attach(trainer)

    # last of all on COMPLETED (after the final checkpoint and sample grid): generator.pt, training_done.json,
    # privacy.json and the result dict, as fit_gan wrote them after trainer.run()
    run_outputs.attach(trainer)
    return trainer


class GANRunOutputs:
    """What a GAN run leaves when it completes: ``generator.pt`` (the sampling generator, EMA when enabled),
    ``training_done.json`` (epochs, iterations, images, batch size, seconds, the patients the GAN saw),
    ``privacy.json`` under DP (rank 0 only), and ``engine.state.result``, the dict ``fit_gan`` returns.

    ``gan_trainer`` adds ``start`` as the first ``STARTED`` handler (the clock, before the resume) and ``attach``-es
    it last, so that on ``COMPLETED`` it runs after every other handler (the final checkpoint and sample grid) and
    writes what ``fit_gan`` wrote after ``trainer.run()``. It writes nothing when the run fails.
    """

    def __init__(
        self,
        output_dir: str,
        *,
        items: Sequence[dict],
        unique_items: Sequence[dict],
        batch_size: int,
        privacy: Any = None,
        rank0: bool = True,
    ) -> None:
        self.out = Path(output_dir)
        self.items, self.unique_items, self.batch_size = items, unique_items, batch_size
        self.privacy, self.rank0 = privacy, rank0
        self._started: float | None = None

    def attach(self, engine: GANTrainer) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def start(self, engine: GANTrainer) -> None:
        self._started = time.perf_counter()

    def __call__(self, trainer: GANTrainer) -> None:
        seconds = time.perf_counter() - (self._started or time.perf_counter())
        if distributed.is_distributed():
            logger.info(
                f"rank {distributed.rank()} of {distributed.world_size()}: {trainer.state.iteration} iterations, "
                f"{'writes the outputs' if self.rank0 else 'writes nothing'}"
            )
        out, items = self.out, self.items
        sampler = trainer.sampling_generator().eval()
        gen_file = out / GENERATOR_FILE
        if not self.rank0:
            trainer.state.result = {
                "generator": sampler, "discriminator": trainer.discriminator, "generator_file": str(gen_file),
                "history": [], "output_dir": str(out),
            }  # fmt: skip
            return
        tmp = gen_file.with_name(f".{gen_file.name}.tmp-{os.getpid()}")
        torch.save(sampler.state_dict(), tmp)
        os.replace(tmp, gen_file)
        history = getattr(trainer.state, "history", [])
        # iterations: the whole run's (a resumed trainer restores its count); seconds: this process's share
        done = {
            "epochs": trainer.state.epoch, "n_images": len(items), "iterations": trainer.state.iteration,
            "batch_size": self.batch_size, "seconds": round(seconds, 1),
            # who the GAN saw: the protocols' leakage tests compare this with each fold's test patients
            "patients": sorted({str(it["patient"]) for it in items if "patient" in it}),
        }  # fmt: skip
        result = {
            "generator": sampler, "discriminator": trainer.discriminator, "generator_file": str(gen_file),
            "history": history, "output_dir": str(out),
        }  # fmt: skip
        if self.privacy is not None:
            # the items let the summary state the privacy unit (the patient with the most images: group privacy)
            result["privacy"] = done["privacy"] = self.privacy.summary(items=self.unique_items)
            (out / "privacy.json").write_text(json.dumps(done["privacy"], indent=1))
        (out / DONE_FILE).write_text(json.dumps(done, indent=1))
        trainer.state.result = result


def fit_gan(
    recipe: GANRecipe,
    items: Sequence[dict],
    transforms: Compose,
    output_dir: str,
    *,
    extra_handlers: Sequence | None = None,
    **kwargs,
) -> dict:
    """Train one GAN: build its engine (``gan_trainer``, which documents every argument and output), run it, return
    ``engine.state.result`` (``{"generator", "discriminator", "generator_file", "history", "output_dir"}``, plus
    ``"privacy"`` under DP). ``extra_handlers``: ``gan_trainer``'s ``train_handlers``."""
    trainer = gan_trainer(recipe, items, transforms, output_dir, train_handlers=extra_handlers, **kwargs)
    trainer.run()
    return trainer.state.result


def fit_gans(
    recipe: GANRecipe,
    items: Sequence[dict],
    transforms: Compose,
    output_dir: str,
    *,
    class_names: Sequence[str],
    per_class: bool,
    label_key: str = "label",
    classes: Sequence[str] | None = None,
    **fit_kwargs,
) -> dict[str, str]:
    """Train the GAN(s) of a classification data set and return ``{model name: output folder}``.

    ``per_class=True`` trains one unconditional GAN per class in ``<output_dir>/<class name>/`` (Frid-Adar's
    DCGAN-per-class); ``per_class=False`` trains one conditional GAN in ``<output_dir>/conditional/``.
    ``classes`` (per-class GANs only): train only these classes' GANs (e.g. the minority classes that synthetic
    images are to balance); default all of ``class_names``.

    A recipe with a ``fit(items, transforms, output_dir, **fit_kwargs)`` method (a multi-stage GAN such as
    ``common.engines.LAPGANRecipe``) is trained by that method instead of ``fit_gan``.
    """

    def train(subset, folder):
        fit = getattr(recipe, "fit", None)
        return (
            fit(subset, transforms, folder, **fit_kwargs)
            if fit is not None
            else fit_gan(recipe, subset, transforms, folder, **fit_kwargs)
        )

    wanted = list(class_names) if classes is None else [str(c) for c in classes]
    unknown = [c for c in wanted if c not in class_names]
    if unknown:
        raise ValueError(f"classes {unknown} are not among class_names {list(class_names)}")
    if per_class and recipe.conditional:
        raise ValueError("per_class=True needs an unconditional objective; use per_class=False for a conditional GAN")
    if not per_class and not recipe.conditional:
        raise ValueError("per_class=False needs a conditional objective (e.g. ACGANObjective)")
    folders: dict[str, str] = {}
    if per_class:
        todo = [(label, name) for label, name in enumerate(class_names) if name in wanted]
        subsets = {name: [it for it in items if int(it[label_key]) == label] for label, name in todo}
        # the whole run's ETA: with a step budget every GAN costs the same; by epochs, in proportion to its images
        work = {n: 1.0 if fit_kwargs.get("total_steps") else float(len(s)) for n, s in subsets.items()}
        spent, done_work = 0.0, 0.0
        for k, (_, name) in enumerate(todo):
            subset = subsets[name]
            if not subset:
                raise DataError(f"class '{name}' has no training images: cannot train its GAN")
            logger.info(f"training the GAN of class '{name}' on {len(subset)} images ({k + 1} of {len(todo)})")
            started = time.perf_counter()
            folders[name] = train(subset, str(Path(output_dir) / name))["output_dir"]
            spent, done_work = spent + time.perf_counter() - started, done_work + work[name]
            left = sum(work[n] for _, n in todo[k + 1 :])
            if left:
                logger.info(
                    f"GAN {k + 1} of {len(todo)} done ({spent / 60:.1f} min so far); the other "
                    f"{len(todo) - k - 1}: about {spent / done_work * left / 60:.1f} min more"
                )
    else:
        folders["conditional"] = train(items, str(Path(output_dir) / "conditional"))["output_dir"]
    return folders


def load_generators(
    recipe: GANRecipe, gan_dir: str, class_names: Sequence[str], device="cpu", classes: Sequence[str] | None = None
) -> dict[str, nn.Module]:
    """Load the generators that ``fit_gans`` wrote under ``gan_dir``: one per class, or ``{"conditional": G}``.

    ``classes``: load only these classes' generators (those ``fit_gans(classes=...)`` trained); default all.
    """
    gan_dir = Path(gan_dir)
    names = list(class_names) if classes is None else [n for n in class_names if n in set(classes)]
    folders = {"conditional": gan_dir / "conditional"} if recipe.conditional else {n: gan_dir / n for n in names}
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
