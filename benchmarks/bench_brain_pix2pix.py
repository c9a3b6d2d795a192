"""Training speed of brain_pix2pix's pix2pix: our engine vs a plain loop vs junyanz's pix2pix, at equal settings.

Cases, each in its own subprocess (so that peak memory, max RSS on CPU or max allocated on CUDA, is its own):

- ``pix2pix_engine``: our Ignite engine as the bundle runs it (``fit_gan`` with the paired batch: ``CacheDataset``
  + ``DataLoader``, ``NaNGuard``, ``LossHistory``; no TensorBoard, progress bar or sample PNGs), timed from the end of
  a warm-up epoch to the end of training, so neither the set-up nor the final checkpoint write is counted.
- ``pix2pix_reuse``: the engine with ``Pix2PixObjective(reuse_fakes=True)`` (``--reuse_fakes true`` in the bundle): one
  G forward per step, G updated through the fakes D just saw, as junyanz's step does.
- ``pix2pix_plain``: the same networks and ``Pix2PixObjective`` in a plain PyTorch loop, channels-last like ours;
  ``pix2pix_plainreuse`` the same loop with ``reuse_fakes=True``, so that engine/plain and reuse/plainreuse each
  compare equal work.
- ``pix2pix_ref`` / ``pix2pix_refcl``: what a user would run instead, junyanz/pytorch-CycleGAN-and-pix2pix: its
  ``UnetGenerator`` (``unet_128`` at the paper size: 7 levels, ``ngf`` 64) and ``NLayerDiscriminator`` (``basic``,
  ``ndf`` 64, 3 layers) with batch norm, dropout and N(0, 0.02) init as its pix2pix model builds them, loaded from a
  local copy of its ``models/networks.py`` (``_reference.py``), and its step (``Pix2PixModel.optimize_parameters``:
  one G forward for both updates, D on ``cat(A, B)`` with ``GANLoss('vanilla')`` halved, D frozen for G's update,
  G: GAN + 100 x L1, Adam(2e-4, (0.5, 0.999))) written here; in PyTorch's default layout (``ref``, as it runs) and
  channels-last (``refcl``, the fair baseline). Same batch, widths, image size, threads and in-memory data as the
  plain loop. Its default batch is 1 (``--batch 1``). Without ``--reference_dir`` (or
  ``$SYNTHAUG_REFERENCE_DIR``) these cases are skipped with one line.
- ``synthesis``: slices per second through ``translate_volume`` (MONAI ``SliceInferer``).

Prints images (slices) per second, peak memory, and the ratios engine / plain and engine / reference.

    python benchmarks/bench_brain_pix2pix.py                   # cpu.json-size networks at 64 px
    python benchmarks/bench_brain_pix2pix.py --size paper      # the paper's filters at 128 px
    python benchmarks/bench_brain_pix2pix.py --size paper --batch 1 --threads 1 --reference_dir /tmp/synthaug_reference
"""

from __future__ import annotations

import inspect
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import benchmark_cli, case_result, peak_mb  # noqa: E402  (benchmarks/ is the script's folder)
from _reference import PIX2PIX_FILE, add_reference_argument, load_pix2pix, quiet, reference_file  # noqa: E402

SIZES = {
    "cpu": {"g": (32, 64, 128, 256, 256, 256), "d": 32, "px": 64},
    "paper": {"g": (64, 128, 256, 512, 512, 512, 512), "d": 64, "px": 128},
}
CONDITION, SEQUENCES = 6, 4
CASES = (
    "pix2pix_plain", "pix2pix_engine", "pix2pix_plainreuse", "pix2pix_reuse", "pix2pix_ref", "pix2pix_refcl",
    "synthesis",
)  # fmt: skip
REFERENCE_CASES = ("pix2pix_ref", "pix2pix_refcl")
L1_WEIGHT = 100.0


