"""Train-on-synthetic / test-on-real helper with a tiny logistic regression."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.metrics.utility import compare_training_sets, train_synthetic_test_real


def blobs(n: int, seed: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian classes in 2-D, centres (-1.5, 0) and (1.5, 0); ``flip`` swaps the labels (a useless generator)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, 2, generator=gen) + torch.stack([3.0 * y - 1.5, torch.zeros(n)], dim=1)
    return x, (1 - y) if flip else y


def train(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def evaluate(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> dict:
    x, y = data
    with torch.no_grad():
        return {"accuracy": float((model(x).argmax(1) == y).float().mean())}


def test_tstr_vs_trtr():
    real, test = blobs(200, seed=0), blobs(200, seed=1)
    good_syn, bad_syn = blobs(200, seed=2), blobs(200, seed=3, flip=True)
    good = train_synthetic_test_real(lambda: nn.Linear(2, 2), train, evaluate, real, good_syn, test, seeds=(0, 1))
    bad = train_synthetic_test_real(lambda: nn.Linear(2, 2), train, evaluate, real, bad_syn, test)
    base = good["arms"]["baseline"]["metrics"]["accuracy"]
    assert base["mean"] > 0.85 and base["n"] == 2 and len(good["arms"]["baseline"]["per_seed"]) == 2
    assert good["tstr_over_trtr"]["accuracy"] == pytest.approx(1.0, abs=0.05)
    assert bad["arms"]["synthetic_only"]["metrics"]["accuracy"]["mean"] < 0.2
    assert bad["tstr_over_trtr"]["accuracy"] < 0.25


def test_each_arm_starts_from_the_same_weights_and_never_sees_the_test_set():
    test = blobs(20, seed=1)
    seen, inits = [], []

    def spy_train(model: nn.Module, data) -> nn.Module:
        seen.append(data)
        inits.append(model.weight.detach().clone())
        return model

    arms = {"a": blobs(20, seed=2), "b": blobs(20, seed=3)}
    compare_training_sets(lambda: nn.Linear(2, 2), spy_train, evaluate, arms, test, seeds=(7,))
    assert all(d is not test for d in seen) and len(seen) == 2
    assert torch.equal(inits[0], inits[1])
    with pytest.raises(ValueError, match="test set"):
        compare_training_sets(lambda: nn.Linear(2, 2), spy_train, evaluate, {"leak": test}, test)
