"""Cross-validation of movie models over runs (``niflow cv`` on movie data): each fold is the
run ``niflow train --test-runs`` would train, the scores are the image cross-validation's,
and the ridge baseline is ``niflow baseline``'s on the same folds."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from _cli import run_many
from _configs import movie_config
from niflow import config as cfgmod
from niflow.config import ConfigError
from niflow.data.movie import read_movie
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.folds import fold_centred_r
from niflow.evaluate.statistics import read_table
from niflow.runs.movie import train_movie
from niflow.runs.movie_baseline import movie_baseline_scores
from niflow.runs.movie_crossval import cross_validate_movie, run_blocks


def _config(epochs: int = 3) -> cfgmod.RunConfig:
    return movie_config(epochs)


@pytest.fixture(scope="module")
def movie_cv(tmp_path_factory):
    root = tmp_path_factory.mktemp("movie_cv")
    sim = simulate_movie(n_train_runs=3, run_seconds=60.0, fps=4.0, tr=1.0, size=20,
                         n_voxels={"V1": 20, "V2": 10}, ceiling_range=(0.6, 0.8), seed=3)
    paths = write_movie_simulation(sim, root / "data")
    res = cross_validate_movie(paths["stim"], paths["bold"], _config(), out=root / "cv")
    return sim, paths, res, root


def test_run_blocks_hold_out_whole_consecutive_runs():
    assert run_blocks([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert run_blocks([3, 4, 7]) == [[3], [4], [7]]
    for k in (1, 4):
        with pytest.raises(ConfigError, match=f"--k {k}: the movie has 3 runs"):
            run_blocks([3, 4, 7], k)


def test_each_fold_predicts_what_niflow_train_with_those_test_runs_predicts(movie_cv,
                                                                            tmp_path):
    sim, paths, res, _ = movie_cv
    with pytest.warns(UserWarning, match="no noise ceiling"):  # the repeats are of run 4
        train_movie(paths["stim"], paths["bold"], tmp_path / "ref", _config(), [2],
                    progress=False)
    ref = np.load(tmp_path / "ref" / "predictions.npz")
    rows = ref["test_rows"]
    assert np.array_equal(np.flatnonzero(res.folds == 1), rows)
    for area in ("V1", "V2"):
        assert np.allclose(res.predictions[area][rows], ref[area], atol=1e-5)


def test_scores_are_fold_centred_pearson_r_computed_naively(movie_cv):
    sim, paths, res, root = movie_cv
    files = read_movie(paths["stim"], paths["bold"])
    table = read_table(root / "cv" / "cv_voxels.csv")
    for area in ("V1", "V2"):
        y = files.responses[area].astype(np.float64)
        p = res.predictions[area].astype(np.float64)
        yc, pc = y.copy(), p.copy()
        for f in range(4):
            rows = res.folds == f
            yc[rows] -= y[rows].mean(0)
            pc[rows] -= p[rows].mean(0)
        naive = [np.corrcoef(pc[:, v], yc[:, v])[0, 1] for v in range(y.shape[1])]
        m = table["area"] == area
        assert np.allclose(table["r_cv"][m].astype(float), naive, atol=1e-6)
        assert np.allclose(res.r[area], naive, atol=1e-6)
        fold0 = [np.corrcoef(p[res.folds == 0, v], y[res.folds == 0, v])[0, 1]
                 for v in range(y.shape[1])]
        assert np.allclose(res.fold_r[area][0], fold0, atol=1e-6)
    # far above chance: the same score with each fold's responses shifted in time by 15-45
    # volumes (breaking the stimulus alignment, keeping the autocorrelation)
    y = files.responses["V1"].astype(np.float64)
    null = []
    for shift in range(15, 46, 5):
        shifted = y.copy()
        for f in range(4):
            rows = np.flatnonzero(res.folds == f)
            shifted[rows] = np.roll(y[rows], shift, axis=0)
        null.append(np.median(fold_centred_r(res.predictions["V1"], shifted, res.folds)))
    assert res.summaries["V1"]["median_r"] > max(null) + 0.1, (res.summaries["V1"], null)


def test_the_ridge_baseline_is_niflow_baselines_on_each_fold(movie_cv):
    sim, paths, res, root = movie_cv
    files = read_movie(paths["stim"], paths["bold"])
    scores, _ = movie_baseline_scores(files, [3], n_permutations=0)
    rows = files.timing.volumes_of([3])
    for area in ("V1", "V2"):
        got = res.baseline_predictions["motion_energy"][area][rows]
        assert np.allclose(got, scores[area]["pred"], atol=1e-4)
    info = json.loads((root / "cv" / "cv.json").read_text())
    assert info["kind"] == "movie" and info["fold_runs"] == [[1], [2], [3], [4]]
    assert info["baselines"] == ["motion_energy"] and info["tr"] == 1.0
    assert set(info["areas"]["V1"]) >= {"niflow", "motion_energy"}
    table = read_table(root / "cv" / "cv_voxels.csv")
    assert {"hrf_peak_s", "hrf_fwhm_s", "r_motion_energy_cv"} <= set(table)
    for area in ("V1", "V2"):
        m = table["area"] == area
        peaks = table["hrf_peak_s"][m].astype(float)
        assert np.allclose(peaks, res.prf[area]["hrf_peak_s"])
        assert np.all((peaks > 2) & (peaks < 11))  # the fitted latencies' range
        assert np.allclose(table["r_motion_energy_cv"][m].astype(float),
                           res.baseline_r["motion_energy"][area], atol=1e-6)


def test_niflow_cv_on_movie_data(movie_cv, tmp_path):
    sim, paths, _, _ = movie_cv
    cfg = tmp_path / "cfg.json"
    cfgmod.save(_config(2), cfg)
    stim, bold = str(paths["stim"]), str(paths["bold"])
    base = ["cv", "--stim", stim, "--bold", bold, "--config", str(cfg)]
    with h5py.File(tmp_path / "one_run.h5", "w") as fh:  # a single run: nothing to hold out
        fh["stim"], fh["fps"] = np.zeros((80, 20, 20), np.uint8), 4.0
    with h5py.File(tmp_path / "one_run_b.h5", "w") as fh:
        fh["V1"] = np.random.default_rng(2).standard_normal((20, 30)).astype(np.float32)
        fh["tr"] = 1.0
    res = run_many({
        "one": ["cv", "--stim", "one_run.h5", "--bold", "one_run_b.h5", "--out", "o"],
        "ok": [*base, "--out", "ok", "--k", "2", "--baselines", "none"],
        "k": [*base, "--out", "k", "--k", "9"],
        "groups": [*base, "--out", "g", "--groups", "labels"],
        "features": [*base, "--out", "f", "--baselines", "gabor"],
    }, tmp_path)
    ok = res["ok"]
    assert ok.rc == 0, ok.stderr
    assert "cross-validation over runs: 2 folds of runs" in ok.stdout
    assert "V1" in ok.stdout and (tmp_path / "ok" / "cv.json").exists()
    want = {"one": "one_run_b.h5: one run only; cross-validation over runs holds out whole "
                   "runs: it needs two or more",
            "k": "--k 9: the movie has 4 runs",
            "groups": "--groups is for images",
            "features": "--baselines gabor: movie data is compared with motion-energy"}
    for name, text in want.items():
        lines = res[name].stderr.strip().splitlines()
        assert res[name].rc != 0 and len(lines) == 1 and text in lines[0], res[name].stderr
        assert not (tmp_path / name[0]).exists()
