"""What every benchmark script shares: peak memory of a case, running each case in its own subprocess, the timing
(one untimed warm-up, then the timed part), the plain loops' channels-last layout (as our engines use it), the
classifier cases, and the command line. One difference stays, by design: the GAN engine freezes D's weights during
G's step (``common.engines.gan_engine.frozen``: no gradients for D's weights), which the plain loops do not; at the
paper's widths that saves nothing measurable, at the efficient widths G's step is about 1.2x faster
(``bench_frozen_critic.py``), so engine / plain includes that gain.

A case runs in a fresh interpreter (``<script> --case NAME <the caller's arguments>``) so that its peak memory (max
RSS on CPU, max allocated on CUDA) is its own and one case's warm-up does not speed up the next; the subprocess
prints one JSON line, its result.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch


def peak_mb(device: torch.device) -> float:
    """Peak memory of this process so far: max allocated on CUDA, max resident set size on CPU (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_cases(script: str, cases: Sequence[str], argv: Sequence[str]) -> dict[str, dict]:
    """``{case: result}``: ``script --case CASE *argv`` per case, each in its own interpreter."""
    results = {}
    for case in cases:
        cmd = [sys.executable, script, "--case", case, *argv]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[case] = json.loads(out)
    return results


def case_result(case: str, count: int, start: float, device: torch.device) -> dict:
    """End a timed case: wait for the GPU, then ``count`` images over the time since ``start``, and peak memory."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"case": case, "images_per_s": count / seconds, "peak_mb": peak_mb(device), "seconds": seconds}


def timed_epochs(epoch: Callable[[], None], epochs: int) -> float:
    """Run ``epoch`` once untimed (warm-up), then ``epochs`` times; return the start of the timed part."""
    epoch()
    start = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return start


def timed_fit(train: Callable[[str, int], None], tmp: str, epochs: int) -> float:
    """``train(out_dir, n_epochs)`` once for one epoch into ``tmp/w`` (warm-up: imports, first allocations), then
    for ``epochs`` into ``tmp/r``; return the start of the timed run."""
    train(f"{tmp}/w", 1)
    start = time.perf_counter()
    train(f"{tmp}/r", epochs)
    return start


def plain(x, device: torch.device):
    """A network or a batch for a plain loop: on ``device`` and channels-last, as our engines run them."""
    from common.engines.memory_format import to_channels_last

    return to_channels_last(x.to(device))


CLASSIFIER_CASES = ("classifier_plain", "classifier_engine")


def classifier_case(case, make_c, images, labels, num_classes, batch, epochs, device, tmp) -> float:
    """A classifier case (``CLASSIFIER_CASES``): ``fit_classifier`` (SGD 1e-3, momentum 0.9; no validation in the
    timed epochs) or the same network, optimiser and cross-entropy in a plain channels-last loop. Returns the start
    of the timed part (``case_result`` ends it)."""
    from monai.transforms import Compose

    from common.engines import ClassifierRecipe, fit_classifier

    sgd = dict(lr=1e-3, momentum=0.9)
    n = len(images)
    if case == "classifier_engine":
        recipe = ClassifierRecipe(make_c, lambda params: torch.optim.SGD(params, **sgd))
        items = [{"image": images[i], "label": int(labels[i])} for i in range(n)]

        def train(out: str, n_epochs: int) -> None:
            fit_classifier(recipe, items, items[: max(batch, 8)], Compose([]), Compose([]), out,
                           num_classes=num_classes, max_epochs=n_epochs, batch_size=batch, device=device,
                           val_interval=10**6)  # fmt: skip

        return timed_fit(train, tmp, epochs)
    if case != "classifier_plain":
        raise ValueError(case)
    net = plain(make_c(), device)
    opt = torch.optim.SGD(net.parameters(), **sgd)
    ce = torch.nn.CrossEntropyLoss()

    def epoch():
        perm = torch.randperm(n)
        for s in range(0, n, batch):
            idx = perm[s : s + batch]
            loss = ce(net(plain(images[idx], device)), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return timed_epochs(epoch, epochs)


def benchmark_cli(
    script: str,
    description: str,
    sizes: Sequence[str],
    run_case: Callable[..., dict],
    cases: Sequence[str],
    *,
    size: str = "cpu",
    n: int = 128,
    n_help: str = "images per epoch",
    batch: int = 16,
    epochs: int = 2,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    select: Callable[[argparse.Namespace, list[str]], list[str]] | None = None,
) -> tuple[argparse.Namespace, torch.device, dict[str, dict]] | None:
    """The shared command line: ``--size --n --batch --epochs --device --threads`` (defaults per script).

    Called with ``--case NAME`` (as ``run_cases`` calls the script) it runs ``run_case(case, size, n, batch, epochs,
    device)``, prints the JSON line and returns None; otherwise it runs every case in its own interpreter and returns
    ``(args, device, {case: result})`` for the script to print. ``--threads N`` sets ``torch.set_num_threads`` in
    each case (default: torch's). ``add_arguments(parser)`` adds a script's own options; ``run_case`` then also gets
    the parsed ``args=`` keyword. ``select(args, cases)`` returns the cases to run (a subset the script's options
    chose, without those whose reference code is missing...).
    """
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--size", choices=sorted(sizes), default=size)
    parser.add_argument("--n", type=int, default=n, help=n_help)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each case")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.case:
        if args.threads:
            torch.set_num_threads(args.threads)
        extra = {"args": args} if add_arguments is not None else {}
        print(json.dumps(run_case(args.case, args.size, args.n, args.batch, args.epochs, device, **extra)))
        return None
    chosen = list(cases) if select is None else select(args, list(cases))
    return args, device, run_cases(script, chosen, sys.argv[1:])
