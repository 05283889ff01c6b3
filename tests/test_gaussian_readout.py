"""The Gaussian pRF readout and the Gabor bank against naive references; pRF recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal
from scipy.stats import norm

from niflow.model import GaussianReadout
from niflow.model.filters import GaborBank, bank_wavelengths, gabor_kernel
from niflow.model.gaussian import fit_channel_weights, search_prfs_features


def naive_gaussian(features, centre, sigma, weight, bias):
    """ŷ_v = b_v + Σ_c w_cv Σ_{y,x} m(y) m(x) U[c,y,x], m the Gaussian's mass over each cell
    (scipy's normal CDF), as explicit loops."""
    b, c, h, w = features.shape
    v = centre.shape[0]
    out = np.zeros((b, v))
    for vi in range(v):
        my = [norm.cdf(i + 0.5, centre[vi, 0], sigma[vi]) - norm.cdf(i - 0.5, centre[vi, 0],
                                                                     sigma[vi])
              for i in range(h)]
        mx = [norm.cdf(j + 0.5, centre[vi, 1], sigma[vi]) - norm.cdf(j - 0.5, centre[vi, 1],
                                                                     sigma[vi])
              for j in range(w)]
        for n in range(b):
            total = bias[vi]
            for ci in range(c):
                for yi in range(h):
                    for xi in range(w):
                        total += my[yi] * mx[xi] * weight[ci, vi] * features[n, ci, yi, xi]
            out[n, vi] = total
    return out


def test_gaussian_readout_matches_naive_formula():
    torch.manual_seed(0)
    ro = GaussianReadout(5, 3, (6, 7)).double()
    centre = torch.tensor([[0.0, 0.0], [2.5, 3.2], [5.0, 6.0], [-1.0, 3.0], [3.3, 8.5]])
    sigma = torch.tensor([0.2, 1.0, 2.5, 0.7, 4.0])
    ro.initialize(centre=centre, sigma=sigma, bias=torch.randn(5))
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    want = naive_gaussian(x.numpy(), centre.numpy(), ro.sigma().detach().numpy(),
                          ro.weight.detach().numpy(), ro.bias.detach().numpy())
    np.testing.assert_allclose(ro(x).detach().numpy(), want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ro.sigma().detach(), sigma.double())


def test_gaussian_readout_gradcheck():
    torch.manual_seed(1)
    ro = GaussianReadout(3, 2, (4, 5)).double()
    ro.initialize(centre=torch.tensor([[1.0, 2.0], [2.2, 0.5], [3.0, 4.1]]),
                  sigma=torch.tensor([0.8, 1.5, 0.4]))
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    names = ["centre", "log_sigma", "weight", "bias"]

    def f(x, *params):
        return torch.func.functional_call(ro, dict(zip(names, params, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *[getattr(ro, n) for n in names]))


def test_gaussian_map_mass_is_the_share_on_the_grid():
    ro = GaussianReadout(2, 1, (20, 20))
    ro.initialize(centre=torch.tensor([[10.0, 10.0], [0.0, 10.0]]), sigma=torch.tensor([2.0,
                                                                                         2.0]))
    mass = ro.spatial_map().sum((1, 2)).detach()
    # a pRF centred on the first row's cell centre has the mass above that cell's upper
    # edge (half a cell away) on the grid: not renormalised onto the image
    assert mass[0] == pytest.approx(1.0, abs=1e-4)
    assert mass[1] == pytest.approx(norm.cdf(0.5 / 2.0), abs=1e-4)


def test_bad_feature_shape_is_a_value_error():
    ro = GaussianReadout(2, 3, (4, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 4\)"):
        ro(torch.zeros(1, 2, 4, 4))


def test_grid_search_recovers_known_prfs():
    """popeye-style recovery: voxels that pool random feature maps with known Gaussians and
    known channel weights, one of them a difference of channels (no net contrast drive)."""
    gen = torch.Generator().manual_seed(3)
    n, c, h, w = 400, 2, 16, 16
    drive = torch.rand(n, c, h, w, generator=gen, dtype=torch.float64)
    ro = GaussianReadout(6, c, (h, w)).double()
    centre = torch.tensor([[3.0, 4.0], [8.0, 8.0], [12.0, 2.0], [5.0, 13.0], [10.0, 11.0],
                           [1.0, 1.0]], dtype=torch.float64)
    sigma = torch.tensor([0.7, 2.0, 1.4, 2.8, 1.0, 0.35], dtype=torch.float64)
    weight = torch.tensor([[1.0, 0.5, 1.0, 0.0, 1.0, 1.0], [0.2, 1.0, -1.0, 1.0, 0.3, 0.0]])
    ro.initialize(centre=centre, sigma=sigma, weight=weight)
    clean = ro(drive).detach()
    noisy = clean + 0.3 * clean.std(0) * torch.randn(n, 6, generator=gen, dtype=torch.float64)
    got_c, got_s, explained = search_prfs_features(drive, noisy)
    np.testing.assert_array_equal(got_c.numpy(), centre.numpy())
    np.testing.assert_allclose(got_s.numpy(), sigma.numpy())
    # ~92% of the variance is signal; the default ridge (λ = the mean Gram diagonal) halves
    # what two nearly orthogonal channels explain
    assert (explained > 0.4).all() and (explained < 0.5).all()


def test_channel_weights_match_numpy_ridge():
    rng = np.random.default_rng(0)
    n, c, v = 50, 4, 3
    pooled = rng.normal(size=(n, c, v))
    y = rng.normal(size=(n, v))
    wts, bias = fit_channel_weights(torch.as_tensor(pooled), torch.as_tensor(y), ridge=0.5)
    for j in range(v):
        x = pooled[:, :, j] - pooled[:, :, j].mean(0)
        gram = x.T @ x
        lam = 0.5 * np.trace(gram) / c
        want = np.linalg.solve(gram + lam * np.eye(c), x.T @ (y[:, j] - y[:, j].mean()))
        np.testing.assert_allclose(wts[:, j].numpy(), want, rtol=1e-10)
        assert bias[j].item() == pytest.approx(y[:, j].mean() - pooled[:, :, j].mean(0) @ want)


@pytest.mark.parametrize("learn", [False, True])
def test_gabor_bank_matches_direct_convolution(learn):
    lams = bank_wavelengths(40, 3)
    bank = GaborBank(1, (40, 36), 4, lams, learn=learn)
    x = torch.rand(2, 1, 40, 36)
    got = bank(x).detach().numpy()
    for o in range(4):
        for k, lam in enumerate(lams):
            kern = gabor_kernel(float(lam), 180.0 * o / 4)
            want = np.abs(signal.convolve2d(x[1, 0].numpy().astype(np.float64), kern,
                                            mode="same"))
            np.testing.assert_allclose(got[1, o * 3 + k], want, atol=2e-5)


def test_gabor_kernel_is_a_quadrature_pair_at_its_orientation():
    k = gabor_kernel(8.0, 0.0)
    assert np.sum(np.abs(k) ** 2) == pytest.approx(1.0)
    assert abs(k.real.sum()) < 1e-10  # no response to uniform regions
    yy = np.arange(64)[:, None] * np.ones((1, 64))
    stripes = np.cos(2 * math.pi * yy / 8.0)  # horizontal stripes: 0°
    energy = np.abs(signal.convolve2d(stripes, k, mode="valid"))
    across = np.abs(signal.convolve2d(stripes.T, k, mode="valid"))
    assert energy.std() < 0.02 * energy.mean()  # quadrature: flat energy along the grating
    assert energy.mean() > 20 * across.mean()
