"""One Ignite trainer for every GAN in the project (conditional or not), built on MONAI's ``Trainer``.

MONAI's ``GanTrainer`` trains an unconditional G/D pair with fixed loss functions; our papers also need class
labels (ACGAN, conditional StyleGAN2), paired conditions (pix2pix), several D steps, lazy regularisation, an EMA
generator and, under differential privacy, a generator step outside the DP hooks. The loss maths lives in a
``GANObjective`` (``common.losses``); this class owns the optimisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from common.engines.distributed import average_gradients, broadcast_buffers, is_distributed
from common.engines.memory_format import plain_tensor, to_channels_last
from common.losses.adversarial import GANObjective


def prepare_gan_batch(
    batch: dict,
    device,
    non_blocking: bool = False,
    image_key: str = "image",
    label_key: str = "label",
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
):
    """Return ``(reals, labels_or_None)`` from a MONAI dict batch; ``augment`` (a batch transform) is applied to the
    reals on the device."""
    reals = to_channels_last(plain_tensor(batch[image_key]).to(device=device, non_blocking=non_blocking).float())
    if augment is not None:
        reals = to_channels_last(augment(reals))
    labels = batch.get(label_key)
    if isinstance(labels, torch.Tensor):
        labels = plain_tensor(labels).to(device=device, non_blocking=non_blocking).long().view(-1)
    else:
        labels = None
    return reals, labels


class AugmentedDiscriminator:
    """``D(pipe(x), *args)``: the discriminator seen through an augmentation pipe (attributes are D's)."""

    def __init__(self, discriminator: nn.Module, pipe: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.discriminator = discriminator
        self.pipe = pipe

    def __call__(self, images: torch.Tensor, *args, **kwargs):
        return self.discriminator(self.pipe(images), *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.discriminator, name)


@contextlib.contextmanager
def frozen(module: nn.Module):
    """``module``'s trainable parameters with ``requires_grad`` off inside the block, on again after it."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def make_ema(generator: nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of G's weights and buffers (Karras et al.), using PyTorch's ``AveragedModel``."""
    return AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class GANTrainer(Trainer):
    """Adversarial training loop: ``d_steps`` discriminator updates, then one generator update, per batch.

    Args:
        device: where the networks live.
        max_epochs: number of epochs.
        train_data_loader: yields MONAI dict batches with ``image`` (B, C, *spatial) in [-1, 1] and, for
            conditional GANs, ``label`` (B,).
        generator, discriminator: the networks.
        g_optimizer, d_optimizer: their optimisers.
        objective: the losses (``BCEObjective``, ``ACGANObjective``, ...).
        d_steps: discriminator updates per generator update.
        d_regularizer: optional ``callable(disc, reals, labels) -> dict`` with key ``"d_reg"`` (e.g. R1), applied
            every ``d_reg_interval`` iterations and scaled by that interval (lazy regularisation, Karras et al. 2020).
        g_regularizer: the same for G (e.g. path length), ``callable(gen, batch_size, device, labels) -> dict``.
        ema_decay: keep an EMA copy of G (``self.g_ema``) when set.
        amp: mixed precision: bf16 autocast around D's and G's losses (a GradScaler for fp16 is not needed with
            bf16), on CUDA and on the CPU. On a CPU with native bf16 (AVX512-BF16/AMX) the liver DCGAN step ran
            1.5-1.8x faster (``benchmarks/bench_engine_overhead.py``, docs/generators.md "CPU throughput"); on one
            without, bf16 is emulated and slower: leave it off there.
        generator_step_context: a context-manager factory wrapped around G's step, e.g. one that disables
            Opacus' per-sample hooks on D so that the generator step does not spend privacy budget.
        augment_pipe: a differentiable batch augmentation put in front of D for every image it sees (reals and
            fakes, in D's step, G's step and the D regulariser): StyleGAN2-ADA's pipe
            (``common.data.ada.AdaptiveAugment``). Unlike ``prepare_batch``'s ``augment``, which changes only the
            reals, it leaves the distribution G must match unchanged.
        train_handlers: Ignite/MONAI handlers (progress, checkpoint, logging...).

    ``engine.state.output`` is a dict of detached 0-dim tensors, on the training device: ``loss`` (= ``g_loss``, so
    that MONAI's MLflow handler finds its default key), ``g_loss``, ``d_loss`` and every other term the objective
    returns. No step turns them into Python floats (each would be a device sync): read them with ``float()`` once
    per logging interval, as ``LossHistory``, ``NaNGuard`` and ``AdaptiveAugmentHandler`` do.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader,
        generator: nn.Module,
        discriminator: nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        objective: GANObjective,
        d_steps: int = 1,
        d_regularizer: Callable | None = None,
        d_reg_interval: int = 16,
        g_regularizer: Callable | None = None,
        g_reg_interval: int = 4,
        ema_decay: float | None = None,
        amp: bool = False,
        generator_step_context: Callable[[], Any] | None = None,
        prepare_batch: Callable = prepare_gan_batch,
        epoch_length: int | None = None,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
        augment_pipe: nn.Module | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            handlers=train_handlers,
            decollate=False,
            amp=False,  # our own autocast below: MONAI's would also create a CUDA GradScaler
        )
        if d_steps < 1:
            raise ValueError(f"d_steps must be >= 1, got {d_steps}")
        self.generator = generator
        self.discriminator = discriminator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.objective = objective
        self.d_steps = d_steps
        self.d_regularizer = d_regularizer
        self.d_reg_interval = max(1, int(d_reg_interval))
        self.g_regularizer = g_regularizer
        self.g_reg_interval = max(1, int(g_reg_interval))
        self.g_ema = make_ema(generator, ema_decay) if ema_decay else None
        self.amp_device_type = torch.device(device).type
        self.use_amp = bool(amp) and self.amp_device_type in ("cuda", "cpu")
        self.generator_step_context = generator_step_context or contextlib.nullcontext
        self.distributed = is_distributed()
        self.augment_pipe = augment_pipe

    def discriminator_view(self):
        """D as the objective and the D regulariser call it: behind the augmentation pipe when there is one."""
        if self.augment_pipe is None:
            return self.discriminator
        return AugmentedDiscriminator(self.discriminator, self.augment_pipe)

    def _autocast(self):
        if self.use_amp:
            return torch.autocast(self.amp_device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # several ranks: the mean gradient over ranks keeps every rank's weights identical. A DP optimiser
        # (Opacus' DistributedDPOptimizer) reduces itself, after clipping and noising: averaging here would be wasted
        if self.distributed and not callable(getattr(optimizer, "reduce_gradients", None)):
            average_gradients(p for group in optimizer.param_groups for p in group["params"])
        optimizer.step()

    def _iteration(self, engine: GANTrainer, batchdata: dict) -> dict[str, torch.Tensor | float]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        reals, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        if not engine.objective.conditional:
            labels = None
        it = engine.state.iteration
        engine.generator.train()
        engine.discriminator.train()
        logs: dict[str, torch.Tensor] = {}
        disc = engine.discriminator_view()

        # discriminator; G's params get no grads here (fakes are made under no_grad in the objective)
        for _ in range(engine.d_steps):
            with engine._autocast():
                d_terms = engine.objective.d_loss(engine.generator, disc, reals, labels)
            engine._step(engine.d_optimizer, d_terms["d_loss"])
            logs.update(d_terms)
        if engine.d_regularizer is not None and it % engine.d_reg_interval == 0:
            reg = engine.d_regularizer(disc, reals, labels)
            engine._step(engine.d_optimizer, reg["d_reg"] * engine.d_reg_interval)
            logs.update(reg)

        # generator; D is only a critic here: its weights are frozen, so the backward pass through D computes the
        # input gradients G needs and no weight gradients (a fifth to a third of D's backward, never used)
        with engine.generator_step_context(), frozen(engine.discriminator):
            with engine._autocast():
                g_terms = engine.objective.g_loss(engine.generator, disc, reals, labels)
            engine._step(engine.g_optimizer, g_terms["g_loss"])
            logs.update(g_terms)
            if engine.g_regularizer is not None and it % engine.g_reg_interval == 0:
                # under DP-SGD the real batch size is Poisson-sampled private data: a fixed fake batch hides it
                n = getattr(engine.objective, "fake_batch_size", None) or reals.shape[0]
                reg = engine.g_regularizer(engine.generator, n, reals.device, None if labels is None else labels[:n])
                engine._step(engine.g_optimizer, reg["g_reg"] * engine.g_reg_interval)
                logs.update(reg)
        engine.d_optimizer.zero_grad(set_to_none=True)
        if engine.distributed:  # BatchNorm statistics differ per shard: keep rank 0's everywhere (as DDP does)
            broadcast_buffers(engine.generator)
            broadcast_buffers(engine.discriminator)
        if engine.g_ema is not None:
            engine.g_ema.update_parameters(engine.generator)

        # detached tensors, not floats: a float is a device sync per loss per step (on a GPU the host waits for the
        # whole step). Those who read the values convert them once per interval: LossHistory at the epoch's end,
        # NaNGuard every few steps, ADA every ada_interval steps, the loggers at their logging interval
        out = {k: v.detach() if isinstance(v, torch.Tensor) else float(v) for k, v in logs.items()}
        out["loss"] = out["g_loss"]
        return out

    def sampling_generator(self) -> nn.Module:
        """The generator to sample from: the EMA copy when there is one (it gives better samples), else G."""
        return self.g_ema.module if self.g_ema is not None else self.generator
