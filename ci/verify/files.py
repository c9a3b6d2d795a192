"""The file checks: ``required_files``, ``no_scripts_dir``, ``logging_conf``, ``large_files``, ``file_sizes``.

A zoo bundle is a folder that MONAI's tools and MONAI Label open by convention, so the files they read must be
there (an inference-only bundle exported by an evaluation needs fewer files, its weights among them); bundle code
lives in the ``common`` package, never in a scripts/ folder (``$import scripts`` breaks outside the bundle root);
logging.conf must have the [loggers], [handlers] and [formatters] sections that ``logging.config.fileConfig`` reads;
and no file may exceed the zoo's 25 MB limit unless large_files.yml lists it with a sha256 that a present copy
matches, so that users download the weights CI checked.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
from pathlib import Path

from .base import Bundle, Report, sha256

REQUIRED_FILES: tuple[str, ...] = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/quick.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
)
REQUIRED_DIRS: tuple[str, ...] = ("models",)
#: what an inference-only bundle (``Bundle.inference_only``) needs: no training configs, but its weights (MONAI Label
#: loads them)
REQUIRED_FILES_INFERENCE_ONLY: tuple[str, ...] = (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
    "models/model.pt",
)
MAX_FILE_BYTES = 25 * 1000 * 1000  # the model zoo's limit for files committed with a bundle
LARGE_FILES_NAMES: tuple[str, ...] = ("large_files.yml", "large_files.yaml", "large_files.json")


def check_required_files(b: Bundle, r: Report) -> None:
    required = REQUIRED_FILES_INFERENCE_ONLY if b.inference_only else REQUIRED_FILES
    missing = [f for f in required if not (b.root / f).is_file()]
    missing += [f"{d}/" for d in REQUIRED_DIRS if not (b.root / d).is_dir()]
    if missing:
        r.fail("required_files", "missing " + ", ".join(missing))
    else:
        r.ok("required_files", "inference-only (exported downstream) bundle" if b.inference_only else "")


def check_no_scripts(b: Bundle, r: Report) -> None:
    if (b.root / "scripts").exists():
        r.fail("no_scripts_dir", "scripts/ exists: bundle code belongs in the common package (configs name common....)")
    else:
        r.ok("no_scripts_dir")


def check_logging_conf(b: Bundle, r: Report) -> None:
    if not b.logging_file.is_file():
        r.skip("logging_conf", "configs/logging.conf is missing")
        return
    ini = configparser.RawConfigParser()
    ini.read(b.logging_file, encoding="utf-8")
    missing = [s for s in ("loggers", "handlers", "formatters") if not ini.has_section(s)]
    if missing:
        r.fail("logging_conf", "configs/logging.conf lacks section(s) " + ", ".join(f"[{s}]" for s in missing))
    else:
        r.ok("logging_conf")


def _find_large_files_list(b: Bundle) -> Path | None:
    for folder in (b.root / "models", b.root):
        for name in LARGE_FILES_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def check_large_files(b: Bundle, r: Report) -> set[Path]:
    """Validate large_files.yml; return the resolved paths it lists (exempt from the size limit)."""
    listed: set[Path] = set()
    path = _find_large_files_list(b)
    if path is None:
        r.ok("large_files", "no large_files.yml")
        return listed
    try:
        if path.suffix == ".json":
            content = json.loads(path.read_text(encoding="utf-8"))
        else:
            import yaml  # PyYAML comes with MONAI's bundle tools; only needed when the bundle has this file

            content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as e:
        r.fail("large_files", f"{path.relative_to(b.root)} does not parse: {e}")
        return listed
    entries = content.get("large_files") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        r.fail("large_files", f"{path.relative_to(b.root)} needs a non-empty list under 'large_files'")
        return listed
    problems: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"entry {i} is not a mapping")
            continue
        label = entry.get("path", f"entry {i}")
        missing = [k for k in ("path", "url", "hash_val", "hash_type") if not entry.get(k)]
        if missing:
            problems.append(f"{label}: missing {', '.join(missing)}")
        if entry.get("hash_type") and str(entry["hash_type"]).lower() != "sha256":
            problems.append(f"{label}: hash_type is {entry['hash_type']!r}, not sha256")
        hash_val = str(entry.get("hash_val", ""))
        if hash_val and not re.fullmatch(r"[0-9a-fA-F]{64}", hash_val):
            problems.append(f"{label}: hash_val is not a sha256 hex digest")
        if entry.get("path"):
            target = (b.root / str(entry["path"])).resolve()
            listed.add(target)
            # a downloaded copy must be the file the url serves, or users get different weights than CI checked
            if target.is_file() and re.fullmatch(r"[0-9a-fA-F]{64}", hash_val) and sha256(target) != hash_val.lower():
                problems.append(f"{label}: the local file's sha256 differs from hash_val")
    if problems:
        r.fail("large_files", "; ".join(problems))
    else:
        r.ok("large_files", f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {path.relative_to(b.root)}")
    return listed


def _bundle_files(root: Path) -> list[Path]:
    """Files that belong to the bundle: git's view (tracked + untracked, not ignored) when in a repository."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "."],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        return [root / p for p in out.decode().split("\0") if p and (root / p).is_file()]
    except (OSError, subprocess.SubprocessError):
        return [p for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts]


def check_file_sizes(b: Bundle, r: Report, listed: set[Path]) -> None:
    too_big = [
        f"{p.relative_to(b.root)} ({p.stat().st_size / 1e6:.1f} MB)"
        for p in _bundle_files(b.root)
        if p.stat().st_size > MAX_FILE_BYTES and p.resolve() not in listed
    ]
    if too_big:
        r.fail("file_sizes", "larger than 25 MB and not in large_files.yml: " + ", ".join(too_big))
    else:
        r.ok("file_sizes")
