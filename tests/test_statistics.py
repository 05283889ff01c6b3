"""Held-out statistics against scipy, scikit-learn, closed forms and naive implementations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from scipy import stats
from sklearn.metrics import r2_score

from niflow.data.errors import DataError
from niflow.data.io import load_response_repeats, stack_repeats
from niflow.evaluate.statistics import (
    NO_REPEATS_NOTE,
    area_summary,
    fdr_bh,
    ncsnr,
    ncsnr_ceiling,
    noise_ceiling,
    pearson_r,
    permutation_pvalues,
    r_squared,
    spearman_brown,
    split_half_reliability,
    voxel_statistics,
)


def repeats_with_reliability(rho, n_rep, n_samples, rng):
    """Unit-variance signal plus noise of variance (1-ρ)/ρ: two repeats correlate with ρ."""
    signal = rng.standard_normal((n_samples, len(rho)))
    noise = rng.standard_normal((n_rep, n_samples, len(rho))) * np.sqrt((1 - rho) / rho)
    return signal, signal[None] + noise


def test_r_and_r2_match_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(50, 30))
    true = 0.6 * pred + rng.normal(size=(50, 30)) + rng.normal(size=30)
    r = pearson_r(pred, true)
    r2 = r_squared(pred, true)
    for v in range(30):
        assert r[v] == pytest.approx(stats.pearsonr(pred[:, v], true[:, v])[0], abs=1e-12)
    np.testing.assert_allclose(r2, r2_score(true, pred, multioutput="raw_values"), atol=1e-12)


def test_spearman_brown_closed_form():
    assert spearman_brown(0.5, 2) == pytest.approx(2 / 3)
    assert spearman_brown(0.2, 4) == pytest.approx(0.8 / 1.6)
    assert spearman_brown(1.0, 3) == pytest.approx(1.0)
    assert spearman_brown(0.0, 5) == pytest.approx(0.0)
    # stepping down then up again is the identity
    rho = np.array([0.1, 0.4, 0.9])
    np.testing.assert_allclose(spearman_brown(spearman_brown(rho, 0.5), 2.0), rho)
    with pytest.raises(ValueError):
        spearman_brown(0.5, 0)


def test_spearman_brown_predicts_the_reliability_of_a_mean():
    # with 4 repeats, the correlation between the mean of repeats 1-2 and the mean of 3-4 is
    # the actual reliability of a 2-repeat mean; stepping up the single-repeat correlation
    # must predict it (averaged over many voxels to beat the sampling noise)
    rng = np.random.default_rng(1)
    rho = np.full(4000, 0.4)
    _, rep = repeats_with_reliability(rho, 4, 200, rng)
    predicted = spearman_brown(pearson_r(rep[0], rep[1]), 2)
    actual = pearson_r(rep[:2].mean(0), rep[2:].mean(0))
    assert predicted.mean() == pytest.approx(actual.mean(), abs=0.01)
    assert predicted.mean() == pytest.approx(spearman_brown(0.4, 2), abs=0.01)


@pytest.mark.parametrize("n_rep", [2, 3, 4])
def test_noise_ceiling_bounds_the_correlation_with_the_signal(n_rep):
    # the ceiling is √(reliability of the n-repeat mean): what a perfect model (the signal)
    # reaches against that mean
    rng = np.random.default_rng(n_rep)
    rho = rng.uniform(0.2, 0.9, 3000)
    signal, rep = repeats_with_reliability(rho, n_rep, 150, rng)
    ceiling = noise_ceiling(rep)
    perfect = pearson_r(signal, rep.mean(0))
    closed = np.sqrt(spearman_brown(rho, n_rep))
    assert np.mean(ceiling - closed) == pytest.approx(0, abs=0.01)
    assert np.mean(ceiling - perfect) == pytest.approx(0, abs=0.01)
    rel = split_half_reliability(rep)
    assert np.corrcoef(rel, spearman_brown(rho, n_rep))[0, 1] > 0.8


def test_ncsnr_matches_its_closed_form_and_the_split_half_ceiling():
    rng = np.random.default_rng(3)
    rho = rng.uniform(0.2, 0.9, 3000)
    _, rep = repeats_with_reliability(rho, 3, 300, rng)
    snr = ncsnr(rep)
    # signal variance 1, noise variance (1-ρ)/ρ
    np.testing.assert_allclose(np.median(snr ** 2 / (rho / (1 - rho))), 1.0, atol=0.03)
    # NC = ncsnr² / (ncsnr² + 1/n) equals the Spearman–Brown reliability of the mean
    assert np.mean(ncsnr_ceiling(snr, 3) - noise_ceiling(rep)) == pytest.approx(0, abs=0.01)


def test_pure_noise_voxels_have_no_ceiling():
    rng = np.random.default_rng(4)
    rep = rng.standard_normal((2, 100, 500))
    ceiling = noise_ceiling(rep)
    # about half the split-half correlations are negative: no ceiling there, never invented
    assert 0.4 < np.isnan(ceiling).mean() < 0.6
    np.testing.assert_array_equal(np.isnan(ceiling), split_half_reliability(rep) <= 0)
    assert abs(np.median(split_half_reliability(rep))) < 0.03


def test_permutation_pvalues_are_uniform_under_the_null():
    rng = np.random.default_rng(5)
    pred = rng.standard_normal((40, 3000))
    true = rng.standard_normal((40, 3000))
    p = permutation_pvalues(pred, true, n_permutations=500, seed=1)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    counts, _ = np.histogram(p, bins=10, range=(0, 1))
    expected = len(p) / 10
    # every decile within 4 binomial standard deviations of its expectation
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected * 0.9)), counts
    assert (p <= 0.05).mean() == pytest.approx(0.05, abs=0.015)


def test_permutation_pvalues_agree_with_the_analytic_test_and_detect_signal():
    rng = np.random.default_rng(6)
    n = 60
    pred = rng.standard_normal((n, 200))
    true = 0.25 * pred + rng.standard_normal((n, 200))
    p = permutation_pvalues(pred, true, n_permutations=2000, seed=2)
    analytic = np.array([stats.pearsonr(pred[:, v], true[:, v], alternative="greater").pvalue
                         for v in range(200)])
    # Monte Carlo error of a p-value from 2000 permutations is at most ~0.011
    assert np.max(np.abs(p - analytic)) < 0.045
    strong = permutation_pvalues(pred, pred + 0.1 * true, n_permutations=999, seed=0)
    np.testing.assert_allclose(strong, 1 / 1000)
    # a constant prediction has no evidence at all
    const = permutation_pvalues(np.ones((n, 2)), true[:, :2], n_permutations=99)
    np.testing.assert_array_equal(const, 1.0)


def naive_bh(p, alpha):
    """Reject the k smallest p-values, k the largest rank with p_(k) ≤ k·α/m."""
    m = len(p)
    order = np.argsort(p)
    k = 0
    for rank in range(1, m + 1):
        if p[order[rank - 1]] <= rank * alpha / m:
            k = rank
    reject = np.zeros(m, bool)
    reject[order[:k]] = True
    return reject


def test_benjamini_hochberg_matches_a_naive_implementation_and_scipy():
    rng = np.random.default_rng(7)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 0.01, 60)])
    q = fdr_bh(p)
    np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), atol=1e-12)
    for alpha in (0.01, 0.05, 0.1, 0.25):
        np.testing.assert_array_equal(q <= alpha, naive_bh(p, alpha))
    # NaN p-values are left out of m and stay NaN
    q_nan = fdr_bh(np.r_[p, np.nan])
    assert np.isnan(q_nan[-1])
    np.testing.assert_allclose(q_nan[:-1], q)


def test_voxel_statistics_without_repeats_reports_no_ceiling():
    rng = np.random.default_rng(8)
    pred = rng.standard_normal((30, 20))
    true = pred + rng.standard_normal((30, 20))
    st = voxel_statistics(pred, true, n_permutations=200)
    assert np.isnan(st["noise_ceiling"]).all() and np.isnan(st["r_normalised"]).all()
    summary = area_summary(st)
    assert summary["median_noise_ceiling"] is None
    assert summary["ceiling_method"] is None and summary["note"] == NO_REPEATS_NOTE
    assert summary["frac_significant"] == pytest.approx(st["significant"].mean())
    np.testing.assert_array_equal(st["significant"], st["q_fdr"] <= 0.05)


def test_voxel_statistics_with_repeats_normalises_r_by_the_ceiling():
    rng = np.random.default_rng(9)
    rho = rng.uniform(0.3, 0.9, 50)
    signal, rep = repeats_with_reliability(rho, 2, 80, rng)
    pred = signal + 0.5 * rng.standard_normal(signal.shape)
    st = voxel_statistics(pred, rep.mean(0), rep, n_permutations=100)
    np.testing.assert_allclose(st["noise_ceiling"], noise_ceiling(rep))
    np.testing.assert_allclose(st["r_normalised"], st["r"] / st["noise_ceiling"])
    summary = area_summary(st, n_repeats=2)
    assert "Spearman-Brown" in summary["ceiling_method"] and "note" not in summary
    with pytest.raises(ValueError):
        voxel_statistics(pred, rep.mean(0), rep[:, :10])


def test_repeats_from_a_leading_axis_or_from_one_file_per_repeat(tmp_path):
    rng = np.random.default_rng(10)
    rep = {"V1": rng.normal(size=(3, 12, 5)), "V2": rng.normal(size=(3, 12, 4))}
    scipy.io.savemat(tmp_path / "stacked.mat", rep)
    mean, got = load_response_repeats(tmp_path / "stacked.mat")
    for a in rep:
        np.testing.assert_allclose(got[a], rep[a], rtol=1e-6)
        np.testing.assert_allclose(mean[a], rep[a].mean(0), rtol=1e-5, atol=1e-6)
    files = []
    for i in range(3):
        files.append(tmp_path / f"rep{i}.mat")
        scipy.io.savemat(files[-1], {a: r[i] for a, r in rep.items()})
    stacked = stack_repeats(files)
    for a in rep:
        np.testing.assert_allclose(stacked[a], rep[a], rtol=1e-6)
    plain, none = load_response_repeats(files[0])
    assert none is None and plain["V1"].shape == (12, 5)
    scipy.io.savemat(tmp_path / "mixed.mat", {"V1": rep["V1"], "V2": rep["V2"][0]})
    with pytest.raises(DataError, match="some areas have a repeat axis"):
        load_response_repeats(tmp_path / "mixed.mat")
    with pytest.raises(DataError, match="at least 2"):
        stack_repeats(files[:1])


def test_permutations_do_not_depend_on_how_they_are_batched():
    rng = np.random.default_rng(11)
    pred, true = rng.normal(size=(25, 40)), rng.normal(size=(25, 40))
    a = permutation_pvalues(pred, true, n_permutations=300, seed=3, chunk=50)
    b = permutation_pvalues(pred, true, n_permutations=300, seed=3, chunk=7)
    np.testing.assert_array_equal(a, b)
