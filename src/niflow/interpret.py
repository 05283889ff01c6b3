"""Receptive fields from the learned observation model, in stimulus pixel coordinates."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from niflow.model import NIFModel

CENTRE_THRESHOLD = 0.5
SIZE_THRESHOLD = 0.25


def spatial_maps(model: NIFModel, area: str) -> np.ndarray:
    """Rank-weighted spatial maps ``Σ_k softplus(a_vk) · uy_vk ⊗ ux_vk``.

    Returns
    -------
    ndarray of shape (n_voxels, H, W)
        On the area's grid; row index = y (stimulus rows), column index = x.
    """
    import torch

    with torch.no_grad():
        return model.readouts[area].spatial_map().detach().cpu().numpy().astype(np.float64)


def _truncated_variance_factor(threshold: float) -> float:
    """Per-axis variance of an isotropic Gaussian restricted to where it exceeds
    ``threshold`` × its peak, as a fraction of σ² (weights = the Gaussian itself)."""
    u = math.log(1.0 / threshold)
    return 1.0 - u * threshold / (1.0 - threshold)


def _peak_component(m: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the connected region ≥ threshold·max that holds the peak."""
    peak = np.unravel_index(int(np.argmax(m)), m.shape)
    labels, _ = ndimage.label(m >= threshold * m[peak])
    return labels == labels[peak]


def prf_from_maps(maps: np.ndarray, scale: float = 1.0, offset: float = 0.0,
                  ) -> dict[str, np.ndarray]:
    """Receptive-field centre and size of each map, robust to the softmax tails.

    The centre is the centre of mass of the connected region at or above half the peak that
    contains the peak (a plain centre of mass over the whole map is pulled toward the grid
    centre by the map's floor). The size comes from the second moments of the region at or
    above a quarter of the peak, corrected for that truncation assuming a Gaussian profile
    and for the grid's cell width.

    Parameters
    ----------
    maps : ndarray of shape (n_voxels, H, W)
        Non-negative maps; rows are y, columns are x.
    scale, offset : float
        Grid-to-stimulus map: ``stimulus = scale · grid + offset`` (see ``Geometry``).

    Returns
    -------
    dict with ``prf_x``, ``prf_y``, ``prf_sigma`` (each ndarray of shape (n_voxels,)) in
    stimulus pixels, x = column and y = row, top-left pixel centre at (0, 0).
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (n_voxels, H, W), got {maps.shape}")
    n, h, w = maps.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy, sig = np.empty(n), np.empty(n), np.empty(n)
    factor = _truncated_variance_factor(SIZE_THRESHOLD)
    for v in range(n):
        m = maps[v] - maps[v].min()  # the floor of a softmax map carries no position
        if not np.any(m > 0):
            cx[v] = cy[v] = sig[v] = np.nan
            continue
        # weights fall to zero at the threshold, so cells entering or leaving the region as
        # the centre moves between grid points do not make the estimate jump
        core = np.clip(m - CENTRE_THRESHOLD * m.max(), 0, None) * _peak_component(
            m, CENTRE_THRESHOLD)
        cy[v] = (core * yy).sum() / core.sum()
        cx[v] = (core * xx).sum() / core.sum()
        wide = m * _peak_component(m, SIZE_THRESHOLD)
        my, mx = (wide * yy).sum() / wide.sum(), (wide * xx).sum() / wide.sum()
        var = ((wide * ((yy - my) ** 2 + (xx - mx) ** 2)).sum() / wide.sum()) / 2.0
        sig[v] = math.sqrt(max(var / factor, 1.0 / 12.0))
    return {"prf_x": scale * cx + offset, "prf_y": scale * cy + offset, "prf_sigma": scale * sig}


def receptive_fields(model: NIFModel, area: str) -> dict[str, np.ndarray]:
    """:func:`prf_from_maps` for one area of a model, in stimulus pixels."""
    geo = model.geometry(area)
    return prf_from_maps(spatial_maps(model, area), geo.scale, geo.offset)
