"""The GAN engine keeps its losses as tensors and syncs only where a value is read (issue 13: throughput).

``GANTrainer`` returns detached loss tensors; ``LossHistory`` (epoch averages, ``train_log.csv``), ``NaNGuard``
(every ``interval`` steps and at each epoch's end) and ADA's heuristic accumulate them on the device. The numbers
written to ``train_log.csv`` must not change: ``data/train_log_reference.json`` holds those of the tiny runs below,
written by the engine that turned every loss into a float at every step (``python tests/engines/test_loss_sync.py``
rewrites it; do that only on purpose).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.transforms import Compose

from common.engines import GANRecipe, GANTrainer, fit_gan
from common.engines.handlers import LossHistory, NaNGuard
from common.engines.recipes import efficient_recipe
from common.losses import ACGANObjective, BCEObjective
from common.networks import DCGANDiscriminator, DCGANGenerator

REFERENCE = Path(__file__).with_name("data") / "train_log_reference.json"


def _items(n, size=16, classes=2):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, size, size, generator=g) * 2 - 1, "label": i % classes} for i in range(n)]


def _nets(conditional: bool, batch_norm: bool = True):
    k = 2 if conditional else 0
    gen = partial(DCGANGenerator, latent_dim=8, image_size=16, channels=(16, 8), num_classes=k)
    no_norm = {} if batch_norm else {"norm": None}  # R1's per-sample gradients: no BatchNorm in D
    return gen, partial(DCGANDiscriminator, image_size=16, channels=(8, 16), num_classes=k, **no_norm)


def _bce_recipe():
    gen, disc = _nets(False)
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    return GANRecipe(gen, disc, adam, adam, BCEObjective())


def _efficient_recipe():
    # ACGAN + R1 every 2 steps + EMA + ADA (interval 4 spans epochs of 6 steps; fast enough that p moves)
    gen, disc = _nets(True, batch_norm=False)
    return efficient_recipe(
        gen, disc, ACGANObjective(), batch_size=4, r1_interval=2, ema_kimg=0.01, ada_target=0.6, ada_speed_kimg=0.05
    )


#: name -> (recipe factory, number of items, epochs)
RUNS = {"bce": (_bce_recipe, 12, 2), "acgan_r1_ema_ada": (_efficient_recipe, 24, 3)}


def _train_log(name: str, out: Path) -> list[dict[str, float]]:
    make, n, epochs = RUNS[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference was written with one thread: keep the kernels' summation order
    try:
        fit_gan(make(), _items(n), Compose([]), str(out), max_epochs=epochs, batch_size=4, seed=0,
                tensorboard=False, progress=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    with open(out / "train_log.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_train_log_matches_the_float_per_step_reference(tmp_path, name):
    reference = json.loads(REFERENCE.read_text())
    if reference["torch"].split("+")[0].rsplit(".", 1)[0] != torch.__version__.split("+")[0].rsplit(".", 1)[0]:
        pytest.skip(f"reference written with torch {reference['torch']}, this is {torch.__version__}")
    rows = _train_log(name, tmp_path)
    expected = reference["runs"][name]
    assert [list(r) for r in rows] == [list(r) for r in expected], "same columns, same order"
    for row, want in zip(rows, expected, strict=True):
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-12), f"epoch {want['epoch']}: {key}"


def _trainer(steps: int, objective=None, loader_batches=None):
    torch.manual_seed(0)
    gen, disc = _nets(False)
    g, d = gen(), disc()
    reals = torch.rand(4, 1, 16, 16) * 2 - 1
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    batches = loader_batches or [{"image": reals}] * steps
    return GANTrainer("cpu", 1, batches, g, d, adam(g.parameters()), adam(d.parameters()), objective or BCEObjective())


def test_the_engine_output_holds_detached_tensors():
    trainer = _trainer(3)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    trainer.run()
    assert len(seen) == 3
    for out in seen:
        assert {"loss", "g_loss", "d_loss", "d_real", "d_fake"} <= set(out)
        for key, value in out.items():
            assert isinstance(value, torch.Tensor) and value.dim() == 0, f"{key}: {type(value)}"
            assert not value.requires_grad and value.grad_fn is None, f"{key} keeps its graph"


def test_no_float_per_step(monkeypatch):
    """A whole logged epoch (engine, NaN guard, epoch averages) turns tensors into Python numbers a handful of
    times, not once per loss per step as the float-per-step engine did (4 losses x 24 steps here)."""
    syncs = []
    torch_dir = str(Path(torch.__file__).parent)
    for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if not caller.startswith(torch_dir):  # torch's own (Adam's step count on CPU) is not ours to count
                syncs.append(f"{_name} in {caller}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    steps = 24
    trainer = _trainer(steps)
    NaNGuard(interval=12).attach(trainer)
    LossHistory().attach(trainer)
    trainer.run()
    keys = len(trainer.state.output)
    # LossHistory: one float per key at the epoch's end; NaNGuard: one check every 12 steps and one at the end
    assert len(syncs) <= keys + steps // 12 + 1, f"{len(syncs)} syncs in {steps} steps: {sorted(set(syncs))}"
    assert set(trainer.state.history[0]) >= {"g_loss", "d_loss", "loss"}
    assert all(type(v) in (int, float) for v in trainer.state.history[0].values()), "the history holds numbers"


def test_amp_is_bf16_autocast_on_the_cpu_too():
    dtypes = []

    class Recording(BCEObjective):
        def g_loss(self, gen, disc, reals, labels):
            dtypes.append(gen(gen.sample_latent(2, reals.device)).dtype)
            return super().g_loss(gen, disc, reals, labels)

    trainer = _trainer(2, objective=Recording())
    trainer.use_amp = True
    trainer.run()
    assert dtypes == [torch.bfloat16] * 2 and math.isfinite(float(trainer.state.output["g_loss"]))
    trainer = GANTrainer("cpu", 1, [], *[torch.nn.Linear(1, 1)] * 2, None, None, BCEObjective(), amp=True)
    assert trainer.use_amp, "amp is no longer CUDA-only"


class _NaNFrom(BCEObjective):
    """BCE whose D loss turns NaN from iteration ``start`` (1-based) on."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.start, self.calls = start, 0

    def d_loss(self, *args):
        out = super().d_loss(*args)
        self.calls += 1
        if self.calls >= self.start:
            out["d_loss"] = out["d_loss"] * float("nan")
        return out


