"""Checkpoints of model selection: each candidate and ensemble member trains in a folder of
its own under ``RUN/selection/<unit>/`` (``checkpoint.pt`` after every epoch, ``log.jsonl``),
and ``done.pt`` (its kept weights and history) once it has finished. A resumed run loads the
finished units, continues the interrupted one from its checkpoint and trains the rest, which
ends with the files an uninterrupted run writes. The folder is removed when the run is
finished.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
from pathlib import Path

import torch

from niflow._atomic import atomic_write
from niflow.config import RunConfig
from niflow.data.dataset import NIFData
from niflow.model.nif import NIFModel
from niflow.train.loop import CHECKPOINT, DONE, History, fit
from niflow.train.runtime import Runtime, broadcast_object
from niflow.train.safety import TrainingInterrupted
from niflow.train.select import UnitFit

__all__ = ["SELECTION_DIR", "finished_units", "remove_units", "unit_fitter"]

SELECTION_DIR = "selection"


def finished_units(out: Path) -> list[str]:
    """Units of ``out`` whose training has finished (sorted)."""
    root = out / SELECTION_DIR
    return sorted(p.parent.name for p in root.glob(f"*/{DONE}")) if root.is_dir() else []


def remove_units(out: Path) -> None:
    shutil.rmtree(out / SELECTION_DIR, ignore_errors=True)


def _load_done(path: Path, model: NIFModel) -> History:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return History(**state["history"])


def _save_done(path: Path, model: NIFModel, hist: History) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "history": dataclasses.asdict(hist)}, buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def unit_fitter(out: Path, resume: bool, progress: bool, runtime: Runtime) -> UnitFit:
    """``unit_fit`` for :func:`niflow.train.select.select_and_train` that checkpoints every
    unit in ``out/selection/<unit>/`` and, with ``resume``, reuses what is there."""

    def unit_fit(unit: str, model: NIFModel, data: NIFData, cfg: RunConfig) -> History:
        folder = out / SELECTION_DIR / unit
        if resume and broadcast_object(runtime.is_main and (folder / DONE).exists(), runtime):
            return _load_done(folder / DONE, model)
        if runtime.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        again = resume and broadcast_object(
            runtime.is_main and (folder / CHECKPOINT).exists(), runtime)
        try:
            hist = fit(model, data, cfg.train, folder, resume=again, progress=progress,
                       runtime=runtime)
        except TrainingInterrupted as err:
            raise TrainingInterrupted(err.epoch, err.saved, err.checkpoint,
                                      f"model selection ({unit})") from None
        if runtime.is_main:
            _save_done(folder / DONE, model, hist)
        return hist

    return unit_fit
