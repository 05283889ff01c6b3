"""K-fold cross-validation, for data sets too small for one held-out split (e.g. 100 images).

Every row is predicted once, by a model that never saw it: the rows are partitioned into
``k`` folds (whole groups — stimulus classes or identities — stay in one fold when given)
and for each fold :func:`niflow.runs.pipeline.train_run` trains on the other rows (carving its own
validation part from them for early stopping) and predicts the fold. Voxelwise ridge
baselines (:mod:`niflow.evaluate.baselines`) are fitted and scored on the same folds.

Scoring: fold-centred pooled r
------------------------------
Stitching the k models' out-of-fold predictions together and taking Pearson r over all rows
is biased downwards. Each fold's model predicts around the mean of its training rows, and
that mean is anti-correlated with the held-out fold's mean (together they make the fixed
grand mean), so the predictions' fold-to-fold offsets correlate *negatively* with the
responses' fold-to-fold offsets. A voxel no model can predict then gets a pooled r near
``-sqrt((k - 1) / (n - 1))`` (−0.30 for 100 rows in 10 folds; the order of ``-1/sqrt(k)``)
when its predictions are little more than the training mean, instead of 0. Here predictions
**and** responses are centred within each test fold (each fold's own mean subtracted from
both) before Pearson r over all rows: the between-fold offsets, which carry no prediction,
drop out, and a pure-noise voxel scores 0 on average. The mean over folds of each fold's own
Pearson r is reported alongside (noisier: each fold has n / k rows).

A folder (``out``) holds::

    cv.json             k, seed, groups, fold of every row, per-area summaries (niflow and
                        each baseline side by side), per-fold training records, config
    cv_voxels.csv       area, voxel, r_cv, r_<baseline>_cv..., prf_x, prf_y, prf_sigma,
                        mean_fold_r, n_folds_fitted
    cv_predictions.npz  out-of-fold predictions per area (response units), folds,
                        <baseline>_<area> predictions and voxels_<area> (input columns)
    config.json         the configuration every fold was trained with
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from niflow import config as cfgmod
from niflow._atomic import atomic_write_text, umask
from niflow._version import __version__
from niflow.config import RunConfig
from niflow.data.dataset import DroppedVoxelsWarning, scale_stimuli
from niflow.data.errors import DataError
from niflow.data.io import save_npz
from niflow.evaluate.folds import fold_centred_r, group_codes, make_folds, per_fold_r
from niflow.evaluate.statistics import summarize, write_table
from niflow.runs.folder import check_location
from niflow.runs.run import RunError

PRF_KEYS = ("prf_x", "prf_y", "prf_sigma")
R_METHOD = ("Pearson r over all rows of the out-of-fold predictions, predictions and "
            "responses centred within each test fold")


@dataclass
class CVResult:
    """What :func:`cross_validate` measured. ``V``: the area's cross-validated voxels.

    Attributes
    ----------
    folds : ndarray of shape (n_samples,), int
        Fold (0 .. k-1) of each row.
    predictions : dict of str to ndarray of shape (n_samples, V), float32
        Out-of-fold predictions in response units; NaN in the folds where the voxel was not
        fitted (constant on that fold's training rows).
    r : dict of str to ndarray of shape (V,)
        Fold-centred pooled r (module docstring); NaN for voxels not fitted in every fold.
    fold_r : dict of str to ndarray of shape (k, V)
        Each fold's own Pearson r.
    baseline_r, baseline_predictions : dict of str to dict of str to ndarray
        Per baseline kind (``"pixels"``, ``"gabor"``) and area, as ``r`` and ``predictions``.
    prf : dict of str to dict of str to ndarray of shape (V,)
        ``prf_x``, ``prf_y``, ``prf_sigma``: median over the folds' models (pixels); movie
        cross-validation (:mod:`niflow.runs.movie_crossval`) adds ``hrf_peak_s`` and
        ``hrf_fwhm_s``.
    voxel : dict of str to ndarray of shape (V,), int
        Input column of each voxel (those fitted in at least one fold).
    incomplete : dict of str to ndarray of int
        Input columns of the voxels left out of at least one fold (their r is NaN).
    summaries : dict of str to dict
        :func:`niflow.evaluate.statistics.summarize` of ``r`` per area, plus ``mean_fold_r``.
    baseline_summaries : dict of str to dict of str to dict
        The same per baseline kind and area.
    fold_info : list of dict
        Per fold: rows held out, epochs run, best epoch.
    seconds : float
        Wall-clock time of the whole cross-validation.
    """

    k: int
    seed: int
    folds: np.ndarray
    predictions: dict[str, np.ndarray]
    r: dict[str, np.ndarray]
    fold_r: dict[str, np.ndarray]
    baseline_r: dict[str, dict[str, np.ndarray]]
    baseline_predictions: dict[str, dict[str, np.ndarray]]
    prf: dict[str, dict[str, np.ndarray]]
    voxel: dict[str, np.ndarray]
    incomplete: dict[str, np.ndarray]
    summaries: dict[str, dict]
    baseline_summaries: dict[str, dict[str, dict]]
    fold_info: list[dict] = field(default_factory=list)
    n_groups: int | None = None
    seconds: float = 0.0

    @property
    def areas(self) -> list[str]:
        return list(self.r)


# --------------------------------------------------------------------------- folds


# --------------------------------------------------------------------------- scores


def _summaries(r: np.ndarray, fold_r: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # voxels NaN in every fold
        mean_fold = np.nanmean(fold_r, axis=0)
    finite = mean_fold[np.isfinite(mean_fold)]
    return {**summarize(r),
            "median_mean_fold_r": float(np.median(finite)) if finite.size else None}


# --------------------------------------------------------------------------- the procedure


def cross_validate(stim: np.ndarray, responses: dict[str, np.ndarray], cfg: RunConfig,
                   k: int = 10, groups: Sequence | np.ndarray | None = None, seed: int = 0,
                   out: str | Path | None = None,
                   baselines: Sequence[str] = ("pixels", "gabor"), progress: bool = False,
                   force: bool = False, *, inputs: dict[str, str] | None = None,
                   config_source: str = "config") -> CVResult:
    """Cross-validate the NIF model (and ridge baselines) over ``k`` folds of the rows.

    Every input is checked first (as for :func:`niflow.runs.pipeline.train_run`), the folds are made
    (:func:`make_folds`) and ``out`` is checked, all before any training.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, height, width) or colour (n_samples, height, width, 3)
        or (n_samples, 3, height, width) (:mod:`niflow.data.layout`)
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
        Keys must be area names of ``cfg``.
    cfg : RunConfig
        Every fold is trained with (a copy of) it.
    k : int
    groups : array_like of shape (n_samples,), optional
        Labels whose rows must stay in one fold (stimulus classes, identities).
    seed : int
        Seed of the fold assignment (training uses ``cfg.train.seed``).
    out : path, optional
        Folder to write (module docstring); refused if it exists and is not empty, unless
        ``force``. It appears complete or not at all.
    baselines : sequence of str
        Ridge feature sets (:data:`niflow.evaluate.baselines.FEATURE_SETS`); empty for none.
    progress : bool
        One line per fold on stderr.
    inputs : dict, optional
        ``{"stim": path, "bold": path, "groups": source}``: named in messages and in
        ``cv.json``.
    config_source : str
        Where ``cfg`` came from, for messages.

    Returns
    -------
    CVResult

    Raises
    ------
    DataError, ConfigError, RunError
        One-line messages, before anything is trained or written.
    """
    from niflow.evaluate.baselines import FEATURE_SETS
    from niflow.runs.inputs import AddedAreasWarning, PooledStimulusWarning, check_arrays

    started = time.time()
    kinds = list(dict.fromkeys([baselines] if isinstance(baselines, str) else baselines))
    unknown = [b for b in kinds if b not in FEATURE_SETS]
    if unknown:
        raise DataError(f"unknown baseline(s) {unknown}; choose from {list(FEATURE_SETS)}")
    sources = dict(inputs or {})
    with warnings.catch_warnings():
        for once in (DroppedVoxelsWarning, AddedAreasWarning, PooledStimulusWarning):
            warnings.simplefilter("ignore", once)  # re-issued once below, not per fold
        checked = check_arrays(stim, responses, cfg, np.zeros(0, np.int64),
                               sources={a: sources[a] for a in ("stim", "bold")
                                        if a in sources}, config_source=config_source)
    cfg = checked.config  # with the response areas it lacked
    folds = make_folds(checked.n_samples, k, groups, seed)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_out(out_path, force)
    if checked.areas_note:
        warnings.warn(checked.areas_note, AddedAreasWarning, stacklevel=2)
    if checked.pooled_note:
        warnings.warn(checked.pooled_note, PooledStimulusWarning, stacklevel=2)
    for note in checked.warnings:  # NaN/Inf or constant in every row: never fitted
        warnings.warn(note, DroppedVoxelsWarning, stacklevel=2)

    fits = [_fit_fold(checked.stim, checked.responses, cfg, folds, f, k, progress)
            for f in range(k)]
    result = _assemble(checked.responses, folds, fits, k, seed, started)
    if groups is not None:
        result.n_groups = int(group_codes(groups, checked.n_samples).max()) + 1
    for area, cols in result.incomplete.items():
        if cols.size:
            shown = ", ".join(map(str, cols[:8])) + (", ..." if cols.size > 8 else "")
            warnings.warn(f"area {area!r}: {cols.size} voxel(s) constant on the training rows "
                          f"of some fold (input columns {shown}) were not fitted there; "
                          f"their cross-validated r is NaN", DroppedVoxelsWarning,
                          stacklevel=2)
    _add_baselines(result, scale_stimuli(checked.stim, cfg.data.stim_scale),
                   checked.responses, kinds)
    result.seconds = time.time() - started
    if out_path is not None:
        write_folder(out_path, lambda d: write_cv(result, d, cfg, sources), force)
    return result


@dataclass
class _FoldFit:
    rows: np.ndarray
    voxel_index: dict[str, np.ndarray]
    predictions: dict[str, np.ndarray]
    prf: dict[str, dict[str, np.ndarray]]
    info: dict


def _fit_fold(stim: np.ndarray, responses: dict[str, np.ndarray], cfg: RunConfig,
              folds: np.ndarray, f: int, k: int, progress: bool) -> _FoldFit:
    """Train on every row outside fold ``f``; predict fold ``f``; the readout pRFs."""
    from niflow.runs.inputs import PooledStimulusWarning
    from niflow.runs.pipeline import train_run

    t0 = time.time()
    rows = np.flatnonzero(folds == f)
    try:
        with warnings.catch_warnings():
            # a fold's dropped voxels and pooled stimuli are reported once, for all folds,
            # by cross_validate
            for once in (DroppedVoxelsWarning, PooledStimulusWarning):
                warnings.simplefilter("ignore", once)
            run, hist, _ = train_run(stim, responses, None, copy.deepcopy(cfg),
                                     test_rows=rows, progress=False)
    except DataError as err:
        raise DataError(f"fold {f + 1} of {k}: {err}") from None
    pred = run.predict(stim[rows])
    prf = {}
    for area in pred:
        rf = run.receptive_fields(area)
        prf[area] = {key: np.asarray(rf[key], dtype=np.float64) for key in PRF_KEYS}
    info = {"fold": f, "n_test_rows": int(rows.size), "epochs_run": len(hist.epochs),
            "best_epoch": hist.best_epoch, "seconds": round(time.time() - t0, 3)}
    if run.config.to_dict() != cfg.to_dict():  # e.g. a model chosen inside train_run
        info["config"] = run.config.to_dict()
    if progress:
        print(f"cv fold {f + 1}/{k}: {rows.size} held-out rows, {len(hist.epochs)} epochs "
              f"(best {hist.best_epoch}), {info['seconds']:.1f} s", file=sys.stderr,
              flush=True)
    return _FoldFit(rows, {a: np.asarray(v) for a, v in run.voxel_index.items()}, pred, prf,
                    info)


def _assemble(responses: dict[str, np.ndarray], folds: np.ndarray, fits: list[_FoldFit],
              k: int, seed: int, started: float) -> CVResult:
    """Stitch the folds' predictions and pRFs into per-area arrays and score them."""
    n = folds.size
    preds, r, fold_r, prf, voxel, incomplete, summaries = {}, {}, {}, {}, {}, {}, {}
    for area in responses:
        cols = np.unique(np.concatenate([fit.voxel_index[area] for fit in fits]))
        p = np.full((n, cols.size), np.nan, dtype=np.float32)
        fold_prf = {key: np.full((k, cols.size), np.nan) for key in PRF_KEYS}
        fitted = np.zeros(cols.size, dtype=np.int64)
        for f, fit in enumerate(fits):
            pos = np.searchsorted(cols, fit.voxel_index[area])
            p[np.ix_(fit.rows, pos)] = fit.predictions[area]
            fitted[pos] += 1
            for key in PRF_KEYS:
                fold_prf[key][f, pos] = fit.prf[area][key]
        true = np.asarray(responses[area][:, cols], dtype=np.float64)
        preds[area], voxel[area] = p, cols
        r[area] = fold_centred_r(p, true, folds)
        fold_r[area] = per_fold_r(p, true, folds, k)
        incomplete[area] = cols[fitted < k]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pRF columns
            prf[area] = {key: np.nanmedian(v, axis=0) for key, v in fold_prf.items()}
        prf[area]["n_folds_fitted"] = fitted
        summaries[area] = _summaries(r[area], fold_r[area])
    return CVResult(k=k, seed=seed, folds=folds, predictions=preds, r=r, fold_r=fold_r,
                    baseline_r={}, baseline_predictions={}, prf=prf, voxel=voxel,
                    incomplete=incomplete, summaries=summaries, baseline_summaries={},
                    fold_info=[fit.info for fit in fits], seconds=time.time() - started)


