"""The self-contained HTML report of a run folder (`niflow report`): a table of contents, a
summary, the training curve, one section per area (held-out r against ridge and the noise
ceiling, predicted against measured responses, visual-field maps, size against eccentricity,
readout maps), the in-silico experiments, information flow, a sortable and searchable
per-voxel table and the configuration. Figures are embedded as base64 PNG and the page's
only script is inline, so it opens offline.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path

import numpy as np

from niflow._atomic import atomic_write_text
from niflow.evaluate.statistics import read_table
from niflow.interpret.receptive_fields import degrees_per_pixel
from niflow.report import charts
from niflow.report.voxels import VOXEL_TABLE_JS, area_data, test_responses, voxel_table
from niflow.runs.outputs import (
    FLOW_CSV,
    PROBE_JSON,
    WELL_PREDICTED_R,
    chosen_voxel_figures,
)
from niflow.runs.probe import probe_run

REPORT_HTML = "report.html"
# run-folder figures outside the area sections: (section id, file, caption)
FOLDER_FIGURES = (
    ("insilico", "probe_prf.png", "In-silico bar-sweep pRFs against readout-map pRFs."),
    ("insilico", "probe_tuning.png", "In-silico orientation and spatial-frequency tuning."),
    ("insilico", "size_ecc.png", "pRF size against eccentricity, every area: readout maps and "
     "(after the in-silico experiments) bar-sweep pRFs, with least-squares lines."),
    ("flow", "flow.png", "Information flow: ablation costs (areas with several sources) or "
     "held-out r per area, and inter-area weight norms."),
    ("ceiling", "noise_ceiling.png", "Held-out r against each voxel's noise ceiling."),
    ("model", "kernels_{first}.png", "{first} convolution kernels."),
    ("hrf", "hrf_latency.png", "Movie runs: distribution of the voxels' learned HRF peak "
     "latencies per area (voxels with held-out r > 0.3, or all where none)."),
)

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fff}
.layout{display:flex;align-items:flex-start;max-width:1400px;margin:0 auto}
nav#toc{position:sticky;top:0;width:210px;flex:none;max-height:100vh;overflow:auto;
padding:18px 12px;font-size:13px;border-right:1px solid #ddd;box-sizing:border-box}
nav#toc ol{padding-left:16px;margin:4px 0}nav#toc li{margin:3px 0}
nav#toc a{color:#1a4f8b;text-decoration:none}nav#toc a:hover{text-decoration:underline}
main{flex:1;min-width:0;padding:0 22px 40px}h1{font-size:23px;margin-top:18px}
h2{font-size:19px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:30px}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0 14px}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}
th{background:#f1f1f1}td:first-child,th:first-child{text-align:left}
.figs{display:grid;grid-template-columns:1fr 1fr;gap:10px 18px;align-items:start}
.figs figure.wide{grid-column:1 / span 2}figure{margin:8px 0 14px}
img{max-width:100%;border:1px solid #ddd}figcaption{font-size:12px;color:#555}
pre{background:#f7f7f7;padding:10px;font-size:12px;overflow:auto;max-height:380px}
.ok{color:#17692a;font-weight:bold}.bad{color:#a11;font-weight:bold}
.note{color:#555;font-size:13px}.scroll{max-height:460px;overflow:auto;border:1px solid #ccc}
.scroll table{margin:0}#voxel-table th{position:sticky;top:0;cursor:pointer;user-select:none}
#voxel-table th[aria-sort=ascending]::after{content:" \\25B2"}
#voxel-table th[aria-sort=descending]::after{content:" \\25BC"}
.voxel-tools{margin:8px 0}.voxel-tools input{width:220px;padding:3px}
#voxel-count{margin:0 12px;font-size:13px}
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


def _img(png: bytes | Path, caption: str, wide: bool = False, fig_id: str = "") -> str:
    data = base64.b64encode(png.read_bytes() if isinstance(png, Path) else png).decode("ascii")
    attrs = (' class="wide"' if wide else "") + (f' id="{html.escape(fig_id)}"' if fig_id else "")
    return (f'<figure{attrs}><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>")


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def resolve_run_dir(path: str | Path) -> Path:
    """``path``, or its ``run/`` subfolder when ``path`` is a ``niflow demo`` folder."""
    path = Path(path)
    if not (path / "metrics.json").exists() and (path / "run" / "metrics.json").exists():
        return path / "run"
    return path


def write_report(run_dir: str | Path, out: str | Path | None = None, *,
                 probe_if_missing: bool = True, voxels: dict[str, list[int]] | None = None,
                 visual_field_deg: float | None = None) -> Path:
    """Write one self-contained HTML page (figures embedded as base64 PNG) about a run.

    Parameters
    ----------
    run_dir : path
        A finished run folder (or a ``niflow demo`` folder: its ``run/``).
    out : path, optional
        Default ``run_dir/report.html``.
    probe_if_missing : bool
        Run the in-silico experiments first (:func:`probe_run`) when the folder has none.
    voxels : dict of area to list of int, optional
        Also show these voxels (input columns): readout maps and predicted-vs-measured.
    visual_field_deg : float, optional
        Angle the image width subtends; default the run's ``data.visual_field_deg``. Once
        known, every position and size on the page is in degrees.

    Returns
    -------
    Path of the page.
    """
    from niflow.runs.run import RunError, load_run

    run_dir = resolve_run_dir(run_dir)
    if not (run_dir / "metrics.json").exists():
        raise RunError(f"{run_dir}: not a finished run (no metrics.json)")
    run = load_run(run_dir)
    vf = visual_field_deg if visual_field_deg is not None else run.config.data.visual_field_deg
    probe_info = _load_json(run_dir / PROBE_JSON)
    if probe_info is None and probe_if_missing or probe_info is not None and \
            probe_info.get("visual_field_deg") != vf and (probe_if_missing or
                                                          visual_field_deg is not None):
        # missing, or in another unit than the page (an earlier --visual-field-deg)
        probe_run(run, run_dir, visual_field_deg=vf)
    if voxels:
        chosen_voxel_figures(run, voxels, run_dir, vf)
    image_size = tuple(int(v) for v in run.model.image_shape[1:])
    # training drew the readout maps in the config's unit
    redrawn = (_redrawn_maps(run, run_dir, vf) if vf != run.config.data.visual_field_deg
               else {})
    page = _page(run_dir, vf, image_size, voxels or {}, redrawn)
    target = Path(out) if out is not None else run_dir / REPORT_HTML
    return atomic_write_text(target, page)


def _redrawn_maps(run, run_dir: Path, vf: float) -> dict[str, bytes]:
    """The best-predicted voxels' readout maps in degrees (training drew them in the
    config's unit), drawn in a scratch folder: the run folder keeps its own figures."""
    import tempfile

    table = read_table(run_dir / "voxels.csv")
    best = {}
    for area in dict.fromkeys(table["area"].tolist()):
        m = table["area"] == area
        r = np.nan_to_num(table["r_test"][m].astype(float), nan=-2)
        best[area] = [int(v) for v in table["voxel"][m][np.argsort(-r)[:8]]]
    with tempfile.TemporaryDirectory(prefix="niflow-report-") as tmp:
        paths = chosen_voxel_figures(run, best, tmp, vf, "best-predicted voxels",
                                     "rf_{area}.png")
        return {p.name: p.read_bytes() for p in paths}


