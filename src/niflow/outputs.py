"""Science outputs written into a run folder (statistics, pRF parameters, flow, probes,
baselines, NIfTI maps). The HTML page that gathers them is :mod:`niflow.report`.

Files this module adds to a run folder (every one written atomically)::

    voxels.csv          extra columns after the original eight: p_perm, q_fdr (permutation
                        test of r on the test rows, Benjamini-Hochberg per area), prf_ecc,
                        prf_angle, prf_n_lobes, prf_multipole, prf_x_deg, prf_y_deg,
                        prf_ecc_deg, prf_sigma_deg (NaN without data.visual_field_deg)
    flow.csv            per (target, source): held-out r with the source ablated, weight norms
    stats_voxels.csv    `niflow evaluate`: r, R², p, q, noise ceiling, normalised r per voxel
    stats.json          `niflow evaluate`: per-area summaries, ceiling method
    probe_voxels.csv    `niflow probe`: in-silico pRF and tuning per voxel, readout pRF beside
    probe.json          `niflow probe`: per-area medians and the retinotopy checks
    baseline_<f>.csv    `niflow baseline`: ridge on pixels / gabor, same test rows
    figures/            coverage.png, size_ecc.png, flow.png, probe_prf.png, probe_tuning.png,
                        noise_ceiling.png, baselines.png, rf_chosen_<area>.png
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from niflow._atomic import atomic_write_text
from niflow.evaluate import read_table, write_table

if TYPE_CHECKING:  # annotations only: importing these here would be circular
    from niflow.data.dataset import NIFData
    from niflow.interpret import FlowResult, ProbeSettings
    from niflow.run import Run

WELL_PREDICTED_R = 0.5
GOOD_FIT_R = 0.5
VOXELS_CSV = "voxels.csv"
FLOW_CSV = "flow.csv"
PROBE_CSV = "probe_voxels.csv"
PROBE_JSON = "probe.json"
EXTRA_VOXEL_COLUMNS = ("p_perm", "q_fdr", "prf_ecc", "prf_angle", "prf_n_lobes",
                       "prf_multipole", "prf_x_deg", "prf_y_deg", "prf_ecc_deg",
                       "prf_sigma_deg")


def _jsonable(obj: object) -> object:
    """Arrays → lists, NaN/inf → None, numpy scalars → Python (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _write_json(path: Path, payload: dict) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(payload), indent=2) + "\n")


def _visual_field(run: Run, visual_field_deg: float | None) -> float | None:
    if visual_field_deg is not None:
        return float(visual_field_deg)
    return getattr(run.config.data, "visual_field_deg", None)


def readout_prfs(run: Run, visual_field_deg: float | None = None,
                 ) -> dict[str, dict[str, np.ndarray]]:
    """:func:`niflow.interpret.receptive_fields` of every area with voxels, with the
    centre and size the run reports (:meth:`niflow.Run.receptive_fields`: the ensemble's,
    sizes under the eccentricity prior)."""
    from niflow.interpret import receptive_fields, with_prf

    vf = _visual_field(run, visual_field_deg)
    size = tuple(run.model.image_shape[1:])
    return {a: with_prf(receptive_fields(run.model, a, vf), run.receptive_fields(a), size, vf)
            for a in run.model.areas_with_voxels}


