"""Automatic model selection and ensembling on the training rows only.

``config.select`` names candidates from :data:`niflow.config.FAMILY` (a core and a readout
each). Every candidate is trained on the training rows and scored on the validation rows
(the median r over all voxels, as early stopping uses); the best is kept. Then
``members - 1`` more models of the chosen kind (more with few rows: :func:`ensemble_size`)
are trained, each with a validation part of its own (seed ``train.seed + i``, so between
them every training row is also fitted) and its own initial weights; the run predicts their
average. The test rows are never seen.

Training stops adding candidates or members once ``budget_s`` seconds have been spent; the
first candidate and member are always trained. What was trained, skipped and scored is
returned as a :class:`Selection` (written to the run folder as ``selection.json``).

A candidate or member whose training diverges (:class:`~niflow.train.safety.TrainingDiverged`)
is left out with a note in ``skipped``; if every candidate diverges, the last one's error is
raised.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from niflow.config import RunConfig, candidate
from niflow.data.dataset import NIFData, make_split
from niflow.model.nif import NIFModel
from niflow.train.loop import History
from niflow.train.safety import TrainingDiverged

# the data and model of either kind: NIFData and NIFModel for images, a movie's
# niflow.train.video.MovieData and VideoNIF for movies
Build = Callable[[RunConfig, Any], Any]
Fit = Callable[[Any, Any, RunConfig], History]
# fit one named unit (``"candidate-NAME"``, ``"member-I"``): lets the caller checkpoint each
UnitFit = Callable[[str, Any, Any, RunConfig], History]
Member = Callable[[Any, RunConfig, int], Any]


@dataclass
class Selection:
    """What automatic selection tried and chose.

    ``scores``: per candidate, the validation median r (all voxels and per area), the best
    epoch and the training seconds; ``chosen``: the kept candidate (None: the configuration
    as given); ``members``: per ensemble member, its seed, validation rows and score;
    ``planned_members``: the ensemble's size for these rows (:func:`ensemble_size`);
    ``skipped``: candidates or members left out by the budget or because their training
    diverged (``"candidate NAME: diverged at epoch N (loss X)"``); ``refit_alpha``: per area,
    each member's median penalty of the readout refit after training (relative to the mean
    eigenvalue; empty without a refit) and ``refit_seconds`` it took. Validation scores are
    those before the refit.
    """

    chosen: str | None = None
    scores: dict[str, dict] = field(default_factory=dict)
    members: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    budget_s: float = 0.0
    refit_alpha: dict[str, list[float]] = field(default_factory=dict)
    refit_seconds: float = 0.0
    planned_members: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def is_active(cfg: RunConfig) -> bool:
    """Whether ``cfg`` asks for selection or an ensemble."""
    return bool(cfg.select.candidates) or cfg.select.members > 1


def _record(hist: History, seconds: float) -> dict:
    last = next((e for e in hist.epochs if e["epoch"] == hist.best_epoch), {})
    return {"val_median_r": float(hist.best_score) if np.isfinite(hist.best_score) else None,
            "val_median_r_per_area": last.get("val_median_r_per_area"),
            "best_epoch": hist.best_epoch, "epochs_run": len(hist.epochs),
            "seconds": round(seconds, 3)}


def _diverged(what: str, err: TrainingDiverged) -> str:
    return f"{what}: diverged at epoch {err.epoch} (loss {err.loss:.3g})"


def ensemble_size(cfg: RunConfig, rows: int) -> int:
    """Members to train for ``rows`` training and validation rows (``SelectConfig``); a
    single model (``members == 1``) stays single."""
    sel = cfg.select
    if sel.members < 2 or sel.member_rows <= 0 or rows <= 0:
        return sel.members
    return max(sel.members, min(sel.max_members, math.ceil(sel.member_rows / rows)))


def member_data(data: NIFData, cfg: RunConfig, index: int) -> NIFData:
    """``data`` with member ``index``'s validation part drawn from all training rows."""
    if index == 0:
        return data
    rows = np.concatenate([data.split.train, data.split.val])
    split = make_split(data.stim.shape[0], data.split.test, cfg.train.val_fraction,
                       cfg.train.seed + index, train_rows=rows)
    return dataclasses.replace(data, split=split)


