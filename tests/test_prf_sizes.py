"""pRF size uncertainty (against a naive Jacobian) and the eccentricity prior (known truth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niflow import config as cfgmod
from niflow.interpret.sizes import log_sigma_standard_errors, shrink_log_sigma
from niflow.model import NIFModel


def _model():
    cfg = cfgmod.preset("default")
    cfg.areas = cfgmod.preset("default").areas[:1]
    cfg.select = cfgmod.SelectConfig()
    torch.manual_seed(0)
    model = NIFModel(cfg.validate(), (1, 12, 12), {"V1": 3}).double()
    ro = model.readouts["V1"]
    ro.initialize(centre=torch.tensor([[2.0, 3.0], [3.0, 2.5], [4.5, 1.0]]),
                  sigma=torch.tensor([0.8, 1.5, 0.5]))
    return model


def test_standard_errors_match_a_naive_gauss_newton():
    model = _model()
    ro = model.readouts["V1"]
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(300, 1, 12, 12, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)["V1"] + 0.1 * torch.randn(300, 3, generator=gen, dtype=torch.float64)
    got = log_sigma_standard_errors(model, x, {"V1": y})["V1"]
    feats = model.features(x)["V1"].detach()
    names = ["weight", "bias", "centre", "log_sigma"]
    for v in range(3):
        def pred(*p, v=v):
            out = torch.func.functional_call(ro, dict(zip(names, p, strict=True)), (feats,))
            return out[:, v]

        jac = torch.autograd.functional.jacobian(pred, tuple(getattr(ro, n) for n in names))
        cols = [jac[0][:, :, v], jac[1][:, v:v + 1], jac[2][:, v, :], jac[3][:, v:v + 1]]
        j = torch.cat(cols, 1)  # the voxel's own parameters: C weights, bias, centre, size
        with torch.no_grad():
            resid = ((y[:, v] - pred(*(getattr(ro, n) for n in names))) ** 2).mean()
        cov = resid * torch.linalg.pinv(j.t() @ j, hermitian=True)
        assert got[v] == pytest.approx(float(cov[-1, -1].sqrt()), rel=1e-4)


def test_prior_recovers_trend_and_spread_and_improves_the_estimates():
    rng = np.random.default_rng(0)
    v = 2000
    ecc = rng.uniform(0, 20, v)
    true = 0.3 + 0.04 * ecc + rng.normal(0, 0.15, v)  # log σ with real scatter τ = 0.15
    se = rng.uniform(0.05, 0.6, v)
    fit = true + rng.normal(0, se)
    post, prior = shrink_log_sigma(fit, se, ecc)
    assert prior["slope"] == pytest.approx(0.04, abs=0.005)
    assert prior["intercept"] == pytest.approx(0.3, abs=0.05)
    assert prior["tau"] == pytest.approx(0.15, abs=0.03)
    assert np.mean((post - true) ** 2) < 0.5 * np.mean((fit - true) ** 2)
    # a precise fit keeps its value; an unidentified one takes the trend
    se2 = se.copy()
    se2[:2] = [1e-4, np.inf]
    post2, _ = shrink_log_sigma(fit, se2, ecc)
    assert post2[0] == pytest.approx(fit[0], abs=1e-3)
    assert post2[1] == pytest.approx(prior["intercept"] + prior["slope"] * ecc[1], abs=0.02)


def test_without_real_scatter_the_sizes_follow_the_trend():
    rng = np.random.default_rng(1)
    ecc = rng.uniform(0, 20, 500)
    true = 0.5 + 0.03 * ecc
    se = np.full(500, 0.3)
    post, prior = shrink_log_sigma(true + rng.normal(0, se), se, ecc)
    # the moment estimate of τ² has a sampling SD of about √(2/n)·se² = 0.0057: within 3 SD
    assert prior["tau"] ** 2 < 3 * np.sqrt(2 / 500) * 0.3 ** 2
    assert np.corrcoef(post, true)[0, 1] > 0.95


def test_a_slope_the_fits_do_not_support_is_not_imposed():
    # uninformative fits: log sizes unrelated to eccentricity, each with a large error; the
    # prior must not turn noise into a trend that every shrunk size then follows
    rng = np.random.default_rng(7)
    n = 60
    ecc = rng.uniform(0, 20, n)
    se = np.full(n, 1.5)
    log_sigma = rng.normal(0.5, 1.5, n)
    post, prior = shrink_log_sigma(log_sigma, se, ecc)
    assert prior["slope"] == 0.0
    # the same draw with a real trend keeps it
    trended = log_sigma + 0.3 * ecc
    _, prior = shrink_log_sigma(trended, se, ecc)
    assert prior["slope"] == pytest.approx(0.3, abs=0.08)
    # without the guard the noise-fitted slope would have been imposed on every size
    assert abs(np.corrcoef(post, ecc)[0, 1]) < 0.5
