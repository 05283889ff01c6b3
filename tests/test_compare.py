"""`niflow compare` / niflow.compare_runs: values against a naive computation from voxels.csv.

Run folders are written directly following the run-folder contract (metrics.json,
voxels.csv, config.json, and for one run stats_voxels.csv as `niflow evaluate` writes it);
one test trains two tiny runs with different seeds and compares them through the CLI.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata

import niflow
from niflow.cli.main import main
from niflow.evaluate.statistics import write_table
from niflow.report.compare import compare_summary


def _write_run(path: Path, rows: list[dict], seed: int, ceilings: dict | None = None,
               visual_field_deg: float | None = None) -> Path:
    """A finished run folder holding only what compare reads."""
    path.mkdir(parents=True)
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    write_table(path / "voxels.csv", cols)
    (path / "metrics.json").write_text(json.dumps({"areas": {}}))
    (path / "config.json").write_text(json.dumps({
        "preset": "default", "train": {"seed": seed}, "readout": {"kind": "gaussian"},
        "data": {"visual_field_deg": visual_field_deg}}))
    if ceilings is not None:
        write_table(path / "stats_voxels.csv", {
            "area": [a for a, _ in ceilings], "voxel": [v for _, v in ceilings],
            "r": [c[0] for c in ceilings.values()],
            "noise_ceiling": [c[1] for c in ceilings.values()],
            "r_normalised": [c[0] / c[1] for c in ceilings.values()]})
    return path


def _rows(rng, areas: dict[str, list[int]], deg: bool) -> list[dict]:
    out = []
    for area, voxels in areas.items():
        for v in voxels:
            x, y = rng.uniform(0, 56, 2)
            row = {"area": area, "voxel": v, "r_test": rng.uniform(-0.2, 0.9), "prf_x": x,
                   "prf_y": y, "prf_sigma": rng.uniform(1, 8)}
            if deg:
                row.update(prf_x_deg=(x - 27.5) * 10 / 56, prf_y_deg=(27.5 - y) * 10 / 56)
            out.append(row)
    return out


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(3)
    # run a: V1 voxels 0..29, V2 0..19; run b drops V1 voxels 0..4 and has extra ones; run c
    # has no V2 at all
    a = _write_run(tmp_path / "a", _rows(rng, {"V1": list(range(30)), "V2": list(range(20))},
                                         True), 0,
                   ceilings={("V1", v): (rng.uniform(0, .8), rng.uniform(.5, .9))
                             for v in range(30)}, visual_field_deg=10)
    b = _write_run(tmp_path / "b", _rows(rng, {"V1": list(range(5, 40)),
                                               "V2": list(range(20))}, True), 1,
                   visual_field_deg=10)
    c = _write_run(tmp_path / "c", _rows(rng, {"V1": list(range(0, 40, 2))}, False), 2)
    return a, b, c


def _read(path: Path) -> dict[tuple[str, int], dict]:
    with open(path / "voxels.csv", newline="") as f:
        return {(r["area"], int(r["voxel"])): r for r in csv.DictReader(f)}


def _naive_spearman(x, y) -> float:
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


class _Tables(HTMLParser):
    """Cells of every <table id=...> on a page: id -> list of rows of cell text."""

    def __init__(self):
        super().__init__()
        self.tables, self._id, self._cell = {}, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id")
            self.tables[self._id] = []
        elif tag == "tr" and self._id is not None:
            self.tables[self._id].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._id is not None:
            self.tables[self._id][-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_table_values_match_a_naive_computation(runs, tmp_path):
    a, b, _ = runs
    va, vb = _read(a), _read(b)
    out = niflow.compare_runs([a, b], tmp_path / "cmp.html")
    page = out.read_text()
    parser = _Tables()
    parser.feed(page)
    per_area = {(row[0], row[1]): row[2:] for row in parser.tables["per-area"][1:]}
    agreement = {row[0]: row[2:] for row in parser.tables["agreement"][1:]}
    ceil_a = {}
    with open(a / "stats_voxels.csv", newline="") as f:
        for r in csv.DictReader(f):
            ceil_a[int(r["voxel"])] = float(r["r"]) / float(r["noise_ceiling"])
    for area in ("V1", "V2"):
        shared = sorted({v for ar, v in va if ar == area} & {v for ar, v in vb if ar == area})
        assert len(shared) == (25 if area == "V1" else 20)
        for label, table in (("a", va), ("b", vb)):
            r = [float(table[(area, v)]["r_test"]) for v in shared]
            n, med, frac, rc = per_area[(area, label)]
            assert int(n) == len(shared)
            assert med == f"{statistics.median(r):.3f}"
            assert frac == f"{sum(x > 0.3 for x in r) / len(r):.3f}"
            if label == "a" and area == "V1":
                assert rc == f"{statistics.median(ceil_a[v] for v in shared):.3f}"
            else:
                assert rc == "n/a"
        good = [v for v in shared if float(va[(area, v)]["r_test"]) > 0.3
                and float(vb[(area, v)]["r_test"]) > 0.3]
        assert len(good) >= 3
        dist = [math.dist([float(va[(area, v)][k]) for k in ("prf_x", "prf_y")],
                          [float(vb[(area, v)][k]) for k in ("prf_x", "prf_y")]) for v in good]
        dist_deg = [math.dist([float(va[(area, v)][k]) for k in ("prf_x_deg", "prf_y_deg")],
                              [float(vb[(area, v)][k]) for k in ("prf_x_deg", "prf_y_deg")])
                    for v in good]
        rho = _naive_spearman([float(va[(area, v)]["prf_sigma"]) for v in good],
                              [float(vb[(area, v)]["prf_sigma"]) for v in good])
        r_corr = np.corrcoef([float(va[(area, v)]["r_test"]) for v in shared],
                             [float(vb[(area, v)]["r_test"]) for v in shared])[0, 1]
        assert agreement[area] == [f"{r_corr:.3f}", str(len(good)),
                                   f"{statistics.median(dist):.2f}",
                                   f"{statistics.median(dist_deg):.2f}", f"{rho:.3f}"]
    assert "V1: 25 shared voxels (a 30, b 35)" in page


def test_page_is_self_contained_with_the_scatter(runs, tmp_path):
    a, b, c = runs
    page = niflow.compare_runs([a, b, c], tmp_path / "cmp.html").read_text()
    assert "<script" not in page and "<link" not in page and "url(" not in page
    srcs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page)
    assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")
    assert base64.b64decode(srcs[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # three runs: V2 is not in c, so only V1 is compared, on the voxels all three share;
    # every pair has its agreement row
    s = compare_summary([a, b, c])
    assert s["areas"] == ["V1"] and s["dropped_areas"] == ["V2"]
    assert s["voxels"]["V1"] == list(range(6, 30, 2))
    assert set(s["pairs"]["V1"]) == {(0, 1), (0, 2), (1, 2)}
    assert s["pairs"]["V1"][(0, 2)]["median_centre_distance_deg"] is None  # c has no degrees
    assert "Not compared (not in every run, or no common voxels): V2" in page


def test_default_out_is_compare_html_in_the_current_folder(runs, tmp_path, monkeypatch,
                                                           capsys):
    from niflow.cli.compare import COMPARE_HTML as CLI_DEFAULT
    from niflow.report.compare import COMPARE_HTML

    assert CLI_DEFAULT == COMPARE_HTML == "compare.html"
    a, b, _ = runs
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "compare.html").exists() and "wrote compare.html" in out
    assert re.search(r"V1\s+a\s+25\s", out)
    folder = tmp_path / "pages"
    folder.mkdir()
    assert niflow.compare_runs([a, b], folder) == folder / "compare.html"


def test_errors_are_one_line_and_write_nothing(runs, tmp_path, capsys):
    a, b, _ = runs
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    other = _write_run(tmp_path / "other", [{"area": "V3", "voxel": 0, "r_test": 0.5,
                                             "prf_x": 1.0, "prf_y": 1.0, "prf_sigma": 1.0}], 0)
    out = tmp_path / "page.html"
    cases = [([a, tmp_path / "nope"], "no such run folder"),
             ([a, unfinished], "not a finished run (no metrics.json)"),
             ([a], "at least two run folders"),
             ([a, other], "share no area")]
    for dirs, fragment in cases:
        capsys.readouterr()
        assert main(["compare", *map(str, dirs), "--out", str(out)]) == 2, dirs
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("niflow compare: error:"), err
        assert fragment in err, err
        assert not out.exists()
    with pytest.raises(niflow.RunError, match="no metrics.json"):
        niflow.compare_runs([b, unfinished], out)


def test_two_trained_runs_with_different_seeds(tmp_path, capsys):
    sim = niflow.simulate(tmp_path / "data", n_per_letter=6, n_voxels={"V1": 16, "V2": 12})
    dirs = []
    for seed in (0, 1):
        cfg = niflow.preset("default")
        cfg.select.candidates, cfg.select.members = [], 1
        cfg.train.epochs, cfg.train.seed = 2, seed
        niflow.train_run(sim.stim, sim.responses, tmp_path / f"seed{seed}", cfg.validate(),
                         test_rows=niflow.parse_rows("26:36", 36), progress=False)
        dirs.append(tmp_path / f"seed{seed}")
    assert main(["compare", *map(str, dirs), "--out", str(tmp_path / "c.html")]) == 0
    s = compare_summary(dirs)
    assert s["areas"] == ["V1", "V2"]
    for area, n in (("V1", 16), ("V2", 12)):
        assert len(s["voxels"][area]) == n
        va, vb = _read(dirs[0]), _read(dirs[1])
        r = [float(va[(area, v)]["r_test"]) for v in s["voxels"][area]]
        assert s["per_run"][area][0]["median_r"] == pytest.approx(statistics.median(r),
                                                                  abs=1e-6)
        assert r != [float(vb[(area, v)]["r_test"]) for v in s["voxels"][area]]  # seeds differ
        assert s["per_run"][area][0]["median_r_ceiling"] is None
    assert "seed0 vs seed1" in (tmp_path / "c.html").read_text()
