"""Memory guard: estimate what a training run needs and refuse it when the machine lacks it.

Being killed by the operating system's out-of-memory killer (or a cluster's memory limit)
halfway through training loses time and gives no reason. Before a run folder is created,
:func:`estimate_training_memory` adds up

* the model's parameters, their gradients and Adam's two moment estimates (4 × parameters),
* copies of the weights kept during training (the best epoch's weights, and the checkpoint
  serialised in memory before it is written: model, optimizer and best weights, twice),
* the data: the float32 copy of the stimuli and two copies of the kept responses (as
  read and z-scored); the arrays as read are already in memory when the check runs (and
  so already missing from what is available), so they are not counted,
* activations: every tensor the forward pass of one training batch creates (traced on
  PyTorch's ``meta`` device, where nothing is allocated), twice: most are kept for the
  backward pass, which creates gradients of similar size while it frees them (on the CPU
  the measured peak of the training loop is 1.0–1.6 times that sum); or, if larger, the
  transients of evaluation (up to 128 rows at once without gradients: a few of the largest
  tensors) and of the readout initialisation (float32 copies of the training stimuli),
* the runtime: a fixed allowance for what the first training step and the figures add to
  the process (PyTorch kernels paged in, plotting), measured at 100–250 MiB on Linux,

and :func:`check_memory` compares the total with what is available: ``MemAvailable`` of
``/proc/meminfo`` and the headroom under a cgroup memory limit (containers, batch
schedulers) on Linux, ``torch.cuda.mem_get_info`` on a GPU. Elsewhere (no ``/proc``) the
check is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from niflow._system import available_memory, format_bytes
from niflow.config import RunConfig

EVAL_BATCH = 128  # niflow.model.fitted.predict's batch size
RUNTIME = 256 * 2**20  # see the module documentation


class ResourceError(RuntimeError):
    """The run needs more memory than is available."""


# --------------------------------------------------------------------------- available


# --------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run needs, by part (see the module documentation)."""

    parameters: int
    gradients: int
    optimizer: int
    weight_copies: int
    data: int
    activations: int
    evaluation: int
    initialisation: int
    runtime: int
    batch_size: int

    @property
    def transient(self) -> int:
        """The largest of training activations, evaluation and initialisation (one at a
        time)."""
        return max(self.activations, self.evaluation, self.initialisation)

    @property
    def total(self) -> int:
        return (self.parameters + self.gradients + self.optimizer + self.weight_copies
                + self.data + self.transient + self.runtime)

    @property
    def model(self) -> int:
        """Parameters, gradients, optimizer state and weight copies."""
        return self.parameters + self.gradients + self.optimizer + self.weight_copies

    def summary(self) -> str:
        """One line: the total and its main parts."""
        if self.transient == self.activations:
            peak = f"activations {format_bytes(self.activations)} (batches of {self.batch_size})"
        elif self.transient == self.evaluation:
            peak = f"evaluation {format_bytes(self.evaluation)}"
        else:
            peak = f"initialisation {format_bytes(self.initialisation)}"
        return (f"{format_bytes(self.total)}: data {format_bytes(self.data)}, {peak}, model "
                f"and optimizer {format_bytes(self.model)}, runtime {format_bytes(self.runtime)}")


