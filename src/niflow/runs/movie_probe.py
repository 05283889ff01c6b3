"""The in-silico pRF-mapping experiment on a movie run: the standard moving-bar sweep through
the video model, and the classic Gaussian pRF + HRF fit on its predicted volumes.

The sweep is :func:`niflow.data.simulate.prf_mapping.bar_sweep_run` at the run's frame rate
and TR (8 directions, checkerboard bars an eighth of the field wide stepping once per TR,
blanks after every second sweep); the model predicts every volume of it
(:func:`niflow.train.segments.predict_video`), and :func:`niflow.evaluate.prf_fit.fit_prf` fits
each voxel's prediction with the bar apertures, choosing the HRF peak among 3-8 s. The
in-silico centres should land on the readout's; the in-silico HRF peak should be the model's
learned one when the model is close to linear in the aperture.

Files (into the run folder, or ``out_dir``)::

    probe_voxels.csv   area, voxel, insilico_x, insilico_y, insilico_sigma,
                       insilico_hrf_peak_s, insilico_fit_r, readout_prf_x, readout_prf_y,
                       readout_prf_sigma, hrf_peak_s (learned), centre_distance, then the
                       drifting gratings' tuning (:func:`niflow.interpret.movie_tuning.
                       movie_tuning`): preferred_orientation, orientation_selectivity,
                       preferred_sf (cycles/px; preferred_sf_cpd with
                       data.visual_field_deg), preferred_direction, direction_selectivity,
                       preferred_tf_hz, transient_index
    probe.json         the stimuli, per-area medians and the checks
    figures/probe_prf.png, probe_tuning.png, probe_motion.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from niflow.data.movie import MovieFiles, MovieTiming
from niflow.data.simulate.prf_mapping import bar_sweep_run
from niflow.evaluate.prf_fit import PRFFit, fit_prf
from niflow.evaluate.statistics import read_table, write_table
from niflow.interpret.movie_tuning import movie_tuning
from niflow.interpret.receptive_fields import degrees_per_pixel
from niflow.runs.outputs import PROBE_CSV, PROBE_JSON, VOXELS_CSV, _write_json
from niflow.runs.run import MovieRun, RunError
from niflow.train.video import ensemble_hrf_parameters, predict_ensemble

__all__ = ["movie_bar_sweep", "probe_movie_run"]

PROBE_PEAKS_S = tuple(np.arange(3.0, 8.01, 0.5))
MOVIE_WELL_PREDICTED_R = 0.3
TUNING_COLUMNS = ("preferred_orientation", "orientation_selectivity", "preferred_sf",
                  "preferred_direction", "direction_selectivity", "preferred_tf_hz",
                  "transient_index")


def movie_bar_sweep(run: MovieRun) -> tuple[MovieFiles, np.ndarray]:
    """The standard bar sweep as a one-run movie data set at the run's fps and TR.

    Returns
    -------
    files : MovieFiles
        Frames in the model's shape (grey repeated over colour channels), no responses.
    aperture : ndarray of shape (n_frames, height, width), uint8 0/1
    """
    video = run.video
    if video is None:
        raise RunError("not a movie run: the pRF-mapping probe needs a video model")
    c, h, w = video.frame_shape
    stim, aperture = bar_sweep_run((h, w), video.fps, run.tr)
    n_vol = int(np.floor(len(stim) / video.fps / run.tr + 1e-9))
    timing = MovieTiming(video.fps, run.tr, np.zeros(len(stim), np.int64),
                         np.zeros(n_vol, np.int64))
    frames = np.repeat(stim[..., None], 3, axis=3) if c == 3 else stim
    return MovieFiles(frames, timing, {}, {}, {"stim": "bar sweep (niflow probe)",
                                               "bold": "model predictions"}), aperture


def _centre_checks(fit: PRFFit, readout: dict[str, np.ndarray], keep: np.ndarray) -> dict:
    ok = keep & np.isfinite(fit.x) & np.isfinite(readout["prf_x"])
    d = np.hypot(fit.x - readout["prf_x"], fit.y - readout["prf_y"])[ok]
    out = {"n_voxels": int(ok.sum()),
           "median_distance_px": float(np.median(d)) if d.size else None,
           "frac_below_2px": float(np.mean(d < 2)) if d.size else None}
    for key, a, b in (("x", fit.x, readout["prf_x"]), ("y", fit.y, readout["prf_y"]),
                      ("sigma", fit.sigma, readout["prf_sigma"])):
        out[f"pearson_{key}" if key != "sigma" else "spearman_sigma"] = (
            None if ok.sum() < 3 else float(
                np.corrcoef(a[ok], b[ok])[0, 1] if key != "sigma"
                else stats.spearmanr(a[ok], b[ok])[0]))
    return out


def _median(x: np.ndarray) -> float | None:
    x = np.asarray(x, float)
    return float(np.median(x[np.isfinite(x)])) if np.isfinite(x).any() else None


def probe_movie_run(run: MovieRun, out_dir: str | Path | None = None) -> dict:
    """Run the bar sweep through a movie run's model and fit pRFs and HRFs to its predictions.

    Parameters
    ----------
    run : MovieRun
    out_dir : path, optional
        Default: the run folder.

    Returns
    -------
    dict
        ``fits`` (per area :class:`~niflow.evaluate.prf_fit.PRFFit`), ``readout`` (per area
        the readout's ``prf_x``, ``prf_y``, ``prf_sigma`` and learned ``hrf_peak_s``, each of
        shape (V,)), ``checks`` and ``medians`` (per area, as written to ``probe.json``).
    """
    from niflow import figures as plots

    if out_dir is None and run.path is None:
        raise RunError("the run has no folder; give out_dir for the probe's outputs")
    out = Path(out_dir if out_dir is not None else run.path)
    files, aperture = movie_bar_sweep(run)
    volumes = np.arange(files.timing.n_volumes)
    pred = predict_ensemble(run.videos, files, volumes)
    learned = ensemble_hrf_parameters(run.videos)
    r_test = None
    if run.path is not None and (Path(run.path) / VOXELS_CSV).exists():
        t = read_table(Path(run.path) / VOXELS_CSV)
        r_test = {a: t["r_test"][t["area"] == a].astype(float) for a in pred}
    fits, readout, checks, medians = {}, {}, {}, {}
    cols: dict[str, list] = {k: [] for k in (
        "area", "voxel", "insilico_x", "insilico_y", "insilico_sigma", "insilico_hrf_peak_s",
        "insilico_fit_r", "readout_prf_x", "readout_prf_y", "readout_prf_sigma", "hrf_peak_s",
        "centre_distance", *TUNING_COLUMNS)}
    tuning = movie_tuning(run.videos)
    vf = getattr(run.config.data, "visual_field_deg", None)
    c, h, w = run.video.frame_shape
    if vf:
        cols["preferred_sf_cpd"] = []
    for area, p in pred.items():
        fit = fit_prf(aperture, p.astype(np.float64), files.timing, volumes=volumes,
                      peaks=PROBE_PEAKS_S)
        prf = run.receptive_fields(area)
        q = {"prf_x": np.asarray(prf["prf_x"], float), "prf_y": np.asarray(prf["prf_y"], float),
             "prf_sigma": np.asarray(prf["prf_sigma"], float),
             "hrf_peak_s": np.asarray(learned[area]["hrf_peak_s"], float)}
        fits[area], readout[area] = fit, q
        everyone = np.ones(fit.x.size, bool)
        good = (r_test[area] > MOVIE_WELL_PREDICTED_R) if r_test is not None else everyone
        ok = np.isfinite(fit.hrf_peak_s)
        checks[area] = {
            "all_voxels": _centre_checks(fit, q, everyone),
            f"r_test_above_{MOVIE_WELL_PREDICTED_R}": _centre_checks(fit, q, good),
            "hrf_peak_median_abs_diff_s": (float(np.median(np.abs(
                fit.hrf_peak_s[ok] - q["hrf_peak_s"][ok]))) if ok.any() else None),
            "hrf_peak_spearman": (float(stats.spearmanr(fit.hrf_peak_s[ok],
                                                        q["hrf_peak_s"][ok])[0])
                                  if ok.sum() >= 3 and np.ptp(fit.hrf_peak_s[ok]) > 0
                                  else None)}
        medians[area] = {"insilico_sigma": float(np.nanmedian(fit.sigma)),
                         "readout_prf_sigma": float(np.nanmedian(q["prf_sigma"])),
                         "insilico_hrf_peak_s": float(np.nanmedian(fit.hrf_peak_s)),
                         "hrf_peak_s": float(np.median(q["hrf_peak_s"])),
                         "insilico_fit_r": float(np.nanmedian(fit.r))}
        n = fit.x.size
        cols["area"] += [area] * n
        cols["voxel"] += [int(v) for v in run.voxel_index[area]]
        for key, vals in (("insilico_x", fit.x), ("insilico_y", fit.y),
                          ("insilico_sigma", fit.sigma), ("insilico_hrf_peak_s", fit.hrf_peak_s),
                          ("insilico_fit_r", fit.r), ("readout_prf_x", q["prf_x"]),
                          ("readout_prf_y", q["prf_y"]), ("readout_prf_sigma", q["prf_sigma"]),
                          ("hrf_peak_s", q["hrf_peak_s"]),
                          ("centre_distance", np.hypot(fit.x - q["prf_x"],
                                                       fit.y - q["prf_y"])),
                          *((k, tuning[area][k]) for k in TUNING_COLUMNS)):
            cols[key] += list(vals)
        if vf:
            cols["preferred_sf_cpd"] += list(tuning[area]["preferred_sf"]
                                             / degrees_per_pixel((h, w), vf))
        # named as the image probe's medians are (report.html reads either)
        medians[area].update({k: _median(tuning[area][k])
                              for k in ("orientation_selectivity", "direction_selectivity",
                                        "transient_index", "preferred_sf")})
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / PROBE_CSV, cols)
    _write_json(out / PROBE_JSON, {
        "kind": "movie",
        "stimuli": "bar sweep: 8 directions, checkerboard bars 1/8 of the field wide, one "
                   "step per TR, blanks after every second sweep; pRF = Gaussian overlap with "
                   "the binary apertures convolved with a canonical double-gamma HRF whose "
                   "peak is chosen per voxel (grid search by r, then least squares)",
        "fps": run.video.fps, "tr": run.tr, "n_volumes": int(volumes.size),
        "frame_size": [h, w], "hrf_peaks_s": list(PROBE_PEAKS_S),
        "tuning": "drifting gratings (niflow.interpret.movie_tuning: 8 directions, 5 "
                  "wavelengths, 0-4 Hz under half the frame rate), each voxel's drive "
                  "before the HRF over a grey screen's, read at its best condition",
        "well_predicted_r": MOVIE_WELL_PREDICTED_R, "visual_field_deg": vf,
        "medians": medians, "checks": checks})
    pairs = {a: {"readout_x": readout[a]["prf_x"], "readout_y": readout[a]["prf_y"],
                 "readout_sigma": readout[a]["prf_sigma"], "insilico_x": fits[a].x,
                 "insilico_y": fits[a].y, "insilico_sigma": fits[a].sigma} for a in fits}
    plots.plot_prf_agreement(pairs, out / "figures" / "probe_prf.png", "px")
    plots.plot_tuning({a: {k: tuning[a][k] for k in ("preferred_orientation",
                                                     "orientation_selectivity",
                                                     "preferred_sf")} for a in fits},
                      out / "figures" / "probe_tuning.png", "cycles/px")
    plots.plot_motion_tuning(tuning, out / "figures" / "probe_motion.png")
    return {"fits": fits, "readout": readout, "checks": checks, "medians": medians}
