"""Ready for a GPU: each bundle's GAN training step at the paper's scale, and a smoke training + inference per bundle,
on one device, in one JSON.

Nothing in the project has run on a GPU yet. This script is what to run first when one is lent: on one CUDA GPU it
says whether every bundle trains and infers there, how fast the paper-scale GAN step is, how much memory it takes,
and what bf16 autocast and channels-last change. It is sized to finish in under 8 minutes (defaults: 8 warm-up and
40 timed steps per case, each case's timing cut at ``--max-case-s`` 10 s; 5 bundles x 4 modes, then 10 smoke
commands of seconds each), but it has never run on a GPU, so that time is an estimate.

Run on a lent GPU (from the repository root; an estimated 4-8 minutes on one GPU)::

    OMP_NUM_THREADS=4 python benchmarks/gpu_check.py --out gpu_check.json
    python benchmarks/gpu_check.py --bundles spine_stylegan2 brain_pix2pix --steps 100   # a subset, longer timing
    python benchmarks/gpu_check.py --device cpu --tiny                                 # the script itself, < 1 min

Part (a), ``train_step``: for each bundle, the GAN recipe is built exactly as the bundle builds it: its own
``configs/train.json`` parsed with MONAI's ``ConfigParser``, ``recipe`` set to ``"paper"``, then ``gan_recipe``,
``batch_size`` and the image size (``image_size``, or ``resolution`` for skin_melanogan) read from it; ``num_classes``
is set to the length of the config's ``phantom#n_per_class`` so that no data set is loaded. ``--tiny`` merges the
bundle's ``configs/smoke.json`` over ``train.json`` first (its small image size, widths and batch), still with the
paper recipe. G and D are built from the recipe, with their optimisers, regularisers, EMA, the ADA pipe (with its
handler) and, for the latent GANs under the paper recipe, the classic augmentation of the reals that the bundle's
``train#trainer#augment`` gives, as ``common.engines.fit_gan`` does. Then ``warmup + steps`` iterations of
``common.engines.gan_engine.GANTrainer`` run on one synthetic batch of the right shape, already on the device (so
the figure is the step's compute, not data loading): ``image`` in [-1, 1] (B, C, H, W) plus a ``label`` (B,) for the
latent GANs; ``image`` (B, sequences, H, W) and a one-hot ``condition`` (B, condition channels, H, W) for
brain_pix2pix (``prepare_paired_batch``, with the bundle's ``flip``). Each bundle runs in each ``--modes``:

- ``fp32``: float32, networks and batches in the default contiguous (NCHW) layout;
- ``bf16``: ``GANRecipe.amp = True``, i.e. the trainer's bf16 autocast around D's and G's losses (on CUDA and, since
  issue 13, on the CPU too: ``amp_active`` says whether it was on);
- ``channels_last``: float32 with ``common.engines.memory_format.to_channels_last`` applied to G, D and the batches,
  which is what ``fit_gan`` always does: a network whose 4-D or 5-D parameters all have one rank goes to
  channels-last (2-D) or channels-last-3d (3-D); one that mixes the two ranks stays as it is. ``layout`` reports
  what it did to each network;
- ``bf16_channels_last``: both, the combination a bundle's training would use with ``amp`` on.

Part (b), ``smoke``: per bundle, the README's commands on the device, each in its own process::

    python -m monai.bundle run training --config_file "['<b>/configs/train.json','<b>/configs/smoke.json']" \
        --output_dir DIR --device DEVICE
    python -m monai.bundle run --config_file \
        "['<b>/configs/inference.json','<b>/configs/smoke.json','<b>/configs/smoke_inference.json']" \
        --output_dir DIR --device DEVICE

(``smoke.json`` sets ``model_file`` to ``DIR/model.pt``, so the inference reads the model the training just wrote;
the recipe is the config's default: ``paper`` where CUDA is available, ``efficient`` otherwise.)

The JSON (``--out``, default ``gpu_check.json``):

- ``ok``: every case ran with finite losses and every smoke command exited with 0; the script's exit code is 0
  exactly then (1 otherwise, 2 when CUDA is asked for and missing);
- ``seconds``: the whole script's wall time; ``argv``: its arguments;
- ``env``: ``device`` (as given), ``device_name``, ``torch``, ``cuda`` (the CUDA torch was built with, or null),
  ``monai``, ``bf16_supported``, ``cpu_threads``;
- ``settings``: ``bundles``, ``modes``, ``steps``, ``warmup``, ``max_case_s``, ``tiny``;
- ``train_step[bundle]``: ``recipe`` (always ``"paper"``), ``configs`` (the files merged), ``batch_size``,
  ``image_shape`` (C, *spatial of one image), ``condition_shape`` (brain_pix2pix only), ``generator`` /
  ``discriminator`` (class names), ``generator_params`` / ``discriminator_params`` (millions), ``d_steps``,
  ``d_regularizer`` / ``g_regularizer`` (class name and interval, or null), ``ema`` (bool), ``ada`` (bool),
  ``augment`` (the reals' augmentation class, or null), and ``cases[mode]``:

  - ``images_per_s``: real images through the step per second after the warm-up (timed iterations x batch / s);
  - ``peak_mb``: CUDA: ``torch.cuda.max_memory_allocated`` since the case began (its own networks, optimiser
    states and activations); CPU: the process's max resident set size so far (``benchmarks/_harness.peak_mb``:
    it never goes down, so on CPU later cases include earlier ones);
  - ``seconds``: wall time of the timed iterations; ``iterations``: how many were timed (fewer than ``steps`` when
    a case ran past ``max_case_s``); ``warmup``: untimed iterations before them; ``seconds_per_iteration``;
  - ``amp``: what the recipe asked; ``amp_active``: whether the trainer's autocast was on;
  - ``layout``: what ``to_channels_last`` did. ``generator`` / ``discriminator``: ``converted`` (some conv weight
    is now laid out channels-last), ``target_format`` (``channels_last`` or ``channels_last_3d``: the format
    ``to_channels_last`` uses for this network; null when it mixes 4-D and 5-D weights and is left as it is),
    ``param_ranks`` (the ranks of its 4-D/5-D parameters), ``conv_params`` (how many), ``params_channels_last``
    (how many are laid out channels-last, 3-D included) and ``params_either`` (how many are both, e.g. a 1x1 kernel
    or one input channel, where the two layouts coincide); ``batch``: the real batch as the step sees it
    (``channels_last``, ``contiguous``, or ``both`` for a one-channel image);
  - ``g_loss`` / ``d_loss``: the last iteration's losses (finite when the step is healthy);
  - or ``error``: the exception, when the case failed (e.g. out of memory); the other cases still run.
- ``smoke[bundle]``: ``output_dir`` and, for ``training`` and ``inference``: ``command``, ``exit_code`` (null when
  killed at ``--smoke-timeout``), ``seconds``, and ``log_tail`` (the last lines of its output) when it failed.

Figures on a shared CPU are indicative only; the GPU figures are what this script is for.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import case_result  # noqa: E402  (benchmarks/ is the script's folder)

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("brain_pix2pix", "liver_lesion_gan", "lung_cisl_gan", "skin_melanogan", "spine_stylegan2")
#: mode -> (bf16 autocast, channels-last)
MODES = {
    "fp32": (False, False),
    "bf16": (True, False),
    "channels_last": (False, True),
    "bf16_channels_last": (True, True),
}


# ---------------------------------------------------------------------------------------------------------------
# (a) the paper-scale training step


def bundle_parser(bundle: str, device: str, tiny: bool):
    """The bundle's ``train.json`` (+ ``smoke.json`` when ``tiny``) in a ``ConfigParser``, with the paper recipe."""
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / bundle / "configs"
    files = [configs / "train.json"] + ([configs / "smoke.json"] if tiny else [])
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["recipe"] = "paper"
    parser["device"] = device
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    if "num_classes" in parser:  # its class count without loading the data set (the phantom has one entry per class)
        parser["num_classes"] = len(parser["phantom"]["n_per_class"])
    return parser, [str(f.relative_to(REPO)) for f in files]


