"""``max_per_class``: quick runs on real sets use a per-class cap of whole patients; the phantom is used whole."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser
from synthaug_testing import REPO as REPO_ROOT

from common.data.labelled_images import limit_per_class


def _dataset():
    # patient pA: 3 images of class 0; pB: 1 of class 0 + 1 of class 1; then single-image patients
    items = [{"image": f"a{i}.png", "label": 0, "patient": "pA"} for i in range(3)]
    items += [{"image": "b0.png", "label": 0, "patient": "pB"}, {"image": "b1.png", "label": 1, "patient": "pB"}]
    items += [{"image": f"s{i}.png", "label": i % 2, "patient": f"s{i}"} for i in range(10)]
    return {"items": items, "class_names": ["no", "yes"], "source": "test"}


@pytest.mark.parametrize("seed", range(5))
def test_cap_holds_keeps_whole_patients_and_the_reader_order(seed):
    data = _dataset()
    out = limit_per_class(data, 3, seed=seed)
    labels = [it["label"] for it in out["items"]]
    assert labels.count(0) <= 3 and labels.count(1) <= 3 and out["subsample"]["of"] == 15
    patients = {it["patient"] for it in out["items"]}
    for p in patients:  # a kept patient has every image kept
        assert sum(it["patient"] == p for it in out["items"]) == sum(it["patient"] == p for it in data["items"])
    order = [data["items"].index(it) for it in out["items"]]
    assert order == sorted(order)
    assert out["subsample"]["per_class"] == {"no": labels.count(0), "yes": labels.count(1)}
    assert limit_per_class(data, 3, seed=seed) == out, "the seed fixes the draw"


def test_no_cap_is_the_data_set_itself_and_bad_caps_are_refused():
    data = _dataset()
    assert limit_per_class(data, None) is data
    assert len(limit_per_class(data, 100)["items"]) == 15
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="max_per_class"):
            limit_per_class(data, bad)


@pytest.mark.parametrize(
    "bundle, cap", [("liver_lesion_gan", 60), ("lung_cisl_gan", 80), ("spine_stylegan2", 100), ("skin_melanogan", 40)]
)
def test_quick_caps_a_real_set_and_leaves_the_phantom_whole(bundle, cap, tmp_path):
    configs = [str(REPO_ROOT / "bundles" / bundle / "configs" / f"{n}.json") for n in ("train", "evaluate", "quick")]
    for dataset_dir, expected in ((None, None), (str(tmp_path), cap)):
        parser = ConfigParser()
        parser.read_config(configs)
        parser["output_dir"] = str(tmp_path / "out")
        if dataset_dir is not None:
            parser["dataset_dir"] = dataset_dir
        assert parser.get_parsed_content("max_per_class") == expected
        assert parser.get("train#dataset#max_per_class") == "@max_per_class"
