"""Is "quick" quick? Wall time of every bundle's quick protocol, on its phantom and on its real development set.

Issue 16 asks that ``train.json + evaluate.json + quick.json`` finish in at most 10 minutes on 2 CPU cores, on the
phantom as well as on the bundle's real set in ``../shared/data`` (added as the bundle's data config after
``quick.json``). This script runs each case as a user would (``python -m monai.bundle run``, a fresh output folder),
one after the other, times it, and writes one JSON with the wall times, the exit codes, the thread count and the
machine's load before and after each case (a busy machine inflates the times: say so next to the numbers).

    python benchmarks/quick_wall_times.py --out docs/results/quick_wall_times.json
    python benchmarks/quick_wall_times.py --bundles spine_stylegan2 --data real --threads 1 --root /tmp/quick

A case that fails keeps its log (``<root>/<bundle>_<data>.log``) and the JSON gets its exit code and last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

#: the real development set of each bundle: its data config (after quick.json) and the folder it reads
REAL = {
    "liver_lesion_gan": ("lidc_vois.json", "lidc_vois"),
    "lung_cisl_gan": ("lidc_vois.json", "lidc_vois"),
    "skin_melanogan": ("isic9.json", "isic9"),
    "spine_stylegan2": ("pneumoniamnist.json", "pneumoniamnist"),
    "brain_pix2pix": ("brats2015.json", "brats2015"),
}
LIMIT_S = 600


def command(bundle: str, data: str, output_dir: Path, shared: Path) -> list[str]:
    configs = [f"bundles/{bundle}/configs/{name}.json" for name in ("train", "evaluate", "quick")]
    extra: list[str] = []
    if data == "real":
        config, folder = REAL[bundle]
        configs.append(f"bundles/{bundle}/configs/{config}")
        extra = ["--dataset_dir", str(shared / folder)]
    return [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs).replace('"', "'"),
        "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def run_case(bundle: str, data: str, root: Path, shared: Path, threads: int, timeout: int) -> dict:
    out = root / f"{bundle}_{data}"
    shutil.rmtree(out, ignore_errors=True)
    log = root / f"{bundle}_{data}.log"
    cmd = command(bundle, data, out, shared)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = time.perf_counter() - start
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return {
        "bundle": bundle, "data": data, "seconds": round(seconds, 1), "minutes": round(seconds / 60, 2),
        "within_10_min": rc == 0 and seconds <= LIMIT_S, "exit_code": rc, "threads": threads,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "command": " ".join(cmd[1:]).replace(str(out), "OUT"), "last_line": lines[-1][-300:] if lines else "",
        "report": (out / "evaluation" / "report.json").is_file(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", default=",".join(REAL))
    parser.add_argument("--data", default="phantom,real", help="phantom, real or both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", default="/tmp/synthaug_quick", help="output folders and logs")
    parser.add_argument("--shared", default=str(SHARED), help="the shared data folder (../shared/data)")
    parser.add_argument("--timeout", type=int, default=3 * LIMIT_S, help="seconds before a case is stopped")
    parser.add_argument("--out", help="write the results here (JSON); merged with what the file already holds")
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for bundle in args.bundles.split(","):
        for data in args.data.split(","):
            if data == "real" and not (Path(args.shared) / REAL[bundle][1]).is_dir():
                print(f"{bundle} {data}: skipped, {Path(args.shared) / REAL[bundle][1]} not found", flush=True)
                continue
            r = run_case(bundle, data, root, Path(args.shared), args.threads, args.timeout)
            results.append(r)
            print(f"{bundle:<18} {data:<8} {r['minutes']:6.2f} min  exit {r['exit_code']}  "
                  f"load {r['load_before']:.1f}->{r['load_after']:.1f}", flush=True)  # fmt: skip
    if args.out:
        path = Path(args.out)
        old = json.loads(path.read_text()) if path.is_file() else {"runs": []}
        keep = [r for r in old["runs"] if (r["bundle"], r["data"]) not in {(n["bundle"], n["data"]) for n in results}]
        doc = {
            "what": "wall time of train.json + evaluate.json + quick.json (+ the real set's config), one at a time",
            "limit_s": LIMIT_S, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(),
            "runs": sorted(keep + results, key=lambda r: (r["bundle"], r["data"])),
        }  # fmt: skip
        path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
