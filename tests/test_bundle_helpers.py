"""common.bundle.find_bundle_root and the one-line data-error hook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.bundle import find_bundle_root
from common.errors import DataError, find_data_error

REPO = Path(__file__).resolve().parents[1]


def test_bundle_root_from_config_argument(monkeypatch, tmp_path):
    root = tmp_path / "somewhere" / "my_bundle"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text("{}")
    (root / "configs" / "train.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x", "run", "--config_file", f"['{root}/configs/train.json','other.json']"])
    assert find_bundle_root("my_bundle") == str(root)


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
        "import common.bundle\nfrom common.errors import DataError\n"
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
