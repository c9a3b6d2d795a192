"""common.bundle: find_bundle_root (from the running workflow's config folder, never from sys.argv) and the one-line
data-error hook (installed by start_run, never by an import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from common.bundle import find_bundle_root
from common.errors import DataError, find_data_error

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

ROOT_CONFIG = {
    "imports": ["$import common", "$import common.bundle"],
    "bundle_name": "my_bundle",
    "bundle_root": "$common.bundle.find_bundle_root(@bundle_name)",
    "initialize": ["$common.bundle.start_run()"],
    "run": ["$@bundle_root"],
}


def _bundle(parent: Path, config: dict = ROOT_CONFIG, name: str = "my_bundle") -> Path:
    root = parent / name
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text("{}")
    (root / "configs" / "train.json").write_text(json.dumps(config))
    return root


def _root_of_run(config_file, **override) -> str:
    workflow = ConfigWorkflow(config_file=config_file, workflow_type=None, logging_file=False, **override)
    workflow.initialize()
    return workflow.run()[0]


def test_bundle_root_from_the_running_workflow(monkeypatch, tmp_path):
    """Absolute config path from anywhere, relative path inside the (downloaded) bundle folder, a list of config
    files: the workflow's config folder decides; a misleading sys.argv is not read; --bundle_root still wins."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # start_run installs the hook here: restored after
    root = _bundle(tmp_path / "somewhere")
    decoy = _bundle(tmp_path / "decoy")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setattr(sys, "argv", ["x", "run", "--config_file", f"['{decoy}/configs/train.json']"])
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert _root_of_run(str(root / "configs" / "train.json")) == str(root)
    override = root / "configs" / "quick.json"
    override.write_text("{}")
    assert _root_of_run([str(root / "configs" / "train.json"), str(override)]) == str(root)
    monkeypatch.chdir(root)
    assert _root_of_run("configs/train.json") == str(root)
    assert _root_of_run("configs/train.json", bundle_root=str(tmp_path / "given")) == str(tmp_path / "given")


def test_bundle_root_and_one_line_error_through_the_monai_cli(tmp_path):
    """``python -m monai.bundle run`` from an unrelated folder: the config finds its bundle, and a DataError raised
    after ``start_run`` ends the run in one line."""
    fail = "$(_ for _ in ()).throw(common.DataError('dataset_dir ' + @bundle_root + ' is empty'))"
    config = dict(ROOT_CONFIG, run=["$print('ROOT', @bundle_root, flush=True)", fail])
    root = _bundle(tmp_path / "somewhere", config)
    res = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(root / "configs" / "train.json")],
        cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert f"ROOT {root}" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1] == f"synthaug: error: dataset_dir {root} is empty"


def test_bundle_root_from_repository_or_bundle_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["x"])
    monkeypatch.chdir(REPO)
    assert find_bundle_root("liver_lesion_gan") == str(REPO / "bundles" / "liver_lesion_gan")
    monkeypatch.chdir(REPO / "bundles" / "liver_lesion_gan")
    assert find_bundle_root("liver_lesion_gan") == str(REPO / "bundles" / "liver_lesion_gan")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        find_bundle_root("liver_lesion_gan")


def test_data_error_found_through_wrapping():
    try:
        try:
            raise DataError("image 'a.nii.gz' is corrupt")
        except DataError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    except RuntimeError as wrapped:
        assert str(find_data_error(wrapped)) == "image 'a.nii.gz' is corrupt"
    assert find_data_error(RuntimeError("other")) is None


@pytest.mark.parametrize("traceback_env", [False, True])
def test_excepthook_prints_one_line(traceback_env):
    code = (
        "import common.bundle\nfrom common.errors import DataError\ncommon.bundle.start_run()\n"
        "try:\n    raise DataError(\"dataset_dir '/x' does not exist (key 'dataset_dir')\")\n"
        "except DataError as e:\n    raise RuntimeError('wrapped') from e\n"
    )
    env = {"PYTHONPATH": str(REPO), **({"SYNTHAUG_TRACEBACK": "1"} if traceback_env else {})}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 1
    if traceback_env:
        assert "Traceback" in res.stderr
    else:
        assert res.stderr.strip() == "synthaug: error: dataset_dir '/x' does not exist (key 'dataset_dir')"


def test_importing_common_bundle_leaves_the_excepthook_alone():
    """An import has no global side effect: a program that imports common.bundle keeps its own sys.excepthook (and
    a DataError its traceback) until a bundle run calls start_run."""
    code = (
        "import sys\nbefore = sys.excepthook\n"
        "import common.bundle, common.overrides, common.run_lock, common.protocol\n"
        "assert sys.excepthook is before, sys.excepthook\n"
        "raise common.DataError('still a traceback')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 1 and "AssertionError" not in res.stderr, res.stderr[-3000:]
    assert "Traceback" in res.stderr and "common.errors.DataError: still a traceback" in res.stderr
