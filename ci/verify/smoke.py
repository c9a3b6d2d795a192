"""The ``--smoke`` checks: ``smoke_train``, ``smoke_checkpoint``, ``smoke_inference``, ``smoke_outputs``.

Parsing proves little about whether a bundle runs, so a tiny training (one epoch of train.json + quick.json
[+ smoke.json]) and an inference with the same size overrides (+ smoke_inference.json) run through
``python -m monai.bundle run`` as subprocesses from the repository root, each with a timeout that also stops its
data-loader workers; the training must leave a checkpoint, and the inference must write data files plus a datalist
JSON whose entries name files that exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import REPO_ROOT, Bundle, Report
from .configs import config_label, load_config

CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pt", ".pth")
DEFAULT_TIMEOUT_S = 900.0


def _config_list_arg(files: Sequence[Path]) -> str:
    """The ``--config_file`` value for several files, as the README's commands write it: "['a','b']"."""
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def _run_logged(cmd: list[str], log: Path, timeout: float) -> tuple[int | None, list[str]]:
    """Run ``cmd`` from the repository root; return (exit code or None on timeout, last lines of its output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        # a session of its own, so a timeout can stop data-loader workers too, not only the main process
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    return code, tail


def _snapshot(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def _datalist_entries(content: Any) -> list[dict]:
    """Entries of a datalist: a list of dicts, or a dict whose list values are lists of dicts (Decathlon style)."""
    if isinstance(content, list) and content and all(isinstance(e, dict) for e in content):
        return content
    if isinstance(content, dict):
        return [e for v in content.values() if isinstance(v, list) for e in v if isinstance(e, dict)]
    return []


def _names_existing_file(entry: dict, bases: Sequence[Path]) -> bool:
    for value in entry.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and any((base / item).is_file() for base in bases):
                return True  # an absolute path ignores the base
    return False


def check_smoke(b: Bundle, r: Report, meta: dict | None, workdir: Path, timeout: float) -> None:
    out, logs = workdir / "output", workdir / "logs"
    out.mkdir(parents=True, exist_ok=True)
    common = ["--meta_file", str(b.meta_file), "--bundle_root", str(b.root), "--output_dir", str(out)]
    if b.logging_file.is_file():
        common += ["--logging_file", str(b.logging_file)]
    needed = [b.config(n) for n in ("train.json", "quick.json", "inference.json")] + [b.meta_file]
    if not all(p.is_file() for p in needed):
        for n in ("smoke_train", "smoke_checkpoint", "smoke_inference", "smoke_outputs"):
            r.skip(n, "train.json, quick.json, inference.json or metadata.json is missing")
        return

    train_files = [b.config("train.json"), b.config("quick.json"), *b.optional("smoke.json")]
    with contextlib.suppress(Exception):  # a config that does not parse fails in config_parse and below
        if "max_epochs" not in load_config(train_files, b.meta_file):
            r.warn("smoke_max_epochs", "no top-level 'max_epochs': the --max_epochs 1 override reaches nothing")
    train_cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        _config_list_arg(train_files),
    ]
    train_cmd += [*common, "--max_epochs", "1"]
    code, tail = _run_logged(train_cmd, logs / "smoke_train.log", timeout)
    if code != 0:
        why = f"timed out after {timeout:g} s" if code is None else f"exit code {code}"
        r.fail("smoke_train", f"{why} (log: {logs / 'smoke_train.log'})", tail)
        for n in ("smoke_checkpoint", "smoke_inference", "smoke_outputs"):
            r.skip(n, "smoke training failed")
        return
    r.ok("smoke_train", config_label(train_files) + ", 1 epoch")

    checkpoints = sorted(
        (p for p in out.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES), key=lambda p: p.stat().st_mtime
    )
    if checkpoints:
        r.ok("smoke_checkpoint", str(checkpoints[-1].relative_to(out)))
    else:
        r.fail("smoke_checkpoint", f"no *.pt checkpoint under {out}")

    # the same size overrides as the training run, or the networks would not match the trained weights
    infer_files = [
        b.config("inference.json"),
        b.config("quick.json"),
        *b.optional("smoke.json"),
        *b.optional("smoke_inference.json"),
    ]
    infer_cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_list_arg(infer_files), *common]
    try:
        has_ckpt_key = "ckpt_path" in load_config(infer_files, b.meta_file)
    except Exception:  # a config that does not parse is reported by config_parse and fails below
        has_ckpt_key = False
    if has_ckpt_key and checkpoints:
        infer_cmd += ["--ckpt_path", str(checkpoints[-1])]
    before = _snapshot(out)
    code, tail = _run_logged(infer_cmd, logs / "smoke_inference.log", timeout)
    if code != 0:
        why = f"timed out after {timeout:g} s" if code is None else f"exit code {code}"
        r.fail("smoke_inference", f"{why} (log: {logs / 'smoke_inference.log'})", tail)
        r.skip("smoke_outputs", "smoke inference failed")
        return
    r.ok("smoke_inference", config_label(infer_files))

    written = [p for p, t in _snapshot(out).items() if before.get(p) != t]
    data_files = [p for p in written if p.suffix not in (".json", ".log", *CHECKPOINT_SUFFIXES)]
    datalists = []
    for p in (p for p in written if p.suffix == ".json"):
        with contextlib.suppress(OSError, ValueError):
            entries = _datalist_entries(json.loads(p.read_text(encoding="utf-8")))
            if entries and _names_existing_file(entries[0], [p.parent, out, REPO_ROOT, b.root]):
                datalists.append(p)
    if not data_files:
        r.fail("smoke_outputs", f"inference wrote no data files under {out}")
    elif not datalists:
        r.fail("smoke_outputs", f"inference wrote {len(data_files)} file(s) but no datalist JSON naming them")
    else:
        names = ", ".join(str(p.relative_to(out)) for p in datalists)
        r.ok("smoke_outputs", f"{len(data_files)} file(s), datalist {names}")