def member_config(cfg: RunConfig, index: int) -> RunConfig:
    """The configuration of ensemble member ``index``: its own seed."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                              seed=cfg.train.seed + index))


def select_and_train(cfg: RunConfig, data: Any, build: Build, fit: Fit, *,
                     unit_fit: UnitFit | None = None, member: Member = member_data,
                     planned_members: int | None = None,
                     say: Callable[[str], None] | None = None,
                     ) -> tuple[RunConfig, list[Any], list[History], Selection]:
    """Choose a candidate on the validation rows and train the ensemble of its kind.

    Images and movies are selected here alike; what differs is passed in (the data, how a
    model is built and trained, how a member draws its validation part).

    Parameters
    ----------
    cfg : RunConfig
        With ``select`` settings; candidates replace its areas and readout.
    data : NIFData or MovieData
        Anything with ``split`` (a :class:`~niflow.data.dataset.Split`): training,
        validation and test rows (movie volumes); only the first two are used.
    build : callable
        ``build(config, data)`` → the seeded, initialised model for ``data.split.train``.
    fit : callable
        ``fit(model, data, config)`` → :class:`~niflow.train.loop.History` (trains in place).
    unit_fit : callable, optional
        ``unit_fit(unit, model, data, config)``, used instead of ``fit`` when given: the
        caller's way to checkpoint each candidate and member under its own name
        (``"candidate-NAME"``, ``"candidate-config"``, ``"member-I"``) and to skip those a
        resumed run has already trained.
    member : callable
        ``member(data, chosen_config, i)`` → member ``i``'s data (its own validation part);
        default :func:`member_data` (rows of an image set).
    planned_members : int, optional
        The ensemble's size; default :func:`ensemble_size` of the training and validation
        rows (more members with few images).
    say : callable, optional
        Told ``"candidate NAME"`` and ``"ensemble member I of N"`` as each starts training.

    Returns
    -------
    chosen : RunConfig
        The kept candidate's configuration (selection switched off).
    models : list of NIFModel
        The ensemble; ``models[0]`` is the one trained on ``data``'s own split.
    histories : list of History
    selection : Selection
    """
    sel = cfg.select
    start = time.perf_counter()

    def train(unit: str, model: NIFModel, d: NIFData, c: RunConfig) -> History:
        return unit_fit(unit, model, d, c) if unit_fit is not None else fit(model, d, c)

    record = Selection(budget_s=float(sel.budget_s))

    def over_budget() -> bool:
        return sel.budget_s > 0 and time.perf_counter() - start > sel.budget_s

    best: tuple[float, str | None, RunConfig, NIFModel, History, float] | None = None
    diverged: TrainingDiverged | None = None
    for name in sel.candidates or [None]:
        if best is not None and over_budget():
            record.skipped.append(f"candidate {name}")
            continue
        ccfg = candidate(cfg, name) if name is not None else dataclasses.replace(
            cfg, select=type(cfg.select)())
        if say is not None and name is not None:
            say(f"candidate {name}")
        t0 = time.perf_counter()
        model = build(ccfg, data)
        try:
            hist = train(f"candidate-{name or 'config'}", model, data, ccfg)
        except TrainingDiverged as err:
            diverged = err
            record.skipped.append(_diverged(f"candidate {name or 'as configured'}", err))
            continue
        seconds = time.perf_counter() - t0
        if name is not None:
            record.scores[name] = _record(hist, seconds)
        score = hist.best_score if np.isfinite(hist.best_score) else -np.inf
        if best is None or score > best[0]:
            best = (score, name, ccfg, model, hist, seconds)
    if best is None:
        raise diverged
    _, record.chosen, chosen, first, first_hist, first_seconds = best
    models, hists = [first], [first_hist]
    record.members.append({"seed": chosen.train.seed, "val_rows": int(data.split.val.size),
                           **_record(first_hist, first_seconds)})
    record.planned_members = (ensemble_size(cfg, int(data.split.train.size + data.split.val.size))
                              if planned_members is None else planned_members)
    for i in range(1, record.planned_members):
        if over_budget():
            record.skipped.append(f"member {i}")
            continue
        if say is not None:
            say(f"ensemble member {i + 1} of {record.planned_members}")
        t0 = time.perf_counter()
        mcfg, mdata = member_config(chosen, i), member(data, chosen, i)
        model = build(mcfg, mdata)
        try:
            hist = train(f"member-{i}", model, mdata, mcfg)
        except TrainingDiverged as err:
            record.skipped.append(_diverged(f"member {i}", err))
            continue
        models.append(model)
        hists.append(hist)
        record.members.append({"seed": mcfg.train.seed, "val_rows": int(mdata.split.val.size),
                               **_record(hist, time.perf_counter() - t0)})
    record.seconds = round(time.perf_counter() - start, 3)
    return chosen, models, hists, record
