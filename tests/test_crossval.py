"""K-fold cross-validation (:mod:`niflow.crossval`): folds, the fold-centred r and its bias
argument, and one tiny end-to-end run checked against independently trained folds."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from _configs import default_config
from niflow.data.dataset import DroppedVoxelsWarning, scale_stimuli
from niflow.data.errors import DataError
from niflow.data.simulate import simulate
from niflow.evaluate.baselines import features, ridge_predict
from niflow.evaluate.folds import (
    MIN_FOLD_ROWS,
    fold_centred_r,
    group_codes,
    make_folds,
    per_fold_r,
)
from niflow.evaluate.statistics import read_table
from niflow.interpret.receptive_fields import receptive_fields
from niflow.runs.crossval import cross_validate
from niflow.runs.pipeline import train_run
from niflow.runs.run import RunError

# --------------------------------------------------------------------------- folds


def test_folds_partition_the_rows_into_near_equal_parts():
    folds = make_folds(103, 10, seed=4)
    assert folds.shape == (103,) and folds.dtype == np.int64
    assert set(folds.tolist()) == set(range(10))
    assert sorted(np.bincount(folds).tolist()) == [10] * 7 + [11] * 3
    # seeded: the same seed gives the same folds, another seed other folds
    np.testing.assert_array_equal(folds, make_folds(103, 10, seed=4))
    assert not np.array_equal(folds, make_folds(103, 10, seed=5))
    # random, not contiguous blocks: the first 10 rows are not all in one fold
    assert np.unique(folds[:10]).size > 1


def test_groups_stay_whole_and_folds_are_balanced():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 9, 23)
    labels = np.repeat([f"id{i:02d}" for i in range(23)], sizes)
    labels = labels[rng.permutation(labels.size)]  # groups scattered over the rows
    folds = make_folds(labels.size, 5, labels, seed=1)
    for g in np.unique(labels):
        assert np.unique(folds[labels == g]).size == 1, g
    counts = np.bincount(folds, minlength=5)
    assert counts.sum() == labels.size and counts.min() >= MIN_FOLD_ROWS
    # greedy balancing (largest group first into the emptiest fold): the spread is at most
    # the largest group
    assert counts.max() - counts.min() <= sizes.max()
    np.testing.assert_array_equal(folds, make_folds(labels.size, 5, labels, seed=1))
    # labels of any dtype: the same partition from integer codes of the same groups
    np.testing.assert_array_equal(folds, make_folds(labels.size, 5,
                                                    group_codes(labels, labels.size), seed=1))


@pytest.mark.parametrize(("n", "k", "groups", "fragment"), [
    (30, 1, None, "at least 2 folds"),
    (20, 10, None, "at least 3"),
    (30, 7, np.repeat(np.arange(6), 5), "only 6 groups"),
    (30, 3, np.arange(29), "shape (29,)"),
    (4, 2, np.array([0.0, 1.0, np.nan, 1.0]), "NaN"),
])
def test_bad_folds_are_refused(n, k, groups, fragment):
    with pytest.raises(DataError) as err:
        make_folds(n, k, groups)
    assert fragment in str(err.value)


# --------------------------------------------------------------------------- the score


def _naive_folds(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % k)


def _naive_centred_r(pred: np.ndarray, true: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Reference: per voxel, subtract each fold's means in a loop, then np.corrcoef."""
    out = np.empty(pred.shape[1])
    for j in range(pred.shape[1]):
        p, t = pred[:, j].astype(np.float64), true[:, j].astype(np.float64)
        pc, tc = p.copy(), t.copy()
        for f in set(folds.tolist()):
            rows = folds == f
            pc[rows] = p[rows] - p[rows].mean()
            tc[rows] = t[rows] - t[rows].mean()
        out[j] = np.corrcoef(pc, tc)[0, 1]
    return out


