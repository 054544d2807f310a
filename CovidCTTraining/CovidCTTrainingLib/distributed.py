"""Data-parallel training across processes (torchrun): DistributedDataParallel, NCCL on GPUs, gloo on CPU.

``torchrun --nproc_per_node=N -m CovidCTTrainingLib.cli ...`` (add ``--nnodes``/``--rdzv-endpoint`` for several
machines). Every rank holds the same weights; each takes its share of every batch and the gradients are averaged.
Rank 0 writes checkpoints and the model package; the run folder must be shared by all ranks.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_environment() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); False for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when a process group is up, else unchanged."""
    if rank_and_size()[1] == 1:
        return module
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``t`` over all ranks in rank order (no gradient), or ``t`` for one process."""
    if rank_and_size()[1] == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def barrier() -> None:
    if rank_and_size()[1] > 1:
        dist.barrier()


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics) on every rank: after the last step of an epoch each rank has
    updated them on its own share, and all ranks must validate and keep the same model."""
    if rank_and_size()[1] > 1:
        for b in module.buffers():
            dist.broadcast(b, 0)
