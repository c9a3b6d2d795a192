"""Which files make up a bundle and the ``common`` package copy it carries: the one place that decides.

Both ``ci/package_bundle.py`` (a GAN bundle as a model-zoo zip) and ``common.protocol.export`` (the downstream model
of an evaluation as a MONAI Label bundle folder) put a copy of ``common`` inside a bundle, so that it runs without
this repository. In a git checkout the files are git's view (tracked, plus untracked files that are not ignored);
elsewhere, e.g. inside a downloaded bundle, there is no git and the folder is walked. Caches never go in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "COMMON_SUFFIXES",
    "EXCLUDED_ANYWHERE",
    "EXCLUDED_TOP",
    "common_package_files",
    "copy_common_package",
    "listed_files",
]

#: the ``common`` package root (this file's folder)
COMMON_DIR = Path(__file__).resolve().parent
#: run outputs and the phantom data a bundle writes on first use (top-level folders of a bundle only)
EXCLUDED_TOP = frozenset({"runs", "data", "dist"})
EXCLUDED_ANYWHERE = frozenset({"__pycache__", ".pytest_cache", ".git"})
#: what of ``common`` a bundle needs: code and the data files configs name (e.g. ``tracking/mlflow.json``)
COMMON_SUFFIXES = (".py", ".json", ".txt", ".md")


def _excluded(rel: Path, top_level: bool) -> bool:
    return bool(EXCLUDED_ANYWHERE & set(rel.parts)) or (top_level and rel.parts[0] in EXCLUDED_TOP)


def _git_root(folder: Path) -> Path | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.decode().strip()).resolve()


def listed_files(folder: str | os.PathLike, top_level: bool = True) -> list[Path]:
    """Files of ``folder`` (sorted), without caches and, with ``top_level``, without its ``runs/ data/ dist/``.

    In a git work tree: the files git tracks or would track (not ignored). Git is asked only when it tracks
    ``folder`` itself: a bundle folder written into an ignored place of a checkout (``runs/``) is walked, as is a
    folder outside any checkout.
    """
    folder = Path(folder).resolve()
    root = _git_root(folder)
    files = None
    if root is not None:
        try:
            out = subprocess.run(
                ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", str(folder)],
                cwd=root,
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
            files = [root / p for p in out.decode().split("\0") if p]
        except (OSError, subprocess.SubprocessError):
            files = None
        if not files:  # ignored by git (or empty to it): not git's business, walk it
            files = None
    if files is None:
        files = [p for p in folder.rglob("*") if p.is_file()]
    return sorted(p for p in files if p.is_file() and not _excluded(p.relative_to(folder), top_level))


def common_package_files(common_dir: str | os.PathLike = COMMON_DIR) -> list[tuple[str, Path]]:
    """``(path relative to common/, file)`` for every file of the package a bundle copy needs, sorted."""
    common_dir = Path(common_dir).resolve()
    return [
        (f.relative_to(common_dir).as_posix(), f)
        for f in listed_files(common_dir, top_level=False)
        if f.suffix in COMMON_SUFFIXES
    ]


def copy_common_package(dest: str | os.PathLike, common_dir: str | os.PathLike = COMMON_DIR) -> list[str]:
    """Copy the package's files into ``dest`` (a new ``<bundle>/common``); returns the relative names copied."""
    dest = Path(dest)
    names = []
    for rel, f in common_package_files(common_dir):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest / rel)
        names.append(rel)
    return names
