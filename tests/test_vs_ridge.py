"""niflow's default must beat voxelwise ridge regression on pixels on held-out voxels, on
simulations harder than its own default and on the real BRAINS stimuli."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from niflow import config as cfgmod
from niflow.data.dataset import parse_rows, scale_stimuli
from niflow.data.simulate import SimConfig, harder_configs, simulate
from niflow.evaluate.baselines import pixel_features, ridge_predict
from niflow.evaluate.statistics import pearson_r
from niflow.runs.pipeline import train_run


def test_ridge_matches_closed_form_for_a_fixed_alpha():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 25)), rng.normal(size=(60, 4))
    xt = rng.normal(size=(10, 25))
    alpha = 3.0
    pred, chosen = ridge_predict(x, y, xt, alphas=np.array([alpha]))
    mu, sd = x.mean(0), x.std(0)
    xs, xts = (x - mu) / sd, (xt - mu) / sd
    ym = y.mean(0)
    beta = np.linalg.solve(xs.T @ xs + alpha * np.eye(25), xs.T @ (y - ym))
    np.testing.assert_allclose(pred, xts @ beta + ym, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(chosen, alpha)


def test_ridge_picks_alpha_per_voxel_by_cross_validation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 30))
    clean = x @ rng.normal(size=30)
    y = np.c_[clean + 0.01 * rng.normal(size=120), rng.normal(size=120)]  # signal | pure noise
    _, alpha = ridge_predict(x, y, x[:2])
    assert alpha[0] < alpha[1]


HARD = harder_configs()


def _compare(stim, responses, test):
    n = stim.shape[0]
    train = np.setdiff1d(np.arange(n), test)
    run, _, _ = train_run(stim, responses, None, cfgmod.preset("default"), test,
                          progress=False)
    pred = run.predict(stim[test])
    pix = pixel_features(scale_stimuli(stim))
    out = {}
    for area, resp in responses.items():
        ridge, _ = ridge_predict(pix[train], resp[train], pix[test])
        out[area] = (pearson_r(pred[area], resp[test]), pearson_r(ridge, resp[test]))
    return out


def _assert_beats(scores):
    for area, (r_nif, r_ridge) in scores.items():
        assert np.median(r_nif) > np.median(r_ridge) + 0.03, (area, np.median(r_nif),
                                                             np.median(r_ridge))
        assert (r_nif > r_ridge).mean() > 0.65, (area, (r_nif > r_ridge).mean())


@pytest.mark.parametrize("name", sorted(HARD))
def test_default_beats_ridge_on_harder_simulations(name):
    sim = simulate(n_per_letter=40, n_voxels={"V1": 150, "V2": 100}, seed=5,
                   config=HARD[name])
    n = sim.stim.shape[0]
    _assert_beats(_compare(sim.stim, sim.responses, parse_rows(f"{n - n // 5}:{n}", n)))


def test_default_beats_ridge_on_real_brains_stimuli(brains_stim_path):
    stim = scipy.io.loadmat(brains_stim_path)["stim"]
    sim = simulate(stim=stim, n_voxels={"V1": 150, "V2": 100}, seed=9,
                   config=SimConfig(output_exponent=0.5))
    _assert_beats(_compare(stim, sim.responses, parse_rows("288:360", 360)))
