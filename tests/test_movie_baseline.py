"""``niflow baseline`` on movie data: FIR motion-energy ridge, α per voxel by leave-one-run-out.

The fit is checked against a naive reference written here (a loop over penalties and
held-out runs with closed-form ridge, argmax per voxel, refit on every training run); the
command line on tiny simulations (clean: clearly positive r; responses shuffled in time: r
near 0), in a movie run folder (its test runs and voxels), and its one-line errors.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io

from _cli import run_many
from niflow.data.movie import MovieTiming, is_movie_data, read_movie
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.motion_energy import (
    DEFAULT_ALPHAS,
    delay_features,
    fir_delays,
    motion_energy_features,
    volume_features,
)
from niflow.evaluate.statistics import read_table
from niflow.runs.movie_baseline import movie_baseline_folder

VOXELS = {"V1": 20, "V2": 10}


def _naive_ridge(xa, ya, xb, alphas):
    """Ridge with intercept for each penalty: features standardised on ``xa``, weights
    ``zaᵀ (za zaᵀ + α I)⁻¹ (y - ȳ)`` by a linear solve per α; (n_alphas, n_b, n_voxels)."""
    mu, sd = xa.mean(0), xa.std(0)
    sd[sd == 0] = 1.0
    za, zb = (xa - mu) / sd, (xb - mu) / sd
    gram, cross = za @ za.T, zb @ za.T
    return np.stack([cross @ np.linalg.solve(gram + a * np.eye(len(za)), ya - ya.mean(0))
                     + ya.mean(0) for a in alphas])


def _pearson(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


@pytest.mark.parametrize("n_train_runs", [3, 1])
def test_alpha_per_voxel_and_predictions_match_a_naive_reference(tmp_path, n_train_runs):
    sim = simulate_movie(n_train_runs=n_train_runs, run_seconds=40 if n_train_runs > 1 else 60,
                         size=16, n_voxels=VOXELS, seed=3)
    paths = write_movie_simulation(sim, tmp_path / "data")
    res = movie_baseline_folder(read_movie(paths["stim"], paths["bold"]), tmp_path / "out",
                                [sim.test_run], n_permutations=0)
    # the reference design: motion energy of the whole movie at its defaults, frames / 255
    t = MovieTiming(sim.fps, sim.tr, sim.frame_run, sim.volume_run)
    feats = motion_energy_features(sim.stim / 255.0, sim.fps, sim.frame_run)
    x = delay_features(volume_features(feats, t, np.arange(t.n_volumes)), t.volume_run,
                       fir_delays(t.tr))
    train, test = t.volume_run != sim.test_run, t.volume_run == sim.test_run
    if n_train_runs > 1:
        folds = t.volume_run[train]
    else:  # one training run: five contiguous blocks of it
        folds = np.arange(train.sum()) * 5 // train.sum()
    for area, n in VOXELS.items():
        y = sim.responses[area].astype(np.float64)
        xt, yt = x[train], y[train]
        score = np.zeros((DEFAULT_ALPHAS.size, n))
        for f in np.unique(folds):
            held = folds == f
            path = _naive_ridge(xt[~held], yt[~held], xt[held], DEFAULT_ALPHAS)
            for i in range(DEFAULT_ALPHAS.size):
                score[i] += _pearson(path[i], yt[held])
        best = np.argmax(score, axis=0)
        np.testing.assert_array_equal(res[area]["alpha"], DEFAULT_ALPHAS[best])
        path = _naive_ridge(xt, yt, x[test], DEFAULT_ALPHAS)
        want = path[best, :, np.arange(n)].T  # each voxel at its own penalty
        np.testing.assert_allclose(res[area]["pred"], want, rtol=1e-6,
                                   atol=1e-6 * np.abs(want).max())
        assert res[area]["voxel"].tolist() == list(range(n))
    info = json.loads((tmp_path / "out" / "baseline_motion_energy.json").read_text())
    assert ("contiguous blocks" in info["cv"]) == (n_train_runs == 1)
    assert info["test_runs"] == [sim.test_run]
    assert info["delays_s"] == [float(d) for d in fir_delays(sim.tr)]


def test_is_movie_data_reads_variable_names(tmp_path):
    np.savez(tmp_path / "bold.npz", V1=np.zeros((4, 2)), tr=1.0)
    scipy.io.savemat(tmp_path / "stim.mat", {"stim": np.zeros((4, 3, 3)), "fps": 8.0})
    scipy.io.savemat(tmp_path / "static.mat", {"stim": np.zeros((4, 3, 3))})
    with h5py.File(tmp_path / "bold.h5", "w") as fh:
        fh["V1"] = np.zeros((4, 2))
    assert is_movie_data(tmp_path / "static.mat", tmp_path / "bold.npz")
    assert is_movie_data(tmp_path / "stim.mat", tmp_path / "bold.h5")
    assert not is_movie_data(tmp_path / "static.mat", tmp_path / "bold.h5")
    assert not is_movie_data(tmp_path / "missing.mat", tmp_path / "missing.h5")


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    d = tmp_path_factory.mktemp("movie_baseline")
    clean = simulate_movie(n_train_runs=3, run_seconds=40, size=16, n_voxels=VOXELS,
                           ceiling_range=(0.95, 0.99), seed=1)
    write_movie_simulation(clean, d / "clean")
    # the same data with every area's responses shuffled in time (tr and runs kept)
    perm = np.random.default_rng(0).permutation(clean.volume_run.size)
    with h5py.File(d / "clean" / "bold.h5") as src, h5py.File(d / "shuffled.h5", "w") as fh:
        for area in VOXELS:
            fh[area] = src[area][()][perm]
        fh["tr"], fh["run"] = src["tr"][()], src["run"][()]
    # a movie run's folder: test run 3 by hand, and a subset of the voxels
    run = d / "run"
    run.mkdir()
    test = np.flatnonzero(clean.volume_run == 3)
    (run / "split.json").write_text(json.dumps({"kind": "movie", "test_runs": [3],
                                                "train": [], "val": [],
                                                "test": test.tolist()}))
    (run / "voxels.csv").write_text("area,voxel\nV1,2\nV1,5\nV1,7\nV2,0\nV2,9\n")
    static = d / "static"
    static.mkdir()
    (static / "split.json").write_text(json.dumps({"train": [0], "val": [1], "test": [2]}))
    np.savez(d / "img.npz", stim=np.zeros((10, 8, 8)))
    np.savez(d / "img_bold.npz", V1=np.zeros((10, 3)))
    stim, bold = d / "clean" / "stim.h5", d / "clean" / "bold.h5"
    common = ["--permutations", "50"]
    jobs = {
        "clean": ["baseline", "--stim", stim, "--bold", bold, "--test-runs", "4",
                  "--out", d / "out_clean", *common],
        "shuffled": ["baseline", "--stim", stim, "--bold", d / "shuffled.h5", "--test-runs",
                     "4", "--out", d / "out_shuffled", *common],
        "run": ["baseline", "--stim", stim, "--bold", bold, "--out", run, *common],
        "no_runs": ["baseline", "--stim", stim, "--bold", bold, "--out", d / "bare", *common],
        "bad_run": ["baseline", "--stim", stim, "--bold", bold, "--test-runs", "9",
                    "--out", d / "bad"],
        "pixels": ["baseline", "--stim", stim, "--bold", bold, "--test-runs", "4",
                   "--features", "pixels", "--out", d / "pix"],
        "test_rows": ["baseline", "--stim", stim, "--bold", bold, "--test-rows", "0:40",
                      "--out", d / "rows"],
        "other_runs": ["baseline", "--stim", stim, "--bold", bold, "--test-runs", "4",
                       "--out", run],
        "static_split": ["baseline", "--stim", stim, "--bold", bold, "--out", static],
        "static_runs": ["baseline", "--stim", d / "img.npz", "--bold", d / "img_bold.npz",
                        "--test-runs", "2", "--out", d / "img_out"],
    }
    return {"dir": d, "res": run_many(jobs, d), "sim": clean}


def _r(folder):
    return read_table(folder / "baseline_motion_energy.csv")


def test_cli_scores_every_voxel_positive_when_clean_and_null_when_shuffled(cli):
    d, res = cli["dir"], cli["res"]
    for name in ("clean", "shuffled"):
        assert res[name].rc == 0, res[name].stderr
    clean, shuffled = _r(d / "out_clean"), _r(d / "out_shuffled")
    for t in (clean, shuffled):
        assert t["area"].tolist() == ["V1"] * 20 + ["V2"] * 10
        assert t["voxel"].tolist() == list(range(20)) + list(range(10))
        assert np.isfinite(t["r_test"]).all() and (t["alpha"] > 0).all()
    assert np.median(clean["r_test"]) > 0.5
    assert abs(np.median(shuffled["r_test"])) < 0.15
    # the clean run's repeats give noise ceilings; the shuffled file has none
    assert np.isfinite(clean["noise_ceiling"]).all() and "noise_ceiling" not in shuffled
    info = json.loads((d / "out_clean" / "baseline_motion_energy.json").read_text())
    assert info["test_runs"] == [4] and info["train_runs"] == [1, 2, 3]
    assert info["areas"]["V1"]["n_repeats"] == 6
    out = res["clean"].stdout
    assert "leave-one-run-out over runs [1, 2, 3]" in out
    assert out.splitlines()[2].split()[:2] == ["V1", "20"]


def test_without_test_runs_the_repeated_run_is_held_out(cli):
    d, res = cli["dir"], cli["res"]
    assert res["no_runs"].rc == 0, res["no_runs"].stderr
    info = json.loads((d / "bare" / "baseline_motion_energy.json").read_text())
    assert info["test_runs"] == [4] and info["train_runs"] == [1, 2, 3]
    bare, clean = _r(d / "bare"), _r(d / "out_clean")
    assert np.array_equal(bare["r_test"], clean["r_test"])
    assert np.array_equal(bare["noise_ceiling"], clean["noise_ceiling"])


def test_cli_in_a_movie_run_folder_uses_its_test_runs_and_voxels(cli):
    d, res = cli["dir"], cli["res"]
    assert res["run"].rc == 0, res["run"].stderr
    info = json.loads((d / "run" / "baseline_motion_energy.json").read_text())
    assert info["test_runs"] == [3] and info["train_runs"] == [1, 2, 4]
    assert info["n_test_volumes"] == int(np.sum(cli["sim"].volume_run == 3))
    t = _r(d / "run")
    assert t["area"].tolist() == ["V1", "V1", "V1", "V2", "V2"]
    assert t["voxel"].tolist() == [2, 5, 7, 0, 9]
    # run 3 is not the repeated run: no noise ceiling, and a note that says why
    assert "noise_ceiling" not in t
    assert "repeats of other runs" in res["run"].stderr


@pytest.mark.parametrize("job, words", [
    ("bad_run", "test run(s) [9] not found"),
    ("pixels", "--features pixels"),
    ("test_rows", "--test-rows is for image data"),
    ("other_runs", "differ from the test runs [3]"),
    ("static_split", "the split of a static-image run"),
    ("static_runs", "--test-runs is for movie data"),
])
def test_cli_errors_are_one_line(cli, job, words):
    r = cli["res"][job]
    assert r.rc != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("niflow baseline: error:"), r.stderr
    assert words in lines[0]
    assert not any((cli["dir"] / n).exists() for n in ("bad", "pix", "rows"))
