"""Export the downstream model of a finished protocol: the one a user deploys (MONAI Label, a collaborator).

The arm and fold are chosen by the *validation* score each arm recorded while training (``result.json``); the test
folds played no part, so the exported model is not selected on the numbers the report gives.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["export_best_model"]


def export_best_model(
    candidates: Iterable[tuple[str, int, Path]], metric_key: str, target: str | os.PathLike, **info
) -> dict:
    """Copy the ``best_model.pt`` beside the ``result.json`` with the highest ``metric_key`` to ``target``.

    Args:
        candidates: ``(arm, fold, result.json path)``; missing files are skipped.
        metric_key: the validation score in ``result.json`` (e.g. ``best_val_dice_mean``).
        target: where the weights go; ``<target stem>.json`` records the choice (plus ``info``).
    """
    best = None
    for arm, fold, result in candidates:
        if not Path(result).is_file():
            continue
        score = json.loads(Path(result).read_text()).get(metric_key)
        if score is None:
            continue
        if best is None or score > best[metric_key]:
            best = {"arm": arm, "fold": fold, metric_key: score, "model": str(Path(result).parent / "best_model.pt")}
    if best is None:
        raise FileNotFoundError(f"no trained model with '{metric_key}' among the candidates: run the evaluation first")
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.copyfile(best["model"], tmp)
    os.replace(tmp, target)
    record = {**best, **info, "exported": str(target), "selected_on": f"validation {metric_key}"}
    tmp = target.with_suffix(f".json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, target.with_suffix(".json"))
    logger.info(f"exported the '{best['arm']}' model of fold {best['fold']} to {target}")
    return record
