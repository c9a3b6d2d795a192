"""Speed of the skin_melanogan generators (DCGAN, LAPGAN, DDGAN-like): our engines vs a plain PyTorch loop.

One line per case: training images/s through the shared engine (``fit_gan`` / ``LAPGANRecipe.fit``, with
checkpoints, logs and sample grids), the same steps in a plain loop (the objective's d_loss / g_loss and two Adam
steps, nothing else), their ratio, generation images/s, and peak memory (max RSS of this process on CPU, so it only
grows from case to case; max allocated on CUDA).

    OMP_NUM_THREADS=1 python benchmarks/bench_skin_melanogan.py                   # quick widths, 64 px
    python benchmarks/bench_skin_melanogan.py --resolution 256 --size paper       # the paper's scale (GPU)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import peak_mb  # noqa: E402  (benchmarks/ is the script's folder)

SIZES = {
    "quick": {"g": (128, 64, 32, 16), "d": (16, 32, 64, 128), "base": (64, 32, 16), "stage": (16, 16)},
    "paper": {"g": (1024, 512, 256, 128, 64), "d": (64, 128, 256, 512, 1024), "base": (512, 256, 128, 64),
              "stage": (128, 128, 128)},
}  # fmt: skip


def recipes(size: str, resolution: int) -> dict:
    from common.engines import GANRecipe, LAPGANRecipe
    from common.losses import BCEObjective, DeepPyramidObjective
    from common.networks import (
        DCGANDiscriminator,
        DCGANGenerator,
        LAPGANGenerator,
        MultiScaleDiscriminator,
        PyramidGenerator,
    )

    ch = SIZES[size]
    levels = 4 if resolution >= 256 else 3
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    g_ch = ch["g"][: len(ch["g"]) - (1 if resolution < 256 and size == "paper" else 0)]
    d_ch = ch["d"][: len(g_ch)]
    return {
        "dcgan": GANRecipe(
            partial(DCGANGenerator, out_channels=3, image_size=resolution, channels=g_ch),
            partial(DCGANDiscriminator, in_channels=3, image_size=resolution, channels=d_ch),
            adam, adam, BCEObjective(),
        ),
        "lapgan": LAPGANRecipe(
            partial(LAPGANGenerator, out_channels=3, image_size=resolution, levels=levels,
                    base_channels=ch["base"][: 4 if levels == 4 else 3], stage_channels=ch["stage"]),
            partial(DCGANDiscriminator, channels=d_ch[:3]),
            adam, adam,
        ),
        "ddgan": GANRecipe(
            partial(PyramidGenerator, out_channels=3, image_size=resolution, channels=g_ch, levels=levels),
            partial(MultiScaleDiscriminator, in_channels=3, image_size=resolution, levels=levels, channels=d_ch),
            adam, adam, DeepPyramidObjective(),
        ),
    }  # fmt: skip


def plain_loop(recipe, images: torch.Tensor, batch: int, epochs: int, device) -> float:
    """Images/s of the bare steps: every level of a LAPGAN, each on its own pyramid level, as the engine trains."""
    from common.engines.memory_format import to_channels_last
    from common.networks.lapgan import downsample

    level_recipes = (
        [recipe.level_recipe(k) for k in range(recipe.generator().levels)] if hasattr(recipe, "fit") else [recipe]
    )
    n_levels = len(level_recipes)
    start = time.perf_counter()
    seen = 0
    for k, r in enumerate(level_recipes):
        gen, disc = to_channels_last(r.generator().to(device)), to_channels_last(r.discriminator().to(device))
        g_opt, d_opt = r.g_optimizer(gen.parameters()), r.d_optimizer(disc.parameters())
        data = downsample(images, 2 ** (n_levels - 1 - k)).to(device)
        for _ in range(epochs):
            for i in range(0, len(data) - batch + 1, batch):
                reals = to_channels_last(data[i : i + batch])
                d_opt.zero_grad(set_to_none=True)
                r.objective.d_loss(gen, disc, reals, None)["d_loss"].backward()
                d_opt.step()
                g_opt.zero_grad(set_to_none=True)
                r.objective.g_loss(gen, disc, reals, None)["g_loss"].backward()
                g_opt.step()
                seen += batch
    return seen / n_levels / (time.perf_counter() - start)


def engine(recipe, images: torch.Tensor, batch: int, epochs: int, device) -> tuple[float, torch.nn.Module]:
    from monai.transforms import Compose

    from common.engines import fit_gan

    items = [{"image": images[i]} for i in range(len(images))]
    with tempfile.TemporaryDirectory() as out:
        kwargs = dict(max_epochs=epochs, batch_size=batch, device=device, progress=False, tensorboard=False)
        start = time.perf_counter()
        if hasattr(recipe, "fit"):
            result = recipe.fit(items, Compose([]), out, **kwargs)
        else:
            result = fit_gan(recipe, items, Compose([]), out, **kwargs)
        elapsed = time.perf_counter() - start
    return (len(images) // batch) * batch * epochs / elapsed, result["generator"]


@torch.no_grad()
def generation(gen: torch.nn.Module, n: int, batch: int, device) -> float:
    gen = gen.to(device).eval()
    start = time.perf_counter()
    for i in range(0, n, batch):
        gen(gen.sample_latent(min(batch, n - i), device=device))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="quick")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cases", default="dcgan,lapgan,ddgan")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = torch.rand(args.n, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    print(f"# device {device}, threads {torch.get_num_threads()}, {args.size} widths, {args.resolution} px, "
          f"{args.n} images, batch {args.batch}, {args.epochs} epochs (LAPGAN: per level)")  # fmt: skip
    all_recipes = recipes(args.size, args.resolution)
    for case in args.cases.split(","):
        recipe = all_recipes[case]
        plain_loop(recipe, images[: args.batch], args.batch, 1, device)  # warm-up
        plain = plain_loop(recipe, images, args.batch, args.epochs, device)
        ours, gen = engine(recipe, images, args.batch, args.epochs, device)
        gen_speed = generation(gen, 4 * args.batch, args.batch, device)
        print(
            f"{case:7s} train {ours:8.1f} img/s (plain loop {plain:8.1f}, ratio {ours / plain:.2f})  "
            f"generate {gen_speed:8.1f} img/s  peak {peak_mb(device):7.0f} MB"
        )


if __name__ == "__main__":
    main()
