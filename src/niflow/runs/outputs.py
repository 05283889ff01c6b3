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
    baseline_<f>.csv    `niflow baseline`: ridge on pixels / gabor, same test rows; on a
                        movie run, motion_energy (runs.movie_baseline), same test runs
    predictions.npz     (written with the weights) test-row predictions <area> and the
                        measured responses measured_<area> (n_test, n_voxels), test_rows
    figures/            coverage.png, size_ecc.png, flow.png, probe_prf.png, probe_tuning.png,
                        noise_ceiling.png, baselines.png, rf_chosen_<area>.png
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from niflow._atomic import atomic_write_text
from niflow.data.dataset import NIFData
from niflow.data.io import save_mat, save_npz
from niflow.evaluate.statistics import pearson_r, r_squared, read_table, summarize, write_table
from niflow.interpret.flow import FlowResult
from niflow.interpret.receptive_fields import spatial_maps
from niflow.model.fitted import ensemble_predict
from niflow.runs.run import Run, _save_model, modelparams
from niflow.train.loop import History

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
    from niflow.interpret.receptive_fields import receptive_fields, with_prf

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
    from niflow.evaluate.statistics import voxel_statistics
    from niflow.interpret.flow import information_flow
    from niflow.model.fitted import predict

    test = data.split.test
    pred = predict(run.model, data.stim[test]) if test.size >= 3 else {}
    p_values = {}
    for area, p in pred.items():
        st = voxel_statistics(p, data.raw[area][test], n_permutations=n_permutations, seed=seed)
        p_values[area] = (st["p_perm"], st["q_fdr"])
    # information flow on the test rows, mean replacement from the training rows
    flow = (information_flow(run.model, data.stim[test],
                             {a: data.raw[a][test] for a in data.areas},
                             reference_stim=data.stim[data.split.train])
            if test.size >= 3 else None)
    write_science_outputs(run, p_values, flow,
                          f"one-sided permutation test of r on the test rows ({n_permutations} "
                          f"shuffles), Benjamini-Hochberg FDR 0.05 per area")


def write_science_outputs(run: Run, p_values: dict[str, tuple[np.ndarray, np.ndarray]],
                          flow: list[FlowResult] | None, significance: str) -> None:
    """Add the significance and retinotopy columns to ``voxels.csv`` and ``metrics.json``,
    write ``flow.csv`` and ``figures/flow.png`` (when ``flow`` is given), ``coverage.png`` and
    ``size_ecc.png``; shared by image and movie runs.

    Parameters
    ----------
    p_values : dict of str to (p, q), each ndarray of shape (n_voxels,)
        Per area, the test's p-values and their FDR q; areas left out get NaN.
    flow : list of FlowResult or None
    significance : str
        How the p-values were computed (``metrics.json``).
    """
    from niflow import figures as plots

    out = Path(run.path)
    vf = _visual_field(run, None)
    prfs = readout_prfs(run)
    extra: dict[str, dict[str, np.ndarray]] = {}
    for area, p in prfs.items():
        nan = np.full(len(p["prf_x"]), np.nan)
        pv, qv = p_values.get(area, (nan, nan))
        extra[area] = {"p_perm": pv, "q_fdr": qv, "prf_ecc": p["eccentricity"],
                       "prf_angle": p["polar_angle"], "prf_n_lobes": p["n_lobes"],
                       "prf_multipole": p["multipole"].astype(int),
                       "prf_x_deg": p.get("x_deg", nan), "prf_y_deg": p.get("y_deg", nan),
                       "prf_ecc_deg": p.get("eccentricity_deg", nan),
                       "prf_sigma_deg": p.get("sigma_deg", nan)}
    _append_voxel_columns(out / VOXELS_CSV, extra, run.voxel_index)
    _extend_metrics(out / "metrics.json", extra, significance)
    if flow is not None:
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
                    significance: str, alpha: float = 0.05) -> None:
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
    metrics["significance"] = significance
    _write_json(path, metrics)


def write_flow(flow: list[FlowResult], out_dir: str | Path) -> Path:
    """Write ``flow.csv`` and ``figures/flow.png`` from :func:`information_flow` results."""
    from niflow import figures as plots

    out = Path(out_dir)
    rows = [f.row() for f in flow]
    cols = {k: [r[k] for r in rows] for k in rows[0]} if rows else {"target": []}
    path = write_table(out / FLOW_CSV, cols)
    if rows:
        plots.plot_flow(rows, {(f.target, f.source): f.channel_norms for f in flow},
                        out / "figures" / "flow.png")
    return path


