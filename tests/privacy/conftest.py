"""Run these tests on one intra-op thread: their tensors are tiny, and on a busy 2-core machine the thread pool's
start-up and spin-waiting cost far more than the arithmetic (a 2x2 logistic regression step took 20 ms, not 0.1)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
