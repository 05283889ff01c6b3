"""Tests for the simulated BRAINS-like data set (niflow.data.simulate)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from scipy import ndimage, stats

from niflow.data.simulate import (
    SimConfig,
    Simulation,
    load_simulation,
    load_truth,
    make_glyphs,
    simulate,
    simulate_responses,
    write_simulation,
)

SIZE = 56


@pytest.fixture(scope="module")
def glyphs() -> tuple[np.ndarray, np.ndarray]:
    return make_glyphs()


@pytest.fixture(scope="module")
def default_sim(glyphs) -> Simulation:
    stim, labels = glyphs
    return simulate_responses(stim, labels=labels)


def _blob_probe(size: int, step: int, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Small Gaussian blobs on a grid: stimuli (n, size, size) and blob centres (n, 2) as x, y."""
    coords = np.arange(0, size, step, dtype=float)
    cx, cy = np.meshgrid(coords, coords)  # cx varies along columns
    centres = np.stack([cx.ravel(), cy.ravel()], axis=1)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    d2 = (xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32), centres


def _profile_centre_width(resp: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted centroid (x, y) and isotropic sd of a response map above 10 % of its range."""
    r = resp - resp.min()
    r = np.where(r > 0.1 * r.max(), r, 0.0)
    c = (r[:, None] * centres).sum(0) / r.sum()
    var = (r * ((centres - c) ** 2).sum(1)).sum() / r.sum() / 2
    return c, float(np.sqrt(var))


# --------------------------------------------------------------------------------- glyphs


def test_glyph_shape_dtype_range_and_order(glyphs):
    stim, labels = glyphs
    assert stim.shape == (360, SIZE, SIZE) and stim.dtype == np.uint8
    assert labels.shape == (360,) and np.issubdtype(labels.dtype, np.integer)
    assert stim.max() == 255 and stim.min() == 0
    # Anti-aliased: a sizeable share of inked pixels is intermediate grey.
    inked = stim[stim > 0]
    assert 0.1 < np.mean(inked < 255) < 0.9
    # Training part letter by letter (48 each), then test part letter by letter (12 each).
    np.testing.assert_array_equal(labels[:288], np.repeat(np.arange(6), 48))
    np.testing.assert_array_equal(labels[288:], np.repeat(np.arange(6), 12))
    # Every glyph has ink, none touches the border (the whole stroke fits inside).
    assert (stim.reshape(360, -1).max(1) == 255).all()
    border = np.concatenate([stim[:, 0], stim[:, -1], stim[:, :, 0], stim[:, :, -1]], axis=1)
    assert border.max() == 0


def test_glyph_letter_height_and_ink_near_centre(glyphs):
    stim, _ = glyphs
    rows = (stim > 127).any(axis=2)
    heights = np.array([np.ptp(np.nonzero(r)[0]) + 1 for r in rows])
    # Letter heights 60-85 % of the image, widened slightly by stroke width and rotation.
    assert np.median(heights) > 0.6 * SIZE
    assert heights.max() <= SIZE - 2
    assert heights.min() > 0.4 * SIZE
    # Most ink lies inside the disc where the default pRF centres are sampled (radius 0.4 *
    # size); the real BRAINS glyphs have 77 % there.
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    ecc = np.hypot(xx - (SIZE - 1) / 2, yy - (SIZE - 1) / 2)
    ink = stim.astype(float).sum(0)
    assert ink[ecc <= 0.4 * SIZE].sum() / ink.sum() > 0.75


def test_glyphs_deterministic_and_seed_dependent():
    a, la = make_glyphs(n_per_letter=5, seed=3)
    b, lb = make_glyphs(n_per_letter=5, seed=3)
    c, _ = make_glyphs(n_per_letter=5, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_glyph_options():
    stim, labels = make_glyphs(n_per_letter=10, size=40, letters="SAN", test_fraction=0.3)
    assert stim.shape == (30, 40, 40)
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2, 0, 1, 2], [7, 7, 7, 3, 3, 3]))
    with pytest.raises(ValueError):
        make_glyphs(n_per_letter=2, letters="BQX")


def test_letters_are_distinguishable(glyphs):
    """Nearest-class-mean on blurred images: train part -> held-out test part."""
    stim, labels = glyphs
    x = ndimage.gaussian_filter(stim.astype(float) / 255, sigma=(0, 2, 2)).reshape(360, -1)
    train, test = slice(0, 288), slice(288, 360)
    means = np.stack([x[train][labels[train] == k].mean(0) for k in range(6)])
    # Mean images of different letters differ clearly.
    dist = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert dist[~np.eye(6, dtype=bool)].min() > 0.1 * np.linalg.norm(means, axis=1).mean()
    pred = np.argmin(((x[test][:, None] - means[None]) ** 2).sum(2), axis=1)
    accuracy = np.mean(pred == labels[test])
    assert accuracy > 0.5  # chance is 1/6


# ------------------------------------------------------------------------- ground truth


def test_default_simulation_structure(default_sim, glyphs):
    sim = default_sim
    stim, labels = glyphs
    assert sim.areas == ["V1", "V2"]
    np.testing.assert_array_equal(sim.labels, labels)
    cfg = SimConfig()
    for area, nv, nf in [("V1", 800, cfg.n_v1_features), ("V2", 600, cfg.n_v2_features)]:
        assert sim.responses[area].shape == (360, nv)
        assert sim.responses[area].dtype == np.float32
        assert sim.repeats[area].shape == (2, 360, nv)
        assert sim.signal[area].shape == (360, nv)
        np.testing.assert_allclose(sim.responses[area], sim.repeats[area].mean(0), atol=1e-6)
        t = sim.truth[area]
        for key in ("prf_x", "prf_y", "prf_sigma", "reliability"):
            assert t[key].shape == (nv,)
            assert np.isfinite(t[key]).all()
        w = t["feature_weights"]
        assert w.shape == (nv, nf) and (w >= 0).all()
        np.testing.assert_allclose(w.sum(1), 1.0)
        assert ((t["reliability"] >= 0.5) & (t["reliability"] <= 0.9)).all()
        # pRF centres uniform over a disc of radius 0.4 * size around the image centre.
        r = np.hypot(t["prf_x"] - 27.5, t["prf_y"] - 27.5)
        assert r.max() <= 0.4 * SIZE + 1e-9
        assert 0.6 < np.mean(r < 0.4 * SIZE / np.sqrt(2)) / 0.5 < 1.4
        # Signal is z-scored per voxel.
        np.testing.assert_allclose(sim.signal[area].mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(sim.signal[area].std(0), 1.0, atol=1e-3)


def test_sigma_grows_with_eccentricity_and_v2_larger(default_sim):
    cfg = SimConfig()
    t1, t2 = default_sim.truth["V1"], default_sim.truth["V2"]
    for t, factor in [(t1, 1.0), (t2, cfg.v2_sigma_factor)]:
        ecc = np.hypot(t["prf_x"] - 27.5, t["prf_y"] - 27.5)
        np.testing.assert_allclose(
            t["prf_sigma"], factor * (cfg.v1_sigma_intercept + cfg.v1_sigma_slope * ecc)
        )
        assert stats.spearmanr(ecc, t["prf_sigma"])[0] > 0.99
    # Matched eccentricity: fit V1's line, V2 lies above it everywhere.
    ecc1 = np.hypot(t1["prf_x"] - 27.5, t1["prf_y"] - 27.5)
    ecc2 = np.hypot(t2["prf_x"] - 27.5, t2["prf_y"] - 27.5)
    slope, intercept = np.polyfit(ecc1, t1["prf_sigma"], 1)
    assert (t2["prf_sigma"] > 1.5 * (intercept + slope * ecc2)).all()


def test_v1_prf_centre_matches_blob_probe():
    """A small blob drives a V1 voxel most when it sits on the voxel's pRF centre.

    Checks the x = column, y = row, pixel-centre convention of prf_x / prf_y.
    """
    stim, centres = _blob_probe(SIZE, step=2)
    sim = simulate_responses(stim, n_voxels={"V1": 16}, seed=5)
    t = sim.truth["V1"]
    sig = sim.signal["V1"]
    for v in range(16):
        best = centres[np.argmax(sig[:, v])]
        err = np.hypot(best[0] - t["prf_x"][v], best[1] - t["prf_y"][v])
        assert err <= 2.0, (v, best, t["prf_x"][v], t["prf_y"][v])
        c, _ = _profile_centre_width(sig[:, v], centres)
        assert np.hypot(c[0] - t["prf_x"][v], c[1] - t["prf_y"][v]) <= 1.5


def test_probe_width_tracks_prf_sigma():
    """With narrow Gabors, the measured spatial tuning width follows the true pRF sigma."""
    cfg = SimConfig(wavelengths=(3.0,), v1_sigma_intercept=1.0, v1_sigma_slope=0.25)
    stim, centres = _blob_probe(SIZE, step=2)
    sim = simulate_responses(stim, n_voxels={"V1": 20}, seed=2, config=cfg)
    widths = [_profile_centre_width(sim.signal["V1"][:, v], centres)[1] for v in range(20)]
    sigma = sim.truth["V1"]["prf_sigma"]
    assert stats.spearmanr(widths, sigma)[0] > 0.8
    # Measured width^2 ~ pRF^2 + blob/energy spread^2, minus what the 10 % cut-off trims.
    assert (np.asarray(widths) > 0.6 * sigma).all()


def test_v2_spatial_tuning_broader_than_v1():
    """Probed with small crosses (corner/junction-like), V2 voxels are spatially broader."""
    size = SIZE
    coords = np.arange(4, size - 4, 2, dtype=int)
    centres = np.array([(x, y) for y in coords for x in coords], dtype=float)
    stim = np.zeros((len(centres), size, size), dtype=np.uint8)
    for i, (x, y) in enumerate(centres.astype(int)):
        stim[i, y - 3 : y + 4, x] = 255
        stim[i, y, x - 3 : x + 4] = 255
    sim = simulate_responses(stim, n_voxels={"V1": 30, "V2": 30}, seed=1)
    w = {
        a: np.median([_profile_centre_width(sim.signal[a][:, v], centres)[1] for v in range(30)])
        for a in ("V1", "V2")
    }
    assert w["V2"] > 1.2 * w["V1"]


def test_repeat_correlation_matches_reliability(default_sim):
    for area in default_sim.areas:
        rep = default_sim.repeats[area].astype(float)
        a = rep[0] - rep[0].mean(0)
        b = rep[1] - rep[1].mean(0)
        corr = (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0))
        rel = default_sim.truth[area]["reliability"]
        assert abs(corr.mean() - rel.mean()) < 0.03
        assert np.corrcoef(corr, rel)[0, 1] > 0.8
        # Noise-free signal correlates with a single repeat as sqrt(reliability).
        s = default_sim.signal[area]
        c1 = (s * a).sum(0) / np.sqrt((s**2).sum(0) * (a**2).sum(0))
        assert abs(c1.mean() - np.sqrt(rel).mean()) < 0.03


def test_responses_deterministic_and_per_area_streams(glyphs):
    stim = glyphs[0][::12]
    a = simulate_responses(stim, n_voxels={"V1": 20, "V2": 10}, seed=7)
    b = simulate_responses(stim, n_voxels={"V1": 20, "V2": 10}, seed=7)
    c = simulate_responses(stim, n_voxels={"V1": 20, "V2": 10}, seed=8)
    d = simulate_responses(stim, n_voxels={"V1": 20, "V2": 25}, seed=7)
    for area in ("V1", "V2"):
        np.testing.assert_array_equal(a.responses[area], b.responses[area])
        np.testing.assert_array_equal(a.truth[area]["prf_x"], b.truth[area]["prf_x"])
        assert not np.allclose(a.responses[area], c.responses[area])
    # Changing V2's voxel count leaves V1 untouched.
    np.testing.assert_array_equal(a.responses["V1"], d.responses["V1"])
    np.testing.assert_array_equal(a.truth["V1"]["prf_sigma"], d.truth["V1"]["prf_sigma"])


def test_arbitrary_stimulus_shapes_and_scaling():
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((20, 40, 48)), sigma=(0, 2, 2)).astype(np.float32)
    x = (x - x.min()) / (x.max() - x.min())
    sim = simulate_responses(x, n_voxels={"V1": 15, "V2": 12}, seed=0)
    for area, nv in [("V1", 15), ("V2", 12)]:
        assert sim.responses[area].shape == (20, nv)
        assert np.isfinite(sim.repeats[area]).all()
        t = sim.truth[area]
        assert (t["prf_x"] >= 0).all() and (t["prf_x"] <= 47).all()
        assert (t["prf_y"] >= 0).all() and (t["prf_y"] <= 39).all()
        ecc = np.hypot(t["prf_x"] - 23.5, t["prf_y"] - 19.5)
        assert ecc.max() <= 0.4 * 40 + 1e-9
    # uint8 0-255, float 0-255 and float 0-1 versions of one image set give the same result.
    u8 = np.round(x * 255).astype(np.uint8)
    s1 = simulate_responses(u8, n_voxels={"V1": 15}, seed=0)
    s2 = simulate_responses(u8.astype(np.float64), n_voxels={"V1": 15}, seed=0)
    s3 = simulate_responses(u8 / 255.0, n_voxels={"V1": 15}, seed=0)
    np.testing.assert_allclose(s1.signal["V1"], s2.signal["V1"], atol=1e-5)
    np.testing.assert_allclose(s1.signal["V1"], s3.signal["V1"], atol=1e-5)
    with pytest.raises(ValueError):
        simulate_responses(x[0], n_voxels={"V1": 3})
    with pytest.raises(ValueError):
        simulate_responses(x, n_voxels={"V4": 3})


def test_harder_configs(glyphs):
    stim = glyphs[0][::4]
    cfg = SimConfig(
        output_exponent=0.5,
        v1_sigma_intercept=3.0,
        v1_sigma_slope=0.15,
        v2_sigma_factor=3.0,
        prf_radius_frac=0.3,
        reliability_range=(0.2, 0.4),
        n_orientations=6,
        wavelengths=(4.0, 7.0, 12.0),
        dirichlet_concentration=0.3,
        n_repeats=3,
    )
    sim = simulate_responses(stim, n_voxels={"V1": 40, "V2": 30}, seed=0, config=cfg)
    assert sim.truth["V1"]["feature_weights"].shape == (40, 18)
    assert sim.repeats["V2"].shape == (3, len(stim), 30)
    base = simulate_responses(stim, n_voxels={"V1": 40, "V2": 30}, seed=0)
    assert not np.allclose(sim.signal["V1"], base.signal["V1"])
    for area in ("V1", "V2"):
        assert np.isfinite(sim.responses[area]).all()
        rel = sim.truth[area]["reliability"]
        assert ((rel >= 0.2) & (rel <= 0.4)).all()
        r = np.hypot(sim.truth[area]["prf_x"] - 27.5, sim.truth[area]["prf_y"] - 27.5)
        assert r.max() <= 0.3 * SIZE + 1e-9
    # Lower Dirichlet concentration: each voxel's weight concentrates on fewer channels.
    dense = simulate_responses(
        stim[:2],
        n_voxels={"V1": 40},
        seed=0,
        config=SimConfig(n_orientations=6, wavelengths=(4.0, 7.0, 12.0)),
    )
    sparse_max = sim.truth["V1"]["feature_weights"].max(1)
    dense_max = dense.truth["V1"]["feature_weights"].max(1)
    assert np.median(sparse_max) > 1.3 * np.median(dense_max)


# ---------------------------------------------------------------------------- writing


def test_write_load_round_trip(tmp_path, glyphs):
    stim, labels = glyphs
    sim = simulate(out_dir=None, n_per_letter=5, n_voxels={"V1": 30, "V2": 20}, seed=3)
    paths = write_simulation(sim, tmp_path / "sim")
    assert set(paths) == {"stim", "bold", "truth"}
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == [
        "bold.mat",
        "stim.mat",
        "truth.npz",
    ]

    s = scipy.io.loadmat(paths["stim"])
    assert s["stim"].dtype == np.uint8
    np.testing.assert_array_equal(s["stim"], sim.stim)
    b = scipy.io.loadmat(paths["bold"])
    assert sorted(k for k in b if not k.startswith("__")) == ["V1", "V2"]
    for area in ("V1", "V2"):
        assert b[area].dtype == np.float32
        np.testing.assert_array_equal(b[area], sim.responses[area])

    truth = load_truth(paths["truth"])
    assert sorted(truth) == ["V1", "V2"]
    for area in ("V1", "V2"):
        for key in ("prf_x", "prf_y", "prf_sigma", "reliability", "feature_weights"):
            np.testing.assert_array_equal(truth[area][key], sim.truth[area][key])
        np.testing.assert_array_equal(truth[area]["repeats"], sim.repeats[area])
        np.testing.assert_array_equal(truth[area]["signal"], sim.signal[area])
    with np.load(paths["truth"], allow_pickle=False) as z:
        assert {"V1_prf_x", "V2_feature_weights", "V1_repeats", "labels", "areas"} <= set(z.files)
        np.testing.assert_array_equal(z["labels"], sim.labels)
        meta = json.loads(str(z["config_json"]))
    assert meta["seed"] == 3 and meta["n_voxels"] == {"V1": 30, "V2": 20}
    assert SimConfig.from_dict(meta) == sim.config

    back = load_simulation(tmp_path / "sim")
    assert back.config == sim.config and back.seed == 3
    np.testing.assert_array_equal(back.responses["V2"], sim.responses["V2"])
    np.testing.assert_array_equal(back.labels, sim.labels)


def test_simulate_writes_and_accepts_stim(tmp_path):
    rng = np.random.default_rng(1)
    stim = (rng.random((6, 30, 30)) > 0.9).astype(np.uint8) * 255
    sim = simulate(out_dir=tmp_path, n_voxels={"V1": 4}, stim=stim)
    assert sim.labels is None and sim.areas == ["V1"]
    np.testing.assert_array_equal(scipy.io.loadmat(tmp_path / "stim.mat")["stim"], stim)
    with np.load(tmp_path / "truth.npz", allow_pickle=False) as z:
        assert "labels" not in z.files
    # Overwriting goes through os.replace and leaves no temp files behind.
    simulate(out_dir=tmp_path, n_voxels={"V1": 4}, stim=stim, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bold.mat", "stim.mat", "truth.npz"]


def test_real_brains_stimuli_smoke(brains_stim_path):
    stim = scipy.io.loadmat(brains_stim_path)["stim"]
    assert stim.shape == (360, 56, 56) and stim.dtype == np.uint8
    sim = simulate_responses(stim, n_voxels={"V1": 100, "V2": 80}, seed=0)
    for area in ("V1", "V2"):
        assert np.isfinite(sim.responses[area]).all()
        rep = sim.repeats[area]
        corr = [np.corrcoef(rep[0][:, v], rep[1][:, v])[0, 1] for v in range(rep.shape[2])]
        assert abs(np.mean(corr) - sim.truth[area]["reliability"].mean()) < 0.05
        # Responses carry stimulus information: not constant, voxels not all identical.
        assert np.median(np.abs(np.corrcoef(sim.signal[area].T))) < 0.9


def test_voxels_without_stimulus_energy_are_flat():
    """Ink only in the top-left corner: central voxels with small pRFs get no signal."""
    stim = np.zeros((12, SIZE, SIZE), dtype=np.uint8)
    for i in range(12):
        stim[i, 2 + i % 4 : 6 + i % 4, 2 : 4 + i // 2] = 255
    cfg = SimConfig(prf_radius_frac=0.05, v1_sigma_slope=0.0, v1_sigma_intercept=1.0)
    sim = simulate_responses(stim, n_voxels={"V1": 5, "V2": 5}, seed=0, config=cfg)
    for area in ("V1", "V2"):
        assert np.isfinite(sim.repeats[area]).all()
        np.testing.assert_array_equal(sim.signal[area], 0.0)
    # A blank stimulus set gives pure noise, no NaNs.
    blank = simulate_responses(np.zeros((4, 16, 16)), n_voxels={"V1": 3, "V2": 3}, seed=0)
    assert np.isfinite(blank.responses["V2"]).all()
    np.testing.assert_array_equal(blank.signal["V1"], 0.0)


# ----------------------------------------------------------------------- regime knobs


def test_size_law_exponent_and_scatter():
    stim = np.zeros((2, SIZE, SIZE), dtype=np.uint8)
    stim[:, 20:36, 27] = 255
    cfg = SimConfig(v1_sigma_intercept=0.8, v1_sigma_slope=0.45, v1_sigma_exponent=0.7,
                    prf_sigma_scatter=0.3, v2_sigma_factor=2.0)
    sim = simulate_responses(stim, n_voxels={"V1": 2000, "V2": 500}, seed=0, config=cfg)
    for area, factor in (("V1", 1.0), ("V2", 2.0)):
        t = sim.truth[area]
        law = factor * (0.8 + 0.45 * t["eccentricity"] ** 0.7)
        log_ratio = np.log(t["prf_sigma"] / law)
        assert abs(log_ratio.mean()) < 0.05 and abs(log_ratio.std() - 0.3) < 0.03
        assert abs(stats.spearmanr(log_ratio, t["eccentricity"])[0]) < 0.1
    # Constant law: sizes vary only through the scatter.
    const = simulate_responses(stim, n_voxels={"V1": 300}, seed=0,
                               config=SimConfig(v1_sigma_slope=0.0, v1_sigma_intercept=2.5))
    np.testing.assert_allclose(const.truth["V1"]["prf_sigma"], 2.5)


def test_beta_reliability_in_range_with_spread():
    cfg = SimConfig(reliability_distribution="beta", reliability_range=(0.02, 0.5),
                    reliability_beta=(2.0, 5.0))
    sim = simulate_responses(np.zeros((2, 16, 16)), n_voxels={"V1": 4000}, seed=0, config=cfg)
    rel = sim.truth["V1"]["reliability"]
    assert (rel >= 0.02).all() and (rel <= 0.5).all()
    # Beta(2, 5) has median ~0.264: 0.02 + 0.48 * 0.264 ~ 0.147, mean 0.02 + 0.48 * 2 / 7.
    assert abs(np.median(rel) - 0.147) < 0.01 and abs(rel.mean() - 0.157) < 0.01


def test_normalized_v1_is_sparse_and_heavy_tailed(glyphs):
    stim = glyphs[0][::3]
    cfg = SimConfig(v1_nonlinearity="normalized", v1_threshold_quantile=0.6)
    sparse = simulate_responses(stim, n_voxels={"V1": 200}, seed=0, config=cfg)
    dense = simulate_responses(stim, n_voxels={"V1": 200}, seed=0)
    k_sparse = np.median(stats.kurtosis(sparse.signal["V1"], axis=0))
    k_dense = np.median(stats.kurtosis(dense.signal["V1"], axis=0))
    assert k_sparse > k_dense + 1.5
    assert sparse.truth["V1"]["feature_threshold"].shape == (cfg.n_v1_features,)
    assert (sparse.truth["V1"]["feature_threshold"] > 0).all()


def test_endstop_v2_channels_and_round_trip(tmp_path, glyphs):
    cfg = SimConfig(n_orientations=6, v2_mode="endstop", v1_nonlinearity="normalized",
                    wavelengths=(4.0, 6.3, 10.0, 16.0))
    assert cfg.n_v2_channels == 12 + 9  # 2 end-stops per orientation + pairs >= 45 deg apart
    sim = simulate_responses(glyphs[0][:20], n_voxels={"V1": 5, "V2": 7}, seed=0, config=cfg)
    assert sim.truth["V2"]["feature_weights"].shape == (7, 21)
    assert "feature_mixing" not in sim.truth["V2"]
    assert np.isfinite(sim.responses["V2"]).all()
    write_simulation(sim, tmp_path)
    assert load_simulation(tmp_path).config == cfg


def test_invalid_new_knobs():
    for bad in ({"v2_mode": "loops"}, {"v1_nonlinearity": "relu"}, {"wavelengths": (1.5, 4.0)},
                {"reliability_distribution": "gamma"}, {"prf_sigma_scatter": -0.1},
                {"reliability_beta": (0.0, 1.0)}):
        with pytest.raises(ValueError):
            SimConfig(**bad)


def test_v3_leaves_v1_and_v2_untouched_and_is_v2s_conjunctions(glyphs):
    """Asking for V3 voxels changes no V1 or V2 draw; V3's signal is a naive recomputation:
    V2's maps blurred, mixed by the truth's signed weights, thresholded, pooled by each
    voxel's Gaussian pRF and feature weights, z-scored."""
    stim = glyphs[0][::6]
    two = simulate_responses(stim, n_voxels={"V1": 10, "V2": 8}, seed=4)
    three = simulate_responses(stim, n_voxels={"V1": 10, "V2": 8, "V3": 6}, seed=4)
    for area in ("V1", "V2"):
        np.testing.assert_array_equal(two.responses[area], three.responses[area])
    cfg, t = three.config, three.truth["V3"]
    from niflow.data.simulate.features import FeatureStages, as_unit_float

    x = as_unit_float(stim)
    v2 = FeatureStages(cfg, x, three.truth["V2"]["feature_mixing"], ("V2",))(x)["V2"]
    blurred = np.stack([[ndimage.gaussian_filter(m, cfg.v3_blur_sigma, mode="constant")
                         for m in img] for img in v2.astype(np.float64)])
    lin = np.einsum("kj,njhw->nkhw", t["feature_mixing"], blurred)
    maps = np.maximum(lin - t["feature_threshold"][None, :, None, None], 0.0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    drive = np.empty((len(stim), 6))
    for v in range(6):
        g = np.exp(-((xx - t["prf_x"][v]) ** 2 + (yy - t["prf_y"][v]) ** 2)
                   / (2 * t["prf_sigma"][v] ** 2))
        g /= g.sum()
        drive[:, v] = np.einsum("nkhw,hw,k->n", maps, g, t["feature_weights"][v])
    z = (drive - drive.mean(0)) / drive.std(0)
    np.testing.assert_allclose(three.signal["V3"], z, atol=2e-3)
    # pRFs 3.5 times V1's law, and V3 needs V2
    assert np.median(t["prf_sigma"]) > 1.5 * np.median(three.truth["V2"]["prf_sigma"])
    with pytest.raises(ValueError, match="V3 pools V2"):
        simulate_responses(stim, n_voxels={"V1": 4, "V3": 4})
