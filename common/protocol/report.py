"""report.json / report.md / figures: our numbers with their uncertainty, beside the paper's, with a verdict.

The verdict of a comparison (e.g. ``classic+synthetic`` vs ``classic``) comes from the paired per-fold
differences: "better" only when the whole 95 % CI of the mean difference is above zero, "worse" when it is below,
otherwise "no clear difference" (and "too few folds" with fewer than two). A report never claims a gain that its own
intervals do not support.

A report says what it could not compute, and never hides it in an average:

- a metric that is undefined in a fold (an AUC when the fold's test set lacks a class) is left out of that metric's
  mean, and the summary names the fold and the reason (``"undefined": [{"fold": 2, "reason": ...}]``); report.md
  marks the mean "(2/3 folds)" and adds one warning line per such fold, which the log gets as well;
- report.json is strict JSON: a NaN or infinity becomes ``null``, with its reason beside it (the ``undefined`` of
  its own dict, or a line in the report's top-level ``undefined`` list);
- an arm whose mean accuracy or balanced accuracy is at or below chance (1 / number of classes), or whose AUC is at
  or below 0.5, gets a warning line (log and report.md).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.metrics.stats import summarize

logger = logging.getLogger(__name__)

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc")
#: metrics that are at chance at 1 / number of classes, and the one that is at chance at 0.5
CHANCE_METRICS = ("accuracy", "balanced_accuracy")
CHANCE_AUC = 0.5


def _value(fold: dict, metric: str) -> float:
    """``fold[metric]`` as a float; NaN when it is missing, ``None`` (a strict-JSON NaN) or not a finite number."""
    v = fold.get(metric)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        return math.nan
    return float(v) if math.isfinite(float(v)) else math.nan


def _reason(fold: dict, metric: str) -> str:
    """Why ``fold`` has no finite ``metric``: its own ``undefined`` entry, else what is there instead."""
    reason = (fold.get("undefined") or {}).get(metric) if isinstance(fold.get("undefined"), dict) else None
    if reason:
        return str(reason)
    return "not computed" if fold.get(metric) is None else "not a finite number"


def _undefined_folds(folds: Sequence[dict], metric: str) -> list[dict]:
    """``[{"fold": i, "reason": ...}]`` for the folds (0-based, as the ``fold<i>`` folders) without ``metric``."""
    return [{"fold": i, "reason": _reason(f, metric)} for i, f in enumerate(folds) if math.isnan(_value(f, metric))]


def report_header(protocol: Any) -> dict:
    """What every classification report starts with: which bundle and paper, which data set, classes, image count,
    seed and folds, from a protocol's attributes (``bundle``, ``paper``, ``dataset``, ``class_names``, ``items``,
    ``seed``, ``k``)."""
    return {
        "bundle": protocol.bundle,
        "paper": protocol.paper,
        "dataset": protocol.dataset.get("source", "?"),
        "dataset_dir": protocol.dataset.get("dataset_dir"),
        "class_names": protocol.class_names,
        "n_images": len(protocol.items),
        "seed": protocol.seed,
        "folds": protocol.k,
    }


def summarize_arms(per_fold: dict[str, list[dict]], metrics: Sequence[str] = SUMMARY_METRICS) -> dict:
    """``{arm: [fold metrics...]}`` -> ``{arm: {"metrics": {m: summarize}, "per_fold": [...]}}``; the metrics are
    proportions, so their intervals are clipped to [0, 1]. A fold without a finite value of a metric (NaN, ``None``,
    missing) is left out of its mean, and the summary lists it: ``"undefined": [{"fold": i, "reason": ...}]``, the
    reason taken from the fold's own ``undefined`` entry (``classification_metrics``)."""
    arms = {}
    for arm, folds in per_fold.items():
        names = [m for m in metrics if any(m in f for f in folds)]
        summaries = {}
        for m in names:
            summaries[m] = summarize([_value(f, m) for f in folds], bounds=(0.0, 1.0))
            if summaries[m]["n_nan"]:
                summaries[m]["undefined"] = _undefined_folds(folds, m)
        arms[arm] = {"metrics": summaries, "per_fold": folds}
    return arms


