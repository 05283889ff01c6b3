"""The movie baseline: motion energy, TR averaging, FIR delays, leave-one-run-out ridge."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from niflow.data.movie import MovieTiming
from niflow.data.simulate.movie import simulate_movie
from niflow.evaluate.motion_energy import (
    delay_features,
    fir_delays,
    loro_ridge,
    motion_energy_features,
    volume_features,
)


def _drifting(direction: int, n: int = 24, size: int = 32, fps: float = 8.0,
              hz: float = 2.0, wavelength: float = 8.0) -> np.ndarray:
    xx = np.arange(size)[None, None, :] * np.ones((n, size, 1))
    t = np.arange(n)[:, None, None] / fps
    return np.sin(2 * np.pi * (xx / wavelength - direction * hz * t))


def _channel_energy(frames: np.ndarray) -> np.ndarray:
    # 4 orientations x 1 wavelength x (static, +2 Hz, -2 Hz), one 32-px block
    f = motion_energy_features(frames, 8.0, n_orientations=4, wavelengths=(8.0,),
                               temporal_hz=(0.0, 2.0), pool=32)
    return f[8:].mean(0).reshape(4, 3)  # after the window has filled


def test_opposite_drifts_prefer_opposite_temporal_filters():
    a, b = _channel_energy(_drifting(+1)), _channel_energy(_drifting(-1))
    # orientation index 2 (90°: vertical stripes, drifting along x) carries the motion;
    # index 0 (horizontal stripes) hardly responds at all
    assert a[0].max() < 0.05 * a[2].max()
    assert (a[2, 1] - a[2, 2]) * (b[2, 1] - b[2, 2]) < 0
    assert abs(a[2, 1] - a[2, 2]) > 0.5 * a[2].max()
    # mirror images: the preferred filter's energy swaps exactly
    assert a[2, 1] == pytest.approx(b[2, 2], rel=1e-4)
    static = _channel_energy(np.repeat(_drifting(+1)[:1], 24, axis=0))
    assert static[2, 1] == pytest.approx(static[2, 2], rel=1e-5)


def test_temporal_filtering_restarts_at_each_run():
    frames = np.random.default_rng(5).normal(size=(32, 16, 16))
    runs = np.repeat([1, 2], 16)
    joined = motion_energy_features(frames, 8.0, runs, n_orientations=2, pool=8)
    # the same second run after a different first run: without a restart its first frames'
    # temporal windows would reach into the first run (frames 8-15 here, 24-31 there)
    other = motion_energy_features(np.concatenate([frames[16:], frames[16:]]), 8.0, runs,
                                   n_orientations=2, pool=8)
    assert np.allclose(joined[16:], other[16:], atol=1e-5)
    assert not np.allclose(frames[8:16], frames[24:32])


def _timing(volumes_per_run=(6, 5), fps=4.0, tr=1.0) -> MovieTiming:
    frames = [int(v * tr * fps) for v in volumes_per_run]
    return MovieTiming(fps, tr, np.repeat(np.arange(1, len(frames) + 1), frames),
                       np.repeat(np.arange(1, len(frames) + 1), volumes_per_run))


def test_volume_features_average_the_frames_of_each_tr():
    timing = _timing()
    feats = np.random.default_rng(0).normal(size=(timing.n_frames, 3))
    got = volume_features(feats, timing, np.arange(timing.n_volumes))
    for v in range(timing.n_volumes):
        run = timing.volume_run[v]
        j = v - int(np.flatnonzero(timing.volume_run == run)[0])
        frames = np.flatnonzero(timing.frame_run == run)
        onsets = np.arange(frames.size) / timing.fps
        during = frames[(onsets < j * timing.tr) & (onsets >= (j - 1) * timing.tr)]
        want = feats[during].mean(0) if during.size else np.zeros(3)
        assert np.allclose(got[v], want)


def test_delays_shift_within_runs_only():
    x = np.arange(1, 12, dtype=float)[:, None]
    runs = np.repeat([1, 2], (6, 5))
    got = delay_features(x, runs, (1, 3))
    assert got[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 0, 7, 8, 9, 10]
    assert got[:, 1].tolist() == [0, 0, 0, 1, 2, 3, 0, 0, 0, 7, 8]
    assert fir_delays(2.0) == (1, 2, 3, 4)
    assert fir_delays(0.7) == (2, 4, 6, 8, 10, 12)
    assert fir_delays(1.0, span_s=8.0) == (1, 2, 3, 4, 5, 6, 7, 8)


def test_ridge_matches_scikit_learn_and_picks_alpha_by_left_out_runs():
    rng = np.random.default_rng(1)
    runs = np.repeat([1, 2, 3], 30)
    x = rng.normal(size=(90, 12))
    beta = rng.normal(size=(12, 4)) * np.array([1.0, 0.3, 0.05, 0.0])
    y = x @ beta + rng.normal(size=(90, 4))
    x_test = rng.normal(size=(20, 12))
    alphas = np.array([0.1, 10.0, 1000.0, 1e5])
    pred, alpha = loro_ridge(x, y, runs, x_test, alphas)
    # naive reference: scikit-learn fits of every fold and penalty
    mu, sd = x.mean(0), x.std(0)
    for v in range(4):
        scores = []
        for a in alphas:
            rs = []
            for r in (1, 2, 3):
                tr = runs != r
                m, s = x[tr].mean(0), x[tr].std(0)
                fit = Ridge(alpha=a).fit((x[tr] - m) / s, y[tr, v])
                p = fit.predict((x[~tr] - m) / s)
                rs.append(np.corrcoef(p, y[~tr, v])[0, 1])
            scores.append(np.mean(rs))
        assert alpha[v] == alphas[int(np.argmax(scores))]
        ref = Ridge(alpha=alpha[v]).fit((x - mu) / sd, y[:, v]).predict((x_test - mu) / sd)
        assert np.allclose(pred[:, v], ref, atol=1e-8)
    assert alpha[3] > alpha[0]  # the pure-noise voxel is shrunk harder



@pytest.mark.parametrize("n_features", [12, 200])  # more rows than features, and fewer
def test_ridge_path_is_exact_ridge_for_tall_and_wide_designs(n_features):
    from niflow.evaluate.motion_energy import _ridge_path

    rng = np.random.default_rng(3)
    x, y, x_new = (rng.normal(size=(40, n_features)), rng.normal(size=(40, 3)),
                   rng.normal(size=(7, n_features)))
    x_new, x = x_new - x.mean(0), x - x.mean(0)  # loro_ridge passes standardised features
    alphas = np.array([0.1, 3.0, 1e4])
    got = _ridge_path(x, y, x_new, alphas)
    for i, a in enumerate(alphas):
        ref = Ridge(alpha=a).fit(x, y).predict(x_new)
        assert np.allclose(got[i], ref, rtol=1e-7, atol=1e-9)

@pytest.mark.slow
def test_motion_energy_ridge_predicts_a_simulated_movie():
    sim = simulate_movie(n_train_runs=3, run_seconds=90.0, fps=8.0, tr=1.0, size=24,
                         n_voxels={"V1": 60}, seed=2)
    timing = MovieTiming(sim.fps, sim.tr, sim.frame_run, sim.volume_run)
    feats = motion_energy_features(sim.stim, sim.fps, sim.frame_run, n_orientations=4, pool=6)
    xv = volume_features(feats, timing, np.arange(timing.n_volumes))
    x = delay_features(xv, timing.volume_run, fir_delays(timing.tr))
    test = timing.volume_run == sim.test_run
    pred, _ = loro_ridge(x[~test], sim.responses["V1"][~test], timing.volume_run[~test],
                         x[test])
    y = sim.responses["V1"][test]
    r = [np.corrcoef(pred[:, v], y[:, v])[0, 1] for v in range(60)]
    # a real, if imperfect, linear model: well above chance, below the noise ceiling
    assert np.median(r) > 0.15
    assert np.median(r) < np.median(sim.truth["V1"]["noise_ceiling"])
