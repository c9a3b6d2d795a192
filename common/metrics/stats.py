"""Summaries with uncertainty: mean, std and a 95 % confidence interval, across folds/seeds or by bootstrap."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _st


def summarize(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """Mean, sample std (ddof=1) and a Student-t confidence interval of the mean of ``values``.

    With k folds the interval uses k - 1 degrees of freedom; it is wide for 3 folds, as it should be.
    ``bounds`` clips the interval to the metric's range (e.g. (0, 1) for accuracy or AUC): with few folds the
    t-interval can otherwise reach past 100 %, which no value can. A single value gets ``std = 0`` and the
    degenerate interval ``[v, v]``; NaNs are dropped and counted.
    """
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n = int(finite.size)
    if n == 0:
        return {"mean": None, "std": None, "ci95": [None, None], "n": 0, "n_nan": int(arr.size)}
    mean = float(finite.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci95": [mean, mean], "n": 1, "n_nan": int(arr.size - n)}
    std = float(finite.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2.0, df=n - 1) * std / np.sqrt(n))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "std": std, "ci95": [lo, hi], "n": n, "n_nan": int(arr.size - n)}


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap of ``statistic(*arrays)``, resampling the rows of all arrays together.

    Returns ``{"value", "std", "ci95": [lo, hi], "n_resamples"}``; ``value`` is the statistic on the full data.
    Resamples on which the statistic is undefined (NaN, e.g. an AUC with one class) are skipped; where it is
    undefined on the full data, ``undefined`` says so beside the NaN ``value``.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("bootstrap_ci: all arrays need the same number of rows")
    rng = np.random.default_rng(seed)
    value = float(statistic(*arrays))
    samples = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        v = float(statistic(*(a[idx] for a in arrays)))
        if np.isfinite(v):
            samples.append(v)
    if not samples:
        out = {"value": value, "std": None, "ci95": [None, None], "n_resamples": 0}
        return out | ({} if np.isfinite(value) else {"undefined": {"value": "undefined on the data (e.g. one class)"}})
    lo, hi = np.percentile(samples, [50 * (1 - confidence), 50 * (1 + confidence)])
    return {
        "value": value,
        "std": float(np.std(samples, ddof=1)),
        "ci95": [float(lo), float(hi)],
        "n_resamples": len(samples),
    }


def bootstrap_over_patients(
    patients: Sequence[str], statistic: Callable[[np.ndarray], float], n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Percentile bootstrap of ``statistic(image_indices)``, resampling *patients* with replacement (each drawn
    patient brings all its images), as ``bootstrap_ci`` returns it plus ``n_patients``.

    Images of one patient are not independent (a nodule seen twice, two radiographs of one child): resampling images
    would give intervals that are too narrow whenever a patient has several."""
    groups: dict[str, list[int]] = {}
    for i, patient in enumerate(patients):
        groups.setdefault(str(patient), []).append(i)
    members = [np.asarray(v, dtype=np.int64) for v in groups.values()]
    single = np.asarray([m[0] for m in members]) if all(len(m) == 1 for m in members) else None

    def on_patients(rows: np.ndarray) -> float:
        if single is not None:  # one image per patient (MedMNIST, most 2-D sets): no concatenation per resample
            return statistic(single[rows])
        return statistic(np.concatenate([members[int(r)] for r in rows]))

    result = bootstrap_ci(on_patients, np.arange(len(members)), n_resamples=n_resamples, seed=seed)
    return result | {"n_patients": len(members)}
