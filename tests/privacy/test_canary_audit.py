"""The one-run canary audit (Steinke, Nasr, Jagielski 2023): the bound on its own (zero for chance, growing with
accuracy and with the number of guesses, the theorem's closed form at delta = 0), then the audit of the real
DP-SGD mechanism (stays below the accountant's epsilon) and of two broken ones (caught with a large bound)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import stats

from common.privacy.canary_audit import audit_dp_sgd, audit_p_value, epsilon_lower_bound, main, membership_guesses
from common.privacy.dp import DPSGDDiscriminator, noise_for_epsilon

pytest.importorskip("opacus")

DELTA = 1e-5


# ------------------------------------------------------------------------------------------------ the bound
@pytest.mark.parametrize("r", [10, 100, 1000])
def test_random_guessing_proves_nothing(r):
    assert epsilon_lower_bound(1000, r, r // 2, DELTA) == 0.0
    assert epsilon_lower_bound(1000, r, r // 2 + 1, DELTA) < 0.05  # one lucky guess is no evidence either


def test_bound_grows_with_accuracy():
    bounds = [epsilon_lower_bound(1000, 200, v, DELTA) for v in range(100, 201, 10)]
    assert bounds[0] == 0.0 and all(b2 >= b1 for b1, b2 in zip(bounds, bounds[1:], strict=False))
    assert all(b2 > b1 for b1, b2 in zip(bounds[4:], bounds[5:], strict=False))  # strictly, once above chance
    assert bounds[-1] > 4.0  # 200 of 200 right refutes epsilon 4


@pytest.mark.parametrize("accuracy", [0.7, 0.9, 1.0])
def test_bound_grows_with_the_number_of_guesses(accuracy):
    bounds = [epsilon_lower_bound(1000, r, round(accuracy * r), DELTA) for r in (20, 50, 100, 200, 400, 1000)]
    assert all(b2 > b1 for b1, b2 in zip(bounds, bounds[1:], strict=False)), bounds


def test_bound_is_the_theorem_at_delta_zero():
    # all r guesses right: p(eps) = P[Binomial(r, e^eps / (1 + e^eps)) >= r] = q^r, so the bound solves q^r = beta
    for r in (10, 100, 1000):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(1000, r, r, 0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-4)
    # and in general it is where the binomial tail crosses beta
    eps = epsilon_lower_bound(1000, 100, 80, 0.0)
    p = 1 / (1 + math.exp(-eps))
    assert stats.binom.sf(79, 100, p) == pytest.approx(0.05, rel=1e-3)


def test_delta_term_by_hand():
    # r = 3 guesses, v = 2 right, m = 10 canaries: p = P[W >= 2] + 2 m delta max(P[W = 1] / 1, P[W in {0, 1}] / 2)
    eps, delta = 0.7, 0.01
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [stats.binom.pmf(k, 3, q) for k in range(4)]
    expected = pmf[2] + pmf[3] + 2 * 10 * delta * max(pmf[1], (pmf[0] + pmf[1]) / 2)
    assert audit_p_value(10, 3, 2, eps, delta) == pytest.approx(expected, rel=1e-12)
    assert epsilon_lower_bound(1000, 100, 90, 1e-3) < epsilon_lower_bound(1000, 100, 90, 0.0)  # delta costs
    with pytest.raises(ValueError, match="correct <= guesses <= canaries"):
        audit_p_value(10, 3, 4, 1.0, 0.0)


def test_guesses_take_the_extremes_and_abstain_elsewhere():
    scores = torch.tensor([0.5, 3.0, -2.0, 1.0, -1.0, 0.0])
    assert membership_guesses(scores, 2, 1).tolist() == [0, 1, -1, 1, 0, 0]
    assert membership_guesses(scores, 0, 0).abs().sum() == 0
    with pytest.raises(ValueError, match="k_in"):
        membership_guesses(scores, 4, 3)


# ------------------------------------------------------------------------------------------------ the audit
KEYS = {"epsilon_lower_bound", "epsilon_accountant", "delta", "canaries", "guesses", "correct", "confidence"}
#: 1000 canaries, q = 1/10, 50 steps; 100 guesses each way (a perfect score would prove epsilon ~4.2)
RUN = {"sample_rate": 0.1, "steps": 50, "canaries": 1000, "k_in": 100, "k_out": 100, "delta": DELTA}


@pytest.mark.parametrize("target", [2.0, 8.0])
def test_the_real_mechanism_stays_below_the_accountant(target):
    sigma = noise_for_epsilon(target, DELTA, RUN["sample_rate"], RUN["steps"])
    result = audit_dp_sgd(sigma, **RUN, generator=torch.Generator().manual_seed(0))
    assert KEYS <= set(result) and result["flaw"] is None
    assert result["guesses"] == 200 and result["canaries"] == 1000 and result["steps"] == 50
    assert target - 0.01 <= result["epsilon_accountant"] <= target  # the accountant's own (PRV) number
    assert result["epsilon_lower_bound"] < result["epsilon_accountant"], result
    if target == 2.0:  # the test can fail: 200 right guesses would refute epsilon 2
        assert result["epsilon_lower_bound_if_all_right"] == epsilon_lower_bound(1000, 200, 200, DELTA) > 2 * target


@pytest.mark.parametrize("flaw", ["no_noise", "public_seed"])
def test_a_broken_mechanism_is_caught(flaw):
    """Claimed epsilon 1. Noise off, or noise from a seed the auditor knows (and subtracts): every canary sampled at
    least once is then read off exactly, and the bound lands far above the claim (a stub audit would fail here).
    100 steps, so that an included canary is almost never left unsampled (0.9^100 = 3e-5), which no audit can see."""
    run = {**RUN, "steps": 100}
    sigma = noise_for_epsilon(1.0, DELTA, run["sample_rate"], run["steps"])
    result = audit_dp_sgd(sigma, **run, flaw=flaw, noise_seed=1234, generator=torch.Generator().manual_seed(0))
    assert 0.99 <= result["epsilon_accountant"] <= 1.0  # what the broken run claims
    assert result["correct"] >= 198, result
    assert result["epsilon_lower_bound"] > 3.0, result


def test_the_same_audit_with_a_secret_seed_is_not_fooled():
    """``public_seed`` is only a flaw because the seed is known: with the real (secret) noise at the same sigma the
    auditor's subtraction has nothing to subtract, and the bound stays below the claim."""
    sigma = noise_for_epsilon(1.0, DELTA, RUN["sample_rate"], RUN["steps"])
    result = audit_dp_sgd(sigma, **RUN, generator=torch.Generator().manual_seed(0))
    assert result["epsilon_lower_bound"] < 1.0


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_dp_summary_carries_the_audit_at_its_own_settings():
    dp = DPSGDDiscriminator(noise_multiplier=1.0, target_delta=DELTA, audit_canaries=100)
    model = torch.nn.Linear(4, 1)
    data = [{"x": torch.randn(4)} for _ in range(40)]
    module, opt, loader = dp.make_private(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                          torch.utils.data.DataLoader(data, batch_size=8))  # fmt: skip
    for batch in loader:
        module(batch["x"]).sum().backward()
        opt.step()
        opt.zero_grad()
    summary = dp.summary()
    audit = summary["audit"]
    assert audit["steps"] == dp.steps == 5 and audit["sample_rate"] == pytest.approx(dp.sample_rate)
    assert audit["noise_multiplier"] == 1.0 and audit["canaries"] == 100
    assert audit["epsilon_accountant"] == pytest.approx(summary["epsilon"], rel=1e-6)
    assert dp.summary()["audit"] is audit  # one audit per setting
    assert "audit" not in DPSGDDiscriminator(noise_multiplier=1.0).summary()


def test_command_line_merges_runs_into_a_json(tmp_path, capsys):
    out = tmp_path / "dp_audit.json"
    main(["--noise-multiplier", "2.0", "--sample-rate", "1/5", "--steps", "5", "--canaries", "100", "--name", "a",
          "--output", str(out)])  # fmt: skip
    main(["--noise-multiplier", "3.0", "--sample-rate", "0.2", "--steps", "5", "--canaries", "100", "--name", "b",
          "--note", "test", "--output", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {"a", "b"} and report["runs"]["b"]["settings"] == "test"
    assert KEYS <= set(report["runs"]["a"]["sigma2"]) and report["runs"]["a"]["sigma2"]["sample_rate"] == 0.2
    assert "epsilon lower bound" in capsys.readouterr().out
