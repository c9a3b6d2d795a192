"""Training with several processes (gloo on CPU, as torchrun would launch on GPUs): both ranks step, their weights
stay identical, and only rank 0 writes."""

from __future__ import annotations

import json
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


def _dp_gan_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from monai.transforms import Compose

    from common.engines import fit_gan
    from common.engines.stylegan2 import stylegan2_recipe
    from common.privacy.dp import DPSGDDiscriminator

    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 16, 16, generator=g) * 2 - 1
    items = [{"image": x[i], "label": i % 2} for i in range(32)]
    tiny = {"image_size": 16, "channel_base": 128, "channel_max": 16, "latent_dim": 16, "w_dim": 16}
    dp = DPSGDDiscriminator(noise_multiplier=1.0, target_delta=1e-3)
    recipe = stylegan2_recipe(num_classes=2, batch_size=4, ema_kimg=0.1, ada_p=0.2, privacy=dp, **tiny)
    result = fit_gan(
        recipe, items, Compose([]), out, max_epochs=2, batch_size=4, seed=0, tensorboard=False, progress=False
    )
    weights = {"d": result["discriminator"].state_dict(), "g": result["generator"].state_dict()}
    torch.save({**weights, "privacy": dp.summary()}, os.path.join(os.path.dirname(out), f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_dp_training_on_two_ranks_is_one_mechanism_on_the_whole_data_set(tmp_path):
    """DP-SGD under torchrun: both ranks step in lockstep and end with identical D and G, only rank 0 writes, and the
    epsilon written is the PRV bound of (sigma, q, steps) with q the *global* rate (batch 4 x 2 ranks over 32)."""
    from common.privacy.dp import prv_epsilon

    out = tmp_path / "gan"
    mp.spawn(_dp_gan_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for net in ("d", "g"):  # D identical proves the noisy DP gradient was reduced once, not kept per rank
        for key in r0[net]:
            torch.testing.assert_close(r0[net][key], r1[net][key], rtol=0, atol=0, msg=f"{net}.{key} differs")
    assert r0["privacy"] == r1["privacy"], "every rank's accountant records the same steps"
    written = json.loads((out / "privacy.json").read_text())
    assert written["sample_rate"] == 0.25 and written["steps"] == 8  # 1 / q = 4 steps per epoch, 2 epochs
    assert written["epsilon"] == pytest.approx(prv_epsilon(1.0, 0.25, 8, 1e-3), rel=1e-6)
    log = (out / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2"], "one row per epoch: rank 1 wrote nothing"


def _dp_mechanism_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # the Poisson draws ignore it: each rank has its own secret generator
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from common.privacy.dp import DPSGDDiscriminator

    n, dim, batch = 64, 4096, 8
    dataset = TensorDataset(torch.zeros(n, dim), torch.arange(n))  # zero inputs: every clipped gradient is 0
    loader = DataLoader(dataset, batch_size=batch, sampler=DistributedSampler(dataset), drop_last=True)
    disc = torch.nn.Linear(dim, 1, bias=False)
    dp = DPSGDDiscriminator(noise_multiplier=1.0, max_grad_norm=1.0)
    objective = SimpleNamespace(joint_d_batch=True, fake_batch_size=batch)
    wrapped = dp.wrap(
        generator=None, discriminator=disc, g_optimizer=None, d_optimizer=torch.optim.SGD(disc.parameters(), lr=0.0),
        data_loader=loader, objective=objective, max_epochs=1,
    )  # fmt: skip
    module, opt, dp_loader = wrapped["discriminator"], wrapped["d_optimizer"], wrapped["data_loader"]
    drawn, grads = [], []
    for epoch in range(25):
        dp_loader.batch_sampler.set_epoch(epoch)
        for x, idx in dp_loader:
            opt.zero_grad()
            module(x).mean().backward()
            opt.step()
            grads.append(module._module.weight.grad.clone())
            drawn.append(idx.tolist())
    torch.save({"drawn": drawn, "grads": torch.stack(grads), "q": dp.sample_rate}, os.path.join(out, f"r{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_dp_on_two_ranks_adds_the_noise_once_and_poisson_samples_disjoint_shards(tmp_path):
    mp.spawn(_dp_mechanism_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in (0, 1))
    q, n = r0["q"], 64
    assert q == 0.25  # 32 images per rank / batch 8 = 4 steps per epoch: q = 1/4, the expected global batch 16
    # noise: after the all-reduce both ranks hold the same gradient, pure noise here, std sigma * C / (q * n); a
    # per-rank draw would give sqrt(2) times that, no noise on rank 0 would give 0
    torch.testing.assert_close(r0["grads"], r1["grads"], rtol=0, atol=0)
    std = r0["grads"].std().item()
    assert abs(std - 1.0 / (q * n)) < 0.03 / (q * n), f"noise std {std:.4f}, expected {1 / (q * n):.4f}"
    # sampling: in every step the ranks draw from disjoint shards, and the global batch is Poisson(q * n) on average
    sizes = []
    for a, b in zip(r0["drawn"], r1["drawn"], strict=True):
        assert not set(a) & set(b)
        sizes.append(len(a) + len(b))
    assert len(sizes) == 100 and abs(sum(sizes) / len(sizes) - q * n) < 1.5
    seen = {i for step in r0["drawn"] + r1["drawn"] for i in step}
    assert len(seen) == n, "over 25 epochs every image was drawn at some step"


@pytest.mark.slow
def test_torchrun_with_the_bundles_multi_gpu_config(tmp_path):
    configs = [str(CONFIGS / f"{n}.json") for n in ("train", "quick", "smoke", "multi_gpu_train")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "monai.bundle", "run", "training", "--config_file", str(configs), "--output_dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # quality_holdout 0: every case trains (the iteration counts below), no audit
    cmd += ["--max_epochs", "2", "--quality_holdout", "0"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert "rank 0 of 2: 8 iterations, writes the outputs" in text
    assert "rank 1 of 2: 8 iterations, writes nothing" in text
    log = (tmp_path / "gan" / "train_log.csv").read_text().splitlines()
    assert len(log) == 3 and (tmp_path / "gan" / "samples_epoch_0002.png").is_file()
    # train.json's finishing step ran once (rank 0): the generator as model_file, which inference reads
    assert (tmp_path / "model.pt").is_file()
    # and train.json's checks: an unknown key stops every rank before any work
    bad = subprocess.run(cmd + ["--max_epoch", "2"], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode != 0 and "max_epoch" in bad.stderr and "max_epochs" in bad.stderr
