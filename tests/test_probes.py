"""In-silico experiments on a trained model against the simulator's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from _threads import one_thread
from niflow import config as cfgmod
from niflow.data.dataset import parse_rows
from niflow.data.simulate import simulate
from niflow.evaluate.statistics import pearson_r
from niflow.interpret.probes import ProbeSettings, probe
from niflow.interpret.receptive_fields import compare_sizes, receptive_fields
from niflow.runs.pipeline import train_run

WELL = 0.5  # held-out r of a well-predicted voxel


@pytest.fixture(scope="module")
def probed():
    sim = simulate(n_per_letter=30, n_voxels={"V1": 120, "V2": 80}, seed=3)
    n = sim.stim.shape[0]
    test = parse_rows(f"{n - n // 5}:{n}", n)
    cfg = cfgmod.preset("default")
    cfg.train.epochs = 15
    with one_thread():
        run, _, _ = train_run(sim.stim, sim.responses, None, cfg, test, progress=False)
        pred = run.predict(sim.stim[test])
        res = probe(run, ProbeSettings(grating_orientations=8, grating_phases=4),
                    visual_field_deg=10.0)
    r = {a: pearson_r(pred[a], sim.responses[a][test]) for a in pred}
    readout = {a: receptive_fields(run.model, a) for a in sim.areas}
    return sim, r, res, readout


# median centre distance bounds in px: the issue's 2 px for V1; V2's pRFs are twice as large
# (true σ 3-7 px here) and learnt from as few images, so its centres are held to 3 px. The
# same bounds hold between the in-silico (whole-model) and the readout centre: V2's readout
# sits on a 4 px grid and reads features whose kernel reaches 4 px (dilated taps) to either
# side, so the whole model's centre may lie off the readout's
TO_TRUTH = {"V1": 2.0, "V2": 3.0}


def test_in_silico_prf_centres_match_the_truth_and_the_readout(probed):
    sim, r, res, readout = probed
    for area in sim.areas:
        good = r[area] > WELL
        assert good.sum() > 0.8 * good.size
        p, t, q = res[area], sim.truth[area], readout[area]
        to_truth = np.hypot(p["prf_x"] - t["prf_x"], p["prf_y"] - t["prf_y"])[good]
        to_readout = np.hypot(p["prf_x"] - q["prf_x"], p["prf_y"] - q["prf_y"])[good]
        readout_to_truth = np.hypot(q["prf_x"] - t["prf_x"], q["prf_y"] - t["prf_y"])[good]
        assert np.median(to_truth) < TO_TRUTH[area], (area, np.median(to_truth))
        assert np.median(readout_to_truth) < TO_TRUTH[area], (area, np.median(readout_to_truth))
        assert np.median(to_readout) < TO_TRUTH[area], (area, np.median(to_readout))
        # eccentricity is defined as in the simulator: distance from the image centre
        for d in (p, q, t):
            np.testing.assert_allclose(d["eccentricity"],
                                       np.hypot(d["prf_x"] - 27.5, d["prf_y"] - 27.5))
        # degrees: 10° over 56 px
        np.testing.assert_allclose(p["eccentricity_deg"], p["eccentricity"] * 10 / 56)


def test_in_silico_v2_prfs_are_larger_than_v1_at_matched_eccentricity(probed):
    sim, r, res, _ = probed
    keep = {a: (r[a] > WELL) & (res[a]["fit_r"] > 0.5) for a in sim.areas}
    c = compare_sizes(res["V1"]["eccentricity"][keep["V1"]],
                      res["V1"]["prf_sigma"][keep["V1"]],
                      res["V2"]["eccentricity"][keep["V2"]],
                      res["V2"]["prf_sigma"][keep["V2"]], n_bins=3)
    assert c["b_larger_everywhere"], c
    # as in the ground truth (V2 pools over twice V1's pRF size)
    t = sim.truth
    assert compare_sizes(t["V1"]["eccentricity"], t["V1"]["prf_sigma"],
                         t["V2"]["eccentricity"], t["V2"]["prf_sigma"],
                         n_bins=3)["b_larger_everywhere"]


def test_preferred_orientation_of_single_orientation_voxels(probed):
    sim, r, res, _ = probed
    cfg = sim.config
    w = sim.truth["V1"]["feature_weights"].reshape(-1, cfg.n_orientations,
                                                   len(cfg.wavelengths)).sum(2)
    dom = (w.max(1) > 0.5) & (r["V1"] > WELL)
    # the simulator's channel o has stripes at (90° − 180°·o/n) mod 180 in niflow's
    # convention (see test_prf_params)
    truth = (90.0 - 180.0 * w.argmax(1) / cfg.n_orientations) % 180
    err = np.abs((res["V1"]["preferred_orientation"] - truth + 90) % 180 - 90)[dom]
    assert dom.sum() >= 8
    # chance: uniform error on [0°, 90°], median 45°
    assert np.median(err) < 25, np.median(err)
    assert (err < 22.5).mean() > 0.5
