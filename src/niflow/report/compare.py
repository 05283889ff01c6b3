"""Side-by-side comparison of run folders (`niflow compare`): one self-contained HTML page.

Runs are compared on what they share: the areas every run has and, per area, the voxels
(input columns, ``voxel`` of ``voxels.csv``) every run kept. Per run and area: median
held-out r, the fraction of voxels with r > 0.3 and, where ``niflow evaluate`` left a noise
ceiling (``stats_voxels.csv``), the median r / ceiling. Per pair of runs and area: the
correlation of their per-voxel r and the agreement of their readout pRFs over the voxels
well predicted by both (r > 0.3 in each): the median distance between the centres (pixels,
and degrees where both runs know the visual field) and the Spearman correlation of the sizes.
Figures (per-voxel r of each run against the first) are embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from niflow._atomic import atomic_write_text
from niflow.evaluate.statistics import read_table
from niflow.report.html import CSS, _num, _table
from niflow.runs.run import RunError

COMPARE_HTML = "compare.html"
WELL_PREDICTED = 0.3  # r_test above this in both runs: the voxels whose pRFs are compared
MIN_SPEARMAN = 3  # fewer well-predicted voxels than this: no size correlation


def _run_table(run_dir: Path) -> dict:
    """A finished run folder's per-voxel table, noise ceilings and a few facts.

    Returns
    -------
    dict with ``path``, ``config`` (dict), ``areas`` (list of str, voxels.csv order) and
    ``voxels``: area -> {voxel id (int) -> row dict of floats}, and ``ceiling``: area ->
    {voxel id -> r / noise ceiling} (empty without ``stats_voxels.csv`` or repeats).
    """
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder")
    for name in ("metrics.json", "voxels.csv"):
        if not (run_dir / name).exists():
            raise RunError(f"{run_dir}: not a finished run (no {name})")
    try:
        table = read_table(run_dir / "voxels.csv")
        config = json.loads((run_dir / "config.json").read_text()) \
            if (run_dir / "config.json").exists() else {}
    except (OSError, ValueError) as err:
        raise RunError(f"{run_dir}: cannot read the run ({err})") from err
    missing = {"area", "voxel", "r_test", "prf_x", "prf_y", "prf_sigma"} - set(table)
    if missing:
        raise RunError(f"{run_dir / 'voxels.csv'}: missing column(s) {sorted(missing)}")
    return {"path": run_dir, "config": config, "areas": list(dict.fromkeys(table["area"])),
            "voxels": _by_voxel(table), "ceiling": _ceilings(run_dir)}


def _by_voxel(table: dict[str, np.ndarray]) -> dict[str, dict[int, dict[str, float]]]:
    keys = [k for k in table if k not in ("area", "voxel")
            and np.asarray(table[k]).dtype.kind == "f"]
    out: dict[str, dict[int, dict[str, float]]] = {}
    for i, (area, voxel) in enumerate(zip(table["area"], table["voxel"], strict=True)):
        out.setdefault(str(area), {})[int(voxel)] = {k: float(table[k][i]) for k in keys}
    return out


def _ceilings(run_dir: Path) -> dict[str, dict[int, float]]:
    path = run_dir / "stats_voxels.csv"
    if not path.exists():
        return {}
    try:
        t = read_table(path)
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: cannot read ({err})") from err
    if "r_normalised" not in t or "noise_ceiling" not in t:
        return {}
    out: dict[str, dict[int, float]] = {}
    for area, voxel, rn, c in zip(t["area"], t["voxel"], t["r_normalised"], t["noise_ceiling"],
                                  strict=True):
        if np.isfinite(c):
            out.setdefault(str(area), {})[int(voxel)] = float(rn)
    return out


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """The folders' names, or the paths as given where two names are the same."""
    names = [p.name or str(p) for p in run_dirs]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, run_dirs, strict=True)]