def test_pooled_r_is_biased_for_noise_voxels_and_fold_centring_removes_the_bias():
    """Pure-noise voxels, predicted by what a model that learned nothing predicts: its
    training rows' mean (plus prediction noise of its own). Pooled over all rows, r is
    clearly negative; centred within the folds it is 0 on average."""
    rng = np.random.default_rng(0)
    n, k, n_vox = 100, 10, 2000
    folds = _naive_folds(n, k, rng)
    true = rng.normal(size=(n, n_vox))
    pred = np.empty_like(true)
    for f in range(k):
        rows = folds == f
        pred[rows] = true[~rows].mean(0) + 0.02 * rng.normal(size=(rows.sum(), n_vox))
    pooled = np.array([np.corrcoef(pred[:, j], true[:, j])[0, 1] for j in range(n_vox)])
    centred = fold_centred_r(pred, true, folds)
    se = 1 / np.sqrt(n * n_vox)  # standard error of the mean of n_vox null correlations
    assert pooled.mean() < -0.15, pooled.mean()
    # the bias of a pure mean predictor: about -sqrt((k - 1) / (n - 1)) = -0.30
    mean_only = np.empty_like(true)
    for f in range(k):
        mean_only[folds == f] = true[folds != f].mean(0)
    pooled_mean_only = np.mean([np.corrcoef(mean_only[:, j], true[:, j])[0, 1]
                                for j in range(n_vox)])
    assert pooled_mean_only == pytest.approx(-np.sqrt((k - 1) / (n - 1)), abs=0.02)
    assert abs(centred.mean()) < 4 * se, (centred.mean(), se)
    np.testing.assert_allclose(centred, _naive_centred_r(pred, true, folds), atol=1e-10)


def test_fold_centred_r_ignores_fold_offsets_and_keeps_the_signal():
    rng = np.random.default_rng(1)
    n, k = 90, 6
    folds = _naive_folds(n, k, rng)
    signal = rng.normal(size=(n, 5))
    true = signal + 0.5 * rng.normal(size=(n, 5))
    offsets = 3.0 * rng.normal(size=(k, 5))  # each fold's model has its own intercept
    pred = signal + offsets[folds]
    r = fold_centred_r(pred, true, folds)
    np.testing.assert_allclose(r, fold_centred_r(signal, true, folds), atol=1e-12)
    np.testing.assert_allclose(r, _naive_centred_r(pred, true, folds), atol=1e-10)
    assert (r > 0.8).all()
    # the uncentred pooled r suffers from the offsets
    assert (np.array([np.corrcoef(pred[:, j], true[:, j])[0, 1] for j in range(5)])
            < r - 0.2).all()
    # a missing prediction makes the voxel NaN, not 0
    pred[3, 2] = np.nan
    r = fold_centred_r(pred, true, folds)
    assert np.isnan(r[2]) and np.isfinite(np.delete(r, 2)).all()
    fr = per_fold_r(pred, true, folds, k)
    assert fr.shape == (k, 5) and np.isnan(fr[folds[3], 2])
    assert np.isfinite(np.delete(fr[:, 2], folds[3])).all()


# --------------------------------------------------------------------------- end to end

K = 3


@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    """A 3-fold cross-validation of a 48-image simulation (letters kept whole), with one
    voxel that varies only inside one fold and one voxel with a NaN."""
    sim = simulate(n_per_letter=8, n_voxels={"V1": 40, "V2": 30}, seed=3)
    cfg = default_config(2)
    stim, labels = sim.stim, sim.labels
    folds = make_folds(len(stim), K, labels, seed=2)
    resp = {a: r.copy() for a, r in sim.responses.items()}
    resp["V1"][:, 5] = 1.0
    resp["V1"][folds == 0, 5] = np.linspace(0, 2, int((folds == 0).sum()))  # constant
    resp["V2"][7, 3] = np.nan  # elsewhere: fitted in folds 1 and 2 only; V2 3: never fitted
    out = tmp_path_factory.mktemp("cv") / "cv"
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads spin against each other on a busy 2-core machine
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = cross_validate(stim, resp, cfg, k=K, groups=labels, seed=2, out=out)
        refs = []
        for f in range(K):
            rows = np.flatnonzero(folds == f)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DroppedVoxelsWarning)
                run, _, _ = train_run(stim, resp, None, cfg, test_rows=rows, progress=False)
            refs.append((rows, run))
    finally:
        torch.set_num_threads(old)
    return {"res": res, "out": out, "stim": stim, "resp": resp, "cfg": cfg, "folds": folds,
            "refs": refs, "warnings": [str(w.message) for w in caught], "labels": labels}