def extend_run_outputs(run: Run, data: NIFData, n_permutations: int = 1000, seed: int = 0) -> None:
    """Add significance and retinotopy columns, the information-flow table and figures.

    Called at the end of training (``write_outputs``) once ``voxels.csv`` and
    ``metrics.json`` exist; the original columns and keys are kept as they are.

    Parameters
    ----------
    run : niflow.Run
        With ``run.path`` set.
    data : niflow.data.NIFData
        The data the run was trained on (test rows give the p-values and the ablations).
    """
    from niflow import plots
    from niflow.evaluate import voxel_statistics
    from niflow.interpret import information_flow
    from niflow.train import predict

    out = Path(run.path)
    test = data.split.test
    vf = _visual_field(run, None)
    prfs = readout_prfs(run)
    pred = predict(run.model, data.stim[test]) if test.size >= 3 else {}
    extra: dict[str, dict[str, np.ndarray]] = {}
    for area in data.areas:
        p = prfs[area]
        n = len(p["prf_x"])
        nan = np.full(n, np.nan)
        if area in pred:
            st = voxel_statistics(pred[area], data.raw[area][test],
                                  n_permutations=n_permutations, seed=seed)
            pv, qv = st["p_perm"], st["q_fdr"]
        else:
            pv, qv = nan, nan
        extra[area] = {"p_perm": pv, "q_fdr": qv, "prf_ecc": p["eccentricity"],
                       "prf_angle": p["polar_angle"], "prf_n_lobes": p["n_lobes"],
                       "prf_multipole": p["multipole"].astype(int),
                       "prf_x_deg": p.get("x_deg", nan), "prf_y_deg": p.get("y_deg", nan),
                       "prf_ecc_deg": p.get("eccentricity_deg", nan),
                       "prf_sigma_deg": p.get("sigma_deg", nan)}
    _append_voxel_columns(out / VOXELS_CSV, extra, data.voxel_index)
    _extend_metrics(out / "metrics.json", extra, n_permutations)

    # information flow on the test rows, mean replacement from the training rows
    if test.size >= 3:
        flow = information_flow(run.model, data.stim[test],
                                {a: data.raw[a][test] for a in data.areas},
                                reference_stim=data.stim[data.split.train])
        write_flow(flow, out)
    table = read_table(out / VOXELS_CSV)
    keep = _well_predicted(table)
    image_size = tuple(run.model.image_shape[1:])
    plots.plot_coverage(prfs, image_size, out / "figures" / "coverage.png", vf, keep)
    _size_ecc_figure(out, prfs, None, keep, vf)


def _well_predicted(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per area: r_test above WELL_PREDICTED_R (all voxels if nothing was scored)."""
    out = {}
    for area in dict.fromkeys(table["area"].tolist()):
        r = table["r_test"][table["area"] == area].astype(float)
        out[area] = r > WELL_PREDICTED_R if np.isfinite(r).any() else np.ones(r.size, bool)
    return out


def _append_voxel_columns(path: Path, extra: dict[str, dict[str, np.ndarray]],
                          voxel_index: dict[str, np.ndarray]) -> None:
    """Add columns to ``voxels.csv`` keeping its existing text; rows are matched by
    (area, voxel) so the original order is whatever write_outputs chose."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    head, body = rows[0], rows[1:]
    if set(EXTRA_VOXEL_COLUMNS) & set(head):
        return  # already extended (e.g. outputs rewritten after a resume)
    pos = {a: {int(v): j for j, v in enumerate(voxel_index[a])} for a in extra}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head + list(EXTRA_VOXEL_COLUMNS))
    ia, iv = head.index("area"), head.index("voxel")
    for row in body:
        j = pos[row[ia]][int(row[iv])]
        w.writerow(row + [_fmt(extra[row[ia]][c][j]) for c in EXTRA_VOXEL_COLUMNS])
    atomic_write_text(path, buf.getvalue())


def _fmt(v: float) -> str:
    v = float(v)
    if not math.isfinite(v):
        return "nan"
    return str(int(v)) if v == int(v) and abs(v) < 1e9 else f"{v:.6g}"


def _extend_metrics(path: Path, extra: dict[str, dict[str, np.ndarray]],
                    n_permutations: int, alpha: float = 0.05) -> None:
    if not path.exists():
        return
    metrics = json.loads(path.read_text())
    for area, cols in extra.items():
        m = metrics.get("areas", {}).get(area)
        if m is None:
            continue
        q = cols["q_fdr"]
        m["frac_significant"] = (float(np.mean(np.nan_to_num(q, nan=1.0) <= alpha))
                                 if np.isfinite(q).any() else None)
        m["n_multipole"] = int(np.sum(cols["prf_multipole"]))
    metrics["significance"] = (f"one-sided permutation test of r on the test rows "
                               f"({n_permutations} shuffles), Benjamini-Hochberg FDR {alpha} "
                               f"per area")
    _write_json(path, metrics)