def _parsed(parser, key: str, default=None):
    return parser.get_parsed_content(key) if key in parser else default


def _image_size(parser) -> int:
    return int(_parsed(parser, "image_size") if "image_size" in parser else _parsed(parser, "resolution"))


def _params_m(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 3)


def _memory_format(ndim: int):
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


def _layout_name(x: torch.Tensor) -> str:
    """``channels_last``, ``contiguous``, or ``both`` (the two layouts coincide, e.g. one channel or a 1x1 kernel)."""
    fmt = _memory_format(x.dim())
    last = fmt is not None and x.is_contiguous(memory_format=fmt)
    plain = x.is_contiguous()
    return "both" if last and plain else "channels_last" if last else "contiguous" if plain else "strided"


def layout_report(module: torch.nn.Module) -> dict:
    """What ``to_channels_last`` did to ``module``: the format it uses for it and how its conv weights are laid out."""
    conv = [p for p in module.parameters() if p.dim() in (4, 5)]
    ranks = sorted({p.dim() for p in conv})
    fmt = _memory_format(ranks[0]) if len(ranks) == 1 else None  # to_channels_last's rule: one rank, or unchanged
    names = [_layout_name(p) for p in conv]
    return {
        "converted": "channels_last" in names,
        "target_format": {torch.channels_last: "channels_last", torch.channels_last_3d: "channels_last_3d"}.get(fmt),
        "param_ranks": ranks,
        "conv_params": len(conv),
        "params_channels_last": names.count("channels_last"),
        "params_either": names.count("both"),
    }


