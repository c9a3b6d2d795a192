#!/usr/bin/env python
"""The collaborator's round trip for every bundle: package, download with MONAI, run from the download.

For each bundle: ``ci/package_bundle.py`` writes the zip and its published sha256; the zip is checked against that
sha256 (MONAI's ``check_hash``) and refused on a mismatch, as the README tells a collaborator to do; a fresh virtual
environment (which sees the third-party packages of the interpreter running this script, whether that is a system
interpreter or itself a venv, but not this repository) runs
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


def make_venv(env_dir: Path) -> str:
    """A fresh venv whose ``sys.path`` holds this interpreter's site-packages folders (through a ``.pth`` file) but
    not their ``.pth`` files, so an editable install of this repository stays out. ``system_site_packages`` would
    give the *base* interpreter's packages, which lack MONAI when this script itself runs in a venv. Returns its
    python."""
    import site

    venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    parents = [*site.getsitepackages(), site.getusersitepackages()]
    (Path(target) / "_synthaug_parent_site.pth").write_text("".join(f"{p}\n" for p in parents if Path(p).is_dir()))
    return str(python)


def _local_path(url: str) -> Path:
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    return Path(url2pathname(urlparse(url).path))


def verify_zip(zip_path: Path, published_sha256: str) -> str:
    """ "ok" when ``zip_path`` has the published sha256, else the reason it must not be installed."""
    from monai.apps.utils import check_hash

    if check_hash(str(zip_path), published_sha256, hash_type="sha256"):
        return "ok"
    return f"FAIL: sha256 of {zip_path.name} differs from the published {published_sha256}: refusing to install it"


def roundtrip(name: str, work: Path, python: str, timeout: int = 900, entry: dict | None = None) -> dict:
    """Package (unless ``entry``, an already packaged bundle's index entry, is given), verify, download and run one
    bundle; returns ``{"name", "ok", "steps": {...}, "seconds"}``."""
    start = time.perf_counter()
    entry = entry or package(REPO / "bundles" / name, work / "dist")
    dl = work / "downloads"
    steps: dict[str, str] = {"sha256": verify_zip(_local_path(entry["url"]), entry["sha256"])}
    if steps["sha256"] != "ok":
        return {"name": name, "version": entry["version"], "ok": False, "steps": steps, "seconds": 0.0}
    dl.mkdir(exist_ok=True)

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
        python = make_venv(work / "venv")
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
