"""Training that fails safely: divergence, unreadable checkpoints, interruption, and progress
that suits where it is shown (a bar on a terminal, one short line per epoch elsewhere)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TextIO

from tqdm.auto import tqdm

# Responses are z-scored per voxel on the training rows, so predicting the mean gives a
# per-element MSE of about 1 and even a freshly initialised model stays within a few units.
# A loss above 1e3 means predictions off by ~30 standard deviations on average: the
# optimiser has left any sensible region and no later epoch will recover (measured: --lr 100
# goes from a loss of ~1 to NaN or 3e13 within an epoch or two). A relative rule (1e4 × the
# first epoch) would be looser, as the first epoch's loss is itself about 1.
DIVERGED_LOSS = 1e3


class TrainingError(RuntimeError):
    """Training cannot go on; the message is one line (the CLI prints it, exit 2)."""


class TrainingDiverged(TrainingError):
    """The training loss (or the validation score) became non-finite or exploded.

    Attributes: ``epoch`` (1-based), ``loss`` (that epoch's training loss), ``lr``.
    """

    def __init__(self, epoch: int, loss: float, lr: float, note: str = "",
                 scope: str = "") -> None:
        self.epoch, self.loss, self.lr, self._parts = epoch, loss, lr, (note, scope)
        super().__init__(f"training diverged at epoch {epoch} (loss {loss:.3g}){scope}; try "
                         f"a lower --lr (now {lr:g}){note}")

    def __reduce__(self):  # picklable (errors travel between processes, see agree)
        return type(self), (self.epoch, self.loss, self.lr, *self._parts)


class CheckpointError(TrainingError):
    """``checkpoint.pt`` cannot be read (truncated, overwritten, not a niflow checkpoint)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, with what was saved.

    ``epoch``: the epoch in progress (None outside the epoch loop); ``saved``: the epoch whose
    checkpoint is on disk (None: none); ``checkpoint``: its path (None: training in memory).
    """

    def __init__(self, epoch: int | None, saved: int | None, checkpoint: Path | None,
                 stage: str = "training") -> None:
        self.epoch, self.saved, self.checkpoint, self.stage = epoch, saved, checkpoint, stage
        super().__init__()

    def __reduce__(self):
        return type(self), (self.epoch, self.saved, self.checkpoint, self.stage)


def check_finite_training(epoch: int, loss: float, score: float | None, lr: float,
                          run_dir: Path | None) -> None:
    """Raise :class:`TrainingDiverged` if ``loss`` or the validation ``score`` of ``epoch``
    shows divergence (non-finite, or a loss above :data:`DIVERGED_LOSS`)."""
    if math.isfinite(loss) and loss <= DIVERGED_LOSS and (score is None or math.isfinite(score)):
        return
    note = ""
    if run_dir is not None:
        note = (f"; {run_dir} is left unfinished (checkpoint of epoch {epoch - 1})" if epoch > 1
                else f"; {run_dir} is left unfinished (no checkpoint)")
        note += ", start it again with --force"
    raise TrainingDiverged(epoch, loss, lr, note)


REQUIRED_KEYS = ("epoch", "model", "optimizer", "best_state", "bad_epochs", "history")


def unreadable(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: unreadable checkpoint ({reason}); delete it to start over")


class EpochProgress:
    """Progress of the epochs ``start..total``: a tqdm bar on a terminal, otherwise (a pipe,
    a log file) one line per epoch, ``epoch 3/25  train 0.812  val r 0.41  best 3  12.1 s``,
    so that a log holds no carriage returns."""

    def __init__(self, start: int, total: int, enabled: bool, stream: TextIO | None = None):
        self.total, self.stream = total, stream or sys.stderr
        self.enabled = enabled
        tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.bar = tqdm(total=total, initial=start - 1, desc="training", unit="epoch",
                        file=self.stream, dynamic_ncols=True, disable=not tty)
        self.lines = enabled and not tty

    def update(self, record: dict, best_epoch: int) -> None:
        val = record.get("val_median_r")
        if self.lines:
            r = "" if val is None else f"  val r {val:.2f}"
            print(f"epoch {record['epoch']}/{self.total}  train {record['train_loss']:.3f}{r}"
                  f"  best {best_epoch}  {record['seconds']:.1f} s", file=self.stream,
                  flush=True)
        else:
            self.bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                                 val_r=f"{float('nan') if val is None else val:.3f}")
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
