"""Atomic file and folder writes, so that a killed process never leaves a half-written file or data set behind.

A foundation module (see ``tests/test_import_layers.py``): the data readers and writers, the phantoms and the
protocol's Turing-test kit all write through it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "remove_stale_siblings", "staging_dir", "swap_in"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same suffixes; on success move it onto ``path``.

    The temporary file lives in the same folder (so ``os.replace`` is an atomic rename on one file system) and keeps
    the full suffix (``.nii.gz``), because writers such as nibabel choose the format from the file name.
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if path.suffixes else ""
    # A fresh name rather than mkstemp: mkstemp creates the file with mode 0600, and the writer (nibabel, PIL)
    # should create it itself with the usual permissions.
    tmp_path = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + ``os.replace``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or we cannot tell: leave its folder alone
    return True


def remove_stale_siblings(out_dir: Path) -> None:
    """Remove ``<out_dir>.tmp-<pid>`` / ``<out_dir>.old-<pid>`` folders left by processes that no longer run."""
    for sibling in out_dir.parent.glob(f"{out_dir.name}.*-*"):
        tag, _, pid = sibling.name[len(out_dir.name) + 1 :].partition("-")
        if tag in ("tmp", "old") and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)


def staging_dir(out_dir: Path) -> Path:
    """Return a fresh, empty ``<out_dir>.tmp-<pid>`` folder to build a data set in before :func:`swap_in`."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished folder ``tmp`` with renames only.

    A kill between the two renames leaves ``out_dir`` absent (and ``<out_dir>.old-<pid>`` behind, cleaned up later),
    never half-written: the next run simply builds it again.
    """
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
