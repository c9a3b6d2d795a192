"""Ignite handlers the GAN, classifier and segmenter trainers share: sample grids, NaN guard, loss history, the
validation-best weights, RNG state, resume."""

from __future__ import annotations

import csv
import glob
import logging
import math
import os
import random
import re
import types
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from common.engines.distributed import is_distributed, rank
from common.fs import atomic_path
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

    def __call__(self, engine) -> None:
        # a forked torch RNG: a generator that draws noise (StyleGAN2's noise inputs) must not move training's
        # streams, or the sample interval would change the trained weights (and an exact resume, see RNGState)
        device = torch.device(engine.state.device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            self._save(engine)

    @torch.no_grad()
    def _save(self, engine) -> None:
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

    When it checks: the engine's losses are tensors (``GANTrainer``), and testing one is a device sync, so the guard
    keeps each step's losses and tests them together (one ``isfinite`` reduction, one sync) every ``interval``
    iterations, at each epoch's end and when the run completes. A blow-up therefore stops the run at most
    ``interval - 1`` steps late, and always before the epoch's checkpoint, sample grid and ``train_log.csv`` row: the
    guard's epoch-end check runs before them, so attach it before those handlers (``fit_gan`` does). The message
    names the first iteration whose loss was not finite.
    """

    def __init__(
        self, keys: tuple[str, ...] = ("g_loss", "d_loss"), checkpoint_dir: str | None = None, interval: int = 1
    ) -> None:
        self.keys = keys
        self.checkpoint_dir = checkpoint_dir
        self.interval = max(1, int(interval))
        self._pending: list[tuple[int, int, dict[str, Any]]] = []  # (epoch, iteration, {key: loss}) since the check

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check)
        engine.add_event_handler(Events.COMPLETED, self.check)  # a run terminated mid-epoch

    def _record(self, engine: Engine) -> None:
        out = engine.state.output or {}
        losses = {k: out[k] for k in self.keys if k in out}
        if losses:
            self._pending.append((engine.state.epoch, engine.state.iteration, losses))
        if len(self._pending) >= self.interval:
            self.check(engine)

    def __call__(self, engine: Engine) -> None:
        """Record this step's losses and check them at once (what ``interval=1`` does at every step)."""
        self._record(engine)
        self.check(engine)

    def check(self, engine: Engine) -> None:
        """Test every loss recorded since the last check; raise ``FloatingPointError`` if one is not finite."""
        pending, self._pending = self._pending, []
        values = [v for _, _, losses in pending for v in losses.values()]
        tensors = [v.detach().reshape(()).float() for v in values if isinstance(v, torch.Tensor)]
        finite = all(math.isfinite(float(v)) for v in values if not isinstance(v, torch.Tensor))
        if finite and (not tensors or bool(torch.stack(tensors).isfinite().all())):  # the one sync
            return
        for epoch, iteration, losses in pending:  # the run is over: find the first bad step, syncs do not matter
            bad = {k: float(v) for k, v in losses.items() if not math.isfinite(float(v))}
            if bad:
                where = f"; the last good checkpoint is in {self.checkpoint_dir}" if self.checkpoint_dir else ""
                late = (
                    f" (seen at iteration {engine.state.iteration}: the guard checks every {self.interval} iterations)"
                    if engine.state.iteration != iteration
                    else ""
                )
                raise FloatingPointError(f"non-finite loss {bad} at epoch {epoch}, iteration {iteration}{late}{where}")


class LossHistory:
    """Average every scalar of ``engine.state.output`` over each epoch; keep it in ``engine.state.history`` and
    append it to ``<output_dir>/train_log.csv`` (appending, so a resumed run continues the same file).

    Scalars are Python numbers and 0-dim tensors. Tensors are summed where they live, in float64 (the sum of the
    float32 losses is then exactly the one Python floats gave), and turned into floats once, at the epoch's end: no
    device sync per step."""

    def __init__(self, output_dir: str | None = None, filename: str = "train_log.csv"):
        self.path = Path(output_dir) / filename if output_dir else None

    def attach(self, engine: Engine) -> None:
        engine.state.history = []
        self._sums: dict[str, float | torch.Tensor] = {}
        self._count = 0
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._flush)

    def _accumulate(self, engine: Engine) -> None:
        for k, v in (engine.state.output or {}).items():
            if isinstance(v, torch.Tensor):
                if v.dim() != 0:
                    continue
                v = v.detach().double()
            elif isinstance(v, (int, float)):
                v = float(v)
            else:
                continue
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1

    def _flush(self, engine: Engine) -> None:
        row = {"epoch": engine.state.epoch, **{k: float(v) / max(1, self._count) for k, v in self._sums.items()}}
        engine.state.history.append(row)
        engine.state.metrics.update({k: v for k, v in row.items() if k != "epoch"})
        self._sums, self._count = {}, 0
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the columns are the file's header, not this row's key order: an epoch whose first step runs a lazy
        # regulariser (R1 every 16 steps) reports its keys in another order, and a key can first appear later
        header: list[str] = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), [])
        missing = [k for k in row if k not in header]
        if missing and header:  # a new column: rewrite the (small) file with it, old rows empty there
            with open(self.path, newline="") as f:
                old_rows = list(csv.DictReader(f))
            header += missing
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header, restval="")
                writer.writeheader()
                writer.writerows(old_rows)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header or list(row), restval="")
            if not header:
                writer.writeheader()
            writer.writerow(row)


