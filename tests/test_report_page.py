"""The report page: table of contents, per-area sections, its own figures, the per-voxel
table (sorted and searched in headless Chromium where it is installed), degrees once the
visual field is known, and the figures whose labels used to drift."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch

import niflow.figures as plots
from _browser import chromium_path, render_dom
from niflow.cli.demo import write_demo_scores
from niflow.cli.main import main
from niflow.data.io import load_responses, load_stimuli
from niflow.data.simulate import load_truth
from niflow.evaluate.statistics import noise_ceiling, read_table
from niflow.report import charts
from niflow.report.html import write_report
from niflow.runs.outputs import chosen_voxel_figures
from niflow.runs.run import load_run

TEST = "58:72"
VF = 8.0  # degrees the 56-px image width subtends in the degree report
CONFIG = {"select": {"candidates": [], "members": 1}, "train": {"epochs": 3}}


def cli(*args) -> None:
    assert main([str(a) for a in args]) == 0, args


class Page(HTMLParser):
    """Ids, links, images, the per-voxel table's cells and the visible text of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.links, self.images, self.sections = set(), [], [], []
        self.head, self.rows, self.attrs_of, self.attrs_body = [], [], {}, {}
        self._in, self._row, self._script, self.text = [], None, False, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
            self.attrs_of[a["id"]] = a
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "body":
            self.attrs_body = a
        if tag == "a" and a.get("href", "").startswith("#") and "toc" in self._in:
            self.links.append(a["href"][1:])
        if tag == "img":
            self.images.append(a)
        if tag == "script":
            self._script = True
        if tag in ("nav", "table") and "id" in a:
            self._in.append(a["id"])
        if "voxel-table" in self._in and tag == "tr":
            self._row = []
        if "voxel-table" in self._in and tag in ("td", "th") and self._row is not None:
            self._row.append([a.get("data-v"), ""])

    def handle_endtag(self, tag):
        if tag in ("nav", "table") and self._in:
            self._in.pop()
        if tag == "script":
            self._script = False
        if tag == "tr" and self._row is not None:
            (self.rows if self.head else self.head).append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None and self._row:
            self._row[-1][1] += data
        if not self._script:
            self.text.append(data)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("page")
    data, run = d / "data", d / "run"
    (d / "cfg.json").write_text(json.dumps(CONFIG))
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads spin against each other on a busy 2-core machine
    try:
        cli("simulate", data, "--n-per-letter", 12, "--v1", 40, "--v2", 30, "--seed", 3)
        cli("train", "--stim", data / "stim.mat", "--bold", data / "bold.mat", "--out", run,
            "--test-rows", TEST, "--config", d / "cfg.json", "--quiet")
        truth = load_truth(data)
        sim = SimpleNamespace(stim=load_stimuli(data / "stim.mat"),
                              responses=load_responses(data / "bold.mat"),
                              repeats={a: truth[a]["repeats"] for a in ("V1", "V2")})
        write_demo_scores(load_run(run), sim, np.arange(58, 72), run)
        cli("report", run, "--voxels", "V1:3,5", "--no-probe")
        deg = d / "report_deg.html"
        cli("report", run, "--visual-field-deg", VF, "--out", deg)
    finally:
        torch.set_num_threads(old)
    return {"dir": d, "data": data, "run": run, "truth": truth,
            "html": (run / "report.html").read_text(), "deg": deg.read_text()}


def test_training_stores_the_measured_test_responses(run):
    pred = np.load(run["run"] / "predictions.npz")
    bold = scipy.io.loadmat(run["data"] / "bold.mat")
    t = read_table(run["run"] / "voxels.csv")
    for area in ("V1", "V2"):
        cols = t["voxel"][t["area"] == area].astype(int)
        expect = bold[area][pred["test_rows"]][:, cols]
        np.testing.assert_allclose(pred[f"measured_{area}"], expect, rtol=1e-6)
        assert pred[f"measured_{area}"].shape == pred[area].shape


