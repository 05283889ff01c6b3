"""Cross-validation of movie models over runs: every volume is predicted by a model that
never saw its run.

The runs are cut into ``k`` consecutive blocks (default one per run: leave-one-run-out). For
each block, video models are selected and trained on the other runs exactly as
``niflow train --test-runs BLOCK`` trains them (validation runs drawn among them, the same
candidates and ensemble), and predict the block. FIR motion-energy ridge
(:mod:`niflow.runs.movie_baseline`: α per voxel by leave-one-run-out on the fold's training
runs) is fitted and scored on the same folds. Scores are those of image cross-validation
(:mod:`niflow.runs.crossval`): Pearson r over all volumes with predictions and responses
centred within each fold (a run's offset, which no model predicts from the other runs,
drops out), and each fold's own r.

A folder (``out``) holds what an image cross-validation writes: ``cv.json`` (with ``kind``
``"movie"``, each fold's runs, ``tr`` and ``fps``), ``cv_voxels.csv`` (plus ``hrf_peak_s``
and ``hrf_fwhm_s``, medians over the folds), ``cv_predictions.npz`` (``folds``: the fold of
every volume) and ``config.json``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

from niflow.config import ConfigError, RunConfig
from niflow.data.dataset import DroppedVoxelsWarning, usable_voxel_columns
from niflow.data.errors import DataError
from niflow.data.movie import MovieFiles, movie_split, read_movie
from niflow.evaluate.folds import fold_centred_r, per_fold_r
from niflow.runs.crossval import PRF_KEYS, CVResult, _summaries, check_out, write_cv, write_folder
from niflow.runs.movie import check_movie_config, select_movie_models
from niflow.runs.movie_baseline import motion_energy_design, movie_baseline_scores
from niflow.train.runtime import Runtime
from niflow.train.video import ensemble_hrf_parameters

__all__ = ["cross_validate_movie", "run_blocks"]

HRF_KEYS = ("hrf_peak_s", "hrf_fwhm_s")
BASELINE = "motion_energy"


def run_blocks(runs: list[int], k: int | None = None) -> list[list[int]]:
    """The runs of each fold: ``k`` consecutive blocks of ``runs`` (sizes differing by at
    most one); ``k`` None: one run per fold."""
    k = len(runs) if k is None else int(k)
    if not 2 <= k <= len(runs):
        raise ConfigError(f"--k {k}: the movie has {len(runs)} runs, and a fold holds out "
                          f"whole runs: give --k from 2 to {len(runs)} (default {len(runs)}: "
                          f"leave one run out)")
    return [[int(r) for r in block] for block in np.array_split(np.asarray(runs), k)]


def cross_validate_movie(stim_path: str | Path, bold_path: str | Path, cfg: RunConfig,
                         k: int | None = None, out: str | Path | None = None,
                         baseline: bool = True, progress: bool = False, force: bool = False,
                         *, config_source: str = "config", taps_s: float | None = None,
                         ) -> CVResult:
    """Cross-validate the video model (and FIR motion-energy ridge) over folds of runs.

    Every input is checked and ``out`` is checked before any training.

    Parameters
    ----------
    stim_path, bold_path : path
        Stimulus and response files in the movie contract (:mod:`niflow.data.movie`), with
        two or more runs (a fold with one training run validates on its last volumes, as
        :func:`~niflow.data.movie.movie_split` does).
    cfg : RunConfig
        Every fold is selected and trained with it, as ``niflow train`` would.
    k : int, optional
        Number of folds, each a block of consecutive runs; default one per run.
    out : path, optional
        Folder to write (module docstring), all or nothing; refused if it exists and is not
        empty, unless ``force``.
    baseline : bool
        Also fit and score FIR motion-energy ridge on the same folds.
    progress : bool
        One line per fold on stderr.
    taps_s : float, optional
        Length of each area's causal temporal filter (default ``cfg.video.taps_s``).

    Returns
    -------
    CVResult
        ``folds`` and the predictions are per volume; ``prf`` also holds each voxel's
        ``hrf_peak_s`` and ``hrf_fwhm_s`` (median over the folds).

    Raises
    ------
    DataError, ConfigError, RunError
        One-line messages, before anything is trained or written.
    """
    started = time.time()
    files = read_movie(stim_path, bold_path, cfg.data.stim_variable)
    cfg = check_movie_config(cfg, files, str(bold_path), config_source)
    t = files.timing
    if len(t.runs) < 2:
        raise DataError(f"{files.sources['bold']}: one run only; cross-validation over runs "
                        f"holds out whole runs: it needs two or more")
    blocks = run_blocks(list(t.runs), k)
    volume_fold = np.empty(t.n_volumes, dtype=np.int64)
    for f, block in enumerate(blocks):  # every fold's split, before any training
        try:
            movie_split(t, block, cfg.train.val_fraction, cfg.train.seed)
        except DataError as err:
            raise DataError(f"fold {f + 1} of {len(blocks)} (test runs {block}): {err}"
                            ) from None
        volume_fold[t.volumes_of(block)] = f
    voxel_index, notes = usable_voxel_columns(files.responses, np.arange(t.n_volumes),
                                              files.sources["bold"])
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_out(out_path, force)
    for note in notes:
        warnings.warn(note, DroppedVoxelsWarning, stacklevel=2)
    files = files.with_voxels(voxel_index)
    fits = [_fit_fold(files, voxel_index, cfg, blocks, f, taps_s, progress)
            for f in range(len(blocks))]
    result = _assemble(files, voxel_index, volume_fold, fits, started)
    if baseline:
        _add_baseline(result, files, blocks)
    result.seconds = time.time() - started
    if out_path is not None:
        extra = {"kind": "movie", "seed": None, "fold_runs": blocks, "tr": t.tr,
                 "fps": t.fps}
        write_folder(out_path, lambda d: write_cv(result, d, cfg, dict(files.sources), extra),
                     force)
    return result


def _fit_fold(files: MovieFiles, voxel_index: dict[str, np.ndarray], cfg: RunConfig,
              blocks: list[list[int]], f: int, taps_s: float | None, progress: bool) -> dict:
    """Select and train on every run outside fold ``f``; predict its volumes."""
    t0 = time.time()
    try:
        run, fit, selection = select_movie_models(files, blocks[f], cfg, voxel_index,
                                                  runtime=Runtime(), taps_s=taps_s)
    except DataError as err:
        raise DataError(f"fold {f + 1} of {len(blocks)} (test runs {blocks[f]}): {err}"
                        ) from None
    pred = fit.predict(files, fit.test)
    hrf = ensemble_hrf_parameters(run.videos)
    per_voxel = {}
    for area in pred:
        prf = run.receptive_fields(area)  # once per area: it medians over the ensemble
        per_voxel[area] = {**{key: np.asarray(prf[key], np.float64) for key in PRF_KEYS},
                           **{key: np.asarray(hrf[area][key], np.float64)
                              for key in HRF_KEYS}}
    info = {"fold": f, "test_runs": blocks[f], "n_test_rows": int(fit.test.size),
            "epochs_run": len(fit.history.epochs), "best_epoch": fit.history.best_epoch,
            "chosen": selection.get("chosen"), "members": len(run.videos),
            "seconds": round(time.time() - t0, 3)}
    if progress:
        print(f"cv fold {f + 1}/{len(blocks)}: runs {blocks[f]} held out ({fit.test.size} "
              f"volumes), {len(fit.history.epochs)} epochs (best {fit.history.best_epoch}), "
              f"{info['seconds']:.1f} s", file=sys.stderr, flush=True)
    return {"rows": fit.test, "pred": pred, "per_voxel": per_voxel, "info": info}


def _assemble(files: MovieFiles, voxel_index: dict[str, np.ndarray], folds: np.ndarray,
              fits: list[dict], started: float) -> CVResult:
    """Stitch the folds' predictions together and score them."""
    k = len(fits)
    preds, r, fold_r, per_voxel, summaries, incomplete = {}, {}, {}, {}, {}, {}
    for area, true in files.responses.items():
        p = np.full(true.shape, np.nan, dtype=np.float32)
        for fit in fits:
            p[fit["rows"]] = fit["pred"][area]
        y = np.asarray(true, dtype=np.float64)
        preds[area] = p
        r[area] = fold_centred_r(p, y, folds)
        fold_r[area] = per_fold_r(p, y, folds, k)
        per_voxel[area] = {key: np.median([fit["per_voxel"][area][key] for fit in fits], axis=0)
                           for key in (*PRF_KEYS, *HRF_KEYS)}
        per_voxel[area]["n_folds_fitted"] = np.full(y.shape[1], k, dtype=np.int64)
        summaries[area] = _summaries(r[area], fold_r[area])
        incomplete[area] = np.zeros(0, dtype=np.int64)
    return CVResult(k=k, seed=0, folds=folds, predictions=preds, r=r, fold_r=fold_r,
                    baseline_r={}, baseline_predictions={}, prf=per_voxel,
                    voxel={a: np.asarray(v) for a, v in voxel_index.items()},
                    incomplete=incomplete, summaries=summaries, baseline_summaries={},
                    fold_info=[fit["info"] for fit in fits], seconds=time.time() - started)