def _add_baselines(result: CVResult, x: np.ndarray, responses: dict[str, np.ndarray],
                   kinds: list[str]) -> None:
    """Voxelwise ridge on each feature set, fitted per fold on that fold's training rows
    only (per-voxel alpha by leave-one-out on them) and scored like the NIF model.

    A voxel the NIF model could not fit in some fold is left out of that fold here too
    (NaN), so that every model is scored on the same voxels and rows.
    """
    from niflow.evaluate.baselines import features, ridge_predict

    folds, k = result.folds, result.k
    for kind in kinds:
        feats = features(x, kind)  # a fixed transform of each image: no fitting involved
        result.baseline_predictions[kind], result.baseline_r[kind] = {}, {}
        result.baseline_summaries[kind] = {}
        for area, cols in result.voxel.items():
            y = np.asarray(responses[area][:, cols], dtype=np.float64)
            pred = np.empty(y.shape, dtype=np.float32)
            for f in range(k):
                test = folds == f
                pred[test] = ridge_predict(feats[~test], y[~test], feats[test])[0]
            pred[~np.isfinite(result.predictions[area])] = np.nan
            result.baseline_predictions[kind][area] = pred
            result.baseline_r[kind][area] = fold_centred_r(pred, y, folds)
            result.baseline_summaries[kind][area] = _summaries(
                result.baseline_r[kind][area], per_fold_r(pred, y, folds, k))


