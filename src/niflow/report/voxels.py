"""What the report knows per voxel, gathered from the run folder's tables, and the sortable,
searchable per-voxel table (plain JavaScript embedded in the page, no network).

Sources: ``voxels.csv`` (r, R², q, readout pRF), ``baseline_<kind>.csv`` (ridge r),
``stats_voxels.csv`` (noise ceiling, r / ceiling) and ``predictions.npz`` (test-row
predictions and, for runs trained since the report shows them, the measured responses).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from niflow.evaluate.statistics import read_table
from niflow.interpret.receptive_fields import degrees_per_pixel, visual_field_coordinates
from niflow.runs.evaluation import STATS_CSV
from niflow.runs.outputs import VOXELS_CSV


def _by_voxel(path: Path, area: str, voxel: np.ndarray, column: str) -> np.ndarray | None:
    """``column`` of ``path`` for ``voxel`` of ``area`` (NaN where a voxel is missing)."""
    if not path.exists():
        return None
    t = read_table(path)
    if column not in t:
        return None
    m = t["area"] == area
    lookup = {int(v): float(x) for v, x in zip(t["voxel"][m], t[column][m], strict=True)}
    return np.array([lookup.get(int(v), np.nan) for v in voxel])


def area_data(run_dir: Path, image_size: tuple[int, int],
              visual_field_deg: float | None) -> dict[str, dict]:
    """Per area: the voxels' scores, baselines, ceilings and readout pRFs in the plotting unit.

    Returns
    -------
    dict of area to dict with ``voxel``, ``r``, ``r2``, ``q`` (n_voxels,); ``ridge``
    (feature set → r); ``ceiling`` and ``r_norm`` (or None); ``prf``: ``x``, ``y``,
    ``sigma``, ``ecc`` in degrees (y up, centred) when ``visual_field_deg`` is given, else
    stimulus pixels, and ``angle`` (degrees, 0 = right, counter-clockwise); ``unit``.
    """
    t = read_table(run_dir / VOXELS_CSV)
    out = {}
    for area in dict.fromkeys(t["area"].tolist()):
        m = t["area"] == area
        col = {k: t[k][m].astype(float) for k in t if k not in ("area",)}
        voxel = t["voxel"][m].astype(int)
        coords = visual_field_coordinates(col["prf_x"], col["prf_y"], image_size,
                                          visual_field_deg)
        if visual_field_deg:
            dpp = degrees_per_pixel(image_size, visual_field_deg)
            prf = {"x": coords["x_deg"], "y": coords["y_deg"], "sigma": col["prf_sigma"] * dpp,
                   "ecc": coords["eccentricity_deg"]}
        else:
            prf = {"x": col["prf_x"], "y": col["prf_y"], "sigma": col["prf_sigma"],
                   "ecc": coords["eccentricity"]}
        prf["angle"] = coords["polar_angle"]
        ridge = {}
        for path in sorted(run_dir.glob("baseline_*.csv")):
            r = _by_voxel(path, area, voxel, "r_test")
            if r is not None:
                ridge[path.stem[len("baseline_"):]] = r
        out[area] = {"voxel": voxel, "r": col["r_test"], "r2": col["r2_test"],
                     "q": col.get("q_fdr", np.full(voxel.size, np.nan)), "ridge": ridge,
                     "ceiling": _by_voxel(run_dir / STATS_CSV, area, voxel, "noise_ceiling"),
                     "r_norm": _by_voxel(run_dir / STATS_CSV, area, voxel, "r_normalised"),
                     "prf": prf, "unit": "deg" if visual_field_deg else "px",
                     # movie runs: each voxel's learned HRF
                     "hrf": ({k: col[k] for k in ("hrf_peak_s", "hrf_fwhm_s")}
                             if "hrf_peak_s" in col else None)}
    return out


def test_responses(run_dir: Path, area: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(measured, predicted), each (n_test, n_voxels) in response units, or None when the
    run folder predates ``measured_<area>`` in ``predictions.npz``."""
    path = run_dir / "predictions.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        if f"measured_{area}" not in z.files or area not in z.files:
            return None
        return np.asarray(z[f"measured_{area}"], float), np.asarray(z[area], float)


def _cell(v: float, digits: int) -> str:
    if not math.isfinite(v):
        return '<td data-v="">n/a</td>'
    return f'<td data-v="{v:.6g}">{v:.{digits}f}</td>'