def _page(run_dir: Path, vf: float | None, image_size: tuple[int, int],
          voxels: dict[str, list[int]], redrawn: dict[str, bytes]) -> str:
    config = _load_json(run_dir / "config.json") or {}
    info = _load_json(run_dir / "run.json") or {}
    metrics = _load_json(run_dir / "metrics.json") or {}
    stats = _load_json(run_dir / "stats.json")
    probe_info = _load_json(run_dir / PROBE_JSON)
    areas = list(metrics.get("areas", {}))
    baselines = {p.stem[len("baseline_"):]: _load_json(p)
                 for p in sorted(run_dir.glob("baseline_*.json"))}
    data = area_data(run_dir, image_size, vf)
    first = config.get("areas", [{}])[0].get("name", "V1") if config.get("areas") else "V1"
    folder = {sec: [] for sec in ("insilico", "flow", "ceiling", "model", "hrf")}
    # the in-silico figures and size_ecc.png are in the unit of the last probe (or training)
    drawn_vf = (probe_info or {}).get("visual_field_deg", config.get("data", {}).get(
        "visual_field_deg"))
    for sec, pattern, caption in FOLDER_FIGURES:
        path = run_dir / "figures" / pattern.format(first=first)
        if sec == "insilico" and drawn_vf != vf:
            continue
        if path.exists():
            folder[sec].append(_img(path, caption.format(first=first), wide=True))
    unit = "degrees of visual angle" if vf else "stimulus pixels"
    dpp = degrees_per_pixel(image_size, vf) if vf else None
    sections = [("summary", "Summary", _summary(areas, metrics, stats, probe_info, baselines,
                                                 vf, dpp)),
                ("training", "Training", _training_section(run_dir, metrics))]
    for area in areas:
        sections.append((f"sec-{area}", f"Area {area}", _area(
            run_dir, area, data.get(area), metrics, stats, probe_info, baselines, vf,
            image_size, voxels.get(area), redrawn)))
    sections.append(("voxels", "Per-voxel table",
                     f'<p class="note">Positions and sizes in {unit}.</p>' + voxel_table(data)))
    if folder["hrf"]:
        sections.append(("hrf", "Haemodynamic responses", "".join(folder["hrf"])))
    if folder["insilico"]:
        sections.append(("insilico", "In-silico experiments", "".join(folder["insilico"])))
    flow = _flow_section(run_dir)
    if flow or folder["flow"]:
        sections.append(("flow", "Information flow", flow + "".join(folder["flow"])))
    base = _baseline_section(areas, metrics, baselines)
    if base or folder["ceiling"]:
        sections.append(("ceiling", "Baselines and noise ceiling",
                         base + "".join(folder["ceiling"])))
    sections.append(("model", "Model and configuration", "".join(folder["model"])
                     + _inputs(info) + "<h3>Configuration</h3><pre>"
                     + html.escape(json.dumps(config, indent=2)) + "</pre>"))
    return _assemble(run_dir, info, sections)


