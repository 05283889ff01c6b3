"""Movie runs: a video model trained on a movie data set, written as a run folder.

``train_movie`` reads a data set in the movie contract (:mod:`niflow.data.movie`), splits it
by run, trains :class:`~niflow.model.video.VideoNIF` (choosing among
``config.select.candidates`` on the validation runs when there are any) and fills the folder
with the static run's files, in volumes instead of images::

    run.json, config.json   as for static runs
    split.json              kind "movie"; train / val / test volume indices; train_runs,
                            val_runs, test_runs (run labels)
    model.pt                kind "video": weights (and the ensemble members'), frame
                            shape, fps, tr, scalers
    log.jsonl               one record per epoch of the kept model
    selection.json          as for image runs (:class:`~niflow.train.select.Selection`):
                            candidates' validation median r, the chosen one, the ensemble
                            members (seed, validation volumes, r, epochs, seconds), what
                            was skipped (budget, divergence)
    metrics.json            per area: held-out summary, median HRF peak, noise ceiling
    voxels.csv              area, voxel, r_test, r2_test, prf_x, prf_y, prf_sigma,
                            prf_sigma_fit, hrf_peak_s, hrf_fwhm_s, noise_ceiling, then the
                            image runs' retinotopy columns (prf_ecc, prf_angle, ..., in
                            degrees with data.visual_field_deg; p_perm, q_fdr NaN: no
                            permutation test for time series)
    flow.csv                per (target, source): the test volumes' r with the source's input
                            to the target set to zero or to its mean, and the weight norms
                            (:func:`niflow.interpret.movie_flow.movie_information_flow`)
    stats_voxels.csv        r, R², noise ceiling from the test runs' repeats, r / ceiling
    stats.json              per-area summaries and the ceiling method
    predictions.npz         test-volume predictions <area>, measured_<area> (n_test, V) and
                            test_rows: the volume indices into the concatenated responses
    figures/                training.png, rf_<area>.png, hrf_<area>.png, hrf_latency.png,
                            kernels_<first area>.png, flow.png, coverage.png, size_ecc.png

The run folder appears with ``run.json``, ``config.json`` and ``split.json`` or not at all;
every later file is written atomically. While it trains, ``selection/<unit>/`` holds each
candidate's and ensemble member's checkpoint (after every epoch) and, once it has finished,
its weights: ``resume=True`` (``niflow train --resume``) continues from there, and the
folder is removed when the run is finished.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from niflow import config as cfgmod
from niflow._atomic import atomic_write_text
from niflow.data.dataset import DroppedVoxelsWarning, usable_voxel_columns
from niflow.data.io import save_npz
from niflow.data.movie import (
    MovieFiles,
    check_test_runs,
    default_test_runs,
    movie_split,
    read_movie,
)
from niflow.data.validate import check_areas
from niflow.evaluate.statistics import (
    TIME_SERIES_P_NOTE,
    area_summary,
    summarize,
    voxel_statistics,
)
from niflow.interpret.movie_flow import movie_information_flow
from niflow.interpret.receptive_fields import spatial_maps
from niflow.model.areas import input_pool
from niflow.runs.evaluation import write_statistics
from niflow.runs.folder import (
    _create_run_dir,
    _timestamp,
    _write_run_info,
    check_resume,
    check_run_dir,
)
from niflow.runs.inputs import (
    AddedAreasWarning,
    PooledStimulusWarning,
    check_config,
    config_for_areas,
    pooled_stimulus_note,
)
from niflow.runs.outputs import VOXELS_CSV, _jsonable, _write_csv, write_science_outputs
from niflow.runs.run import MovieRun, RunError, save_movie_model
from niflow.runs.units import remove_units, train_units
from niflow.train.epochs import write_log
from niflow.train.runtime import Runtime
from niflow.train.video import (
    MovieFit,
    build_video,
    ensemble_hrf_parameters,
    movie_data,
    movie_member_data,
    train_video,
)

__all__ = ["check_movie_config", "movie_outputs", "select_movie_models", "train_movie"]

CEILING_NOTE = ("split-half reliability of the test runs' repeats (<AREA>_repeats), "
                "Spearman-Brown corrected to their number; ceiling = sqrt(reliability)")


def _say(progress: bool) -> Callable[[str], None] | None:
    if not progress:
        return None
    import sys

    return lambda line: print(line, file=sys.stderr, flush=True)


# pixels × frames per second above which a movie run says how to train faster in less
# memory: 64 × 64 frames at 24 fps already took 5.2 GiB (README, "Movie fMRI")
LARGE_MOVIE_PX_PER_S = 64 * 64 * 24


def large_frames_note(shape: tuple[int, int, int], fps: float, source: str) -> str | None:
    """For movie frames of ``shape`` (C, H, W) at ``fps`` that are unpooled and above
    :data:`LARGE_MOVIE_PX_PER_S`: the line saying what costs and what to set, else ``None``."""
    h, w = shape[1:]
    if h * w * fps <= LARGE_MOVIE_PX_PER_S:
        return None
    k = input_pool((h, w), 64)
    return (f"{source}: frames of {h} x {w} px at {fps:g} fps; training time and memory grow "
            f"with pixels x frame rate; to need less of both, set \"data\": "
            f"{{\"input_max_px\": 64}} in a config file (frames averaged over {k} x {k} pixel "
            f"blocks first: about {k * k} times less, at a cost in accuracy where fine detail "
            f"matters) or shorter training segments (\"video\": {{\"segment_s\": 20}})")


def check_movie_config(cfg: cfgmod.RunConfig, files: MovieFiles, bold_path: str,
                       config_source: str) -> cfgmod.RunConfig:
    """Refuse, in one line, a configuration that cannot train a video model on ``files``
    (frames of another size, a precision the video path lacks); return it with the response
    file's areas that it lacks (:func:`niflow.runs.inputs.config_for_areas`, said as a
    warning)."""
    check_config(cfg, files.frame_shape, config_source)
    if cfg.train.precision != "float32":  # the video path has no autocast or float64 yet
        raise cfgmod.ConfigError(
            f"{config_source}: train.precision {cfg.train.precision!r} is for image models; "
            "video models train in float32 (drop --precision or set it to float32)")
    cfg, note = config_for_areas(cfg, list(files.responses), files.frame_shape, bold_path)
    if note:
        warnings.warn(note, AddedAreasWarning, stacklevel=3)
        check_config(cfg, files.frame_shape, config_source)
    check_areas(files.responses, cfg, bold_path)
    source = files.sources.get("stim", "frames")
    note = pooled_stimulus_note(cfg, files.frame_shape, source)
    if note is None and cfg.data.input_max_px == 0:
        note = large_frames_note(files.frame_shape, files.timing.fps, source)
    if note:
        warnings.warn(note, PooledStimulusWarning, stacklevel=3)
    return cfg


def select_movie_models(files: MovieFiles, test_runs: list[int], cfg: cfgmod.RunConfig,
                        voxel_index: dict[str, np.ndarray], *, runtime: Runtime,
                        say: Callable[[str], None] | None = None,
                        taps_s: float | None = None, device: str = "cpu",
                        out: Path | None = None, resume: bool = False,
                        ) -> tuple[MovieRun, MovieFit, dict]:
    """Train every candidate on the training runs; keep the best validation median r; then
    train ``select.members - 1`` more of its kind, each with its own seed (so its own
    validation runs and initial weights).

    This is the image path's selection (:func:`niflow.runs.units.train_units`): with a run
    folder ``out`` every model trains in a folder of its own, ``out/selection/<unit>/``,
    which ``resume`` continues (in memory without ``out``), and a diverged candidate or
    member is left out. The ensemble has ``select.members`` models (``member_rows`` is for
    images).

    Parameters
    ----------
    files : MovieFiles
        With the usable voxels only (``files.with_voxels(voxel_index)``).
    voxel_index : dict of str to ndarray of int
        Their columns in the response file.

    Returns
    -------
    run : MovieRun
        The ensemble on the CPU (``path`` ``out``), as a run folder loads it.
    fit : MovieFit
        The split, scalers and kept model's history.
    selection : dict
        :class:`~niflow.train.select.Selection` as a dict.
    """
    data = movie_data(files, test_runs, cfg)

    def train(model, d, c, folder, again):
        return train_video(model, d, c, folder, again, progress=say, device=device,
                           runtime=runtime)

    chosen, models, hists, selection = train_units(
        cfg, data, lambda c, d: build_video(c, d, taps_s), train, out, resume=resume,
        runtime=runtime, member=movie_member_data,
        planned_members=cfg.select.members, say=say)
    for m in models:
        m.cpu()
    fit = MovieFit(models[0], data.scalers, data.split.train, data.split.val, data.split.test,
                   hists[0], members=models[1:])
    run = MovieRun(chosen, fit.model.spatial, fit.scalers, voxel_index, None,
                   [m.spatial for m in fit.members], path=out, video=fit.model,
                   tr=files.timing.tr, video_members=fit.members)
    return run, fit, selection.to_dict()


def train_movie(stim_path: str | Path, bold_path: str | Path, out: str | Path,
                cfg: cfgmod.RunConfig, test_runs: list[int] | None = None, *,
                force: bool = False,
                progress: bool = True, taps_s: float | None = None,
                config_source: str = "config", device: str = "cpu",
                runtime: Runtime | None = None, resume: bool = False) -> MovieRun:
    """Train a video model on a movie data set and write the run folder ``out``.

    Parameters
    ----------
    stim_path, bold_path : path
        Stimulus and response files in the movie contract (:mod:`niflow.data.movie`).
    out : path
        The run folder (absent or empty, or ``force``).
    cfg : RunConfig
        Areas, readout, training settings and ``select.candidates``; validation takes about
        ``train.val_fraction`` of the training runs.
    test_runs : list of int, optional
        Run labels held out for testing; default the runs that ``<AREA>_repeats`` repeat,
        else the last run (:func:`niflow.data.movie.default_test_runs`, said with
        ``progress``).
    taps_s : float, optional
        Length of each area's causal temporal filter (seconds); default
        ``cfg.video.taps_s``.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    runtime : Runtime, optional
        Under ``torchrun`` every process trains (one segment each per step, gradients
        averaged) and rank 0 alone writes the folder.
    resume : bool
        Continue the interrupted run ``out`` (same inputs, configuration and split, or a
        one-line error): finished models are loaded, the interrupted one continues from
        its last epoch's checkpoint, the rest train; the outputs are those of an
        uninterrupted run. A finished run raises :class:`~niflow.runs.folder.RunComplete`.

    Returns
    -------
    MovieRun

    Raises
    ------
    DataError, ConfigError, RunError
        One line each, before anything is written.
    """
    out = Path(out)
    files = read_movie(stim_path, bold_path, cfg.data.stim_variable)
    if test_runs is None:
        test_runs, why = default_test_runs(files)
        if progress:
            _say(True)(f"test runs {test_runs}: {why} (--test-runs to choose)")
    test_runs = check_test_runs(files.timing, [int(r) for r in test_runs],
                                files.sources["bold"])
    cfg = check_movie_config(cfg, files, str(bold_path), config_source)
    train, val, test = movie_split(files.timing, test_runs, cfg.train.val_fraction,
                                   cfg.train.seed)
    # the repeats' shapes are checked here too, before anything is written; repeats of
    # runs other than the test runs give no noise ceiling (a warning), not a wrong one
    none = np.zeros(0, dtype=np.int64)
    repeats = {a: files.test_repeats(a, test_runs, none)[0] for a in files.responses}
    voxel_index, notes = usable_voxel_columns(files.responses, np.concatenate([train, val]),
                                              files.sources["bold"], repeats)
    notes_ceiling = [files.test_repeats(a, test_runs, voxel_index[a])[1]
                     for a in files.responses]
    notes_ceiling = [note for note in notes_ceiling if note is not None]
    check_run_dir(out, force, resume)
    runtime = runtime or Runtime()
    if runtime.distributed:
        import torch.distributed as dist

        dist.barrier()  # every process has checked the folder before rank 0 creates it
    started = time.time()
    say = _say(progress and runtime.is_main)
    if runtime.is_main:
        for note in notes:
            warnings.warn(note, DroppedVoxelsWarning, stacklevel=2)
        for note in notes_ceiling:
            warnings.warn(note, stacklevel=2)
    files = files.with_voxels(voxel_index)
    split = {"kind": "movie", "train": train, "val": val, "test": test,
             "train_runs": sorted({int(r) for r in files.timing.volume_run[train]}),
             "val_runs": sorted({int(r) for r in files.timing.volume_run[val]}),
             "test_runs": test_runs, "tr": files.timing.tr, "fps": files.timing.fps}

    def start_folder(folder: Path) -> None:
        cfgmod.save(cfg, folder / "config.json")
        atomic_write_text(folder / "split.json", json.dumps(_jsonable(split)) + "\n")
        _write_run_info(folder, cfg, files.sources, started)

    if resume:
        note = check_resume(out, cfg, _Recorded(split), files.sources, selection=True)
        if say is not None:
            say(note)
    elif runtime.is_main:
        _create_run_dir(out, force, start_folder)
    run, fit, selection = select_movie_models(files, test_runs, cfg, voxel_index,
                                              runtime=runtime, say=say, taps_s=taps_s,
                                              device=device, out=out, resume=resume)
    if not runtime.is_main:
        return run
    if cfg.select.candidates or cfg.select.members > 1:
        atomic_write_text(out / "selection.json", json.dumps(_jsonable(selection), indent=2)
                          + "\n")
    movie_outputs(run, files, fit, test_runs)
    info = json.loads((out / "run.json").read_text())
    info["finished"] = _timestamp(time.time())
    info["training_seconds"] = float(selection["seconds"])
    atomic_write_text(out / "run.json", json.dumps(info, indent=2) + "\n")
    remove_units(out)  # a finished run never resumes
    return run


class _Recorded:
    """A movie split as ``split.json`` holds it (what :func:`check_resume` compares)."""

    def __init__(self, split: dict) -> None:
        self._split = json.loads(json.dumps(_jsonable(split)))

    def to_dict(self) -> dict:
        return self._split


def movie_outputs(run: MovieRun, files: MovieFiles, fit: MovieFit,
                  test_runs: list[int]) -> None:
    """Write weights, log, metrics, per-voxel tables, predictions and figures of a movie run."""
    from niflow import figures as plots

    out = run.path
    if out is None:
        raise RunError("a movie run needs a folder to write its outputs")
    video = run.video
    assert video is not None
    save_movie_model(run, out / "model.pt")
    write_log(out, fit.history.epochs)
    test = fit.test
    pred = fit.predict(files, test)
    hrf = ensemble_hrf_parameters(run.videos)
    rows, metrics, stats, measured = [], {}, {}, {}
    peaks_shown = {}
    for area, p in pred.items():
        true = files.responses[area][test].astype(np.float64)
        repeats = files.test_repeats(area, test_runs)[0]
        st = voxel_statistics(p, true, repeats, n_permutations=0)
        stats[area] = {"voxel": run.voxel_index[area], "stats": st,
                       "summary": area_summary(st, None if repeats is None else
                                               repeats.shape[0])}
        measured[f"measured_{area}"] = true.astype(np.float32)
        prf = run.receptive_fields(area)
        fitted = prf.get("prf_sigma_fit", prf["prf_sigma"])
        peak, fwhm = hrf[area]["hrf_peak_s"], hrf[area]["hrf_fwhm_s"]
        r = st["r"]
        good = r > 0.3
        metrics[area] = {**summarize(r), "median_noise_ceiling":
                         stats[area]["summary"]["median_noise_ceiling"],
                         "median_r_normalised": stats[area]["summary"]["median_r_normalised"],
                         "median_hrf_peak_s": float(np.median(peak)),
                         "median_hrf_peak_s_r_above_0.3": (float(np.median(peak[good]))
                                                           if good.any() else None)}
        for j in range(r.size):
            rows.append([area, int(run.voxel_index[area][j]), r[j], st["r2"][j],
                         prf["prf_x"][j], prf["prf_y"][j], prf["prf_sigma"][j], fitted[j],
                         peak[j], fwhm[j], st["noise_ceiling"][j]])
        order = np.argsort(-np.nan_to_num(r, nan=-2))[:8]
        maps = spatial_maps(run.model, area)
        plots.plot_receptive_fields(
            maps[order], run.model.geometry(area), run.voxel_index[area][order], r[order],
            (prf["prf_x"][order], prf["prf_y"][order]), area, out / "figures" / f"rf_{area}.png",
            files.frame_shape[1:], visual_field_deg=run.config.data.visual_field_deg)
        kernel = np.mean([m.hrf[area].kernel().detach().double().cpu().numpy()
                          for m in run.videos], axis=0)
        lags = np.arange(1, kernel.shape[1] + 1) / video.fps
        plots.plot_hrfs(kernel[order[:6]], lags, run.voxel_index[area][order[:6]],
                        r[order[:6]], area, out / "figures" / f"hrf_{area}.png")
        peaks_shown[area] = peak[good] if good.any() else peak
    plots.plot_hrf_latencies(peaks_shown, out / "figures" / "hrf_latency.png",
                             "voxels with held-out r > 0.3, or all where none")
    first = run.config.areas[0].name
    plots.plot_kernels(run.model.graph.areas[first].kernel_weights().detach().numpy(), first,
                       out / "figures" / f"kernels_{first}.png")
    plots.plot_training(fit.history.epochs, out / "figures" / "training.png",
                        fit.history.best_epoch or None)
    save_npz(out / "predictions.npz", {**{a: p.astype(np.float32) for a, p in pred.items()},
                                       **measured, "test_rows": test.astype(np.int64)})
    _write_csv(out / VOXELS_CSV, ["area", "voxel", "r_test", "r2_test", "prf_x", "prf_y",
                                  "prf_sigma", "prf_sigma_fit", "hrf_peak_s", "hrf_fwhm_s",
                                  "noise_ceiling"], rows)
    write_statistics(stats, out, {"test_runs": test_runs, "n_test_volumes": int(test.size),
                                  "noise_ceiling": CEILING_NOTE,
                                  "p_values": TIME_SERIES_P_NOTE})
    summary = {"kind": "movie", "areas": metrics, "n_test_rows": int(test.size),
               "test_runs": test_runs,
               "training": {"best_epoch": fit.history.best_epoch,
                            "epochs_run": len(fit.history.epochs),
                            "best_val_median_r": (float(fit.history.best_score)
                                                  if np.isfinite(fit.history.best_score)
                                                  else None)}}
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    # information flow on the test volumes (the ensemble's), mean features from training
    flow = (movie_information_flow(run.videos, files, test, {a: files.responses[a][test]
                                                             for a in pred}, fit.train)
            if test.size >= 3 else None)
    write_science_outputs(run, {}, flow, TIME_SERIES_P_NOTE)
