"""Movie fMRI: the file contract's timing and checks, and the movie simulator's ground truth."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from scipy import integrate

from niflow.data.errors import DataError
from niflow.data.movie import (
    MovieFiles,
    MovieTiming,
    check_movie_timing,
    check_repeats,
    check_test_runs,
    default_test_runs,
    movie_split,
    read_movie,
)
from niflow.data.simulate.movie import (
    double_gamma_hrf,
    hrf_shape,
    simulate_movie,
    write_movie_simulation,
)
from niflow.evaluate.statistics import noise_ceiling


def _timing(frames_per_run=(40, 24, 32), fps=8.0, tr=1.0) -> MovieTiming:
    frame_run = np.concatenate([np.full(n, r + 1) for r, n in enumerate(frames_per_run)])
    volume_run = np.concatenate([np.full(int(n / fps / tr), r + 1)
                                 for r, n in enumerate(frames_per_run)])
    return MovieTiming(fps, tr, frame_run, volume_run)


def _naive_window(timing: MovieTiming, volume: int, n_window: int) -> list[int]:
    run = timing.volume_run[volume]
    j = volume - int(np.flatnonzero(timing.volume_run == run)[0])
    frames = np.flatnonzero(timing.frame_run == run)
    shown = [int(f) for i, f in enumerate(frames) if i / timing.fps < j * timing.tr - 1e-12]
    window = shown[-n_window:] if n_window else []
    return [-1] * (n_window - len(window)) + window


@pytest.mark.parametrize("fps,tr", [(8.0, 1.0), (10.0, 0.7), (3.0, 2.0)])
def test_frames_before_each_volume_match_a_naive_scan(fps, tr):
    n = [int(fps * tr * k) for k in (6, 4, 9)]
    timing = _timing(n, fps, tr)
    volumes = np.arange(timing.n_volumes)
    got = timing.frames_before(volumes, 7)
    for v in volumes:
        assert got[v].tolist() == _naive_window(timing, int(v), 7), v


def test_windows_never_cross_a_run_boundary():
    timing = _timing()
    got = timing.frames_before(np.arange(timing.n_volumes), 20)
    for v, row in enumerate(got):
        frames = row[row >= 0]
        assert np.all(timing.frame_run[frames] == timing.volume_run[v])


def _arrays(frames=(40, 24), volumes=(5, 3), fps=8.0, tr=1.0):
    stim = {"fps": np.array(fps), "run": np.repeat([1, 2], frames)}
    bold = {"tr": np.array(tr), "run": np.repeat([1, 2], volumes)}
    return stim, sum(frames), bold, sum(volumes)


def test_timing_reads_fps_tr_and_runs():
    stim, nf, bold, nv = _arrays()
    t = check_movie_timing(stim, nf, bold, nv, "s.h5", "b.h5")
    assert (t.fps, t.tr, t.runs) == (8.0, 1.0, [1, 2])
    assert t.frame_span(2) == (40, 64) and t.volume_span(2) == (5, 8)


@pytest.mark.parametrize("drop,needle", [("fps", "s.h5: variable 'fps' not found"),
                                         ("tr", "b.h5: variable 'tr' not found")])
def test_missing_fps_or_tr_is_one_line_naming_file_and_variable(drop, needle):
    stim, nf, bold, nv = _arrays()
    (stim if drop == "fps" else bold).pop(drop)
    with pytest.raises(DataError, match=needle) as err:
        check_movie_timing(stim, nf, bold, nv, "s.h5", "b.h5")
    assert "\n" not in str(err.value)


def test_run_durations_that_disagree_are_refused():
    stim, nf, bold, nv = _arrays(volumes=(5, 6))  # run 2: 3 s of movie, 6 s of BOLD
    with pytest.raises(DataError, match=r"run 2: the movie lasts 3.0 s .* BOLD 6.0 s"):
        check_movie_timing(stim, nf, bold, nv, "s.h5", "b.h5")
    # within one TR is a scan stopping on a whole volume: accepted
    stim, nf, bold, nv = _arrays(frames=(44, 24), volumes=(5, 3))
    check_movie_timing(stim, nf, bold, nv, "s.h5", "b.h5")


def test_runs_must_match_between_files_and_be_contiguous():
    stim, nf, bold, nv = _arrays()
    bold["run"] = np.repeat([1, 3], (5, 3))
    with pytest.raises(DataError, match=r"runs \[1, 2\] but b.h5 has runs \[1, 3\]"):
        check_movie_timing(stim, nf, bold, nv, "s.h5", "b.h5")
    stim, nf, bold, nv = _arrays()
    stim["run"] = np.r_[np.ones(20), np.full(24, 2), np.ones(20)].astype(int)
    with pytest.raises(DataError, match="run 1 appears in more than one stretch"):
        check_movie_timing(stim, nf, bold, nv, "s.h5", "b.h5")
    stim, nf, bold, nv = _arrays()
    stim["fps"] = np.array(-8.0)
    with pytest.raises(DataError, match="'fps' = -8.0 must be positive"):
        check_movie_timing(stim, nf, bold, nv, "s.h5", "b.h5")


def test_test_runs_and_repeats_are_checked():
    timing = _timing()
    with pytest.raises(DataError, match=r"test run\(s\) \[8\] not found in b.h5; its runs are "
                                        r"\[1, 2, 3\]"):
        check_test_runs(timing, [8], "b.h5")
    arrays = {"V1_repeats": np.zeros((4, 3, 10))}
    assert check_repeats(arrays, "V1", 3, 10, "b.h5").shape == (4, 3, 10)
    with pytest.raises(DataError, match=r"'V1_repeats' has shape \(4, 3, 10\); expected "
                                        r"\(n_repeats, 3, 9\)"):
        check_repeats(arrays, "V1", 3, 9, "b.h5")
    assert check_repeats({}, "V1", 3, 10, "b.h5") is None


def test_split_is_by_whole_runs():
    timing = _timing((16, 16, 16, 16, 16), fps=4.0, tr=1.0)
    train, val, test = movie_split(timing, [5], 0.25, seed=0)
    assert set(timing.volume_run[test]) == {5}
    assert not set(timing.volume_run[train]) & set(timing.volume_run[val])
    assert len(set(timing.volume_run[val])) == 1
    assert np.array_equal(np.sort(np.r_[train, val, test]), np.arange(timing.n_volumes))


def test_hrf_closed_forms():
    # ∫ Gamma(6) - Gamma(16) / 6 = 5/6 whatever the time scale
    for peak in (4.0, 5.5, 7.0):
        area, _ = integrate.quad(lambda t, p=peak: double_gamma_hrf(np.array([t]), p)[0],
                                 0, 80, limit=200)
        assert area == pytest.approx(5 / 6, abs=1e-6)
        assert hrf_shape(peak)[0] == pytest.approx(peak, abs=0.01)  # mode of Gamma(6, p/5)


@pytest.fixture(scope="module")
def movie():
    return simulate_movie(n_train_runs=2, run_seconds=90.0, fps=8.0, tr=1.0, size=24,
                          n_voxels={"V1": 40, "V2": 20}, n_repeats=8, seed=3)


def test_bold_is_the_hrf_weighted_drive_of_the_frames_before_each_volume(movie):
    # recompute three voxels' noise-free BOLD by brute force from their HRFs and check that
    # it is an affine function of the simulator's (the simulator z-scores it)
    from niflow.data.simulate import movie as mv

    sim = movie
    static = mv.simulate_responses(sim.stim, {"V1": 40, "V2": 20}, seed=3,
                                   config=mv.SimConfig(n_orientations=4, wavelengths=(4.0, 8.0)))
    starts = np.flatnonzero(np.r_[True, sim.frame_run[1:] != sim.frame_run[:-1]])
    sustained = mv._zscore(static.signal["V1"].astype(np.float64))
    neural = ((1 - sim.truth["V1"]["transient"]) * sustained
              + sim.truth["V1"]["transient"] * mv._zscore(mv._transient(sustained, starts)))
    for v in (0, 7, 31):
        peak = sim.truth["V1"]["hrf_param_s"][v]
        naive = []
        for run in np.unique(sim.volume_run):
            frames = np.flatnonzero(sim.frame_run == run)
            onsets = np.arange(frames.size) / sim.fps
            for j in range(int(np.sum(sim.volume_run == run))):
                shown = onsets < j * sim.tr - 1e-9
                lag = j * sim.tr - onsets[shown]
                naive.append(float(neural[frames[shown], v] @ double_gamma_hrf(lag, peak))
                             / sim.fps)
        r = np.corrcoef(naive, sim.signal["V1"][:, v])[0, 1]
        assert r > 1 - 1e-9


def test_noise_ceilings_are_realistic_and_recoverable_from_the_repeats(movie):
    test = movie.volume_run == movie.test_run
    for area in ("V1", "V2"):
        truth = movie.truth[area]["noise_ceiling"]
        assert 0.4 <= np.median(truth) <= 0.6
        reps = movie.repeats[area]
        assert np.allclose(reps.mean(axis=0), movie.responses[area][test], atol=1e-5)
        # split halves of 90 volumes: a few voxels get a negative reliability (NaN ceiling),
        # counted here as a ceiling of 0
        est = np.nan_to_num(noise_ceiling(reps))
        assert abs(np.median(est) - np.median(truth)) < 0.1
        r = [np.corrcoef(movie.responses[area][test][:, v], movie.signal[area][test][:, v])[0, 1]
             for v in range(truth.size)]
        assert abs(np.median(r) - np.median(truth)) < 0.1


def test_hrf_peaks_span_four_to_seven_seconds(movie):
    peaks = np.r_[movie.truth["V1"]["hrf_peak_s"], movie.truth["V2"]["hrf_peak_s"]]
    assert peaks.min() >= 4.0 - 0.05 and peaks.max() <= 7.0 + 0.05
    assert peaks.max() - peaks.min() > 2.0


def test_written_files_follow_the_contract(movie, tmp_path):
    paths = write_movie_simulation(movie, tmp_path)
    got = read_movie(paths["stim"], paths["bold"])
    assert got.timing.runs == [1, 2, 3] and got.timing.fps == 8.0 and got.timing.tr == 1.0
    assert got.frame_shape == (1, 24, 24)
    assert np.array_equal(got.stim.read(np.arange(5)), movie.stim[:5])
    assert got.repeats("V1", [3]).shape == (8, 90, 40)
    assert math.isclose(float(np.load(paths["truth"])["test_run"]), 3)


def test_colour_frames_must_have_three_channels(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as fh:
        fh["stim"] = np.zeros((16, 8, 8, 4), np.uint8)
        fh["fps"] = 8.0
    with h5py.File(tmp_path / "b.h5", "w") as fh:
        fh["V1"] = np.zeros((2, 3))
        fh["tr"] = 1.0
    with pytest.raises(DataError, match=r"'stim' has shape \(16, 8, 8, 4\); colour frames"):
        read_movie(tmp_path / "s.h5", tmp_path / "b.h5")
    with h5py.File(tmp_path / "s.h5", "w") as fh:
        fh["stim"] = np.zeros((16, 8, 8, 3), np.uint8)
        fh["fps"] = 8.0
    assert read_movie(tmp_path / "s.h5", tmp_path / "b.h5").frame_shape == (3, 8, 8)


def test_cli_simulate_video_writes_the_contract(tmp_path):
    from niflow.cli.main import main

    rc = main(["simulate", str(tmp_path / "m"), "--video", "--runs", "2", "--run-seconds",
               "20", "--fps", "6", "--tr", "1.5", "--size", "16", "--v1", "12", "--v2", "8",
               "--repeats", "3"])
    assert rc == 0
    got = read_movie(tmp_path / "m" / "stim.h5", tmp_path / "m" / "bold.h5")
    assert got.timing.runs == [1, 2, 3]
    assert (got.timing.fps, got.timing.tr) == (6.0, 1.5)
    assert got.responses["V1"].shape == (3 * 13, 12) and got.responses["V2"].shape[1] == 8
    assert got.repeats("V2", [3]).shape == (3, 13, 8)


def _files(timing: MovieTiming, repeated: list[int] | None, n_repeats: int = 3,
           seed: int = 0) -> MovieFiles:
    """Responses whose ``V1_repeats`` repeat the volumes of ``repeated`` (their mean in V1)."""
    rng = np.random.default_rng(seed)
    v1 = rng.standard_normal((timing.n_volumes, 4)).astype(np.float32)
    arrays = {"V1": v1, "tr": np.float64(timing.tr)}
    if repeated:
        rows = timing.volumes_of(repeated)
        reps = rng.standard_normal((n_repeats, rows.size, 4)).astype(np.float32)
        reps += (v1[rows] - reps.mean(0))[None]  # as float32 files store them
        v1[rows] = reps.mean(0)
        arrays["V1_repeats"] = reps
    return MovieFiles(np.zeros((timing.n_frames, 4, 4), np.float32), timing, {"V1": v1},
                      arrays, {"stim": "stim.h5", "bold": "bold.h5"})


@pytest.mark.parametrize("repeated", [[4], [2], [3, 4], [1, 2]])
def test_default_test_runs_are_the_runs_the_repeats_repeat(repeated):
    timing = _timing((40, 24, 32, 24))
    runs, why = default_test_runs(_files(timing, repeated))
    assert runs == repeated and "repeat" in why


def test_default_test_runs_without_repeats_or_runs():
    timing = _timing((40, 24, 32))
    assert default_test_runs(_files(timing, None))[0] == [3]
    one = _timing((40,))
    with pytest.raises(DataError, match=r"bold.h5: one run only.*give --test-runs"):
        default_test_runs(_files(one, None))
    files = _files(timing, [3])
    files.arrays["V1_repeats"] = files.arrays["V1_repeats"] + 1.0  # a mean that is not V1
    with pytest.raises(DataError, match=r"mean of \{'V1_repeats': \(3, 4, 4\)\} is not the "
                       r"volumes of any block of runs.*give --test-runs"):
        default_test_runs(files)
