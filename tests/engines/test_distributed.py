"""Training with several processes (gloo on CPU, as torchrun would launch on GPUs): both ranks step, their weights
stay identical, and only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brain_pix2pix" / "configs"


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from monai.transforms import Compose

    from common.engines import GANRecipe, fit_gan
    from common.losses import BCEObjective
    from common.networks import DCGANDiscriminator, DCGANGenerator

    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.rand(1, 16, 16, generator=g) * 2 - 1, "label": 0} for _ in range(32)]
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    recipe = GANRecipe(
        partial(DCGANGenerator, latent_dim=8, image_size=16, channels=(16, 8)),
        partial(DCGANDiscriminator, image_size=16, channels=(8, 16)),
        adam,
        adam,
        BCEObjective(),
    )
    result = fit_gan(
        recipe, items, Compose([]), out, max_epochs=2, batch_size=4, seed=0, tensorboard=False, progress=False
    )
    torch.save(result["generator"].state_dict(), os.path.join(os.path.dirname(out), f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_keep_identical_weights_and_only_rank0_writes(tmp_path):
    out = tmp_path / "gan"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=f"{key} differs between ranks")
    log = (out / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2"], "one row per epoch: rank 1 wrote nothing"
    assert (out / "generator.pt").is_file() and sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    # 32 images, 2 ranks, batch 4: 4 steps per rank and epoch
    state = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    assert state["trainer"]["iteration"] == 8


def _dp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from monai.transforms import Compose

    from common.engines import GANRecipe, fit_gan
    from common.losses import BCEObjective
    from common.networks import DCGANDiscriminator, DCGANGenerator
    from common.privacy.dp import DPSGDDiscriminator

    items = [{"image": torch.zeros(1, 16, 16), "label": 0} for _ in range(8)]
    adam = partial(torch.optim.Adam, lr=2e-4)
    recipe = GANRecipe(
        partial(DCGANGenerator, latent_dim=8, image_size=16, channels=(16, 8)),
        partial(DCGANDiscriminator, image_size=16, channels=(8, 16), norm=None),
        adam,
        adam,
        BCEObjective(),
        privacy=DPSGDDiscriminator(noise_multiplier=1.0),
    )
    try:
        fit_gan(recipe, items, Compose([]), out, max_epochs=1, batch_size=4, tensorboard=False, progress=False)
    except ValueError as exc:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"refused{rank}.txt").write_text(str(exc))
    dist.destroy_process_group()


def test_dp_training_refuses_several_ranks(tmp_path):
    """Each rank would Poisson-sample and add noise on its own: the accountant would not describe the result."""
    mp.spawn(_dp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "gan")), nprocs=2, join=True)
    for rank in (0, 1):
        assert "one process" in (tmp_path / "gan" / f"refused{rank}.txt").read_text()


@pytest.mark.slow
def test_torchrun_with_the_bundles_multi_gpu_config(tmp_path):
    configs = [str(CONFIGS / f"{n}.json") for n in ("train", "quick", "smoke", "multi_gpu_train")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "monai.bundle", "run", "training", "--config_file", str(configs), "--output_dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd + ["--max_epochs", "2"], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert "rank 0 of 2: 8 iterations, writes the outputs" in text
    assert "rank 1 of 2: 8 iterations, writes nothing" in text
    log = (tmp_path / "gan" / "train_log.csv").read_text().splitlines()
    assert len(log) == 3 and (tmp_path / "gan" / "samples_epoch_0002.png").is_file()
