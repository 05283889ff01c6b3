"""Where training runs: the device, mixed precision, ``torch.compile`` and data parallelism.

A :class:`Runtime` says on which device a process trains, whether the model is compiled,
and which share of every batch it handles when several processes train one model together
(``torchrun`` + DistributedDataParallel). The numeric precision is part of the run's
configuration (``train.precision``): :func:`autocast` and :func:`precision_dtype` apply it.

Data parallelism keeps single-process semantics: every process draws the same global batch
order; process ``r`` of ``W`` takes the ``r``-th contiguous part of each global batch
(:func:`shard`); each process scales its loss so that DDP's gradient average equals the
gradient of the single-process loss on the whole global batch; batch normalisation uses the
statistics of the whole global batch (:class:`BatchNorm2d`). Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from niflow.config import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Runtime:
    """One training process.

    Attributes
    ----------
    device : torch.device
    compile : bool
        Train through ``torch.compile(model)``; falls back to eager with a warning when
        compilation fails.
    rank, world_size : int
        This process's place among the processes training one model (0 of 1 alone).
    """

    device: torch.device = torch.device("cpu")
    compile: bool = False
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> dict:
        return {"device": str(self.device), "compile": self.compile,
                "world_size": self.world_size}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Where forward and backward run in ``precision`` (``config.train.precision``):
    ``"bfloat16"`` is autocast (loss, optimiser state and weights stay float32); ``"float32"``
    and ``"float64"`` need no context (the weights and data carry the dtype)."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_dtype(precision: str) -> torch.dtype:
    """Dtype of the weights and of the data fed to the model for ``precision``."""
    return torch.float64 if precision == "float64" else torch.float32


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: the GPU when one is usable, else the CPU. ``"cuda"`` without a usable GPU
    is a :class:`~niflow.config.ConfigError`. ``"cuda:N"`` names one GPU."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no usable CUDA GPU (torch "
                              f"{torch.__version__}, built without CUDA or no driver); use "
                              f"--device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) "
                              f"visible")
        return torch.device("cuda", index)
    raise ConfigError(f"--device {name!r}: expected one of {DEVICES} or cuda:N")


def runtime_from_environment(device: str = "auto", compile: bool = False) -> Runtime:
    """The runtime of this process; joins the process group when started by ``torchrun``.

    ``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE`` > 1
    the process group is initialised (NCCL on GPUs, gloo on CPUs) and each process takes the
    GPU of its local rank.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return Runtime(dev, compile, rank, world)


def shard(batch: np.ndarray | Tensor, rank: int, world_size: int) -> np.ndarray | Tensor:
    """The ``rank``-th of ``world_size`` contiguous parts of ``batch`` (sizes differ by ≤ 1,
    earlier parts larger; a part may be empty when the batch has fewer rows than processes).
    """
    n = len(batch)
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return batch[start:start + base + (1 if rank < extra else 0)]


def all_reduce_sum(values: Tensor, runtime: Runtime) -> Tensor:
    """Sum of ``values`` over all processes (``values`` itself when training alone)."""
    if runtime.distributed:
        values = values.clone()
        dist.all_reduce(values)
    return values


def agree(check, runtime: Runtime) -> None:
    """Run ``check()`` on every process; if it raised anywhere, raise that error everywhere.

    Keeps processes in step: a refusal on rank 0 (say, the run folder exists) stops every
    process with the same message instead of leaving the others waiting in a collective.
    """
    err = None
    try:
        check()
    except Exception as caught:  # noqa: BLE001 - re-raised below, on every process
        err = caught
    if runtime.distributed:
        errors: list = [None] * runtime.world_size
        dist.all_gather_object(errors, err)
        err = next((e for e in errors if e is not None), None)
    if err is not None:
        raise err


def broadcast_object(obj, runtime: Runtime):
    """Rank 0's ``obj`` on every process."""
    if not runtime.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def maybe_compile(model: nn.Module, runtime: Runtime) -> nn.Module:
    """``torch.compile(model)`` when asked and available; else ``model``."""
    if not runtime.compile:
        return model
    try:
        return torch.compile(model)
    except Exception as err:  # noqa: BLE001 - any failure means: train eagerly
        warn_compile_failed(err)
        return model


def warn_compile_failed(err: BaseException) -> None:
    first = " ".join(str(err).split())[:200]
    warnings.warn(f"torch.compile failed ({type(err).__name__}: {first}); training without "
                  f"compilation", RuntimeWarning, stacklevel=3)


