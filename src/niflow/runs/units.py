"""Checkpoints of model selection: each candidate and ensemble member trains in a folder of
its own under ``RUN/selection/<unit>/`` (``checkpoint.pt`` after every epoch, ``log.jsonl``),
and ``done.pt`` (its kept weights and history) once it has finished. A resumed run loads the
finished units, continues the interrupted one from its checkpoint and trains the rest, which
ends with the files an uninterrupted run writes. The folder is removed when the run is
finished. Image and movie runs select and checkpoint their models here alike
(:func:`train_units`).
"""

from __future__ import annotations

import dataclasses
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from niflow._atomic import atomic_write
from niflow.config import RunConfig
from niflow.train.epochs import CHECKPOINT, DONE, History
from niflow.train.runtime import Runtime, broadcast_object
from niflow.train.safety import TrainingDiverged, TrainingInterrupted
from niflow.train.select import Build, Member, Selection, UnitFit, member_data, select_and_train

__all__ = ["SELECTION_DIR", "TrainUnit", "finished_units", "remove_units", "train_units",
           "unit_fitter"]

SELECTION_DIR = "selection"


def finished_units(out: Path) -> list[str]:
    """Units of ``out`` whose training has finished (sorted)."""
    root = out / SELECTION_DIR
    return sorted(p.parent.name for p in root.glob(f"*/{DONE}")) if root.is_dir() else []


def remove_units(out: Path) -> None:
    shutil.rmtree(out / SELECTION_DIR, ignore_errors=True)


def _load_done(path: Path, model: torch.nn.Module) -> History:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return History.from_dict(state["history"])


def _save_done(path: Path, model: torch.nn.Module, hist: History) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "history": dataclasses.asdict(hist)}, buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


# train one model: (model, data, config, its folder or None, resume from that folder's
# checkpoint) -> History; an image model's niflow.train.loop.fit, a movie model's
# niflow.train.video.train_video
TrainUnit = Callable[[Any, Any, RunConfig, Path | None, bool], History]


def unit_fitter(out: Path, resume: bool, runtime: Runtime, train: TrainUnit) -> UnitFit:
    """``unit_fit`` for :func:`niflow.train.select.select_and_train` that checkpoints every
    unit in ``out/selection/<unit>/`` and, with ``resume``, reuses what is there."""

    def unit_fit(unit: str, model: Any, data: Any, cfg: RunConfig) -> History:
        folder = out / SELECTION_DIR / unit
        if resume and broadcast_object(runtime.is_main and (folder / DONE).exists(), runtime):
            return _load_done(folder / DONE, model)
        if runtime.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        again = resume and broadcast_object(
            runtime.is_main and (folder / CHECKPOINT).exists(), runtime)
        try:
            hist = train(model, data, cfg, folder, again)
        except TrainingInterrupted as err:
            raise TrainingInterrupted(err.epoch, err.saved, err.checkpoint,
                                      f"model selection ({unit})") from None
        if runtime.is_main:
            _save_done(folder / DONE, model, hist)
        return hist

    return unit_fit


def train_units(cfg: RunConfig, data: Any, build: Build, train: TrainUnit, out: Path | None,
                *, resume: bool, runtime: Runtime, member: Member = member_data,
                planned_members: int | None = None, say: Callable[[str], None] | None = None,
                ) -> tuple[RunConfig, list[Any], list[History], Selection]:
    """:func:`~niflow.train.select.select_and_train` for a run folder ``out``: every
    candidate and member trains in a unit folder of its own (in memory without ``out``),
    with the run folder's one-line errors.

    Raises
    ------
    TrainingDiverged
        Every candidate diverged; the message says that ``out`` is left unfinished.
    TrainingInterrupted
        Ctrl-C: what the unit's checkpoint holds, or that it came between two models.
    """
    try:
        return select_and_train(
            cfg, data, build, lambda m, d, c: train(m, d, c, None, False),
            unit_fit=unit_fitter(out, resume, runtime, train) if out is not None else None,
            member=member, planned_members=planned_members, say=say)
    except TrainingDiverged as err:
        where = (f"; {out} is left unfinished, start it again with --force"
                 if out is not None else "")
        scope = " in every candidate" if len(cfg.select.candidates) > 1 else ""
        raise TrainingDiverged(err.epoch, err.loss, err.lr, where, scope) from None
    except TrainingInterrupted as err:
        if out is not None:  # the units' checkpoints say what was saved
            raise
        raise TrainingInterrupted(err.epoch, None, None, "model selection") from None
    except KeyboardInterrupt:  # between two models (building one, saving one)
        raise TrainingInterrupted(
            None, None, None if out is None else out / SELECTION_DIR,
            "model selection" if out is None else "model selection (between models)",
        ) from None
