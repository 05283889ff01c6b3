"""The classic Gaussian pRF fit against independent references: the canonical HRF against the
simulator's double gamma, the volume sampling against explicit loops, time courses against
Gaussians evaluated on a finer grid, the vectorised grid search against a brute-force loop,
and popeye-style parameter recovery on synthetic voxels (noise-free and noisy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from niflow.data.movie import MovieTiming
from niflow.data.simulate.movie import double_gamma_hrf, hrf_shape
from niflow.evaluate.prf_fit import (
    PRFGrid,
    VolumeSampler,
    canonical_hrf,
    fit_prf,
    grid_search,
    prf_timecourses,
)

# the simulator's double gamma peaks at PEAK_PER_PARAM times its latency parameter
PEAK_PER_PARAM = hrf_shape(5.0, dt=1e-4)[0] / 5.0


def bar_apertures(size: int, frames_per_step: int, width: int = 3, blank: int = 16,
                  ) -> np.ndarray:
    """Four bar sweeps (left→right, top→bottom and back), blanks after each: (n, size, size)."""
    out = []
    for d in range(4):
        for k in range(size + width):
            a = np.zeros((size, size))
            lo, hi = max(0, k - width), min(size, k)
            if d == 0:
                a[:, lo:hi] = 1
            elif d == 1:
                a[lo:hi, :] = 1
            elif d == 2:
                a[:, size - hi:size - lo] = 1
            else:
                a[size - hi:size - lo, :] = 1
            out += [a] * frames_per_step
        out += [np.zeros((size, size))] * blank
    return np.array(out)


def fine_gaussians(x, y, sigma, size: int, sub: int = 5) -> np.ndarray:
    """Unit-mass Gaussians point-sampled on a ``sub``× finer grid, summed per pixel:
    (V, size, size)."""
    c = (np.arange(size * sub) + 0.5) / sub - 0.5
    s = np.asarray(sigma)[:, None, None]
    g = np.exp(-((c[None, None, :] - np.asarray(x)[:, None, None]) ** 2
                 + (c[None, :, None] - np.asarray(y)[:, None, None]) ** 2) / (2 * s**2))
    g = g / (2 * np.pi * s**2) / sub**2
    return g.reshape(len(g), size, sub, size, sub).sum(axis=(2, 4))


def naive_bold(neural: np.ndarray, peaks: np.ndarray, fps: float, tr: float,
               frame_run: np.ndarray, volume_run: np.ndarray) -> np.ndarray:
    """Explicit loops: volume j of a run sums h(j·tr − i/fps)·n_i/fps over the run's frames
    shown before it (the simulator's HRF, no truncation)."""
    out = np.zeros((volume_run.size, neural.shape[1]))
    for run in np.unique(volume_run):
        fr, vr = np.flatnonzero(frame_run == run), np.flatnonzero(volume_run == run)
        for jj, j in enumerate(vr):
            lag = jj * tr - np.arange(fr.size) / fps
            m = lag > 1e-9
            for v in range(neural.shape[1]):
                h = double_gamma_hrf(lag[m], peaks[v] / PEAK_PER_PARAM)
                out[j, v] = (h * neural[fr[m], v]).sum() / fps
    return out


def synthetic(n_voxels: int, seed: int, size: int = 18, fps: float = 2.0, tr: float = 1.0,
              n_runs: int = 2, peaks=(4.0, 5.0, 6.0, 7.0)):
    rng = np.random.default_rng(seed)
    run = bar_apertures(size, int(round(tr * fps)))
    ap = np.concatenate([run] * n_runs)
    frame_run = np.repeat(np.arange(n_runs), len(run))
    n_vol = int(round(len(run) / fps / tr))
    volume_run = np.repeat(np.arange(n_runs), n_vol)
    truth = {"x": rng.uniform(3, size - 4, n_voxels), "y": rng.uniform(3, size - 4, n_voxels),
             "sigma": rng.uniform(0.8, 3.5, n_voxels),
             "peak": rng.choice(np.asarray(peaks), n_voxels)}
    g = fine_gaussians(truth["x"], truth["y"], truth["sigma"], size)
    neural = ap.reshape(len(ap), -1) @ g.reshape(n_voxels, -1).T
    bold = naive_bold(neural, truth["peak"], fps, tr, frame_run, volume_run)
    timing = MovieTiming(fps, tr, frame_run, volume_run)
    return ap, bold, timing, truth


def test_canonical_hrf_peaks_where_asked_and_is_the_simulators_shape():
    t = np.arange(1e-4, 48.0, 1e-4)
    for peak in (4.0, 5.0, 6.5):
        h = canonical_hrf(t, peak)
        assert t[np.argmax(h)] == pytest.approx(peak, abs=2e-4)
        assert h.sum() * 1e-4 == pytest.approx(5 / 6, abs=1e-3)
        # the same double gamma as the simulator's, with its latency parameter rescaled
        ref = double_gamma_hrf(t, peak / PEAK_PER_PARAM)
        assert np.max(np.abs(h - ref)) < 1e-3 * h.max()
    with pytest.raises(ValueError, match="peak"):
        canonical_hrf(t, 0.0)


def test_volume_sampler_matches_explicit_loops_across_runs():
    # 3 fps and TR 1.3 s: frame onsets never line up with the volumes; two runs of
    # different lengths
    rng = np.random.default_rng(1)
    fps, tr = 3.0, 1.3
    frame_run = np.r_[np.zeros(120, np.int64), np.ones(90, np.int64)]
    volume_run = np.r_[np.zeros(31, np.int64), np.ones(23, np.int64)]
    timing = MovieTiming(fps, tr, frame_run, volume_run)
    neural = rng.standard_normal((210, 2))
    vols = np.arange(54)
    want = naive_bold(neural, np.array([5.0, 6.5]), fps, tr, frame_run, volume_run)
    s = VolumeSampler(timing, vols)
    got = np.column_stack([s.matrix(5.0) @ neural[:, 0], s.matrix(6.5) @ neural[:, 1]])
    assert np.allclose(got, want, atol=2e-4 * np.abs(want).max())
    # a run's first volume reflects nothing; a subset of volumes gives the same rows
    assert np.all(got[[0, 31]] == 0)
    sub = VolumeSampler(timing, np.array([40, 5, 33]))
    assert np.allclose(sub.matrix(5.0) @ neural[:, 0], got[[40, 5, 33], 0])


def test_timecourses_match_gaussians_on_a_finer_grid():
    ap, bold, timing, truth = synthetic(6, seed=2, n_runs=1)
    got = prf_timecourses(ap, timing, np.arange(timing.n_volumes), truth["x"], truth["y"],
                          truth["sigma"], truth["peak"])
    assert np.max(np.abs(got - bold)) < 5e-3 * np.abs(bold).max()
    # unit-peak Gaussians: the same time courses times 2πσ²
    peak1 = prf_timecourses(ap, timing, np.arange(timing.n_volumes), truth["x"], truth["y"],
                            truth["sigma"], truth["peak"], normalise=False)
    assert np.allclose(peak1, got * 2 * np.pi * truth["sigma"] ** 2)


def _erf_pixel(c: float, s: float, n: int) -> np.ndarray:
    cdf = [0.5 * (1 + math.erf((p - c) / (s * math.sqrt(2)))) for p in np.arange(n + 1) - 0.5]
    return np.diff(cdf)


def test_grid_search_equals_a_brute_force_loop():
    size, fps, tr = 8, 2.0, 1.0
    ap = bar_apertures(size, 2, width=2, blank=6)
    n_vol = int(len(ap) / fps / tr)
    timing = MovieTiming(fps, tr, np.zeros(len(ap), np.int64), np.zeros(n_vol, np.int64))
    grid = PRFGrid(np.array([1.0, 3.0, 4.5, 6.0]), np.array([0.5, 2.0, 5.0]),
                   np.array([0.7, 1.5, 3.0]), np.array([4.5, 6.0]))
    rng = np.random.default_rng(3)
    bold = rng.standard_normal((n_vol, 7))
    bold[:, :3] += 4 * naive_bold(ap.reshape(len(ap), -1)[:, [10, 30, 50]], np.array(
        [4.5, 6.0, 6.0]), fps, tr, timing.frame_run, timing.volume_run)
    vols = np.arange(n_vol)
    pts = grid.points()
    r = np.zeros((grid.size, bold.shape[1]))
    for i in range(grid.size):
        g = np.outer(_erf_pixel(pts["y"][i], pts["sigma"][i], size),
                     _erf_pixel(pts["x"][i], pts["sigma"][i], size))
        neural = (ap * g).sum(axis=(1, 2))[:, None]
        pred = naive_bold(neural, np.array([pts["peak"][i]]), fps, tr, timing.frame_run,
                          timing.volume_run)[:, 0]
        r[i] = [np.corrcoef(pred, bold[:, v])[0, 1] for v in range(bold.shape[1])]
    frames, fmap = np.unique(ap.reshape(len(ap), -1), axis=0, return_inverse=True)
    sampler = VolumeSampler(timing, vols, frame_map=fmap.reshape(-1))
    for max_values in (10**7, 50):  # one pass, and chunks of a single grid row
        best, best_r = grid_search(frames.reshape(-1, size, size), bold, sampler, grid,
                                   max_values=max_values)
        assert np.array_equal(best, np.argmax(r, axis=0))
        assert np.allclose(best_r, r.max(axis=0), atol=1e-4)


def test_noise_free_recovery_within_a_fraction_of_a_pixel():
    ap, bold, timing, truth = synthetic(25, seed=4)
    fit = fit_prf(ap, bold, timing, peaks=(4.0, 5.0, 6.0, 7.0))
    err = np.hypot(fit.x - truth["x"], fit.y - truth["y"])
    assert err.max() < 0.05
    assert np.max(np.abs(fit.sigma / truth["sigma"] - 1)) < 0.03
    assert np.array_equal(fit.hrf_peak_s, truth["peak"])
    assert fit.r.min() > 0.999 and np.all(fit.r >= fit.grid_r - 1e-9)
    # the grid alone is already close: refinement moves each estimate by under a grid step
    coarse = fit_prf(ap, bold, timing, peaks=(4.0, 5.0, 6.0, 7.0), refine=False)
    assert np.median(np.hypot(coarse.x - truth["x"], coarse.y - truth["y"])) < 1.0
    assert np.median(err) < np.median(np.hypot(coarse.x - truth["x"], coarse.y - truth["y"]))


def test_noisy_recovery_and_held_out_prediction():
    ap, clean, timing, truth = synthetic(40, seed=5, n_runs=3)
    rng = np.random.default_rng(6)
    # noise for a correlation of about 0.6 between the BOLD and its noise-free part
    sd = clean.std(axis=0) * math.sqrt(1 / 0.6**2 - 1)
    bold = clean + rng.standard_normal(clean.shape) * sd
    train = timing.volumes_of([0, 1])
    fit = fit_prf(ap, bold, timing, volumes=train, peaks=(4.0, 5.0, 6.0, 7.0))
    err = np.hypot(fit.x - truth["x"], fit.y - truth["y"])
    # at this noise (two runs of four sweeps) the errors are the noise's, not the search's:
    # every fit explains the training volumes at least as well as the true parameters do
    at_truth = prf_timecourses(ap, timing, train, truth["x"], truth["y"], truth["sigma"],
                               truth["peak"])
    r_truth = [np.corrcoef(at_truth[:, v], bold[train, v])[0, 1] for v in range(40)]
    assert np.all(fit.r >= np.array(r_truth) - 1e-9)
    assert np.median(err) < 0.8 and np.mean(err < 1.5) >= 0.85
    assert stats.spearmanr(fit.sigma, truth["sigma"])[0] > 0.6
    assert np.mean(fit.hrf_peak_s == truth["peak"]) > 0.8
    # the held-out run: predictions correlate with the noise-free signal
    test = timing.volumes_of([2])
    pred = fit.predict(ap, timing, test)
    r = [np.corrcoef(pred[:, v], clean[test, v])[0, 1] for v in range(40)]
    assert np.median(r) > 0.95


def test_unit_peak_gaussians_give_the_same_pRFs():
    ap, bold, timing, truth = synthetic(8, seed=7, n_runs=1)
    a = fit_prf(ap, bold, timing, peaks=(4.0, 5.0, 6.0, 7.0))
    b = fit_prf(ap, bold, timing, peaks=(4.0, 5.0, 6.0, 7.0), normalise=False)
    assert np.allclose(a.x, b.x, atol=0.02) and np.allclose(a.sigma, b.sigma, rtol=0.02)
    assert np.allclose(b.amplitude * 2 * np.pi * b.sigma**2, a.amplitude, rtol=0.05)


def test_fit_with_fps_and_tr_instead_of_a_timing_and_bad_inputs():
    ap, bold, timing, truth = synthetic(3, seed=8, n_runs=1)
    fit = fit_prf(ap, bold[:, 0], fps=2.0, tr=1.0)
    assert fit.x.shape == (1,) and abs(fit.x[0] - truth["x"][0]) < 0.1
    with pytest.raises(ValueError, match="apertures: .* frames"):
        fit_prf(ap[:-1], bold, timing)
    with pytest.raises(ValueError, match="bold: expected shape"):
        fit_prf(ap, bold[:-1], timing)
    with pytest.raises(ValueError, match="fps and tr"):
        fit_prf(ap, bold)
    with pytest.raises(ValueError, match="bold: NaN"):
        fit_prf(ap, np.where(np.eye(*bold.shape) > 0, np.nan, bold), timing)
    with pytest.raises(ValueError, match="no frame covers"):
        fit_prf(np.zeros_like(ap), bold, timing)
    # a constant voxel gets no estimate, the others are unaffected
    flat = fit_prf(ap, np.column_stack([bold[:, 0], np.ones(len(bold))]), timing)
    assert np.isnan([flat.x[1], flat.r[1], flat.grid_r[1]]).all()
    assert flat.x[0] == pytest.approx(fit.x[0], abs=1e-6)
