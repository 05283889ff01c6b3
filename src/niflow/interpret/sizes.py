"""pRF sizes with their uncertainty, and an empirical-Bayes eccentricity prior.

At fMRI noise levels a voxel's fitted pRF size is its least certain parameter: the size
trades off against which channels (and so which feature scales) the voxel weights, and on a
few hundred images the spread of fitted sizes across voxels is mostly noise. Two steps turn
the Gaussian readouts' fitted sizes into estimates whose ranks mean something:

1. :func:`log_sigma_standard_errors` — the standard error of each voxel's ``log σ`` from the
   Gauss–Newton approximation of its squared-error loss over all of its own readout
   parameters (channel weights, bias, centre, size) on the training rows, so that the
   trade-off between size and channel weights is accounted for.
2. :func:`shrink_log_sigma` — sizes in cortex vary smoothly with eccentricity; with
   ``log σ_v ~ N(a + b · ecc_v, τ²)`` across the voxels of an area, ``a``, ``b`` and the
   true between-voxel spread ``τ²`` are estimated from the fits themselves (method of
   moments), and each voxel's size is its posterior mean: a precise fit keeps its value, a
   noisy one moves toward the trend. Where sizes really scatter at one eccentricity,
   ``τ²`` is large and little shrinkage happens.

The fitted (unshrunk) size is kept as ``prf_sigma_fit`` beside ``prf_sigma``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from niflow.model.gaussian import GaussianReadout
from niflow.model.nif import NIFModel

__all__ = ["log_sigma_standard_errors", "shrink_log_sigma"]


@torch.no_grad()
def _spatial_tangents(readout: GaussianReadout) -> list[Tensor]:
    """d map / d(μy, μx, log σ) for every voxel at once: three tensors of shape (V, H·W)."""
    centre, log_sigma = readout.centre.detach(), readout.log_sigma.detach()
    out = []
    for tangent in (0, 1, None):
        tc, ts = torch.zeros_like(centre), torch.zeros_like(log_sigma)
        if tangent is None:
            ts.fill_(1.0)
        else:
            tc[:, tangent] = 1.0
        _, dm = torch.func.jvp(readout.maps, (centre, log_sigma), (tc, ts))
        out.append(dm.reshape(readout.n_voxels, -1))
    return out


@torch.no_grad()
def log_sigma_standard_errors(model: NIFModel, stim: Tensor, responses: dict[str, Tensor],
                              max_rows: int = 1024) -> dict[str, np.ndarray]:
    """Standard error of every Gaussian readout voxel's ``log σ`` on training rows.

    Parameters
    ----------
    model : NIFModel
        Trained; evaluated in evaluation mode, on the CPU in float64.
    stim : Tensor of shape (n, C, H, W)
        Training stimuli (scaled as in training).
    responses : dict of str to Tensor of shape (n, V)
        Their z-scored responses.

    Returns
    -------
    dict of str to ndarray of shape (V,)
        Only areas with a Gaussian readout; ``inf`` where the size is not identified.
    """
    was_training = model.training
    model.eval()
    out = {}
    n = min(stim.shape[0], max_rows)
    feats = model.features(stim[:n].to(next(model.parameters()).dtype))
    for area, readout in model.readouts.items():
        if not isinstance(readout, GaussianReadout) or area not in responses:
            continue
        f = feats[area].double().reshape(n, readout.channels, -1)  # (n, C, S)
        maps = readout.spatial_map().double().reshape(readout.n_voxels, -1)
        pooled = f @ maps.t()  # (n, C, V)
        w = readout.weight.double()
        pred = torch.einsum("ncv,cv->nv", pooled, w) + readout.bias.double()
        y = responses[area][:n].double()
        resid_var = ((y - pred) ** 2).mean(0)
        spatial = [torch.einsum("ncv,cv->nv", f @ dm.double().t(), w)
                   for dm in _spatial_tangents(readout)]
        jac = torch.cat([pooled, torch.ones(n, 1, readout.n_voxels, dtype=torch.float64),
                         torch.stack(spatial, 1)], 1)  # (n, C + 4, V)
        gram = torch.einsum("npv,nqv->vpq", jac, jac)
        # a pseudo-inverse: channels that are silent on these rows (dead units) carry no
        # information and must not make the size look unidentified
        inv = torch.linalg.pinv(gram, hermitian=True)
        var = resid_var * inv[:, -1, -1]
        se = torch.sqrt(var.clamp_min(0)).numpy()
        out[area] = np.where(np.isfinite(se) & (se > 0), se, np.inf)
    model.train(was_training)
    return out


SLOPE_Z = 2.0  # the eccentricity slope is kept when it is this many standard errors from 0


def _fit_trend(x: np.ndarray, s2: np.ndarray, design: np.ndarray, iterations: int,
               ) -> tuple[np.ndarray, float, np.ndarray]:
    """Weighted least squares of ``x`` on ``design`` with weights 1 / (τ² + s²), and τ² by
    the method of moments, alternated; returns the coefficients, τ² and their covariance."""
    tau2 = float(np.var(x))
    coef = np.zeros(design.shape[1])
    for _ in range(iterations):
        wts = 1.0 / (tau2 + s2)
        coef = np.linalg.lstsq(design * np.sqrt(wts)[:, None], x * np.sqrt(wts), rcond=None)[0]
        resid = x - design @ coef
        new = max(float(np.sum(wts * (resid ** 2 - s2)) / np.sum(wts)), 1e-6)
        if abs(new - tau2) < 1e-9:
            break
        tau2 = new
    wts = 1.0 / (tau2 + s2)
    cov = np.linalg.pinv((design * wts[:, None]).T @ design)
    return coef, tau2, cov


def shrink_log_sigma(log_sigma: np.ndarray, se: np.ndarray, eccentricity: np.ndarray,
                     iterations: int = 50) -> tuple[np.ndarray, dict[str, float]]:
    """Posterior-mean ``log σ`` under ``log σ_v ~ N(a + b · ecc_v, τ²)`` (module docstring).

    Parameters
    ----------
    log_sigma, se, eccentricity : ndarray of shape (V,)
        Fitted log sizes, their standard errors, and the fitted eccentricities.

    Returns
    -------
    posterior : ndarray of shape (V,)
    prior : dict
        ``intercept``, ``slope`` (per pixel of eccentricity), ``tau`` (between-voxel SD of
        ``log σ`` around the trend) and ``n_voxels`` used.
    """
    x = np.asarray(log_sigma, dtype=np.float64)
    s2 = np.asarray(se, dtype=np.float64) ** 2
    e = np.asarray(eccentricity, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(s2) & np.isfinite(e)
    post = x.copy()
    usable = np.isfinite(x) & np.isfinite(e)  # an unidentified size (se = inf) takes the trend
    if ok.sum() < 3:
        return post, {"intercept": float("nan"), "slope": float("nan"), "tau": float("nan"),
                      "n_voxels": int(ok.sum())}
    xo, so, eo = x[ok], s2[ok], e[ok]
    design = np.stack([np.ones_like(eo), eo], 1)
    coef, tau2, cov = _fit_trend(xo, so, design, iterations)
    if abs(coef[1]) < SLOPE_Z * np.sqrt(cov[1, 1]):
        # a slope the fits do not support would impose a trend fitted from noise (on a few
        # dozen uninformative fits it made the sizes follow eccentricity with either sign)
        c0, tau2, _ = _fit_trend(xo, so, design[:, :1], iterations)
        coef = np.array([c0[0], 0.0])
    trend = coef[0] + coef[1] * e
    shrink = np.where(np.isfinite(s2), tau2 / (tau2 + np.where(np.isfinite(s2), s2, 0)), 0.0)
    post[usable] = (trend + shrink * (x - trend))[usable]
    return post, {"intercept": float(coef[0]), "slope": float(coef[1]),
                  "tau": float(np.sqrt(tau2)), "n_voxels": int(ok.sum())}
