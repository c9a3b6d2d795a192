"""Experiment tracking beyond TensorBoard: MLflow settings for ``monai.bundle run ... --tracking``.

MONAI's default MLflow settings (``--tracking mlflow``) log only a ``loss`` key, to an SQLite store that needs
SQLAlchemy. Our settings file (``common/tracking/mlflow.json``) logs every loss a GAN trainer reports, the run's
hyper-parameters and its sample grids / logs as artefacts, to a local SQLite store under ``<output_dir>/mlruns``
(or any ``--tracking_uri``)::

    python -m monai.bundle run training --config_file bundles/<b>/configs/train.json \\
        --tracking common/tracking/mlflow.json [--tracking_uri sqlite:////path/mlruns.db] [--experiment_name NAME]

It needs ``pip install mlflow-skinny sqlalchemy alembic`` (or ``mlflow``): ``setup.cfg``'s ``[tracking]`` extra.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SETTINGS_FILE", "local_store_uri", "run_params"]

#: the settings file to pass to ``--tracking``
SETTINGS_FILE = str(Path(__file__).with_name("mlflow.json"))


def local_store_uri(folder: str) -> str:
    """Tracking URI of a local MLflow store in ``folder``: an SQLite file ``mlruns.db`` (MONAI's ``MLFlowHandler``
    and MLflow 3 no longer accept a plain file store), with artefacts in ``folder/artifacts``."""
    from monai.utils import path_to_sqlite_uri

    path = Path(folder).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path_to_sqlite_uri(str(path / "mlruns.db"))


def run_params(**params) -> dict:
    """Hyper-parameters to log: scalars as they are, anything else as its string (MLflow params are strings)."""
    out = {}
    for key, value in params.items():
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        else:
            out[key] = str(value)
    return out
