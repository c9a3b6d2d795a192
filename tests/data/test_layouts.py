"""Layouts as published (issue 16, item 3): LIDC VOIs with an .xlsx metadata sheet, an archive that ships Train/ and
Test/ (Test becomes the external test set), and the message for a folder no layout reads. Tiny data made here."""

from __future__ import annotations

import csv
import logging
import sys

import numpy as np
import pytest

from common.data.io import write_image
from common.data.labelled_images import load_classification_dataset, split_archive
from common.data.lidc import find_lidc, read_lidc_metadata
from common.data.skin import load_skin_dataset
from common.errors import DataError

#: the columns of the ML4PM metadata sheet that the mappings read (the published sheet has more)
COLUMNS = ["patient_id", "nodule_id", "Texture_value", "Calcification_value", "Spiculation_value", "Lobulation_value",
           "Malignancy_value"]  # fmt: skip
#: (patient, nodule, texture, calcification, spiculation, lobulation, malignancy): calcified, subsolid, solid x2
ROWS = [
    ("LIDC-IDRI-0001", 1, 5, 3, 1, 1, 2),
    ("LIDC-IDRI-0002", 1, 2, 6, 1, 1, 3),
    ("LIDC-IDRI-0002", 2, 5, 6, 4, 1, 4),
    ("LIDC-IDRI-0003", 1, 5, 6, 1, 5, 5),
    ("LIDC-IDRI-0004", 1, 5, 6, 1, 1, 1),  # its VOI is missing: skipped and counted, as in the shared copy
]


def _vois(root, rows=ROWS[:4]):
    rng = np.random.default_rng(0)
    for patient, nodule, *_ in rows:
        name = f"{patient}_R_{nodule}.nii.gz"
        volume = rng.integers(-1000, -700, (20, 20, 4)).astype(np.int16)
        volume[8:13, 8:13, 1:3] = 60
        mask = np.zeros((1, 20, 20, 4), np.int16)
        mask[0, 8:13, 8:13, 1:3] = 1
        write_image(root / "image" / name, volume[None], spacing=(0.7, 0.7, 1.25))
        write_image(root / "nodule_mask" / name, mask, spacing=(0.7, 0.7, 1.25))


def _xlsx(path, rows=ROWS):
    openpyxl = pytest.importorskip("openpyxl", reason="openpyxl reads the published .xlsx metadata")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "ML4PM_MetadatabyNoduleMaxVoting"
    sheet.append(COLUMNS)
    for row in rows:
        sheet.append(list(row))
    sheet.append([None] * len(COLUMNS))  # an empty trailing row, as spreadsheets often have
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def _csv(path, rows=ROWS):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def test_lidc_as_published_xlsx_beside_vois(tmp_path):
    """data/MetadatabyNoduleMaxVoting.xlsx + data/VOIs/{image,nodule_mask}/ reads as the CSV copy does."""
    published = tmp_path / "published" / "data"
    _vois(published / "VOIs")
    _xlsx(published / "MetadatabyNoduleMaxVoting.xlsx")
    layout = find_lidc(published)
    assert layout.metadata.name == "MetadatabyNoduleMaxVoting.xlsx" and layout.voi_dir == published / "VOIs"
    rows = read_lidc_metadata(layout.metadata)
    assert len(rows) == 5 and rows[0]["nodule_id"] == "1" and rows[0]["Texture_value"] == "5"

    flat = tmp_path / "flat"  # the shared copy's layout: metadata.csv beside image/
    _vois(flat)
    _csv(flat / "metadata.csv")
    got = {}
    for name, root in (("xlsx", published), ("csv", flat)):
        data = load_classification_dataset(root, cache_dir=tmp_path / f"cache_{name}", lidc_roi_size=16)
        assert data["source"] == "lidc_vois" and data["class_names"] == ["calcified", "subsolid", "solid"]
        got[name] = [(it["patient"], it["nodule_id"], it["label"]) for it in data["items"]]
    assert (
        got["xlsx"]
        == got["csv"]
        == [
            ("LIDC-IDRI-0001", "1", 0),
            ("LIDC-IDRI-0002", "1", 1),
            ("LIDC-IDRI-0002", "2", 2),
            ("LIDC-IDRI-0003", "1", 2),
        ]
    )
    import json

    meta = json.loads((tmp_path / "cache_xlsx" / "lidc_lesion3_16" / "datalist.json").read_text())
    assert meta["skipped"]["image_missing"] == 1, "the row without a VOI is counted, not dropped silently"


def test_xlsx_without_openpyxl_says_what_to_do(tmp_path, monkeypatch):
    published = tmp_path / "data"
    _vois(published / "VOIs")
    _xlsx(published / "MetadatabyNoduleMaxVoting.xlsx")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import openpyxl -> ImportError
    expected = (
        r"is an Excel file: install openpyxl \(pip install openpyxl\) or save its sheet as CSV \(.*metadata\.csv\)"
    )
    with pytest.raises(DataError, match=expected):
        load_classification_dataset(published, cache_dir=tmp_path / "cache", lidc_roi_size=16)


