"""The classification protocol's report, assembled from its folds' scores: the primary task's arms and comparisons,
the audits, and the per-task, binary-mean and external test set sections (``common.protocol.report`` writes it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.protocol import external as external_scores
from common.protocol.report import SUMMARY_METRICS, compare_arms, merge_fold_sections, summarize_arms
from common.protocol.tasks import ClassificationTask

__all__ = ["assemble_report", "binary_mean", "external_section", "tasks_section"]


def assemble_report(
    header: dict,
    scores: dict[str, dict[str, list[dict]]],
    tasks: Sequence[ClassificationTask] | None,
    *,
    arms: Sequence[str],
    k: int,
    comparisons: Sequence[tuple[str, str]],
    paper_reference: dict,
    audits: list[dict],
    notes: list[str],
    external: dict | None = None,
) -> dict:
    """The report: ``header`` (what ran), then the primary task's arms (mean/std/CI over folds) and comparisons, the
    paper's numbers, the folds' synthesis and privacy audits, the notes; with tasks, every task's section; with an
    external test set, its section (``external``, made by :func:`external_section`).

    ``scores``: ``{task name: {arm: [fold metrics...]}}``, the task name ``""`` without tasks (``FoldRunner``)."""
    tasks_part = tasks_section(scores, tasks, arms=arms, k=k, comparisons=comparisons,
                               paper_reference=paper_reference) if tasks else None  # fmt: skip
    primary = scores[tasks[0].name if tasks else ""]
    report = {
        **header,
        "arms": summarize_arms(primary),
        "comparisons": compare_arms(primary, comparisons),
        "paper_reference": paper_reference,
        "synthesis": merge_fold_sections([a.get("synthesis", {}) for a in audits]),
        "privacy": merge_fold_sections([a.get("privacy", {}) for a in audits]),
        "notes": notes,
    }
    if tasks_part is not None:
        report["primary_task"] = tasks[0].name
        report["tasks"] = tasks_part
    if external is not None:
        report["external"] = external
    return report


def tasks_section(
    per_task: dict[str, dict[str, list[dict]]],
    tasks: Sequence[ClassificationTask],
    *,
    arms: Sequence[str],
    k: int,
    comparisons: Sequence[tuple[str, str]],
    paper_reference: dict,
) -> dict:
    """Per task: class names, arms (mean/std/CI over folds), comparisons and the paper's numbers for it; plus
    ``binary_mean``, each fold's metrics averaged over the binary tasks (He et al.'s "mean accuracy")."""
    refs = paper_reference.get("tasks", {})
    section = {}
    for task in tasks:
        section[task.name] = {
            "class_names": list(task.class_names),
            "arms": summarize_arms(per_task[task.name]),
            "comparisons": compare_arms(per_task[task.name], comparisons),
            "paper_reference": refs.get(task.name, {}),
        }
    binary = [t.name for t in tasks if len(t.class_names) == 2]
    if len(binary) > 1:
        metrics = [m for m in SUMMARY_METRICS if m != "auc"]  # AUC is NaN where a fold lacks a sign: keep it out
        mean_per_fold = {arm: [binary_mean(per_task, binary, arm, f, metrics) for f in range(k)] for arm in arms}
        section["binary_mean"] = {
            "class_names": binary,
            "num_classes": 2,  # each task's: chance is 1/2
            "arms": summarize_arms(mean_per_fold),
            "comparisons": compare_arms(mean_per_fold, comparisons),
            "paper_reference": refs.get("binary_mean", {}),
        }
    return section


def binary_mean(per_task: dict, tasks: Sequence[str], arm: str, fold: int, metrics: Sequence[str]) -> dict:
    """One fold's metrics averaged over the binary ``tasks``; undefined (NaN, with the tasks' reasons) where a task's
    is: a mean over the tasks that happen to be defined would be another quantity in the same column."""
    folds = [per_task[t][arm][fold] for t in tasks]
    out: dict = {}
    undefined: dict[str, str] = {}
    for m in metrics:
        values = [f.get(m) for f in folds]
        bad = [(t, f) for t, f, v in zip(tasks, folds, values, strict=True) if not _finite(v)]
        out[m] = float("nan") if bad else float(np.mean(values))
        if bad:
            undefined[m] = "; ".join(f"task '{t}': {(f.get('undefined') or {}).get(m, 'not computed')}" for t, f in bad)
    return out | {"undefined": undefined}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def external_section(
    external: dict,
    scores: dict[str, dict[str, list[dict]]],
    tasks: Sequence[ClassificationTask] | None,
    *,
    class_names: Sequence[str],
    n_resamples: int,
    seed: int,
    comparisons: Sequence[tuple[str, str]],
) -> dict:
    """The report's ``external`` section from the external test set's ``scores`` (as in :func:`assemble_report`): the
    primary task's arms (and, with tasks, every task's), with patient-bootstrap CIs (``common.protocol.external``)."""

    def one(task: ClassificationTask | None) -> dict:
        names = list(task.class_names) if task is not None else list(class_names)
        return external_scores.classification_section(
            external, scores[task.name if task is not None else ""], class_names=names,
            n_resamples=n_resamples, seed=seed, comparisons=comparisons,
        )  # fmt: skip

    out = one(tasks[0] if tasks else None)
    if tasks:
        out["tasks"] = {t.name: one(t) for t in tasks}
    return out
