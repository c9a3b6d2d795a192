"""Patient-separated, class-stratified cross-validation folds, made once and saved next to the report."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import DataError

logger = logging.getLogger(__name__)


def _patient_of(item: dict) -> str:
    return str(item.get("patient", item["image"]))


def patient_folds(labels_by_patient: dict[str, int], k: int, seed: int) -> list[list[str]]:
    """Split patients into ``k`` folds, stratified by each patient's (majority) class.

    Patients of each class are shuffled and dealt round-robin, starting each class at the currently smallest
    fold, so that folds have similar sizes and class mixes.
    """
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    by_class: dict[int, list[str]] = defaultdict(list)
    for patient, label in sorted(labels_by_patient.items()):
        by_class[label].append(patient)
    for label in sorted(by_class):
        patients = by_class[label]
        rng.shuffle(patients)
        start = int(np.argmin([len(f) for f in folds]))
        for i, patient in enumerate(patients):
            folds[(start + i) % k].append(patient)
    return [sorted(f) for f in folds]


def make_splits(items: Sequence[dict], k: int, seed: int, val_fraction: float = 0.15, label_key: str = "label") -> dict:
    """Folds of ``items`` by patient: for fold i, ``test`` = patients of fold i, and the other patients are split
    again (stratified) into ``train`` and ``val`` (``val_fraction`` of them, at least one per class when possible).

    Fewer patients than ``k``, or so few that a fold would leave no training or no validation patient (3 patients
    in 2 folds): one fold per patient (leave-one-patient-out), with a warning and the reason under ``fallback``; a set
    too small for any cross-validation (fewer than 3 patients: one each for training, validation and test; 2 without
    validation) is an error.

    Returns ``{"k", "k_requested", "seed", "val_fraction", "fingerprint", "fallback", "folds": [{"train": [...],
    "val": [...], "test": [...]}]}`` with patient ids (``k``: the folds made; ``fallback``: None, or why ``k`` is not
    ``k_requested``); ``fingerprint`` identifies the data set the split was made for.
    """
    labels: dict[str, list[int]] = defaultdict(list)
    for it in items:
        labels[_patient_of(it)].append(int(it[label_key]))
    majority = {p: Counter(v).most_common(1)[0][0] for p, v in labels.items()}
    n, fallback = len(majority), None
    rest_needed = 2 if val_fraction > 0 else 1  # patients outside a test fold: training (+ validation)
    if n < rest_needed + 1:
        roles = "training, validation and test" if val_fraction > 0 else "training and test"
        raise DataError(
            f"only {n} patient(s): patient-separated cross-validation needs at least {rest_needed + 1} (one each for "
            f"{roles})"
        )
    folds = patient_folds(majority, min(k, n), seed)
    if n < k or n - max(len(f) for f in folds) < rest_needed:
        folds = patient_folds(majority, n, seed)
        fallback = (
            f"only {n} patients for {k} folds: {n} folds instead, leave-one-patient-out (each patient is the test set "
            "once, and every fold keeps training and validation patients); with one test patient per fold, metrics "
            "that need every class are undefined in each fold"
        )
        logger.warning(fallback)
    k_used = len(folds)
    out = []
    for i, test in enumerate(folds):
        rest = {p: majority[p] for f in folds[:i] + folds[i + 1 :] for p in f}
        n_val_folds = max(2, int(round(1.0 / max(val_fraction, 1e-6))))
        val = patient_folds(rest, n_val_folds, seed + 1000 + i)[0] if val_fraction > 0 else []
        train = sorted(set(rest) - set(val))
        out.append({"train": train, "val": sorted(val), "test": list(test)})
    return {
        "k": k_used,
        "k_requested": k,
        "seed": seed,
        "val_fraction": val_fraction,
        "fingerprint": fingerprint(items),
        "fallback": fallback,
        "folds": out,
    }


def fingerprint(items: Sequence[dict], label_key: str = "label") -> str:
    """A short hash of (file name, label, patient) of every item: splits are valid only for the same data."""
    keys = sorted(f"{os.path.basename(str(it['image']))}|{it.get(label_key)}|{_patient_of(it)}" for it in items)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def load_or_make_splits(path: str, items: Sequence[dict], k: int, seed: int, val_fraction: float = 0.15) -> dict:
    """Reuse the splits saved at ``path`` when they were made for the same data and settings; else make and save.

    Splits that exist for *other* data are never overwritten silently: that would mix the folds of two data sets
    in one output folder. ``k`` may be the folds asked for or those made (fewer, for a small set: ``make_splits``).
    """
    p = Path(path)
    if p.is_file():
        saved = json.loads(p.read_text())
        same_k = k in (saved.get("k"), saved.get("k_requested", saved.get("k")))
        same_settings = same_k and (saved.get("seed"), saved.get("val_fraction")) == (seed, val_fraction)
        if saved.get("fingerprint") == fingerprint(items) and same_settings:
            return saved
        raise DataError(
            f"'{p}' holds splits for other data or settings (k, seed, val_fraction = {saved.get('k')}, "
            f"{saved.get('seed')}, {saved.get('val_fraction')}): use a new output_dir or delete that file"
        )
    splits = make_splits(items, k, seed, val_fraction)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(splits, indent=1))
    os.replace(tmp, p)
    return splits


def note_fallback(splits: dict, notes: list[str]) -> int:
    """Add the reason ``splits`` has fewer folds than asked (``make_splits``' ``fallback``) to a report's ``notes``,
    once; return the number of folds made, which the protocol then runs and reports."""
    if splits.get("fallback") and splits["fallback"] not in notes:
        notes.append(splits["fallback"])
    return len(splits["folds"])


def select(items: Sequence[dict], patients: Sequence[str]) -> list[dict]:
    """The items whose patient is in ``patients``."""
    wanted = set(patients)
    return [it for it in items if _patient_of(it) in wanted]


class FoldETA:
    """One log line per finished fold with the time left for the whole protocol (folds cost about the same: same
    arms, same step budgets); a resumed fold that reuses its results is fast, so the estimate only improves."""

    def __init__(self, n_folds: int) -> None:
        self.n, self.spent, self.finished, self._t0 = n_folds, 0.0, 0, 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def done(self, fold: int) -> str:
        self.spent += time.perf_counter() - self._t0
        self.finished += 1
        left = self.n - self.finished
        line = f"fold {fold + 1} of {self.n} done ({self.spent / 60:.1f} min so far)"
        if left:
            line += f"; the other {left}: about {self.spent / self.finished * left / 60:.1f} min more"
        logger.info(line)
        return line
