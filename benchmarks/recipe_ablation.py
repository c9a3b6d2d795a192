"""The efficient recipe's ablation: one change switched off at a time, the same step budget, the same data.

Each variant is one `training` run of a bundle (the bundle's own command, with overrides), which ends with its
quality audit against held-out real images (``quality.json``); this script collects them into one JSON and prints
the markdown table that ``docs/generators.md`` holds::

    python benchmarks/recipe_ablation.py --bundle lung_cisl_gan --data lidc_vois --steps 1500 --out /tmp/ablation

Variants: ``paper`` (the paper's recipe at the efficient recipe's widths, batch and step budget: non-saturating loss,
Adam(0.5, 0.999), BatchNorm D, classic augmentation of the GAN's data), ``efficient`` (all changes of
``common.engines.recipes``), and ``efficient`` without ADA, without R1, without the EMA of G. Runs are resumable
(each variant's folder), and ``--parallel 2`` runs two at a time, one thread each. Wall times on a shared machine
are indicative only; the step budget is what is held equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: variant -> command-line overrides of the bundle's train.json (on top of --gan_steps)
VARIANTS: dict[str, list[str]] = {
    "paper": ["--recipe", "paper"],
    "efficient": [],
    "efficient - ADA": ["--ada_target", "$None"],  # "$None": MONAI drops a plain None override
    "efficient - R1": ["--r1_gamma", "0"],
    "efficient - EMA": ["--ema_kimg", "0"],
}
#: the paper variant keeps the efficient recipe's sizes, so that only the training differs
SAME_SIZES = ["g_channels", "d_channels", "batch_size"]


def _efficient_sizes(bundle: str, data: str) -> list[str]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / f) for f in ("train.json", f"{data}.json")])
    out = []
    for key in SAME_SIZES:
        out += [f"--{key}", json.dumps(parser.get_parsed_content(key)).replace(" ", "")]
    return out


def run_variant(bundle: str, data: str, name: str, steps: int, out: Path, sizes: list[str]) -> dict:
    folder = out / name.replace(" ", "").replace("-", "_no_")
    configs = [str(REPO / "bundles" / bundle / "configs" / f) for f in ("train.json", f"{data}.json")]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(configs)]
    cmd += ["--output_dir", str(folder), "--gan_steps", str(steps), *VARIANTS[name]]
    if name == "paper":
        cmd += sizes
    start = time.perf_counter()
    if not (folder / "quality.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(folder / "run.log", "w") as log:
            subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    quality = json.loads((folder / "quality.json").read_text())
    return {"variant": name, "command": cmd[1:], "wall_s": round(time.perf_counter() - start, 1), **quality}


def table(rows: list[dict]) -> str:
    head = "| variant | precision | recall | density | coverage | Frechet / real-vs-real | G steps | train s |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        t = r.get("training", {})
        lines.append(
            f"| {r['variant']} | {r['precision']:.2f} | {r['recall']:.2f} | {r['density']:.2f} | {r['coverage']:.2f} "
            f"| {r['frechet_ratio']:.2f} | {t.get('iterations', '-')} | {t.get('seconds', '-')} |"
        )
    base = rows[0]
    lines.append(
        f"| real vs real | {base['precision_real_baseline']:.2f} | {base['recall_real_baseline']:.2f} | "
        f"{base['density_real_baseline']:.2f} | {base['coverage_real_baseline']:.2f} | 1.00 | | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="lung_cisl_gan")
    parser.add_argument("--data", default="lidc_vois", help="the bundle's data override file (configs/<data>.json)")
    parser.add_argument("--steps", type=int, default=1500, help="G steps per GAN, every variant")
    parser.add_argument("--out", default="/tmp/recipe_ablation")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    sizes = _efficient_sizes(args.bundle, args.data)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        rows = list(pool.map(lambda v: run_variant(args.bundle, args.data, v, args.steps, out, sizes), args.variants))
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"bundle": args.bundle, "data": args.data, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
