"""What every check module shares: the bundle folder (``Bundle``), the report (``Report``), ``quiet`` and ``sha256``.

It checks nothing itself. ``Report`` is the verifier's output contract: one line per check, ``PASS name``,
``FAIL name: reason``, ``WARN name: reason`` or ``SKIP name: reason``, printed as it comes so that a long smoke run
shows progress, and an exception inside one check becomes that check's FAIL instead of ending the run. ``Bundle``
knows the paths of one bundle folder and whether it is an inference-only bundle exported by an evaluation, which
decides what ``required_files`` asks for and which training checks SKIP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parents[2]

#: a downstream (inference-only) bundle, written by an evaluation (``common.protocol.export``): its metadata has a
#: ``synthaug_export`` record; it has no training configs, and its weights must be there (MONAI Label loads them)
EXPORT_MARKER = "synthaug_export"
WEIGHTS = "models/model.pt"

STATUSES = ("PASS", "FAIL", "WARN", "SKIP")


@dataclass
class Result:
    """One printed line: status, check name, reason, and optional indented detail lines (e.g. a log tail)."""

    status: str
    name: str
    reason: str = ""
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.status} {self.name}" + (f": {self.reason}" if self.reason else "")


class Report:
    """Collects results and prints each as it comes, so a long smoke run shows progress."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.results: list[Result] = []

    def add(self, status: str, name: str, reason: str = "", details: Sequence[str] = ()) -> Result:
        assert status in STATUSES, status
        result = Result(status, name, " ".join(reason.split()), list(details))
        self.results.append(result)
        stream = self.stream if self.stream is not None else sys.stdout
        print(result.line(), file=stream, flush=True)
        for d in result.details:
            print(f"    | {d}", file=stream, flush=True)
        return result

    def ok(self, name: str, reason: str = "") -> None:
        self.add("PASS", name, reason)

    def fail(self, name: str, reason: str, details: Sequence[str] = ()) -> None:
        self.add("FAIL", name, reason, details)

    def warn(self, name: str, reason: str) -> None:
        self.add("WARN", name, reason)

    def skip(self, name: str, reason: str) -> None:
        self.add("SKIP", name, reason)

    def check(self, name: str, fn: Callable[[], Any]) -> None:
        """Run one check; an unexpected exception is that check's FAIL, never a crash of the whole run."""
        try:
            fn()
        except Exception as e:  # any error in a bundle is a finding, not a verifier bug
            self.fail(name, f"{type(e).__name__}: {e}")

    @property
    def failed(self) -> int:
        return sum(r.status == "FAIL" for r in self.results)

    def summary(self) -> str:
        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        return ", ".join(f"{counts[s]} {s.lower()}" for s in STATUSES)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence MONAI's logging (its handlers write to stdout) and warnings, so stdout stays one line per check."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


@dataclass
class Bundle:
    """Paths of one bundle folder."""

    root: Path

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    def config(self, name: str) -> Path:
        return self.configs / name

    @property
    def meta_file(self) -> Path:
        return self.config("metadata.json")

    @property
    def logging_file(self) -> Path:
        return self.config("logging.conf")

    @property
    def inference_only(self) -> bool:
        """A downstream bundle exported by an evaluation (metadata has ``synthaug_export``): no train/evaluate."""
        try:
            meta = json.loads(self.meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and EXPORT_MARKER in meta

    def optional(self, name: str) -> list[Path]:
        """``[configs/name]`` when the bundle has that override file, else ``[]``."""
        path = self.config(name)
        return [path] if path.is_file() else []


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