class _OutputBytes(TorchDispatchMode):
    """Record the bytes of every new tensor the traced operations return.

    Views (``view``, ``permute``, ``detach``...) and in-place results share memory with
    their input: the operator's schema marks such returns with alias information, and they
    are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info is not None for r in func._schema.returns):
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.sizes.append(t.numel() * t.element_size())
        return out


def _trace(model: torch.nn.Module, image_shape: tuple[int, int, int], batch: int,
           ) -> list[int]:
    """Bytes of each tensor created by the forward pass and loss of one batch."""
    counter = _OutputBytes()
    x = torch.empty(batch, *image_shape, device="meta")
    with counter:
        out = model(x)
        # the loss: squared error per area and the regulariser, as in niflow.train.loop.fit
        loss = sum(torch.mean((y - torch.zeros_like(y)) ** 2) for y in out.values())
        loss = loss + model.regularizer()
    return counter.sizes


def activation_bytes(model: torch.nn.Module, image_shape: tuple[int, int, int],
                     ) -> tuple[int, int, int]:
    """How the tensors of a forward pass grow with the batch size.

    Traces ``model`` (built on the ``meta`` device) on batches of 2 and 3 samples (batch
    normalisation needs two) and splits every created tensor into a batch-independent part
    (e.g. readout spatial maps) and a per-sample part.

    Returns
    -------
    fixed : int
        Bytes independent of the batch size.
    per_sample : int
        Bytes added by each sample of the batch.
    largest_per_sample : int
        Per-sample bytes of the largest single tensor.
    """
    two, three = _trace(model, image_shape, 2), _trace(model, image_shape, 3)
    if len(two) != len(three):  # the same operations run whatever the batch size
        raise AssertionError("forward pass differs between batch sizes")
    growth = [b - a for a, b in zip(two, three, strict=True)]
    per_sample = sum(growth)
    return sum(two) - 2 * per_sample, per_sample, max(growth, default=0)


def estimate_training_memory(cfg: RunConfig, image_shape: tuple[int, int, int],
                             n_voxels: dict[str, int], n_samples: int, n_train_rows: int,
                             *, n_eval_rows: int | None = None) -> MemoryEstimate:
    """Estimate the memory training ``cfg`` needs beyond the inputs already read.

    Parameters
    ----------
    cfg : RunConfig
    image_shape : tuple of int
        ``(channels, height, width)`` of one stimulus.
    n_voxels : dict of str to int
        Voxels fitted per area.
    n_samples : int
        Rows of the stimuli and responses.
    n_train_rows : int
        Rows trained on (a batch never holds more).
    n_eval_rows : int, optional
        Most rows predicted at once for validation or testing (default ``n_samples``).

    Returns
    -------
    MemoryEstimate
    """
    from niflow.model.nif import NIFModel

    with torch.device("meta"):  # shapes only: nothing allocated, no random numbers drawn
        model = NIFModel(cfg, image_shape, n_voxels)
    model.train()
    weights = sum(t.numel() * t.element_size()
                  for t in (*model.parameters(), *model.buffers()))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    batch = max(1, min(cfg.train.batch_size, n_train_rows))
    fixed, per_sample, largest = activation_bytes(model, image_shape)
    forward = fixed + batch * per_sample
    # evaluation runs without gradients: only a few of the largest tensors live at once
    rows = n_samples if n_eval_rows is None else n_eval_rows
    evaluation = fixed + 3 * largest * min(EVAL_BATCH, rows)
    pixels = n_samples * image_shape[0] * image_shape[1] * image_shape[2]
    data = pixels * 4 + 2 * n_samples * sum(n_voxels.values()) * 4
    # readout initialisation standardises and squares the training stimuli (float32 copies)
    initialisation = 4 * pixels * 4 * n_train_rows // max(n_samples, 1)
    return MemoryEstimate(
        parameters=weights, gradients=params, optimizer=2 * params,
        # best-epoch weights, and the checkpoint (model, best, Adam) serialised then copied
        weight_copies=weights + 2 * (2 * weights + 2 * params),
        data=data, activations=2 * forward, evaluation=evaluation,
        initialisation=initialisation, runtime=RUNTIME, batch_size=batch)


def check_memory(estimate: MemoryEstimate, device: str | torch.device = "cpu",
                 available: int | None = None) -> int | None:
    """Refuse a run whose estimate exceeds the available memory.

    Parameters
    ----------
    estimate : MemoryEstimate
    device : str or torch.device
        Where the model will train.
    available : int, optional
        Bytes available (default: :func:`available_memory`).

    Returns
    -------
    int or None
        The available bytes that were compared (``None``: unknown, not checked).

    Raises
    ------
    ResourceError
        One line: the estimate by part, what is available and what to change.
    """
    if available is None:
        available = available_memory(device)
    if available is None or estimate.total <= available:
        return available
    largest = max(estimate.data, estimate.transient, estimate.model)
    if largest == estimate.activations:
        hint = "a smaller batch_size (--batch-size) or fewer channels"
    elif largest == estimate.data:
        hint = ("--stream with HDF5 files (batches read on demand), fewer samples or "
                "voxels, or smaller images")
    elif largest == estimate.model:
        hint = "fewer voxels, a smaller rank or fewer channels"
    else:
        hint = "fewer channels or smaller images"
    raise ResourceError(
        f"training needs about {estimate.summary()}; only {format_bytes(available)} is "
        f"available on {torch.device(device)}; use {hint}, or pass --no-memory-check if the "
        f"estimate is wrong")

