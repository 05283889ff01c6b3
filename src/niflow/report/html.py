"""The self-contained HTML report of a run folder (`niflow report`): configuration, training
curve, per-area tables, the science outputs of :mod:`niflow.runs` and the baselines, with
every figure embedded as a base64 PNG.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path

from niflow._atomic import atomic_write_text
from niflow.evaluate.statistics import read_table
from niflow.runs.outputs import FLOW_CSV, PROBE_JSON, chosen_voxel_figures
from niflow.runs.probe import probe_run

REPORT_HTML = "report.html"
# figures in page order: (file name pattern, caption); {area} expands per area
FIGURES = (
    ("training.png", "Training loss and validation median r per epoch."),
    ("rf_{area}.png", "{area}: readout maps of the best-predicted voxels (+: centre)."),
    ("rf_chosen_{area}.png", "{area}: readout maps of the chosen voxels."),
    ("coverage.png", "Visual-field coverage by the readout pRFs of well-predicted voxels."),
    ("size_ecc.png", "pRF size against eccentricity per area, with fitted lines."),
    ("probe_prf.png", "In-silico bar-sweep pRFs against readout-map pRFs."),
    ("probe_tuning.png", "In-silico orientation and spatial-frequency tuning."),
    ("flow.png", "Information flow: ablation costs and inter-area weight norms."),
    ("noise_ceiling.png", "Held-out r against the noise ceiling."),
    ("baselines.png", "NIF against the ridge baselines, per voxel, same test rows."),
    ("kernels_{first}.png", "{first} convolution kernels."),
)

CSS = """
body{font-family:Helvetica,Arial,sans-serif;max-width:1250px;margin:24px auto;color:#222;
padding:0 16px}h1{font-size:24px}h2{font-size:19px;border-bottom:1px solid #ccc;
padding-bottom:3px;margin-top:32px}h3{font-size:15px}table{border-collapse:collapse;
margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 9px;font-size:13px;text-align:right}
th{background:#f1f1f1}td:first-child,th:first-child{text-align:left}
figure{margin:12px 0 24px}img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:13px;color:#555}pre{background:#f7f7f7;padding:10px;font-size:12px;
overflow:auto;max-height:420px}.ok{color:#17692a;font-weight:bold}
.bad{color:#a11;font-weight:bold}.note{color:#555;font-size:13px}
"""


def _num(v: object, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return "n/a" if not math.isfinite(f) else f"{f:.{digits}f}"


def _table(head: list[str], rows: list[list], table_id: str | None = None) -> str:
    tid = f' id="{html.escape(table_id)}"' if table_id else ""
    out = [f"<table{tid}><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
           + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return "\n".join(out) + "</table>"


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(run_dir: str | Path, out: str | Path | None = None, *,
                 probe_if_missing: bool = True, voxels: dict[str, list[int]] | None = None,
                 visual_field_deg: float | None = None) -> Path:
    """Write one self-contained HTML page (figures embedded as base64 PNG) about a run.

    Parameters
    ----------
    run_dir : path
        A finished run folder.
    out : path, optional
        Default ``run_dir/report.html``.
    probe_if_missing : bool
        Run the in-silico experiments first (:func:`probe_run`) when the folder has none.
    voxels : dict of area to list of int, optional
        Also show the readout maps of these voxels (input columns).

    Returns
    -------
    Path of the page.
    """
    from niflow.runs.run import RunError, load_run

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").exists():
        raise RunError(f"{run_dir}: not a finished run (no metrics.json)")
    run = None
    if (probe_if_missing and not (run_dir / PROBE_JSON).exists()) or voxels or \
            visual_field_deg is not None:
        run = load_run(run_dir)
    if run is not None and (visual_field_deg is not None or not (run_dir / PROBE_JSON).exists()):
        if probe_if_missing or visual_field_deg is not None:
            probe_run(run, run_dir, visual_field_deg=visual_field_deg)
    if voxels:
        chosen_voxel_figures(run, voxels, run_dir)

    config = _load_json(run_dir / "config.json") or {}
    info = _load_json(run_dir / "run.json") or {}
    metrics = _load_json(run_dir / "metrics.json") or {}
    stats = _load_json(run_dir / "stats.json")
    probe_info = _load_json(run_dir / PROBE_JSON)
    areas = list(metrics.get("areas", {}))
    baselines = {p.stem[len("baseline_"):]: _load_json(p)
                 for p in sorted(run_dir.glob("baseline_*.json"))}
    parts = [f"<h1>niflow run report: {html.escape(run_dir.resolve().name)}</h1>",
             f'<p class="note">folder {html.escape(str(run_dir.resolve()))}; niflow '
             f"{html.escape(str(info.get('niflow_version', '?')))}, torch "
             f"{html.escape(str(info.get('torch_version', '?')))}; started "
             f"{html.escape(str(info.get('started', '?')))}; report written "
             f"{time.strftime('%Y-%m-%d %H:%M')}</p>"]
    parts.append(_checks_section(areas, metrics, stats, probe_info))
    parts.append(_area_section(areas, metrics, stats, probe_info, baselines))
    parts.append(_flow_section(run_dir))
    parts.append(_baseline_section(areas, metrics, baselines))
    parts.append("<h2>Figures</h2>")
    first = config.get("areas", [{}])[0].get("name", "V1") if config.get("areas") else "V1"
    shown = set()
    for pattern, caption in FIGURES:
        names = ([(pattern.format(area=a), caption.format(area=a)) for a in areas]
                 if "{area}" in pattern else
                 [(pattern.format(first=first), caption.format(first=first))])
        for name, cap in names:
            path = run_dir / "figures" / name
            if path.exists():
                parts.append(_img(path, cap))
                shown.add(name)
    parts.append("<h2>Training</h2>")
    tr = metrics.get("training", {})
    parts.append(_table(["training", "value"], [[html.escape(k), _num(v)]
                                                for k, v in tr.items()]))
    log = _log(run_dir / "log.jsonl")
    if log:
        parts.append(_table(["epoch", "training loss", "validation median r"],
                            [[str(e["epoch"]), _num(e.get("train_loss"), 4),
                              _num(e.get("val_median_r"))] for e in log], "training-log"))
    inputs = info.get("inputs", {})
    if inputs:
        parts.append(_table(["input", "path", "sha256"],
                            [[html.escape(k), html.escape(v.get("path", "")),
                              html.escape(v.get("sha256", "")[:16]) + "…"]
                             for k, v in inputs.items()]))
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(config, indent=2))
                 + "</pre>")
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>niflow report {html.escape(run_dir.resolve().name)}</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    target = Path(out) if out is not None else run_dir / REPORT_HTML
    return atomic_write_text(target, page)


def _checks_section(areas: list[str], metrics: dict, stats: dict | None,
                    probe_info: dict | None) -> str:
    rows = []
    if probe_info is not None:
        checks = probe_info.get("checks", {})
        for area, c in checks.get("centre_distance_px", {}).items():
            med = c.get("median")
            ok = med is not None and med < 2.0
            rows.append([f"{html.escape(area)}: in-silico vs readout pRF centre, median "
                         f"distance over well-predicted voxels (n={c.get('n_voxels')})",
                         f"{_num(med, 2)} px", _verdict(ok, "< 2 px")])
        for pair, entry in checks.get("sizes", {}).items():
            for name in ("insilico", "readout"):
                e = entry.get(name, {})
                frac = e.get("frac_bins_larger")
                how = "in-silico bar sweep" if name == "insilico" else "readout map"
                rows.append([f"{html.escape(pair.replace('>', ' pRF size > '))} at matched "
                             f"eccentricity ({how})",
                             f"{_num(frac, 2)} of eccentricity bins",
                             _verdict(bool(e.get("larger_everywhere")), "all bins")])
    if stats is not None:
        for area, s in stats.get("areas", {}).items():
            rows.append([f"{html.escape(area)}: median r / noise ceiling",
                         _num(s.get("median_r_normalised")),
                         html.escape(s.get("note", "") or "split-half, Spearman–Brown")])
    if not rows:
        return ("<h2>Checks</h2><p class=\"note\">No in-silico experiments or statistics in "
                "this folder yet (run <code>niflow probe</code> / <code>niflow evaluate</code>)"
                ".</p>")
    return "<h2>Checks</h2>" + _table(["check", "value", "verdict"], rows, "checks")


def _verdict(ok: bool, rule: str) -> str:
    return (f'<span class="ok">pass ({html.escape(rule)})</span>' if ok else
            f'<span class="bad">fail ({html.escape(rule)})</span>')


def _area_section(areas: list[str], metrics: dict, stats: dict | None,
                  probe_info: dict | None, baselines: dict[str, dict | None]) -> str:
    parts = ["<h2>Per-area results (held-out test rows)</h2>"]
    for area in areas:
        m = metrics["areas"][area]
        rows = [["voxels", _num(m.get("n_voxels"))], ["median r", _num(m.get("median_r"))],
                ["mean r", _num(m.get("mean_r"))],
                ["fraction r > 0.3", _num(m.get("frac_r_above_0.3"))],
                ["fraction significant (permutation, BH-FDR 0.05)",
                 _num(m.get("frac_significant"))],
                ["voxels with multi-lobed readout maps", _num(m.get("n_multipole"))]]
        s = (stats or {}).get("areas", {}).get(area)
        if s is not None:
            rows += [["median R² (evaluate)", _num(s.get("median_r2"))],
                     ["median noise ceiling", _num(s.get("median_noise_ceiling"))],
                     ["median r / noise ceiling", _num(s.get("median_r_normalised"))],
                     ["noise ceiling method", html.escape(str(s.get("ceiling_method") or
                                                              s.get("note", "")))]]
        for kind, b in baselines.items():
            bs = (b or {}).get("areas", {}).get(area)
            if bs is not None:
                rows.append([f"ridge on {html.escape(kind)}: median r", _num(bs["median_r"])])
        med = (probe_info or {}).get("medians", {}).get(area)
        if med is not None:
            rows += [["median pRF size σ, readout map (px)", _num(med["readout_prf_sigma"], 2)],
                     ["median pRF size σ, in-silico (px)", _num(med["prf_sigma"], 2)],
                     ["median orientation selectivity", _num(med["orientation_selectivity"])],
                     ["median preferred SF (cycles/px)", _num(med["preferred_sf"])]]
        parts.append(f"<h3>{html.escape(area)}</h3>")
        parts.append(_table(["measure", "value"], rows, f"area-{area}"))
    return "\n".join(parts)


def _flow_section(run_dir: Path) -> str:
    if not (run_dir / FLOW_CSV).exists():
        return ""
    t = read_table(run_dir / FLOW_CSV)
    if "source" not in t or not len(t["source"]):
        return ""
    rows = [[html.escape(f"{s} → {g}"), _num(r), _num(rz), _num(rm), _num(dz), _num(dm),
             _num(ws), _num(es)] for s, g, r, rz, rm, dz, dm, ws, es in zip(
        t["source"], t["target"], t["median_r"], t["median_r_zero"], t["median_r_mean"],
        t["median_drop_zero"], t["median_drop_mean"], t["weight_share"],
        t["effective_weight_share"], strict=True)]
    return ("<h2>Information flow</h2>" + _table(
        ["connection", "median r", "r, source 0", "r, source mean", "drop (0)",
         "drop (mean)", "weight share", "activity-scaled share"], rows, "flow"))


def _baseline_section(areas: list[str], metrics: dict,
                      baselines: dict[str, dict | None]) -> str:
    if not baselines:
        return ""
    head = ["area", "NIF median r"] + [f"ridge on {k}: median r" for k in baselines]
    rows = []
    for a in areas:
        row = [html.escape(a), _num(metrics["areas"][a].get("median_r"))]
        for b in baselines.values():
            row.append(_num((b or {}).get("areas", {}).get(a, {}).get("median_r")))
        rows.append(row)
    return ("<h2>Baselines (same test rows)</h2>" + _table(head, rows, "baselines")
            + '<p class="note">Voxelwise ridge regression (scikit-learn RidgeCV), per-voxel '
              "alpha by leave-one-out cross-validation on the training rows only.</p>")
