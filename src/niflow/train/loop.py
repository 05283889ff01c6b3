"""Training loop: Adam, early stopping on validation correlation, atomic checkpoints, resume.

Determinism: the model is initialised from ``seed`` and every epoch's batch order comes from
its own generator seeded with ``(seed, epoch)``, so a run resumed from the checkpoint of epoch
``e`` replays exactly the batches an uninterrupted run would have seen.

Interruption: after each epoch the checkpoint is written (atomically) before the log line, and
the checkpoint holds the whole history, so a run killed at any moment resumes from the last
checkpoint and rewrites ``log.jsonl`` from it: every epoch appears in the log exactly once.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from niflow._atomic import atomic_write, atomic_write_text
from niflow.config import TrainConfig
from niflow.data.dataset import NIFData
from niflow.data.stream import StreamingData
from niflow.model.nif import NIFModel
from niflow.train.runtime import (
    Runtime,
    all_reduce_sum,
    autocast,
    broadcast_object,
    maybe_compile,
    precision_dtype,
    shard,
    warn_compile_failed,
)
from niflow.train.safety import (
    REQUIRED_KEYS,
    EpochProgress,
    TrainingInterrupted,
    check_finite_training,
    unreadable,
)

CHECKPOINT = "checkpoint.pt"
DONE = "done.pt"  # a finished unit of model selection: its kept weights and history
BANK_CACHE_BYTES = 1 << 30  # fixed filter-bank outputs kept for all training rows, at most
LOG = "log.jsonl"


@dataclass
class History:
    """Per-epoch records and the epoch whose weights were kept."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    stopped_early: bool = False


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


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a training state (or a finished unit's weights) to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def load_checkpoint(run_dir: Path) -> dict:
    """The checkpoint of ``run_dir``; a :class:`~niflow.train.safety.CheckpointError` (one
    line) if it is truncated, corrupt or not a niflow training checkpoint."""
    path = Path(run_dir) / CHECKPOINT
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - zip, pickle and EOF errors, all one answer
        raise unreadable(path, " ".join(str(err).split())[:160] or type(err).__name__) from None
    if not isinstance(state, dict):
        raise unreadable(path, f"holds a {type(state).__name__}, not a training state")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise unreadable(path, f"no {', '.join(missing)}")
    return state


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
    TrainingDiverged
        A non-finite or exploding loss (or non-finite validation score); nothing of that
        epoch is kept, earlier checkpoints stay.
    CheckpointError
        ``resume`` with an unreadable ``checkpoint.pt``.
    TrainingInterrupted
        Ctrl-C (a ``KeyboardInterrupt``), saying which epoch is checkpointed.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runtime = runtime or Runtime(next(model.parameters()).device)
    dtype = precision_dtype(cfg.precision)
    model.to(runtime.device, dtype)
    source = Batches(data, runtime.device, dtype, model)
    weights = _area_weights(data, cfg.area_weighting)
    train_rows = np.asarray(data.split.train)
    # batch norm cannot normalise a single sample
    min_batch = 2 if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) else 1
    # the fused kernel updates all parameters in one pass: ~15% faster steps at small batch
    optim = torch.optim.Adam(model.parameter_groups(cfg.lr), lr=cfg.lr,
                             weight_decay=cfg.weight_decay, fused=True)
    hist = History()
    best_state = copy.deepcopy(model.state_dict())
    bad_epochs, start_epoch = 0, 1
    if resume:
        ck = None
        if runtime.is_main:
            if run_dir is None or not (run_dir / CHECKPOINT).exists():
                raise FileNotFoundError(f"{run_dir}: no {CHECKPOINT} to resume from")
            ck = load_checkpoint(run_dir)
        ck = broadcast_object(ck, runtime)
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        best_state, bad_epochs = ck["best_state"], ck["bad_epochs"]
        hist = History(**ck["history"])
        start_epoch = ck["epoch"] + 1
        if runtime.is_main:
            # a kill between checkpoint and log (or an older run that logged first) leaves
            # the log one epoch off; the checkpoint's history is the truth
            _write_log(run_dir / LOG, hist.epochs)
    elif runtime.is_main and run_dir is not None and (run_dir / LOG).exists():
        (run_dir / LOG).unlink()
    net = _training_network(model, runtime)
    step = _Step(net, model, optim, weights, runtime, cfg.precision)

    bar = EpochProgress(start_epoch, cfg.epochs, progress and runtime.is_main)
    # the epoch in progress and the last one checkpointed: every completed epoch is
    # checkpointed at once (atomically), so Ctrl-C leaves the last completed epoch on disk
    # unless it lands inside that write, which then leaves the one before
    at = {"epoch": None, "saved": start_epoch - 1}
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            if hist.stopped_early:
                break
            at["epoch"] = epoch
            best_state, bad_epochs = _epoch(epoch, model, step, source, data, cfg, runtime,
                                            train_rows, min_batch, hist, best_state,
                                            bad_epochs, run_dir)
            if run_dir is not None and runtime.is_main:
                save_checkpoint(run_dir / CHECKPOINT, {
                    "epoch": epoch, "model": model.state_dict(),
                    "optimizer": optim.state_dict(), "best_state": best_state,
                    "bad_epochs": bad_epochs, "history": hist.__dict__})
                at["saved"] = epoch
                _append_log(run_dir / LOG, hist.epochs[-1])
            bar.update(hist.epochs[-1], hist.best_epoch)  # after the checkpoint is on disk
    except KeyboardInterrupt:
        path = run_dir / CHECKPOINT if run_dir is not None else None
        raise TrainingInterrupted(at["epoch"], (at["saved"] or None) if path else None,
                                  path) from None
    finally:
        bar.close()
    model.load_state_dict(best_state)
    return hist


