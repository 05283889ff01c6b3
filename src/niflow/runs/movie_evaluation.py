"""Scoring a trained movie run on a movie data set: a new session, another test movie, or
runs its training file held out.

The run's ensemble predicts every volume of the chosen runs from the frames before it
(:meth:`niflow.runs.run.MovieRun.predict_volumes`); each voxel is scored by Pearson r and
R² against the measured volumes and, where the response file has ``<AREA>_repeats`` of those
runs, gets the split-half noise ceiling of its repeats, as the run's own test runs do
(:func:`niflow.runs.movie.movie_outputs`). No permutation p-values: shuffling volumes ignores
the autocorrelation of a time series.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from niflow.data.errors import DataError
from niflow.data.movie import REPEATS_SUFFIX, MovieFiles, default_test_runs
from niflow.evaluate.statistics import TIME_SERIES_P_NOTE, area_summary, voxel_statistics
from niflow.runs.evaluation import write_evaluation
from niflow.runs.run import MovieRun

__all__ = ["evaluate_movie_folder", "evaluate_movie_run"]


def _scored_runs(files: MovieFiles, runs: list[int] | None) -> list[int]:
    timing = files.timing
    if runs is None:
        return list(timing.runs)
    unknown = [r for r in runs if r not in timing.runs]
    if unknown:
        raise DataError(f"run(s) {unknown} not found in {files.sources['bold']}; its runs are "
                        f"{list(timing.runs)}")
    return [r for r in timing.runs if r in runs]  # file order, as the volumes are


def _repeated_runs(files: MovieFiles, n_volumes: int) -> list[int] | None:
    """The last runs whose volumes number ``n_volumes`` (what repeats of that length cover
    when the test runs come last, as the contract's writers put them), or None."""
    counts = [int((files.timing.volume_run == r).sum()) for r in files.timing.runs]
    total = 0
    for k in range(len(counts) - 1, -1, -1):
        total += counts[k]
        if total == n_volumes:
            return list(files.timing.runs[k:])
        if total > n_volumes:
            return None
    return None


def _area_repeats(files: MovieFiles, area: str, runs: list[int], n_volumes: int,
                  columns: np.ndarray) -> np.ndarray | None:
    """The repeats of ``runs`` (None without any); a one-line error, with the runs to score
    instead, when they repeat other runs (another length, or a mean that is not the area on
    ``runs``: their ceiling would not be these runs')."""
    name = area + REPEATS_SUFFIX
    rep = files.arrays.get(name)
    if rep is None:
        return None
    if np.ndim(rep) == 3 and np.shape(rep)[1] != n_volumes:
        guess = _repeated_runs(files, int(np.shape(rep)[1]))
        raise DataError(f"{files.sources['bold']}: variable {name!r} repeats "
                        f"{np.shape(rep)[1]} volumes but runs {runs} have {n_volumes}: "
                        f"{_hint(guess)}")
    rep, note = files.test_repeats(area, runs, columns)
    if note is not None:
        try:
            guess = default_test_runs(files)[0]
        except DataError:
            guess = None
        raise DataError(f"{files.sources['bold']}: the mean of {name!r} is not {area!r} on "
                        f"runs {runs}: {_hint(guess)}")
    return rep


def _hint(runs: list[int] | None) -> str:
    return (f"score the runs they repeat with --runs {','.join(map(str, runs))}" if runs
            else "score the runs they repeat with --runs")


def _checked_columns(run: MovieRun, files: MovieFiles, area: str) -> np.ndarray:
    cols = np.asarray(run.voxel_index[area], dtype=np.int64)
    n = files.responses[area].shape[1]
    if cols.size and n <= int(cols.max()):
        raise DataError(f"{files.sources['bold']}: variable {area!r} has {n} voxels but the "
                        f"run reads voxel {int(cols.max())} of it: give the area's voxels "
                        f"in the columns (and order) of the training file")
    return cols


def evaluate_movie_run(run: MovieRun, files: MovieFiles, runs: list[int] | None = None,
                       ) -> dict[str, dict]:
    """Score a movie run on the volumes of ``runs`` of a movie data set.

    Parameters
    ----------
    run : niflow.runs.run.MovieRun
    files : niflow.data.movie.MovieFiles
        Frames of the shape and fps the run was trained on (:func:`niflow.data.movie.
        read_movie`); the response variables are matched to the run's areas by name and its
        voxels by the training file's column numbers (``run.voxel_index``). The file's TR
        may differ from training's.
    runs : list of int, optional
        Run labels to score (default all). ``<AREA>_repeats``, if present, must hold the
        repeats of exactly these runs' volumes; they give the noise ceiling.

    Returns
    -------
    dict of area to {"voxel": (n_voxels,) file column, "stats": :func:`voxel_statistics`
    (p-values NaN), "summary": :func:`area_summary`}; areas of the run that the file lacks
    are left out.

    Raises
    ------
    DataError
        One line naming the file, the variable and the fix: other frame shape or fps, an
        unknown run, no area of the run, too few voxels, repeats of other runs.
    """
    run.check_movie(files)
    runs = _scored_runs(files, runs)
    areas = [a for a in run.voxel_index if a in files.responses]
    if not areas:
        raise DataError(f"{files.sources['bold']}: none of the run's areas "
                        f"{list(run.voxel_index)} is a variable; its response variables are "
                        f"{sorted(files.responses)}")
    volumes = files.timing.volumes_of(runs)
    columns = {a: _checked_columns(run, files, a) for a in areas}
    repeats = {a: _area_repeats(files, a, runs, volumes.size, columns[a]) for a in areas}
    pred = run.predict_volumes(files, volumes)
    out = {}
    for area in areas:
        cols = columns[area]
        true = files.responses[area][volumes][:, cols].astype(np.float64)
        rep = repeats[area]
        rep = None if rep is None else rep[:, :, cols]
        bad = ~np.isfinite(true).all(0)
        if rep is not None:
            bad |= ~np.isfinite(rep).all(axis=(0, 1))
        if bad.any():
            warnings.warn(f"{files.sources['bold']}: {int(bad.sum())} voxel(s) of {area!r} "
                          f"have NaN or Inf in the scored volumes (columns "
                          f"{cols[bad][:5].tolist()}{' ...' if bad.sum() > 5 else ''}); "
                          f"their statistics are NaN", stacklevel=2)
        stats = voxel_statistics(pred[area].astype(np.float64), true, rep, n_permutations=0)
        for value in stats.values():  # pearson_r reads a NaN column as constant: r = 0
            if value.dtype.kind == "f":
                value[bad] = np.nan
        out[area] = {"voxel": cols, "stats": stats,
                     "summary": area_summary(stats, None if rep is None else rep.shape[0])}
    return out


def evaluate_movie_folder(run: MovieRun, files: MovieFiles, runs: list[int] | None,
                          out_dir: str | Path, info: dict | None = None) -> dict[str, dict]:
    """:func:`evaluate_movie_run`, written as ``stats_voxels.csv``, ``stats.json`` (with the
    scored runs and volumes) and, with repeats, ``figures/noise_ceiling.png`` in ``out_dir``;
    nothing is written when the inputs are refused."""
    scored = _scored_runs(files, runs)
    results = evaluate_movie_run(run, files, scored)
    write_evaluation(results, out_dir, {
        "runs": scored, "n_volumes": int(files.timing.volumes_of(scored).size),
        "stim": files.sources["stim"], "bold": files.sources["bold"],
        "p_values": TIME_SERIES_P_NOTE, **(info or {})})
    return results
