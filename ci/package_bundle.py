#!/usr/bin/env python
"""Package one synthaug bundle as a reproducible, self-contained model-zoo zip.

Usage (from the repository root)::

    python ci/package_bundle.py bundles/<name> --out dist/            # -> dist/<name>_v<version>.zip (+ .sha256)
    python ci/package_bundle.py bundles/*      --out dist/ --url-base https://example.org/releases/

What goes into ``<name>_v<version>.zip`` (one top-level folder ``<name>/``, as ``monai.bundle download`` expects):

- the bundle's own files that git tracks (configs/, docs/, models/, LICENSE ...), never run outputs or the phantom
  data a bundle writes on first use (``runs/``, ``data/``);
- ``<name>/common/``: a copy of the ``common`` package. The configs name ``common....`` and ``monai.bundle run``
  puts the bundle root on ``sys.path``, so a collaborator needs only the third-party packages of
  ``required_packages_version`` (``pip install monai torch pytorch-ignite nibabel itk scipy pillow fire tensorboard
  tqdm matplotlib``), not this repository. (The alternative, pinning ``synthaug-bundles`` and asking for
  ``pip install``, needs a package index that serves it; the copy works offline and keeps code and configs of one
  version together.)

An exported downstream model (``<output_dir>/evaluation/<bundle>_classification``, whose metadata has
``synthaug_export``) is packaged the same way, with the ``common`` copy it was exported with.

Reproducible: entries sorted, timestamps fixed to 1980-01-01, permissions fixed, deflate level fixed, so that two
builds of the same tree are byte-identical. Files larger than 25 MB are not zipped: they must be listed in the
bundle's ``large_files.yml`` (path, url, hash_val, hash_type sha256), which the zip carries. Writes
``<name>_v<version>.zip.sha256`` and adds the bundle to ``<out>/index.json`` (name, version, url, sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# running this file puts ci/ (not the root) on sys.path; the file selection lives in the common package
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.bundle_files import EXCLUDED_ANYWHERE, EXCLUDED_TOP, common_package_files, listed_files  # noqa: E402

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAX_BYTES = 25 * 2**20
__all__ = ["EXCLUDED_ANYWHERE", "EXCLUDED_TOP", "bundle_entries", "package", "sha256", "write_zip"]


def _large_file_paths(bundle: Path) -> set[str]:
    listed: set[str] = set()
    for name in ("large_files.yml", "large_files.yaml", "large_files.json"):
        for where in (bundle, bundle / "models"):
            f = where / name
            if f.is_file():
                for line in f.read_text().splitlines():
                    line = line.strip().lstrip("- ").strip()
                    if line.startswith("path:"):
                        listed.add(line.split(":", 1)[1].strip().strip("\"'"))
    return listed


def bundle_entries(bundle: Path) -> list[tuple[str, Path]]:
    """(name in the zip, file on disk) for every file of the bundle plus the ``common`` copy, sorted by name."""
    bundle = bundle.resolve()
    name = bundle.name
    large = _large_file_paths(bundle)
    entries = []
    for f in listed_files(bundle):
        rel = f.relative_to(bundle).as_posix()
        if f.stat().st_size > MAX_BYTES:
            if rel not in large and f"./{rel}" not in large:
                raise SystemExit(f"{f} is larger than 25 MB and not listed in large_files.yml: list it there")
            continue
        entries.append((f"{name}/{rel}", f))
    exported = "synthaug_export" in json.loads((bundle / "configs" / "metadata.json").read_text())
    if exported:  # a downstream bundle written by an evaluation carries the common copy it was exported with
        if not (bundle / "common").is_dir():
            raise SystemExit(f"{bundle}: an exported downstream bundle without its common/ copy: re-run the export")
        return sorted(entries)
    if (bundle / "common").exists():
        raise SystemExit(f"{bundle / 'common'} exists: the packager adds the common package itself")
    for rel, f in common_package_files(REPO / "common"):
        entries.append((f"{name}/common/{rel}", f))
    return sorted(entries)


def write_zip(entries: list[tuple[str, Path]], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with zipfile.ZipFile(tmp, "w") as zf:
        for arcname, f in entries:
            info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the build machine
            zf.writestr(info, f.read_bytes(), compresslevel=9)
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def package(bundle: Path, out: Path, url_base: str | None = None) -> dict:
    """Write ``<out>/<name>_v<version>.zip`` and its ``.sha256``; update ``<out>/index.json``. Returns the entry."""
    bundle = Path(bundle).resolve()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    name, version = bundle.name, meta["version"]
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"{name}_v{version}.zip"
    write_zip(bundle_entries(bundle), zip_path)
    digest = sha256(zip_path)
    (out / f"{zip_path.name}.sha256").write_text(f"{digest}  {zip_path.name}\n")
    url = (url_base.rstrip("/") + "/" + zip_path.name) if url_base else zip_path.resolve().as_uri()
    entry = {"name": name, "version": version, "url": url, "sha256": digest, "size": zip_path.stat().st_size}
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"bundles": []}
    index["bundles"] = sorted(
        [b for b in index["bundles"] if (b["name"], b["version"]) != (name, version)] + [entry],
        key=lambda b: (b["name"], b["version"]),
    )
    tmp = index_path.with_name(f".index.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, index_path)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle folders, e.g. bundles/liver_lesion_gan")
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--url-base", help="where the zips will be published (default: file:// URLs of --out)")
    args = parser.parse_args(argv)
    for bundle in args.bundles:
        if not (bundle / "configs" / "metadata.json").is_file():
            print(f"skip {bundle}: no configs/metadata.json", file=sys.stderr)
            continue
        entry = package(bundle, args.out, args.url_base)
        print(f"{entry['name']} {entry['version']} {entry['sha256']} {entry['url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
