"""The one epoch loop that trains every niflow model, images and movies alike.

What a model trains on differs (batches of rows of an image set, segments of movie runs),
so that part is a :class:`EpochTask`: it trains one epoch and validates. Everything around
it is here, once: early stopping on the validation score (the best epoch's weights are
kept), divergence (:func:`~niflow.train.safety.check_finite_training`), a checkpoint after
every epoch (atomic, holding the whole history and the task's own state, such as its
random generator), resume, ``log.jsonl``, progress and Ctrl-C.

Interruption: after each epoch the checkpoint is written (atomically) before the log line,
and the checkpoint holds the whole history, so a run killed at any moment resumes from the
last checkpoint and rewrites ``log.jsonl`` from it: every epoch appears in the log exactly
once.
"""

from __future__ import annotations

import copy
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from niflow._atomic import atomic_write, atomic_write_text
from niflow.train.runtime import Runtime, broadcast_object
from niflow.train.safety import (
    REQUIRED_KEYS,
    EpochProgress,
    TrainingInterrupted,
    check_finite_training,
    unreadable,
)

__all__ = ["CHECKPOINT", "DONE", "LOG", "EpochTask", "History", "load_checkpoint",
           "run_epochs", "save_checkpoint", "write_log"]

CHECKPOINT = "checkpoint.pt"
DONE = "done.pt"  # a finished unit of model selection: its kept weights and history
LOG = "log.jsonl"


@dataclass
class History:
    """Per-epoch records and the epoch whose weights were kept.

    Each record has ``epoch``, ``train_loss``, the task's validation fields (for example
    ``val_median_r``) and ``seconds``; ``best_score`` is the kept epoch's validation score
    (the negative training loss where there is no validation).
    """

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    stopped_early: bool = False

    @classmethod
    def from_dict(cls, state: dict) -> History:
        state = dict(state)
        if "best_val_r" in state:  # a movie checkpoint of niflow before the shared loop
            state["best_score"] = state.pop("best_val_r")
            for e in state["epochs"]:
                if "val_r" in e:
                    e["val_median_r"] = e.pop("val_r")
        return cls(**state)


class EpochTask(Protocol):
    """What one kind of model trains on; :func:`run_epochs` calls it."""

    def train_epoch(self, epoch: int) -> float:
        """Take the optimiser steps of ``epoch`` (1-based); return its mean training loss,
        the same on every process."""

    def validate(self) -> tuple[float | None, dict]:
        """The validation score (None: nothing to validate on) and the fields it adds to
        the epoch's record."""

    def state(self) -> dict:
        """What the checkpoint must hold besides weights and optimiser to resume exactly
        (its keys go into the checkpoint)."""

    def load_state(self, checkpoint: dict) -> None:
        """Restore :meth:`state` from a checkpoint."""


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


def run_epochs(model: torch.nn.Module, optim: torch.optim.Optimizer, task: EpochTask, *,
               epochs: int, patience: int, lr: float, run_dir: Path | None = None,
               resume: bool = False, progress: bool = True,
               runtime: Runtime | None = None) -> History:
    """Train ``model`` through ``task`` for up to ``epochs`` epochs; keep the best epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place; ends with the weights of the best validation epoch.
    optim : torch.optim.Optimizer
        Over ``model``'s parameters (checkpointed with it).
    task : EpochTask
    epochs, patience : int
        At most ``epochs`` epochs; stop once ``patience`` epochs in a row have not improved
        the validation score.
    lr : float
        Only for the message of a diverged run.
    run_dir : Path, optional
        If given, a checkpoint is written atomically after every epoch and each epoch's
        record is appended to ``log.jsonl`` (by rank 0 only).
    resume : bool
        Continue from ``run_dir/checkpoint.pt``: the epochs that follow are those an
        uninterrupted run would have trained.
    progress : bool
        Show progress (rank 0): a bar on a terminal, else one line per epoch on stderr.
    runtime : Runtime, optional
        The processes of a data-parallel run; rank 0 writes, every process gets the
        checkpoint on resume.

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
    runtime = runtime or Runtime(next(model.parameters()).device)
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
        task.load_state(ck)
        best_state, bad_epochs = ck["best_state"], ck["bad_epochs"]
        hist = History.from_dict(ck["history"])
        hist.stopped_early = hist.stopped_early or bad_epochs >= patience
        start_epoch = ck["epoch"] + 1
        if runtime.is_main:
            # a kill between checkpoint and log (or an older run that logged first) leaves
            # the log one epoch off; the checkpoint's history is the truth
            write_log(run_dir, hist.epochs)
    elif runtime.is_main and run_dir is not None and (run_dir / LOG).exists():
        (run_dir / LOG).unlink()

    bar = EpochProgress(start_epoch, epochs, progress and runtime.is_main)
    # the epoch in progress and the last one checkpointed: every completed epoch is
    # checkpointed at once (atomically), so Ctrl-C leaves the last completed epoch on disk
    # unless it lands inside that write, which then leaves the one before
    at = {"epoch": None, "saved": start_epoch - 1}
    try:
        for epoch in range(start_epoch, epochs + 1):
            if hist.stopped_early:
                break
            at["epoch"] = epoch
            best_state, bad_epochs = _epoch(epoch, model, task, lr, run_dir, hist,
                                            best_state, bad_epochs)
            hist.stopped_early = bad_epochs >= patience
            if run_dir is not None and runtime.is_main:
                save_checkpoint(run_dir / CHECKPOINT, {
                    "epoch": epoch, "model": model.state_dict(),
                    "optimizer": optim.state_dict(), "best_state": best_state,
                    "bad_epochs": bad_epochs, "history": hist.__dict__, **task.state()})
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


def _epoch(epoch: int, model: torch.nn.Module, task: EpochTask, lr: float,
           run_dir: Path | None, hist: History, best_state: dict, bad_epochs: int,
           ) -> tuple[dict, int]:
    """Train and score one epoch; append its record to ``hist`` (in place). Returns the best
    weights so far and the epochs since they improved; raises
    :class:`~niflow.train.safety.TrainingDiverged` before anything of a diverged epoch is
    kept."""
    t0 = time.perf_counter()
    model.train()
    record = {"epoch": epoch, "train_loss": task.train_epoch(epoch)}
    val, fields = task.validate()
    record.update(fields)
    # every process sees the same reduced loss, so all of them stop together
    check_finite_training(epoch, record["train_loss"], val, lr, run_dir)
    score = val if val is not None else -record["train_loss"]
    if score > hist.best_score:
        hist.best_score, hist.best_epoch, bad_epochs = score, epoch, 0
        best_state = copy.deepcopy(model.state_dict())
    else:
        bad_epochs += 1
    record["seconds"] = time.perf_counter() - t0
    hist.epochs.append(record)
    return best_state, bad_epochs


def _append_log(path: Path, record: dict) -> None:
    # rewrite the whole (small) log atomically so a kill never leaves half a line
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + json.dumps(record) + "\n")


def write_log(run_dir: Path, records: list[dict]) -> None:
    """Write ``log.jsonl`` of ``run_dir`` from a history's epoch records, atomically."""
    atomic_write_text(Path(run_dir) / LOG, "".join(json.dumps(r) + "\n" for r in records))
