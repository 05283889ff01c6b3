"""Devices and data-parallel training across processes (``torchrun`` + DistributedDataParallel).

Launch several processes on one machine or several machines with PyTorch's own launcher,
e.g. two processes here::

    torchrun --standalone --nproc_per_node=2 -m niflow.cli train --stim S --bold B --out RUN

and across nodes (run on every node, same rendezvous endpoint)::

    torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HEAD_NODE:29400 --rdzv_id=nif1 -m niflow.cli train ... --device cuda

The process group uses gloo on CPU and NCCL on CUDA. Every process holds the whole model and
reads its slice of each global batch; gradients are averaged by DDP, and the loss is scaled
so that the update equals single-process training on the whole batch (uneven slices
included). Batch-norm statistics are per process (SyncBatchNorm is used on CUDA only).
Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available (this process's local GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available here")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(name)


def init_world(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def shard(rows: torch.Tensor, world: World) -> torch.Tensor:
    """This process's contiguous slice of a global batch of row indices."""
    if not world.distributed:
        return rows
    return torch.tensor_split(rows, world.size)[world.rank]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast(obj, world: World):
    """Rank 0's value of a picklable object, on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