def _with_layout(prepare: Callable, channels_last: bool, seen: dict) -> Callable:
    """``prepare`` (the bundle's batch preparation, which always converts to channels-last) with the case's layout."""
    from common.engines.memory_format import to_channels_last

    def prep(batch, device, non_blocking=False, **kwargs):
        out = prepare(batch, device, non_blocking, **kwargs)
        conv = to_channels_last if channels_last else (lambda t: t.contiguous())
        out = tuple(conv(t) if isinstance(t, torch.Tensor) else t for t in out)
        seen["batch"] = _layout_name(out[0])
        return out

    return prep


def synthetic_batch(parser, recipe, device: torch.device, batch_size: int, paired: bool) -> dict:
    """One batch of the bundle's shape, on ``device``: ``image`` (+ ``label``), or ``image`` + ``condition``."""
    g = torch.Generator().manual_seed(0)
    if paired:
        spatial_dims = int(_parsed(parser, "spatial_dims", 2))
        crop = _parsed(parser, "crop_size")
        spatial = tuple(int(s) for s in crop) if spatial_dims == 3 and crop else (_image_size(parser),) * spatial_dims
        k = int(_parsed(parser, "n_condition"))
        index = torch.randint(0, k, (batch_size, *spatial), generator=g)
        condition = torch.nn.functional.one_hot(index, k).movedim(-1, 1).float()
        image = torch.rand(batch_size, int(_parsed(parser, "n_sequences")), *spatial, generator=g) * 2 - 1
        return {"image": image.to(device), "condition": condition.to(device)}
    # the image shape is what the bundle's generator makes: ask it (one small eval-mode pass)
    gen = recipe.generator().to(device).eval()
    with torch.no_grad():
        labels = recipe.objective.sample_labels(gen, None, 2, device)
        shape = tuple(recipe.objective.fake(gen, 2, device, labels).shape[1:])
    del gen
    image = torch.rand(batch_size, *shape, generator=g) * 2 - 1
    n_classes = int(_parsed(parser, "num_classes", 1) or 1)
    label = torch.randint(0, n_classes, (batch_size,), generator=g)
    return {"image": image.to(device), "label": label.to(device)}


def _regularizer(reg, interval: int):
    return None if reg is None else {"name": type(reg).__name__, "interval": int(interval)}