def write_flow(flow: list[FlowResult], out_dir: str | Path) -> Path:
    """Write ``flow.csv`` and ``figures/flow.png`` from :func:`information_flow` results."""
    from niflow import plots

    out = Path(out_dir)
    rows = [f.row() for f in flow]
    cols = {k: [r[k] for r in rows] for k in rows[0]} if rows else {"target": []}
    path = write_table(out / FLOW_CSV, cols)
    if rows:
        plots.plot_flow(rows, {(f.target, f.source): f.channel_norms for f in flow},
                        out / "figures" / "flow.png")
    return path


def _size_ecc_figure(out: Path, readout: dict, insilico: dict | None,
                     keep: dict[str, np.ndarray], vf: float | None) -> None:
    from niflow import plots

    key_e, key_s, unit = ("eccentricity_deg", "sigma_deg", "deg") if vf else (
        "eccentricity", "prf_sigma", "px")
    panels = [("readout-map pRFs (size excludes the features' extent)",
               {a: (p[key_e][keep.get(a, slice(None))], p[key_s][keep.get(a, slice(None))])
                for a, p in readout.items()})]
    if insilico is not None:
        panels.append(("in-silico bar-sweep pRFs (whole model)",
                       {a: (p[key_e][keep.get(a, slice(None))],
                            p[key_s][keep.get(a, slice(None))])
                        for a, p in insilico.items()}))
    plots.plot_size_eccentricity(panels, out / "figures" / "size_ecc.png", unit)


def probe_checks(insilico: dict[str, dict[str, np.ndarray]],
                 readout: dict[str, dict[str, np.ndarray]],
                 r_test: dict[str, np.ndarray] | None, areas: list[str]) -> dict:
    """The retinotopy checks: in-silico vs readout centres, and later areas' sizes above
    earlier areas' at matched eccentricity (on both size measures).

    Voxels count when well predicted (held-out r > 0.5, if known) and, for sizes, when the
    bar-sweep Gaussian fits (fit r > 0.5).
    """
    from niflow.interpret import compare_sizes

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
    """Run :func:`niflow.interpret.probe` and write its table, checks and figures.

    Parameters
    ----------
    run : niflow.Run
    out_dir : path, optional
        Default: the run folder. Gets ``probe_voxels.csv``, ``probe.json`` and
        ``figures/probe_prf.png``, ``probe_tuning.png``, ``size_ecc.png``.

    Returns
    -------
    dict with ``insilico`` (per area :func:`probe` results), ``readout`` and ``checks``.
    """
    from niflow import plots
    from niflow.interpret import probe
    from niflow.run import RunError

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


def evaluate_folder(run: Run, stim: np.ndarray, responses: dict[str, np.ndarray],
                    rows: np.ndarray | None, repeats: dict[str, np.ndarray] | None,
                    out_dir: str | Path, n_permutations: int = 1000, alpha: float = 0.05,
                    seed: int = 0, info: dict | None = None) -> dict[str, dict]:
    """:func:`niflow.evaluate.evaluate_run` + ``stats_voxels.csv``, ``stats.json`` and, with
    repeats, ``figures/noise_ceiling.png`` in ``out_dir``."""
    from niflow import plots
    from niflow.evaluate import evaluate_run, write_statistics

    results = evaluate_run(run, stim, responses, rows, repeats, n_permutations=n_permutations,
                           alpha=alpha, seed=seed)
    write_statistics(results, out_dir, {"rows": None if rows is None else
                                        [int(i) for i in rows], **(info or {})})
    ceil = {a: r["stats"]["noise_ceiling"] for a, r in results.items()}
    if any(np.isfinite(c).any() for c in ceil.values()):
        plots.plot_noise_ceiling({a: r["stats"]["r"] for a, r in results.items()}, ceil,
                                 Path(out_dir) / "figures" / "noise_ceiling.png")
    return results


