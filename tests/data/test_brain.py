"""Brain MRI cases: the phantom, the BraTS / Decathlon / datalist readers, preparation, and clear errors."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from common.data.brain import find_brain_cases, prepare_cases, slice_items
from common.data.io import read_image, write_image
from common.data.phantoms import BrainTumourPhantom
from common.errors import DataError

SMALL = dict(n_cases=3, shape=(32, 32, 20))


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("brain") / "phantom"
    BrainTumourPhantom(**SMALL, seed=1).ensure(out)
    return out


def test_phantom_is_deterministic_and_has_brats_structure(phantom_dir, tmp_path):
    again = tmp_path / "again"
    BrainTumourPhantom(**SMALL, seed=1).ensure(again)
    case = "phantom001"
    for suffix in ("t1", "t1ce", "t2", "flair", "seg", "brainmask", "anatomy"):
        a = read_image(phantom_dir / case / f"{case}_{suffix}.nii.gz")
        b = read_image(again / case / f"{case}_{suffix}.nii.gz")
        np.testing.assert_array_equal(a, b)
    seg = read_image(phantom_dir / case / f"{case}_seg.nii.gz")
    brain = read_image(phantom_dir / case / f"{case}_brainmask.nii.gz")
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}, "necrosis, oedema and enhancing tumour all present"
    assert np.all(brain[seg > 0] == 1), "the tumour lies inside the brain"
    # contrasts a radiologist expects: FLAIR oedema brightest, T1c enhancing rim brighter than in T1
    flair, t1, t1c = (read_image(phantom_dir / case / f"{case}_{s}.nii.gz") for s in ("flair", "t1", "t1ce"))
    wm = read_image(phantom_dir / case / f"{case}_anatomy.nii.gz") == 3
    assert flair[seg == 2].mean() > 1.5 * flair[wm & (seg == 0)].mean()
    assert t1c[seg == 4].mean() > 1.3 * t1[seg == 4].mean()
    other = BrainTumourPhantom(**SMALL, seed=2)
    assert not other.is_current(phantom_dir), "another seed is another data set"


def test_readers_agree_on_datalist_and_brats_folders(phantom_dir, tmp_path):
    via_datalist = find_brain_cases(phantom_dir)
    folders = tmp_path / "brats"
    shutil.copytree(phantom_dir, folders, ignore=shutil.ignore_patterns("*.json"))
    via_folders = find_brain_cases(folders)
    assert via_datalist["sequences"] == via_folders["sequences"] == ["t1", "t1ce", "t2", "flair"]
    assert [c["case_id"] for c in via_folders["items"]] == [c["case_id"] for c in via_datalist["items"]]
    subset = find_brain_cases(folders, sequences=["flair", "t1ce"])
    assert [p.rsplit("_", 1)[-1] for p in subset["items"][0]["image"]] == ["flair.nii.gz", "t1ce.nii.gz"]


def test_decathlon_layout_and_its_label_convention(phantom_dir, tmp_path):
    root = tmp_path / "Task01_BrainTumour"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    case = "phantom000"
    seqs = [read_image(phantom_dir / case / f"{case}_{s}.nii.gz")[0] for s in ("flair", "t1", "t1ce", "t2")]
    nib.save(nib.Nifti1Image(np.stack(seqs, -1), np.eye(4)), str(root / "imagesTr" / "BRATS_001.nii.gz"))
    seg = read_image(phantom_dir / case / f"{case}_seg.nii.gz")[0]
    decathlon = np.select([seg == 2, seg == 1, seg == 4], [1, 2, 3], 0).astype(np.int16)  # 1 oedema 2 non-enh 3 enh
    nib.save(nib.Nifti1Image(decathlon, np.eye(4)), str(root / "labelsTr" / "BRATS_001.nii.gz"))
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    found = find_brain_cases(root)
    assert found["sequences"] == ["flair", "t1", "t1ce", "t2"]
    prepared = prepare_cases(found, tmp_path / "prep", image_size=16, n_slices=8)
    label = read_image(prepared["items"][0]["label"])
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 4} and (label == 4).any(), "remapped to BraTS labels"


def test_preparation_crops_resamples_normalises_and_is_reused(phantom_dir, tmp_path):
    found = find_brain_cases(phantom_dir)
    prepared = prepare_cases(found, tmp_path / "prep", image_size=16, n_slices=8)
    case = prepared["items"][0]
    image, brain = read_image(case["image"]), read_image(case["brain"])
    assert image.shape == (4, 16, 16, 8) and brain.shape == (1, 16, 16, 8)
    assert image.min() >= -1 and image.max() <= 1 and np.all(image[:, brain[0] == 0] == -1), "skull-stripped"
    assert case["slices"] and all(0 <= z < 8 for z in case["slices"])
    stamp = (tmp_path / "prep" / case["case_id"] / "image.nii").stat().st_mtime_ns
    prepare_cases(found, tmp_path / "prep", image_size=16, n_slices=8)
    assert (tmp_path / "prep" / case["case_id"] / "image.nii").stat().st_mtime_ns == stamp, "reused, not rewritten"
    slices = slice_items(prepared["items"])
    assert len(slices) == sum(len(c["slices"]) for c in prepared["items"]) and "z" in slices[0]


def _copy(phantom_dir, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(phantom_dir, out, ignore=shutil.ignore_patterns("*.json"))
    return out


def test_bad_input_names_the_case_or_file(phantom_dir, tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        find_brain_cases(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no brain MRI cases"):
        find_brain_cases(tmp_path)

    missing = _copy(phantom_dir, tmp_path, "missing")
    (missing / "phantom002" / "phantom002_t2.nii.gz").unlink()
    with pytest.raises(DataError, match=r"phantom002.*'t2'"):
        find_brain_cases(missing, sequences=["t1", "t2"])
    assert find_brain_cases(missing)["sequences"] == ["t1", "t1ce", "flair"], "by default: the shared sequences"

    mismatched = _copy(phantom_dir, tmp_path, "mismatched")
    write_image(mismatched / "phantom001" / "phantom001_seg.nii.gz", np.zeros((1, 30, 32, 20), np.int16))
    with pytest.raises(DataError, match=r"phantom001.*mismatched"):
        prepare_cases(find_brain_cases(mismatched), tmp_path / "p1", image_size=16, n_slices=8)

    corrupt = _copy(phantom_dir, tmp_path, "corrupt")
    bad = corrupt / "phantom000" / "phantom000_flair.nii.gz"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match="phantom000_flair.nii.gz"):
        prepare_cases(find_brain_cases(corrupt), tmp_path / "p2", image_size=16, n_slices=8)

    labels = _copy(phantom_dir, tmp_path, "labels")
    seg = read_image(labels / "phantom000" / "phantom000_seg.nii.gz")
    seg[0, 5, 5, 5] = 7
    write_image(labels / "phantom000" / "phantom000_seg.nii.gz", seg)
    with pytest.raises(DataError, match=r"phantom000.*\[7\]"):
        prepare_cases(find_brain_cases(labels), tmp_path / "p3", image_size=16, n_slices=8)


@pytest.mark.realdata
def test_brats2015_reads_and_prepares(shared_data, tmp_path):
    found = find_brain_cases(shared_data("brats2015"))
    assert found["sequences"] == ["t1ce", "flair"] and len(found["items"]) == 4
    prepared = prepare_cases({**found, "items": found["items"][:1]}, tmp_path, image_size=32, n_slices=16)
    label = read_image(prepared["items"][0]["label"])
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 4}, "BRATS 2013 label 3 joined the core"
    assert read_image(prepared["items"][0]["image"]).shape == (2, 32, 32, 16)
