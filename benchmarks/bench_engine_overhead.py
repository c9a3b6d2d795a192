"""What the GAN engine costs per step on the CPU: ``GANTrainer`` vs a plain PyTorch loop vs pytorch/examples' DCGAN.

The liver_lesion_gan DCGAN step (Frid-Adar 2018: 64 px, 5x5 kernels, BCE, Adam) on batches already in memory, so
that only the step and the engine's bookkeeping are timed (no data loading, no files). Both loops get channels-last
networks and batches. The engine case attaches what ``fit_gan`` attaches at every step without writing files
(``NaNGuard``, ``LossHistory``); ``engine_*`` minus ``plain_*`` is the engine's overhead. ``*_bf16`` wraps both
losses in ``torch.autocast("cpu", dtype=torch.bfloat16)``, as the trainer's ``amp`` does.

``ref_*`` / ``refcl_*``: what a user would run instead, pytorch/examples' DCGAN (``dcgan/main.py``: its networks,
taken from a local copy, see ``_reference.py``; its step written here as its loop does it) at the same widths
(``ngf``/``ndf`` from the recipe's G/D channels), batch, image size and threads, in PyTorch's default layout
(``ref``, as the example runs) and channels-last (``refcl``, as ours runs: the fair baseline). Its step differs from
ours by design: 4x4 kernels (the paper's are 5x5: ``--kernel 4`` gives our networks the example's shapes), D ends in
a sigmoid + ``BCELoss``, and one G forward per step serves both updates (ours draws a second batch of latents for G's
update; ``reuse_fakes`` removes that difference: the ``reuse`` / ``plainreuse`` cases). Without ``--reference_dir``
(or ``$SYNTHAUG_REFERENCE_DIR``) those cases are skipped with one line.

Each case runs in its own interpreter (``_harness.run_cases``), ``--repeats`` times, interleaved, and the median
images/s is printed with the ratios; run it on a quiet machine (or say that it was not).

    python benchmarks/bench_engine_overhead.py --size efficient --threads 1
    python benchmarks/bench_engine_overhead.py --size paper --batch 16 --steps 3 --threads 2
    python benchmarks/bench_engine_overhead.py --size paper --kernel 4 --reference_dir /tmp/synthaug_reference
    python benchmarks/bench_engine_overhead.py --train-check 300     # bf16: does the GAN still train?
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import case_result, run_cases  # noqa: E402  (benchmarks/ is the script's folder)
from _reference import DCGAN_FILE, add_reference_argument, load_dcgan, reference_file  # noqa: E402

#: bundles/liver_lesion_gan/configs/train.json: g_channels / d_channels of its two recipes
SIZES = {
    "efficient": {"g": (128, 64, 32, 16), "d": (32, 64, 128, 256)},
    "paper": {"g": (1024, 512, 256, 128), "d": (64, 128, 256, 512)},
}
CASES = (
    "plain_fp32", "engine_fp32", "plain_bf16", "engine_bf16", "plainreuse_fp32", "reuse_fp32",
    "ref_fp32", "refcl_fp32", "refcl_bf16",
)  # fmt: skip
#: ``reuse`` is the engine with ``BCEObjective(reuse_fakes=True)`` (one G forward per step, as the example does);
#: ``plainreuse`` the plain loop doing the same, so engine/plain and reuse/plainreuse each compare equal work
ENGINE_LOOPS = ("engine", "reuse", "compiled")
#: ``compiled``: the engine with G and D under ``torch.compile`` (inductor, CPU); its warm-up (at least 3 steps: D's
#: step, G's step through a frozen D and the no-grad fakes each compile once) is not timed
COMPILE_WARMUP = 3
REFERENCE_LOOPS = ("ref", "refcl")
LATENT = 100


def _networks(size: str, kernel: int = 5):
    from common.engines.memory_format import to_channels_last
    from common.networks import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    ch = SIZES[size]
    gen = DCGANGenerator(latent_dim=LATENT, out_channels=1, image_size=64, channels=ch["g"], kernel_size=kernel)
    disc = DCGANDiscriminator(in_channels=1, image_size=64, channels=ch["d"], kernel_size=kernel)
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    gen, disc = to_channels_last(gen), to_channels_last(disc)
    return gen, disc, adam(gen.parameters()), adam(disc.parameters())


def _batches(n: int, batch: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(batch, 1, 64, 64, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)] * n


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)


def _plain(gen, disc, g_opt, d_opt, bf16: bool, reuse: bool = False):
    """One DCGAN step as pytorch/examples writes it (BCEObjective's maths); returns the losses as tensors. ``reuse``:
    G's update goes through the fakes D's update saw (one G forward), else through a second draw (two)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step(reals: torch.Tensor):
        b = reals.shape[0]
        with _autocast(bf16):
            with torch.set_grad_enabled(reuse):
                fakes = gen(gen.sample_latent(b, device=reals.device))
            real_logits, fake_logits = disc(reals), disc(fakes.detach())
            d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        with _autocast(bf16):
            logits = disc(fakes if reuse else gen(gen.sample_latent(b, device=reals.device)))
            g_loss = bce(logits, torch.ones_like(logits))
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        d_opt.zero_grad(set_to_none=True)
        return g_loss.detach(), d_loss.detach()

    return step


def _reference_networks(size: str, reference_dir: str, channels_last: bool):
    """pytorch/examples' G and D at the recipe's widths: G ``ngf*8 .. ngf`` = ``SIZES[size]["g"]``, D ``ndf .. ndf*8``
    = ``SIZES[size]["d"]``; one channel, 64 px, z of 100, initialised by its ``weights_init``."""
    ch = SIZES[size]
    ngf, ndf = ch["g"][-1], ch["d"][0]
    if tuple(ch["g"]) != (8 * ngf, 4 * ngf, 2 * ngf, ngf) or tuple(ch["d"]) != (ndf, 2 * ndf, 4 * ndf, 8 * ndf):
        raise ValueError(f"size {size}: widths {ch} are not pytorch/examples' ngf*8..ngf / ndf..ndf*8 pattern")
    path = reference_file(reference_dir, DCGAN_FILE)
    if path is None:
        raise SystemExit(2)
    ref = load_dcgan(path, nz=LATENT, ngf=ngf, ndf=ndf, nc=1)
    torch.manual_seed(0)
    gen, disc = ref.Generator(1), ref.Discriminator(1)
    gen.apply(ref.weights_init)
    disc.apply(ref.weights_init)
    if channels_last:
        gen, disc = gen.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))  # the example's defaults (lr, beta1)
    return gen, disc, adam(gen.parameters()), adam(disc.parameters())


