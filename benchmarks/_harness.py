"""What every benchmark script shares: peak memory of a case, and running each case in its own subprocess.

A case runs in a fresh interpreter (``<script> --case NAME <the caller's arguments>``) so that its peak memory (max
RSS on CPU, max allocated on CUDA) is its own and one case's warm-up does not speed up the next; the subprocess
prints one JSON line, its result.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Sequence

import torch


def peak_mb(device: torch.device) -> float:
    """Peak memory of this process so far: max allocated on CUDA, max resident set size on CPU (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_cases(script: str, cases: Sequence[str], argv: Sequence[str]) -> dict[str, dict]:
    """``{case: result}``: ``script --case CASE *argv`` per case, each in its own interpreter."""
    results = {}
    for case in cases:
        cmd = [sys.executable, script, "--case", case, *argv]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[case] = json.loads(out)
    return results
