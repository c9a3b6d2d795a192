"""``LossHistory`` writes ``train_log.csv`` by column name: a lazy regulariser (R1 every 16 steps) that runs on an
epoch's first step changes the order in which that epoch reports its losses, and a loss can first appear later."""

from __future__ import annotations

import csv

import torch
from ignite.engine import Engine

from common.engines.handlers import LossHistory


def test_columns_stay_under_their_names_when_the_key_order_or_set_changes(tmp_path):
    outputs = {
        1: [{"d_loss": 1.0, "g_loss": 2.0}, {"d_loss": 3.0, "g_loss": 4.0}],
        # epoch 2 starts with a regulariser step: d_reg first, then the losses
        2: [{"d_reg": 5.0, "d_loss": 1.0, "g_loss": 2.0}, {"d_loss": 1.0, "g_loss": 2.0}],
        3: [{"g_loss": torch.tensor(6.0), "d_loss": torch.tensor(8.0)}, {"g_loss": 6.0, "d_loss": 8.0}],
    }

    def step(engine, _):
        return outputs[engine.state.epoch][(engine.state.iteration - 1) % 2]

    engine = Engine(step)
    LossHistory(str(tmp_path)).attach(engine)
    engine.run([0, 1], max_epochs=3)
    with open(tmp_path / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [float(r["d_loss"]) for r in rows] == [2.0, 1.0, 8.0]
    assert [float(r["g_loss"]) for r in rows] == [3.0, 2.0, 6.0]
    assert [r["d_reg"] for r in rows] == ["", "2.5", ""]  # averaged over the epoch's steps; empty where absent
    assert engine.state.history[1]["d_reg"] == 2.5
