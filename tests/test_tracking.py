"""MLflow tracking of a training run through ``--tracking common/tracking/mlflow.json``: parameters, every loss
per epoch, and the GAN's sample grids / logs as artefacts, in a local SQLite store under the output folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

mlflow = pytest.importorskip("mlflow")

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "brain_pix2pix"


def test_training_logs_params_metrics_and_artifacts_to_mlflow(tmp_path):
    from common.tracking import SETTINGS_FILE

    wf = ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / f"{n}.json") for n in ("train", "quick", "smoke")],
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        output_dir=str(tmp_path),
        bundle_root=str(BUNDLE),
        tracking=SETTINGS_FILE,
        max_epochs=2,
    )
    wf.initialize()
    wf.run()
    store = tmp_path / "mlruns"
    assert (store / "mlruns.db").is_file()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{store / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("brain_pix2pix")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == "2" and run.data.params["seed"] == "0"
    for loss in ("g_loss", "d_loss", "g_l1", "g_adv"):
        history = client.get_metric_history(run.info.run_id, loss)
        assert [m.step for m in history] == [1, 2], f"{loss} logged once per epoch"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples_epoch_0002.png", "train_log.csv"} <= artifacts
    assert not (REPO / "mlruns").exists(), "nothing written into the repository"
