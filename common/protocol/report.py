"""report.json / report.md / figures: our numbers with their uncertainty, beside the paper's, with a verdict.

The verdict of a comparison (e.g. ``classic+synthetic`` vs ``classic``) comes from the paired per-fold
differences: "better" only when the whole 95 % CI of the mean difference is above zero, "worse" when it is below,
otherwise "no clear difference". A report never claims a gain that its own intervals do not support.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.metrics.stats import summarize

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc")


def summarize_arms(per_fold: dict[str, list[dict]], metrics: Sequence[str] = SUMMARY_METRICS) -> dict:
    """``{arm: [fold metrics...]}`` -> ``{arm: {"metrics": {m: summarize}, "per_fold": [...]}}``; the metrics are
    proportions, so their intervals are clipped to [0, 1]."""
    arms = {}
    for arm, folds in per_fold.items():
        names = [m for m in metrics if any(m in f for f in folds)]
        arms[arm] = {
            "metrics": {m: summarize([f.get(m, np.nan) for f in folds], bounds=(0.0, 1.0)) for m in names},
            "per_fold": folds,
        }
    return arms


def compare_arms(per_fold: dict[str, list[dict]], pairs: Sequence[tuple[str, str]], metrics=SUMMARY_METRICS) -> dict:
    """Paired per-fold differences ``a - b`` for each ``(a, b)`` in ``pairs`` and each metric, with a verdict."""
    out = {}
    for a, b in pairs:
        if a not in per_fold or b not in per_fold:
            continue
        res = {}
        for m in metrics:
            diffs = [fa.get(m, np.nan) - fb.get(m, np.nan) for fa, fb in zip(per_fold[a], per_fold[b])]
            s = summarize(diffs, bounds=(-1.0, 1.0))
            if s["mean"] is None:
                continue
            lo, hi = s["ci95"]
            s["verdict"] = "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"
            res[m] = s
        out[f"{a} vs {b}"] = res
    return out


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
    return f"{f * s['mean']:.1f} ± {f * s['std']:.1f} [{f * lo:.1f}, {f * hi:.1f}]"


def render_markdown(report: dict) -> str:
    """A human summary of ``report``: per-arm table (mean ± std [95 % CI], in %), the paper's values, verdicts."""
    arms = report["arms"]
    # a report names its own metrics (e.g. Dice for segmentation); classification ones by default
    names = report.get("metric_names") or SUMMARY_METRICS
    metrics = [m for m in names if any(m in a["metrics"] for a in arms.values())]
    ref = report.get("paper_reference", {})
    lines = [
        f"# {report['bundle']}: {report.get('paper', '')}",
        "",
        f"Data set: **{report.get('dataset', '?')}**; {report.get('folds')} patient-separated folds; seed "
        f"{report.get('seed')}. Values in %: mean ± std across folds [95 % CI of the mean, Student t].",
        "",
        "| arm | " + " | ".join(metrics) + " | paper |",
        "|---|" + "---|" * (len(metrics) + 1),
    ]
    for arm, res in arms.items():
        paper = ", ".join(f"{k} {100 * v:.1f}" for k, v in ref.get(arm, {}).items()) or "-"
        lines.append(f"| {arm} | " + " | ".join(_fmt(res["metrics"].get(m)) for m in metrics) + f" | {paper} |")
    if report.get("comparisons"):
        lines += ["", "## Does the synthetic data help?", ""]
        for name, res in report["comparisons"].items():
            for m in report.get("metric_names") or ("accuracy", "sensitivity", "specificity", "auc"):
                if m in res:
                    s = res[m]
                    lines.append(
                        f"- {name}, {m}: difference {100 * s['mean']:+.1f} points "
                        f"[{100 * s['ci95'][0]:+.1f}, {100 * s['ci95'][1]:+.1f}] -> **{s['verdict']}**"
                    )
    lines += _task_lines(report)
    for section in ("synthesis", "privacy"):
        if report.get(section):
            lines += ["", f"## {section.capitalize()}", "", "```", json.dumps(report[section], indent=1)[:4000], "```"]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


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


def write_report(report: dict, output_dir: str) -> dict:
    """Write ``report.json``, ``report.md`` and ``report_arms.png`` into ``output_dir`` (atomically)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure = plot_arms(report, str(out / "report_arms.png"))
    if figure:
        report.setdefault("figures", []).append(os.path.basename(figure))
    for name, text in (("report.json", json.dumps(report, indent=1, default=_json_default)), ("report.md", None)):
        text = text if text is not None else render_markdown(report)
        tmp = out / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return report


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
