"""Speed of the lung_cisl_gan networks: the ACGAN and the sign classifier in our Ignite engines vs a plain PyTorch
loop, and generation (latent -> synthetic patch files + datalist).

One line per case: images/s, peak memory, and the ratio engine / plain loop (our engine must not cost more than it
brings). Each case runs in its own subprocess so that peak memory (max RSS on CPU, max allocated on CUDA) is its own.

    python benchmarks/bench_lung_cisl_gan.py                 # cpu.json-size networks, CPU or CUDA if present
    python benchmarks/bench_lung_cisl_gan.py --size paper    # train.json's channel widths
"""

from __future__ import annotations

import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import CLASSIFIER_CASES, benchmark_cli, case_result, classifier_case, plain, timed_epochs, timed_fit  # noqa: E402  (benchmarks/ is the script's folder)

SIZES = {
    "cpu": {"g": (128, 64, 32, 16), "d": (16, 32, 64, 128), "c": (16, 32, 64)},
    "paper": {"g": (512, 256, 128, 64), "d": (64, 128, 256, 512), "c": (32, 64, 128)},
}
IMAGE, CLASSES = 32, 6


def run_case(case: str, size: str, n: int, batch: int, epochs: int, device: torch.device) -> dict:
    from monai.transforms import Compose

    from common.engines import GANRecipe, fit_gan, generate_synthetic_set
    from common.losses import ACGANObjective
    from common.networks import ACGANDiscriminator, ACGANGenerator, FridAdarCNN

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, IMAGE, IMAGE, generator=g) * 2 - 1
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    ch = SIZES[size]
    make_g = partial(ACGANGenerator, image_size=IMAGE, channels=ch["g"], kernel_size=4, num_classes=CLASSES)
    make_d = partial(ACGANDiscriminator, image_size=IMAGE, channels=ch["d"], num_classes=CLASSES, dropout=0.3)
    make_c = partial(FridAdarCNN, num_classes=CLASSES, image_size=IMAGE, channels=ch["c"])
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    tmp = tempfile.mkdtemp()
    count = n * epochs
    # one warm-up epoch (or call) is excluded from the timing in every case
    if case == "gan_engine":
        recipe = GANRecipe(make_g, make_d, adam, adam, ACGANObjective())
        items = [{"image": images[i], "label": int(labels[i])} for i in range(n)]

        def train(out: str, n_epochs: int) -> None:
            fit_gan(recipe, items, Compose([]), out, max_epochs=n_epochs, batch_size=batch, device=device,
                    tensorboard=False, progress=False, sample_interval=10**6, checkpoint_interval=10**6)  # fmt: skip

        t = timed_fit(train, tmp, epochs)
    elif case == "gan_plain":
        G, D, obj = plain(make_g(), device), plain(make_d(), device), ACGANObjective()
        og, od = adam(G.parameters()), adam(D.parameters())

        def epoch():
            perm = torch.randperm(n)
            for s in range(0, n - batch + 1, batch):
                x, y = plain(images[perm[s : s + batch]], device), labels[perm[s : s + batch]].to(device)
                ld = obj.d_loss(G, D, x, y)["d_loss"]
                od.zero_grad(set_to_none=True)
                ld.backward()
                od.step()
                lg = obj.g_loss(G, D, x, y)["g_loss"]
                og.zero_grad(set_to_none=True)
                lg.backward()
                og.step()
                od.zero_grad(set_to_none=True)

        t = timed_epochs(epoch, epochs)
    elif case in CLASSIFIER_CASES:
        t = classifier_case(case, make_c, images, labels, CLASSES, batch, epochs, device, tmp)
    elif case == "generation":  # latent -> patch files in HU + datalist (what inference.json and the protocol do)
        gens = {"conditional": make_g().to(device).eval()}
        per_class = max(1, n // CLASSES)

        def gen(out: str) -> None:
            generate_synthetic_set(gens, [str(c) for c in range(CLASSES)], per_class, out, a_min=-1000, a_max=400,
                                   device=device)  # fmt: skip

        gen(tmp + "/w")
        t = time.perf_counter()
        for e in range(epochs):
            gen(f"{tmp}/g{e}")
        count = per_class * CLASSES * epochs
    else:
        raise ValueError(case)
    return case_result(case, count, t, device)


def main() -> None:
    parsed = benchmark_cli(
        __file__,
        __doc__,
        SIZES,
        run_case,
        ("gan_plain", "gan_engine", *CLASSIFIER_CASES, "generation"),
        size="cpu",
        n=512,
        n_help="images per epoch",
        batch=32,
        epochs=3,
    )
    if parsed is None:  # ran one case, in its own subprocess
        return
    args, device, results = parsed
    print(f"# lung_cisl_gan, size={args.size}, device={device}, n={args.n}, batch={args.batch}, epochs={args.epochs}")
    for model in ("gan", "classifier"):
        plain, engine = results[f"{model}_plain"], results[f"{model}_engine"]
        for r in (plain, engine):
            print(f"{r['case']:<18} {r['images_per_s']:9.1f} images/s  peak {r['peak_mb']:8.1f} MB")
        print(f"{model + ' ratio':<18} engine/plain = {engine['images_per_s'] / plain['images_per_s']:.2f} (speed)")
    r = results["generation"]
    print(f"{r['case']:<18} {r['images_per_s']:9.1f} images/s  peak {r['peak_mb']:8.1f} MB (files + datalist)")


if __name__ == "__main__":
    main()
