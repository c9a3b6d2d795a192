"""The visual Turing test kit: write (shuffled PNGs + sealed key), a reader answers, score (with exact intervals)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.datalist import write_datalist
from common.data.io import write_image
from common.errors import DataError
from common.protocol.turing import clopper_pearson, score_turing_test, write_turing_test
from common.protocol.turing import main as turing_main

REPO = Path(__file__).resolve().parents[2]


def _set(root: Path, name: str, n_per_class: int, value: float) -> list[dict]:
    items = []
    for label in range(2):
        for i in range(n_per_class):
            path = root / name / f"{name}_{label}_{i}.nii.gz"
            write_image(path, np.full((1, 8, 8), value + 100 * label + i, np.float32))
            items.append({"image": str(path), "label": label})
    return items


def _fill(answers: Path, key: Path, rule) -> None:
    truth = {c["case"]: c for c in json.loads(key.read_text())["cases"]}
    with open(answers, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(answers, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "answer"])
        writer.writerows([r["case"], rule(truth[r["case"]])] for r in rows)


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(17, 30)  # 56.7 %, the paper's share
    assert lo == pytest.approx(0.3743, abs=1e-3) and hi == pytest.approx(0.7454, abs=1e-3)
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0


def test_round_trip_write_answer_score(tmp_path):
    real = _set(tmp_path, "real", 6, -800)
    syn = _set(tmp_path, "syn", 6, -500)
    out, key_dir = tmp_path / "reader", tmp_path / "sealed"
    paths = write_turing_test(
        real, syn, out, key_dir=key_dir, n_real=8, n_synthetic=6, class_names=["a", "b"], display_size=32, seed=3
    )
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 14 and Image.open(pngs[0]).size == (32, 32)
    assert not list(out.rglob("answer_key.json")), "the reader's folder holds no key"
    key = json.loads(Path(paths["key"]).read_text())
    truths = [c["truth"] for c in key["cases"]]
    assert truths.count("real") == 8 and truths.count("synthetic") == 6
    assert truths != sorted(truths) and truths != sorted(truths, reverse=True), "shuffled"
    assert sorted(c["label"] for c in key["cases"] if c["truth"] == "synthetic") == [0, 0, 0, 1, 1, 1], "stratified"
    reader_text = (out / "answers.csv").read_text() + (out / "instructions.txt").read_text()
    assert "synthetic" not in (out / "answers.csv").read_text() and "syn_" not in reader_text

    # A reader who calls everything real: accuracy = share of real cases, every synthetic image taken for real.
    _fill(out / "answers.csv", Path(paths["key"]), lambda case: "real")
    score = score_turing_test(out / "answers.csv", paths["key"])
    assert score["n"] == 14 and score["accuracy"]["value"] == pytest.approx(8 / 14)
    assert score["synthetic_called_real"]["value"] == 1.0 and score["synthetic_called_real"]["n"] == 6
    assert score["real_called_real"]["value"] == 1.0
    lo, hi = score["accuracy"]["ci95"]
    assert lo < 8 / 14 < hi and score["p_value_vs_chance"] > 0.05
    assert set(score["per_class"]) == {"a", "b"}

    # A perfect reader: accuracy 1, nobody fooled.
    _fill(out / "answers.csv", Path(paths["key"]), lambda case: case["truth"])
    perfect = score_turing_test(out / "answers.csv", paths["key"])
    assert perfect["accuracy"]["value"] == 1.0 and perfect["synthetic_called_real"]["value"] == 0.0


def test_same_seed_same_set(tmp_path):
    real, syn = _set(tmp_path, "real", 4, -800), _set(tmp_path, "syn", 4, -500)
    keys = []
    for run in ("a", "b"):
        paths = write_turing_test(real, syn, tmp_path / run, n_real=4, n_synthetic=4, seed=1, display_size=16)
        keys.append([(c["case"], c["source"]) for c in json.loads(Path(paths["key"]).read_text())["cases"]])
    assert keys[0] == keys[1]


def test_bad_input(tmp_path):
    real, syn = _set(tmp_path, "real", 2, -800), _set(tmp_path, "syn", 2, -500)
    with pytest.raises(DataError, match="only 4 available"):
        write_turing_test(real, syn, tmp_path / "x", n_real=5, n_synthetic=1)
    with pytest.raises(DataError, match="outside out_dir"):
        write_turing_test(real, syn, tmp_path / "y", key_dir=tmp_path / "y" / "key", n_real=1, n_synthetic=1)
    paths = write_turing_test(real, syn, tmp_path / "r", n_real=2, n_synthetic=2, display_size=16)
    with pytest.raises(DataError, match="already holds"):
        write_turing_test(real, syn, tmp_path / "r", n_real=2, n_synthetic=2)
    answers = Path(paths["answers"])
    with pytest.raises(DataError, match="is not one of"):
        score_turing_test(answers, paths["key"])  # the template is still empty
    _fill(answers, Path(paths["key"]), lambda case: "maybe")
    with pytest.raises(DataError, match=r"row 2 .*'maybe'"):
        score_turing_test(answers, paths["key"])
    _fill(answers, Path(paths["key"]), lambda case: "real")
    lines = answers.read_text().splitlines()
    answers.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="1 case\\(s\\) unanswered"):
        score_turing_test(answers, paths["key"])
    _fill(answers, Path(paths["key"]), lambda case: "real")
    key = Path(paths["key"])
    key.write_text(key.read_text().replace('"real"', '"synthetic"'))  # tampered after the reading
    with pytest.raises(DataError, match="does not match its seal"):
        score_turing_test(answers, key)


def test_command_line_round_trip(tmp_path, capsys):
    real, syn = _set(tmp_path, "real", 3, -800), _set(tmp_path, "syn", 3, -500)
    for name, items in (("real", real), ("syn", syn)):
        write_datalist(tmp_path / f"{name}.json", items, class_names=["a", "b"])
    out, key = tmp_path / "reader", tmp_path / "key"
    assert turing_main(
        ["write", "--real", str(tmp_path / "real.json"), "--synthetic", str(tmp_path / "syn.json"),
         "--out", str(out), "--key", str(key), "--n_real", "4", "--n_synthetic", "4", "--display_size", "16"]
    ) == 0  # fmt: skip
    _fill(out / "answers.csv", key / "answer_key.json", lambda case: "synthetic")
    args = ["score", "--answers", str(out / "answers.csv"), "--key", str(key / "answer_key.json")]
    assert turing_main([*args, "--out", str(tmp_path / "score.json")]) == 0
    score = json.loads((tmp_path / "score.json").read_text())
    assert score["accuracy"]["value"] == 0.5 and score["synthetic_called_real"]["value"] == 0.0
    capsys.readouterr()
    assert turing_main(["score", "--answers", str(tmp_path / "none.csv"), "--key", str(key / "answer_key.json")]) == 1
    assert "none.csv' does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_entry_point(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "common.protocol.turing", "score", "--answers", str(tmp_path / "a.csv"), "--key", "k"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 1 and "a.csv' does not exist" in bad.stderr and "Traceback" not in bad.stderr
