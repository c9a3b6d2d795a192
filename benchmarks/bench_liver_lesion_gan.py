"""Training speed of the liver_lesion_gan networks: our Ignite engines vs a plain PyTorch loop.

One line per case: images/s, peak memory, and the ratio engine / plain loop (our engine must not cost more than it
brings). Each case runs in its own subprocess so that peak memory (max RSS on CPU, max allocated on CUDA) is its own.

    python benchmarks/bench_liver_lesion_gan.py                 # quick-size networks, CPU or CUDA if present
    python benchmarks/bench_liver_lesion_gan.py --size paper    # the paper's channel widths
"""

from __future__ import annotations

import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import CLASSIFIER_CASES, benchmark_cli, case_result, classifier_case, plain, timed_epochs, timed_fit  # noqa: E402  (benchmarks/ is the script's folder)

SIZES = {
    "quick": {"g": (128, 64, 32, 16), "d": (16, 32, 64, 128), "c": (32, 64, 128)},
    "paper": {"g": (1024, 512, 256, 128), "d": (64, 128, 256, 512), "c": (32, 64, 128)},
}


def _data(n: int, device):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 64, 64, generator=g) * 2 - 1
    labels = torch.randint(0, 3, (n,), generator=g)
    return images, labels


def run_case(case: str, size: str, n: int, batch: int, epochs: int, device: torch.device) -> dict:
    from monai.transforms import Compose

    from common.engines import GANRecipe, fit_gan
    from common.losses import BCEObjective
    from common.networks import DCGANDiscriminator, DCGANGenerator, FridAdarCNN

    torch.manual_seed(0)
    images, labels = _data(n, device)
    ch = SIZES[size]
    make_g = partial(DCGANGenerator, channels=ch["g"])
    make_d = partial(DCGANDiscriminator, channels=ch["d"])
    make_c = partial(FridAdarCNN, channels=ch["c"])
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    tmp = tempfile.mkdtemp()
    # one warm-up epoch is excluded from the timing in every case
    if case == "gan_engine":
        recipe = GANRecipe(make_g, make_d, adam, adam, BCEObjective())
        items = [{"image": images[i], "label": int(labels[i])} for i in range(n)]

        def train(out: str, n_epochs: int) -> None:
            fit_gan(recipe, items, Compose([]), out, max_epochs=n_epochs, batch_size=batch, device=device,
                    tensorboard=False, progress=False, sample_interval=10**6, checkpoint_interval=10**6)  # fmt: skip

        t = timed_fit(train, tmp, epochs)
    elif case == "gan_plain":
        G, D = plain(make_g(), device), plain(make_d(), device)
        og, od = adam(G.parameters()), adam(D.parameters())
        bce = torch.nn.BCEWithLogitsLoss()

        def epoch():
            perm = torch.randperm(n)
            for s in range(0, n - batch + 1, batch):
                x = plain(images[perm[s : s + batch]], device)
                z = G.sample_latent(batch, device=device)
                with torch.no_grad():
                    f = G(z)
                rl, fl = D(x), D(f)
                ld = bce(rl, torch.ones_like(rl)) + bce(fl, torch.zeros_like(fl))
                od.zero_grad(set_to_none=True)
                ld.backward()
                od.step()
                fl = D(G(G.sample_latent(batch, device=device)))
                lg = bce(fl, torch.ones_like(fl))
                og.zero_grad(set_to_none=True)
                lg.backward()
                og.step()
                od.zero_grad(set_to_none=True)

        t = timed_epochs(epoch, epochs)
    elif case in CLASSIFIER_CASES:
        t = classifier_case(case, make_c, images, labels, 3, batch, epochs, device, tmp)
    else:
        raise ValueError(case)
    return case_result(case, n * epochs, t, device)


def main() -> None:
    parsed = benchmark_cli(
        __file__,
        __doc__,
        SIZES,
        run_case,
        ("gan_plain", "gan_engine", *CLASSIFIER_CASES),
        size="quick",
        n=512,
        n_help="images per epoch",
        batch=64,
        epochs=3,
    )
    if parsed is None:  # ran one case, in its own subprocess
        return
    args, device, results = parsed
    print(
        f"# liver_lesion_gan, size={args.size}, device={device}, n={args.n}, batch={args.batch}, epochs={args.epochs}"
    )
    for model in ("gan", "classifier"):
        plain, engine = results[f"{model}_plain"], results[f"{model}_engine"]
        for r in (plain, engine):
            print(f"{r['case']:<18} {r['images_per_s']:9.1f} images/s  peak {r['peak_mb']:8.1f} MB")
        print(f"{model + ' ratio':<18} engine/plain = {engine['images_per_s'] / plain['images_per_s']:.2f} (speed)")


if __name__ == "__main__":
    main()