class BestWeights:
    """The validation-best weights of a supervised run, kept as ``<out>/best_model.pt``.

    ``attach(evaluator)`` saves the network whenever the evaluator's key metric improves (MONAI ``CheckpointSaver``;
    a tie keeps the earlier epoch). ``restore(evaluator)`` after training loads them back into the network; when no
    validation epoch ran (``max_epochs < val_interval``) it keeps the last weights, writes them to the same file and
    says so. It returns what the trainers return: the network in eval mode, the file, the best metric and epoch.
    """

    def __init__(self, out: str | os.PathLike, network: torch.nn.Module) -> None:
        self.file, self.network = Path(out) / "best_model.pt", network

    def attach(self, evaluator: Engine) -> None:
        CheckpointSaver(
            save_dir=str(self.file.parent),
            save_dict={"network": self.network},
            save_key_metric=True,
            key_metric_filename=self.file.name,
            key_metric_greater_or_equal=False,
        ).attach(evaluator)

    def restore(self, evaluator: Engine, device: torch.device | str | None = None) -> dict[str, Any]:
        if self.file.is_file():
            self.network.load_state_dict(torch.load(self.file, map_location=device, weights_only=True))
        else:
            logger.warning("no validation epoch ran: keeping the last weights")
            with atomic_path(self.file) as tmp:
                torch.save(self.network.state_dict(), tmp)
        return {
            "network": self.network.eval(),
            "model_file": str(self.file),
            "best_metric": float(evaluator.state.best_metric),
            "best_epoch": int(evaluator.state.best_metric_epoch),
        }


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


#: what ``RNGState`` finds and restores besides the global streams
RandomStream = torch.Generator | np.random.RandomState | np.random.Generator | random.Random
_LEAVES = (
    torch.Tensor, np.ndarray, str, bytes, int, float, complex, bool, type, types.ModuleType, torch.device,
    logging.Logger,  # a logger leads to every logger of the process, none of them a training stream
)  # fmt: skip


def _find_streams(obj: Any, found: list, seen: set[int], depth: int = 0) -> None:
    """Append every random stream reachable from ``obj`` (attributes, containers, sub-modules) to ``found``, in a
    fixed order (attribute order is construction order), each once."""
    if obj is None or depth > 16 or id(obj) in seen or isinstance(obj, _LEAVES):
        return
    seen.add(id(obj))
    if isinstance(obj, (torch.Generator, np.random.RandomState, np.random.Generator, random.Random)):
        found.append(obj)
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.values())
    else:
        children = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    for child in children:
        _find_streams(child, found, seen, depth + 1)