@pytest.mark.parametrize("interval", [1, 8])
def test_nan_guard_stops_at_its_next_check_and_names_the_first_bad_step(interval):
    trainer = _trainer(20, objective=_NaNFrom(start=5))
    NaNGuard(interval=interval).attach(trainer)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \{.*'d_loss': nan\} at epoch 1, iteration 5\b"):
        trainer.run()
    assert trainer.state.iteration == max(5, interval), "stopped at the first check after the blow-up"


def test_nan_guard_checks_at_the_epoch_end_before_the_checkpoint(tmp_path):
    """A NaN in the last steps of an epoch, between two checks: the epoch-end check stops the run before the
    checkpoint of that epoch is written (so the last checkpoint on disk is a good one)."""
    recipe = _bce_recipe()
    recipe.objective = _NaNFrom(start=3)  # 3 steps per epoch: NaN at the epoch's last step
    with pytest.raises(FloatingPointError, match="non-finite loss .*d_loss.*epoch 1, iteration 3"):
        fit_gan(recipe, _items(12), Compose([]), str(tmp_path), max_epochs=2, batch_size=4,
                tensorboard=False, progress=False)  # fmt: skip
    assert not list((tmp_path / "checkpoints").glob("*.pt")), "no checkpoint of the diverged epoch"
    assert not (tmp_path / "train_log.csv").exists(), "no averages of NaN"


def _write_reference() -> None:
    import tempfile

    runs = {}
    for name in sorted(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            runs[name] = _train_log(name, Path(tmp))
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({"torch": torch.__version__, "runs": runs}, indent=1) + "\n")
    print(f"wrote {REFERENCE}: " + ", ".join(f"{k} ({len(v)} epochs)" for k, v in runs.items()))
    assert all(math.isfinite(v) for rows in runs.values() for row in rows for v in row.values())


if __name__ == "__main__":  # PYTHONPATH=. python tests/engines/test_loss_sync.py
    _write_reference()
