"""Ridge baselines: the Gabor-energy features against a naive convolution, the ridge solution
against its closed form, and the energy bank against pixels on the default simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from niflow.data.dataset import parse_rows, scale_stimuli
from niflow.data.errors import DataError
from niflow.data.simulate import simulate
from niflow.evaluate.baselines import (
    baseline_scores,
    gabor_energy_maps,
    gabor_features,
    gabor_kernel,
    pixel_features,
    ridge_predict,
)
from niflow.evaluate.statistics import pearson_r, read_table
from niflow.interpret.probes import grating
from niflow.runs.evaluation import baseline_folder


def naive_energy(img, kernel):
    """|Σ_uv img[y-u, x-v] · k[u, v]| with zero padding, pixel by pixel ('same' size)."""
    h, w = img.shape
    r = kernel.shape[0] // 2
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            acc = 0j
            for u in range(-r, r + 1):
                for v in range(-r, r + 1):
                    if 0 <= y - u < h and 0 <= x - v < w:
                        acc += img[y - u, x - v] * kernel[u + r, v + r]
            out[y, x] = abs(acc)
    return out


def test_gabor_energy_matches_a_naive_convolution():
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(1, 14, 12))
    maps = gabor_energy_maps(img, n_orientations=3, wavelengths=(3.0, 5.0))
    for o in range(3):
        for k, lam in enumerate((3.0, 5.0)):
            ref = naive_energy(img[0], gabor_kernel(lam, 60.0 * o))
            np.testing.assert_allclose(maps[0, o * 2 + k], ref, rtol=1e-4, atol=1e-5)


def test_gabor_kernel_is_a_zero_mean_quadrature_pair():
    k = gabor_kernel(6.0, 30.0)
    assert abs(k.real.sum()) < 1e-10 and abs(k.imag.sum()) < 1e-10
    assert (np.abs(k) ** 2).sum() == pytest.approx(1.0)
    # energy does not depend on the grating's phase (what makes it an energy model)
    e = gabor_energy_maps(np.array([grating((40, 40), 30.0, 6.0, ph)
                                    for ph in np.linspace(0, 2 * np.pi, 8, endpoint=False)]),
                          n_orientations=6, wavelengths=(6.0,))
    centre = e[:, 1, 20, 20]  # channel 1 = 30°
    assert centre.std() / centre.mean() < 0.02


def test_gabor_features_pool_energy_over_blocks():
    rng = np.random.default_rng(1)
    img = rng.uniform(size=(3, 16, 20))
    f = gabor_features(img, n_orientations=2, wavelengths=(4.0,), pool=4)
    maps = gabor_energy_maps(img, n_orientations=2, wavelengths=(4.0,))
    assert f.shape == (3, 2 * 4 * 5)
    # feature (channel 1, block row 2, block col 3) = mean of that 4×4 block
    idx = 1 * 20 + 2 * 5 + 3
    np.testing.assert_allclose(f[:, idx], maps[:, 1, 8:12, 12:16].mean((1, 2)), rtol=1e-6)


def test_ridge_on_gabor_features_matches_the_closed_form():
    rng = np.random.default_rng(2)
    stim = rng.uniform(size=(50, 16, 16))
    x = gabor_features(stim, n_orientations=4, wavelengths=(4.0,), pool=4)
    y = x[:, :5] @ rng.normal(size=(5, 3)) + rng.normal(size=(50, 3))
    train, test = np.arange(40), np.arange(40, 50)
    alpha = 10.0
    pred, chosen = ridge_predict(x[train], y[train], x[test], alphas=np.array([alpha]))
    mu, sd = x[train].mean(0), x[train].std(0)
    xs, xts = (x[train] - mu) / sd, (x[test] - mu) / sd
    ym = y[train].mean(0)
    beta = np.linalg.solve(xs.T @ xs + alpha * np.eye(x.shape[1]), xs.T @ (y[train] - ym))
    np.testing.assert_allclose(pred, xts @ beta + ym, rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(chosen, alpha)


def test_gabor_ridge_beats_pixel_ridge_on_the_default_simulations_v1():
    # the default simulation's stimuli (360 glyphs, test rows 288:360), fewer voxels
    sim = simulate(n_per_letter=60, n_voxels={"V1": 150}, seed=0)
    test = parse_rows("288:360", 360)
    x = scale_stimuli(sim.stim)
    gab = baseline_scores(x, sim.responses, test, "gabor", n_permutations=0)["V1"]
    pix = baseline_scores(x, sim.responses, test, "pixels", n_permutations=0)["V1"]
    r_gab, r_pix = gab["stats"]["r"], pix["stats"]["r"]
    assert np.median(r_gab) > np.median(r_pix) + 0.03, (np.median(r_gab), np.median(r_pix))
    assert (r_gab > r_pix).mean() > 0.65
    # scores are those of the predictions on the test rows, fitted on the other rows only
    np.testing.assert_allclose(r_pix, pearson_r(
        ridge_predict(pixel_features(x)[np.setdiff1d(np.arange(360), test)],
                      sim.responses["V1"][np.setdiff1d(np.arange(360), test)],
                      pixel_features(x)[test])[0], sim.responses["V1"][test]), atol=1e-10)


def test_baseline_in_a_folder_uses_the_runs_split_and_voxels(tmp_path):
    rng = np.random.default_rng(3)
    stim = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)
    resp = {"V1": rng.normal(size=(40, 6))}
    run = tmp_path / "run"
    run.mkdir()
    test = [3, 9, 15, 21, 27, 33]
    (run / "split.json").write_text(json.dumps({"train": [], "val": [], "test": test}))
    (run / "voxels.csv").write_text("area,voxel,r_test\n" + "".join(
        f"V1,{v},0.5\n" for v in (0, 2, 5)))
    baseline_folder(stim, resp, run, ["pixels"], n_permutations=50)
    t = read_table(run / "baseline_pixels.csv")
    np.testing.assert_array_equal(t["voxel"], [0, 2, 5])
    info = json.loads((run / "baseline_pixels.json").read_text())
    assert info["test_rows"] == test and info["areas"]["V1"]["n_voxels"] == 3
    assert (run / "figures" / "baselines.png").exists()
    with pytest.raises(DataError, match="not a run folder"):
        baseline_folder(stim, resp, tmp_path / "plain", ["pixels"])