def _data(n: int, px: int):
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, CONDITION, (n, px, px), generator=g)
    condition = torch.nn.functional.one_hot(index, CONDITION).permute(0, 3, 1, 2).float()
    images = torch.rand(n, SEQUENCES, px, px, generator=g) * 2 - 1
    return condition, images


class _NoGrid:
    def attach(self, engine) -> None:  # the benchmark times training, not PNG writing
        pass


class _Clock:
    """Marks the end of the warm-up epoch and the end of training (before ``fit_gan``'s final checkpoint, which
    attaches after the extra handlers)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.marks = device, {}

    def _mark(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.marks[name] = time.perf_counter()

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: self._mark("start"))
        engine.add_event_handler(Events.COMPLETED, lambda e: self._mark("end"))


def _reference_networks(size: str, reference_dir: str, device: torch.device, channels_last: bool):
    """junyanz's pix2pix G and D at our widths (G: ``ngf, 2 ngf, 4 ngf, 8 ngf, 8 ngf ...`` = ``SIZES[size]["g"]``, one
    U-Net level per entry; D: ``ndf`` = ``SIZES[size]["d"]``), as its ``define_G``/``define_D`` build them for
    pix2pix (norm 'batch', dropout on, init 'normal' 0.02), and its ``GANLoss`` for ``gan_mode='vanilla'`` (in its
    older versions, ``use_lsgan=False`` with a sigmoid at D's end: the same loss)."""
    g = SIZES[size]["g"]
    ngf, ndf = g[0], SIZES[size]["d"]
    if tuple(g) != tuple(ngf * min(2**i, 8) for i in range(len(g))):
        raise ValueError(f"size {size}: G widths {g} are not junyanz's U-Net pattern ngf * (1, 2, 4, 8, 8, ...)")
    path = reference_file(reference_dir, PIX2PIX_FILE)
    if path is None:
        raise SystemExit(2)
    nets = load_pix2pix(path)
    torch.manual_seed(0)
    norm = nets.get_norm_layer("batch")
    G = nets.UnetGenerator(CONDITION, SEQUENCES, len(g), ngf, norm_layer=norm, use_dropout=True)
    new_api = "gan_mode" in inspect.signature(nets.GANLoss.__init__).parameters
    d_kwargs = {} if new_api else {"use_sigmoid": True}
    D = nets.NLayerDiscriminator(CONDITION + SEQUENCES, ndf, n_layers=3, norm_layer=norm, **d_kwargs)
    for net in (G, D):
        quiet(nets.init_weights, net, "normal", 0.02)
    criterion = nets.GANLoss("vanilla") if new_api else nets.GANLoss(use_lsgan=False)
    G, D, criterion = G.to(device), D.to(device), criterion.to(device)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D, criterion


def _reference_step(G, D, og, od, criterion):
    """One ``Pix2PixModel.optimize_parameters`` (pool size 0, as pix2pix trains): fake_B = G(A) once; D's update on
    ``cat(A, fake_B)`` (detached) and ``cat(A, B)``, the two GAN losses averaged; then D frozen (no grads for its
    weights) and G's update on GAN(D(cat(A, fake_B)), real) + 100 x L1(fake_B, B)."""
    d_params = list(D.parameters())

    def step(real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        fake_b = G(real_a)
        for p in d_params:
            p.requires_grad_(True)
        od.zero_grad()
        loss_d_fake = criterion(D(torch.cat((real_a, fake_b), 1).detach()), False)
        loss_d_real = criterion(D(torch.cat((real_a, real_b), 1)), True)
        ((loss_d_fake + loss_d_real) * 0.5).backward()
        od.step()
        for p in d_params:
            p.requires_grad_(False)
        og.zero_grad()
        loss_g = criterion(D(torch.cat((real_a, fake_b), 1)), True) + F.l1_loss(fake_b, real_b) * L1_WEIGHT
        loss_g.backward()
        og.step()

    return step


def run_case(case: str, size: str, n: int, batch: int, epochs: int, device: torch.device, args=None) -> dict:
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
    count = n // batch * batch * epochs  # whole batches only, in every loop (the engine's loader drops the last)
    if case in ("pix2pix_engine", "pix2pix_reuse"):
        items = [{"image": images[i], "condition": condition[i]} for i in range(n)]
        recipe = GANRecipe(make_g, make_d, adam, adam, Pix2PixObjective(reuse_fakes=case == "pix2pix_reuse"))

        clock = _Clock(device)
        fit_gan(
            recipe,
            items,
            Compose([]),
            tmp + "/r",
            max_epochs=1 + epochs,  # the first epoch is the warm-up, not timed
            batch_size=batch,
            device=device,
            tensorboard=False,
            progress=False,
            checkpoint_interval=10**6,
            prepare_batch=partial(prepare_paired_batch, flip=False),
            sample_saver=_NoGrid(),
            dataset_keys=("image", "condition"),
            extra_handlers=[clock],
        )
        seconds = clock.marks["end"] - clock.marks["start"]
        return {"case": case, "images_per_s": count / seconds, "peak_mb": peak_mb(device), "seconds": seconds}
    elif case in REFERENCE_CASES:
        channels_last = case == "pix2pix_refcl"
        G, D, criterion = _reference_networks(size, args.reference_dir, device, channels_last)
        og, od = adam(G.parameters()), adam(D.parameters())  # its defaults: lr 2e-4, beta1 0.5
        step = _reference_step(G, D, og, od, criterion)
        layout = to_channels_last if channels_last else torch.Tensor.contiguous
        G.train()
        D.train()

        def epoch():
            perm = torch.randperm(n)
            for i in range(0, n - batch + 1, batch):
                idx = perm[i : i + batch]
                step(layout(condition[idx].to(device)), layout(images[idx].to(device)))

        epoch()
        t = time.perf_counter()
        for _ in range(epochs):
            epoch()
    elif case in ("pix2pix_plain", "pix2pix_plainreuse"):
        objective = Pix2PixObjective(reuse_fakes=case == "pix2pix_plainreuse")
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


def _add_arguments(parser) -> None:
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    add_reference_argument(parser)


def _select(args, cases: list[str]) -> list[str]:
    chosen = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(chosen) - set(cases))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {cases}")
    if any(c in REFERENCE_CASES for c in chosen) and reference_file(args.reference_dir, PIX2PIX_FILE) is None:
        chosen = [c for c in chosen if c not in REFERENCE_CASES]
    return chosen


def main() -> None:
    parsed = benchmark_cli(
        __file__,
        __doc__,
        SIZES,
        run_case,
        CASES,
        size="cpu",
        n=128,
        n_help="slices per epoch",
        batch=8,
        epochs=2,
        add_arguments=_add_arguments,
        select=_select,
    )
    if parsed is None:  # ran one case, in its own subprocess
        return
    args, device, results = parsed
    s = SIZES[args.size]
    print(
        f"# brain_pix2pix, size={args.size} (G {s['g']}, D {s['d']}, {s['px']} px), device={device}, n={args.n}, "
        f"batch={args.batch}, epochs={args.epochs} (+1 warm-up), threads={args.threads or torch.get_num_threads()}"
    )
    for r in results.values():
        print(f"{r['case']:<16} {r['images_per_s']:9.2f} slices/s  peak {r['peak_mb']:8.1f} MB")
    for ours, plain in (("engine", "plain"), ("reuse", "plainreuse")):
        mine = results.get(f"pix2pix_{ours}")
        for base in (plain, "ref", "refcl"):
            other = results.get(f"pix2pix_{base}")
            if mine and other:
                ratio = mine["images_per_s"] / other["images_per_s"]
                print(f"{'pix2pix ratio':<16} {ours}/{base} = {ratio:.3f} (speed)")


if __name__ == "__main__":
    main()