def test_two_metadata_tables_are_named(tmp_path):
    _vois(tmp_path / "lidc")
    _csv(tmp_path / "lidc" / "nodule_metadata_v1.csv")
    _csv(tmp_path / "lidc" / "nodule_metadata_v2.csv")
    with pytest.raises(
        DataError, match=r"several metadata tables \['nodule_metadata_v1.csv', 'nodule_metadata_v2.csv'\]"
    ):
        load_classification_dataset(tmp_path / "lidc", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------- Train/ + Test/ archives
def _png(path, value, rgb=False):
    write_image(path, np.full((3 if rgb else 1, 12, 12), float(value)))


def _archive(root, rgb=False, test_classes=("melanoma", "nevus")):
    for split, n in (("Train", 3), ("Test", 2)):
        for c, name in enumerate(("melanoma", "nevus")):
            if split == "Test" and name not in test_classes:
                continue
            for i in range(n):
                _png(root / split / name / f"{split}_{name}_{i}.png", 40 * c + i, rgb)
    return root


def test_train_test_archive_test_is_the_external_set(tmp_path, caplog):
    root = _archive(tmp_path / "isic")
    with caplog.at_level(logging.INFO, logger="common.data.labelled_images"):
        data = load_classification_dataset(root)
    assert data["class_names"] == ["melanoma", "nevus"] and len(data["items"]) == 6
    assert all("/Train/" in it["image"] for it in data["items"])
    ext = data["external_test"]
    assert ext["origin"] == "Test/ folder of isic" and len(ext["items"]) == 4
    assert all("/Test/" in it["image"] for it in ext["items"])
    assert "ships its own split: Train/ is the data set; Test/ is held out as the test set" in caplog.text
    assert "no test_dir: the Test/ folder of isic (4 images) is the external test set" in caplog.text

    # --test_dir wins, and the unused Test/ is named in a warning
    other = _archive(tmp_path / "other")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="common.data.labelled_images"):
        data = load_classification_dataset(root, test_dir=other / "Test")
    assert data["external_test"]["origin"] == "test_dir"
    assert "test_dir given: the Test/ folder of isic (4 images) is not used" in caplog.text
    # an archive given as test_dir: its Test/ part is the external set
    data = load_classification_dataset(root, test_dir=other)
    assert all("/other/Test/" in it["image"] for it in data["external_test"]["items"])


def test_skin_archive_with_a_test_folder_missing_a_class(tmp_path):
    root = _archive(tmp_path / "isic", rgb=True, test_classes=("nevus",))
    data = load_skin_dataset(root)
    assert data["counts"] == {"melanoma": 3, "nevus": 3} and data["dataset_dir"] == str(root)
    assert data["external_test"]["counts"] == {"melanoma": 0, "nevus": 2}


def test_a_train_folder_of_images_is_a_class_not_a_split(tmp_path):
    for name in ("train", "test"):
        for i in range(2):
            _png(tmp_path / "d" / name / f"{name}{i}.png", i)
    assert split_archive(tmp_path / "d") is None
    data = load_classification_dataset(tmp_path / "d")
    assert data["class_names"] == ["test", "train"] and data["external_test"] is None


# ------------------------------------------------------------------------------------------ unrecognised layouts
def test_unrecognised_layout_says_what_was_found_and_what_each_layout_needs(tmp_path):
    (tmp_path / "vois" / "image").mkdir(parents=True)
    (tmp_path / "vois" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as info:
        load_classification_dataset(tmp_path / "vois")
    message = str(info.value)
    assert "\n" not in message, "one line"
    assert "Found 1 folder(s) without images in them (image/) and 1 file(s) (notes.txt)" in message
    assert "image/ is there but no metadata table beside it" in message
    for needs in ("(1) datalist: datalist.json", "(2) CSV: labels.csv", "(3) LIDC-IDRI VOIs: image/",
                  "(4) MedMNIST: exactly one .npz", "(5) archive with its own split: a Train/",
                  "(6) folder per class: one sub-folder per class holding images"):  # fmt: skip
        assert needs in message

    (tmp_path / "npz").mkdir()
    for name in ("a.npz", "b.npz"):
        np.savez(tmp_path / "npz" / name, x=np.zeros(1))
    with pytest.raises(DataError, match="several .npz files: give the MedMNIST file itself"):
        load_classification_dataset(tmp_path / "npz")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"test_dir '.*empty': no recognised data set\. Found an empty folder"):
        load_classification_dataset(_archive(tmp_path / "ok"), test_dir=tmp_path / "empty")
    with pytest.raises(DataError, match=r"Accepted layouts: \(1\) ISIC ground truth: a \.csv with columns image_id"):
        load_skin_dataset(tmp_path / "empty")