def test_cv_folds_and_shapes(cv):
    res = cv["res"]
    np.testing.assert_array_equal(res.folds, cv["folds"])
    assert res.k == K and res.n_groups == 6 and res.seconds > 0
    np.testing.assert_array_equal(res.voxel["V1"], np.arange(40))
    np.testing.assert_array_equal(res.voxel["V2"], np.delete(np.arange(30), 3))
    for area, v in (("V1", 40), ("V2", 29)):
        assert res.predictions[area].shape == (48, v)
        assert res.r[area].shape == (v,) and res.fold_r[area].shape == (K, v)
        for key in ("prf_x", "prf_y", "prf_sigma"):
            assert res.prf[area][key].shape == (v,)
        for kind in ("pixels", "gabor"):
            assert res.baseline_predictions[kind][area].shape == (48, v)
            assert res.baseline_r[kind][area].shape == (v,)


def test_out_of_fold_predictions_are_those_of_each_folds_own_training(cv):
    res = cv["res"]
    for f, (rows, run) in enumerate(cv["refs"]):
        pred = run.predict(cv["stim"][rows])
        for area in ("V1", "V2"):
            pos = np.searchsorted(res.voxel[area], run.voxel_index[area])
            np.testing.assert_allclose(res.predictions[area][np.ix_(rows, pos)], pred[area],
                                       rtol=1e-5, atol=1e-5, err_msg=f"fold {f} {area}")
    # pRFs: the median over the three folds' models
    for area in ("V1", "V2"):
        per_fold = np.full((K, res.voxel[area].size), np.nan)
        for f, (_, run) in enumerate(cv["refs"]):
            pos = np.searchsorted(res.voxel[area], run.voxel_index[area])
            per_fold[f, pos] = receptive_fields(run.model, area)["prf_x"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_allclose(res.prf[area]["prf_x"], np.nanmedian(per_fold, 0),
                                       atol=1e-4)


def test_scores_match_a_naive_reference(cv):
    res, resp, folds = cv["res"], cv["resp"], cv["folds"]
    for area in ("V1", "V2"):
        true = resp[area][:, res.voxel[area]]
        pred = res.predictions[area]
        ok = np.isfinite(pred).all(0)
        np.testing.assert_allclose(res.r[area][ok],
                                   _naive_centred_r(pred[:, ok], true[:, ok], folds),
                                   atol=1e-6)
        for f in range(K):
            rows = folds == f
            ref = [np.corrcoef(pred[rows, j], true[rows, j])[0, 1] for j in np.flatnonzero(ok)]
            np.testing.assert_allclose(res.fold_r[area][f, ok], ref, atol=1e-6)
        assert res.summaries[area]["median_r"] == pytest.approx(np.median(res.r[area][ok]))
    # the simulated voxels are predictable across letters (ridge on pixels; NIF after 2
    # epochs is not yet reliably above it)
    assert res.baseline_summaries["pixels"]["V1"]["median_r"] > 0.2


def test_ridge_baselines_are_fitted_on_each_folds_training_rows(cv):
    res, resp, folds = cv["res"], cv["resp"], cv["folds"]
    x = features(scale_stimuli(cv["stim"]), "pixels")
    for area in ("V1", "V2"):
        y = resp[area][:, res.voxel[area]].astype(np.float64)
        ref = np.empty_like(y)
        for f in range(K):
            test = folds == f
            ref[test] = ridge_predict(x[~test], y[~test], x[test])[0]
        got = res.baseline_predictions["pixels"][area]
        ok = np.isfinite(got)
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-4, atol=1e-4)
        assert (~ok == ~np.isfinite(res.predictions[area])).all()  # the same voxels and rows
        np.testing.assert_allclose(res.baseline_r["pixels"][area][ok.all(0)],
                                   _naive_centred_r(ref[:, ok.all(0)], y[:, ok.all(0)], folds),
                                   atol=1e-5)


