"""Receptive fields of a trained model: readout maps, pRF centres and sizes, coordinates.

Coordinates
-----------
Positions are **stimulus pixels**: x = column, y = row, the centre of the top-left pixel is
(0, 0). Eccentricity is the distance from the image centre ``((W−1)/2, (H−1)/2)``; the polar
angle is measured in degrees from the right horizontal meridian, counter-clockwise positive
with y pointing **up** (image rows grow downward, so a centre above the image centre has a
positive angle: 90° = upper vertical meridian), in ``[0, 360)``. Given the stimulus's
visual-field size ``visual_field_deg`` (the angle subtended by the image **width**, square
pixels), sizes and eccentricities are also given in degrees.

Orientation (gratings and bars) is that of the stripes or of the bar's long axis: 0° =
horizontal, counter-clockwise positive on screen (y up), in ``[0, 180)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from niflow.interpret.sizes import shrink_log_sigma
from niflow.model.fitted import FittedModel
from niflow.model.gaussian import SIGMA_MIN
from niflow.model.nif import NIFModel

# A tenth of the peak: on simulations with known pRFs the centre of mass of this region is
# about twice as close to the true centre as that of the half-maximum region (the learned
# maps are a few grid cells wide, so a half-maximum region is one or two cells and its
# centre snaps to the grid).
CENTRE_THRESHOLD = 0.1
SIZE_THRESHOLD = 0.25
LOBE_THRESHOLD = 0.25
LOBE_MIN_SHARE = 0.2


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
                  centre_threshold: float = CENTRE_THRESHOLD) -> dict[str, np.ndarray]:
    """Receptive-field centre and size of each map, robust to the softmax tails.

    After removing the map's floor (its minimum), the centre is the centre of mass, with
    weights ``map − centre_threshold · peak``, of the connected region above that level that
    contains the peak (a plain centre of mass over the whole map is pulled toward the grid
    centre by the floor, and a distant second lobe is left out). The size comes from the
    second moments of the region at or above a quarter of the peak, corrected for that
    truncation assuming a Gaussian profile and for the grid's cell width.

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
        core = np.clip(m - centre_threshold * m.max(), 0, None) * _peak_component(
            m, centre_threshold)
        cy[v] = (core * yy).sum() / core.sum()
        cx[v] = (core * xx).sum() / core.sum()
        wide = m * _peak_component(m, SIZE_THRESHOLD)
        my, mx = (wide * yy).sum() / wide.sum(), (wide * xx).sum() / wide.sum()
        var = ((wide * ((yy - my) ** 2 + (xx - mx) ** 2)).sum() / wide.sum()) / 2.0
        sig[v] = math.sqrt(max(var / factor, 1.0 / 12.0))
    return {"prf_x": scale * cx + offset, "prf_y": scale * cy + offset, "prf_sigma": scale * sig}


