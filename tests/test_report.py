"""The science commands end to end through the CLI, and the self-contained HTML report."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import scipy.io
import torch

from niflow.cli.main import main
from niflow.data.simulate import load_truth
from niflow.evaluate.statistics import fdr_bh, noise_ceiling, read_table

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
N, TEST = 72, "58:72"


def cli(*args) -> None:
    assert main([str(a) for a in args]) == 0, args


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    data, run = d / "data", d / "run"
    # one thread: two spin against each other on a busy 2-core machine (test_probes.py)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli("simulate", data, "--n-per-letter", 12, "--v1", 40, "--v2", 30, "--seed", 2)
        cli("train", "--stim", data / "stim.mat", "--bold", data / "bold.mat", "--out", run,
            "--test-rows", TEST, "--epochs", 4, "--quiet")
        cli("evaluate", run, "--stim", data / "stim.mat", "--bold", data / "bold.mat", "--rows",
            TEST, "--repeats", data / "bold_rep1.mat", data / "bold_rep2.mat",
            "--permutations", 200)
        cli("baseline", "--stim", data / "stim.mat", "--bold", data / "bold.mat", "--out", run,
            "--permutations", 100)
        cli("report", run, "--voxels", "V1:0,3", "--voxels", "V1:7")
    finally:
        torch.set_num_threads(old)
    return {"dir": d, "data": data, "run": run,
            "html": (run / "report.html").read_text()}


def test_training_adds_significance_and_retinotopy_columns(folder):
    run = folder["run"]
    with open(run / "voxels.csv") as fh:
        header = fh.readline().strip().split(",")
    assert header[:7] == ["area", "voxel", "r_test", "r2_test", "prf_x", "prf_y", "prf_sigma"]
    assert {"p_perm", "q_fdr", "prf_ecc", "prf_angle", "prf_multipole"} <= set(header)
    t = read_table(run / "voxels.csv")
    for area in ("V1", "V2"):
        m = t["area"] == area
        np.testing.assert_allclose(t["q_fdr"][m], fdr_bh(t["p_perm"][m]), rtol=1e-5)
        ecc = np.hypot(t["prf_x"][m] - 27.5, t["prf_y"][m] - 27.5)
        np.testing.assert_allclose(t["prf_ecc"][m], ecc, rtol=1e-4, atol=1e-4)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["areas"]["V1"]["frac_significant"] <= 1
    flow = read_table(run / "flow.csv")
    assert [tuple(x) for x in zip(flow["source"], flow["target"], strict=True)] == [
        ("stimulus", "V1"), ("V1", "V2")]


def test_evaluate_with_repeats_reports_the_split_half_ceiling(folder):
    run, data = folder["run"], folder["data"]
    stats = json.loads((run / "stats.json").read_text())
    assert "Spearman-Brown" in stats["noise_ceiling"]
    rep = load_truth(data)["V1"]["repeats"][:, 58:72]
    t = read_table(run / "stats_voxels.csv")
    m = t["area"] == "V1"
    np.testing.assert_allclose(t["noise_ceiling"][m], noise_ceiling(rep), rtol=1e-4)
    v = read_table(run / "voxels.csv")
    np.testing.assert_allclose(t["r"][m], v["r_test"][v["area"] == "V1"], atol=1e-5)
    assert stats["areas"]["V2"]["median_noise_ceiling"] > 0.5


def test_evaluate_detects_a_leading_repeat_axis(folder, tmp_path):
    data = folder["data"]
    truth = load_truth(data)
    stacked = tmp_path / "bold_repeats.mat"
    scipy.io.savemat(stacked, {a: truth[a]["repeats"] for a in ("V1", "V2")})
    cli("evaluate", folder["run"], "--stim", data / "stim.mat", "--bold", stacked, "--rows",
        TEST, "--permutations", 200, "--out", tmp_path)
    a, b = read_table(tmp_path / "stats_voxels.csv"), read_table(folder["run"] /
                                                                 "stats_voxels.csv")
    for col in ("r", "noise_ceiling", "r_normalised", "p_perm"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-4, atol=1e-6)


def test_probe_command_in_degrees(folder, tmp_path):
    cli("probe", folder["run"], "--visual-field-deg", 8, "--out", tmp_path)
    info = json.loads((tmp_path / "probe.json").read_text())
    assert info["visual_field_deg"] == 8
    t = read_table(tmp_path / "probe_voxels.csv")
    np.testing.assert_allclose(t["sigma_deg"], t["prf_sigma"] * 8 / 56, rtol=1e-4)
    np.testing.assert_allclose(t["preferred_sf_cpd"], t["preferred_sf"] * 56 / 8, rtol=1e-4)
    assert (tmp_path / "figures" / "probe_prf.png").exists()


def test_evaluate_without_repeats_does_not_invent_a_ceiling(folder, tmp_path, capsys):
    cli("evaluate", folder["run"], "--stim", folder["data"] / "stim.mat", "--bold",
        folder["data"] / "bold.mat", "--rows", TEST, "--permutations", 0, "--out", tmp_path)
    out = capsys.readouterr().out
    assert "noise ceiling unavailable" in out
    stats = json.loads((tmp_path / "stats.json").read_text())
    for s in stats["areas"].values():
        assert s["median_noise_ceiling"] is None and s["ceiling_method"] is None
        assert "unavailable" in s["note"]
    assert not (tmp_path / "figures" / "noise_ceiling.png").exists()


def test_report_is_self_contained(folder):
    page = folder["html"]
    # one inline script (the per-voxel table), nothing fetched
    assert page.count("<script") == 1 and "<script src" not in page
    assert "<link" not in page and "url(" not in page
    for attr, value in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', page):
        # images embedded, links only within the page (the table of contents)
        ok = value.startswith("data:image/png;base64,") if attr == "src" else \
            value.startswith("#")
        assert ok, (attr, value[:60])


def test_report_holds_every_table_and_figure(folder):
    page, run = folder["html"], folder["run"]
    for table in ("area-V1", "area-V2", "checks", "flow", "baselines", "training-log"):
        assert f'id="{table}"' in page, table
    figures = sorted((run / "figures").glob("*.png"))
    # training, kernels, rf and chosen rf, coverage, size-ecc, probe x2, flow, ceiling, baselines
    assert {p.name for p in figures} == {
        "training.png", "kernels_V1.png", "rf_V1.png", "rf_V2.png", "rf_chosen_V1.png",
        "coverage.png", "size_ecc.png", "probe_prf.png", "probe_tuning.png", "flow.png",
        "noise_ceiling.png", "baselines.png"}
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == page.count("<img ")
    embedded = {base64.b64decode(b) for b in images}
    # the report draws the training curve, coverage and baseline comparison itself (best
    # epoch marked, per area, in the page's unit); every other folder figure is embedded
    redrawn = {"training.png", "coverage.png", "baselines.png"}
    assert embedded >= {p.read_bytes() for p in figures if p.name not in redrawn}
    assert len(embedded) >= len(figures)
    # the configuration and the headline checks are on the page
    assert "&quot;preset&quot;: &quot;default&quot;" in page
    assert "in-silico vs readout pRF centre" in page and "pRF size &gt; V1" in page


def test_report_command_errors_are_one_line(folder, tmp_path, capsys):
    cases = [(["report", tmp_path], "not a finished run"),
             (["report", folder["run"], "--voxels", "V1:a"], "AREA:V1,V2"),
             (["report", folder["run"], "--voxels", "V9:1"], "no area 'V9'"),
             (["report", folder["run"], "--voxels", "V1:999"], "no voxel(s) [999]"),
             (["probe", folder["run"], "--visual-field-deg", "-3"], "must be > 0"),
             (["evaluate", folder["run"], "--stim", folder["data"] / "stim.mat"],
              "give --bold, --repeats"),
             (["baseline", "--stim", folder["data"] / "stim.mat", "--bold",
               folder["data"] / "bold.mat", "--out", tmp_path / "new", "--test-rows", "70:72"],
              "at least 3")]
    for args, fragment in cases:
        capsys.readouterr()
        assert main([str(a) for a in args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, (args, err)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(folder, tmp_path):
    shot = tmp_path / "report.png"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "check_report.sh"),
                           str(folder["run"] / "report.html"), str(shot), "1200x2400"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (2400, 1200)
    # a rendered page, not a blank one: dark text and figure pixels on the white background
    grey = img[..., :3].mean(-1)
    assert (grey < 0.5).mean() > 0.01 and (grey > 0.95).mean() > 0.3