def voxel_table(areas: dict[str, dict]) -> str:
    """The per-voxel table: one row per voxel of every area, sortable and searchable."""
    kinds = list(dict.fromkeys(k for d in areas.values() for k in d["ridge"]))
    ceil = any(d["ceiling"] is not None for d in areas.values())
    unit = next(iter(areas.values()))["unit"] if areas else "px"
    head = [("area", "text"), ("voxel", "num"), ("r", "num"), ("R²", "num"),
            ("q (FDR)", "num")] + [(f"ridge {k} r", "num") for k in kinds]
    if ceil:
        head += [("noise ceiling", "num"), ("r / ceiling", "num")]
    head += [(f"x ({unit})", "num"), (f"y ({unit})", "num"), (f"σ ({unit})", "num"),
             (f"eccentricity ({unit})", "num"), ("polar angle (deg)", "num")]
    hrf = any(d.get("hrf") is not None for d in areas.values())
    if hrf:
        head += [("HRF peak (s)", "num"), ("HRF FWHM (s)", "num")]
    rows = []
    for area, d in areas.items():
        n = d["voxel"].size
        nan = np.full(n, np.nan)
        for j in range(n):
            cells = [f"<td>{html.escape(area)}</td>", f'<td data-v="{d["voxel"][j]}">'
                     f'{d["voxel"][j]}</td>', _cell(d["r"][j], 3), _cell(d["r2"][j], 3),
                     _cell(d["q"][j], 4)]
            cells += [_cell(d["ridge"].get(k, nan)[j], 3) for k in kinds]
            if ceil:
                cells += [_cell((d["ceiling"] if d["ceiling"] is not None else nan)[j], 3),
                          _cell((d["r_norm"] if d["r_norm"] is not None else nan)[j], 3)]
            p = d["prf"]
            cells += [_cell(p["x"][j], 2), _cell(p["y"][j], 2), _cell(p["sigma"][j], 2),
                      _cell(p["ecc"][j], 2), _cell(p["angle"][j], 1)]
            if hrf:
                h = d.get("hrf") or {"hrf_peak_s": nan, "hrf_fwhm_s": nan}
                cells += [_cell(h["hrf_peak_s"][j], 2), _cell(h["hrf_fwhm_s"][j], 2)]
            rows.append("<tr>" + "".join(cells) + "</tr>")
    ths = "".join(f'<th data-type="{kind}" data-col="{i}" title="click to sort">'
                  f"{html.escape(name)}</th>" for i, (name, kind) in enumerate(head))
    total = len(rows)
    return ('<div class="voxel-tools"><label>Search <input id="voxel-search" type="search" '
            'placeholder="e.g. V2, or V1 12" autocomplete="off"></label> '
            f'<span id="voxel-count">{total} of {total} voxels shown</span> '
            '<span class="note">Click a column heading to sort (again to reverse). Search '
            "terms must all occur in a row.</span></div>"
            f'<div class="scroll"><table id="voxel-table" data-total="{total}"><thead><tr>'
            f"{ths}</tr></thead><tbody>\n" + "\n".join(rows) + "</tbody></table></div>")


# Sorting and searching of #voxel-table. Numbers sort by data-v (full precision), n/a last
# whichever the direction; the first click on a number column sorts descending (best first).
VOXEL_TABLE_JS = r"""
(function () {
  var table = document.getElementById("voxel-table");
  if (!table) { return; }
  var body = table.tBodies[0], heads = table.tHead.rows[0].cells;
  var search = document.getElementById("voxel-search");
  var count = document.getElementById("voxel-count");
  function value(row, col, numeric) {
    var cell = row.cells[col];
    if (!numeric) { return cell.textContent; }
    var v = cell.getAttribute("data-v");
    return v === null || v === "" ? NaN : parseFloat(v);
  }
  function sortTable(col, descending) {
    var numeric = heads[col].getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    var sign = descending ? -1 : 1;
    rows.sort(function (a, b) {
      var x = value(a, col, numeric), y = value(b, col, numeric);
      if (numeric) {
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
        return sign * (x - y);
      }
      return sign * x.localeCompare(y);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    heads[col].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  function filterTable(text) {
    var terms = text.toLowerCase().split(/\s+/).filter(Boolean), shown = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var words = Array.prototype.map.call(row.cells, function (c) {
        return c.textContent.toLowerCase();
      });
      var hit = terms.every(function (t) {
        return words.some(function (w) { return w.indexOf(t) !== -1; });
      });
      row.hidden = !hit;
      shown += hit ? 1 : 0;
    });
    count.textContent = shown + " of " + body.rows.length + " voxels shown";
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var numeric = th.getAttribute("data-type") === "num";
      var now = th.getAttribute("aria-sort");
      sortTable(col, now ? now === "ascending" : numeric);
    });
  });
  search.addEventListener("input", function () { filterTable(search.value); });
})();
"""
