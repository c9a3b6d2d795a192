"""Patient-separated folds, saved once; report summaries and honest verdicts."""

from __future__ import annotations

import json

import pytest

from common.errors import DataError
from common.protocol import compare_arms, load_or_make_splits, make_splits, render_markdown, select, summarize_arms
from common.protocol.report import write_report


def _items(n_patients=30, per_patient=2):
    return [
        {"image": f"/d/p{p}_{i}.nii.gz", "label": p % 3, "patient": f"p{p:03d}"}
        for p in range(n_patients)
        for i in range(per_patient)
    ]


def test_folds_separate_patients_and_cover_everything():
    items = _items()
    splits = make_splits(items, k=3, seed=0, val_fraction=0.2)
    tests = [set(f["test"]) for f in splits["folds"]]
    assert set().union(*tests) == {it["patient"] for it in items}
    assert all(not (a & b) for i, a in enumerate(tests) for b in tests[i + 1 :])
    for f in splits["folds"]:
        train, val, test = set(f["train"]), set(f["val"]), set(f["test"])
        assert not (train & val) and not (train & test) and not (val & test)
        assert val, "a validation split for model selection is always there"
        labels = {it["label"] for it in select(items, f["test"])}
        assert labels == {0, 1, 2}, "stratified: every class in every test fold"


def test_splits_are_saved_and_reused_but_never_silently_replaced(tmp_path):
    path = tmp_path / "splits.json"
    a = load_or_make_splits(str(path), _items(), 3, 0)
    assert json.loads(path.read_text()) == a
    assert load_or_make_splits(str(path), _items(), 3, 0) == a
    with pytest.raises(DataError, match="splits for other data"):
        load_or_make_splits(str(path), _items(n_patients=31), 3, 0)


def test_too_few_patients():
    """Fewer patients than folds: leave-one-patient-out with a warning (issue 16); fewer than one patient each for
    training, validation and test: an error that says so."""
    with pytest.raises(DataError, match=r"only 2 patient\(s\): .* needs at least 3 \(one each for training, valid"):
        make_splits(_items(n_patients=2), k=3, seed=0)
    assert len(make_splits(_items(n_patients=2), k=3, seed=0, val_fraction=0)["folds"]) == 2


def test_summaries_and_verdicts():
    per_fold = {
        "classic": [{"accuracy": 0.70}, {"accuracy": 0.72}, {"accuracy": 0.71}],
        "classic+synthetic": [{"accuracy": 0.80}, {"accuracy": 0.83}, {"accuracy": 0.81}],
        "noisy": [{"accuracy": 0.60}, {"accuracy": 0.85}, {"accuracy": 0.70}],
    }
    arms = summarize_arms(per_fold)
    assert arms["classic"]["metrics"]["accuracy"]["mean"] == pytest.approx(0.71)
    assert arms["classic"]["metrics"]["accuracy"]["std"] == pytest.approx(0.01)
    comp = compare_arms(per_fold, [("classic+synthetic", "classic"), ("noisy", "classic"), ("classic", "noisy")])
    assert comp["classic+synthetic vs classic"]["accuracy"]["verdict"] == "better"
    assert comp["noisy vs classic"]["accuracy"]["verdict"] == "no clear difference"
    worse = compare_arms(
        {"a": [{"accuracy": 0.5}, {"accuracy": 0.52}], "b": [{"accuracy": 0.7}, {"accuracy": 0.71}]}, [("a", "b")]
    )
    assert worse["a vs b"]["accuracy"]["verdict"] == "worse"


def test_write_report_files(tmp_path):
    per_fold = {"classic": [{"accuracy": 0.7, "sensitivity": 0.6}, {"accuracy": 0.8, "sensitivity": 0.7}]}
    report = {
        "bundle": "x",
        "paper": "p",
        "dataset": "phantom",
        "seed": 0,
        "folds": 2,
        "arms": summarize_arms(per_fold),
        "comparisons": {},
        "paper_reference": {"classic": {"sensitivity": 0.786}},
    }
    write_report(report, str(tmp_path))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert (
        saved["arms"]["classic"]["metrics"]["accuracy"]["ci95"][0]
        < 0.75
        < saved["arms"]["classic"]["metrics"]["accuracy"]["ci95"][1]
    )
    md = (tmp_path / "report.md").read_text()
    assert "| classic | 75.0 ± 7.1" in md and "sensitivity 78.6" in md
    assert (tmp_path / "report_arms.png").is_file()
    assert "classic" in render_markdown(report)