def baseline_folder(stim: np.ndarray, responses: dict[str, np.ndarray], out: str | Path,
                    kinds: list[str], test_rows: np.ndarray | None = None,
                    n_permutations: int = 1000) -> dict[str, dict]:
    """Ridge baselines written into ``out``; a run folder there sets the split and voxels.

    When ``out`` holds a run (``split.json``), its test rows are used (training: all other
    rows) and only the run's voxels are fitted; otherwise ``test_rows`` is required.
    ``figures/baselines.png`` compares every baseline in the folder with NIF when the run's
    ``voxels.csv`` is there.

    Returns
    -------
    dict of feature set to :func:`niflow.baselines.baseline_scores` results
    """
    from niflow.baselines import baseline_scores, write_baseline
    from niflow.data.dataset import scale_stimuli
    from niflow.data.io import DataError

    out = Path(out)
    voxel_index = None
    if (out / "split.json").exists():
        test = np.asarray(json.loads((out / "split.json").read_text())["test"], dtype=np.int64)
        if (out / VOXELS_CSV).exists():
            t = read_table(out / VOXELS_CSV)
            voxel_index = {a: t["voxel"][t["area"] == a].astype(np.int64)
                           for a in dict.fromkeys(t["area"].tolist())}
    elif test_rows is None:
        raise DataError(f"{out}: not a run folder (no split.json); give the test rows")
    else:
        test = np.asarray(test_rows, dtype=np.int64)
    if test.size < 3:
        raise DataError(f"{test.size} test rows: a baseline needs at least 3 to be scored")
    if len(stim) <= int(test.max()):
        raise DataError(f"the test rows go up to {int(test.max())} but there are only "
                        f"{len(stim)} stimuli")
    for area, r in responses.items():
        if voxel_index is not None and area in voxel_index and voxel_index[area].size and \
                r.shape[1] <= int(voxel_index[area].max()):
            raise DataError(f"area {area!r} has {r.shape[1]} voxels; the run used voxel "
                            f"{int(voxel_index[area].max())}")
    x = scale_stimuli(stim)
    results = {}
    for kind in kinds:
        res = baseline_scores(x, responses, test, kind, voxel_index=voxel_index,
                              n_permutations=n_permutations)
        write_baseline(res, out, kind, {"test_rows": [int(i) for i in test]})
        results[kind] = res
    _baseline_figure(out)
    return results


def _baseline_figure(out: Path) -> None:
    from niflow import plots

    if not (out / VOXELS_CSV).exists():
        return
    nif = read_table(out / VOXELS_CSV)
    areas = list(dict.fromkeys(nif["area"].tolist()))
    nif_r, other = {}, {}
    for path in sorted(out.glob("baseline_*.csv")):
        kind = path.stem[len("baseline_"):]
        b = read_table(path)
        other[kind] = {}
        for a in areas:
            m = nif["area"] == a
            lookup = {int(v): r for v, r in zip(b["voxel"][b["area"] == a],
                                                b["r_test"][b["area"] == a], strict=True)}
            vox = nif["voxel"][m].astype(int)
            if all(v in lookup for v in vox):
                other[kind][a] = np.array([lookup[v] for v in vox])
                nif_r[a] = nif["r_test"][m].astype(float)
    if other and nif_r:
        plots.plot_model_comparison(nif_r, other, out / "figures" / "baselines.png")