def _assemble(run_dir: Path, info: dict, sections: list[tuple[str, str, str]]) -> str:
    name = html.escape(run_dir.resolve().name)
    toc = "".join(f'<li><a href="#{sid}">{html.escape(title)}</a></li>'
                  for sid, title, _ in sections)
    body = "\n".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
                      for sid, title, content in sections)
    head = (f"<h1>niflow run report: {name}</h1>"
            f'<p class="note">folder {html.escape(str(run_dir.resolve()))}; niflow '
            f"{html.escape(str(info.get('niflow_version', '?')))}, torch "
            f"{html.escape(str(info.get('torch_version', '?')))}; started "
            f"{html.escape(str(info.get('started', '?')))}; report written "
            f"{time.strftime('%Y-%m-%d %H:%M')}</p>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>niflow report {name}</title><style>{CSS}</style></head><body>"
            f'<div class="layout"><nav id="toc"><strong>Contents</strong><ol>{toc}</ol></nav>'
            f"<main>{head}{body}</main></div><script>{VOXEL_TABLE_JS}</script></body></html>\n")


def _summary(areas: list[str], metrics: dict, stats: dict | None, probe_info: dict | None,
             baselines: dict, vf: float | None, dpp: float | None) -> str:
    kinds = list(baselines)
    head = (["area", "voxels", "niflow median r"] + [f"ridge on {k}" for k in kinds]
            + ["median noise ceiling", "median r / ceiling", "fraction significant"])
    rows = []
    for a in areas:
        m = metrics["areas"][a]
        s = (stats or {}).get("areas", {}).get(a, {})
        rows.append([html.escape(a), _num(m.get("n_voxels")), _num(m.get("median_r"))]
                    + [_num((baselines[k] or {}).get("areas", {}).get(a, {}).get("median_r"))
                       for k in kinds]
                    + [_num(s.get("median_noise_ceiling")), _num(s.get("median_r_normalised")),
                       _num(m.get("frac_significant"))])
    missing = []
    if not baselines:
        missing.append("no ridge baselines (<code>niflow baseline --out RUN</code>)")
    if stats is None:
        missing.append("no noise ceiling (<code>niflow evaluate RUN --repeats …</code>)")
    vf_note = (f"visual field {vf:g}° wide: positions in degrees" if vf else
               "visual field unknown: positions in stimulus pixels (give "
               "<code>--visual-field-deg</code> or <code>data.visual_field_deg</code>)")
    return (_table(head, rows, "summary-table")
            + f'<p class="note">Held-out test rows ({_num(metrics.get("n_test_rows"))}); '
            f"{vf_note}. {'; '.join(missing)}</p>"
            + _checks_section(areas, metrics, stats, probe_info, dpp))