def compare_arms(per_fold: dict[str, list[dict]], pairs: Sequence[tuple[str, str]], metrics=SUMMARY_METRICS) -> dict:
    """Paired per-fold differences ``a - b`` for each ``(a, b)`` in ``pairs`` and each metric, with a verdict."""
    out = {}
    for a, b in pairs:
        if a not in per_fold or b not in per_fold:
            continue
        res = {}
        for m in metrics:
            folds = list(zip(per_fold[a], per_fold[b], strict=False))
            diffs = [_value(fa, m) - _value(fb, m) for fa, fb in folds]
            s = summarize(diffs, bounds=(-1.0, 1.0))
            if s["mean"] is None:
                continue
            lo, hi = s["ci95"]
            if s["n"] < 2:  # one fold has no spread: its "interval" [v, v] supports nothing
                s["verdict"] = "too few folds"
            else:
                s["verdict"] = "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"
            if s["n_nan"]:
                s["undefined"] = [
                    {"fold": i, "reason": _pair_reason(a, fa, b, fb, m)}
                    for i, (fa, fb) in enumerate(folds)
                    if math.isnan(diffs[i])
                ]
            res[m] = s
        out[f"{a} vs {b}"] = res
    return out


def _pair_reason(a: str, fa: dict, b: str, fb: dict, metric: str) -> str:
    return "; ".join(f"{arm}: {_reason(f, metric)}" for arm, f in ((a, fa), (b, fb)) if math.isnan(_value(f, metric)))


def merge_fold_sections(sections: list[dict]) -> dict:
    """Per-fold audit sections -> ``{"mean": {key: mean over folds}, "per_fold": [...]}``; numbers and
    ``{"value": number, ...}`` entries are averaged, anything else is left in ``per_fold`` only."""
    if not sections:
        return {}
    mean = {}
    for key in sections[0]:
        values = [s.get(key) for s in sections]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            mean[key] = float(np.mean(values))
        elif all(isinstance(v, dict) and isinstance(v.get("value"), (int, float)) for v in values):
            mean[key] = float(np.mean([v["value"] for v in values]))
    return {"mean": mean, "per_fold": sections}


def _fmt(s: dict | None, pct: bool = True) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    f = 100.0 if pct else 1.0
    lo, hi = s["ci95"]
    text = f"{f * s['mean']:.1f} ± {f * s['std']:.1f} [{f * lo:.1f}, {f * hi:.1f}]"
    if s.get("n_nan"):  # a mean over fewer folds than its neighbours: say so in the cell (the warnings say why)
        text += f" ({s['n']}/{s['n'] + s['n_nan']} folds)"
    return text


def _num_classes(report: dict, section: dict, primary: bool) -> int | None:
    """The number of classes the arms of ``section`` were scored on (chance is 1 / that), if the report says."""
    if section.get("num_classes"):
        return int(section["num_classes"])
    if primary and report.get("primary_task") in (report.get("tasks") or {}):
        section = report["tasks"][report["primary_task"]]
    names = section.get("class_names")
    return len(names) if isinstance(names, (list, tuple)) and len(names) >= 2 else None


def _fewer_folds_lines(prefix: str, arms: dict) -> list[str]:
    """One line per fold (and reason) where some metric of some arm is undefined, naming them."""
    found: dict[tuple[int, str], tuple[dict, dict]] = {}  # (fold, reason) -> (metrics, arms), as ordered sets
    for arm, res in arms.items():
        for m, s in res.get("metrics", {}).items():
            for entry in (s or {}).get("undefined") or []:
                metrics, names = found.setdefault((int(entry["fold"]), str(entry["reason"])), ({}, {}))
                metrics[m] = names[arm] = None
    return [
        f"{prefix}fold {fold}: {reason}: {', '.join(metrics)} undefined there for arm(s) {', '.join(names)}; "
        f"their means are over the other folds only"
        for (fold, reason), (metrics, names) in sorted(found.items())
    ]


def _chance_lines(prefix: str, arms: dict, k: int | None) -> list[str]:
    """One line per arm whose mean accuracy / balanced accuracy is <= 1/k, or whose mean AUC is <= 0.5."""
    lines = []
    for arm, res in arms.items():
        below = []
        for m in CHANCE_METRICS if k else ():
            mean = (res.get("metrics", {}).get(m) or {}).get("mean")
            if mean is not None and mean <= 1.0 / k + 1e-9:
                below.append(f"{m} {100 * mean:.1f} %")
        parts = [f"{', '.join(below)} <= chance {100 / k:.1f} % (1/{k} classes)"] if below else []
        mean = (res.get("metrics", {}).get("auc") or {}).get("mean")
        if mean is not None and mean <= CHANCE_AUC + 1e-9:
            parts.append(f"auc {mean:.3f} <= chance {CHANCE_AUC}")
        if parts:
            lines.append(f"{prefix}arm '{arm}' is at or below chance: " + "; ".join(parts))
    return lines