def count_lobes(maps: np.ndarray, threshold: float = LOBE_THRESHOLD,
                min_share: float = LOBE_MIN_SHARE) -> np.ndarray:
    """Number of separated lobes of each map.

    A lobe is a connected region (8-neighbourhood) at or above ``threshold`` × the peak
    (after removing the map's floor) that holds at least ``min_share`` of the mass above the
    threshold; small satellites do not count.

    Parameters
    ----------
    maps : ndarray of shape (n_voxels, H, W)

    Returns
    -------
    ndarray of int of shape (n_voxels,)
        0 for an empty (constant) map.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (n_voxels, H, W), got {maps.shape}")
    structure = np.ones((3, 3), dtype=bool)
    out = np.zeros(len(maps), dtype=np.int64)
    for v, raw in enumerate(maps):
        m = raw - raw.min()
        if not np.any(m > 0):
            continue
        labels, n_lab = ndimage.label(m >= threshold * m.max(), structure=structure)
        mass = ndimage.sum_labels(m, labels, index=np.arange(1, n_lab + 1))
        out[v] = int((mass >= min_share * mass.sum()).sum())
    return out


def visual_field_coordinates(x: np.ndarray, y: np.ndarray, image_size: tuple[int, int],
                             visual_field_deg: float | None = None) -> dict[str, np.ndarray]:
    """Eccentricity and polar angle of stimulus-pixel positions (module docstring: convention).

    Parameters
    ----------
    x, y : ndarray of shape (n,)
        Column and row in stimulus pixels.
    image_size : tuple of int
        Stimulus ``(height, width)``.
    visual_field_deg : float, optional
        Visual angle subtended by the image width; adds ``*_deg`` entries.

    Returns
    -------
    dict of str to ndarray of shape (n,)
        ``eccentricity`` (px), ``polar_angle`` (degrees, 0 = right, counter-clockwise, y up),
        and with ``visual_field_deg``: ``x_deg``, ``y_deg`` (y up, 0 at the image centre),
        ``eccentricity_deg``.
    """
    h, w = image_size
    dx = np.asarray(x, dtype=np.float64) - (w - 1) / 2
    dy_up = (h - 1) / 2 - np.asarray(y, dtype=np.float64)  # rows grow downward
    out = {"eccentricity": np.hypot(dx, dy_up),
           "polar_angle": np.degrees(np.arctan2(dy_up, dx)) % 360.0}
    if visual_field_deg is not None:
        dpp = degrees_per_pixel(image_size, visual_field_deg)
        out.update(x_deg=dx * dpp, y_deg=dy_up * dpp, eccentricity_deg=out["eccentricity"] * dpp)
    return out


def degrees_per_pixel(image_size: tuple[int, int], visual_field_deg: float) -> float:
    """Visual angle of one pixel when the image width subtends ``visual_field_deg``."""
    if not visual_field_deg or visual_field_deg <= 0:
        raise ValueError(f"visual_field_deg must be > 0, got {visual_field_deg}")
    return float(visual_field_deg) / float(image_size[1])


def prf_parameters(maps: np.ndarray, scale: float, offset: float,
                   image_size: tuple[int, int], visual_field_deg: float | None = None,
                   ) -> dict[str, np.ndarray]:
    """Readout pRF of each voxel: centre, size, eccentricity, polar angle and lobes.

    Parameters
    ----------
    maps : ndarray of shape (n_voxels, H, W)
        Spatial maps on the area grid (:func:`spatial_maps`).
    scale, offset : float
        The area's grid-to-stimulus map (``Geometry``).
    image_size : tuple of int
        Stimulus ``(height, width)``.
    visual_field_deg : float, optional
        Visual angle of the image width.

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``prf_x``, ``prf_y``, ``prf_sigma`` (px; :func:`prf_from_maps`), ``eccentricity``,
        ``polar_angle``, ``n_lobes``, ``multipole`` (bool, ≥ 2 lobes), and with
        ``visual_field_deg``: ``x_deg``, ``y_deg``, ``eccentricity_deg``, ``sigma_deg``.
    """
    out = prf_from_maps(maps, scale, offset)
    out.update(visual_field_coordinates(out["prf_x"], out["prf_y"], image_size,
                                        visual_field_deg))
    lobes = count_lobes(maps)
    out["n_lobes"] = lobes
    out["multipole"] = lobes >= 2
    if visual_field_deg is not None:
        out["sigma_deg"] = out["prf_sigma"] * degrees_per_pixel(image_size, visual_field_deg)
    return out


def readout_prf(model: NIFModel, area: str) -> dict[str, np.ndarray]:
    """Readout pRF centre and size of every voxel of ``area``, in stimulus pixels.

    A Gaussian readout reports its parameters: the centre maps through the area's geometry;
    the size adds, to the Gaussian's σ on the grid, the spread of the cells it weights (a
    cell of ``scale`` pixels averages ``scale`` pixels per axis), so that ``prf_sigma`` is the
    σ of the voxel's weighting of the stimulus-resolution feature map. Low-rank maps go
    through :func:`prf_from_maps`.

    Returns
    -------
    dict with ``prf_x``, ``prf_y``, ``prf_sigma``, each ndarray of shape (n_voxels,)
    """
    import torch

    geo = model.geometry(area)
    readout = model.readouts[area]
    if not hasattr(readout, "prf_grid"):
        return prf_from_maps(spatial_maps(model, area), geo.scale, geo.offset)
    with torch.no_grad():
        my, mx, sig = (t.detach().cpu().double().numpy() for t in readout.prf_grid())
        log_sigma = readout.log_sigma.detach().cpu().double().numpy()
    return {"prf_x": geo.scale * mx + geo.offset, "prf_y": geo.scale * my + geo.offset,
            "prf_sigma": grid_sigma_to_pixels(sig, geo.scale), "log_sigma": log_sigma}


def grid_sigma_to_pixels(sigma: np.ndarray, scale: float) -> np.ndarray:
    """σ (grid cells) of a cell-integrated Gaussian over cells of ``scale`` pixels → the σ
    (pixels) of its weighting of the stimulus-resolution feature map (see
    :func:`readout_prf`)."""
    var = scale ** 2 * (np.asarray(sigma) ** 2 + 1 / 12) + (scale ** 2 - 1) / 12
    return np.sqrt(var)


def receptive_fields(model: FittedModel | NIFModel, area: str,
                     visual_field_deg: float | None = None) -> dict[str, np.ndarray]:
    """Readout pRFs of one area of a model, in stimulus pixels (and degrees if given).

    Parameters
    ----------
    model : FittedModel (a :class:`niflow.Run` is one) or NIFModel
        Of a FittedModel the centre and size are those the run reports (the ensemble's
        median, sizes under the eccentricity prior: ``voxels.csv``'s), the other measures
        those of its first model's readout maps; of a NIFModel, its own readout's.
    area : str
    visual_field_deg : float, optional
        Angle the image width subtends; adds the measures in degrees.

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        :func:`prf_parameters` (``prf_x``, ``prf_y``, ``prf_sigma``, ``eccentricity``,
        ``polar_angle``, ``multipole`` and more).
    """
    if isinstance(model, FittedModel):
        size = tuple(model.model.image_shape[1:])
        return with_prf(receptive_fields(model.model, area, visual_field_deg),
                        ensemble_receptive_fields(model, area), size, visual_field_deg)
    geo = model.geometry(area)
    size = tuple(model.image_shape[1:])
    out = prf_parameters(spatial_maps(model, area), geo.scale, geo.offset, size,
                         visual_field_deg)
    if hasattr(model.readouts[area], "prf_grid"):
        out = with_prf(out, readout_prf(model, area), size, visual_field_deg)
    return out


def with_prf(params: dict[str, np.ndarray], prf: dict[str, np.ndarray],
             image_size: tuple[int, int], visual_field_deg: float | None = None,
             ) -> dict[str, np.ndarray]:
    """:func:`prf_parameters` ``params`` with the centre and size of ``prf`` (its ``prf_*``
    entries, e.g. a Gaussian readout's or a run's) and the coordinates that follow from them
    recomputed (eccentricity, polar angle and, with ``visual_field_deg``, degrees)."""
    out = {**params, **{k: v for k, v in prf.items() if k.startswith("prf_")}}
    out.update(visual_field_coordinates(out["prf_x"], out["prf_y"], image_size,
                                        visual_field_deg))
    if visual_field_deg is not None:
        out["sigma_deg"] = out["prf_sigma"] * degrees_per_pixel(image_size, visual_field_deg)
    return out


# ---------------------------------------------------------------------------------------------
# Size versus eccentricity
# ---------------------------------------------------------------------------------------------


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y = intercept + slope · x`` over finite pairs; (nan, nan) if < 2."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return float(intercept), float(slope)


def compare_sizes(ecc_a: np.ndarray, size_a: np.ndarray, ecc_b: np.ndarray,
                  size_b: np.ndarray, n_bins: int = 4) -> dict:
    """Is area B's pRF size above area A's at matched eccentricity?

    Eccentricity bins are quantiles of the range both areas cover; in each bin the median
    sizes are compared. Lines ``size = intercept + slope · ecc`` are fitted per area.

    Parameters
    ----------
    ecc_a, size_a : ndarray of shape (n_a,)
    ecc_b, size_b : ndarray of shape (n_b,)

    Returns
    -------
    dict
        ``bin_edges`` (n_bins+1,), ``median_a``, ``median_b``, ``n_a``, ``n_b`` (n_bins,),
        ``frac_bins_b_larger`` (over bins with voxels of both), ``line_a``, ``line_b``
        (intercept, slope) and ``b_larger_everywhere`` (bool).
    """
    ea, sa = np.asarray(ecc_a, float), np.asarray(size_a, float)
    eb, sb = np.asarray(ecc_b, float), np.asarray(size_b, float)
    ka, kb = np.isfinite(ea) & np.isfinite(sa), np.isfinite(eb) & np.isfinite(sb)
    ea, sa, eb, sb = ea[ka], sa[ka], eb[kb], sb[kb]
    lo = max(ea.min(initial=np.inf), eb.min(initial=np.inf))
    hi = min(ea.max(initial=-np.inf), eb.max(initial=-np.inf))
    out: dict = {"line_a": fit_line(ea, sa), "line_b": fit_line(eb, sb)}
    if not lo < hi:
        out.update(bin_edges=np.array([]), median_a=np.array([]), median_b=np.array([]),
                   n_a=np.array([], int), n_b=np.array([], int), frac_bins_b_larger=None,
                   b_larger_everywhere=False)
        return out
    pooled = np.concatenate([ea[(ea >= lo) & (ea <= hi)], eb[(eb >= lo) & (eb <= hi)]])
    edges = np.quantile(pooled, np.linspace(0, 1, n_bins + 1))
    med_a, med_b, n_a, n_b = [], [], [], []
    for i in range(n_bins):
        last = i == n_bins - 1
        ia = (ea >= edges[i]) & ((ea <= edges[i + 1]) if last else (ea < edges[i + 1]))
        ib = (eb >= edges[i]) & ((eb <= edges[i + 1]) if last else (eb < edges[i + 1]))
        n_a.append(int(ia.sum()))
        n_b.append(int(ib.sum()))
        med_a.append(float(np.median(sa[ia])) if ia.any() else np.nan)
        med_b.append(float(np.median(sb[ib])) if ib.any() else np.nan)
    med_a, med_b = np.array(med_a), np.array(med_b)
    both = np.isfinite(med_a) & np.isfinite(med_b)
    frac = float((med_b[both] > med_a[both]).mean()) if both.any() else None
    out.update(bin_edges=edges, median_a=med_a, median_b=med_b, n_a=np.array(n_a),
               n_b=np.array(n_b), frac_bins_b_larger=frac,
               b_larger_everywhere=bool(both.any() and frac == 1.0))
    return out


# ---------------------------------------------------------------------------------------------
# Information flow between areas
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# In-silico experiments
# ---------------------------------------------------------------------------------------------


def ensemble_receptive_fields(fitted: FittedModel, area: str) -> dict[str, np.ndarray]:
    """Readout pRF centre and size (stimulus pixels), the median over the ensemble.

    With standard errors of the sizes (``fitted.size_se``, Gaussian readouts) ``prf_sigma``
    is the posterior mean under the area's eccentricity prior
    (:func:`niflow.interpret.sizes.shrink_log_sigma`) and ``prf_sigma_fit`` the fitted size.

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``prf_x``, ``prf_y``, ``prf_sigma`` (and ``prf_sigma_fit``).
    """
    fits = [readout_prf(m, area) for m in fitted.ensemble]
    out = {k: np.median([f[k] for f in fits], axis=0) for k in fits[0]}
    if area in fitted.size_se and "log_sigma" in out:
        ecc = visual_field_coordinates(out["prf_x"], out["prf_y"],
                                       tuple(fitted.model.image_shape[1:]))["eccentricity"]
        post, _ = shrink_log_sigma(out["log_sigma"], fitted.size_se[area], ecc)
        out["prf_sigma_fit"] = out["prf_sigma"]
        out["prf_sigma"] = grid_sigma_to_pixels(SIGMA_MIN + np.exp(post),
                                                fitted.model.geometry(area).scale)
    out.pop("log_sigma", None)
    return out
