"""Training of image models: batches of rows, Adam, validation on held-out rows.

The epoch loop itself (early stopping, divergence, checkpoints, resume, ``log.jsonl``,
progress) is :func:`niflow.train.epochs.run_epochs`, which movie models use too; this module
is what an image model trains on (:class:`Batches`, :func:`validation_score`).

Determinism: the model is initialised from ``seed`` and every epoch's batch order comes from
its own generator seeded with ``(seed, epoch)``, so a run resumed from the checkpoint of epoch
``e`` replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from niflow.config import TrainConfig
from niflow.data.dataset import NIFData
from niflow.data.stream import StreamingData
from niflow.model.nif import NIFModel
from niflow.train.epochs import (
    CHECKPOINT,
    DONE,
    LOG,
    History,
    load_checkpoint,
    run_epochs,
    save_checkpoint,
    write_log,
)
from niflow.train.runtime import (
    Runtime,
    all_reduce_sum,
    autocast,
    maybe_compile,
    precision_dtype,
    shard,
    warn_compile_failed,
)

BANK_CACHE_BYTES = 1 << 30  # fixed filter-bank outputs kept for all training rows, at most

__all__ = ["Batches", "CHECKPOINT", "DONE", "LOG", "History", "batch_loss",
           "correlation_from_sums", "correlation_sums", "epoch_plan", "fit",
           "load_checkpoint", "save_checkpoint", "seed_everything", "validation_score",
           "write_log"]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


class Batches:
    """Where training batches come from: one interface for data in memory and on disk.

    ``batches(plan)`` yields, for each array of row indices in ``plan``, the model's inputs
    and the z-scored responses {area: (len, n_voxels)} on ``device``. The inputs are
    ``{"stimulus": (len, C, H, W)}`` plus, in memory and when ``model`` has fixed filter
    banks whose outputs fit in ``BANK_CACHE_BYTES``, ``"banks"``: those outputs, computed
    once for every row (they depend on the stimulus alone), so that epochs do not redo them.
    """

    def __init__(self, data: NIFData | StreamingData, device: torch.device,
                 dtype: torch.dtype = torch.float32, model: NIFModel | None = None) -> None:
        self.data, self.device, self.dtype = data, device, dtype
        self.streaming = isinstance(data, StreamingData)
        self.banks: dict[str, Tensor] = {}
        if not self.streaming:
            # in memory: everything moves to the device once; a batch is an index
            self.stim = torch.as_tensor(data.stim).to(device, dtype)
            self.resp = {a: torch.as_tensor(r).to(device, dtype)
                         for a, r in data.responses.items()}
            if model is not None and model.bank_bytes(len(self.stim)) <= BANK_CACHE_BYTES:
                self.banks = model.fixed_banks(self.stim)

    def batches(self, plan: list[np.ndarray]) -> Iterator[tuple[dict, dict[str, Tensor]]]:
        if self.streaming:
            for x, y in self.data.iter_batches(plan, self.device.type == "cuda"):
                yield ({"stimulus": x.to(self.device, self.dtype, non_blocking=True)},
                       {a: v.to(self.device, self.dtype, non_blocking=True)
                        for a, v in y.items()})
            return
        for rows in plan:
            idx = torch.as_tensor(rows, dtype=torch.long, device=self.device)
            inputs = {"stimulus": self.stim[idx]}
            if self.banks:
                inputs["banks"] = {a: b[idx] for a, b in self.banks.items()}
            yield inputs, {a: r[idx] for a, r in self.resp.items()}


def correlation_sums(pred: Tensor, true: Tensor) -> Tensor:
    """Per-voxel sufficient statistics of Pearson's r, shape (6, n_voxels), float64:
    n, Σp, Σt, Σp², Σt², Σpt (summable over batches and processes)."""
    p, t = pred.double(), true.double()
    n = torch.full_like(p[0], float(p.shape[0]))
    return torch.stack([n, p.sum(0), t.sum(0), (p * p).sum(0), (t * t).sum(0),
                        (p * t).sum(0)])


def correlation_from_sums(sums: Tensor) -> np.ndarray:
    """Pearson r per voxel from :func:`correlation_sums`; 0 where a column is constant."""
    n, sp, st, spp, stt, spt = sums
    var_p = (spp - sp * sp / n).clamp_min(0)
    var_t = (stt - st * st / n).clamp_min(0)
    cov = spt - sp * st / n
    # a constant column leaves rounding noise of the order of eps · Σx² in its variance
    tiny = 1e-10 * torch.maximum(spp, stt).clamp_min(1e-300)
    ok = (var_p > tiny) & (var_t > tiny)
    r = torch.where(ok, cov / torch.sqrt(torch.where(ok, var_p * var_t, 1.0)), 0.0)
    return r.cpu().numpy()


@torch.no_grad()
def validation_score(model: NIFModel, data: NIFData | StreamingData, rows: np.ndarray,
                     runtime: Runtime | None = None, batch_size: int = 256,
                     source: Batches | None = None) -> tuple[float, dict]:
    """Median r over all voxels of all areas on ``rows``, and per-area medians.

    Predictions are reduced to per-voxel sums batch by batch (memory does not grow with
    ``rows``); with several processes each scores its share of ``rows`` and the sums are
    added up.
    """
    runtime = runtime or Runtime(next(model.parameters()).device)
    source = source or Batches(data, runtime.device, next(model.parameters()).dtype, model)
    was_training = model.training
    model.eval()
    mine = shard(np.asarray(rows), runtime.rank, runtime.world_size)
    plan = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    sums = {a: torch.zeros(6, n, dtype=torch.float64, device=runtime.device)
            for a, n in data.n_voxels.items()}
    for x, y in source.batches(plan):
        out = model(**x)
        for a in sums:
            sums[a] += correlation_sums(out[a], y[a])
    model.train(was_training)
    rs = {a: correlation_from_sums(all_reduce_sum(s, runtime)) for a, s in sums.items()}
    pooled = np.concatenate(list(rs.values()))
    return float(np.median(pooled)), {a: float(np.median(r)) for a, r in rs.items()}


def _area_weights(data: NIFData | StreamingData, mode: str) -> dict[str, float]:
    n = data.n_voxels
    if mode == "equal":
        return {a: 1.0 / len(n) for a in n}
    total = sum(n.values())
    return {a: v / total for a, v in n.items()}


def epoch_plan(train_rows: np.ndarray, batch_size: int, seed: int, epoch: int,
               min_batch: int = 1) -> list[np.ndarray]:
    """The global batches of one epoch: a permutation seeded by ``(seed, epoch)``, cut into
    ``batch_size`` rows; batches smaller than ``min_batch`` are left out."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = np.asarray(train_rows)[torch.randperm(len(train_rows), generator=gen).numpy()]
    plan = [order[i:i + batch_size] for i in range(0, order.size, batch_size)]
    return [b for b in plan if b.size >= min_batch]


