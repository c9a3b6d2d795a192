"""Write the result tables of the model cards and of ``docs/generators.md`` from the committed result files.

Every number in those tables comes from a committed file, never typed by hand:

- ``bundles/<name>/docs/results/quality.json``: the shipped generator's audit (``ci/ship_weights.py`` copies it
  from the training run) -> the card's "Shipped model" table and one row of the summary in ``docs/generators.md``;
- ``docs/results/recipe_ablation_<bundle>.json`` (``benchmarks/recipe_ablation.py --json``) -> the ablation table;
- ``bundles/<name>/docs/results/<run>_report.json``: a protocol run's ``report.json`` (copied from its
  ``<output_dir>/evaluation/``, with a ``provenance`` entry saying how it was made) -> the card's block
  ``<run>_report``: the arms table and the paired comparisons, by the same functions that write ``report.md``;
- ``bundles/<name>/docs/results/dp_audit.json`` (``python -m common.privacy.canary_audit``) -> the block ``dp_audit``:
  the canary audit's empirical epsilon lower bound beside the accountant's, per DP arm and setting;
- several of a bundle's reports side by side, one metric, beside the paper (``SUMMARIES``) -> the block
  ``paper-summary``.

A table lives between two markers, ``<!-- synthaug:NAME:start -->`` and ``<!-- synthaug:NAME:end -->``, so the prose
around it is the author's. ``python ci/render_results.py`` rewrites the tables; ``--check`` exits 1 when a table
differs from its file (the test suite runs that), naming the file. ``--check`` also fails on a result row typed by
hand: a table row with a mean ± std or a decimal confidence interval outside every block, named by file and line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("liver_lesion_gan", "lung_cisl_gan", "skin_melanogan", "spine_stylegan2", "brain_pix2pix")
TARGETS = {"precision": 0.7, "recall": 0.6, "coverage": 0.6}
# the card's "beside the paper" table: (metric, [(column label, report stem), ...]) per bundle
SUMMARIES = {
    "spine_stylegan2": (
        "auc",
        [
            ("PneumoniaMNIST train split, efficient recipe (32 px)", "pneumoniamnist_efficient_report"),
            ("PneumoniaMNIST, cpu.json (16 px)", "cpu_pneumoniamnist_report"),
            ("phantom, cpu.json (64 px)", "cpu_phantom_report"),
        ],
    ),
}
# a measured value typed by hand: "12.3 ± 4.5" or a CI with decimals "[0.12, 0.34]" / "[+1.2, -3.4]"
RESULT_CELL = re.compile(r"±|\[[-+]?\d+\.\d+, [-+]?\d+\.\d+\]")
BLOCK = re.compile(r"<!-- synthaug:(\S+):(start|end) -->")


def _f(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _metric_rows(q: dict) -> list[str]:
    rows = []
    for m in ("precision", "recall", "density", "coverage"):
        target = TARGETS.get(m)
        met = "" if target is None else ("met" if (q.get(m) or 0) >= target else "not met")
        rows.append(f"| {m} | {_f(q.get(m))} | {_f(q.get(m + '_real_baseline'))} | {_f(target)} {met} |")
    rows.append(f"| Frechet distance / real-vs-real | {_f(q.get('frechet_ratio'))} | 1.00 | |")
    return rows


def shipped_model_table(bundle_dir: Path) -> str | None:
    qfile = bundle_dir / "docs" / "results" / "quality.json"
    if not qfile.is_file():
        return None
    q = json.loads(qfile.read_text())
    t = q.get("training", {})
    meta = json.loads((bundle_dir / "configs" / "metadata.json").read_text()).get("synthaug_model", {})
    lines = [
        f"From `docs/results/quality.json`: {q.get('n_synthetic')} synthetic images against {q.get('n_heldout')} "
        f"held-out real images the generator never saw, with the {q.get('n_train')} training images as reference; "
        f"{q.get('features')}.",
        "",
        "| metric | shipped generator | real vs real (the ceiling) | target (issue) |",
        "|---|---|---|---|",
        *_metric_rows(q),
        "",
        f"Training: {t.get('iterations')} generator steps ({t.get('images_seen')} images seen) in "
        f"{_f((t.get('seconds') or 0) / 60, 0)} min on {meta.get('hardware', 'a CPU')}; data: "
        f"{meta.get('dataset', '?')} ({meta.get('data_licence', '?')}).",
    ]
    return "\n".join(lines)


def summary_table() -> str:
    lines = [
        "| bundle | data | precision (real) | recall (real) | coverage (real) | Frechet / real-vs-real "
        "| G steps | min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in BUNDLES:
        qfile = REPO / "bundles" / name / "docs" / "results" / "quality.json"
        if not qfile.is_file():
            lines.append(f"| {name} | no shipped model yet | | | | | | |")
            continue
        q = json.loads(qfile.read_text())
        meta = json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text())
        t = q.get("training", {})
        cells = [f"{_f(q.get(m))} ({_f(q.get(m + '_real_baseline'))})" for m in ("precision", "recall", "coverage")]
        lines.append(
            f"| {name} | {meta.get('synthaug_model', {}).get('dataset', '?')} | {' | '.join(cells)} | "
            f"{_f(q.get('frechet_ratio'))} | {t.get('iterations')} | {_f((t.get('seconds') or 0) / 60, 0)} |"
        )
    return "\n".join(lines)


def ablation_table(path: Path) -> str | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    rows = data["rows"]
    head = [
        f"From `{path.relative_to(REPO)}` ({data['bundle']}, {data['data']}, the same G-step budget for every "
        f"variant; settings chosen before looking at these numbers, none tuned on them).",
        "",
        "| variant | precision | recall | density | coverage | Frechet / real-vs-real | G steps | train min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r.get("training", {})
        head.append(
            f"| {r['variant']} | {_f(r.get('precision'))} | {_f(r.get('recall'))} | {_f(r.get('density'))} | "
            f"{_f(r.get('coverage'))} | {_f(r.get('frechet_ratio'))} | {t.get('iterations')} | "
            f"{_f((t.get('seconds') or 0) / 60, 0)} |"
        )
    b = rows[0]
    head.append(
        f"| real vs real | {_f(b.get('precision_real_baseline'))} | {_f(b.get('recall_real_baseline'))} | "
        f"{_f(b.get('density_real_baseline'))} | {_f(b.get('coverage_real_baseline'))} | 1.00 | | |"
    )
    return "\n".join(head)


def protocol_table(path: Path) -> str:
    from common.protocol.report import arms_table, comparison_lines, external_lines, review_report

    report = json.loads(path.read_text())
    prov = report.get("provenance", {})
    settings = ", ".join(f"{k} {v}" for k, v in (report.get("settings") or {}).items() if v is not None)
    size = f"{report['n_images']} images" if report.get("n_images") else f"{report.get('n_cases')} cases"
    lines = [
        f"From `docs/results/{path.name}`: {report.get('dataset')}, {size}, "
        f"{report.get('folds')} patient-separated folds, seed {report.get('seed')}; {settings}. Values in %: "
        "mean ± std across folds [95 % CI of the mean, Student t].",
    ]
    if prov:
        lines += ["", f"`{prov.get('command')}` ({prov.get('wall', '?')}, {prov.get('machine', 'a CPU')})"]
    lines += ["", *arms_table(report)]
    for arm, dp in ((report.get("privacy") or {}).get("dp") or {}).items():
        eps = ", ".join(f"{e:.2f}" for e in dp.get("epsilon_per_fold", []))
        sigma = ", ".join(f"{n:.3f}" for n in dp.get("noise_multiplier", []))
        lines.append(
            f"\n{arm}: epsilon per fold {eps} (delta {dp.get('delta')}, {dp.get('accountant')}); sigma {sigma}"
        )
    synthesis = (report.get("synthesis") or {}).get("mean") or {}
    if "precision_randcnn" in synthesis:
        got = ", ".join(
            f"{m} {_f(synthesis.get(f'{m}_randcnn'))} (real {_f(synthesis.get(f'{m}_randcnn_real_baseline'))})"
            for m in ("precision", "recall", "coverage")
        )
        fd, fd_real = synthesis.get("frechet_distance_randcnn"), synthesis.get("frechet_distance_randcnn_real_baseline")
        ratio = f"; Frechet distance {fd / fd_real:.1f}x real-vs-real" if fd and fd_real else ""
        lines += ["", f"Synthetic sets against held-out real images (`common.audit`, mean of folds): {got}{ratio}."]
    per_generator = {
        name: v
        for name, v in (report.get("synthesis") or {}).items()
        if isinstance(v, dict) and "precision_randcnn" in v and name not in ("mean", "per_fold")
    }
    if per_generator:  # a generator comparison (skin): each generator against the same held-out real images
        base = next(iter(per_generator.values()))
        lines += [
            "",
            "Generators compared on fold 0's held-out real images (`common.audit`, random-CNN features):",
            "",
            "| generator | precision | recall | coverage | Frechet / real-vs-real |",
            "|---|---|---|---|---|",
        ]
        for name, v in [*per_generator.items(), ("real vs real", None)]:
            if v is None:
                cells = [_f(base.get(f"{m}_randcnn_real_baseline")) for m in ("precision", "recall", "coverage")]
                lines.append(f"| {name} | {' | '.join(cells)} | 1.00 |")
                continue
            fd, fd_real = v.get("frechet_distance_randcnn"), v.get("frechet_distance_randcnn_real_baseline")
            cells = [_f(v.get(f"{m}_randcnn")) for m in ("precision", "recall", "coverage")]
            lines.append(f"| {name} | {' | '.join(cells)} | {_f(fd / fd_real if fd and fd_real else None)} |")
    audit = (report.get("privacy") or {}).get("mean") or {}
    if "mia_auc_pixel" in audit:
        lines += [
            "",
            "Privacy audit (mean of folds): membership-inference AUC "
            f"{_f(audit.get('mia_auc_pixel'))} in pixels, {_f(audit.get('mia_auc_randcnn'))} in random-CNN features "
            f"(0.50 = no signal); share of synthetic images closer to a training image than the 5th percentile of "
            f"held-out-to-train distances {_f(audit.get('copy_fraction_pixel'), 3)} "
            f"(real held-out {_f(audit.get('copy_fraction_pixel_real_baseline'), 3)}), exact copies "
            f"{_f(audit.get('copy_fraction_fixed_pixel'), 3)}.",
        ]
    warnings = report.get("warnings", review_report(report))
    lines += ["", *comparison_lines(report)] if report.get("comparisons") else []
    lines += external_lines(report, level=4)
    lines += ["", *(f"- **warning**: {w}" for w in warnings)] if warnings else []
    return "\n".join(lines)


def dp_audit_table(path: Path) -> str:
    runs = json.loads(path.read_text())["runs"]
    lines = [
        f"From `docs/results/{path.name}`:",
        "",
        "| setting | arm | flaw | sigma | q, steps | epsilon, accountant | epsilon, audit lower bound (95 %) "
        "| right guesses | the most the guesses can prove |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        for arm, r in run.items():
            if not isinstance(r, dict):
                continue
            refuted = " **(claim refuted)**" if r["epsilon_lower_bound"] > r["epsilon_accountant"] else ""
            lines.append(
                f"| {name} | {arm} | {r.get('flaw') or '-'} | {r['noise_multiplier']:.3f} | "
                f"1/{1 / r['sample_rate']:.0f}, {r['steps']} | {r['epsilon_accountant']:.3f} | "
                f"{r['epsilon_lower_bound']:.2f}{refuted} | {r['correct']} / {r['guesses']} | "
                f"{r['epsilon_lower_bound_if_all_right']:.2f} |"
            )
    return "\n".join(lines)


def paper_summary(bundle_dir: Path) -> str | None:
    spec = SUMMARIES.get(bundle_dir.name)
    if spec is None:
        return None
    from common.protocol.report import paper_summary_table

    metric, runs = spec
    results = bundle_dir / "docs" / "results"
    columns = [(label, json.loads((results / f"{stem}.json").read_text())) for label, stem in runs]
    sources = ", ".join(f"`docs/results/{stem}.json`" for _, stem in runs)
    return "\n".join(
        [
            f"From {sources}: {metric} in %, mean ± std across folds [95 % CI of the mean].",
            "",
            *paper_summary_table(columns, metric),
        ]
    )


def hand_typed_results(path: Path, text: str) -> list[str]:
    """``file:line`` of every table row outside the generated blocks that carries a measured value (mean ± std or a
    decimal CI): such a row was typed by hand, and nothing checks it against a committed result file."""
    found, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        marker = BLOCK.search(line)
        if marker:
            inside = marker.group(2) == "start"
        elif not inside and line.lstrip().startswith("|") and RESULT_CELL.search(line):
            found.append(f"{path.relative_to(REPO)}:{number}")
    return found


def replace_block(text: str, name: str, body: str, where: Path) -> str:
    pattern = re.compile(rf"(<!-- synthaug:{name}:start -->\n)(.*?)(<!-- synthaug:{name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"render_results: {where} has no '<!-- synthaug:{name}:start/end -->' markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text, count=1)


def render() -> dict[Path, str]:
    """``{file: new text}`` for every file with a table."""
    out: dict[Path, str] = {}
    for name in BUNDLES:
        card = REPO / "bundles" / name / "docs" / "README.md"
        body = shipped_model_table(card.parent.parent)
        if body is not None:
            out[card] = replace_block(card.read_text(), "shipped-model", body, card)
        audit = card.parent / "results" / "dp_audit.json"
        if audit.is_file():
            out[card] = replace_block(out.get(card, card.read_text()), "dp_audit", dp_audit_table(audit), card)
        for path in sorted((card.parent / "results").glob("*_report.json")):
            out[card] = replace_block(out.get(card, card.read_text()), path.stem, protocol_table(path), card)
        summary = paper_summary(card.parent.parent)
        if summary is not None:
            out[card] = replace_block(out.get(card, card.read_text()), "paper-summary", summary, card)
    doc = REPO / "docs" / "generators.md"
    if doc.is_file():
        text = replace_block(doc.read_text(), "quality-table", summary_table(), doc)
        for path in sorted((REPO / "docs" / "results").glob("recipe_ablation_*.json")):
            body = ablation_table(path)
            text = replace_block(text, path.stem, body, doc)
        out[doc] = text
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a table differs from its result file")
    args = parser.parse_args(argv)
    stale, typed = [], []
    for path, text in render().items():
        typed += hand_typed_results(path, text)
        if path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print("tables differ from their result files (run python ci/render_results.py): " + ", ".join(map(str, stale)))
    if typed:
        print(
            "result rows typed by hand, outside any generated block (commit the report and render it): "
            + ", ".join(typed)
        )
    return 1 if (args.check and stale) or typed else 0


if __name__ == "__main__":
    sys.exit(main())
