"""Differentially private GAN training: DP-SGD on the discriminator (Opacus), and the SpineGAN paper's ablation.

``DPSGDDiscriminator`` (the one with a guarantee). Only D touches the private images; G sees them only through D,
so by post-processing G and its samples inherit D's (epsilon, delta). What it does, and why:

- ``PrivacyEngine.make_private`` on D, its optimiser and the data loader (sigma given, or found by
  ``noise_for_epsilon`` for a target epsilon):
  Poisson sampling (each image joins each batch independently with probability q, what the accountant assumes),
  per-sample gradient clipping to ``max_grad_norm`` and Gaussian noise ``noise_multiplier * max_grad_norm``;
- D must be free of BatchNorm and of the minibatch-std layer (both make one sample's gradient depend on the
  others); ``StyleGAN2Discriminator`` has no normalisation, and ``mbstd_group_size=0`` is checked here;
- G's step runs inside ``generator_step_context()``, which disables Opacus' hooks on D, so G's backward pass through
  D neither records per-sample gradients nor counts as a private step;
- ADA's adaptive p is computed from D(real): under DP the augmentation probability must be fixed (``fit_gan``
  refuses an ADA target with a privacy engine);
- one D step per batch (``d_steps=1``) and no lazy R1: a second optimiser step on the same Poisson batch is not a
  fresh subsampled mechanism, and the accountant would under-count it. R1 under DP would need its per-sample
  gradients (double backprop per sample, ``torch.func`` with ``grad_sample_mode="no_op"``) and its own accounting;
  it is not implemented, and ``fit_gan`` refuses it;
- the objective must make D's step one forward pass over reals + a *fixed* number of fakes with data-independent
  labels (``StyleGAN2Objective(joint_d_batch=True, fake_batch_size=B)``), so removing one real image removes
  exactly one clipped row;
- the accountant is PRV (Gopi et al. 2021): ``epsilon(delta)`` is its upper bound. Never the GDP approximation.
  Its history is saved with the checkpoints, so a resumed run keeps counting;
- the SpineGAN clinical loss is refused: its classifier is trained on the private images outside DP-SGD;
- the randomness that protects the images is secret: the Gaussian noise, the Poisson sampling and the augmentation
  pipe's draws (which land on the private rows) come from generators seeded with 64 fresh bits of ``os.urandom``
  (``secrets``) every time ``wrap`` / ``attach`` run, i.e. at every start *and every resume*; the config's ``seed``
  never reaches them and they are never saved in a checkpoint. With a public seed, anyone could regenerate the noise
  and subtract it from the released weights, and the epsilon would bound nothing; a resume would replay the noise
  and the batches already spent. (Opacus' ``secure_mode`` would take them from torchcsprng, which has no build for
  current PyTorch.) The noise itself is drawn as in ``secure_mode`` (a sum of 4 Gaussians, robust to the
  floating-point attack of Jin et al. 2021). ``seed`` still fixes the non-private randomness (initial weights,
  latents), so a DP run is not reproducible, by design; two runs with the same seed differ;
- what is logged is post-processing of the mechanism's output only: ``attach`` makes ``engine.state.output`` a
  ``PublicOutput`` holding the ``PUBLIC_OUTPUT_KEYS`` (G's losses, computed on fakes through D) before any handler
  reads it, so ``d_loss``, ``d_real``, ``d_real_sign`` and every other value of D's pass over the private batch never
  reach ``train_log.csv``, the history, TensorBoard or MLflow;
- the privacy unit is one record (one training image): epsilon bounds the add/remove of one image; where the items
  carry patient ids, ``privacy_unit`` adds the group-privacy guarantee for the patient with the most images (sampling
  and clipping per patient is not implemented, so a patient with k images is protected at k-fold cost);
- an empirical check beside the accountant: ``audit_canaries`` > 0 adds to ``summary()`` the one-run canary audit
  (``common.privacy.canary_audit``) of this very mechanism (``make_private``) at the run's (sigma, C, q, steps), an
  epsilon *lower* bound that a correct mechanism keeps below the accountant's epsilon.

Several ranks (torchrun): the mechanism must stay the one the accountant describes, a Poisson-subsampled Gaussian
on the *whole* data set with rate q, noise ``sigma * C`` added *once* to the sum of clipped gradients:

- sampling: the data set is split into disjoint shards, one per rank, and each rank keeps each image of its shard
  independently with probability q (Opacus' ``DistributedUniformWithReplacementSampler``). Every image lies in
  exactly one shard, so each image joins each step with probability q, independently: Poisson sampling at rate q on
  the whole set. q = 1 / (steps per epoch), the expected *global* batch is ``batch_size * world_size``;
- noise: only rank 0 adds N(0, (sigma C)^2) (``DistributedDPOptimizer``); the others send their clipped sums as they
  are, and the all-reduce adds them. One draw of noise on the global sum, as in one process. If every rank added its
  own noise the total would be sqrt(world_size) larger (safe, but wasted utility); if each rank kept its own
  (un-reduced) noisy gradient the ranks would drift apart. Our own gradient averaging is skipped for D: the
  optimiser reduces after noising, and divides by the expected global batch;
- accounting: every rank's accountant records the same (sigma, q, steps), so the epsilon rank 0 writes is the
  guarantee of the released generator.

``PaperNoiseThenClip`` (an ablation with **no** privacy guarantee): the authors' "DP" StyleGAN2-ADA added
N(0, 0.02^2) noise to every gradient of G and D and then clipped the whole gradient to norm 1.5, at batch 1.
Clipping *after* the noise bounds nothing about one image's influence, and noise std 0.02 is not calibrated to any
sensitivity; it reports no epsilon.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import warnings
from collections.abc import Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "PUBLIC_OUTPUT_KEYS",
    "DPSGDDiscriminator",
    "NoiseThenClipOptimizer",
    "PaperNoiseThenClip",
    "PublicOutput",
    "group_privacy",
    "noise_for_epsilon",
    "privacy_unit",
    "prv_epsilon",
    "secret_generator",
]

#: what a formal-DP run may log from ``engine.state.output``: G's adversarial loss on a fixed number of fakes, through
#: D (post-processing of the private D). Everything else is withheld: D's step is one pass over the private batch
#: (``d_loss``, ``d_real``, ``d_real_sign``, ``d_fake``), and the path-length terms are averaged over a number of
#: samples that follows the private batch size. A key is public only once it is shown to be; absent keys are private.
PUBLIC_OUTPUT_KEYS = frozenset({"loss", "g_loss", "g_adv"})


def group_privacy(epsilon: float, delta: float, group_size: int) -> dict:
    """The guarantee an (epsilon, delta)-DP mechanism gives a group of ``group_size`` records (one patient's images):
    (k epsilon, k e^((k-1) epsilon) delta)-DP (Dwork & Roth 2014, "The algorithmic foundations of differential
    privacy", Theorem 2.2 and its approximate-DP form; k neighbouring steps chained). Loose but always valid: the
    accountant's RDP curve could give a tighter one, which nobody should have to trust without a proof here."""
    k = int(group_size)
    if k < 1 or epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"group_privacy: bad arguments ({epsilon=}, {delta=}, {group_size=})")
    group_delta = k * math.exp((k - 1) * float(epsilon)) * float(delta)
    return {
        "group_size": k,
        "epsilon": k * float(epsilon),
        # above 1 the bound says nothing: report it as it is, the card must not round it into a guarantee
        "delta": group_delta,
        "meaningful": group_delta < 1.0,
        "rule": "group privacy: (k eps, k exp((k-1) eps) delta) for k records (Dwork & Roth 2014, Thm 2.2)",
    }


def privacy_unit(items, epsilon: float | None, delta: float | None) -> dict:
    """What epsilon protects, from the training ``items`` (dicts; a ``patient`` key where the data set has ids):
    always one image; per patient the group-privacy guarantee for the patient with the most images. Without patient
    ids each image counts as its own patient, and the summary says the ids were missing rather than claiming k = 1."""
    patients = [str(it["patient"]) for it in items if isinstance(it, dict) and "patient" in it]
    out: dict = {"privacy_unit": "one image"}
    if len(patients) < len(list(items)):
        out["per_patient"] = {"patient_ids": False, "note": "the data carry no patient ids: each image is one patient"}
        return out
    counts: dict[str, int] = {}
    for patient in patients:
        counts[patient] = counts.get(patient, 0) + 1
    k = max(counts.values(), default=1)
    per_patient = {"patient_ids": True, "max_images_per_patient": k, "patients": len(counts)}
    if k == 1:  # a reader without ids gives each image its own (MedMNIST, ISIC folders): k for a person is unknown
        per_patient["patient_ids"] = "one per image"
        per_patient["note"] = (
            "every image has its own patient id: one image per patient, or a data set without patient ids whose "
            "reader named each image (MedMNIST, folders of ISIC images); then a person's k is unknown"
        )
    if epsilon is not None and delta is not None:
        per_patient.update(group_privacy(epsilon, delta, k))
    out["per_patient"] = per_patient
    return out


def secret_generator(device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with 64 fresh bits from the OS's CSPRNG (``secrets``): for the
    randomness that protects private data, which no config seed may fix or replay."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(secrets.randbits(64))
    return generator


class PublicOutput(dict):
    """``engine.state.output`` of a formal-DP run: only the public values (``PUBLIC_OUTPUT_KEYS``).

    Iterating it, ``in`` and ``get`` see the public values only, so ``LossHistory``, TensorBoard and MLflow log
    nothing else. Indexing a withheld key gives NaN instead of a ``KeyError`` (a progress bar written for non-private
    runs shows ``d=nan`` rather than failing); the value itself is gone.
    """

    def __init__(self, output: dict) -> None:
        super().__init__({k: v for k, v in output.items() if k in PUBLIC_OUTPUT_KEYS})
        self.withheld = frozenset(k for k in output if k not in PUBLIC_OUTPUT_KEYS)

    def __missing__(self, key):
        if key in self.withheld:
            return math.nan
        raise KeyError(key)


def prv_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian mechanisms by Opacus' PRV accountant (upper bound)."""
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(accountant.get_epsilon(delta=float(delta)))


def noise_for_epsilon(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    tolerance: float = 0.01,
    max_sigma: float = 1e4,
) -> float:
    """The noise multiplier whose ``steps`` Poisson-subsampled Gaussian steps end at an epsilon (by ``accountant``) in
    ``[target_epsilon - tolerance, target_epsilon]``: never above the target.

    Same contract as ``opacus.accountants.utils.get_noise_multiplier``, with fewer accountant calls (each costs
    0.1-0.5 s on a CPU): a bracket by doubling, then regula falsi (Illinois) on log(epsilon) against log(sigma),
    which is smooth and decreasing, falling back to bisection; the returned sigma is always one whose epsilon was
    computed and is <= the target.
    """
    from opacus.accountants import create_accountant

    if target_epsilon <= 0 or not 0 < sample_rate <= 1 or steps < 1:
        raise ValueError(f"noise_for_epsilon: bad arguments ({target_epsilon=}, {sample_rate=}, {steps=})")
    acc = create_accountant(mechanism=accountant)

    def log_eps(sigma: float) -> float:
        acc.history = [(float(sigma), float(sample_rate), int(steps))]
        return math.log(max(float(acc.get_epsilon(delta=float(delta))), 1e-300))

    def g(log_sigma: float) -> float:  # log epsilon - log target: decreasing in log sigma
        return log_eps(math.exp(log_sigma)) - math.log(target_epsilon)

    def done(g_hi: float) -> bool:
        return target_epsilon - target_epsilon * math.exp(g_hi) <= tolerance

    step = math.log(2.0)
    hi = 0.0  # sigma = 1
    g_hi = g(hi)
    if g_hi > 0:  # too little noise: double sigma until epsilon <= target
        lo, g_lo = hi, g_hi
        while g_hi > 0:
            lo, g_lo, hi = hi, g_hi, hi + step
            if math.exp(hi) > max_sigma:
                raise ValueError(f"noise_for_epsilon: epsilon {target_epsilon} needs sigma > {max_sigma}")
            g_hi = g(hi)
    else:  # enough noise: halve sigma until epsilon > target
        lo, g_lo = hi, g_hi
        while g_lo <= 0:
            if done(g_lo):
                return math.exp(lo)
            hi, g_hi, lo = lo, g_lo, lo - step
            if math.exp(lo) < 1e-3:
                return math.exp(hi)
            g_lo = g(lo)
    w_lo, w_hi, side = g_lo, g_hi, 0
    while not done(g_hi) and hi - lo > 1e-9:
        # where the chord (Illinois-weighted) crosses zero, kept strictly inside the bracket
        mid = lo - w_lo * (hi - lo) / (w_hi - w_lo) if w_hi < w_lo else (lo + hi) / 2
        mid = min(max(mid, lo + 1e-3 * (hi - lo)), hi - 1e-3 * (hi - lo))
        g_mid = g(mid)
        if g_mid <= 0:
            hi, g_hi, w_hi = mid, g_mid, g_mid
            w_lo = w_lo / 2 if side == 1 else w_lo
            side = 1
        else:
            lo, w_lo = mid, g_mid
            w_hi = w_hi / 2 if side == -1 else w_hi
            side = -1
    return math.exp(hi)


class DPSGDDiscriminator:
    """DP-SGD on D with Opacus; give it to ``GANRecipe(privacy=...)`` and ``fit_gan`` wires the rest.

    Args:
        noise_multiplier: sigma (noise std / clipping norm). Give this or ``target_epsilon``.
        target_epsilon: when set, sigma is chosen (``noise_for_epsilon``) so that training ends at this epsilon (at
            ``target_delta``) after ``max_epochs`` epochs of the Poisson loader.
        target_delta: the delta epsilon is reported at (keep it below 1 / n_images).
        max_grad_norm: per-sample clipping norm C.
        accountant: ``"prv"`` (default) or ``"rdp"`` (looser); ``"gdp"`` is refused (an approximation).
        epsilon_tolerance: with ``target_epsilon``, sigma is searched (``noise_for_epsilon``) until the epsilon it
            ends at lies in ``[target - tolerance, target]`` (never above the target).
        audit_canaries: when > 0, ``summary()`` also carries ``"audit"``: the one-run canary audit
            (``common.privacy.canary_audit``) with this many canaries at this run's (sigma, C, q, steps), an
            empirical epsilon *lower* bound beside the accountant's upper bound. It runs the same mechanism on public
            filler and canaries, never on the private images, so it may be released. Seconds on a CPU.

    There is no seed: the noise, the Poisson sampling and the augmentation draws come from ``secret_generator``
    (fresh OS entropy at every start and resume), and no switch turns that off (see the module docstring).
    """

    mode = "dp-sgd"
    #: fit_gan enforces the conditions of the guarantee (no repeated images, no adaptive augmentation)
    formal_guarantee = True

    def __init__(
        self,
        noise_multiplier: float | None = None,
        target_epsilon: float | None = None,
        target_delta: float = 1e-5,
        max_grad_norm: float = 1.0,
        accountant: str = "prv",
        epsilon_tolerance: float = 0.01,
        audit_canaries: int = 0,
    ) -> None:
        if (noise_multiplier is None) == (target_epsilon is None):
            raise ValueError("DPSGDDiscriminator: give exactly one of noise_multiplier and target_epsilon")
        if accountant not in ("prv", "rdp"):
            raise ValueError(f"accountant must be 'prv' or 'rdp' (never the GDP approximation), got {accountant!r}")
        self.noise_multiplier = None if noise_multiplier is None else float(noise_multiplier)
        self.target_epsilon = None if target_epsilon is None else float(target_epsilon)
        self.target_delta = float(target_delta)
        self.max_grad_norm = float(max_grad_norm)
        self.accountant_name = accountant
        self.epsilon_tolerance = float(epsilon_tolerance)
        if self.epsilon_tolerance <= 0:
            raise ValueError(f"epsilon_tolerance must be > 0, got {epsilon_tolerance}")
        self._epsilon_cache: dict[tuple, float] = {}
        self.audit_canaries = int(audit_canaries)
        self._audit_cache: dict[tuple, dict] = {}
        self.engine = None
        self.discriminator = None
        self.optimizer = None
        self.sample_rate: float | None = None
        self.noise_generator: torch.Generator | None = None  # secret; drawn afresh by every wrap(), never saved
        self.sampling_generator: torch.Generator | None = None

    # ------------------------------------------------------------------ wiring

    def cache_settings(self) -> dict:
        """What makes this mechanism (``common.protocol.cache`` keys reused results by it), not what it wrapped."""
        keys = ("target_epsilon", "target_delta", "max_grad_norm", "accountant_name", "epsilon_tolerance")
        settings = {k: getattr(self, k) for k in keys}
        # wrapping computes the noise multiplier from a target epsilon: then it is a result, not a setting
        settings["noise_multiplier"] = self.noise_multiplier if self.target_epsilon is None else None
        return settings

    def check(self, discriminator: nn.Module, objective, d_steps: int, d_regularizer) -> None:
        """Refuse configurations under which the accountant's epsilon would not hold (one clear message each)."""
        from opacus.validators import ModuleValidator

        if getattr(discriminator, "mbstd_group_size", 0) > 1:
            raise ValueError("DP-SGD: the discriminator's minibatch-std layer couples samples; set mbstd_group_size=0")
        errors = ModuleValidator.validate(discriminator, strict=False)
        if errors:
            raise ValueError(f"DP-SGD: the discriminator is not Opacus-compatible: {errors}")
        if d_steps != 1:
            raise ValueError(f"DP-SGD: d_steps must be 1 (several steps on one Poisson batch), got {d_steps}")
        if d_regularizer is not None:
            raise ValueError("DP-SGD: lazy R1 has no per-sample accounting here; set the d_regularizer to null")
        clinical = getattr(objective, "clinical", None)
        if clinical is not None and getattr(clinical, "weight", 0) > 0:
            raise ValueError(
                "DP-SGD: the clinical loss trains its classifier on the private images outside DP-SGD (that would "
                "leak them); set clinical_loss_weight to 0"
            )
        if not getattr(objective, "joint_d_batch", False) or getattr(objective, "fake_batch_size", None) is None:
            raise ValueError(
                "DP-SGD: the objective must use one D pass over reals + a fixed number of fakes "
                "(StyleGAN2Objective(joint_d_batch=True, fake_batch_size=<batch size>))"
            )

    def wrap(self, *, generator, discriminator, g_optimizer, d_optimizer, data_loader, objective, max_epochs, d_steps=1,
             d_regularizer=None, **_) -> dict:  # fmt: skip
        """Make D, its optimiser and the loader private. Returns the replacements (``discriminator``,
        ``d_optimizer``, ``data_loader``; G's objects unchanged).

        Every call draws new secret generators for the noise (on D's device) and the Poisson sampling: a resumed run
        (``fit_gan`` wraps again) continues with fresh randomness, never the first run's."""
        self.check(discriminator, objective, d_steps, d_regularizer)
        module, opt, loader = self.make_private(discriminator, d_optimizer, data_loader, max_epochs)
        return {"discriminator": module, "d_optimizer": opt, "data_loader": loader}

    def make_private(
        self, discriminator: nn.Module, d_optimizer, data_loader, max_epochs: int = 1, across_ranks: bool | None = None
    ) -> tuple:
        """The mechanism itself, without the GAN checks of ``wrap``: Opacus' ``make_private`` on ``discriminator``,
        ``d_optimizer`` and ``data_loader`` (Poisson sampling at q = 1 / len(loader), clipping to ``max_grad_norm``,
        noise ``sigma * C`` robust to floating-point attacks, the accountant's hook), with new secret generators for
        the noise and the sampling. Returns ``(module, optimizer, loader)``. ``wrap`` calls it; so does the canary
        audit (``common.privacy.canary_audit``), which therefore audits this very code path. ``across_ranks``: the
        torchrun mechanism (shards, noise on rank 0 only); None follows the process group, False keeps this process
        to itself (the audit runs inside one rank)."""
        from opacus import PrivacyEngine

        # secure_mode=False only because Opacus' secure mode needs torchcsprng; its two effects are done here:
        # secret generators (below) and the floating-point-safe noise (optimizer.secure_mode, after make_private)
        with warnings.catch_warnings():  # its "Secure RNG turned off" advice does not apply: see above
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.engine = PrivacyEngine(accountant=self.accountant_name, secure_mode=False)
        device = next(discriminator.parameters()).device
        self.noise_generator = secret_generator(device)
        self.sampling_generator = secret_generator("cpu")  # the Poisson masks are drawn on the CPU
        common = {
            "module": discriminator,
            "optimizer": d_optimizer,
            "data_loader": data_loader,
            "max_grad_norm": self.max_grad_norm,
            "poisson_sampling": True,
            "noise_generator": self.noise_generator,
        }
        sigma = self.noise_multiplier
        if self.target_epsilon is not None:
            # as Opacus' make_private_with_epsilon: q = 1 / len(loader), steps = epochs / q; fewer accountant calls
            q = 1.0 / len(data_loader)
            sigma = noise_for_epsilon(
                self.target_epsilon, self.target_delta, q, int(int(max_epochs) / q), accountant=self.accountant_name,
                tolerance=self.epsilon_tolerance,
            )  # fmt: skip
        from common.engines import distributed

        across_ranks = distributed.is_distributed() if across_ranks is None else bool(across_ranks)
        if across_ranks:
            module, opt, loader = self._make_private_distributed(sigma, **common)
        else:
            module, opt, loader = self.engine.make_private(noise_multiplier=sigma, **common)
        _sample_batches_with(loader, self.sampling_generator)
        _empty_batches_as_dicts(loader)
        opt.secure_mode = True  # Opacus' noise robust to floating-point attacks (a sum of 4 Gaussian draws)
        # across ranks only rank 0 adds noise
        if opt.generator is not (self.noise_generator if not across_ranks or distributed.is_rank0() else None):
            raise RuntimeError("DP-SGD: the optimiser does not draw its noise from the secret generator")
        self.discriminator, self.optimizer = module, opt
        self.noise_multiplier = float(opt.noise_multiplier)
        self.sample_rate = 1.0 / len(loader)
        logger.info(
            f"DP-SGD on D: sigma={self.noise_multiplier:.4g}, C={self.max_grad_norm}, q={self.sample_rate:.4g}, "
            f"accountant={self.accountant_name}, ranks={distributed.world_size()}"
        )
        return module, opt, loader

    def _make_private_distributed(self, sigma, *, module, optimizer, data_loader, max_grad_norm, noise_generator, **_):
        """``make_private`` for several ranks without a DDP wrapper (our trainer averages gradients itself):
        Opacus' building blocks put together as its DPDDP path does, with q computed on the global data set.

        ``data_loader`` is the rank's ``DistributedSampler`` loader: its length is the steps per epoch, the same on
        every rank, so q = 1 / len(data_loader) ~ batch_size * world_size / N (the expected global batch over N)."""
        from opacus import GradSampleModule
        from opacus.data_loader import DPDataLoader
        from opacus.optimizers import DistributedDPOptimizer

        from common.engines import distributed

        world = distributed.world_size()
        q = 1.0 / len(data_loader)
        module = GradSampleModule(module, batch_first=True, loss_reduction="mean")
        module.forbid_grad_accumulation()  # one Poisson batch, one step
        # each rank its own secret generator: the ranks' Poisson draws are independent, as one process' would be
        loader = DPDataLoader.from_data_loader(data_loader, distributed=True, generator=self.sampling_generator)
        loader.batch_sampler.set_epoch(0)
        # the expected batch *per rank*: each rank scales its clipped sum by it, the all-reduce averages over ranks
        expected_batch = len(data_loader.dataset) * q / world
        opt = DistributedDPOptimizer(
            optimizer, noise_multiplier=sigma, max_grad_norm=max_grad_norm, expected_batch_size=expected_batch,
            generator=noise_generator if distributed.is_rank0() else None, secure_mode=True,
        )  # fmt: skip
        opt.attach_step_hook(self.engine.accountant.get_optimizer_hook_fn(sample_rate=q))
        return module, opt, loader

    @contextlib.contextmanager
    def generator_step_context(self) -> Iterator[None]:
        """G's step: D's per-sample hooks off (no privacy spent, no grad samples recorded), then back on."""
        disc = self.discriminator
        if disc is None:
            yield
            return
        disc.disable_hooks()
        try:
            yield
        finally:
            disc.enable_hooks()

    # ------------------------------------------------------------------ accounting
    @property
    def steps(self) -> int:
        if self.engine is None:
            return 0
        return int(sum(n for _, _, n in self.engine.accountant.history))

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` (default ``target_delta``); 0 before the first step."""
        if self.engine is None or not self.engine.accountant.history:
            return 0.0
        delta = self.target_delta if delta is None else float(delta)
        # the accountant is costly (0.1-0.5 s a call): one evaluation per distinct history and delta
        key = (tuple(tuple(h) for h in self.engine.accountant.history), delta)
        if key not in self._epsilon_cache:
            self._epsilon_cache[key] = float(self.engine.accountant.get_epsilon(delta=delta))
        return self._epsilon_cache[key]

    def audit(self) -> dict | None:
        """The canary audit at this run's settings (``audit_canaries`` canaries; None when 0 or before a step)."""
        if self.audit_canaries <= 0 or self.steps == 0 or self.sample_rate is None:
            return None
        key = (self.noise_multiplier, self.sample_rate, self.steps, self.max_grad_norm, self.target_delta)
        if key not in self._audit_cache:  # summary() may be called more than once: one audit per setting
            from common.privacy.canary_audit import audit_dp_sgd

            self._audit_cache[key] = audit_dp_sgd(
                self.noise_multiplier, sample_rate=self.sample_rate, steps=self.steps,
                max_grad_norm=self.max_grad_norm, delta=self.target_delta, canaries=self.audit_canaries,
                accountant=self.accountant_name,
            )  # fmt: skip
        return self._audit_cache[key]

    def summary(self, items=None) -> dict:
        """The guarantee, the mechanism's settings and its canary audit; with the training ``items``, also what the
        epsilon protects (``privacy_unit``: one image, and per patient by group privacy where ids exist)."""
        audit = self.audit()
        unit = {} if items is None else privacy_unit(items, self.epsilon(), self.target_delta)
        return {
            "mode": self.mode,
            "guarantee": f"({self.epsilon():.4g}, {self.target_delta:g})-DP for the discriminator's training images",
            "randomness": "noise, Poisson sampling and augmentation from fresh OS entropy (not the config seed)",
            "epsilon": self.epsilon(),
            "delta": self.target_delta,
            "accountant": self.accountant_name,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "target_epsilon": self.target_epsilon,
            **({} if audit is None else {"audit": audit}),
            **unit,
        }

    def state_dict(self) -> dict:
        history = [] if self.engine is None else [list(h) for h in self.engine.accountant.history]
        return {"history": history, "noise_multiplier": self.noise_multiplier}

    def load_state_dict(self, state: dict) -> None:
        """Restore the accountant's history (the generators are not in a checkpoint: ``wrap`` drew new ones)."""
        if self.engine is None:
            raise RuntimeError("DPSGDDiscriminator: wrap(...) before loading a checkpoint")
        self.engine.accountant.history = [tuple(h) for h in state.get("history", [])]

    def attach(self, engine) -> None:
        """Wire the trainer for DP (``fit_gan`` calls it before the loggers are attached):

        - ``engine.state.output`` becomes a ``PublicOutput`` (``PUBLIC_OUTPUT_KEYS`` only) as the process function
          returns it, so that no handler, whatever its order, sees a value computed on the private batch;
        - the augmentation pipe (``engine.augment_pipe``, fixed p under DP) draws from a ``secret_generator``: its
          draws land on the private rows, and with a public seed the stream's position would follow the private
          batch sizes;
        - epsilon is logged at the end of every epoch (``engine.state.metrics['epsilon']``).
        """
        from ignite.engine import Events

        process = engine._process_function  # Ignite sets state.output = process(engine, batch) before any event

        def public_process(e, batch):
            return PublicOutput(process(e, batch))

        engine._process_function = public_process
        pipe = getattr(engine, "augment_pipe", None)
        if pipe is not None:
            if not isinstance(getattr(pipe, "generator", None), torch.Generator):
                raise ValueError(f"DP-SGD: cannot make the augmentation pipe's randomness secret ({type(pipe)})")
            pipe.generator = secret_generator(pipe.generator.device)

        def log(e):
            eps = self.epsilon()
            e.state.metrics["epsilon"] = eps
            logger.info(
                f"epoch {e.state.epoch}: epsilon = {eps:.4g} at delta = {self.target_delta:g} ({self.steps} steps)"
            )

        engine.add_event_handler(Events.EPOCH_COMPLETED, log)


def _sample_batches_with(loader, generator: torch.Generator) -> None:
    """Make the Poisson batch sampler of an Opacus ``DPDataLoader`` draw from ``generator``.

    ``make_private`` otherwise keeps the original loader's generator (``fit_gan`` seeds it with the config's seed):
    anyone who knows the seed would know every batch."""
    from opacus.utils.uniform_sampler import DistributedUniformWithReplacementSampler, UniformWithReplacementSampler

    sampler = loader.batch_sampler
    if not isinstance(sampler, (UniformWithReplacementSampler, DistributedUniformWithReplacementSampler)):
        raise TypeError(f"DP-SGD: expected Opacus' Poisson batch sampler, got {type(sampler).__name__}")
    sampler.generator = generator
    loader.generator = generator  # the loader draws its workers' base seed from it (random transforms of the images)


class NoiseThenClipOptimizer:
    """Wraps an optimiser: before each step, add N(0, noise_std^2) to every gradient, then clip the whole gradient to
    ``clip_norm`` (the SpineGAN paper's order). No privacy guarantee: see ``PaperNoiseThenClip``."""

    def __init__(self, optimizer: torch.optim.Optimizer, noise_std: float, clip_norm: float, generator=None) -> None:
        self.optimizer = optimizer
        self.noise_std = float(noise_std)
        self.clip_norm = float(clip_norm)
        self.generator = generator

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def step(self, closure=None):
        params = self._params()
        for p in params:
            noise = torch.randn(p.grad.shape, generator=self.generator, dtype=p.grad.dtype).to(p.grad.device)
            p.grad.add_(noise * self.noise_std)
        if params:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class PaperNoiseThenClip:
    """The SpineGAN paper's "DP" StyleGAN2-ADA, as an ablation: gradient noise (std 0.02) then clipping (norm 1.5) on
    both G and D; the paper used batch 1. **No formal guarantee**: clipping after the noise does not bound one
    image's influence, so no epsilon exists; ``summary()`` says so. Use ``DPSGDDiscriminator`` for real DP."""

    mode = "paper_noise_then_clip"
    formal_guarantee = False

    def __init__(self, noise_std: float = 0.02, clip_norm: float = 1.5, seed: int = 0) -> None:
        self.noise_std = float(noise_std)
        self.clip_norm = float(clip_norm)
        self.generator = torch.Generator().manual_seed(int(seed))

    def wrap(self, *, g_optimizer, d_optimizer, **_) -> dict:
        return {
            "g_optimizer": NoiseThenClipOptimizer(g_optimizer, self.noise_std, self.clip_norm, self.generator),
            "d_optimizer": NoiseThenClipOptimizer(d_optimizer, self.noise_std, self.clip_norm, self.generator),
        }

    def generator_step_context(self):
        return contextlib.nullcontext()

    def summary(self, items=None) -> dict:
        return {
            "mode": self.mode,
            "guarantee": "none: noise is added before clipping and is not calibrated to a sensitivity (ablation only)",
            "epsilon": None,
            "delta": None,
            "noise_std": self.noise_std,
            "clip_norm": self.clip_norm,
        }

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])

    def attach(self, engine) -> None:
        return None


def _empty_batches_as_dicts(loader) -> None:
    """Poisson sampling can draw an empty batch (more likely on small sets). Opacus then builds zeros from the first
    item's shapes and Python types, which fails for our dict items (``torch.zeros(dtype=int)``); give it a batch of the
    same dict layout with zero rows instead, so that the step runs (D's update is then noise only, as DP-SGD has it)."""
    collate = getattr(loader, "collate_fn", None)
    if collate is None or not hasattr(collate, "sample_empty_shapes"):
        return
    first = loader.dataset[0]
    if not isinstance(first, dict):
        return
    template = {k: torch.as_tensor(v) for k, v in first.items() if isinstance(v, (torch.Tensor, int, float))}
    inner = collate.wrapped_collator_fn if hasattr(collate, "wrapped_collator_fn") else None

    def collate_with_empty(batch):
        if len(batch) > 0:
            return inner(batch) if inner is not None else batch
        return {k: torch.zeros((0, *t.shape), dtype=t.dtype) for k, t in template.items()}

    loader.collate_fn = collate_with_empty
