"""Honest reports: no bare NaN in report.json (null + reason), a fold missing a class named in the log and report.md,
balanced accuracy / sensitivity / specificity from one confusion matrix, and a warning for arms at or below chance.
Built from tiny per-fold result dicts: nothing is trained."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import common.protocol.report as report_module
from common.metrics.classification import classification_metrics, metrics_from_confusion
from common.protocol.augmentation.report_sections import binary_mean
from common.protocol.report import compare_arms, render_markdown, review_report, summarize_arms, write_report

CLASSES = ["solid", "subsolid"]


def _fold(labels, positive_scores) -> dict:
    """One fold's test metrics from true labels and the classifier's score for class 1."""
    p1 = np.asarray(positive_scores, dtype=float)
    return classification_metrics(np.stack([1 - p1, p1], 1), np.asarray(labels), CLASSES)


def _all_negative_folds() -> list[dict]:
    """A classifier that calls everything 'solid'; the third test fold (fold 2) has no 'subsolid' image: the case
    that used to read balanced accuracy 66.7 beside sensitivity 0 and specificity 100."""
    return [
        _fold([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]),
        _fold([0, 1, 1, 0], [0.2, 0.1, 0.4, 0.3]),
        _fold([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4]),
    ]


def _report(per_fold: dict, **extra) -> dict:
    return {
        "bundle": "x",
        "paper": "p",
        "dataset": "phantom",
        "class_names": CLASSES,
        "seed": 0,
        "folds": 3,
        "arms": summarize_arms(per_fold),
        "comparisons": compare_arms(per_fold, [(a, b) for a in per_fold for b in per_fold if a != b][:1]),
        "paper_reference": {},
        **extra,
    }


def _strict_load(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in report.json")

    return json.loads(text, parse_constant=refuse)


def test_nan_is_written_as_null_with_its_reason_and_json_is_strict(tmp_path):
    folds = _all_negative_folds()
    synthesis = {"psnr": float("inf"), "kid": np.float32("nan"), "ok": np.float64(0.5)}  # no reason of their own
    write_report(_report({"real": folds}, synthesis=synthesis), str(tmp_path))
    saved = _strict_load((tmp_path / "report.json").read_text())
    fold2 = saved["arms"]["real"]["per_fold"][2]
    assert fold2["auc"] is None and fold2["undefined"]["auc"] == "test set lacks class 'subsolid'"
    assert fold2["per_class"]["subsolid"]["sensitivity"] is None
    assert fold2["per_class"]["subsolid"]["undefined"]["sensitivity"] == "no test image of this class"
    auc = saved["arms"]["real"]["metrics"]["auc"]
    assert auc["n"] == 2 and auc["n_nan"] == 1
    assert auc["undefined"] == [{"fold": 2, "reason": "test set lacks class 'subsolid'"}]
    # a null without a reason beside it gets a line in the report's own list, by its path
    assert saved["synthesis"] == {"psnr": None, "kid": None, "ok": 0.5}
    assert "synthesis.psnr: not a finite number (inf)" in saved["undefined"]
    assert "synthesis.kid: not a finite number (NaN)" in saved["undefined"]
    assert not [u for u in saved["undefined"] if "per_fold" in u], "per-fold NaNs carry their reason beside them"
    assert "synthesis.kid: not a finite number (NaN)" in (tmp_path / "report.md").read_text()


def test_writer_refuses_to_write_non_strict_json(tmp_path, monkeypatch):
    """The guard: json.dumps(..., allow_nan=False) stops a NaN that slipped past the conversion to null."""
    monkeypatch.setattr(report_module, "strict_json", lambda obj: (obj, []))
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_report(_report({"real": _all_negative_folds()}), str(tmp_path))
    assert not (tmp_path / "report.json").exists()


def test_fold_missing_a_class_is_named_in_report_md_and_the_log(tmp_path, caplog):
    good = [_fold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]), _fold([0, 1, 1, 0], [0.2, 0.9, 0.7, 0.3]),
            _fold([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4])]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="common.protocol.report"):
        write_report(_report({"real": good, "synthetic_only": _all_negative_folds()}), str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    line = (
        "fold 2: test set lacks class 'subsolid': balanced_accuracy, sensitivity, specificity, auc undefined there "
        "for arm(s) real, synthetic_only; their means are over the other folds only"
    )
    assert line in md
    assert "## Warnings" in md
    assert "(2/3 folds)" in md.split("| real |")[1].splitlines()[0], "the table cell says the mean is over 2 folds"
    assert "100.0 ± 0.0 [100.0, 100.0] |" in md.split("| real |")[1].splitlines()[0], "accuracy: all 3 folds"
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged.count(line) == 1, logged
    saved = _strict_load((tmp_path / "report.json").read_text())
    assert line in saved["warnings"]
    comparison = saved["comparisons"]["real vs synthetic_only"]["auc"]
    assert comparison["n"] == 2 and comparison["undefined"][0]["fold"] == 2
    assert "(over 2 of 3 folds)" in md


def test_balanced_accuracy_sensitivity_specificity_from_one_confusion_matrix():
    folds = _all_negative_folds()
    for fold in folds:
        again = metrics_from_confusion(np.array(fold["confusion_matrix"]), CLASSES)
        for m in ("accuracy", "balanced_accuracy", "sensitivity", "specificity"):
            assert fold[m] == pytest.approx(again[m], nan_ok=True)
    for fold in folds[:2]:  # binary: balanced accuracy is the mean of the positive class's sensitivity and specificity
        assert fold["balanced_accuracy"] == pytest.approx((fold["sensitivity"] + fold["specificity"]) / 2)
    assert folds[2]["missing_classes"] == ["subsolid"]
    assert all(np.isnan(folds[2][m]) for m in ("balanced_accuracy", "sensitivity", "specificity", "auc"))
    assert folds[2]["accuracy"] == 1.0, "accuracy needs no class: still defined"
    arms = summarize_arms({"real": folds})["real"]["metrics"]
    mean = {m: arms[m]["mean"] for m in ("balanced_accuracy", "sensitivity", "specificity")}
    assert mean == {"balanced_accuracy": 0.5, "sensitivity": 0.0, "specificity": 1.0}, "not 66.7 / 0 / 100"
    assert {arms[m]["n"] for m in mean} == {2}, "the three are over the same folds"
    # three classes: macro sensitivity is balanced accuracy; macro specificity from the same matrix
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]])
    m = classification_metrics(probs, np.array([0, 1, 2, 1]), ["a", "b", "c"])
    assert m["sensitivity"] == m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["specificity"] == pytest.approx(np.mean([c["specificity"] for c in m["per_class"].values()]))
    missing = classification_metrics(probs[:2], np.array([0, 1]), ["a", "b", "c"])
    assert missing["undefined"]["balanced_accuracy"] == "test set lacks class 'c'"
    assert np.isnan(missing["sensitivity"]) and np.isnan(missing["specificity"])


def test_binary_mean_over_tasks_is_undefined_where_a_task_is():
    per_task = {
        "a_vs_rest": {"real": [{"accuracy": 0.8, "sensitivity": 0.5, "undefined": {}}]},
        "b_vs_rest": {"real": [{"accuracy": 0.6, "sensitivity": float("nan"),
                                "undefined": {"sensitivity": "test set lacks class 'b'"}}]},
    }  # fmt: skip
    fold = binary_mean(per_task, ["a_vs_rest", "b_vs_rest"], "real", 0, ["accuracy", "sensitivity"])
    assert fold["accuracy"] == pytest.approx(0.7)
    assert np.isnan(fold["sensitivity"]), "not 0.5, the mean over the one task that has it"
    assert fold["undefined"]["sensitivity"] == "task 'b_vs_rest': test set lacks class 'b'"


def test_arm_at_or_below_chance_gets_a_warning(tmp_path, caplog):
    good = [_fold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]), _fold([0, 1, 1, 0], [0.2, 0.9, 0.7, 0.3])]
    chance = [_fold([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]), _fold([0, 1, 1, 0], [0.2, 0.1, 0.4, 0.3])]
    inverted = [_fold([0, 0, 1, 1], [0.6, 0.7, 0.2, 0.3]), _fold([0, 1, 1, 0], [0.6, 0.2, 0.3, 0.7])]
    with caplog.at_level(logging.WARNING, logger="common.protocol.report"):
        write_report(_report({"real": good, "synthetic_only:dp": chance, "inverted": inverted}), str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    dp = "arm 'synthetic_only:dp' is at or below chance: accuracy 50.0 %, balanced_accuracy 50.0 % <= chance 50.0 %"
    assert [line for line in logged if line.startswith(dp)] == [dp + " (1/2 classes)"] and dp in md
    inv = "arm 'inverted' is at or below chance: accuracy 0.0 %, balanced_accuracy 0.0 % <= chance 50.0 % (1/2 "
    assert [line for line in logged if "'inverted'" in line] == [inv + "classes); auc 0.000 <= chance 0.5"]
    assert not [line for line in logged if "'real'" in line], "a good arm gets no warning"
    # chance is 1 / number of classes: 40 % accuracy is above chance for three classes
    three = {"arms": {"x": {"metrics": {"accuracy": {"mean": 0.4}, "auc": {"mean": 0.6}}}}}
    assert review_report({**three, "class_names": ["a", "b", "c"]}) == []
    assert review_report({**three, "class_names": ["a", "b"]}) == [
        "arm 'x' is at or below chance: accuracy 40.0 % <= chance 50.0 % (1/2 classes)"
    ]


def test_segmentation_report_nan_dice_is_null_named_and_has_no_chance_check(tmp_path):
    per_fold = {"real": [{"dice_wt": 0.8}, {"dice_wt": float("nan")}, {"dice_wt": 0.7}]}
    report = {
        "bundle": "brain",
        "paper": "p",
        "dataset": "phantom",
        "seed": 0,
        "folds": 3,
        "metric_names": ["dice_wt"],
        "arms": summarize_arms(per_fold, ["dice_wt"]),
        "comparisons": {},
        "paper_reference": {},
    }
    write_report(report, str(tmp_path))
    saved = _strict_load((tmp_path / "report.json").read_text())
    assert saved["arms"]["real"]["per_fold"][1]["dice_wt"] is None
    assert saved["arms"]["real"]["metrics"]["dice_wt"]["undefined"] == [{"fold": 1, "reason": "not a finite number"}]
    assert saved["warnings"] == [
        "fold 1: not a finite number: dice_wt undefined there for arm(s) real; "
        "their means are over the other folds only"
    ]
    assert "arms.real.per_fold.1.dice_wt: not a finite number (NaN)" in saved["undefined"]
    assert "75.0 ± 7.1 [11.5, 100.0] (2/3 folds)" in render_markdown(saved)


def test_one_fold_left_is_no_verdict():
    per_fold = {
        "a": [{"auc": 0.9}, {"auc": float("nan")}],
        "b": [{"auc": 0.6}, {"auc": 0.7, "undefined": {}}],
    }
    comp = compare_arms(per_fold, [("a", "b")])["a vs b"]["auc"]
    assert comp["n"] == 1 and comp["verdict"] == "too few folds"
    assert comp["undefined"] == [{"fold": 1, "reason": "a: not a finite number"}]