# --------------------------------------------------------------------------- the folder


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``out`` that is a file, lies under a file, or holds files (unless
    ``force``); nothing is created or changed."""
    check_location(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise RunError(f"{out}: folder exists and is not empty; use --force to overwrite it "
                      f"or choose another --out")


def write_folder(out: Path, write: Callable[[Path], None], force: bool) -> None:
    """Make ``out`` appear with the files ``write(folder)`` puts in it, all or nothing.

    The files are written into a hidden staging folder beside ``out``, which then replaces
    it, so an interrupted write never leaves a folder that looks complete.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.cv-"))
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp's folder is private (0700)
    except OSError as err:
        raise RunError(f"{out}: cannot create the folder ({err.strerror})") from None
    try:
        write(staging)
        if out.exists():
            check_out(out, force)  # something may have appeared there while we trained
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_cv(result: CVResult, folder: Path, cfg: RunConfig,
             sources: dict[str, str] | None = None, extra: dict | None = None) -> None:
    """Write ``cv.json`` (with the entries of ``extra``), ``cv_voxels.csv`` (with any
    per-voxel measure of ``result.prf`` besides the pRF's, e.g. a movie model's
    ``hrf_peak_s``), ``cv_predictions.npz`` and ``config.json``."""
    cfgmod.save(cfg, folder / "config.json")
    arrays: dict[str, np.ndarray] = {"folds": result.folds}
    cols: dict[str, list] = {"area": [], "voxel": [], "r_cv": []}
    cols.update({f"r_{kind}_cv": [] for kind in result.baseline_r})
    measures = [key for key in next(iter(result.prf.values()), {})
                if key not in (*PRF_KEYS, "n_folds_fitted")]
    cols.update({key: [] for key in (*PRF_KEYS, *measures, "mean_fold_r", "n_folds_fitted")})
    for area in result.areas:
        arrays[area] = result.predictions[area]
        arrays[f"voxels_{area}"] = result.voxel[area]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_fold = np.nanmean(result.fold_r[area], axis=0)
        cols["area"] += [area] * result.voxel[area].size
        cols["voxel"] += [int(v) for v in result.voxel[area]]
        cols["r_cv"] += list(result.r[area])
        for kind, r in result.baseline_r.items():
            cols[f"r_{kind}_cv"] += list(r[area])
            arrays[f"{kind}_{area}"] = result.baseline_predictions[kind][area]
        for key in (*PRF_KEYS, *measures):
            cols[key] += list(result.prf[area][key])
        cols["mean_fold_r"] += list(mean_fold)
        cols["n_folds_fitted"] += [int(v) for v in result.prf[area]["n_folds_fitted"]]
    write_table(folder / "cv_voxels.csv", cols)
    save_npz(folder / "cv_predictions.npz", arrays)
    atomic_write_text(folder / "cv.json",
                      _dumps({**cv_summary(result, cfg, sources), **(extra or {})}))


