"""Patient folds and the protocol's fold timing."""

from __future__ import annotations


def test_fold_eta_line(caplog, monkeypatch):
    """The protocol's whole-run ETA: after each fold, the time left at the mean cost of the folds so far."""
    import logging

    from common.protocol import folds

    clock = iter([0.0, 60.0, 60.0, 180.0])
    monkeypatch.setattr(folds.time, "perf_counter", lambda: next(clock))
    eta = folds.FoldETA(3)
    with caplog.at_level(logging.INFO, logger="common.protocol.folds"):
        eta.start()
        assert eta.done(0) == "fold 1 of 3 done (1.0 min so far); the other 2: about 2.0 min more"
        eta.start()
        assert eta.done(1) == "fold 2 of 3 done (3.0 min so far); the other 1: about 1.5 min more"
    assert "about 1.5 min more" in caplog.text