def _median(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def _column(run: dict, area: str, voxels: list[int], key: str) -> np.ndarray:
    rows = run["voxels"][area]
    return np.array([rows[v].get(key, np.nan) for v in voxels], dtype=np.float64)


def _area_row(run: dict, area: str, voxels: list[int]) -> dict:
    r = _column(run, area, voxels, "r_test")
    finite = r[np.isfinite(r)]
    ceiling = run["ceiling"].get(area, {})
    rn = np.array([ceiling.get(v, np.nan) for v in voxels])
    return {"n_voxels": len(voxels),
            "median_r": float(np.median(finite)) if finite.size else None,
            "frac_r_above_0.3": float((finite > WELL_PREDICTED).mean()) if finite.size
            else None,
            "median_r_ceiling": _median(rn) if ceiling else None,
            "n_ceiling": int(np.isfinite(rn).sum())}


def _agreement(a: dict, b: dict, area: str, voxels: list[int]) -> dict:
    """pRF agreement and per-voxel r correlation of two runs over shared ``voxels``."""
    from scipy.stats import spearmanr

    ra, rb = _column(a, area, voxels, "r_test"), _column(b, area, voxels, "r_test")
    both = np.isfinite(ra) & np.isfinite(rb)
    r_corr = None
    if both.sum() >= 3 and np.ptp(ra[both]) > 0 and np.ptp(rb[both]) > 0:
        r_corr = float(np.corrcoef(ra[both], rb[both])[0, 1])
    good = both & (ra > WELL_PREDICTED) & (rb > WELL_PREDICTED)
    d_px = np.hypot(*(_column(a, area, voxels, k)[good] - _column(b, area, voxels, k)[good]
                      for k in ("prf_x", "prf_y")))
    d_deg = np.hypot(*(_column(a, area, voxels, k)[good] - _column(b, area, voxels, k)[good]
                       for k in ("prf_x_deg", "prf_y_deg")))
    sa = _column(a, area, voxels, "prf_sigma")[good]
    sb = _column(b, area, voxels, "prf_sigma")[good]
    rho = None
    if good.sum() >= MIN_SPEARMAN and np.ptp(sa) > 0 and np.ptp(sb) > 0:
        rho = float(spearmanr(sa, sb)[0])
    return {"n_well_predicted": int(good.sum()), "r_correlation": r_corr,
            "median_centre_distance_px": _median(d_px),
            "median_centre_distance_deg": _median(d_deg) if np.isfinite(d_deg).all() else None,
            "size_spearman": rho}


def compare_summary(run_dirs: Sequence[str | Path]) -> dict:
    """The numbers of the comparison page, computed from the run folders.

    Parameters
    ----------
    run_dirs : sequence of path
        Two or more finished run folders (``metrics.json`` and ``voxels.csv``).

    Returns
    -------
    dict with ``labels`` (one per run), ``areas`` (shared areas), ``dropped_areas``,
    ``voxels``: area -> sorted shared voxel ids, ``n_voxels``: area -> voxels per run,
    ``per_run``: area -> one dict per run (``n_voxels``, ``median_r``, ``frac_r_above_0.3``,
    ``median_r_ceiling`` or None, ``n_ceiling``) and ``pairs``: area -> {(i, j): dict of
    ``n_well_predicted``, ``r_correlation``, ``median_centre_distance_px``,
    ``median_centre_distance_deg``, ``size_spearman``} for every pair i < j.

    Raises
    ------
    RunError
        Fewer than two runs, a folder missing or unfinished, or nothing shared.
    """
    paths = [Path(p) for p in run_dirs]
    if len(paths) < 2:
        raise RunError(f"compare needs at least two run folders, got {len(paths)}")
    runs = [_run_table(p) for p in paths]
    all_areas = list(dict.fromkeys(a for r in runs for a in r["areas"]))
    areas = [a for a in all_areas if all(a in r["voxels"] for r in runs)]
    shared = {a: sorted(set.intersection(*(set(r["voxels"][a]) for r in runs))) for a in areas}
    areas = [a for a in areas if shared[a]]
    if not areas:
        raise RunError(f"{', '.join(map(str, paths))}: the runs share no area with common "
                       "voxels (area names and voxel columns of voxels.csv)")
    return {
        "labels": _labels(paths), "paths": paths, "configs": [r["config"] for r in runs],
        "areas": areas, "dropped_areas": [a for a in all_areas if a not in areas],
        "voxels": {a: shared[a] for a in areas},
        "n_voxels": {a: [len(r["voxels"].get(a, {})) for r in runs] for a in all_areas},
        "per_run": {a: [_area_row(r, a, shared[a]) for r in runs] for a in areas},
        "pairs": {a: {(i, j): _agreement(runs[i], runs[j], a, shared[a])
                      for i in range(len(runs)) for j in range(i + 1, len(runs))}
                  for a in areas},
        "r_test": {a: [_column(r, a, shared[a], "r_test") for r in runs] for a in areas},
    }


def _scatter_png(summary: dict) -> str:
    """Per-voxel r of every run against the first, one panel per area (base64 PNG)."""
    # a bare Figure draws with Agg and leaves pyplot's backend (a notebook's) alone
    from matplotlib.figure import Figure

    areas, labels = summary["areas"], summary["labels"]
    fig = Figure(figsize=(3.6 * len(areas), 3.6))
    axes = fig.subplots(1, len(areas), squeeze=False)
    for ax, area in zip(axes[0], areas, strict=True):
        r = summary["r_test"][area]
        for k in range(1, len(r)):
            ax.scatter(r[0], r[k], s=9, alpha=0.6, label=labels[k])
        finite = np.concatenate(r)[np.isfinite(np.concatenate(r))]
        lo = min(float(finite.min()) if finite.size else 0.0, 0.0) - 0.05
        ax.plot([lo, 1.02], [lo, 1.02], color="0.5", lw=0.8)
        ax.axvline(WELL_PREDICTED, color="0.8", lw=0.6)
        ax.axhline(WELL_PREDICTED, color="0.8", lw=0.6)
        ax.set(xlim=(lo, 1.02), ylim=(lo, 1.02), aspect="equal",
               title=f"{area} ({len(r[0])} voxels)", xlabel=f"r_test, {labels[0]}",
               ylabel=f"r_test, {labels[1]}" if len(r) == 2 else "r_test, other runs")
        if len(r) > 2:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, bbox_inches="tight", format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _runs_section(summary: dict) -> str:
    rows = []
    for label, path, cfg in zip(summary["labels"], summary["paths"], summary["configs"],
                                strict=True):
        train = cfg.get("train", {})
        readout = cfg.get("readout", {})
        vf = cfg.get("data", {}).get("visual_field_deg")
        rows.append([html.escape(label), html.escape(str(path.resolve())),
                     html.escape(str(cfg.get("preset", "?"))), _num(train.get("seed")),
                     html.escape(str(readout.get("kind", "?"))), _num(vf, 1)])
    return "<h2>Runs</h2>" + _table(["run", "folder", "preset", "seed", "readout",
                                     "visual field (deg)"], rows, "runs")


def _shared_note(summary: dict) -> str:
    parts = []
    for area, counts in summary["n_voxels"].items():
        n = len(summary["voxels"].get(area, []))
        per = ", ".join(f"{html.escape(lab)} {c}" for lab, c in
                        zip(summary["labels"], counts, strict=True))
        parts.append(f"{html.escape(area)}: {n} shared voxels ({per})")
    note = ("Compared on the voxels all runs share (same area, same input column in "
            "voxels.csv): " + "; ".join(parts) + ".")
    if summary["dropped_areas"]:
        note += (" Not compared (not in every run, or no common voxels): "
                 + ", ".join(html.escape(a) for a in summary["dropped_areas"]) + ".")
    return f'<p class="note" id="shared">{note}</p>'


def _area_section(summary: dict) -> str:
    rows = []
    for area in summary["areas"]:
        for label, s in zip(summary["labels"], summary["per_run"][area], strict=True):
            rows.append([html.escape(area), html.escape(label), _num(s["n_voxels"]),
                         _num(s["median_r"]), _num(s["frac_r_above_0.3"]),
                         _num(s["median_r_ceiling"])])
    return ("<h2>Per-area results (held-out test rows, shared voxels)</h2>"
            + _table(["area", "run", "voxels", "median r", "fraction r > 0.3",
                      "median r / noise ceiling"], rows, "per-area")
            + '<p class="note">r: <code>r_test</code> of voxels.csv (each run\'s own test '
              "rows). r / noise ceiling: median <code>r_normalised</code> of the run's "
              "stats_voxels.csv (<code>niflow evaluate</code> with repeats: r and ceiling on "
              "the rows it scored) over the shared voxels with a ceiling; n/a where the run "
              "has none.</p>")


def _pairs_section(summary: dict) -> str:
    rows = []
    labels = summary["labels"]
    for area in summary["areas"]:
        for (i, j), p in summary["pairs"][area].items():
            rows.append([html.escape(area), html.escape(f"{labels[i]} vs {labels[j]}"),
                         _num(p["r_correlation"]), _num(p["n_well_predicted"]),
                         _num(p["median_centre_distance_px"], 2),
                         _num(p["median_centre_distance_deg"], 2), _num(p["size_spearman"])])
    return ("<h2>Agreement between runs</h2>"
            + _table(["area", "runs", "correlation of per-voxel r", "voxels r > 0.3 in both",
                      "median pRF centre distance (px)", "(deg)", "Spearman of pRF sizes"],
                     rows, "agreement")
            + f'<p class="note">pRF agreement over the shared voxels with r_test > '
              f"{WELL_PREDICTED} in both runs: distance between the readout pRF centres "
              "(prf_x, prf_y; degrees where both runs have prf_x_deg), Spearman correlation "
              f"of prf_sigma (n/a below {MIN_SPEARMAN} voxels).</p>")


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path = COMPARE_HTML) -> Path:
    """Write one self-contained HTML page comparing run folders side by side.

    Parameters
    ----------
    run_dirs : sequence of path
        Two or more finished run folders (e.g. presets, seeds or configurations on the
        same data); compared on the areas and voxels they share.
    out : path
        The page to write (default ``compare.html`` in the current directory); an existing
        folder gets ``compare.html`` inside it.

    Returns
    -------
    Path of the page.

    Raises
    ------
    RunError
        Fewer than two runs, a folder missing or unfinished, or nothing shared.
    """
    return write_compare_page(compare_summary(run_dirs), out)


def write_compare_page(summary: dict, out: str | Path = COMPARE_HTML) -> Path:
    """Write the page of a :func:`compare_summary` to ``out`` (atomically); its path."""
    title = "niflow comparison: " + ", ".join(summary["labels"])
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">written {time.strftime("%Y-%m-%d %H:%M")}</p>',
             _runs_section(summary), _shared_note(summary), _area_section(summary),
             _pairs_section(summary), "<h2>Per-voxel r</h2>",
             f'<figure><img alt="per-voxel r" src="data:image/png;base64,'
             f'{_scatter_png(summary)}"><figcaption>Held-out r of every shared voxel: each '
             f"run against {html.escape(summary['labels'][0])} (grey: equal r; lines at r = "
             f"{WELL_PREDICTED}).</figcaption></figure>"]
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    out = Path(out)
    return atomic_write_text(out / COMPARE_HTML if out.is_dir() else out, page)