def review_report(report: dict) -> list[str]:
    """The warning lines of ``report``: folds where a metric is undefined (named, with the reason) and arms at or
    below chance; for the top-level arms and for every task of a multi-task report (but the primary one, whose arms
    are the top-level ones)."""
    sections = [("", report, True)] + [
        (f"task '{name}', ", task, False)
        for name, task in (report.get("tasks") or {}).items()
        if name != report.get("primary_task") and isinstance(task, dict) and "arms" in task
    ]
    external = report.get("external")
    if isinstance(external, dict) and "arms" in external:
        sections.append(("external test set, ", external, False))
    lines = []
    for prefix, section, primary in sections:
        lines += _fewer_folds_lines(prefix, section.get("arms") or {})
        lines += _chance_lines(prefix, section.get("arms") or {}, _num_classes(report, section, primary))
    return lines


def arms_table(report: dict) -> list[str]:
    """The per-arm table (mean ± std [95 % CI], in %) beside the paper's values: report.md's and the model cards'
    (``ci/render_results.py``), one function so the two cannot disagree."""
    arms = report["arms"]
    # a report names its own metrics (e.g. Dice for segmentation); classification ones by default
    names = report.get("metric_names") or SUMMARY_METRICS
    metrics = [m for m in names if any(m in a["metrics"] for a in arms.values())]
    ref = report.get("paper_reference", {})
    lines = ["| arm | " + " | ".join(metrics) + " | paper |", "|---|" + "---|" * (len(metrics) + 1)]
    for arm, res in arms.items():
        paper = ", ".join(f"{k} {100 * v:.1f}" for k, v in ref.get(arm, {}).items()) or "-"
        lines.append(f"| {arm} | " + " | ".join(_fmt(res["metrics"].get(m)) for m in metrics) + f" | {paper} |")
    return lines


