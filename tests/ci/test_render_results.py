"""Every result table in the model cards and docs/generators.md is the one its committed result file gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from synthaug_testing import load_ci_script

REPO = Path(__file__).resolve().parents[2]
render = load_ci_script("render_results")


def test_committed_tables_match_their_result_files():
    assert render.main(["--check"]) == 0, "run: python ci/render_results.py"


def _copy_tree(tmp_path: Path) -> Path:
    for rel in (
        ["docs"] + [f"bundles/{b}/docs" for b in render.BUNDLES] + [f"bundles/{b}/configs" for b in render.BUNDLES]
    ):
        if (REPO / rel).is_dir():
            shutil.copytree(REPO / rel, tmp_path / rel)
    return tmp_path


def test_a_changed_number_is_caught_and_rewritten(tmp_path, monkeypatch, capsys):
    root = _copy_tree(tmp_path)
    monkeypatch.setattr(render, "REPO", root)
    shipped = [b for b in render.BUNDLES if (root / "bundles" / b / "docs" / "results" / "quality.json").is_file()]
    assert shipped, "at least one bundle ships a model with its quality report"
    qfile = root / "bundles" / shipped[0] / "docs" / "results" / "quality.json"
    q = json.loads(qfile.read_text())
    q["precision"] = 0.123456
    qfile.write_text(json.dumps(q))
    assert render.main(["--check"]) == 1
    assert "README.md" in capsys.readouterr().out
    assert render.main([]) == 0 and render.main(["--check"]) == 0
    card = (root / "bundles" / shipped[0] / "docs" / "README.md").read_text()
    assert "| precision | 0.12 |" in card


def test_a_result_row_typed_by_hand_is_refused(tmp_path, monkeypatch, capsys):
    root = _copy_tree(tmp_path)
    monkeypatch.setattr(render, "REPO", root)
    card = root / "bundles" / "liver_lesion_gan" / "docs" / "README.md"
    text = card.read_text()
    lines = text.splitlines()
    # a table row outside every block, with a measured value: refused even though every block is up to date
    card.write_text(text + "\n| classic | 69.7 ± 4.3 [59.0, 80.4] |\n")
    assert render.main(["--check"]) == 1
    assert f"bundles/liver_lesion_gan/docs/README.md:{len(lines) + 2}" in capsys.readouterr().out
    # rendering cannot fix it (only the author can): the plain run fails too
    assert render.main([]) == 1
    # a table row without a measured value (an HU window in integers) is fine
    card.write_text(text + "\n| window | [-1000, 400] HU |\n")
    assert render.main(["--check"]) == 0
