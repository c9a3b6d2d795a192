"""Model-zoo packaging: reproducible zips, the common copy inside, large files refused, and the collaborator's round
trip (MONAI download from a file:// URL, then training, inference and evaluation from the download)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ci"))

from package_bundle import bundle_entries, package  # noqa: E402
from roundtrip_bundles import make_venv, roundtrip  # noqa: E402


def test_zip_is_reproducible_and_self_contained(tmp_path):
    a = package(REPO / "bundles" / "brain_pix2pix", tmp_path / "a")
    b = package(REPO / "bundles" / "brain_pix2pix", tmp_path / "b")
    version = json.loads((REPO / "bundles" / "brain_pix2pix" / "configs" / "metadata.json").read_text())["version"]
    za, zb = (tmp_path / d / f"brain_pix2pix_v{version}.zip" for d in ("a", "b"))
    assert za.read_bytes() == zb.read_bytes() and a["sha256"] == b["sha256"] and a["version"] == version
    assert (tmp_path / "a" / f"{za.name}.sha256").read_text().split()[0] == a["sha256"]
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["bundles"] == [a] and a["url"].startswith("file://")
    with zipfile.ZipFile(za) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"brain_pix2pix"}
        assert "brain_pix2pix/configs/metadata.json" in names and "brain_pix2pix/common/data/brain.py" in names
        assert not [n for n in names if "/runs/" in n or n.startswith("brain_pix2pix/data/") or "__pycache__" in n]
        assert {zi.date_time for zi in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_large_files_must_be_listed(tmp_path):
    bundle = tmp_path / "toy"
    shutil.copytree(REPO / "bundles" / "brain_pix2pix" / "configs", bundle / "configs")
    with open(bundle / "models" / "model.pt" if (bundle / "models").mkdir() is None else None, "wb") as f:
        f.truncate(26 * 2**20)  # sparse: 26 MB on paper, nothing on disk
    with pytest.raises(SystemExit, match="large_files.yml"):
        bundle_entries(bundle)
    (bundle / "large_files.yml").write_text(
        "large_files:\n  - path: models/model.pt\n    url: https://example.org/model.pt\n"
        f"    hash_val: {'0' * 64}\n    hash_type: sha256\n"
    )
    names = [n for n, _ in bundle_entries(bundle)]
    assert "toy/large_files.yml" in names and "toy/models/model.pt" not in names


def test_a_tampered_zip_is_refused_before_anything_is_installed(tmp_path):
    entry = package(REPO / "bundles" / "brain_pix2pix", tmp_path / "dist")
    zip_path = tmp_path / "dist" / f"brain_pix2pix_v{entry['version']}.zip"
    data = bytearray(zip_path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, as a corrupted or altered download
    zip_path.write_bytes(bytes(data))
    result = roundtrip("brain_pix2pix", tmp_path, sys.executable, entry=entry)
    assert not result["ok"] and result["steps"]["sha256"].startswith("FAIL: sha256")
    assert list(result["steps"]) == ["sha256"] and not (tmp_path / "downloads").exists()


def test_the_venv_sees_these_packages_but_not_this_repository(tmp_path):
    python = make_venv(tmp_path / "venv")
    probe = subprocess.run(
        [python, "-c", "import monai, importlib.util as u; print(u.find_spec('common') is None)"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert probe.returncode == 0 and probe.stdout.strip() == "True", probe.stderr[-2000:]


@pytest.mark.slow
def test_collaborator_round_trip(tmp_path):
    """A fresh venv (this interpreter's packages, whether it is a system one or a venv; not this repository)
    checks the published sha256, downloads the zip with MONAI and runs it."""
    result = roundtrip("brain_pix2pix", tmp_path, make_venv(tmp_path / "venv"))
    assert result["ok"], result["steps"]
    assert result["steps"]["sha256"] == "ok"
    assert result["steps"]["common_is_the_bundled_copy"] == "ok"
    assert (tmp_path / "downloads" / "brain_pix2pix" / "common" / "data" / "brain.py").is_file()
