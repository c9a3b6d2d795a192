"""The phantom framework: deterministic procedural data sets written once as real files plus a datalist.

A phantom is the embedded default data set of a bundle. It is materialised on first use into ``out_dir``::

    out_dir/
      images/<patient>_<index>.<file_format>
      datalist.json      Decathlon-style, read by exactly the code path real data takes
      phantom.json       the spec: every parameter that determines the files (incl. seed and version)

and reused as long as ``phantom.json`` equals the current spec. A changed spec (other seed, size, version) rebuilds
the set in ``<out_dir>.tmp-<pid>`` and swaps it in with renames, so a killed run never leaves a half-written set.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.data.datalist import write_datalist
from common.data.io import write_image
from common.fs import atomic_write_text, staging_dir, swap_in

__all__ = ["Phantom"]

DATALIST_NAME = "datalist.json"
SPEC_NAME = "phantom.json"


def canonical_spec(spec: dict[str, Any]) -> Any:
    """``spec`` as stored in ``phantom.json``: a JSON round trip (tuples become lists, numpy scalars Python numbers),
    so that a spec compares equal to its stored copy."""
    return json.loads(json.dumps(spec, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


class Phantom:
    """Base class of procedural data sets. Subclasses set ``name``, ``version`` and ``class_names`` and implement
    :meth:`spec` (adding their parameters to ``super().spec()``) and :meth:`generate`.

    Args:
        seed: seed of ``numpy.random.default_rng``; the same spec always gives identical files.
        file_format: ``"nii.gz"`` or ``"png"`` (see :func:`common.data.io.write_image` for what each stores).
    """

    name: str = "phantom"
    #: Bump when the generator code changes its output, so that cached sets are rebuilt.
    version: str = "1"
    class_names: tuple[str, ...] = ()
    file_formats: tuple[str, ...] = ("nii.gz", "png")

    def __init__(self, seed: int = 0, file_format: str = "nii.gz") -> None:
        if file_format not in self.file_formats:
            raise ValueError(
                f"{type(self).__name__}: file_format must be one of {self.file_formats}, got {file_format!r}"
            )
        self.seed = int(seed)
        self.file_format = file_format

    def spec(self) -> dict[str, Any]:
        """Every parameter that determines the output; stored as ``phantom.json`` and compared on reuse."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "version": self.version,
            "seed": self.seed,
            "file_format": self.file_format,
            "class_names": list(self.class_names),
        }

    def generate(self) -> Iterator[dict[str, Any]]:
        """Yield ``{"array": channel-first ndarray, "label": int, "patient": str, ...}`` deterministically."""
        raise NotImplementedError

    def rng(self) -> np.random.Generator:
        """A fresh generator from the seed: every call of :meth:`generate` starts from the same state."""
        return np.random.default_rng(self.seed)

    def meta(self) -> dict[str, Any]:
        """Extra top-level datalist entries (e.g. intensity units); subclasses may extend it."""
        return {}

    def is_current(self, out_dir: str | os.PathLike) -> bool:
        """True when ``out_dir`` holds a complete set written from the current spec."""
        out_dir = Path(out_dir)
        spec_file, datalist = out_dir / SPEC_NAME, out_dir / DATALIST_NAME
        if not (spec_file.is_file() and datalist.is_file()):
            return False
        try:
            stored = json.loads(spec_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        return stored == canonical_spec(self.spec())

    def write(self, out_dir: str | os.PathLike) -> str:
        """Generate every sample into ``out_dir`` (which must exist) and write the datalist and spec last."""
        out_dir = Path(out_dir)
        items = []
        counters: dict[str, int] = {}
        for sample in self.generate():
            sample = dict(sample)
            array = sample.pop("array")
            patient = str(sample["patient"])
            counters[patient] = counters.get(patient, 0) + 1
            rel = f"images/{patient}_{counters[patient]:02d}.{self.file_format}"
            write_image(out_dir / rel, array, spacing=sample.pop("spacing", None))
            items.append({"image": rel, **{k: v for k, v in sample.items() if not isinstance(v, np.ndarray)}})
        counts = [sum(item["label"] == c for item in items) for c in range(len(self.class_names))]
        datalist = write_datalist(
            out_dir / DATALIST_NAME,
            items,
            name=self.name,
            class_names=list(self.class_names),
            counts=dict(zip(self.class_names, counts, strict=True)),
            phantom=canonical_spec(self.spec()),
            **self.meta(),
        )
        # The spec is written last: its presence (and equality) is what marks the set complete.
        atomic_write_text(out_dir / SPEC_NAME, json.dumps(canonical_spec(self.spec()), indent=1) + "\n")
        return datalist

    def ensure(self, out_dir: str | os.PathLike) -> str:
        """Return the datalist path of this phantom in ``out_dir``, writing the set first if needed.

        Reuses the files when ``phantom.json`` equals :meth:`spec`; otherwise builds the whole set in
        ``<out_dir>.tmp-<pid>`` and renames it into place (the previous set is removed only after that).
        """
        out_dir = Path(os.path.abspath(out_dir))
        if self.is_current(out_dir):
            return str(out_dir / DATALIST_NAME)
        tmp = staging_dir(out_dir)
        try:
            self.write(tmp)
            if self.is_current(out_dir):  # another process (e.g. a second DDP rank) finished first: keep its set
                return str(out_dir / DATALIST_NAME)
            try:
                swap_in(tmp, out_dir)
            except OSError:
                # Another process (e.g. a second DDP rank) swapped in the same set first: use it if it is current.
                if not self.is_current(out_dir):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return str(out_dir / DATALIST_NAME)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k not in ("name", "class", "class_names"))
        return f"{type(self).__name__}({params})"
