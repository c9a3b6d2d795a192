"""Training speed of brain_pix2pix's pix2pix: our Ignite engine (``fit_gan`` with the paired batch) vs a plain loop.

One line per case: images (slices) per second, peak memory, and the ratio engine / plain loop. Each case runs in
its own subprocess so that peak memory (max RSS on CPU, max allocated on CUDA) is its own. Also times synthesis:
slices per second through ``translate_volume`` (MONAI ``SliceInferer``).

    python benchmarks/bench_brain_pix2pix.py                   # cpu.json-size networks at 64 px
    python benchmarks/bench_brain_pix2pix.py --size paper      # the paper's filters at 128 px
"""

from __future__ import annotations

import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import benchmark_cli, case_result  # noqa: E402  (benchmarks/ is the script's folder)

SIZES = {
    "cpu": {"g": (32, 64, 128, 256, 256, 256), "d": 32, "px": 64},
    "paper": {"g": (64, 128, 256, 512, 512, 512, 512), "d": 64, "px": 128},
}
CONDITION, SEQUENCES = 6, 4


def _data(n: int, px: int):
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, CONDITION, (n, px, px), generator=g)
    condition = torch.nn.functional.one_hot(index, CONDITION).permute(0, 3, 1, 2).float()
    images = torch.rand(n, SEQUENCES, px, px, generator=g) * 2 - 1
    return condition, images


class _NoGrid:
    def attach(self, engine) -> None:  # the benchmark times training, not PNG writing
        pass


def run_case(case: str, size: str, n: int, batch: int, epochs: int, device: torch.device) -> dict:
    from monai.transforms import Compose

    from common.engines import GANRecipe, fit_gan
    from common.engines.memory_format import to_channels_last
    from common.engines.translation import prepare_paired_batch, translate_volume
    from common.losses.pix2pix import Pix2PixObjective
    from common.networks.pix2pix import ConditionalPatchDiscriminator, Pix2PixUNet

    torch.manual_seed(0)
    s = SIZES[size]
    condition, images = _data(n, s["px"])
    make_g = partial(Pix2PixUNet, 2, CONDITION, SEQUENCES, channels=s["g"])
    make_d = partial(ConditionalPatchDiscriminator, 2, CONDITION, SEQUENCES, channels=s["d"])
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    objective = Pix2PixObjective()
    tmp = tempfile.mkdtemp()
    count = n * epochs
    if case == "pix2pix_engine":
        items = [{"image": images[i], "condition": condition[i]} for i in range(n)]
        recipe = GANRecipe(make_g, make_d, adam, adam, objective)

        def train(out: str, n_epochs: int) -> None:
            fit_gan(
                recipe,
                items,
                Compose([]),
                out,
                max_epochs=n_epochs,
                batch_size=batch,
                device=device,
                tensorboard=False,
                progress=False,
                checkpoint_interval=10**6,
                prepare_batch=partial(prepare_paired_batch, flip=False),
                sample_saver=_NoGrid(),
                dataset_keys=("image", "condition"),
            )

        train(tmp + "/w", 1)  # warm-up epoch, not timed
        t = time.perf_counter()
        train(tmp + "/r", epochs)
    elif case == "pix2pix_plain":
        G, D = to_channels_last(make_g().to(device)), to_channels_last(make_d().to(device))
        og, od = adam(G.parameters()), adam(D.parameters())

        def epoch():
            perm = torch.randperm(n)
            for i in range(0, n - batch + 1, batch):
                idx = perm[i : i + batch]
                x = to_channels_last(images[idx].to(device))
                c = to_channels_last(condition[idx].to(device))
                ld = objective.d_loss(G, D, x, c)["d_loss"]
                od.zero_grad(set_to_none=True)
                ld.backward()
                od.step()
                lg = objective.g_loss(G, D, x, c)["g_loss"]
                og.zero_grad(set_to_none=True)
                lg.backward()
                og.step()
                od.zero_grad(set_to_none=True)

        epoch()
        t = time.perf_counter()
        for _ in range(epochs):
            epoch()
    elif case == "synthesis":
        G = to_channels_last(make_g().to(device)).eval()
        label = torch.zeros(1, s["px"], s["px"], 32, dtype=torch.int16)
        label[0, 20:40, 20:40, 8:24] = 2
        brain, anatomy = torch.ones_like(label), torch.full_like(label, 3)  # all white matter around the tumour
        volume = (label.numpy(), brain.numpy(), anatomy.numpy())
        translate_volume(G, *volume, device=device)
        t = time.perf_counter()
        for _ in range(epochs):
            translate_volume(G, *volume, device=device)
        count = 32 * epochs
    else:
        raise ValueError(case)
    return case_result(case, count, t, device)


def main() -> None:
    parsed = benchmark_cli(
        __file__,
        __doc__,
        SIZES,
        run_case,
        ("pix2pix_plain", "pix2pix_engine", "synthesis"),
        size="cpu",
        n=128,
        n_help="slices per epoch",
        batch=8,
        epochs=2,
    )
    if parsed is None:  # ran one case, in its own subprocess
        return
    args, device, results = parsed
    print(f"# brain_pix2pix, size={args.size}, device={device}, n={args.n}, batch={args.batch}, epochs={args.epochs}")
    for r in results.values():
        print(f"{r['case']:<16} {r['images_per_s']:9.1f} slices/s  peak {r['peak_mb']:8.1f} MB")
    ratio = results["pix2pix_engine"]["images_per_s"] / results["pix2pix_plain"]["images_per_s"]
    print(f"{'pix2pix ratio':<16} engine/plain = {ratio:.2f} (speed)")


if __name__ == "__main__":
    main()