def run_train_case(bundle: str, mode: str, args, device: torch.device) -> tuple[dict, dict]:
    """Time ``args.warmup + args.steps`` GAN iterations of ``bundle`` in ``mode``; returns (bundle info, result)."""
    from ignite.engine import Events

    from common.engines.gan_engine import GANTrainer, prepare_gan_batch
    from common.engines.memory_format import to_channels_last
    from common.engines.translation import prepare_paired_batch
    from common.losses.pix2pix import Pix2PixObjective

    amp, channels_last = MODES[mode]
    parser, files = bundle_parser(bundle, str(device), args.tiny)
    recipe = dataclasses.replace(parser.get_parsed_content("gan_recipe"), amp=amp)
    if recipe.privacy is not None:
        raise ValueError(f"{bundle}: the paper recipe has a privacy engine; this script times plain training")
    batch_size = int(parser.get_parsed_content("batch_size"))
    paired = isinstance(recipe.objective, Pix2PixObjective)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    batch = synthetic_batch(parser, recipe, device, batch_size, paired)

    generator = recipe.generator().to(device)
    discriminator = recipe.discriminator().to(device)
    if channels_last:  # what fit_gan does
        generator, discriminator = to_channels_last(generator), to_channels_last(discriminator)
    g_opt = recipe.g_optimizer(generator.parameters())
    d_opt = recipe.d_optimizer(discriminator.parameters())
    for reg in (recipe.d_regularizer, recipe.g_regularizer):
        if callable(getattr(reg, "reset", None)):
            reg.reset()
    pipe = recipe.augment_pipe().to(device) if recipe.augment_pipe is not None else None
    if hasattr(pipe, "set_random_state"):
        pipe.set_random_state(1)
    if paired:
        prepare = partial(prepare_paired_batch, flip=bool(_parsed(parser, "train#trainer#flip", False)))
        augment = None
    else:
        augment = _parsed(parser, "train#trainer#augment")
        if hasattr(augment, "set_random_state"):
            augment.set_random_state(0)
        prepare = partial(prepare_gan_batch, augment=augment)
    seen: dict = {}
    n_iter = args.warmup + args.steps
    trainer = GANTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=[batch] * n_iter,
        generator=generator,
        discriminator=discriminator,
        g_optimizer=g_opt,
        d_optimizer=d_opt,
        **recipe.trainer_kwargs(),
        prepare_batch=_with_layout(prepare, channels_last, seen),
        augment_pipe=pipe,
    )
    if pipe is not None and recipe.ada_target is not None:
        from common.data.ada import AdaptiveAugmentHandler

        AdaptiveAugmentHandler(pipe, recipe.ada_target, recipe.ada_interval, recipe.ada_speed_kimg, batch_size).attach(
            trainer
        )

    clock: dict = {}

    def start(engine) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        clock["start"] = time.perf_counter()

    if args.warmup > 0:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=args.warmup), start)
    else:
        trainer.add_event_handler(Events.STARTED, start)

    # no sync here: the losses stay device tensors, so the host runs ahead of the GPU by at most its launch queue
    # (about a step); case_result synchronizes before it stops the clock
    @trainer.on(Events.ITERATION_COMPLETED)
    def _deadline(engine) -> None:
        timed = engine.state.iteration - args.warmup
        if timed >= 2 and time.perf_counter() - clock["start"] > args.max_case_s:
            engine.terminate()

    trainer.run()
    timed = trainer.state.iteration - args.warmup
    result = case_result(f"{bundle}/{mode}", timed * batch_size, clock["start"], device)
    out = trainer.state.output or {}
    result.update(
        bundle=bundle,
        mode=mode,
        iterations=timed,
        warmup=args.warmup,
        seconds_per_iteration=result["seconds"] / max(timed, 1),
        amp=bool(amp),
        amp_active=bool(trainer.use_amp),
        layout={
            "generator": layout_report(generator),
            "discriminator": layout_report(discriminator),
            "batch": seen.get("batch"),
        },
        g_loss=float(out["g_loss"]) if "g_loss" in out else None,  # device tensors: floats for the JSON line
        d_loss=float(out["d_loss"]) if "d_loss" in out else None,
    )
    info = {
        "recipe": "paper",
        "configs": files,
        "batch_size": batch_size,
        "image_shape": list(batch["image"].shape[1:]),
        "condition_shape": list(batch["condition"].shape[1:]) if paired else None,
        "generator": type(generator).__name__,
        "discriminator": type(discriminator).__name__,
        "generator_params": _params_m(generator),
        "discriminator_params": _params_m(discriminator),
        "d_steps": recipe.d_steps,
        "d_regularizer": _regularizer(recipe.d_regularizer, recipe.d_reg_interval),
        "g_regularizer": _regularizer(recipe.g_regularizer, recipe.g_reg_interval),
        "ema": recipe.ema_decay is not None,
        "ada": pipe is not None,
        "augment": type(augment).__name__ if augment is not None else None,
    }
    return info, result


# ---------------------------------------------------------------------------------------------------------------
# (b) smoke training + inference through the bundle's CLI


def smoke_commands(bundle: str, output_dir: str, device: str) -> dict[str, list[str]]:
    """The README's training and inference commands of ``bundle`` at smoke size, on ``device``."""
    configs = f"bundles/{bundle}/configs"
    train = [f"{configs}/train.json", f"{configs}/smoke.json"]
    infer = [f"{configs}/inference.json", f"{configs}/smoke.json", f"{configs}/smoke_inference.json"]
    common = ["--output_dir", output_dir, "--device", device]
    run = [sys.executable, "-m", "monai.bundle", "run"]
    return {
        "training": [*run, "training", "--config_file", str(train), *common],
        "inference": [*run, "--config_file", str(infer), *common],
    }


