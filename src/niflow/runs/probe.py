"""In-silico probes of a run: gratings and bars through the model, tuning and pRF tables, checks
against the readout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from niflow.evaluate.statistics import read_table, write_table
from niflow.interpret.probes import ProbeSettings
from niflow.runs.outputs import (
    GOOD_FIT_R,
    PROBE_CSV,
    PROBE_JSON,
    VOXELS_CSV,
    WELL_PREDICTED_R,
    _size_ecc_figure,
    _visual_field,
    _write_json,
    readout_prfs,
)
from niflow.runs.run import Run


def probe_checks(insilico: dict[str, dict[str, np.ndarray]],
                 readout: dict[str, dict[str, np.ndarray]],
                 r_test: dict[str, np.ndarray] | None, areas: list[str]) -> dict:
    """The retinotopy checks: in-silico vs readout centres, and later areas' sizes above
    earlier areas' at matched eccentricity (on both size measures).

    Voxels count when well predicted (held-out r > 0.5, if known) and, for sizes, when the
    bar-sweep Gaussian fits (fit r > 0.5).
    """
    from niflow.interpret.receptive_fields import compare_sizes

    checks: dict = {"well_predicted_r": WELL_PREDICTED_R, "good_fit_r": GOOD_FIT_R,
                    "centre_distance_px": {}, "sizes": {}}
    keep = {}
    for area in areas:
        p, q = insilico[area], readout[area]
        ok = np.isfinite(p["prf_x"]) & np.isfinite(q["prf_x"])
        if r_test is not None and area in r_test:
            ok &= r_test[area] > WELL_PREDICTED_R
        keep[area] = ok
        d = np.hypot(p["prf_x"] - q["prf_x"], p["prf_y"] - q["prf_y"])[ok]
        checks["centre_distance_px"][area] = {
            "n_voxels": int(ok.sum()),
            "median": float(np.median(d)) if d.size else None,
            "frac_below_2px": float((d < 2).mean()) if d.size else None}
    for i, a in enumerate(areas):
        for b in areas[i + 1:]:
            entry = {}
            for name, src in (("insilico", insilico), ("readout", readout)):
                ka, kb = keep[a].copy(), keep[b].copy()
                if name == "insilico":
                    ka &= insilico[a]["fit_r"] > GOOD_FIT_R
                    kb &= insilico[b]["fit_r"] > GOOD_FIT_R
                c = compare_sizes(src[a]["eccentricity"][ka], src[a]["prf_sigma"][ka],
                                  src[b]["eccentricity"][kb], src[b]["prf_sigma"][kb])
                entry[name] = {"bin_edges_px": c["bin_edges"], f"median_sigma_{a}": c["median_a"],
                               f"median_sigma_{b}": c["median_b"],
                               "frac_bins_larger": c["frac_bins_b_larger"],
                               "larger_everywhere": c["b_larger_everywhere"],
                               f"line_{a}": c["line_a"], f"line_{b}": c["line_b"]}
            checks["sizes"][f"{b}>{a}"] = entry
    return checks


def probe_run(run: Run, out_dir: str | Path | None = None,
              settings: ProbeSettings | None = None,
              visual_field_deg: float | None = None) -> dict:
    """Run :func:`niflow.interpret.probes.probe` and write its table, checks and figures.

    Parameters
    ----------
    run : niflow.Run
    out_dir : path, optional
        Default: the run folder. Gets ``probe_voxels.csv``, ``probe.json`` and
        ``figures/probe_prf.png``, ``probe_tuning.png``, ``size_ecc.png``.

    Returns
    -------
    dict with ``insilico`` (per area :func:`probe` results), ``readout`` and ``checks``; for
    a movie run (:class:`~niflow.runs.run.MovieRun`) the bar-sweep pRF-mapping probe of
    :func:`niflow.runs.movie_probe.probe_movie_run` and its result (``settings`` and
    ``visual_field_deg`` do not apply).
    """
    from niflow import figures as plots
    from niflow.interpret.probes import probe
    from niflow.runs.movie_probe import probe_movie_run
    from niflow.runs.run import MovieRun, RunError

    if isinstance(run, MovieRun):
        return probe_movie_run(run, out_dir)

    if out_dir is None and run.path is None:
        raise RunError("the run has no folder; give out_dir for the probe's outputs")
    out = Path(out_dir if out_dir is not None else run.path)
    vf = _visual_field(run, visual_field_deg)
    insilico = probe(run, settings, vf)
    readout = readout_prfs(run, vf)
    areas = list(insilico)
    r_test = None
    if run.path is not None and (Path(run.path) / VOXELS_CSV).exists():
        t = read_table(Path(run.path) / VOXELS_CSV)
        r_test = {a: t["r_test"][t["area"] == a].astype(float) for a in areas}
    checks = probe_checks(insilico, readout, r_test, areas)

    cols: dict[str, list] = {"area": [], "voxel": []}
    keys = [k for k in insilico[areas[0]]]
    for k in keys:
        cols[k] = []
    for k in ("readout_prf_x", "readout_prf_y", "readout_prf_sigma", "centre_distance"):
        cols[k] = []
    for area in areas:
        p, q = insilico[area], readout[area]
        cols["area"] += [area] * len(p["prf_x"])
        cols["voxel"] += [int(v) for v in run.voxel_index[area]]
        for k in keys:
            cols[k] += list(p[k])
        cols["readout_prf_x"] += list(q["prf_x"])
        cols["readout_prf_y"] += list(q["prf_y"])
        cols["readout_prf_sigma"] += list(q["prf_sigma"])
        cols["centre_distance"] += list(np.hypot(p["prf_x"] - q["prf_x"],
                                                 p["prf_y"] - q["prf_y"]))
    write_table(out / PROBE_CSV, cols)
    medians = {a: {k: float(np.nanmedian(insilico[a][k])) for k in
                   ("prf_sigma", "fit_r", "orientation_selectivity", "orientation_bandwidth",
                    "preferred_sf")} for a in areas}
    for a in areas:
        medians[a]["readout_prf_sigma"] = float(np.nanmedian(readout[a]["prf_sigma"]))
    _write_json(out / PROBE_JSON, {
        "stimuli": "bar sweep (textured bars, pRF = 2-D Gaussian fit, linear summation of "
                   "the aperture) and full-field gratings (orientations x wavelengths x "
                   "phases)", "visual_field_deg": vf, "medians": medians, "checks": checks})

    unit = "deg" if vf else "px"
    # in degrees: centred on the image, y up; in pixels: stimulus coordinates
    keys = ({"x": "x_deg", "y": "y_deg", "sigma": "sigma_deg"} if vf else
            {"x": "prf_x", "y": "prf_y", "sigma": "prf_sigma"})
    keep = {a: (r_test[a] > WELL_PREDICTED_R) if r_test is not None else
            np.ones(len(insilico[a]["prf_x"]), bool) for a in areas}
    pairs = {}
    for a in areas:
        k = keep[a]
        pairs[a] = {f"{src}_{c}": np.asarray(d[a][key])[k] for src, d in
                    (("readout", readout), ("insilico", insilico)) for c, key in keys.items()}
    plots.plot_prf_agreement(pairs, out / "figures" / "probe_prf.png", unit)
    sf_unit = "cycles/deg" if vf else "cycles/px"
    plots.plot_tuning({a: {"preferred_orientation": insilico[a]["preferred_orientation"],
                           "orientation_selectivity": insilico[a]["orientation_selectivity"],
                           "preferred_sf": insilico[a]["preferred_sf_cpd" if vf else
                                                       "preferred_sf"]} for a in areas},
                      out / "figures" / "probe_tuning.png", sf_unit)
    _size_ecc_figure(out, readout, insilico, keep, vf)
    return {"insilico": insilico, "readout": readout, "checks": checks}
