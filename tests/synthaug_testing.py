"""Helpers the bundle tests share: a bundle's config paths, its workflow in-process, its CLI in a subprocess.

``tests/conftest.py`` puts this folder on ``sys.path``; a test file does
``configs, workflow, cli = bundle_helpers("<bundle name>")``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parents[1]


def bundle_helpers(name: str) -> tuple[Callable[..., list[str]], Callable[..., ConfigWorkflow], Callable]:
    """``(configs, workflow, cli)`` for ``bundles/<name>``:

    - ``configs(*names)``: the paths of ``configs/<n>.json``, in order (later files override earlier ones);
    - ``workflow(names, output_dir, workflow_type="train", **overrides)``: an initialised ``ConfigWorkflow`` of those
      configs with the bundle's metadata, ``output_dir`` and ``bundle_root`` set, and ``overrides`` as config keys;
    - ``cli(args, **kwargs)``: ``python -m monai.bundle run *args`` from the repository root (the README's way),
      output captured.
    """
    bundle = REPO / "bundles" / name
    config_dir = bundle / "configs"

    def configs(*names: str) -> list[str]:
        return [str(config_dir / f"{n}.json") for n in names]

    def workflow(names, output_dir, workflow_type="train", **overrides) -> ConfigWorkflow:
        wf = ConfigWorkflow(
            config_file=configs(*names),
            meta_file=str(config_dir / "metadata.json"),
            logging_file=False,
            output_dir=str(output_dir),
            bundle_root=str(bundle),
            workflow_type=workflow_type,
            **overrides,
        )
        wf.initialize()
        return wf

    def cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "monai.bundle", "run", *args], cwd=REPO, capture_output=True, text=True, **kwargs
        )

    return configs, workflow, cli