def test_voxels_missing_in_a_fold_are_nan_and_reported(cv):
    res = cv["res"]
    np.testing.assert_array_equal(res.incomplete["V1"], [5])
    assert res.incomplete["V2"].size == 0
    assert np.isnan(res.r["V1"][5]) and np.isnan(res.baseline_r["gabor"]["V1"][5])
    assert np.isfinite(np.delete(res.r["V1"], 5)).all()
    assert np.isnan(res.predictions["V1"][cv["folds"] == 0, 5]).all()
    assert np.isfinite(res.predictions["V1"][cv["folds"] != 0, 5]).all()
    assert res.prf["V1"]["n_folds_fitted"][5] == K - 1
    said = " | ".join(cv["warnings"])
    assert "area 'V1': 1 voxel(s) constant on the training rows of some fold" in said
    assert "input columns 5" in said
    assert "'V2': dropped 1 of 30 voxels (1 with NaN/Inf" in said


def test_cv_folder(cv):
    res, out = cv["res"], cv["out"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "cv.json",
                                                     "cv_predictions.npz", "cv_voxels.csv"]
    info = json.loads((out / "cv.json").read_text())
    assert info["k"] == K and info["seed"] == 2 and info["folds"] == res.folds.tolist()
    assert info["groups"]["n_groups"] == 6 and info["fold_sizes"] == [16, 16, 16]
    assert info["config"] == cv["cfg"].to_dict()
    assert json.loads((out / "config.json").read_text()) == cv["cfg"].to_dict()
    for area in ("V1", "V2"):
        assert set(info["areas"][area]) >= {"niflow", "pixels", "gabor"}
        assert info["areas"][area]["niflow"]["median_r"] == pytest.approx(
            res.summaries[area]["median_r"])
    assert info["areas"]["V1"]["incomplete_voxels"] == [5]
    assert len(info["fold_training"]) == K

    t = read_table(out / "cv_voxels.csv")
    assert list(t)[:9] == ["area", "voxel", "r_cv", "r_pixels_cv", "r_gabor_cv", "prf_x",
                           "prf_y", "prf_sigma", "mean_fold_r"]
    v1 = t["area"] == "V1"
    np.testing.assert_array_equal(t["voxel"][v1], np.arange(40))
    np.testing.assert_allclose(t["r_cv"][v1], res.r["V1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["r_gabor_cv"][~v1], res.baseline_r["gabor"]["V2"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["prf_sigma"][v1], res.prf["V1"]["prf_sigma"], rtol=1e-5)

    npz = np.load(out / "cv_predictions.npz")
    np.testing.assert_array_equal(npz["folds"], res.folds)
    np.testing.assert_array_equal(npz["V2"], res.predictions["V2"])
    np.testing.assert_array_equal(npz["pixels_V1"], res.baseline_predictions["pixels"]["V1"])
    np.testing.assert_array_equal(npz["voxels_V2"], res.voxel["V2"])


def test_cv_refuses_a_non_empty_folder_before_training(cv, monkeypatch):
    before = {p.name: p.read_bytes() for p in cv["out"].iterdir()}
    import niflow.runs.crossval as cvmod

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the folder is refused")

    monkeypatch.setattr(cvmod, "_fit_fold", no_training)
    with pytest.raises(RunError, match="not empty; use --force"):
        cross_validate(cv["stim"], cv["resp"], cv["cfg"], k=K, out=cv["out"])
    assert {p.name: p.read_bytes() for p in cv["out"].iterdir()} == before
    with pytest.raises(DataError, match="unknown baseline"):
        cross_validate(cv["stim"], cv["resp"], cv["cfg"], k=K, baselines=("hog",))