def chosen_voxel_figures(run: Run, voxels: dict[str, list[int]], out_dir: str | Path,
                         ) -> list[Path]:
    """``figures/rf_chosen_<area>.png``: readout maps of the given voxels (input columns)."""
    from niflow import plots
    from niflow.data.io import DataError
    from niflow.interpret import spatial_maps

    out = []
    table = read_table(Path(run.path) / VOXELS_CSV) if run.path else None
    for area, ids in voxels.items():
        if area not in run.model.areas_with_voxels:
            raise DataError(f"--voxels: no area {area!r}; areas are "
                            f"{run.model.areas_with_voxels}")
        index = {int(v): j for j, v in enumerate(run.voxel_index[area])}
        missing = [v for v in ids if v not in index]
        if missing:
            raise DataError(f"--voxels: area {area!r} has no voxel(s) {missing} (columns "
                            f"of the input that were fitted)")
        rows = np.array([index[v] for v in ids])
        maps = spatial_maps(run.model, area)[rows]
        geo = run.model.geometry(area)
        from niflow.interpret import prf_from_maps

        prf = prf_from_maps(maps, geo.scale, geo.offset)
        r = np.full(len(rows), np.nan)
        if table is not None:
            r = table["r_test"][table["area"] == area].astype(float)[rows]
        out.append(plots.plot_receptive_fields(
            maps, geo, np.array(ids), r, (prf["prf_x"], prf["prf_y"]), area,
            Path(out_dir) / "figures" / f"rf_chosen_{area}.png",
            tuple(run.model.image_shape[1:])))
    return out


NIFTI_MEASURES = {
    VOXELS_CSV: ("r_test", "r2_test", "q_fdr", "prf_x", "prf_y", "prf_sigma", "prf_ecc",
                 "prf_angle", "prf_ecc_deg", "prf_sigma_deg"),
    "stats_voxels.csv": ("r_normalised", "noise_ceiling"),
    PROBE_CSV: ("prf_x", "prf_y", "prf_sigma", "eccentricity", "polar_angle",
                "preferred_orientation", "orientation_selectivity", "preferred_sf"),
}


def export_nifti(run_dir: str | Path, masks: dict[str, str | Path],
                 out_dir: str | Path | None = None) -> list[Path]:
    """Write a run's per-voxel results as 3-D NIfTI images in each area's mask space.

    The run must have been trained on responses read with
    :func:`niflow.data.io.load_nifti_responses` and these masks (a voxel's input column is
    its index in the mask's C-ordered voxel list). From ``voxels.csv``: held-out r, R², FDR
    q, readout pRF centre, size, eccentricity, polar angle (and degrees if known); from
    ``stats_voxels.csv`` (``niflow evaluate``): noise-normalised r and noise ceiling; from
    ``probe_voxels.csv`` (``niflow probe``): the in-silico pRF and tuning, as
    ``insilico_*``. Measures with no finite value are skipped.

    Returns
    -------
    list of Path
        ``<out_dir>/<area>_<measure>.nii.gz`` (default ``out_dir``: ``run_dir/nifti``).
    """
    from niflow.data.io import DataError, voxel_maps_to_nifti
    from niflow.run import RunError

    run_dir = Path(run_dir)
    if not (run_dir / VOXELS_CSV).exists():
        raise RunError(f"{run_dir}: not a finished run (no {VOXELS_CSV})")
    out = Path(out_dir) if out_dir is not None else run_dir / "nifti"
    written: list[Path] = []
    for name, measures in NIFTI_MEASURES.items():
        path = run_dir / name
        if not path.exists():
            continue
        t = read_table(path)
        prefix = "insilico_" if name == PROBE_CSV else ""
        cols = {prefix + m: t[m].astype(float) for m in measures
                if m in t and np.isfinite(t[m].astype(float)).any()}
        unknown = [a for a in masks if a not in set(t["area"].tolist())]
        if unknown:
            raise DataError(f"--mask: area(s) {unknown} have no results in {path}; areas "
                            f"are {sorted(set(t['area'].tolist()))}")
        if cols:
            written += voxel_maps_to_nifti(cols, t["area"], t["voxel"], masks, out)
    return written