def run_command(cmd: Sequence[str], timeout: float) -> dict:
    """``cmd`` from the repository root: exit code (None when killed at ``timeout``), seconds, and on failure the
    last lines of its output."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), cwd=REPO, capture_output=True, text=True, timeout=timeout)
        code, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code = None
        log = "".join(s.decode(errors="replace") if isinstance(s, bytes) else (s or "") for s in (e.stdout, e.stderr))
        log += f"\nkilled after {timeout:g} s"
    result = {"command": list(cmd), "exit_code": code, "seconds": round(time.perf_counter() - start, 2)}
    if code != 0:
        result["log_tail"] = "\n".join(log.strip().splitlines()[-30:])
    return result


def run_smoke(bundle: str, work_dir: Path, device: str, timeout: float) -> dict:
    out = work_dir / bundle
    cmds = smoke_commands(bundle, str(out), device)
    result: dict = {"output_dir": str(out)}
    for step in ("training", "inference"):
        if step == "inference" and result["training"]["exit_code"] != 0:
            result[step] = {"command": cmds[step], "exit_code": None, "seconds": 0.0, "log_tail": "training failed"}
        else:
            result[step] = run_command(cmds[step], timeout)
        r = result[step]
        print(f"smoke       {bundle:<16} {step:<19} exit {r['exit_code']}  {r['seconds']:8.1f} s", flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict:
    import monai

    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "monai": monai.__version__,
        "bf16_supported": bool(device.type == "cuda" and torch.cuda.is_bf16_supported()),
        "cpu_threads": torch.get_num_threads(),
    }
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON to write (default: gpu_check.json)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="smoke.json sizes, 2 timed steps: the script in < 1 min")
    parser.add_argument("--bundles", nargs="+", choices=BUNDLES, default=list(BUNDLES))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--steps", type=int, default=None, help="timed iterations per case (default 40; tiny: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 8; tiny: 1)")
    parser.add_argument(
        "--max-case-s", type=float, default=10.0, help="stop a case's timing after this many seconds (default 10)"
    )
    parser.add_argument("--no-train-step", action="store_true", help="skip part (a)")
    parser.add_argument("--no-smoke", action="store_true", help="skip part (b)")
    parser.add_argument("--smoke-timeout", type=float, default=300.0, help="seconds per smoke command (default 300)")
    parser.add_argument(
        "--work-dir",
        help="where the smoke runs write (default: a temporary folder, removed after); a finished run "
        "found there is resumed, i.e. returns at once: give an empty folder",
    )
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.tiny else 40
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 8
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available here (use --device cpu)", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    report: dict = {
        "ok": False,
        "seconds": None,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "env": environment(device),
        "settings": {
            "bundles": args.bundles,
            "modes": args.modes,
            "steps": args.steps,
            "warmup": args.warmup,
            "max_case_s": args.max_case_s,
            "tiny": args.tiny,
        },
        "train_step": {},
        "smoke": {},
    }
    ok = True

    if not args.no_train_step:
        for bundle in args.bundles:
            entry: dict = {"cases": {}}
            for mode in args.modes:
                try:
                    info, result = run_train_case(bundle, mode, args, device)
                    entry.update(info)
                    entry["cases"][mode] = result
                    loss_ok = all(math.isfinite(result[k]) for k in ("g_loss", "d_loss") if result[k] is not None)
                    ok = ok and loss_ok
                    print(
                        f"train_step  {bundle:<16} {mode:<19} {result['images_per_s']:10.1f} img/s  "
                        f"peak {result['peak_mb']:8.0f} MB  ({result['iterations']} it x {info['batch_size']}, "
                        f"amp {'on' if result['amp_active'] else 'off'}, batch {result['layout']['batch']})"
                        + ("" if loss_ok else "  NON-FINITE LOSS"),
                        flush=True,
                    )
                except Exception as e:  # noqa: BLE001  (one failing case, e.g. out of memory, must not stop the rest)
                    ok = False
                    entry["cases"][mode] = {
                        "case": f"{bundle}/{mode}", "bundle": bundle, "mode": mode,
                        "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:],
                    }  # fmt: skip
                    print(f"train_step  {bundle:<16} {mode:<19} FAILED {type(e).__name__}: {e}", flush=True)
                finally:
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            report["train_step"][bundle] = entry

    if not args.no_smoke:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            work_dir = Path(args.work_dir) if args.work_dir else Path(tmp)
            for bundle in args.bundles:
                result = run_smoke(bundle, work_dir, args.device, args.smoke_timeout)
                ok = ok and all(result[s]["exit_code"] == 0 for s in ("training", "inference"))
                report["smoke"][bundle] = result

    report["ok"] = ok
    report["seconds"] = round(time.perf_counter() - began, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'ok' if ok else 'FAILED'}: {report['seconds']} s; {out}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
