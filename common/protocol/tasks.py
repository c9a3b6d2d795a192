"""Classification tasks derived from one labelled data set: the multi-class task and binary "class vs rest" tasks.

He et al. 2019 report each lung CT sign against the rest (binary) and all signs at once (multi-class); MelanoGANs
reports melanoma vs rest beside the 9-class task. One data set, one set of patient-separated folds and one
synthetic set per fold serve every task: a task only maps the data set's labels (real and synthetic alike) to its
own classes, so no task can see a patient or a generator that another task's fold would not.

Task specs (strings, as a config writes them):

- ``"multiclass"``: the data set's classes as they are;
- ``"<class>_vs_rest"``: binary, label 1 = ``<class>``, label 0 = every other class;
- ``"one_vs_rest"``: expands to ``"<class>_vs_rest"`` for every class that is not a *background* class (``normal``,
  ``other`` by default: "normal vs rest" is not a sign).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ClassificationTask", "make_tasks", "relabel"]

MULTICLASS = "multiclass"
ONE_VS_REST = "one_vs_rest"
VS_REST = "_vs_rest"
#: Classes that are never the positive class of an expanded ``one_vs_rest``.
BACKGROUND_CLASSES = ("normal", "other")


@dataclass(frozen=True)
class ClassificationTask:
    """A named relabelling: ``label_map[original label]`` is the task's label; ``class_names`` in task label order."""

    name: str
    class_names: tuple[str, ...]
    label_map: tuple[int, ...]

    @property
    def is_identity(self) -> bool:
        return self.label_map == tuple(range(len(self.label_map))) and len(self.class_names) == len(self.label_map)


def make_tasks(
    class_names: Sequence[str], specs: Sequence[str], background: Sequence[str] = BACKGROUND_CLASSES
) -> list[ClassificationTask]:
    """Turn task specs (see the module docstring) into tasks over ``class_names``, in order, without duplicates.

    Raises:
        ValueError: an unknown spec or class name (the message lists the valid ones), or no task at all.
    """
    names = [str(c) for c in class_names]
    expanded: list[str] = []
    for spec in specs:
        spec = str(spec)
        if spec == ONE_VS_REST:
            expanded += [f"{c}{VS_REST}" for c in names if c not in set(background)]
        else:
            expanded.append(spec)
    tasks, seen = [], set()
    for spec in expanded:
        if spec in seen:
            continue
        seen.add(spec)
        if spec == MULTICLASS:
            tasks.append(ClassificationTask(MULTICLASS, tuple(names), tuple(range(len(names)))))
        elif spec.endswith(VS_REST) and spec[: -len(VS_REST)] in names:
            positive = names.index(spec[: -len(VS_REST)])
            label_map = tuple(int(i == positive) for i in range(len(names)))
            tasks.append(ClassificationTask(spec, ("rest", names[positive]), label_map))
        else:
            valid = [MULTICLASS, ONE_VS_REST] + [f"{c}{VS_REST}" for c in names]
            raise ValueError(f"unknown task '{spec}' (key 'tasks'); valid: {valid}")
    if not tasks:
        raise ValueError(f"no task left from {list(specs)} (key 'tasks'): every class is a background class")
    return tasks


def relabel(items: Sequence[dict], task: ClassificationTask | None, label_key: str = "label") -> list[dict]:
    """Copies of ``items`` with the task's labels; the original label is kept as ``source_label``."""
    if task is None or task.is_identity:
        return list(items)
    return [{**it, label_key: task.label_map[int(it[label_key])], "source_label": int(it[label_key])} for it in items]
