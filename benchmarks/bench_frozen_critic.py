"""What freezing D's weights during G's step saves on the CPU (``common.engines.gan_engine.frozen``).

G's loss goes through D, but G's step needs only the gradient with respect to D's *input*; D's weight gradients were
computed and then dropped. The liver DCGAN's G step (64 px, 5x5 kernels, channels-last) with and without the freeze,
alternated in one process, median of ``--repeats``; the losses and G's gradients are the same either way
(``tests/engines/test_loss_sync.py`` checks the training log bit for bit).

    OMP_NUM_THREADS=1 python benchmarks/bench_frozen_critic.py --repeats 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.engines.gan_engine import frozen  # noqa: E402
from common.engines.memory_format import to_channels_last  # noqa: E402
from common.networks import DCGANDiscriminator, DCGANGenerator  # noqa: E402

#: bundles/liver_lesion_gan/configs/train.json: (G widths, D widths, batch) of its two recipes
SIZES = {
    "efficient": ((128, 64, 32, 16), (32, 64, 128, 256), 32),
    "paper": ((1024, 512, 256, 128), (64, 128, 256, 512), 16),
}


def g_step(gen, disc, batch: int, freeze: bool) -> float:
    """Seconds of one G step's forward and backward pass (no optimiser: the same in both cases)."""
    z = torch.randn(batch, 100)
    start = time.perf_counter()
    if freeze:
        with frozen(disc):
            disc(gen(z)).mean().backward()
    else:
        disc(gen(z)).mean().backward()
    took = time.perf_counter() - start
    gen.zero_grad(set_to_none=True)
    disc.zero_grad(set_to_none=True)
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="efficient,paper")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.sizes.split(","):
        g_ch, d_ch, batch = SIZES[name]
        torch.manual_seed(0)
        gen = to_channels_last(
            DCGANGenerator(latent_dim=100, out_channels=1, image_size=64, channels=g_ch, kernel_size=5)
        )
        disc = to_channels_last(DCGANDiscriminator(in_channels=1, image_size=64, channels=d_ch, kernel_size=5))
        g_step(gen, disc, batch, False), g_step(gen, disc, batch, True)  # warm-up
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for freeze in (False, True):
                times[freeze].append(g_step(gen, disc, batch, freeze))
        plain, fast = statistics.median(times[False]), statistics.median(times[True])
        print(
            f"{name} widths, batch {batch}, {args.threads} thread(s): G step {plain * 1e3:.0f} ms, with D frozen "
            f"{fast * 1e3:.0f} ms: x{plain / fast:.2f}"
        )


if __name__ == "__main__":
    main()