def _training_section(run_dir: Path, metrics: dict) -> str:
    log = _log(run_dir / "log.jsonl")
    tr = metrics.get("training", {})
    parts = []
    if log:
        best = tr.get("best_epoch") or None
        parts.append('<div class="figs">' + _img(
            charts.training_curve(log, best), f"Training loss and validation median r per "
            f"epoch; star and dashed line: epoch {best}, whose weights were kept.",
            fig_id="fig-training") + "<div>" + _table(
            ["training", "value"], [[html.escape(k), _num(v)] for k, v in tr.items()])
            + "</div></div>")
        parts.append("<details><summary>Every epoch</summary>" + _table(
            ["epoch", "training loss", "validation median r"],
            [[str(e["epoch"]), _num(e.get("train_loss"), 4), _num(e.get("val_median_r"))]
             for e in log], "training-log") + "</details>")
    else:
        parts.append(_table(["training", "value"],
                            [[html.escape(k), _num(v)] for k, v in tr.items()]))
    return "".join(parts)


def _inputs(info: dict) -> str:
    inputs = info.get("inputs", {})
    if not inputs:
        return ""
    return "<h3>Inputs</h3>" + _table(
        ["input", "path", "sha256"], [[html.escape(k), html.escape(v.get("path", "")),
                                       html.escape(v.get("sha256", "")[:16]) + "…"]
                                      for k, v in inputs.items()])


def _checks_section(areas: list[str], metrics: dict, stats: dict | None,
                    probe_info: dict | None, dpp: float | None = None) -> str:
    rows = []
    if probe_info is not None:
        checks = probe_info.get("checks", {})
        for area, c in checks.get("centre_distance_px", {}).items():
            med = c.get("median")
            ok = med is not None and med < 2.0
            rows.append([f"{html.escape(area)}: in-silico vs readout pRF centre, median "
                         f"distance over well-predicted voxels (n={c.get('n_voxels')})",
                         f"{_num(med, 2)} px" + (f" = {_num(med * dpp, 3)} deg"
                                                 if dpp and med is not None else ""),
                         _verdict(ok, "< 2 px")])
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
        return ("<h3>Checks</h3><p class=\"note\">No in-silico experiments or statistics in "
                "this folder yet (run <code>niflow probe</code> / <code>niflow evaluate</code>)"
                ".</p>")
    return "<h3>Checks</h3>" + _table(["check", "value", "verdict"], rows, "checks")


def _verdict(ok: bool, rule: str) -> str:
    return (f'<span class="ok">pass ({html.escape(rule)})</span>' if ok else
            f'<span class="bad">fail ({html.escape(rule)})</span>')


