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
