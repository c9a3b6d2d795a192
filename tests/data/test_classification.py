"""load_classification_dataset: each layout it detects, and the one-line errors for each kind of bad data set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.data.datalist import write_datalist
from common.data.io import write_image
from common.data.labelled_images import load_classification_dataset, validate_images
from common.data.phantoms import LiverLesionPhantom
from common.errors import DataError


def _image(path, value=0.0, shape=(8, 8)):
    return write_image(path, np.full((1, *shape), float(value)))


@pytest.fixture
def class_folders(tmp_path):
    root = tmp_path / "folders"
    for name, n in [("benign", 2), ("malignant", 3)]:
        for i in range(n):
            _image(root / name / f"{name}{i}.png", i)
    (root / "benign" / "notes.txt").write_text("ignored")
    return root


def test_phantom_source(tmp_path):
    phantom = LiverLesionPhantom(n_per_class=(3, 3, 3), image_size=32)
    out = load_classification_dataset(tmp_path / "ph", phantom=phantom, phantom_dir=tmp_path / "ph")
    assert out["source"] == "phantom"
    assert out["class_names"] == ["cyst", "metastasis", "hemangioma"]
    assert out["datalist"] == str(tmp_path / "ph" / "datalist.json")
    assert len(out["items"]) == 9 and all(item["image"].startswith(str(tmp_path)) for item in out["items"])
    # The same folder given as a datalist folder reads the same items.
    again = load_classification_dataset(tmp_path / "ph")
    assert again["source"] == "datalist" and again["items"] == out["items"]


def test_folder_per_class(class_folders):
    out = load_classification_dataset(class_folders)
    assert out["source"] == "folder" and out["datalist"] is None
    assert out["class_names"] == ["benign", "malignant"]
    assert [item["label"] for item in out["items"]] == [0, 0, 1, 1, 1]
    assert out["items"][0]["patient"] == "benign0"


def test_csv_with_names_ints_and_default_patient(tmp_path):
    for i in range(4):
        _image(tmp_path / "imgs" / f"s{i}.nii.gz", i)
    (tmp_path / "labels.csv").write_text(
        "path,label,patient\nimgs/s0.nii.gz,cyst,p1\nimgs/s1.nii.gz,metastasis,p1\nimgs/s2.nii.gz,cyst,\n"
        f"{tmp_path}/imgs/s3.nii.gz,metastasis,p3\n"
    )
    out = load_classification_dataset(tmp_path)  # a folder with labels.csv
    assert out["source"] == "csv"
    assert out["class_names"] == ["cyst", "metastasis"]
    assert [item["label"] for item in out["items"]] == [0, 1, 0, 1]
    assert [item["patient"] for item in out["items"]] == ["p1", "p1", "s2", "p3"]
    (tmp_path / "ints.csv").write_text("path,label\nimgs/s0.nii.gz,1\nimgs/s1.nii.gz,0\n")
    out = load_classification_dataset(tmp_path / "ints.csv")
    assert out["class_names"] == ["0", "1"] and [i["label"] for i in out["items"]] == [1, 0]


def test_datalist_file(tmp_path):
    items = [{"image": _image(tmp_path / f"{i}.nii.gz", i), "label": i % 2, "patient": f"p{i}"} for i in range(4)]
    path = write_datalist(tmp_path / "my.json", items, class_names=["a", "b"])
    out = load_classification_dataset(path)
    assert out["source"] == "datalist" and out["class_names"] == ["a", "b"] and out["datalist"] == path


def test_missing_dataset_dir(tmp_path):
    with pytest.raises(DataError, match=r"dataset_dir '.*nowhere' does not exist \(key 'dataset_dir'\)"):
        load_classification_dataset(tmp_path / "nowhere")


def test_unrecognised_layout_lists_the_accepted_ones(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(
        DataError,
        match=r"no recognised data set\. Found 1 file\(s\) \(readme\.txt\)\. Accepted layouts: "
        r"\(1\) datalist: datalist\.json.*\(6\) folder per class: one sub-folder per class holding images",
    ):
        load_classification_dataset(tmp_path / "empty")


def test_empty_class_folder_is_named(class_folders):
    (class_folders / "unknown").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['unknown'\] hold no images"):
        load_classification_dataset(class_folders)


def test_unknown_csv_label_names_the_row(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("path,label\na.png,cyst\na.png,hemangiomma\n")
    with pytest.raises(DataError, match=r"labels\.csv' row 3: unknown label 'hemangiomma'"):
        load_classification_dataset(tmp_path / "labels.csv", class_names=["cyst", "metastasis", "hemangioma"])


def test_csv_missing_image_names_the_row(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\nmissing.png,0\n")
    with pytest.raises(DataError, match=r"row 2: image 'missing\.png' does not exist"):
        load_classification_dataset(tmp_path / "labels.csv")


def test_declared_class_without_images(tmp_path):
    items = [{"image": _image(tmp_path / "a.png"), "label": 0}]
    write_datalist(tmp_path / "datalist.json", items, class_names=["a", "b"])
    with pytest.raises(DataError, match=r"class\(es\) \['b'\] have no images"):
        load_classification_dataset(tmp_path)


def test_min_per_class(class_folders):
    with pytest.raises(DataError, match=r"\{'benign': 2\} have fewer than min_per_class=3"):
        load_classification_dataset(class_folders, min_per_class=3)


def test_class_names_mismatch(class_folders):
    with pytest.raises(DataError, match=r"sub-folder\(s\) \['malignant'\] are not among class_names"):
        load_classification_dataset(class_folders, class_names=["benign", "cancer"])


def test_lidc_layout_needs_cache_dir(tmp_path):
    (tmp_path / "lidc" / "image").mkdir(parents=True)
    (tmp_path / "lidc" / "metadata.csv").write_text("patient_id\n")
    with pytest.raises(DataError, match="set 'cache_dir'"):
        load_classification_dataset(tmp_path / "lidc")


def test_validate_images(tmp_path):
    good = [{"image": _image(tmp_path / f"g{i}.nii.gz", i)} for i in range(3)]
    assert validate_images(good, expected_shape=(8, 8)) == 3
    assert validate_images(good, max_check=1) == 1
    wrong = _image(tmp_path / "wrong.nii.gz", shape=(8, 9))
    with pytest.raises(DataError, match=r"wrong\.nii\.gz' has spatial shape \(8, 9\), expected \(8, 8\)"):
        validate_images([*good, {"image": wrong}], expected_shape=(8, 8))
    raw = (tmp_path / "g0.nii.gz").read_bytes()
    (tmp_path / "corrupt.nii.gz").write_bytes(raw[:40])
    with pytest.raises(DataError, match=r"cannot read image '.*corrupt\.nii\.gz'"):
        validate_images([{"image": str(tmp_path / "corrupt.nii.gz")}])
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((8, 8), np.nan, np.float32), np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"nan\.nii\.gz' has non-finite values: 64 NaN"):
        validate_images([{"image": str(tmp_path / "nan.nii.gz")}])


def test_datalist_label_out_of_range(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    _image(tmp_path / "a.png")
    (tmp_path / "datalist.json").write_text(
        json.dumps({"class_names": ["x"], "training": [{"image": "a.png", "label": 3}]})
    )
    with pytest.raises(DataError, match=r"datalist '.*datalist\.json' training\[0\]: unknown label 3"):
        load_classification_dataset(tmp_path)