def test_demo_scores_are_the_baseline_and_evaluate_files(run):
    folder = run["run"]
    for kind in ("pixels", "gabor"):
        assert (folder / f"baseline_{kind}.csv").exists()
    stats = read_table(folder / "stats_voxels.csv")
    m = stats["area"] == "V1"
    rep = run["truth"]["V1"]["repeats"][:, 58:72]
    np.testing.assert_allclose(stats["noise_ceiling"][m], noise_ceiling(rep), rtol=1e-4)
    assert (folder / "figures" / "noise_ceiling.png").exists()


def test_table_of_contents_links_resolve_to_sections(run):
    page = Page(run["html"])
    assert page.links == page.sections  # one entry per section, in page order
    assert {"summary", "training", "sec-V1", "sec-V2", "voxels", "model"} <= set(page.sections)
    assert all(link in page.ids for link in page.links)


def test_page_is_self_contained_and_embeds_its_figures(run):
    text = run["html"]
    assert "<link" not in text and "url(" not in text and "<script src" not in text
    assert text.count("<script") == 1  # the table's inline script
    page = Page(text)
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert len(page.images) >= 8
    for fig in ("fig-training", "fig-hist-V1", "fig-predmeas-V1", "fig-vf-V1", "fig-vf-V2",
                "fig-ridge-V2", "fig-size-V2"):
        assert fig in page.ids, fig


def test_per_voxel_table_holds_every_voxel(run):
    page = Page(run["html"])
    t = read_table(run["run"] / "voxels.csv")
    head = [c[1] for c in page.head[0]]
    assert head[:3] == ["area", "voxel", "r"] and "noise ceiling" in head
    assert len(page.rows) == len(t["area"]) == int(page.attrs_of["voxel-table"]["data-total"])
    got = {(r[0][1], int(r[1][1])): float(r[2][0]) for r in page.rows}
    for a, v, r in zip(t["area"], t["voxel"].astype(int), t["r_test"], strict=True):
        assert got[(a, v)] == pytest.approx(float(r), rel=1e-5, abs=1e-6)
    # ridge r per voxel, matched by voxel, from the baseline's own file
    b = read_table(run["run"] / "baseline_gabor.csv")
    col = head.index("ridge gabor r")
    by = {(r[0][1], int(r[1][1])): float(r[col][0]) for r in page.rows}
    for a, v, r in zip(b["area"], b["voxel"].astype(int), b["r_test"], strict=True):
        assert by[(a, v)] == pytest.approx(float(r), rel=1e-5, abs=1e-6)


