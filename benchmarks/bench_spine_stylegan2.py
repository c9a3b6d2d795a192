"""Training speed of the spine_stylegan2 networks: G and D steps through our engine (plain, and with DP-SGD on D)
against a plain PyTorch loop of the same networks and losses.

One line per case: images/s, peak memory, ratio engine / plain. Each case runs in its own subprocess.

    python benchmarks/bench_spine_stylegan2.py                  # quick-size networks (64 px), CPU or CUDA
    python benchmarks/bench_spine_stylegan2.py --size paper     # the paper's 256-px networks (GPU advisable)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import benchmark_cli, case_result, plain, timed_epochs, timed_fit  # noqa: E402  (benchmarks/ is the script's folder)

SIZES = {
    "quick": {"image_size": 64, "latent_dim": 128, "w_dim": 128, "channel_base": 2048, "channel_max": 64},
    "paper": {"image_size": 256, "latent_dim": 512, "w_dim": 512, "channel_base": 16384, "channel_max": 512},
}


def run_case(case: str, size: str, n: int, batch: int, epochs: int, device: torch.device) -> dict:
    from monai.transforms import Compose

    from common.engines import fit_gan
    from common.engines.stylegan2 import stylegan2_recipe
    from common.privacy.dp import DPSGDDiscriminator

    torch.manual_seed(0)
    s = SIZES[size]
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, s["image_size"], s["image_size"], generator=g) * 2 - 1
    labels = torch.randint(0, 2, (n,), generator=g)
    items = [{"image": images[i], "label": int(labels[i])} for i in range(n)]
    # no lazy regularisers, no ADA: the G and D steps themselves are timed
    common = dict(num_classes=2, batch_size=batch, r1_gamma=None, pl_weight=0, ada_target=None, ema_kimg=None, **s)
    if case in ("engine", "engine_dp"):
        privacy = DPSGDDiscriminator(noise_multiplier=1.0, target_delta=1e-5) if case == "engine_dp" else None
        recipe = stylegan2_recipe(**common, privacy=privacy)

        def train(out: str, n_epochs: int) -> None:
            fit_gan(recipe, items, Compose([]), out, max_epochs=n_epochs, batch_size=batch, device=device,
                    tensorboard=False, progress=False, sample_interval=10**6, checkpoint_interval=10**6)  # fmt: skip

        t = timed_fit(train, tempfile.mkdtemp(), epochs)
    elif case == "plain":
        recipe = stylegan2_recipe(**common)
        G, D = plain(recipe.generator(), device), plain(recipe.discriminator(), device)
        og, od = recipe.g_optimizer(G.parameters()), recipe.d_optimizer(D.parameters())

        def epoch():
            perm = torch.randperm(n)
            for i in range(0, n - batch + 1, batch):
                x, c = plain(images[perm[i : i + batch]], device), labels[perm[i : i + batch]].to(device)
                fc = torch.randint(0, 2, (batch,), device=device)
                with torch.no_grad():
                    f = G(G.sample_latent(batch, device=device), fc)
                ld = F.softplus(-D(x, c)).mean() + F.softplus(D(f, fc)).mean()
                od.zero_grad(set_to_none=True)
                ld.backward()
                od.step()
                lg = F.softplus(-D(G(G.sample_latent(batch, device=device), fc), fc)).mean()
                og.zero_grad(set_to_none=True)
                lg.backward()
                og.step()
                od.zero_grad(set_to_none=True)

        t = timed_epochs(epoch, epochs)
    else:
        raise ValueError(case)
    return case_result(case, n * epochs, t, device)


def main() -> None:
    parsed = benchmark_cli(
        __file__,
        __doc__,
        SIZES,
        run_case,
        ("plain", "engine", "engine_dp"),
        size="quick",
        n=128,
        n_help="real images per epoch",
        batch=16,
        epochs=2,
    )
    if parsed is None:  # ran one case, in its own subprocess
        return
    args, device, results = parsed
    print(f"# spine_stylegan2, size={args.size}, device={device}, n={args.n}, batch={args.batch}, epochs={args.epochs}")
    print("# images/s = real images per second through one D step + one G step (no lazy regularisers, no ADA)")
    plain = results["plain"]["images_per_s"]
    for r in results.values():
        ratio = r["images_per_s"] / plain
        print(f"{r['case']:<10} {r['images_per_s']:9.1f} images/s  peak {r['peak_mb']:8.1f} MB  x{ratio:.2f} vs plain")


if __name__ == "__main__":
    main()
