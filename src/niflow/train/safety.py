"""Training that fails safely: divergence, unreadable checkpoints, interruption, and progress
that suits where it is shown (a bar on a terminal, one short line per epoch elsewhere)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TextIO

from tqdm.auto import tqdm

# Responses are z-scored per voxel on the training rows, so predicting the mean gives a
# per-element MSE of about 1. Measured (default preset, one model, first-epoch loss): 0.87 on
# the demo's 360 simulated images; 10.9 on 48 images (few steps) at the default lr 0.006,
# 779 at lr 0.1 (then ~10, validation r still non-zero); 1.6e3 at lr 1 and 8e3 at lr 0.3,
# after which every prediction is constant (validation r exactly 0, the issue's "median r
# 0.000 everywhere"); NaN within 1-3 epochs from lr 3 up. 1e3 is ~100x above the sane
# losses and below those of the collapsed runs. A relative rule (1e4 x the first epoch)
# would miss a first epoch that explodes, the usual case at a far too large lr.
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
    """Progress of the epochs ``start..total``: a tqdm bar on a terminal (or in a notebook),
    otherwise (a pipe, a log file) one line per epoch, so that a log holds no carriage
    returns: ``epoch 3/25  train 0.812  val r 0.41  best 3  12.1 s``."""

    def __init__(self, start: int, total: int, enabled: bool, stream: TextIO | None = None):
        self.total, self.stream = total, stream or sys.stderr
        self.enabled = enabled
        # a Jupyter kernel's stderr is no terminal but shows tqdm.auto's widget
        tty = enabled and (getattr(self.stream, "isatty", lambda: False)()
                           or ("ipykernel" in sys.modules and self.stream is sys.stderr))
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