def _reference_step(gen, disc, g_opt, d_opt, bf16: bool):
    """One step as pytorch/examples' DCGAN loop takes it: D on reals (backward), then on a fresh fake batch, detached
    (backward), one D update; then G's update through D on that same fake batch, with real labels. Its networks'
    ``main`` (the ``nn.Sequential`` they wrap) is called directly: on one device their ``forward`` is just that (older
    versions route it through ``data_parallel``, which no longer runs on a CPU-only machine). Its D ends in a sigmoid:
    ``BCELoss`` on probabilities, computed in fp32 (autocast has no bf16 ``BCELoss``). The example also prints the
    losses every step and saves images every 100: not part of the step, left out."""
    bce = torch.nn.BCELoss()
    g_net, d_net = gen.main, disc.main

    def step(reals: torch.Tensor):
        b = reals.shape[0]
        real_label, fake_label = torch.ones(b), torch.zeros(b)
        disc.zero_grad()
        with _autocast(bf16):
            out = d_net(reals).view(-1)
        err_real = bce(out.float(), real_label)
        err_real.backward()
        noise = torch.randn(b, LATENT, 1, 1)
        with _autocast(bf16):
            fake = g_net(noise)
            out = d_net(fake.detach()).view(-1)
        err_fake = bce(out.float(), fake_label)
        err_fake.backward()
        d_opt.step()
        gen.zero_grad()
        with _autocast(bf16):
            out = d_net(fake).view(-1)
        err_g = bce(out.float(), real_label)
        err_g.backward()
        g_opt.step()
        return err_g.detach(), (err_real + err_fake).detach()

    return step