def _epoch(epoch: int, model: NIFModel, step: _Step, source: Batches,
           data: NIFData | StreamingData, cfg: TrainConfig, runtime: Runtime,
           train_rows: np.ndarray, min_batch: int, hist: History, best_state: dict,
           bad_epochs: int, run_dir: Path | None) -> tuple[dict, int]:
    """Train one epoch and score it; append its record to ``hist`` (updated in place).

    Returns the best weights so far and the epochs since they improved. Raises
    :class:`~niflow.train.safety.TrainingDiverged` before anything of a diverged epoch is
    kept.
    """
    t0 = time.perf_counter()
    model.train()
    plan = epoch_plan(train_rows, cfg.batch_size, cfg.seed, epoch, min_batch)
    local = [shard(b, runtime.rank, runtime.world_size) for b in plan]
    total = torch.zeros((), dtype=torch.float64, device=runtime.device)
    for (x, y), rows in zip(source.batches(local), plan, strict=True):
        total += step(x, y, rows.size) * rows.size
    total = all_reduce_sum(total, runtime) / runtime.world_size
    count = sum(b.size for b in plan)
    record = {"epoch": epoch, "train_loss": float(total) / max(count, 1)}
    val = None
    if data.split.val.size >= 2:
        val, per_area = validation_score(model, data, data.split.val, runtime, source=source)
        record.update(val_median_r=val, val_median_r_per_area=per_area)
    # every process sees the same reduced loss, so all of them stop together
    check_finite_training(epoch, record["train_loss"], val, cfg.lr, run_dir)
    score = val if val is not None else -record["train_loss"]
    if score > hist.best_score:
        hist.best_score, hist.best_epoch, bad_epochs = score, epoch, 0
        best_state = copy.deepcopy(model.state_dict())
    else:
        bad_epochs += 1
    record["seconds"] = time.perf_counter() - t0
    hist.epochs.append(record)
    if bad_epochs >= cfg.patience:
        hist.stopped_early = True
    return best_state, bad_epochs


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


def _append_log(path: Path, record: dict) -> None:
    # rewrite the whole (small) log atomically so a kill never leaves half a line
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + json.dumps(record) + "\n")


def _write_log(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def write_log(run_dir: Path, records: list[dict]) -> None:
    """Write ``log.jsonl`` of ``run_dir`` from a history's epoch records, atomically."""
    _write_log(Path(run_dir) / LOG, records)