def chosen_voxel_figures(run: Run, voxels: dict[str, list[int]], out_dir: str | Path,
                         visual_field_deg: float | None = None, which: str = "chosen voxels",
                         name: str = "rf_chosen_{area}.png") -> list[Path]:
    """``figures/rf_chosen_<area>.png``: readout maps of the given voxels (input columns),
    in degrees when the visual field is known (``visual_field_deg`` or the run's config).
    ``which`` names the voxels in the title, ``name`` the file."""
    from niflow import figures as plots
    from niflow.data.errors import DataError
    from niflow.interpret.receptive_fields import spatial_maps

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
        from niflow.interpret.receptive_fields import prf_from_maps

        prf = prf_from_maps(maps, geo.scale, geo.offset)
        r = np.full(len(rows), np.nan)
        if table is not None:
            r = table["r_test"][table["area"] == area].astype(float)[rows]
        out.append(plots.plot_receptive_fields(
            maps, geo, np.array(ids), r, (prf["prf_x"], prf["prf_y"]), area,
            Path(out_dir) / "figures" / name.format(area=area),
            tuple(run.model.image_shape[1:]), which, _visual_field(run, visual_field_deg)))
    return out


def write_outputs(run: Run, data: NIFData, hist: History) -> None:
    """Write weights, metrics, per-voxel table, predictions, modelparams.mat and figures."""
    from niflow import figures as plots

    out = run.path
    assert out is not None
    test = data.split.test
    _save_model(run, out / "model.pt")
    pred_z = ensemble_predict(run.ensemble, data.stim[test]) if test.size else {}
    rows, metrics = [], {}
    preds, measured = {}, {}
    vf = _visual_field(run, None)
    prfs = {}
    for area in data.areas:
        maps = spatial_maps(run.model, area)
        geo = run.model.geometry(area)
        prf = run.receptive_fields(area)
        fitted = prf.get("prf_sigma_fit", prf["prf_sigma"])
        prfs[area] = (maps, prf)
        if test.size:
            preds[area] = run.scalers[area].inverse(pred_z[area])
            # the report's predicted-against-measured plots need the responses themselves
            measured[f"measured_{area}"] = np.asarray(data.raw[area][test], np.float32)
            r = pearson_r(preds[area], data.raw[area][test])
            r2 = r_squared(preds[area], data.raw[area][test])
        else:
            r = r2 = np.full(maps.shape[0], np.nan)
        metrics[area] = summarize(r)
        for j in range(maps.shape[0]):
            rows.append([area, int(data.voxel_index[area][j]), r[j], r2[j], prf["prf_x"][j],
                         prf["prf_y"][j], prf["prf_sigma"][j], fitted[j]])
        order = np.argsort(-np.nan_to_num(r, nan=-2))[:8]
        plots.plot_receptive_fields(
            maps[order], geo, data.voxel_index[area][order], r[order],
            (prf["prf_x"][order], prf["prf_y"][order]), area,
            out / "figures" / f"rf_{area}.png", data.image_shape[1:],
            visual_field_deg=vf)
    first = run.config.areas[0].name
    plots.plot_kernels(run.model.graph.areas[first].kernel_weights().detach().numpy(), first,
                       out / "figures" / f"kernels_{first}.png")
    plots.plot_training(hist.epochs, out / "figures" / "training.png", hist.best_epoch or None)
    save_npz(out / "predictions.npz", {**preds, **measured,
                                       "test_rows": data.input_rows(test)})
    _write_csv(out / "voxels.csv", ["area", "voxel", "r_test", "r2_test", "prf_x", "prf_y",
                                    "prf_sigma", "prf_sigma_fit"], rows)
    summary = {"areas": metrics, "n_test_rows": int(test.size),
               "training": {"best_epoch": hist.best_epoch, "epochs_run": len(hist.epochs),
                            "stopped_early": hist.stopped_early,
                            "best_val_median_r": (hist.best_score
                                                  if np.isfinite(hist.best_score) else None)}}
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    save_mat(out / "modelparams.mat", modelparams(run.model))
    # significance and retinotopy columns, information flow, coverage/size figures
    from niflow.runs.outputs import extend_run_outputs

    extend_run_outputs(run, data)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([f"{v:.6g}" if isinstance(v, float | np.floating) else v for v in row])
    atomic_write_text(path, buf.getvalue())


def _size_ecc_figure(out: Path, readout: dict, insilico: dict | None,
                     keep: dict[str, np.ndarray], vf: float | None) -> None:
    from niflow import figures as plots

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
