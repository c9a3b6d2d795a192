#!/usr/bin/env python
"""The collaborator's round trip for every bundle: package, download with MONAI, run from the download.

For each bundle: ``ci/package_bundle.py`` writes the zip; a fresh virtual environment (``--system-site-packages``
for the third-party packages; this repository is *not* on its path) runs
``python -m monai.bundle download --name <name> --version <v> --url file://.../<name>_v<v>.zip --bundle_dir X``;
then, from ``X/<name>`` (the bundle root, as the model zoo's commands are written), the smoke-sized training,
inference and evaluation. It checks that the ``common`` package used is the copy inside the download.

    python ci/roundtrip_bundles.py                       # every bundle under bundles/
    python ci/roundtrip_bundles.py brain_pix2pix         # one
    python ci/roundtrip_bundles.py --no-venv ...         # use this interpreter (faster; still outside the repo)

Exit status 0 when every round trip passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ci"))

from package_bundle import package  # noqa: E402


def _overrides(configs: Path, *names: str) -> list[str]:
    return [f"configs/{n}.json" for n in names if (configs / f"{n}.json").is_file()]


def _run(python: str, args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def roundtrip(name: str, work: Path, python: str, timeout: int = 900) -> dict:
    """Package, download and run one bundle; returns ``{"name", "ok", "steps": {...}, "seconds"}``."""
    start = time.perf_counter()
    entry = package(REPO / "bundles" / name, work / "dist")
    dl = work / "downloads"
    dl.mkdir(exist_ok=True)
    steps: dict[str, str] = {}

    def step(label: str, args: list[str], cwd: Path) -> bool:
        res = _run(python, args, cwd, timeout)
        steps[label] = "ok" if res.returncode == 0 else f"FAIL: {(res.stderr or res.stdout)[-1500:]}"
        return res.returncode == 0

    ok = step(
        "download",
        ["-m", "monai.bundle", "download", "--name", name, "--version", entry["version"], "--url", entry["url"]]
        + ["--bundle_dir", str(dl)],
        work,
    )
    root = dl / name
    if ok:
        probe = _run(python, ["-c", "import common; print(common.__file__)"], root, timeout)
        where = probe.stdout.strip()
        ok = probe.returncode == 0 and Path(where).resolve().is_relative_to(root.resolve())
        steps["common_is_the_bundled_copy"] = "ok" if ok else f"FAIL: common imported from '{where}' {probe.stderr}"
    configs = root / "configs"
    out = work / "runs" / name
    size = _overrides(configs, "quick", "smoke")
    if ok:
        train = ["-m", "monai.bundle", "run", "training", "--config_file", str(["configs/train.json", *size])]
        ok = step("training", train + ["--output_dir", str(out)], root)
    if ok:
        files = ["configs/inference.json", *size, *_overrides(configs, "smoke_inference")]
        ok = step(
            "inference", ["-m", "monai.bundle", "run", "--config_file", str(files), "--output_dir", str(out)], root
        )
    if ok:
        files = ["configs/train.json", "configs/evaluate.json", *size]
        ok = step(
            "evaluation", ["-m", "monai.bundle", "run", "--config_file", str(files), "--output_dir", str(out)], root
        )
        ok = ok and any(out.rglob("report.json"))
        if not any(out.rglob("report.json")):
            steps["evaluation"] = "FAIL: no report.json"
    return {"name": name, "version": entry["version"], "ok": ok, "steps": steps, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="bundle names (default: all)")
    parser.add_argument("--no-venv", action="store_true", help="run with this interpreter instead of a fresh venv")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))
    work = args.work or Path(tempfile.mkdtemp(prefix="synthaug_roundtrip_"))
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    if not args.no_venv:
        env_dir = work / "venv"
        venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
        python = str(env_dir / "bin" / "python")
    results = [roundtrip(n, work, python) for n in names]
    for r in results:
        print(f"{'PASS' if r['ok'] else 'FAIL'} {r['name']} {r['version']} ({r['seconds']:.0f} s)")
        for label, status in r["steps"].items():
            if status != "ok":
                print(f"  {label}: {status}")
    (work / "roundtrip.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