def _portable(value: Any) -> Any:
    """A NumPy state (arrays inside dicts/tuples) as tensors and plain values, which ``torch.load(weights_only=True)``
    (MONAI's ``CheckpointLoader``) reads back; ``_numpy`` undoes it."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(value.astype(np.int64)), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _numpy(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].cpu().numpy().astype(value["dtype"])
        return {k: _numpy(v) for k, v in value.items()}
    return value


def _get_stream(stream: RandomStream) -> tuple[str, Any]:
    if isinstance(stream, torch.Generator):
        return "torch", stream.get_state()
    if isinstance(stream, np.random.RandomState):
        return "numpy", _portable(stream.get_state(legacy=False))
    if isinstance(stream, np.random.Generator):
        return "numpy_generator", _portable(stream.bit_generator.state)
    return "python", stream.getstate()


def _set_stream(stream: RandomStream, state: Any) -> None:
    if isinstance(stream, torch.Generator):
        stream.set_state(state.cpu())  # MONAI's loader maps every tensor to the training device
    elif isinstance(stream, np.random.RandomState):
        stream.set_state(_numpy(state))
    elif isinstance(stream, np.random.Generator):
        stream.bit_generator.state = _numpy(state)
    else:
        stream.setstate(_python_state(state))


def _python_state(state: Any) -> tuple:
    """``random.setstate`` wants the nested tuples ``getstate`` gave (a checkpoint may hand back lists)."""
    version, internal, gauss = state
    return int(version), tuple(int(x) for x in internal), gauss


class RNGState:
    """Every random stream a training run draws from, as one object a checkpoint holds (``state_dict`` /
    ``load_state_dict``), so that a resumed run continues each stream where the checkpoint left it instead of
    replaying the first epoch's draws: resumed and uninterrupted runs end bit-identical on CPU with the same seed.

    The streams: Python's ``random``, NumPy's global ``RandomState``, torch's CPU generator and, once CUDA is
    initialised, every CUDA device's; and the private streams found in ``sources`` when the object is built: any
    ``torch.Generator``, NumPy ``RandomState``/``Generator`` or ``random.Random`` reachable through their
    attributes, containers and sub-modules. Pass the training transforms (each MONAI ``Randomizable`` draws from its
    own ``self.R``, a ``Compose`` too), batch augmentations and augmentation pipes (their ``generator``) and the data
    loader's generator (the workers' base seed; the shuffle's, when the sampler draws from it).

    The streams are the *objects* found at construction: a stream swapped in later is not saved, on purpose. The
    privacy engine does that with the secret generators that protect private data (Poisson sampling, DP noise, the
    augmentation pipe under DP), which no checkpoint may hold and no resume may replay (see ``common.privacy``).

    Several ranks: rank 0 writes the checkpoint, every rank loads it; the other ranks then reseed their global torch
    stream from the restored one plus their rank, so that each keeps drawing its own latents.

    What the caller must keep, for the resume to be exact: nothing between the checkpoint save (the last
    ``EPOCH_COMPLETED`` handler) and the next epoch's first batch draws from a stream that the resumed run, which
    loads the checkpoint on ``STARTED``, would not draw from too; and the shuffle must not draw when the previous
    epoch's exhausted iterator is finished off (torch's ``RandomSampler`` does: ``fit_gan`` seeds its permutation
    with the epoch instead).
    """

    def __init__(self, *sources: Any) -> None:
        self.streams: list[RandomStream] = []
        seen: set[int] = set()
        for source in sources:
            _find_streams(source, self.streams, seen)

    def state_dict(self) -> dict:
        state = {
            "python": random.getstate(),
            "numpy": _portable(np.random.get_state(legacy=False)),
            "torch": torch.get_rng_state(),
            "streams": [_get_stream(s) for s in self.streams],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(_python_state(state["python"]))
        np.random.set_state(_numpy(state["numpy"]))
        torch.set_rng_state(state["torch"].cpu())
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        saved = state.get("streams", [])
        kinds = [_get_stream(s)[0] for s in self.streams]
        if [kind for kind, _ in saved] != kinds:
            logger.warning(
                f"the checkpoint holds {len(saved)} private random streams and this pipeline has {len(kinds)} "
                "(transforms or augmentations changed?): they start afresh, the resumed run is not bit-identical"
            )
        else:
            for stream, (_, value) in zip(self.streams, saved, strict=True):
                _set_stream(stream, value)
        if is_distributed() and rank() > 0:  # rank 0's stream, restored: make it this rank's own again
            base = int(torch.randint(2**62, (1,)))
            torch.manual_seed(base + 1000 * rank())


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


def attach_resume(
    engine: Engine, checkpoint_dir: str, load_dict: dict, prefix: str = "checkpoint", optional: Sequence[str] = ()
) -> str | None:
    """If a checkpoint exists in ``checkpoint_dir``, load it (networks, optimisers, EMA, trainer state, RNG state)
    when the engine starts, so that a killed run continues from its last checkpoint. Returns the path it will load.

    ``optional``: keys of ``load_dict`` that a checkpoint may lack (state added after it was written, e.g. ``rng``):
    those are skipped with a warning instead of failing the resume."""
    path = latest_checkpoint(checkpoint_dir, prefix, complete_only=True)
    if path is not None:
        logger.info(f"resuming from {path}")
        if optional:
            # mmap: reads the keys, not the tensors (MONAI's loader reads the file itself on STARTED)
            keys = set(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
            missing = [k for k in optional if k in load_dict and k not in keys]
            if missing:
                logger.warning(f"{path} has no {missing} (written by an older version): the resume is not exact")
                load_dict = {k: v for k, v in load_dict.items() if k not in missing}
        CheckpointLoader(load_path=path, load_dict=load_dict, map_location=engine.state.device).attach(engine)
    return path