def batch_loss(out: dict[str, Tensor], target: dict[str, Tensor], weights: dict[str, float],
               n_global: int, world_size: int) -> Tensor:
    """This process's share of the mean squared error of one global batch.

    Each row contributes its voxel-mean squared error divided by the global batch size;
    multiplied by ``world_size`` because DDP averages (not sums) the processes' gradients,
    so the averaged gradient is the gradient of the single-process loss.
    """
    per_row = sum(weights[a] * ((out[a].to(target[a].dtype) - target[a]) ** 2).mean(1)
                  for a in out)
    return per_row.sum() * (world_size / n_global)


def fit(model: NIFModel, data: NIFData | StreamingData, cfg: TrainConfig,
        run_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
        runtime: Runtime | None = None) -> History:
    """Train ``model`` on ``data.split.train``; keep the weights of the best validation epoch.

    Parameters
    ----------
    model : NIFModel
        Built (and seeded) by the caller; trained in place (moved to ``runtime.device``).
    data : NIFData or StreamingData
        Stimuli, z-scored responses and the split, in memory or streamed from HDF5.
    cfg : TrainConfig
    run_dir : path, optional
        If given, a checkpoint is written atomically after every epoch and each epoch's
        metrics are appended to ``log.jsonl`` (by rank 0 only).
    resume : bool
        Continue from ``run_dir/checkpoint.pt``.
    runtime : Runtime, optional
        Device, compilation and data-parallel rank (default: the model's device, one
        process). The precision is ``cfg.precision``.

    progress : bool
        Show progress (rank 0): a bar on a terminal, else one line per epoch on stderr.

    Returns
    -------
    History

    Raises
    ------
    TrainingDiverged, CheckpointError, TrainingInterrupted
        As :func:`niflow.train.epochs.run_epochs`, which runs the epochs.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runtime = runtime or Runtime(next(model.parameters()).device)
    dtype = precision_dtype(cfg.precision)
    model.to(runtime.device, dtype)
    # the fused kernel updates all parameters in one pass: ~15% faster steps at small batch
    optim = torch.optim.Adam(model.parameter_groups(cfg.lr), lr=cfg.lr,
                             weight_decay=cfg.weight_decay, fused=True)
    task = RowTask(model, data, cfg, optim, runtime, Batches(data, runtime.device, dtype, model))
    return run_epochs(model, optim, task, epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr,
                      run_dir=run_dir, resume=resume, progress=progress, runtime=runtime)


class RowTask:
    """Training on rows of an image set (:class:`~niflow.train.epochs.EpochTask`): every
    epoch the training rows in the order of :func:`epoch_plan`, each process its share of
    every batch; validation is the median r on the validation rows (if there are two)."""

    def __init__(self, model: NIFModel, data: NIFData | StreamingData, cfg: TrainConfig,
                 optim: torch.optim.Optimizer, runtime: Runtime, source: Batches) -> None:
        self.model, self.data, self.cfg, self.optim = model, data, cfg, optim
        self.runtime, self.source = runtime, source
        self.train_rows = np.asarray(data.split.train)
        # batch norm cannot normalise a single sample
        self.min_batch = 2 if any(isinstance(m, torch.nn.BatchNorm2d)
                                  for m in model.modules()) else 1
        self.step: _Step | None = None

    def train_epoch(self, epoch: int) -> float:
        rt, cfg = self.runtime, self.cfg
        if self.step is None:  # after a resumed run has loaded its weights
            self.step = _Step(_training_network(self.model, rt), self.model, self.optim,
                              _area_weights(self.data, cfg.area_weighting), rt, cfg.precision)
        plan = epoch_plan(self.train_rows, cfg.batch_size, cfg.seed, epoch, self.min_batch)
        local = [shard(b, rt.rank, rt.world_size) for b in plan]
        total = torch.zeros((), dtype=torch.float64, device=rt.device)
        for (x, y), rows in zip(self.source.batches(local), plan, strict=True):
            total += self.step(x, y, rows.size) * rows.size
        total = all_reduce_sum(total, rt) / rt.world_size
        return float(total) / max(sum(b.size for b in plan), 1)

    def validate(self) -> tuple[float | None, dict]:
        if self.data.split.val.size < 2:
            return None, {}
        val, per_area = validation_score(self.model, self.data, self.data.split.val,
                                         self.runtime, source=self.source)
        return val, {"val_median_r": val, "val_median_r_per_area": per_area}

    def state(self) -> dict:
        return {}  # the batch order depends on (seed, epoch) alone

    def load_state(self, checkpoint: dict) -> None:
        pass


def _training_network(model: NIFModel, runtime: Runtime) -> torch.nn.Module:
    """The module the training steps call: the model, wrapped for DDP, maybe compiled."""
    net: torch.nn.Module = model
    if runtime.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # batch-norm statistics are already global (niflow.model.norm.BatchNorm2d), so the
        # running buffers agree on every process without syncing them at each forward
        net = DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
            forward_sync_buffers=False)
    return maybe_compile(net, runtime)


class _Step:
    """One optimiser step; falls back to the eager network if compilation fails."""

    def __init__(self, net, model, optim, weights, runtime: Runtime, precision: str) -> None:
        self.net, self.model, self.optim = net, model, optim
        self.weights, self.runtime = weights, runtime
        self.autocast = lambda: autocast(precision, runtime.device)
        self.checked = not runtime.compile

    def __call__(self, x: dict, y: dict[str, Tensor], n_global: int) -> Tensor:
        rt = self.runtime
        if not self.checked:
            try:
                with self.autocast():
                    out = self.net(**x)
            except Exception as err:  # noqa: BLE001 - inductor raises many kinds
                warn_compile_failed(err)
                self.net = _training_network(self.model, dataclasses.replace(rt, compile=False))
                with self.autocast():
                    out = self.net(**x)
            self.checked = True
        else:
            with self.autocast():
                out = self.net(**x)
        loss = batch_loss(out, y, self.weights, n_global, rt.world_size)
        loss = loss + self.model.regularizer()
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        return loss.detach().double()
