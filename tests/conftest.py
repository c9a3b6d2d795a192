"""Shared fixtures: the repository on sys.path, and the real data sets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# One thread per test process: the suite runs as 2 pytest-xdist workers on 2 cores, and two processes with 2
# OpenMP threads each made small ops ~10x slower than 1 thread each (measured). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, Path(__file__).resolve().parent):  # the repository, and tests/ for synthaug_testing
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def real_data_root() -> Path | None:
    """``$SYNTHAUG_REAL_DATA`` if set, else ``../shared/data`` beside the repository, else None."""
    env = os.environ.get("SYNTHAUG_REAL_DATA")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture
def shared_data():
    """Return a function ``name -> Path`` of one real data set; skips the test when it is not there."""

    def get(name: str) -> Path:
        root = real_data_root()
        if root is None or not (root / name).is_dir():
            pytest.skip(
                f"real data set '{name}' not found (set SYNTHAUG_REAL_DATA or put ../shared/data beside the repo)"
            )
        return root / name

    return get


@pytest.fixture
def check_monai_label():
    """``check_bundle`` of ci/check_monai_label.py (ci/ is a folder of scripts, not a package): loads a bundle folder
    as MONAI Label does, runs one image through it, then its infer workflow standalone; returns a summary."""
    from synthaug_testing import load_ci_script

    return load_ci_script("check_monai_label").check_bundle


def _bundle_files() -> set[str]:
    root = REPO_ROOT / "bundles"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="session", autouse=True)
def runs_write_only_under_their_output_dir():
    """Every test runs bundles with an output_dir of its own (tmp_path): a file that appears under bundles/ during
    the session was written by a run outside its output_dir (the phantom once was), and fails the session."""
    before = _bundle_files()
    yield
    new = sorted(_bundle_files() - before)
    if new:
        pytest.fail(f"{len(new)} file(s) written into bundles/ by the tests, e.g. {new[:5]}", pytrace=False)
