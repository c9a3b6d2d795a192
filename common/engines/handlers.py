"""Ignite handlers the GAN and classifier trainers share: sample grids, NaN guard, loss history, resume."""

from __future__ import annotations

import csv
import glob
import logging
import math
import os
import re
import zipfile
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from common.viz import image_grid, save_png

logger = logging.getLogger(__name__)


class SampleGridSaver:
    """Write a PNG grid of generator samples from a fixed latent batch every ``interval`` epochs.

    The same latents (and, for a conditional G, ``per_class`` rows of each class) every time, so the grids show
    how training moves. Uses the EMA generator when the trainer has one.
    """

    def __init__(self, output_dir: str, n_samples: int = 16, per_class: int = 8, interval: int = 1, seed: int = 1234):
        self.output_dir = Path(output_dir)
        self.n_samples = n_samples
        self.per_class = per_class
        self.interval = max(1, int(interval))
        self.seed = seed

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    @torch.no_grad()
    def __call__(self, engine) -> None:
        gen = engine.sampling_generator()
        device = engine.state.device
        conditional = engine.objective.conditional and getattr(gen, "num_classes", 0) > 0
        labels = None
        if conditional:
            labels = torch.arange(gen.num_classes, device=device).repeat_interleave(self.per_class)
            n, nrow = len(labels), self.per_class
        else:
            n, nrow = self.n_samples, int(math.ceil(math.sqrt(self.n_samples)))
        rng = torch.Generator(device="cpu").manual_seed(self.seed)
        z = gen.sample_latent(n, device="cpu", generator=rng).to(device)
        was_training = gen.training
        gen.eval()
        # An objective whose generator needs more than z (e.g. a LAPGAN stage's image condition) makes the grid.
        custom = getattr(engine.objective, "grid_samples", None)
        fakes = custom(gen, z) if custom is not None else gen(z, labels) if labels is not None else gen(z)
        gen.train(was_training)
        if fakes is None:
            return
        save_png(self.output_dir / f"samples_epoch_{engine.state.epoch:04d}.png", image_grid(fakes, nrow=nrow))


class NaNGuard:
    """Stop training with one clear message when a loss becomes NaN or infinite.

    Raising (instead of Ignite's ``TerminateOnNan``, which ends the run as if it had finished) makes the bundle
    command fail visibly; checkpoints saved before the blow-up stay on disk for a resume with a lower lr.
    """

    def __init__(self, keys: tuple[str, ...] = ("g_loss", "d_loss"), checkpoint_dir: str | None = None):
        self.keys = keys
        self.checkpoint_dir = checkpoint_dir

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output or {}
        bad = {k: out[k] for k in self.keys if k in out and not math.isfinite(float(out[k]))}
        if bad:
            where = f"; the last good checkpoint is in {self.checkpoint_dir}" if self.checkpoint_dir else ""
            raise FloatingPointError(
                f"non-finite loss {bad} at epoch {engine.state.epoch}, iteration {engine.state.iteration}{where}"
            )


class LossHistory:
    """Average every scalar of ``engine.state.output`` over each epoch; keep it in ``engine.state.history`` and
    append it to ``<output_dir>/train_log.csv`` (appending, so a resumed run continues the same file)."""

    def __init__(self, output_dir: str | None = None, filename: str = "train_log.csv"):
        self.path = Path(output_dir) / filename if output_dir else None

    def attach(self, engine: Engine) -> None:
        engine.state.history = []
        self._sums: dict[str, float] = {}
        self._count = 0
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._flush)

    def _accumulate(self, engine: Engine) -> None:
        for k, v in (engine.state.output or {}).items():
            if isinstance(v, (int, float)):
                self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1

    def _flush(self, engine: Engine) -> None:
        row = {"epoch": engine.state.epoch, **{k: v / max(1, self._count) for k, v in self._sums.items()}}
        engine.state.history.append(row)
        engine.state.metrics.update({k: v for k, v in row.items() if k != "epoch"})
        self._sums, self._count = {}, 0
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


class FinalCheckpoint:
    """Save ``checkpoint_epoch=<last epoch>.pt`` when training *completes*, in the same format as MONAI's
    ``CheckpointSaver`` (a dict of state dicts), so that the resume point of a finished run is its last epoch even
    when the save interval does not divide ``max_epochs``. Unlike ``CheckpointSaver(save_final=True)`` it saves
    nothing when training stops on an exception: a diverged model must not become the resume point."""

    def __init__(self, save_dir: str, save_dict: dict, prefix: str = "checkpoint"):
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.prefix = prefix

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        path = self.save_dir / f"{self.prefix}_epoch={engine.state.epoch}.pt"
        if path.is_file():
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save({k: v.state_dict() for k, v in self.save_dict.items()}, tmp)
        os.replace(tmp, path)


def checkpoint_is_complete(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` archive. MONAI's ``CheckpointSaver`` writes in place (not
    atomically): a run killed while saving leaves a file without the zip directory ``torch.save`` writes last."""
    return zipfile.is_zipfile(path)


def latest_checkpoint(checkpoint_dir: str, prefix: str = "checkpoint", complete_only: bool = False) -> str | None:
    """The newest ``<prefix>_*.pt`` in ``checkpoint_dir`` by the epoch/iteration number in its name, else None.
    With ``complete_only``, the newest one that ``checkpoint_is_complete`` (a save cut short by a kill is skipped)."""
    files = glob.glob(os.path.join(checkpoint_dir, f"{prefix}_*.pt"))
    if not files:
        return None

    def number(path: str) -> int:
        found = re.findall(r"(\d+)", os.path.basename(path))
        return int(found[-1]) if found else -1

    if complete_only:
        files = sorted(files, key=number, reverse=True)
        for path in files:
            if checkpoint_is_complete(path):
                return path
            logger.warning(f"skipping the incomplete checkpoint {path} (a save cut short, e.g. by a kill)")
        return None
    return max(files, key=number)


def attach_resume(engine: Engine, checkpoint_dir: str, load_dict: dict, prefix: str = "checkpoint") -> str | None:
    """If a checkpoint exists in ``checkpoint_dir``, load it (networks, optimisers, EMA, trainer state) when the
    engine starts, so that a killed run continues from its last checkpoint. Returns the path it will load."""
    path = latest_checkpoint(checkpoint_dir, prefix, complete_only=True)
    if path is not None:
        logger.info(f"resuming from {path}")
        CheckpointLoader(load_path=path, load_dict=load_dict, map_location=engine.state.device).attach(engine)
    return path