def _area_measures(area: str, metrics: dict, stats: dict | None, probe_info: dict | None,
                   baselines: dict[str, dict | None], dpp: float | None) -> str:
    m = metrics["areas"][area]
    rows = [["voxels", _num(m.get("n_voxels"))], ["median r", _num(m.get("median_r"))],
            ["mean r", _num(m.get("mean_r"))],
            ["fraction r > 0.3", _num(m.get("frac_r_above_0.3"))],
            ["fraction significant (permutation, BH-FDR 0.05)", _num(m.get("frac_significant"))],
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
        # probe.json keeps pixels; dpp (degrees per pixel) converts once the field is known
        f, u = (dpp, "deg") if dpp else (1.0, "px")
        sf, sf_u = (1.0 / dpp, "cycles/deg") if dpp else (1.0, "cycles/px")
        # a movie run's probe (runs.movie_probe) calls its bar sweep's size insilico_sigma
        # and adds the bar sweep's HRF peak and the drifting gratings' direction tuning
        sigma = med.get("prf_sigma", med.get("insilico_sigma"))
        psf = med.get("preferred_sf")
        rows += [[f"median pRF size σ, readout map ({u})",
                  _num(med["readout_prf_sigma"] * f, 2)],
                 [f"median pRF size σ, in-silico ({u})", _num(sigma * f, 2)],
                 ["median orientation selectivity", _num(med.get("orientation_selectivity"))],
                 [f"median preferred SF ({sf_u})", _num(None if psf is None else psf * sf, 3)]]
        if "direction_selectivity" in med:
            rows += [["median HRF peak, in-silico bar sweep (s)",
                      _num(med.get("insilico_hrf_peak_s"), 2)],
                     ["median direction selectivity (drifting gratings)",
                      _num(med.get("direction_selectivity"))],
                     ["median transient index (drifting gratings)",
                      _num(med.get("transient_index"))]]
    return _table(["measure", "value"], rows, f"area-{area}")


def _area(run_dir: Path, area: str, d: dict | None, metrics: dict, stats: dict | None,
          probe_info: dict | None, baselines: dict, vf: float | None,
          image_size: tuple[int, int], chosen: list[int] | None,
          redrawn: dict[str, bytes]) -> str:
    """One area's section: measures, then its figures two to a row."""
    unit = "deg" if vf else "px"
    dpp = degrees_per_pixel(image_size, vf) if vf else None
    parts = [_area_measures(area, metrics, stats, probe_info, baselines, dpp)]
    if d is None:
        return parts[0]
    figs = [_img(charts.r_histogram(area, d["r"], d["ridge"], d["ceiling"]).png,
                 f"{area}: histogram of held-out r across voxels, beside "
                 + ("the ridge baselines" if d["ridge"] else "no ridge baselines (none run)")
                 + (" and the noise ceiling" if d["ceiling"] is not None else "")
                 + "; dotted lines: medians.", fig_id=f"fig-hist-{area}")]
    if d["ridge"]:
        figs.append(_img(charts.nif_against_ridge(area, d["r"], d["ridge"]),
                         f"{area}: niflow against ridge, per voxel (same test rows).",
                         fig_id=f"fig-ridge-{area}"))
    figs.append(_predicted_measured(run_dir, area, d, chosen))
    keep = d["r"] > WELL_PREDICTED_R
    if not keep.any():
        keep = np.isfinite(d["r"])
    note = f"held-out r > {WELL_PREDICTED_R}" if (d["r"] > WELL_PREDICTED_R).any() else \
        "a finite r"
    figs.append(_img(charts.visual_field_maps(area, d["prf"], image_size, vf, keep, note).png,
                     f"{area}: visual-field maps of readout pRF centres coloured by polar "
                     f"angle and by eccentricity, and coverage (pRFs within 1σ), {note}.",
                     wide=True, fig_id=f"fig-vf-{area}"))
    figs.append(_img(charts.size_eccentricity(area, d["prf"]["ecc"], d["prf"]["sigma"], keep,
                                              unit),
                     f"{area}: readout pRF size against eccentricity ({unit}), {note}.",
                     fig_id=f"fig-size-{area}"))
    rf = redrawn.get(f"rf_{area}.png") or run_dir / "figures" / f"rf_{area}.png"
    if isinstance(rf, bytes) or rf.exists():
        figs.append(_img(rf, f"{area}: readout maps of the best-predicted voxels (+: centre).",
                         wide=True))
    hrf_png = run_dir / "figures" / f"hrf_{area}.png"
    if hrf_png.exists():
        figs.append(_img(hrf_png, f"{area}: learned HRFs of the best-predicted voxels (each "
                                  f"scaled to peak 1), with their peak latencies."))
    chosen_png = run_dir / "figures" / f"rf_chosen_{area}.png"
    if chosen and chosen_png.exists():
        figs.append(_img(chosen_png, f"{area}: readout maps of the chosen voxels "
                                     f"{', '.join(map(str, chosen))}.", wide=True))
    return parts[0] + '<div class="figs">' + "".join(figs) + "</div>"


def _predicted_measured(run_dir: Path, area: str, d: dict, chosen: list[int] | None) -> str:
    resp = test_responses(run_dir, area)
    if resp is None:
        return ('<p class="note">Predicted against measured: unavailable, this run folder '
                "has no measured test responses (predictions.npz of runs trained before they "
                "were stored); retrain to see it.</p>")
    rows, labels = charts.show_voxels(d["r"], d["voxel"], chosen)
    if not rows:
        return '<p class="note">Predicted against measured: no voxel has a finite r.</p>'
    measured, predicted = resp
    chart = charts.predicted_measured(area, measured[:, rows], predicted[:, rows],
                                      [int(d["voxel"][i]) for i in rows], labels, d["r"][rows])
    which = ", ".join(dict.fromkeys(labels))
    return _img(chart.png, f"{area}: predicted against measured responses on the test rows "
                f"for the {which} voxels.", wide=len(rows) > 2,
                fig_id=f"fig-predmeas-{area}")


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
    # each baseline file says how it was fitted (leave-one-out for images, leave-one-run-out
    # for movies)
    notes = [f"ridge on {html.escape(k)}: {html.escape(str((b or {}).get('model', '')))}"
             for k, b in baselines.items() if (b or {}).get("model")]
    return ("<h2>Baselines (same test rows)</h2>" + _table(head, rows, "baselines")
            + '<p class="note">' + "<br>".join(notes or ["Voxelwise ridge regression."])
            + "</p>")
