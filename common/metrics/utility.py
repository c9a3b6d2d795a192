"""Utility of synthetic data: "train on synthetic, test on real" (TSTR) beside "train on real, test on real" (TRTR).

Generic on purpose: the model, the training loop and the metrics are callables the caller passes in, so that the
bundles' protocol (k folds x arms) can use the same helper for a classifier or a segmenter. The helper owns only the
order of operations that keeps the comparison fair:

1. every arm starts from the same seeded initialisation (``set_determinism(seed)`` then ``model_factory()``);
2. ``train_fn`` sees only that arm's training set: any validation split, early stopping or model selection happens
   inside it, on training data. The test set is never passed to it;
3. ``evaluate_fn`` is called once per trained model on the real test set, after training has finished.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.utils import set_determinism

from common.metrics.stats import summarize

__all__ = ["compare_training_sets", "train_synthetic_test_real"]


def compare_training_sets(
    model_factory: Callable[[], Any],
    train_fn: Callable[[Any, Any], Any],
    evaluate_fn: Callable[[Any, Any], Mapping[str, float]],
    train_sets: Mapping[str, Any],
    test_set: Any,
    seeds: Sequence[int] = (0,),
) -> dict:
    """Train one model per (arm, seed) on ``train_sets[arm]`` and evaluate every model on the same ``test_set``.

    Args:
        model_factory: ``() -> model``; called after seeding, so every arm starts from the same weights.
        train_fn: ``(model, train_set) -> trained model`` (or None when it trains ``model`` in place). It never
            receives the test set; tune (validation split, early stopping) inside it on its training set only.
        evaluate_fn: ``(model, test_set) -> {"accuracy": ..., ...}`` (floats).
        train_sets: ``{arm name: training set}``, any objects ``train_fn`` understands (datasets, loaders, arrays).
        test_set: held-out real data, used for evaluation only.
        seeds: one run per seed and arm; metrics are summarised over seeds (mean, std, Student-t CI).

    Returns:
        ``{"arms": {arm: {"metrics": {name: summary}, "per_seed": [{"seed": s, name: value, ...}]}}}`` with
        ``summary = {"mean", "std", "ci95", "n", "n_nan"}``: the ``arms`` layout of a bundle's ``report.json``.
    """
    for name, data in train_sets.items():
        if data is test_set:
            raise ValueError(f"compare_training_sets: arm '{name}' trains on the test set itself")
    arms: dict[str, dict] = {}
    for name, data in train_sets.items():
        per_seed = []
        for seed in seeds:
            set_determinism(seed=int(seed))
            model = model_factory()
            trained = train_fn(model, data)
            model = trained if trained is not None else model
            metrics = {k: float(v) for k, v in evaluate_fn(model, test_set).items()}
            per_seed.append({"seed": int(seed), **metrics})
        names = [k for k in per_seed[0] if k != "seed"]
        arms[name] = {
            "metrics": {k: summarize([r.get(k, float("nan")) for r in per_seed]) for k in names},
            "per_seed": per_seed,
        }
    return {"arms": arms}


def train_synthetic_test_real(
    model_factory: Callable[[], Any],
    train_fn: Callable[[Any, Any], Any],
    evaluate_fn: Callable[[Any, Any], Mapping[str, float]],
    real_train: Any,
    synthetic_train: Any,
    real_test: Any,
    seeds: Sequence[int] = (0,),
) -> dict:
    """TSTR vs TRTR: the same model and training recipe on real vs synthetic training data, tested on real data.

    Args:
        model_factory, train_fn, evaluate_fn, seeds: as in ``compare_training_sets``.
        real_train: the real training images (those the generator was trained on, or the same split).
        synthetic_train: synthetic images with labels, in the same form as ``real_train``.
        real_test: held-out real data, never seen by the generator nor by ``train_fn``.

    Returns:
        ``{"arms": {"baseline": ..., "synthetic_only": ...}, "tstr_over_trtr": {metric: mean ratio}}``; arm names are
        the report's (``baseline`` = train on real). A ratio near 1 means the synthetic set can stand in for the
        real one for this task; it is None when the baseline mean is 0 or undefined.
    """
    result = compare_training_sets(
        model_factory,
        train_fn,
        evaluate_fn,
        {"baseline": real_train, "synthetic_only": synthetic_train},
        real_test,
        seeds,
    )
    base, syn = result["arms"]["baseline"]["metrics"], result["arms"]["synthetic_only"]["metrics"]
    ratios = {}
    for k in base:
        b, s = base[k]["mean"], syn.get(k, {}).get("mean")
        ratios[k] = s / b if b not in (None, 0) and s is not None else None
    result["tstr_over_trtr"] = ratios
    return result
