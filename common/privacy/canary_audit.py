"""An empirical privacy audit in one training run (Steinke, Nasr, Jagielski 2023, "Privacy auditing with one (1)
training run", NeurIPS 2023): an epsilon *lower* bound to read beside the accountant's upper bound.

The accountant (PRV, ``common.privacy.dp``) proves an upper bound on epsilon *if* the code does what the proof
assumes. The audit checks the code: it runs the mechanism once on a data set into which ``m`` canaries were put, each
independently with probability 1/2 (a secret coin), and then guesses from the trained weights which canaries were in.
Many correct guesses are impossible for an (epsilon, delta)-DP mechanism, whatever the data: the number of correct
guesses is then (up to a delta term) dominated by a Binomial(r, e^eps / (1 + e^eps)) over the r guesses made. The
audit reports the largest epsilon that its count *refutes* at confidence 1 - beta. Reading it:

- it is a **lower bound**, not a guarantee. A correct mechanism gives one at or below its true epsilon (with
  probability >= 1 - beta), usually far below: canaries and scores of one run see only part of the privacy loss,
  and r guesses, all right, prove only about log(r / 3) at 95 % (3.47 for 100 guesses): a claimed epsilon above
  that ceiling cannot be refuted at all (``epsilon_lower_bound_if_all_right`` in the result says where it lies);
- a lower bound *above* the accountant's epsilon means the guarantee is false (a bug: noise off, noise from a public
  seed, sampling not as accounted, a clipping error): the audit is a test that the claimed epsilon can fail;
- it audits the **mechanism** (our ``DPSGDDiscriminator`` wiring of Opacus: Poisson sampling, per-sample clipping,
  Gaussian noise from the secret generator) at a DP arm's (sigma, C, q, steps); it does not touch, and says nothing
  more about, the private images or the trained GAN (so it may be released: nothing private enters it).

What runs (the white-box setting of the paper, with Dirac gradient canaries): D is a small ``StyleGAN2Discriminator``
(no minibatch std, as under DP) beside a canary head, a bias-free linear map from an m-vector to one logit. The data
set has N = B / q rows: public filler images (random noise, D's logistic "real" loss) and one row per canary slot;
as in a DP GAN's D step, a fixed number of public fakes joins every Poisson batch (data-independent rows).
Canary i's row is the one-hot vector a e_i (a >> C) with a loss linear in the head's output, so its per-sample
gradient is a Dirac in the head's i-th weight, clipped to exactly C e_i; D's part of that row is masked to zero. An
*excluded* canary keeps its row with a = 0 (gradient exactly zero): adding a canary is then exactly the add/remove
of one record under a fixed, public sample rate q, which is what the accountant assumes (a data set whose size
followed the coins would make q itself depend on them). ``DPSGDDiscriminator.make_private`` (the same code path as a
DP GAN's ``wrap``) privatises the model, its optimiser and the loader; plain SGD then makes the head's final weight i
equal to lr / B times (C x the number of steps that sampled canary i, minus the sum of the noise on that coordinate),
i.e. the whole release on that coordinate (the optimiser is post-processing; SGD just makes the final weights
readable). Score = that weight; guess "in" for the ``k_in`` highest, "out" for the ``k_out`` lowest, abstain on the
rest (``k_in``, ``k_out`` are fixed before the run, as the theorem requires). Black-box canaries (images scored by
D's loss) would be closer to a real attack but are far weaker at this scale; they are not offered.

Deliberate flaws, for the tests and as a demonstration: ``flaw="no_noise"`` sets the optimiser's noise to zero
(the accountant still claims sigma); ``flaw="public_seed"`` draws the noise from a generator seeded with a known
number (the bug ``secret_generator`` prevents), and the auditor, who knows the seed, replays Opacus' noise draws
and subtracts them. Both must be caught with a large lower bound (where the claim lies below the ceiling).

Privacy unit: one record, i.e. one training image (a canary is one record). The bound is per image, like the
accountant's epsilon; a patient with several images is protected at group-privacy cost.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from common.fs import atomic_write_text
from common.privacy.dp import DPSGDDiscriminator, noise_for_epsilon, prv_epsilon, secret_generator

__all__ = [
    "CanaryDiscriminator",
    "FLAWS",
    "audit_dp_sgd",
    "audit_p_value",
    "epsilon_lower_bound",
    "main",
    "membership_guesses",
]

#: deliberate bugs the audit must catch (None: the real mechanism)
FLAWS = (None, "no_noise", "public_seed")
#: the canary's input amplitude, in units of the clipping norm: its gradient norm is this times C, so clipping always
#: brings it to C exactly (up to Opacus' 1e-6 guard)
CANARY_AMPLITUDE = 1e3


# ------------------------------------------------------------------------------------------------ the bound
def audit_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The probability, under the hypothesis "the mechanism is (epsilon, delta)-DP", of ``v`` or more correct guesses
    among ``r`` guesses on ``m`` canaries, each included independently with probability 1/2 (Steinke et al. 2023,
    the main theorem for approximate DP):

        p = P[W >= v] + 2 m delta * max_{i = 1..v} P[v - i <= W < v] / i,   W ~ Binomial(r, e^eps / (1 + e^eps)).

    e^eps / (1 + e^eps) is the accuracy of eps-DP randomised response, the best any eps-DP guess can do; the second
    term pays for delta (it vanishes at delta = 0). Capped at 1.
    """
    m, r, v = int(m), int(r), int(v)
    if not 0 <= v <= r <= m:
        raise ValueError(f"audit_p_value: need 0 <= correct <= guesses <= canaries, got {v=}, {r=}, {m=}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"audit_p_value: need epsilon >= 0 and 0 <= delta <= 1, got {epsilon=}, {delta=}")
    q = 1.0 / (1.0 + math.exp(-float(epsilon)))
    p = float(stats.binom.sf(v - 1, r, q))  # P[W >= v]
    if delta > 0 and v > 0:
        below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[W = v-1], P[W = v-2], ..., P[W = 0]
        ratio = np.cumsum(below) / np.arange(1, v + 1)  # P[v - i <= W < v] / i for i = 1..v
        p += 2.0 * m * float(delta) * float(ratio.max())
    return min(p, 1.0)


def epsilon_lower_bound(
    m: int, r: int, v: int, delta: float, confidence: float = 0.95, tolerance: float = 1e-6, max_epsilon: float = 100.0
) -> float:
    """The largest epsilon that ``v`` correct guesses out of ``r`` (on ``m`` canaries) refute at ``confidence``:
    sup{eps >= 0 : audit_p_value(m, r, v, eps, delta) < 1 - confidence}, found by bisection (the p-value grows with
    eps). 0 when even eps = 0 is not refuted (e.g. random guessing)."""
    beta = 1.0 - float(confidence)
    if not 0 < beta < 1:
        raise ValueError(f"epsilon_lower_bound: confidence must lie in (0, 1), got {confidence}")

    def refuted(eps: float) -> bool:
        return audit_p_value(m, r, v, eps, delta) < beta

    if not refuted(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while refuted(hi):  # bracket: refuted at lo, not at hi
        lo, hi = hi, 2 * hi
        if hi > max_epsilon:
            return float(max_epsilon)
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if refuted(mid) else (lo, mid)
    return lo


def membership_guesses(scores: torch.Tensor, k_in: int, k_out: int) -> torch.Tensor:
    """+1 ("in") for the ``k_in`` highest scores, -1 ("out") for the ``k_out`` lowest, 0 (abstain) elsewhere.
    Ties fall by index (stable sort); the coins do not depend on the index, so this biases nothing."""
    m = scores.numel()
    if k_in < 0 or k_out < 0 or k_in + k_out > m:
        raise ValueError(f"membership_guesses: need k_in, k_out >= 0 and k_in + k_out <= {m}, got {k_in}, {k_out}")
    order = torch.sort(scores.detach().flatten().double(), descending=True, stable=True).indices
    guesses = torch.zeros(m, dtype=torch.int64)
    guesses[order[:k_in]] = 1
    if k_out:
        guesses[order[m - k_out :]] = -1
    return guesses


# ------------------------------------------------------------------------------------------------ the run
class CanaryDiscriminator(nn.Module):
    """D beside a canary head; ``forward`` returns one loss per row (the batch loss is their mean, as Opacus'
    ``loss_reduction="mean"`` expects).

    Filler rows: D's logistic loss, softplus(-sign * D(x, c)) with sign +1 for a "real" image, -1 for a fake. Canary
    rows: minus the head's output on the canary vector a e_i (a = 0 for an excluded canary), so the per-sample
    gradient is -a e_i on the head and 0 on D.

    Shapes: ``image (B, 1, S, S)``, ``label (B,)``, ``canary (B, m)``, ``is_canary (B,)``, ``sign (B,)`` -> ``(B,)``.
    """

    def __init__(self, discriminator: nn.Module, canaries: int) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.head = nn.Linear(int(canaries), 1, bias=False)
        nn.init.zeros_(self.head.weight)

    def forward(self, image, label, canary, is_canary, sign) -> torch.Tensor:
        d_loss = F.softplus(-sign * self.discriminator(image, label))
        return d_loss * (1.0 - is_canary) - self.head(canary).view(-1)


def _tiny_discriminator(image_size: int) -> nn.Module:
    from common.networks.stylegan2 import StyleGAN2Discriminator

    return StyleGAN2Discriminator(
        in_channels=1, num_classes=2, image_size=image_size, channel_base=64, channel_max=8, mbstd_group_size=0
    )


def _filler(n: int, canaries: int, image_size: int, sign: float, seed: int) -> list[dict]:
    """``n`` public rows for D: uniform noise images in [-1, 1] and random labels from a fixed public seed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, image_size, image_size, generator=g) * 2 - 1
    labels = torch.randint(0, 2, (n,), generator=g)
    zero, no, sign = torch.zeros(canaries), torch.tensor(0.0), torch.tensor(float(sign))
    return [
        {"image": images[i], "label": int(labels[i]), "canary": zero, "is_canary": no, "sign": sign} for i in range(n)
    ]


def _rows(canaries: int, included: torch.Tensor, rows: int, image_size: int, max_grad_norm: float) -> list[dict]:
    """The data set: ``rows - canaries`` public filler "real" images followed by one row per canary slot (amplitude 0
    when the canary is out)."""
    out = _filler(rows - canaries, canaries, image_size, 1.0, seed=0)
    amplitude = CANARY_AMPLITUDE * float(max_grad_norm)
    zero_image, yes = torch.zeros(1, image_size, image_size), torch.tensor(1.0)
    for i in range(canaries):
        vec = torch.zeros(canaries)
        vec[i] = amplitude * float(included[i])
        out.append({"image": zero_image, "label": 0, "canary": vec, "is_canary": yes, "sign": yes})
    return out


def _replayed_noise(optimizer, steps: int, seed: int, head: torch.Tensor) -> torch.Tensor:
    """The attacker's side of ``flaw="public_seed"``: Opacus' noise on ``head`` summed over ``steps``, redrawn from a
    generator seeded with the public ``seed`` by Opacus' own noise function, in the optimiser's parameter order."""
    from opacus.optimizers.optimizer import _generate_noise

    generator = torch.Generator(device=head.device).manual_seed(int(seed))
    std = optimizer.noise_multiplier * optimizer.max_grad_norm
    total = torch.zeros_like(head)
    for _ in range(steps):
        for p in optimizer.params:
            noise = _generate_noise(std=std, reference=p, generator=generator, secure_mode=optimizer.secure_mode)
            if p is head:
                total += noise.view_as(head)
    return total


def audit_dp_sgd(
    noise_multiplier: float | None = None,
    *,
    target_epsilon: float | None = None,
    sample_rate: float,
    steps: int,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    canaries: int = 1000,
    k_in: int | None = None,
    k_out: int | None = None,
    confidence: float = 0.95,
    image_size: int = 8,
    min_filler: int = 64,
    fake_rows: int = 4,
    discriminator: Callable[[int], nn.Module] | None = None,
    flaw: str | None = None,
    noise_seed: int = 0,
    generator: torch.Generator | None = None,
    accountant: str = "prv",
) -> dict:
    """One-run canary audit of DP-SGD as ``DPSGDDiscriminator`` runs it, at a DP arm's settings.

    Args:
        noise_multiplier: sigma; or give ``target_epsilon`` and sigma is found as the arms find it
            (``noise_for_epsilon`` over ``steps`` at ``sample_rate``, never above the target).
        sample_rate: q. Opacus sets q = 1 / len(loader), so 1 / q is rounded to an integer L and the data set has
            L * B rows (B = the smallest batch that holds the canaries and ``min_filler`` filler rows).
        steps: DP-SGD steps (the arm's epochs x steps per epoch).
        max_grad_norm: C. delta: the delta of both epsilons.
        canaries: m. k_in, k_out: guesses "in" / "out" (default m // 20 each, i.e. 10 % of the canaries guessed;
            fixed in advance, never chosen after seeing the scores).
        confidence: 1 - beta of the lower bound.
        image_size, min_filler, fake_rows, discriminator: D (a callable of the image size; default a tiny
            ``StyleGAN2Discriminator``, no minibatch std), its public filler rows in the data set and the public
            fakes added to every Poisson batch (as in a DP GAN's D step, whose forward pass is never empty).
        flaw: None (the real mechanism), ``"no_noise"`` or ``"public_seed"`` (see the module docstring).
        generator: draws the canary coins; None: a ``secret_generator`` (the coins must be independent of the
            mechanism, and the auditor alone knows them). Give a seeded one for reproducible coins in tests.

    Returns ``{"epsilon_lower_bound", "epsilon_accountant", "delta", "canaries", "guesses", "correct",
    "confidence", ...}`` (plus the settings, the canaries included and the guesses each way).
    """
    if flaw not in FLAWS:
        raise ValueError(f"audit_dp_sgd: flaw must be one of {FLAWS}, got {flaw!r}")
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("audit_dp_sgd: give exactly one of noise_multiplier and target_epsilon")
    if not 0 < sample_rate <= 1 or int(steps) < 1 or int(canaries) < 2:
        raise ValueError(f"audit_dp_sgd: bad settings ({sample_rate=}, {steps=}, {canaries=})")
    steps, m = int(steps), int(canaries)
    per_epoch = max(1, round(1.0 / float(sample_rate)))  # Opacus' q is 1 / len(loader)
    q = 1.0 / per_epoch
    if noise_multiplier is None:
        noise_multiplier = noise_for_epsilon(float(target_epsilon), delta, q, steps, accountant=accountant)
    k_in = m // 20 if k_in is None else int(k_in)
    k_out = m // 20 if k_out is None else int(k_out)

    with torch.random.fork_rng(devices=[]):  # D's initial weights come from the global RNG: leave the caller's alone
        torch.manual_seed(0)
        coins = generator if generator is not None else secret_generator("cpu")
        included = torch.randint(0, 2, (m,), generator=coins).bool()
        batch = math.ceil((m + int(min_filler)) / per_epoch)
        rows = _rows(m, included, per_epoch * batch, image_size, max_grad_norm)
        model = CanaryDiscriminator((discriminator or _tiny_discriminator)(image_size), m)
        lr_head, lr_d = 1.0, 1e-3  # D is filler: a small step keeps it finite; the head's lr only scales the score
        optimizer = torch.optim.SGD(
            [{"params": model.discriminator.parameters(), "lr": lr_d}, {"params": model.head.parameters()}], lr=lr_head
        )
        loader = torch.utils.data.DataLoader(rows, batch_size=batch)  # len(loader) = per_epoch: q = 1 / per_epoch
        dp = DPSGDDiscriminator(noise_multiplier=float(noise_multiplier), target_delta=delta,
                                max_grad_norm=max_grad_norm, accountant=accountant)  # fmt: skip
        module, opt, dp_loader = dp.make_private(model, optimizer, loader, across_ranks=False)
        if flaw == "no_noise":
            opt.noise_multiplier = 0.0
        elif flaw == "public_seed":
            opt.generator = torch.Generator().manual_seed(int(noise_seed))
        # as a DP GAN's D step: the Poisson batch plus a fixed number of public fakes (never an empty forward pass)
        fakes = torch.utils.data.default_collate(_filler(int(fake_rows), m, image_size, -1.0, seed=1))
        keys = ("image", "label", "canary", "is_canary", "sign")
        done = 0
        while done < steps:
            for batch_rows in dp_loader:
                inputs = [torch.cat([torch.as_tensor(batch_rows[k]), fakes[k]]) for k in keys]
                with warnings.catch_warnings():  # Opacus' hooks on a model whose inputs need no gradient: as meant
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    module(*inputs).mean().backward()
                opt.step()
                opt.zero_grad()
                done += 1
                if done == steps:
                    break
        head = model.head.weight
        scores = head.detach().view(-1) * opt.expected_batch_size / lr_head  # C x times sampled - summed noise
        if flaw == "public_seed":
            opt.noise_multiplier = float(noise_multiplier)
            scores = scores + _replayed_noise(opt, steps, noise_seed, head).view(-1)
        if flaw is None:
            epsilon = dp.epsilon(delta)
        else:  # the accountant's claim for the configured sigma (its own history saw the flaw)
            epsilon = prv_epsilon(float(noise_multiplier), q, steps, delta)

    guesses = membership_guesses(scores, k_in, k_out)
    truth = included.long() * 2 - 1
    r = int((guesses != 0).sum())
    v = int((guesses * truth == 1).sum())
    return {
        "epsilon_lower_bound": epsilon_lower_bound(m, r, v, delta, confidence),
        "epsilon_accountant": float(epsilon),
        "delta": float(delta),
        "canaries": m,
        "guesses": r,
        "correct": v,
        "confidence": float(confidence),
        # what these guesses could prove at best (every one right): the audit's ceiling, whatever the mechanism
        "epsilon_lower_bound_if_all_right": epsilon_lower_bound(m, r, r, delta, confidence),
        "guesses_in": k_in,
        "guesses_out": k_out,
        "canaries_included": int(included.sum()),
        "noise_multiplier": float(noise_multiplier),
        "max_grad_norm": float(max_grad_norm),
        "sample_rate": q,
        "steps": steps,
        "expected_batch": batch,
        "canary_kind": "white-box Dirac gradient canaries (Steinke et al. 2023), Poisson-sampled as every record",
        "flaw": flaw,
    }


# ------------------------------------------------------------------------------------------------ command line
_METHOD = (
    "One-run canary audit (Steinke, Nasr, Jagielski 2023), white-box Dirac gradient canaries, each included with "
    "probability 1/2 and Poisson-sampled like every record, through DPSGDDiscriminator.make_private (Opacus, secret "
    "noise and sampling); epsilon_lower_bound: the largest epsilon the correct guesses refute at the given confidence "
    "(a lower bound, not a guarantee); epsilon_accountant: the PRV upper bound at the same (sigma, C, q, steps, "
    "delta). Privacy unit: one image. Command: common/privacy/canary_audit.py (main)."
)


def _rate(text: str) -> float:
    """``"0.0714"`` or ``"1/14"``."""
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m common.privacy.canary_audit --epsilon 10 50 --sample-rate 1/14 --steps 56 --name phantom
    --output bundles/spine_stylegan2/docs/results/dp_audit.json``: one audit per epsilon at a DP arm's q and steps,
    merged into ``--output`` under ``runs[name]["dp_eps<e>"]`` (other entries kept). Returns those runs."""
    parser = argparse.ArgumentParser(prog="python -m common.privacy.canary_audit", description=__doc__.split("\n")[0])
    parser.add_argument("--epsilon", type=float, nargs="+", help="target epsilon(s): sigma as the DP arms find it")
    parser.add_argument("--noise-multiplier", type=float, nargs="+", help="sigma(s), instead of --epsilon")
    parser.add_argument("--sample-rate", type=_rate, required=True, help="q, e.g. 1/14")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--flaw", choices=[f for f in FLAWS if f], default=None, help="audit a deliberately broken run")
    parser.add_argument("--name", default="audit", help="the key of these runs in --output")
    parser.add_argument("--note", default=None, help="where the settings come from (stored beside the runs)")
    parser.add_argument("--output", default=None, help="JSON file to merge the results into")
    args = parser.parse_args(argv)
    if (args.epsilon is None) == (args.noise_multiplier is None):
        parser.error("give --epsilon or --noise-multiplier")
    runs = {}
    for value in args.epsilon or args.noise_multiplier:
        key = "target_epsilon" if args.epsilon else "noise_multiplier"
        result = audit_dp_sgd(
            **{key: value}, sample_rate=args.sample_rate, steps=args.steps, max_grad_norm=args.max_grad_norm,
            delta=args.delta, canaries=args.canaries, confidence=args.confidence, flaw=args.flaw,
        )  # fmt: skip
        name = f"dp_eps{value:g}" if args.epsilon else f"sigma{value:g}"
        runs[name] = result
        print(
            f"{args.name} {name}: epsilon lower bound {result['epsilon_lower_bound']:.3f} (confidence "
            f"{result['confidence']:g}; {result['correct']}/{result['guesses']} guesses right on {result['canaries']} "
            f"canaries; at most {result['epsilon_lower_bound_if_all_right']:.2f} provable) vs accountant "
            f"{result['epsilon_accountant']:.3f} at delta {result['delta']:g} "
            f"(sigma {result['noise_multiplier']:.4g}, q {result['sample_rate']:.4g}, {result['steps']} steps)"
        )
    if args.output:
        path = Path(args.output)
        report = json.loads(path.read_text()) if path.is_file() else {}
        report.setdefault("method", _METHOD)
        entry = report.setdefault("runs", {}).setdefault(args.name, {})
        if args.note:
            entry["settings"] = args.note
        entry.update(runs)
        atomic_write_text(path, json.dumps(report, indent=1) + "\n")
    return runs


if __name__ == "__main__":
    main()