def test_histogram_counts_are_the_voxels_r(run):
    t = read_table(run["run"] / "voxels.csv")
    r = t["r_test"][t["area"] == "V2"].astype(float)
    b = read_table(run["run"] / "baseline_pixels.csv")
    ridge = b["r_test"][b["area"] == "V2"].astype(float)
    chart = charts.r_histogram("V2", r, {"pixels": ridge})
    edges = chart.data["edges"]
    assert edges[0] <= min(r.min(), ridge.min()) and edges[-1] >= 1.0
    for name, values in (("niflow", r), ("ridge on pixels", ridge)):
        naive = [sum(1 for v in values if lo <= v < hi or (hi == edges[-1] and v == hi))
                 for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        np.testing.assert_array_equal(chart.data["counts"][name], naive)
        assert chart.data["counts"][name].sum() == values.size
    assert "noise ceiling" not in chart.data["counts"]  # none given, none drawn


def test_best_epoch_marked_is_the_best_validation_epoch(run):
    log = [json.loads(x) for x in (run["run"] / "log.jsonl").read_text().splitlines()]
    scores = [e["val_median_r"] for e in log]
    best = log[int(np.argmax(scores))]["epoch"]
    assert plots.best_epoch_of(log) == best
    metrics = json.loads((run["run"] / "metrics.json").read_text())
    assert metrics["training"]["best_epoch"] == best
    assert f"epoch {best}, whose weights were kept" in run["html"]


def test_shown_voxels_are_the_best_median_and_chosen():
    r = np.array([0.2, 0.9, np.nan, 0.5, 0.1, 0.4])
    voxel = np.array([10, 11, 12, 13, 14, 15])
    rows, labels = charts.show_voxels(r, voxel, [14, 99])
    # finite r sorted: 0.1, 0.2, 0.4, 0.5, 0.9 -> best 0.9 (row 1), median 0.4 (row 5)
    assert rows == [1, 5, 4] and labels == ["best", "median", "chosen"]


def test_degrees_everywhere_once_the_visual_field_is_known(run):
    page = Page(run["deg"])
    text = " ".join(page.text)
    assert "(px)" not in text and "stimulus px" not in text
    assert "x (deg)" in [c[1] for c in page.head[0]]
    t = read_table(run["run"] / "voxels.csv")
    head = [c[1] for c in page.head[0]]
    ix, isz = head.index("x (deg)"), head.index("σ (deg)")
    row = {(r[0][1], int(r[1][1])): r for r in page.rows}
    for a, v, x, s in zip(t["area"], t["voxel"].astype(int), t["prf_x"], t["prf_sigma"],
                          strict=True):
        assert float(row[(a, v)][ix][0]) == pytest.approx((x - 27.5) * VF / 56, abs=1e-4)
        assert float(row[(a, v)][isz][0]) == pytest.approx(s * VF / 56, rel=1e-4)
    assert "median pRF size σ, in-silico (deg)" in text
    # the pixel report says where it stands
    assert "positions in stimulus pixels" in " ".join(Page(run["html"]).text)


def test_old_run_folders_say_predicted_vs_measured_is_unavailable(run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run["run"], old)
    with np.load(old / "predictions.npz") as z:
        kept = {k: z[k] for k in z.files if not k.startswith("measured_")}
    np.savez(old / "predictions.npz", **kept)
    page = write_report(old, probe_if_missing=False).read_text()
    assert "fig-predmeas-V1" not in Page(page).ids
    assert "Predicted against measured: unavailable" in page


def test_chosen_voxel_maps_are_titled_chosen(run, tmp_path, monkeypatch):
    titles = []

    def save(fig, path):
        titles.append(fig._suptitle.get_text())
        plots.plt.close(fig)
        return Path(path)

    monkeypatch.setattr(plots, "_save", save)
    chosen_voxel_figures(load_run(run["run"]), {"V1": [3, 5]}, tmp_path)
    assert len(titles) == 1 and "chosen voxels" in titles[0]
    assert "best-predicted" not in titles[0]


def test_flow_figure_of_a_chain_has_no_ablation_bars_or_one_column_map(run, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or Path(path))
    assert flow_is_a_chain(run)
    flow = read_table(run["run"] / "flow.csv")
    rows = [{k: flow[k][i] for k in flow} for i in range(len(flow["target"]))]
    norms = {("V1", "stimulus"): np.ones((16, 1)), ("V2", "V1"): np.arange(256.).reshape(16, 16)}
    plots.plot_flow(rows, norms, "unused.png")
    fig = figs[0]
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert [im.get_array().shape for im in images] == [(16, 16)]  # V2's map only
    bars = fig.axes[0].patches
    assert len(bars) == 2  # one per area: its held-out r, not drop-equal-to-r pairs
    np.testing.assert_allclose([b.get_height() for b in bars],
                               flow["median_r"].astype(float), rtol=1e-6)
    plots.plt.close(fig)


def flow_is_a_chain(run) -> bool:
    flow = read_table(run["run"] / "flow.csv")
    return list(zip(flow["source"], flow["target"], strict=True)) == [("stimulus", "V1"),
                                                                      ("V1", "V2")]


INJECT = """<script>
(function () {
  var t = document.getElementById("voxel-table"), heads = t.tHead.rows[0].cells;
  function col(i) {
    return Array.prototype.map.call(t.tBodies[0].rows, function (r) {
      return r.cells[i].getAttribute("data-v"); });
  }
  function visible() {
    return Array.prototype.filter.call(t.tBodies[0].rows, function (r) { return !r.hidden; })
      .map(function (r) { return r.cells[0].textContent + ":" + r.cells[1].textContent; });
  }
  var out = {};
  heads[2].click(); out.first = col(2); heads[2].click(); out.second = col(2);
  heads[0].click(); out.area = Array.prototype.map.call(t.tBodies[0].rows,
    function (r) { return r.cells[0].textContent; });
  var s = document.getElementById("voxel-search");
  s.value = "V2"; s.dispatchEvent(new Event("input")); out.v2 = visible();
  s.value = "v1 12"; s.dispatchEvent(new Event("input")); out.v1_12 = visible();
  out.count = document.getElementById("voxel-count").textContent;
  out.toc = Array.prototype.map.call(document.querySelectorAll("nav#toc a"), function (a) {
    var el = document.querySelector(a.getAttribute("href"));
    return el ? el.tagName : null; });
  out.images = Array.prototype.map.call(document.images, function (im) {
    return [im.src.indexOf("data:image/png;base64,") === 0, im.naturalWidth > 0,
            im.closest("figure").id]; });
  document.body.setAttribute("data-result", JSON.stringify(out));
})();
</script></body>"""


@pytest.mark.skipif(chromium_path() is None, reason="chromium not installed")
def test_page_in_headless_chromium_sorts_searches_and_links(run, tmp_path):
    page = tmp_path / "probe.html"
    page.write_text(run["html"].replace("</body>", INJECT))
    dom = render_dom(page, timeout=120)
    res = json.loads(Page(dom).attrs_body["data-result"])
    static = Page(run["html"])
    r = [float(c[2][0]) if c[2][0] else np.nan for c in static.rows]
    finite = sorted((v for v in r if np.isfinite(v)), reverse=True)
    nan_count = len(r) - len(finite)
    first = [float(v) for v in res["first"] if v]
    assert first == pytest.approx(finite)  # first click: best first
    assert res["first"][len(finite):] == [""] * nan_count  # n/a last
    assert [float(v) for v in res["second"] if v] == pytest.approx(finite[::-1])
    assert res["area"] == sorted(res["area"])
    cells = [[c[1].lower() for c in row] for row in static.rows]
    keys = [f"{row[0][1]}:{row[1][1]}" for row in static.rows]
    expect_v2 = [k for k, c in zip(keys, cells, strict=True) if "v2" in c[0]]
    expect_12 = [k for k, c in zip(keys, cells, strict=True)
                 if any("v1" in x for x in c) and any("12" in x for x in c)]
    assert sorted(res["v2"]) == sorted(expect_v2) and len(expect_v2) == 30
    assert sorted(res["v1_12"]) == sorted(expect_12) and expect_12
    assert res["count"] == f"{len(expect_12)} of {len(keys)} voxels shown"
    assert res["toc"] == ["SECTION"] * len(static.sections)
    shown = [im for im in res["images"] if im[0] and im[1]]
    assert len(shown) == len(res["images"]) >= 8
    ids = {im[2] for im in shown}
    assert {"fig-predmeas-V1", "fig-vf-V1", "fig-vf-V2", "fig-hist-V2"} <= ids


def test_report_of_a_demo_folder_is_its_run(run, tmp_path, capsys):
    shutil.copytree(run["run"], tmp_path / "demo" / "run")
    cli("report", tmp_path / "demo", "--no-probe")
    assert str(tmp_path / "demo" / "run" / "report.html") in capsys.readouterr().out
    page = Page((tmp_path / "demo" / "run" / "report.html").read_text())
    assert "sec-V2" in page.sections
    assert main(["report", str(tmp_path)]) == 2  # neither a run nor a demo folder
    assert "not a finished run" in capsys.readouterr().err


def test_readout_maps_switch_to_degrees(run, tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or Path(path))
    loaded = load_run(run["run"])
    chosen_voxel_figures(loaded, {"V1": [3]}, tmp_path)
    chosen_voxel_figures(loaded, {"V1": [3]}, tmp_path, visual_field_deg=VF)
    (px, deg) = (f.axes[0] for f in figs)
    assert "px" in px.get_xlabel() and "deg" in deg.get_xlabel() and "deg" in deg.get_ylabel()
    (x, y), (xd, yd) = (a.lines[0].get_xydata()[0] for a in (px, deg))
    assert (xd, yd) == pytest.approx(((x - 27.5) * VF / 56, (27.5 - y) * VF / 56))
    left, right, bottom, top = px.get_images()[0].get_extent()
    assert deg.get_images()[0].get_extent() == pytest.approx(
        [(left - 27.5) * VF / 56, (right - 27.5) * VF / 56, (27.5 - bottom) * VF / 56,
         (27.5 - top) * VF / 56])
    for f in figs:
        plots.plt.close(f)
