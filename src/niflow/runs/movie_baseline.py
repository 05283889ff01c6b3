"""The movie baseline on a split by runs: voxelwise ridge on FIR-delayed motion energy.

Features (:mod:`niflow.evaluate.motion_energy`): motion energy of every frame (frames scaled
as the video model takes them, :meth:`niflow.data.movie.MovieFiles.frames`), averaged over
each volume's TR, stacked at the delays of :func:`~niflow.evaluate.motion_energy.fir_delays`
(1-8 s) so that each voxel's haemodynamic lag is learned by its weights. Ridge per voxel,
its penalty chosen by leave-one-run-out on the training runs (every run but the test runs);
with a single training run, its :data:`CV_BLOCKS` contiguous blocks are the folds. Scored on
the test runs like the NIF model (:func:`niflow.evaluate.statistics.voxel_statistics`), with
the noise ceiling where the response file holds ``<AREA>_repeats`` of the test runs.

Written as ``baseline_motion_energy.csv`` / ``.json`` (:func:`~niflow.evaluate.baselines.
write_baseline`), so a movie run folder's report shows it beside NIF.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from niflow.data.errors import DataError
from niflow.data.movie import (
    MovieFiles,
    MovieTiming,
    check_test_runs,
    default_test_runs,
)
from niflow.evaluate.baselines import write_baseline
from niflow.evaluate.motion_energy import (
    DEFAULT_ALPHAS,
    delay_features,
    fir_delays,
    loro_ridge,
    motion_energy_features,
    volume_features,
)
from niflow.evaluate.statistics import area_summary, read_table, voxel_statistics
from niflow.runs.outputs import VOXELS_CSV

__all__ = ["CV_BLOCKS", "KIND", "cv_labels", "motion_energy_design", "movie_baseline_folder",
           "movie_baseline_scores"]

KIND = "motion_energy"
CV_BLOCKS = 5
N_ORIENTATIONS, POOL, WINDOW_S = 8, 4, 0.75


def _settings(files: MovieFiles) -> dict:
    _, h, w = files.frame_shape
    fps = files.timing.fps
    return {"n_orientations": N_ORIENTATIONS, "pool": POOL, "window_s": WINDOW_S,
            "wavelengths": tuple(float(v) for v in np.geomspace(4.0, max(w / 4, 4.5), 3)),
            "temporal_hz": (0.0, fps / 4)}


def motion_energy_design(files: MovieFiles, delays: tuple[int, ...]) -> np.ndarray:
    """FIR motion-energy design matrix of every volume, computed run by run.

    Memory: one run's frames (float32, n_frames_run × H × W) and their motion-energy maps at
    a time; the result, (n_TR, n_delays · n_features) float64, is the one array of the whole
    data set (e.g. 600 × 36 864 = 177 MB for five 2-minute runs of 32 × 32 frames at TR 1 s).

    Parameters
    ----------
    files : MovieFiles
    delays : tuple of int
        Delays in volumes.

    Returns
    -------
    ndarray of shape (n_TR, len(delays) · n_features), float64
    """
    t = files.timing
    parts = []
    for run in t.runs:
        f0, f1 = t.frame_span(run)
        v0, v1 = t.volume_span(run)
        frames = files.frames(np.arange(f0, f1)).mean(axis=1)  # (n, H, W) luminance
        feats = motion_energy_features(frames, t.fps, **_settings(files))
        local = MovieTiming(t.fps, t.tr, t.frame_run[f0:f1], t.volume_run[v0:v1])
        parts.append(volume_features(feats, local, np.arange(v1 - v0)))
        del frames, feats
    return delay_features(np.concatenate(parts), t.volume_run, delays)


def cv_labels(volume_run: np.ndarray) -> tuple[np.ndarray, str]:
    """Fold label of each training volume, and what the folds are.

    Parameters
    ----------
    volume_run : ndarray of shape (n_train,)
        Run labels of the training volumes.

    Returns
    -------
    labels : ndarray of shape (n_train,), int64
        The run labels with two or more runs; else :data:`CV_BLOCKS` contiguous blocks.
    description : str
    """
    runs = list(dict.fromkeys(int(r) for r in volume_run))
    if len(runs) > 1:
        return np.asarray(volume_run, dtype=np.int64), f"leave-one-run-out over runs {runs}"
    n = volume_run.size
    if n < 2 * CV_BLOCKS:
        raise DataError(f"run {runs[0]}, the only training run, has {n} volumes: too few for "
                        f"{CV_BLOCKS} cross-validation blocks; add runs")
    return (np.arange(n) * CV_BLOCKS // n, f"one training run ({runs[0]}): leave-one-block-"
            f"out over its {CV_BLOCKS} contiguous blocks of about {n // CV_BLOCKS} volumes")


def _repeats(files: MovieFiles, area: str, test_runs: list[int], cols: np.ndarray,
             notes: list[str]) -> np.ndarray | None:
    """The test runs' repeats of the fitted voxels, or None (with a note when they are of
    other runs: :meth:`~niflow.data.movie.MovieFiles.test_repeats`)."""
    rep, note = files.test_repeats(area, test_runs, cols)
    if note is not None:
        notes.append(note)
    return None if rep is None else np.asarray(rep, dtype=np.float64)[:, :, cols]


def movie_baseline_scores(files: MovieFiles, test_runs: list[int],
                          voxel_index: dict[str, np.ndarray] | None = None,
                          n_permutations: int = 1000, seed: int = 0,
                          alphas: np.ndarray = DEFAULT_ALPHAS, design: np.ndarray | None = None,
                          ) -> tuple[dict[str, dict], dict]:
    """Fit FIR motion-energy ridge on the training runs and score it on the test runs.

    Memory: see :func:`motion_energy_design`; the ridge fits then hold about four copies of
    the training rows of the design (standardised folds) and n_train × n_train Gram matrices.

    Parameters
    ----------
    files : MovieFiles
    test_runs : list of int
        Run labels to predict; every other run trains.
    voxel_index : dict of str to ndarray of int, optional
        Columns to fit per area (only these areas); default every voxel of every area.
    n_permutations : int
        Permutations for the p-values of r (0: none).
    alphas : ndarray of shape (n_alphas,)
        Penalties to choose from.
    design : ndarray of shape (n_TR, n_features x n_delays), optional
        :func:`motion_energy_design` of ``files`` with :func:`fir_delays` of its TR, if
        already computed (it depends on the frames alone; cross-validation reuses it).

    Returns
    -------
    results : dict of area to {"voxel": (n_voxels,), "alpha": (n_voxels,), "pred":
        (n_test_TR, n_voxels), "stats": :func:`voxel_statistics`, "summary": area summary}
    info : dict
        JSON-safe description of the fit (features, delays, runs, folds, notes).
    """
    t = files.timing
    source = files.sources["bold"]
    test_runs = check_test_runs(t, [int(r) for r in test_runs], source)
    test = t.volumes_of(test_runs)
    train = np.setdiff1d(np.arange(t.n_volumes), test)
    if test.size < 3:
        raise DataError(f"test runs {test_runs} of {source} hold {test.size} volumes; a "
                        f"baseline needs at least 3 to be scored")
    areas = list(files.responses) if voxel_index is None else list(voxel_index)
    cols, ys = {}, []
    for area in areas:
        if area not in files.responses:
            raise DataError(f"{source}: area {area!r} of the run folder's {VOXELS_CSV} is not "
                            f"in the response file (areas: {sorted(files.responses)})")
        resp = files.responses[area]
        c = (np.arange(resp.shape[1]) if voxel_index is None
             else np.asarray(voxel_index[area], dtype=np.int64))
        if c.size and (c.min() < 0 or c.max() >= resp.shape[1]):
            raise DataError(f"{source}: area {area!r} has {resp.shape[1]} voxels; the run "
                            f"folder's {VOXELS_CSV} uses voxel {int(c.max())}")
        y = np.asarray(resp, dtype=np.float64)[:, c]
        if not np.isfinite(y).all():
            raise DataError(f"{source}: area {area!r} has NaN or Inf values; ridge needs "
                            f"finite responses: pass the run folder of a `niflow train` on "
                            f"these files as --out (it drops such voxels) or remove them")
        cols[area] = c
        ys.append(y)
    delays = fir_delays(t.tr)
    x = motion_energy_design(files, delays) if design is None else design
    labels, cv = cv_labels(t.volume_run[train])
    y = np.concatenate(ys, axis=1)
    pred, alpha = loro_ridge(x[train], y[train], labels, x[test], alphas)
    del x
    results, notes, start = {}, [], 0
    for area in areas:
        n = cols[area].size
        sl = slice(start, start + n)
        start += n
        rep = _repeats(files, area, test_runs, cols[area], notes)
        stats = voxel_statistics(pred[:, sl], y[test, sl], rep, n_permutations=n_permutations,
                                 seed=seed)
        results[area] = {"voxel": cols[area], "alpha": alpha[sl], "pred": pred[:, sl],
                         "stats": stats,
                         "summary": area_summary(stats, None if rep is None else rep.shape[0])}
    s = _settings(files)
    _, h, w = files.frame_shape
    n_temporal = sum(1 if f == 0 else 2 for f in s["temporal_hz"])
    n_features = (s["n_orientations"] * len(s["wavelengths"]) * n_temporal
                  * (h // s["pool"]) * (w // s["pool"]))
    info = {
        "model": "voxelwise ridge on FIR-delayed motion-energy features; per-voxel alpha by "
                 "cross-validation on the training runs (mean held-out Pearson r), refitted "
                 "on all training runs",
        "feature_description": (
            f"motion energy log(1 + |.|) of complex Gabors ({s['n_orientations']} orientations"
            f" x wavelengths {[round(v, 2) for v in s['wavelengths']]} px) x causal "
            f"{s['window_s']:g} s temporal filters at {[round(f, 3) for f in s['temporal_hz']]}"
            f" Hz (static; each drift direction), mean over {s['pool']}x{s['pool']} px blocks"
            f", frames scaled to [0, 1], averaged over each TR: {n_features} features x "
            f"{len(delays)} delays"),
        "delays_s": [round(d * t.tr, 6) for d in delays],
        "test_runs": test_runs,
        "train_runs": [r for r in t.runs if r not in test_runs],
        "cv": cv,
        "alphas": [float(a) for a in alphas],
        "n_test_volumes": int(test.size),
        "inputs": dict(files.sources),
        "notes": notes,
    }
    return results, info


def _run_folder(out: Path, files: MovieFiles, test_runs: list[int] | None,
                ) -> tuple[list[int], dict[str, np.ndarray] | None]:
    """Test runs and voxels of the movie run in ``out`` (``test_runs`` without one)."""
    split_path = out / "split.json"
    if not split_path.exists():
        if test_runs is None:
            return default_test_runs(files)[0], None
        return [int(r) for r in test_runs], None
    try:
        split = json.loads(split_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{split_path}: not readable JSON ({err})") from None
    if not isinstance(split, dict) or split.get("kind") != "movie" or \
            not isinstance(split.get("test_runs"), list):
        raise DataError(f"{split_path}: the split of a static-image run (no \"kind\": "
                        f"\"movie\" with \"test_runs\"); give a movie run folder, or a new "
                        f"folder with the test runs")
    runs = [int(r) for r in split["test_runs"]]
    check_test_runs(files.timing, runs, files.sources["bold"])
    if test_runs is not None and sorted(int(r) for r in test_runs) != sorted(runs):
        raise DataError(f"test runs {list(test_runs)} differ from the test runs {runs} of the "
                        f"run in {out} ({split_path}); leave them out to use the run's")
    if "test" in split and [int(i) for i in split["test"]] != \
            files.timing.volumes_of(runs).tolist():
        raise DataError(f"{split_path}: its test volumes are not those of runs {runs} in "
                        f"{files.sources['bold']}; is this the data the run was trained on?")
    voxel_index = None
    if (out / VOXELS_CSV).exists():
        table = read_table(out / VOXELS_CSV)
        if "area" not in table or "voxel" not in table:
            raise DataError(f"{out / VOXELS_CSV}: needs columns area and voxel")
        voxel_index = {a: table["voxel"][table["area"] == a].astype(np.int64)
                       for a in dict.fromkeys(table["area"].tolist())}
    return runs, voxel_index


def movie_baseline_folder(files: MovieFiles, out: str | Path,
                          test_runs: list[int] | None = None,
                          n_permutations: int = 1000) -> dict[str, dict]:
    """FIR motion-energy ridge written into ``out``; a movie run folder there sets the split.

    When ``out`` holds a movie run (``split.json`` with ``"kind": "movie"``, ``"test_runs"``
    and ``"test"`` volume indices), its test runs are used and, with its ``voxels.csv``
    (columns area, voxel), only its voxels are fitted; otherwise ``test_runs`` is required.
    Writes ``baseline_motion_energy.csv`` (area, voxel, r_test, r2_test, p_perm, q_fdr, alpha
    and, with repeats, noise_ceiling and r_normalised) and ``baseline_motion_energy.json``
    (per-area summaries and :func:`movie_baseline_scores`' info).

    Memory: see :func:`motion_energy_design` and :func:`movie_baseline_scores`.

    Parameters
    ----------
    files : MovieFiles
        From :func:`niflow.data.movie.read_movie`.
    out : str or Path
        Run folder or any folder (created).
    test_runs : list of int, optional
        Run labels to predict (required unless ``out`` is a movie run folder).
    n_permutations : int

    Returns
    -------
    dict of area to :func:`movie_baseline_scores` results
    """
    out = Path(out)
    runs, voxel_index = _run_folder(out, files, test_runs)
    results, info = movie_baseline_scores(files, runs, voxel_index, n_permutations)
    out.mkdir(parents=True, exist_ok=True)
    write_baseline(results, out, KIND, info)
    if (out / VOXELS_CSV).exists() and "r_test" in read_table(out / VOXELS_CSV):
        from niflow.runs.evaluation import _baseline_figure

        _baseline_figure(out)
    return results