def _dumps(obj: dict) -> str:
    """Indented JSON with lists of numbers (the fold of every row) kept on one line."""
    text = json.dumps(obj, indent=2)
    # a raw newline after "[" is JSON layout, never string content (strings escape it)
    return re.sub(r"\[(\n[-+.\deE,\s]+)\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
                  text) + "\n"


def cv_summary(result: CVResult, cfg: RunConfig, sources: dict[str, str] | None = None,
               ) -> dict:
    """The content of ``cv.json``: settings, folds and per-area summaries side by side."""
    sources = dict(sources or {})
    groups = None
    if result.n_groups is not None:
        groups = {"n_groups": result.n_groups, "source": sources.pop("groups", None)}
    areas = {}
    for area in result.areas:
        areas[area] = {"niflow": result.summaries[area],
                       **{kind: s[area] for kind, s in result.baseline_summaries.items()},
                       "n_incomplete_voxels": int(result.incomplete[area].size),
                       "incomplete_voxels": [int(v) for v in result.incomplete[area]]}
    return {"niflow_version": __version__, "k": result.k, "seed": result.seed,
            "groups": groups, "n_samples": int(result.folds.size),
            "fold_sizes": np.bincount(result.folds, minlength=result.k).tolist(),
            "folds": result.folds.tolist(), "r_method": R_METHOD,
            "baselines": list(result.baseline_r), "areas": areas,
            "inputs": {key: str(v) for key, v in sources.items()},
            "fold_training": result.fold_info, "seconds": round(result.seconds, 3),
            "config": cfg.to_dict()}
