"""BestWeights: the classifier and segmenter trainers keep the validation-best weights, or the last ones (said)
when no validation epoch ran."""

from __future__ import annotations

import logging

import torch
from ignite.engine import Engine, Events

from common.engines.handlers import BestWeights


def _evaluator(scores, network):
    """An evaluator whose key metric takes ``scores`` in turn; before each run the network's weight is set to the
    run's index, so the saved file says which run was kept."""
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.key_metric_name = "score"
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1.0, -1
    runs = iter(range(len(scores)))

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _score(engine):  # what MONAI's key-metric bookkeeping does in SupervisedEvaluator
        engine.state.metrics = {"score": scores[engine.state.run_index]}
        if scores[engine.state.run_index] > engine.state.best_metric:
            engine.state.best_metric = scores[engine.state.run_index]
            engine.state.best_metric_epoch = engine.state.run_index + 1

    def run_once():
        index = next(runs)
        evaluator.state.run_index = index
        with torch.no_grad():
            network.weight.fill_(float(index))
        evaluator.run([0], max_epochs=evaluator.state.epoch + 1)

    return evaluator, run_once


def test_keeps_the_best_and_restores_it(tmp_path):
    network = torch.nn.Linear(1, 1, bias=False)
    best = BestWeights(tmp_path, network)
    evaluator, run_once = _evaluator([0.2, 0.7, 0.7, 0.4], network)
    best.attach(evaluator)
    for _ in range(4):
        run_once()
    with torch.no_grad():
        network.weight.fill_(9.0)  # training went on after the last validation
    out = best.restore(evaluator)
    assert network.weight.item() == 1.0  # run 1 (0.7), not the tie at run 2, not the last
    assert out["model_file"] == str(tmp_path / "best_model.pt") and out["best_metric"] == 0.7
    assert not network.training


def test_without_validation_keeps_the_last_weights_and_says_so(tmp_path, caplog):
    network = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        network.weight.fill_(5.0)
    evaluator, _ = _evaluator([], network)
    best = BestWeights(tmp_path, network)
    best.attach(evaluator)
    with caplog.at_level(logging.WARNING):
        out = best.restore(evaluator)
    assert "no validation epoch ran" in caplog.text
    saved = torch.load(tmp_path / "best_model.pt", weights_only=True)
    assert saved["weight"].item() == 5.0 and out["model_file"] == str(tmp_path / "best_model.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["best_model.pt"]  # no temporary file left behind