def paper_summary_table(columns: list[tuple[str, dict]], metric: str) -> list[str]:
    """One metric of several runs side by side, beside the paper's value: rows are the arms of every run (in first
    appearance order), columns the paper then each ``(label, report)``; cells as in ``arms_table`` (in %)."""
    arms: list[str] = []
    for _, report in columns:
        arms += [a for a in report["arms"] if a not in arms]
    paper: dict = {}
    for _, report in columns:  # the first run that states the paper's value for an arm gives it
        for arm, ref in (report.get("paper_reference") or {}).items():
            if isinstance(ref, dict) and metric in ref:
                paper.setdefault(arm, ref[metric])
    lines = [
        f"| arm ({metric}) | paper | " + " | ".join(label for label, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for arm in arms:
        ref = f"{100 * paper[arm]:.1f}" if arm in paper else "-"
        cells = [
            _fmt((r["arms"].get(arm) or {}).get("metrics", {}).get(metric)) if arm in r["arms"] else "-"
            for _, r in columns
        ]
        lines.append(f"| {arm} | {ref} | " + " | ".join(cells) + " |")
    return lines


def comparison_lines(report: dict) -> list[str]:
    """One line per compared pair and metric: the paired difference, its 95 % CI and the verdict."""
    lines = []
    for name, res in (report.get("comparisons") or {}).items():
        for m in report.get("metric_names") or ("accuracy", "sensitivity", "specificity", "auc"):
            if m in res:
                s = res[m]
                folds = f" (over {s['n']} of {s['n'] + s['n_nan']} folds)" if s.get("n_nan") else ""
                lines.append(
                    f"- {name}, {m}: difference {100 * s['mean']:+.1f} points "
                    f"[{100 * s['ci95'][0]:+.1f}, {100 * s['ci95'][1]:+.1f}]{folds} -> **{s['verdict']}**"
                )
    return lines


def render_markdown(report: dict) -> str:
    """A human summary of ``report``: per-arm table (mean ± std [95 % CI], in %), the paper's values, verdicts."""
    lines = [
        f"# {report['bundle']}: {report.get('paper', '')}",
        "",
        f"Data set: **{report.get('dataset', '?')}**; {report.get('folds')} patient-separated folds; seed "
        f"{report.get('seed')}. Values in %: mean ± std across folds [95 % CI of the mean, Student t].",
        "",
        *arms_table(report),
    ]
    warnings = report["warnings"] if "warnings" in report else review_report(report)
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- **warning**: {w}" for w in warnings]
    if report.get("comparisons"):
        lines += ["", "## Does the synthetic data help?", "", *comparison_lines(report)]
    lines += _task_lines(report)
    lines += external_lines(report)
    for section in ("synthesis", "privacy"):
        if report.get(section):
            lines += ["", f"## {section.capitalize()}", "", "```", json.dumps(report[section], indent=1)[:4000], "```"]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    if report.get("undefined"):
        lines += ["", "## Values that could not be computed (null in report.json)", ""]
        lines += [f"- {u}" for u in report["undefined"]]
    return "\n".join(lines) + "\n"


def _count(n, noun: str) -> str:
    """``"1 case"``, ``"3 cases"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def external_lines(report: dict, level: int = 2) -> list[str]:
    """The "External test set" part of report.md (and of the model cards: ``ci/render_results.py``): the arms table
    of ``report["external"]`` (``arms_table`` of a report-shaped dict: mean ± std [95 % CI] over the folds' models),
    then the bootstrap 95 % CI over external patients of the fold-averaged values; per task for a multi-task report.
    ``level``: the Markdown heading level of its title. Empty without an external test set."""
    ext = report.get("external")
    if not isinstance(ext, dict) or not ext.get("arms"):
        return []
    where = ext.get("dataset_dir") or "?"
    shared = ext.get("shared_patients") or 0
    # reports written before the section named its unit: a segmentation report (n_cases) counts whole volumes
    unit = ext.get("unit") or ("case" if "n_cases" in report else "image")
    lines = [
        "",
        f"{'#' * level} External test set",
        "",
        f"Data set: **{ext.get('dataset', '?')}** ({ext.get('origin', 'test_dir')}: `{where}`), "
        f"{_count(ext.get('n_images'), unit)} of {_count(ext.get('n_patients'), 'patient')}, "
        "used for no training and no model selection: the selected "
        f"model of every fold and arm scored once on all of it. Values in %: mean ± std across the "
        f"{report.get('folds')} folds' models [95 % CI of the mean, Student t].",
    ]
    if shared:
        lines += ["", f"**warning**: {shared} external patient id(s) also name patients of the data set."]
    sections = [(None, ext)] + [(name, task) for name, task in (ext.get("tasks") or {}).items()]
    for name, sec in sections:
        shaped = {"arms": sec["arms"], "paper_reference": {}, "metric_names": report.get("metric_names")}
        if name is not None:
            lines += ["", f"{'#' * (level + 1)} {name} ({', '.join(sec.get('class_names', []))})"]
        lines += ["", *arms_table(shaped)]
        lines += _bootstrap_table(sec.get("bootstrap") or {})
    return lines


def _bootstrap_table(bootstrap: dict) -> list[str]:
    """One row per arm: each metric's fold-averaged value [bootstrap 95 % CI over external patients], in %."""
    names = ("accuracy", "balanced_accuracy", "auc", "dice_wt", "dice_tc", "dice_et", "dice_mean")
    metrics = [m for m in names if any(m in b for b in bootstrap.values())]
    if not metrics:
        return []
    first = next(iter(bootstrap.values()))
    n = next((first[m].get("n_patients") for m in metrics if isinstance(first.get(m), dict)), "?")
    lines = [
        "",
        f"Fold-averaged value [bootstrap 95 % CI over the {n} external patients], in %:",
        "",
        "| arm | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for arm, res in bootstrap.items():
        cells = []
        for m in metrics:
            b = res.get(m) or {}
            lo, hi = (b.get("ci95") or [None, None])[:2]
            value = b.get("value")
            if value is None or not math.isfinite(value):
                cells.append("n/a")
            elif lo is None or hi is None:
                cells.append(f"{100 * value:.1f}")
            else:
                cells.append(f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _task_lines(report: dict) -> list[str]:
    """One table per task of a multi-task report (``report["tasks"]``), accuracy / sensitivity / specificity."""
    tasks = report.get("tasks") or {}
    if not tasks:
        return []
    lines = ["", "## Per task", "", f"The arms table above is the task **{report.get('primary_task', '?')}**."]
    for name, task in tasks.items():
        ref = task.get("paper_reference", {})
        metrics = ("accuracy", "sensitivity", "specificity", "balanced_accuracy")
        lines += ["", f"### {name} ({', '.join(task.get('class_names', []))})", ""]
        lines += ["| arm | " + " | ".join(metrics) + " | paper |", "|---|" + "---|" * (len(metrics) + 1)]
        for arm, res in task["arms"].items():
            paper = ", ".join(f"{k} {100 * v:.1f}" for k, v in ref.get(arm, {}).items()) or "-"
            lines.append(f"| {arm} | " + " | ".join(_fmt(res["metrics"].get(m)) for m in metrics) + f" | {paper} |")
    return lines


def plot_arms(report: dict, path: str) -> str | None:
    """Bar chart of each metric per arm with 95 % CI error bars and the paper's values as markers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # figures are optional; the numbers are in report.json
        return None
    arms = list(report["arms"])
    names = report.get("metric_names") or ("accuracy", "sensitivity", "specificity", "auc")
    metrics = [m for m in names if m in report["arms"][arms[0]]["metrics"]]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(metrics), 3.6))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        ms = [report["arms"][arm]["metrics"][m] for m in metrics]
        means = np.array([s["mean"] if s["mean"] is not None else np.nan for s in ms])
        lo = np.array([s["mean"] - s["ci95"][0] if s["mean"] is not None else 0 for s in ms])
        hi = np.array([s["ci95"][1] - s["mean"] if s["mean"] is not None else 0 for s in ms])
        x = np.arange(len(metrics)) + i * width
        ax.bar(x, means, width, yerr=[lo, hi], capsize=3, label=arm)
        for j, m in enumerate(metrics):
            v = report.get("paper_reference", {}).get(arm, {}).get(m)
            if v is not None:
                ax.plot(x[j], v, "k*", markersize=9)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(arms) - 1) / 2, metrics)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{report['bundle']} on {report.get('dataset')} (★ = paper)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def strict_json(obj: Any, path: str = "", undefined: list[str] | None = None) -> tuple[Any, list[str]]:
    """A copy of ``obj`` that strict JSON can hold: numpy scalars/arrays as Python values, NaN and infinities as
    ``None``. Returns ``(copy, lines)``: one ``"<path>: <why>"`` line for every ``None`` made here whose reason is not
    beside it already (an ``undefined`` entry of its own dict, as ``classification_metrics`` writes)."""
    undefined = [] if undefined is None else undefined
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        undefined.append(f"{path or '<report>'}: not a finite number ({'NaN' if math.isnan(obj) else obj})")
        return None, undefined
    if isinstance(obj, dict):
        reasons = obj.get("undefined") if isinstance(obj.get("undefined"), dict) else {}
        out = {}
        for key, value in obj.items():
            own: list[str] = []
            out[key] = strict_json(value, f"{path}.{key}" if path else str(key), own)[0]
            if not (key in reasons and not isinstance(value, (dict, list, tuple))):
                undefined.extend(own)  # a leaf NaN with its reason beside it needs no second line
        return out, undefined
    if isinstance(obj, (list, tuple)):
        return [strict_json(v, f"{path}.{i}", undefined)[0] for i, v in enumerate(obj)], undefined
    return obj, undefined


def write_report(report: dict, output_dir: str) -> dict:
    """Write ``report.json`` (strict JSON), ``report.md`` and ``report_arms.png`` into ``output_dir`` (atomically).

    Adds ``report["warnings"]`` (``review_report``; each also logged as a warning) and ``report["undefined"]`` (the
    values written as ``null`` without a reason beside them) to ``report``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure = plot_arms(report, str(out / "report_arms.png"))
    if figure and os.path.basename(figure) not in report.get("figures", []):
        report.setdefault("figures", []).append(os.path.basename(figure))
    report["warnings"] = review_report(report)
    for line in report["warnings"]:
        logger.warning(line)
    report.pop("undefined", None)
    clean, undefined = strict_json(report)
    if undefined:
        report["undefined"] = clean["undefined"] = undefined
    # the guard: a bare NaN or Infinity makes report.json unreadable for strict parsers (JavaScript, jq, ...)
    text = json.dumps(clean, indent=1, allow_nan=False)
    for name, content in (("report.json", text), ("report.md", render_markdown(clean))):
        tmp = out / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(content)
        os.replace(tmp, out / name)
    return report
