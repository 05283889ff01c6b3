"""The simulated pRF-mapping experiment: bar sweeps as specified (directions, width, steps,
blanks, flickering checkerboard, binary apertures), the movie contract on disk with the
apertures, the truth's eccentricity-dependent sizes and HRF latencies, and the classic fit
finding the truth's centres on its noise-free signal."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from niflow.data.movie import read_movie
from niflow.data.simulate.movie import write_movie_simulation
from niflow.data.simulate.prf_mapping import (
    DIRECTIONS_DEG,
    bar_sweep_run,
    simulate_prf_mapping,
)


def test_a_run_of_bar_sweeps_is_as_specified():
    size, fps, tr = 32, 4.0, 1.0
    stim, ap = bar_sweep_run(size, fps, tr)
    width = size / 8
    n_steps = math.ceil((size + width) / (width / 2))  # 18 steps of half a bar
    per_sweep = int(n_steps * tr * fps)
    blank = int(12 * fps)
    assert stim.shape == ap.shape == (8 * per_sweep + 4 * blank, size, size)
    assert stim.dtype == ap.dtype == np.uint8 and set(np.unique(ap)) == {0, 1}
    # outside the bar mid-grey; inside full-contrast checks, half of each polarity
    assert np.all(stim[ap == 0] == 128) and set(np.unique(stim[ap == 1])) == {1, 255}
    assert abs(np.mean(stim[ap == 1] == 255) - 0.5) < 0.05
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy_up = xx - (size - 1) / 2, (size - 1) / 2 - yy
    assert not ap[:, np.hypot(dx, dy_up) > size / 2].any()  # a circular field
    start = 0
    for i, theta in enumerate(DIRECTIONS_DEG):
        sweep = ap[start:start + per_sweep]
        steps = sweep.reshape(n_steps, int(tr * fps), size, size)
        # one position per TR; the bar's centroid moves along the direction (y up)
        assert all(np.array_equal(s[0], s[-1]) for s in steps)
        shown = [s[0] for s in steps if s[0].sum() > 0]
        cx = np.array([(dx * s).sum() / s.sum() for s in shown])
        cy = np.array([(dy_up * s).sum() / s.sum() for s in shown])
        along = cx * math.cos(math.radians(theta)) + cy * math.sin(math.radians(theta))
        assert np.all(np.diff(along) > 0) and along[-1] - along[0] > 0.8 * size
        # the bar through the centre is ~size/8 wide across its axis
        mid = steps[n_steps // 2, 0].astype(bool)
        dist = dx * math.cos(math.radians(theta)) + dy_up * math.sin(math.radians(theta))
        assert np.ptp(dist[mid]) == pytest.approx(width - 1, abs=1.0)
        # the checkerboard reverses every frame at 4 fps (4 reversals/s): opposite contrast
        s0, s1 = stim[start + 1 + n_steps // 2 * 4], stim[start + 2 + n_steps // 2 * 4]
        inside = ap[start + 1 + n_steps // 2 * 4].astype(bool)
        assert np.all(s0[inside].astype(int) + s1[inside] == 256)
        start += per_sweep
        if i % 2 == 1:  # a blank after every second sweep
            assert not ap[start:start + blank].any() and np.all(stim[start:start + blank] == 128)
            start += blank
    # moving every frame (half a pixel per frame here): about twice as many positions
    _, smooth = bar_sweep_run(size, fps, tr, directions=(0.0,), step="frame", blank_s=0)
    assert len(smooth) == per_sweep
    assert len(np.unique(smooth.reshape(per_sweep, -1), axis=0)) > 1.8 * n_steps
    with pytest.raises(ValueError, match="step"):
        bar_sweep_run(size, fps, tr, step="sometimes")


@pytest.fixture(scope="module")
def simulation():
    return simulate_prf_mapping(n_train_runs=2, size=20, fps=2.0, tr=1.0,
                                n_voxels={"V1": 40, "V2": 20}, n_repeats=3, seed=1)


def test_the_simulation_is_a_movie_data_set_with_its_apertures(simulation, tmp_path):
    sim = simulation
    paths = write_movie_simulation(sim, tmp_path)
    files = read_movie(paths["stim"], paths["bold"])
    assert files.timing.runs == [1, 2, 3] and sim.test_run == 3
    assert files.repeats("V1", [3]).shape == (3, int(np.sum(sim.volume_run == 3)), 40)
    with h5py.File(paths["stim"], "r") as fh:
        ap = np.asarray(fh["aperture"][()])
        assert ap.dtype == np.uint8 and np.array_equal(ap, sim.aperture)
        assert np.array_equal(np.asarray(fh["stim"][()]) != 128, ap == 1)
    # runs show the 8 sweeps in different orders: same length, different frames
    a1, a2 = (sim.aperture[sim.frame_run == r] for r in (1, 2))
    assert a1.shape == a2.shape and not np.array_equal(a1, a2)
    truth = np.load(paths["truth"])
    for area in ("V1", "V2"):
        ecc = np.hypot(truth[f"{area}_prf_x"] - 9.5, truth[f"{area}_prf_y"] - 9.5)
        sigma = truth[f"{area}_prf_sigma"]
        assert np.corrcoef(ecc, sigma)[0, 1] > 0.99  # size grows with eccentricity
        peaks = truth[f"{area}_hrf_peak_s"]
        assert peaks.min() >= 3.9 and peaks.max() <= 7.1
        assert np.median(truth[f"{area}_noise_ceiling"]) == pytest.approx(0.5, abs=0.08)
    assert np.median(truth["V2_prf_sigma"]) > 1.5 * np.median(truth["V1_prf_sigma"])


def test_the_classic_fit_finds_the_truths_centres_on_the_noise_free_signal(simulation):
    from niflow.data.movie import MovieTiming
    from niflow.evaluate.prf_fit import fit_prf

    sim = simulation
    timing = MovieTiming(sim.fps, sim.tr, sim.frame_run, sim.volume_run)
    fit = fit_prf(sim.aperture, sim.signal["V1"], timing, peaks=(4.0, 5.0, 6.0, 7.0))
    t = sim.truth["V1"]
    err = np.hypot(fit.x - t["prf_x"], fit.y - t["prf_y"])
    # the energy cortex is not the aperture model (edges, filter blur, transients), but
    # the centres agree: the stimulus, apertures and truth share one coordinate frame
    assert np.median(err) < 1.0 and np.median(fit.r) > 0.7
    assert np.median(np.abs(fit.hrf_peak_s - t["hrf_peak_s"])) < 1.0


def test_cli_simulate_prf_mapping(tmp_path):
    from niflow.cli.main import main

    rc = main(["simulate", str(tmp_path / "p"), "--video", "--prf-mapping", "--runs", "1",
               "--fps", "2", "--size", "16", "--v1", "6", "--v2", "4", "--repeats", "2"])
    assert rc == 0
    files = read_movie(tmp_path / "p" / "stim.h5", tmp_path / "p" / "bold.h5")
    assert files.timing.runs == [1, 2] and files.timing.fps == 2.0
    with h5py.File(tmp_path / "p" / "stim.h5", "r") as fh:
        assert fh["aperture"].shape == fh["stim"].shape
    assert main(["simulate", str(tmp_path / "q"), "--prf-mapping"]) != 0