def _add_baseline(result: CVResult, files: MovieFiles, blocks: list[list[int]]) -> None:
    """FIR motion-energy ridge per fold (its training runs only), scored like the model.

    The motion-energy design depends on the frames alone, so it is computed once."""
    from niflow.evaluate.motion_energy import fir_delays

    design = motion_energy_design(files, fir_delays(files.timing.tr))
    voxels = {a: np.arange(v.size) for a, v in result.voxel.items()}
    preds = {a: np.full(r.shape, np.nan, dtype=np.float32)
             for a, r in files.responses.items()}
    for block in blocks:
        scores, _ = movie_baseline_scores(files, block, voxels, n_permutations=0,
                                          design=design)
        rows = files.timing.volumes_of(block)
        for area, res in scores.items():
            preds[area][rows] = res["pred"]
    k = result.k
    result.baseline_predictions[BASELINE], result.baseline_r[BASELINE] = preds, {}
    result.baseline_summaries[BASELINE] = {}
    for area, p in preds.items():
        y = np.asarray(files.responses[area], dtype=np.float64)
        result.baseline_r[BASELINE][area] = fold_centred_r(p, y, result.folds)
        result.baseline_summaries[BASELINE][area] = _summaries(
            result.baseline_r[BASELINE][area], per_fold_r(p, y, result.folds, k))
