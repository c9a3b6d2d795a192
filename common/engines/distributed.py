"""Several processes (GPUs or CPU workers) training one GAN: what ``torchrun`` + ``configs/multi_gpu_train.json`` use.

Data parallel, done the way GAN codes (e.g. StyleGAN2) do it rather than with ``DistributedDataParallel``: every
rank holds the same G and D (parameters broadcast from rank 0 at the start), sees its own shard of the data
(``DistributedSampler``) and its own latents, and gradients are averaged across ranks after each backward pass
(``average_gradients``) before the optimiser steps. This keeps every rank's weights identical, and works with
several forward passes per step (real and fake through D, lazy regularisers), which DDP's reducer does not allow.
Only rank 0 writes files (checkpoints, sample grids, logs, TensorBoard, MLflow).

Launch (one node, 2 GPUs; or 2 CPU processes with the gloo backend when there is no GPU)::

    torchrun --standalone --nproc_per_node 2 -m monai.bundle run training \\
        --config_file "['bundles/<b>/configs/train.json','bundles/<b>/configs/multi_gpu_train.json']"
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "average_gradients",
    "broadcast_buffers",
    "broadcast_module",
    "device_for_rank",
    "init_process_group",
    "is_distributed",
    "is_rank0",
    "rank",
    "shutdown",
    "sync_ignite",
    "world_size",
]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank0() -> bool:
    return rank() == 0


def device_for_rank() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is there, else the CPU (gloo)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_process_group(backend: str | None = None) -> bool:
    """Join the process group ``torchrun`` describes in the environment (no-op without it or when joined already).

    ``backend``: ``nccl`` on GPUs, ``gloo`` on CPU by default. Returns whether a group of several processes is on.
    """
    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return is_distributed()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(device_for_rank())
    dist.init_process_group(backend=backend)
    sync_ignite()
    logger.info(f"rank {dist.get_rank()} of {dist.get_world_size()} joined ({backend})")
    return True


def sync_ignite() -> None:
    """Let Ignite discover the process group on every rank at once.

    Ignite's ``idist`` inspects the group lazily, with a collective (``new_group``), the first time a handler asks
    for it; if only rank 0 runs that handler (logging, checkpoints), rank 0 waits there forever while the others
    wait in the next gradient all-reduce. Asking here, on every rank, settles it before training.
    """
    if is_distributed():
        import ignite.distributed as idist

        idist.get_world_size()
        idist.get_nproc_per_node()
        idist.get_nnodes()


def shutdown() -> None:
    """Leave the process group (after a barrier, so that rank 0's final writes are done)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Make every rank's parameters and buffers equal to rank ``src``'s."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src)


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (BatchNorm running statistics) to every rank, as DDP's ``broadcast_buffers`` does."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in module.buffers():
            dist.broadcast(tensor.data, src)


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """All-reduce the gradients of ``parameters`` to their mean over ranks (call between backward and step)."""
    if not is_distributed():
        return
    n = float(dist.get_world_size())
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(n)