def _engine(gen, disc, g_opt, d_opt, bf16: bool, batches: list[torch.Tensor], warmup: int, reuse: bool = False):
    from ignite.engine import Events

    from common.engines import GANTrainer, LossHistory, NaNGuard
    from common.losses import BCEObjective

    try:
        objective = BCEObjective(reuse_fakes=reuse)
    except TypeError:  # an objective from before reuse_fakes
        if reuse:
            raise
        objective = BCEObjective()
    trainer = GANTrainer("cpu", 1, [{"image": x} for x in batches], gen, disc, g_opt, d_opt, objective)
    trainer._autocast = lambda: _autocast(bf16)  # the trainer's amp, on the CPU whatever this version allows
    try:
        NaNGuard(interval=10).attach(trainer)  # as fit_gan (log_interval=10)
    except TypeError:  # an engine from before issue 13: its guard checks every step
        NaNGuard().attach(trainer)
    LossHistory().attach(trainer)
    clock = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=warmup), lambda e: clock.update(start=time.perf_counter())
    )
    return trainer, clock


def run_case(case: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    loop, precision = case.split("_")
    bf16 = precision == "bf16"
    batches = _batches(args.warmup + args.steps, args.batch)
    device = torch.device("cpu")
    if loop in REFERENCE_LOOPS:
        channels_last = loop == "refcl"
        gen, disc, g_opt, d_opt = _reference_networks(args.size, args.reference_dir, channels_last)
        if not channels_last:
            batches = [x.contiguous() for x in batches]
        step = _reference_step(gen, disc, g_opt, d_opt, bf16)
    else:
        gen, disc, g_opt, d_opt = _networks(args.size, args.kernel)
    if loop == "compiled":
        gen.compile()
        disc.compile()
        args.warmup = max(args.warmup, COMPILE_WARMUP)
        batches = _batches(args.warmup + args.steps, args.batch)
    if loop in ("plain", "plainreuse"):
        step = _plain(gen, disc, g_opt, d_opt, bf16, reuse=loop == "plainreuse")
    if loop not in ENGINE_LOOPS:
        for x in batches[: args.warmup]:
            step(x)
        start = time.perf_counter()
        for x in batches[args.warmup :]:
            losses = step(x)
        last = [float(v) for v in losses]
    else:
        trainer, clock = _engine(gen, disc, g_opt, d_opt, bf16, batches, args.warmup, reuse=loop == "reuse")
        trainer.run()
        start = clock["start"]
        last = [float(trainer.state.output["g_loss"]), float(trainer.state.output["d_loss"])]
    result = case_result(case, args.steps * args.batch, start, device)
    kernel = 4 if loop in REFERENCE_LOOPS else args.kernel
    result.update(threads=args.threads, g_loss=last[0], d_loss=last[1], kernel=kernel)
    return result


def train_check(steps: int, size: str, batch: int, threads: int) -> dict:
    """Train the DCGAN with the engine for ``steps`` steps under bf16 autocast on random 'images' with structure
    (blobs): the losses must stay finite, and D must not have won outright (D's loss not ~0)."""
    from ignite.engine import Events

    from common.engines import GANTrainer, LossHistory, NaNGuard
    from common.losses import BCEObjective

    torch.set_num_threads(threads)
    gen, disc, g_opt, d_opt = _networks(size)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    centres = torch.rand(256, 2, generator=g) * 1.2 - 0.6
    radii = torch.rand(256, generator=g) * 0.3 + 0.1
    images = ((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2 < radii[:, None, None] ** 2).float()
    images = (images * 2 - 1).unsqueeze(1).contiguous(memory_format=torch.channels_last)
    loader = [{"image": images[(i * batch) % 256 : (i * batch) % 256 + batch]} for i in range(steps)]
    trainer = GANTrainer("cpu", 1, loader, gen, disc, g_opt, d_opt, BCEObjective(), amp=True)
    trainer._autocast = lambda: _autocast(True)
    NaNGuard(interval=10).attach(trainer)
    LossHistory().attach(trainer)
    seen = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(every=max(1, steps // 10)),
        lambda e: seen.append({k: float(e.state.output[k]) for k in ("g_loss", "d_loss", "d_real", "d_fake")}),
    )
    start = time.perf_counter()
    trainer.run()
    return {"steps": steps, "seconds": time.perf_counter() - start, "every_tenth": seen,
            "epoch_mean": trainer.state.history[-1]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="efficient")
    parser.add_argument("--batch", type=int, default=32, help="the efficient recipe's batch (paper: 64)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every case (interleaved); the median is shown")
    parser.add_argument("--kernel", type=int, default=5, help="our networks' kernel (paper: 5; the example's: 4)")
    parser.add_argument("--cases", default=",".join(CASES))
    add_reference_argument(parser)
    parser.add_argument("--train-check", type=int, default=0, help="instead: train this many bf16 steps and report")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.warmup = max(1, args.warmup)
    if args.train_check:
        print(json.dumps(train_check(args.train_check, args.size, args.batch, args.threads)))
        return
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    cases = args.cases.split(",")
    wants_reference = any(c.split("_")[0] in REFERENCE_LOOPS for c in cases)
    if wants_reference and reference_file(args.reference_dir, DCGAN_FILE) is None:
        cases = [c for c in cases if c.split("_")[0] not in REFERENCE_LOOPS]
    runs: dict[str, list[dict]] = {c: [] for c in cases}
    for _ in range(args.repeats):  # interleaved: a burst of load from other jobs hits every case alike
        for case, result in run_cases(__file__, cases, sys.argv[1:]).items():
            runs[case].append(result)
    median = {c: statistics.median(r["images_per_s"] for r in rs) for c, rs in runs.items()}
    print(
        f"# liver DCGAN step, size={args.size} (G {SIZES[args.size]['g']}, D {SIZES[args.size]['d']}), "
        f"kernel={args.kernel} (reference: 4), batch={args.batch}, steps={args.steps}, threads={args.threads}, "
        f"median of {args.repeats}"
    )
    for case, rs in runs.items():
        each = " ".join(f"{r['images_per_s']:.1f}" for r in rs)
        peak = max(r["peak_mb"] for r in rs)
        finite = all(math.isfinite(r["g_loss"]) and math.isfinite(r["d_loss"]) for r in rs)
        print(f"{case:<12} {median[case]:9.1f} images/s  (runs: {each})  peak {peak:7.1f} MB  losses finite: {finite}")
    for precision in ("fp32", "bf16"):
        pairs = (
            [("engine", b) for b in ("plain", *REFERENCE_LOOPS)]
            + [("compiled", "engine")]
            + [("reuse", b) for b in ("plainreuse", *REFERENCE_LOOPS)]
        )
        for ours, base in pairs:
            if f"{base}_{precision}" in median and f"{ours}_{precision}" in median:
                ratio = median[f"{ours}_{precision}"] / median[f"{base}_{precision}"]
                print(f"ratio {ours}/{base} ({precision}) = {ratio:.3f}")
    for loop in ("plain", "engine", *REFERENCE_LOOPS):
        if f"{loop}_fp32" in median and f"{loop}_bf16" in median:
            print(f"ratio bf16/fp32 ({loop}) = {median[f'{loop}_bf16'] / median[f'{loop}_fp32']:.3f}")


if __name__ == "__main__":
    main()
