"""What a trained model has learned: receptive fields, information flow, in-silico tuning.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from niflow.config import STIMULUS
from niflow.model import NIFModel

if TYPE_CHECKING:  # annotations only: torch loads lazily here, run.py imports this module
    import torch

    from niflow.run import Run

# A tenth of the peak: on simulations with known pRFs the centre of mass of this region is
# about twice as close to the true centre as that of the half-maximum region (the learned
# maps are a few grid cells wide, so a half-maximum region is one or two cells and its
# centre snaps to the grid).
CENTRE_THRESHOLD = 0.1
SIZE_THRESHOLD = 0.25
LOBE_THRESHOLD = 0.25
LOBE_MIN_SHARE = 0.2
# bounds on the arrays of the in-silico analyses (values held at once, voxels per pass)
MAX_FIT_VALUES = 20_000_000
PROBE_VOXELS_PER_PASS = 2000


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


def receptive_fields(model: NIFModel, area: str, visual_field_deg: float | None = None,
                     ) -> dict[str, np.ndarray]:
    """Readout pRFs of one area of a model, in stimulus pixels (and degrees if given).

    Returns :func:`prf_parameters` (``prf_x``, ``prf_y``, ``prf_sigma`` and more), each
    ndarray of shape (n_voxels,).
    """
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


def _source_channels(model: NIFModel, target: str) -> dict[str, slice]:
    """Input-channel block of each source in the target's convolution (config order)."""
    area = model.graph.areas[target]
    blocks, start = {}, 0
    for s in area.cfg.sources:
        c = model.graph.geometries[s].channels
        blocks[s] = slice(start, start + c)
        start += c
    return blocks


def _forward_ablated(model: NIFModel, x: torch.Tensor, target: str, source: str | None,
                     replacement: Callable[[torch.Tensor], torch.Tensor] | None,
                     ) -> torch.Tensor:
    """Target area's readout with one source's input replaced (``None``: intact).

    ``x`` is a batch of scaled stimuli (B, c, h, w); ``replacement(tensor)`` returns what the
    target sees instead of that source's feature tensor. Areas are called directly, in graph
    order, up to the target (areas after it cannot change its response).
    """
    feats = {STIMULUS: model.standardize(x)}
    for name, area in model.graph.areas.items():
        inputs = [feats[s] for s in area.cfg.sources]
        if name == target and source is not None:
            inputs = [replacement(t) if s == source else t
                      for s, t in zip(area.cfg.sources, inputs, strict=True)]
        feats[name] = area(inputs)
        if name == target:
            break
    return model.readouts[target](feats[target])


def _feature_batches(model: NIFModel, stim: np.ndarray, batch: int,
                     ) -> Iterator[dict[str, torch.Tensor]]:
    """Feature tensors of the standardised stimulus and every area, batch by batch."""
    import torch

    with torch.no_grad():
        for i in range(0, len(stim), batch):
            yield model.features(torch.as_tensor(stim[i:i + batch]), include_stimulus=True)


def _source_means(model: NIFModel, stim: np.ndarray, batch: int = 128,
                  ) -> dict[str, torch.Tensor]:
    """Mean feature tensor (C, H, W) of the stimulus and of every area over ``stim``."""
    sums: dict[str, torch.Tensor] = {}
    for feats in _feature_batches(model, stim, batch):
        for k, v in feats.items():
            sums[k] = sums.get(k, 0) + v.sum(0)
    return {k: v / len(stim) for k, v in sums.items()}


@dataclass
class FlowResult:
    """Source ablations of one target area.

    Attributes
    ----------
    target, source : str
    r_full : ndarray of shape (n_voxels,)
        Held-out r of the intact model.
    r_zero, r_mean : ndarray of shape (n_voxels,)
        Held-out r with the source's input to the target set to zero, or to its mean
        feature tensor over the reference (training) stimuli.
    weight_norm : float
        Frobenius norm of the target convolution's weights from this source.
    weight_share : float
        That block's share of the squared norm of all the target's input weights.
    effective_share : float
        The same share after scaling each input channel's weights by the channel's standard
        deviation over the reference stimuli (weights on a quiet channel matter less).
    channel_norms : ndarray of shape (C_target, C_source)
        L2 norm of each output-channel × input-channel kernel.
    """

    target: str
    source: str
    r_full: np.ndarray
    r_zero: np.ndarray
    r_mean: np.ndarray
    weight_norm: float
    weight_share: float
    effective_share: float
    channel_norms: np.ndarray

    def row(self) -> dict:
        """One summary row for ``flow.csv``."""
        med = np.nanmedian
        return {"target": self.target, "source": self.source, "n_voxels": len(self.r_full),
                "median_r": float(med(self.r_full)),
                "median_r_zero": float(med(self.r_zero)),
                "median_r_mean": float(med(self.r_mean)),
                "median_drop_zero": float(med(self.r_full - self.r_zero)),
                "median_drop_mean": float(med(self.r_full - self.r_mean)),
                "weight_norm": self.weight_norm, "weight_share": self.weight_share,
                "effective_weight_share": self.effective_share}


def connection_weights(model: NIFModel, target: str,
                       channel_std: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Channel-to-channel weight norms of a target area's convolution, per source.

    Parameters
    ----------
    channel_std : dict of str to ndarray of shape (C_source,), optional
        Standard deviation of each source channel's activity; gives ``effective_share``.

    Returns
    -------
    dict of source to {"channel_norms": ndarray (C_target, C_source), "norm": float,
    "share": float, "effective_share": float (NaN without ``channel_std``)}
    """
    w = model.graph.areas[target].kernel_weights().detach().cpu().numpy().astype(np.float64)
    norms = np.sqrt((w ** 2).sum((2, 3)))  # (C_out, C_in)
    blocks = _source_channels(model, target)
    total = float((norms ** 2).sum())
    eff = {s: (norms[:, b] * channel_std[s][None, :]) if channel_std is not None else None
           for s, b in blocks.items()}
    eff_total = (sum(float((e ** 2).sum()) for e in eff.values())
                 if channel_std is not None else float("nan"))
    out = {}
    for s, b in blocks.items():
        block = norms[:, b]
        sq = float((block ** 2).sum())
        out[s] = {"channel_norms": block, "norm": math.sqrt(sq),
                  "share": sq / total if total > 0 else float("nan"),
                  "effective_share": (float((eff[s] ** 2).sum()) / eff_total
                                      if channel_std is not None and eff_total > 0
                                      else float("nan"))}
    return out


def information_flow(model: NIFModel, stim: np.ndarray, true: dict[str, np.ndarray],
                     reference_stim: np.ndarray | None = None, batch: int = 128,
                     ) -> list[FlowResult]:
    """Ablate each source of each area with voxels and score the target on held-out rows.

    Parameters
    ----------
    model : NIFModel
    stim : ndarray of shape (n_rows, channels, height, width)
        Scaled stimuli of the scored rows (as the model was trained on).
    true : dict of str to ndarray of shape (n_rows, n_voxels)
        Measured responses of those rows per area (any affine scale: r is used).
    reference_stim : ndarray of shape (n_ref, channels, height, width), optional
        Stimuli whose mean feature tensors replace an ablated source in the "mean" mode and
        whose channel activity scales the weights (the training rows; default ``stim``).

    Returns
    -------
    list of FlowResult, one per (target, source) edge, in graph order.
    """
    import torch

    from niflow.evaluate import pearson_r

    ref = stim if reference_stim is None else reference_stim
    was_training = model.training
    # evaluation mode before any forward pass: in training mode batch norm would use (and
    # update) batch statistics, changing the model it is meant to measure
    model.eval()
    results = []
    try:
        means = _source_means(model, ref, batch)
        std = _channel_std(model, ref, means, batch)
        with torch.no_grad():
            for target in model.areas_with_voxels:
                if target not in true:
                    continue
                sources = model.graph.areas[target].cfg.sources
                weights = connection_weights(model, target, std)
                x = torch.as_tensor(stim)

                def run(source, repl, target=target, x=x):
                    parts = [_forward_ablated(model, x[i:i + batch], target, source, repl)
                             for i in range(0, len(x), batch)]
                    return torch.cat(parts).cpu().numpy()

                r_full = pearson_r(run(None, None), true[target])
                for s in sources:
                    zero = run(s, torch.zeros_like)
                    mean = run(s, lambda t, m=means[s]: m.expand_as(t))
                    results.append(FlowResult(
                        target, s, r_full, pearson_r(zero, true[target]),
                        pearson_r(mean, true[target]), weights[s]["norm"],
                        weights[s]["share"], weights[s]["effective_share"],
                        weights[s]["channel_norms"]))
    finally:
        model.train(was_training)
    return results


def _channel_std(model: NIFModel, stim: np.ndarray, means: dict[str, torch.Tensor], batch: int,
                 ) -> dict[str, np.ndarray]:
    """Standard deviation of every channel of the stimulus and of each area over ``stim``
    and grid positions, as each is seen by its targets, shape (C,) per source."""
    sq: dict[str, torch.Tensor] = {}
    count = 0
    for feats in _feature_batches(model, stim, batch):
        for k, v in feats.items():
            sq[k] = sq.get(k, 0) + ((v - means[k]) ** 2).sum((0, 2, 3))
        count += len(feats[STIMULUS])
    out = {}
    for k, v in sq.items():
        cells = count * int(np.prod(means[k].shape[1:]))
        out[k] = np.sqrt(v.cpu().numpy().astype(np.float64) / max(cells, 1))
    return out


# ---------------------------------------------------------------------------------------------
# In-silico experiments
# ---------------------------------------------------------------------------------------------


def grating(image_size: tuple[int, int], orientation_deg: float, wavelength: float,
            phase: float = 0.0) -> np.ndarray:
    """Full-field sinusoidal grating in [0, 1] with stripes at ``orientation_deg``.

    Returns
    -------
    ndarray of shape (height, width), float64
    """
    h, w = image_size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = math.radians(orientation_deg)
    # the luminance varies along the stripes' normal; with y up and rows down, stripes at
    # angle t have normal (−sin t, cos t) in (x, y-up), i.e. x·sin t + row·cos t up to sign
    u = (xx - (w - 1) / 2) * math.sin(t) + (yy - (h - 1) / 2) * math.cos(t)
    return 0.5 + 0.5 * np.cos(2 * np.pi * u / wavelength + phase)


def bar_apertures(image_size: tuple[int, int], n_orientations: int = 4, step: float = 2.0,
                  width: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bar apertures of a pRF mapping sweep: bars at several orientations across the field.

    Each bar is a band of ``width`` px (default a tenth of the image width, at least 3)
    whose long axis has the given orientation, stepped by ``step`` px along its normal until
    it has crossed the whole image. Edges are anti-aliased.

    Returns
    -------
    apertures : ndarray of shape (n_bars, height, width), float in [0, 1]
    orientation : ndarray of shape (n_bars,)
        Long-axis orientation, degrees (y up).
    position : ndarray of shape (n_bars,)
        Signed distance of the bar's axis from the image centre, px.
    """
    h, w = image_size
    width = max(3.0, w / 10) if width is None else float(width)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy_up = xx - (w - 1) / 2, (h - 1) / 2 - yy
    reach = math.hypot(h, w) / 2 + width / 2
    positions = np.arange(-reach, reach + 1e-9, step)
    aps, oris, pos = [], [], []
    for k in range(n_orientations):
        t = math.radians(180.0 * k / n_orientations)
        dist = -dx * math.sin(t) + dy_up * math.cos(t)  # signed distance from the axis
        for p in positions:
            a = np.clip(width / 2 - np.abs(dist - p) + 0.5, 0.0, 1.0)
            if a.sum() < 0.5 * width:  # bar (almost) outside the image
                continue
            aps.append(a)
            oris.append(180.0 * k / n_orientations)
            pos.append(p)
    return np.array(aps), np.array(oris), np.array(pos)


def _carriers(image_size: tuple[int, int], wavelengths: tuple[float, ...]) -> np.ndarray:
    """Bar textures: gratings at 4 orientations × the wavelengths × 2 counter-phases, so
    that the average drive of a bar does not depend on a voxel's orientation preference."""
    out = [grating(image_size, o, lam, ph) for o in (0.0, 45.0, 90.0, 135.0)
           for lam in wavelengths for ph in (0.0, math.pi)]
    return np.array(out)


def _model_input(run: Run, images: np.ndarray) -> torch.Tensor:
    """Images in [0, 1] (n, h, w) → the model's input tensor (n, c, h, w) in training units."""
    import torch

    x = np.asarray(images, dtype=np.float32)
    if run.config.data.stim_scale == "none":
        # the model saw raw values: bring [0, 1] back to the training data's range
        x = x * np.float32(run.stim_peak if run.stim_peak is not None else 255.0)
    c = run.model.image_shape[0]
    return torch.as_tensor(np.repeat(x[:, None], c, axis=1))


def model_responses(run: Run, images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """The model's predicted responses (z units) to images in [0, 1].

    Parameters
    ----------
    run : niflow.Run
    images : ndarray of shape (n, height, width)
        Grey images, 0 = black background, 1 = white (the glyphs' polarity).

    Returns
    -------
    dict of str to ndarray of shape (n, n_voxels)
    """
    from niflow.train import predict

    return predict(run.model, _model_input(run, images), batch_size=batch)


def fit_gaussian_prf(apertures: np.ndarray, responses: np.ndarray,
                     sigmas: np.ndarray | None = None, step: float = 1.0,
                     ) -> dict[str, np.ndarray]:
    """Fit an isotropic 2-D Gaussian pRF to responses to stimulus apertures (grid search).

    The predicted response to aperture ``a`` is ``β · Σ_px A_a(px) · G(px) + b`` (linear
    spatial summation, as in standard pRF mapping); centres on a ``step``-px grid over the
    image and sizes in ``sigmas`` are searched for the highest correlation with positive
    gain, then the centre is refined to sub-pixel precision by a parabola through the
    correlations of the neighbouring grid centres.

    Parameters
    ----------
    apertures : ndarray of shape (n_apertures, height, width)
    responses : ndarray of shape (n_apertures, n_voxels)
    sigmas : ndarray of shape (n_sigmas,), optional
        Candidate sizes in px (default: 0.5 px to a third of the image, log-spaced).

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``prf_x``, ``prf_y``, ``prf_sigma`` (px) and ``fit_r`` (correlation of the best
        Gaussian's prediction with the responses; ≤ 0 means no positive fit).
    """
    apertures = np.asarray(apertures, dtype=np.float64)
    n_ap, h, w = apertures.shape
    if np.ndim(responses) != 2 or np.shape(responses)[0] != n_ap:
        raise ValueError(f"responses must have shape ({n_ap}, n_voxels), got "
                         f"{np.shape(responses)}")
    if sigmas is None:
        sigmas = np.geomspace(0.5, max(h, w) / 3, 20)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    # voxels per pass, so the (voxels, centres) correlations and the (apertures, rows,
    # voxels) overlaps stay near 20 million values
    n_centres = len(np.arange(0, h, step)) * len(np.arange(0, w, step))
    per_pass = max(1, MAX_FIT_VALUES // max(n_centres, n_ap * h))
    n_vox = np.shape(responses)[1]
    if n_vox > per_pass:
        parts = [_fit_gaussian_prf(apertures, np.asarray(responses[:, i:i + per_pass],
                                                          dtype=np.float64), sigmas, step)
                 for i in range(0, n_vox, per_pass)]
        return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    return _fit_gaussian_prf(apertures, np.asarray(responses, dtype=np.float64), sigmas, step)


def _fit_gaussian_prf(apertures: np.ndarray, resp: np.ndarray, sigmas: np.ndarray,
                      step: float) -> dict[str, np.ndarray]:
    """:func:`fit_gaussian_prf` for one batch of voxels (resp: (n_apertures, n_voxels))."""
    n_ap, h, w = apertures.shape
    ys, xs = np.arange(0, h, step, dtype=np.float64), np.arange(0, w, step, dtype=np.float64)
    rz = resp - resp.mean(0)
    rz /= np.where(np.linalg.norm(rz, axis=0) > 0, np.linalg.norm(rz, axis=0), 1.0)
    n_vox = resp.shape[1]
    best = np.full(n_vox, -np.inf)
    best_s = np.zeros(n_vox, dtype=np.int64)
    best_c = np.zeros(n_vox, dtype=np.int64)
    pix_y, pix_x = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    for si, s in enumerate(sigmas):
        corr = _gaussian_correlations(apertures, rz, xs, ys, pix_x, pix_y, s)
        arg = np.argmax(corr, axis=1)
        val = corr[np.arange(n_vox), arg]
        better = val > best
        best[better], best_s[better], best_c[better] = val[better], si, arg[better]
    px, py = xs[best_c % len(xs)], ys[best_c // len(xs)]
    # sub-grid refinement: recompute each winning size's correlation surface for its voxels
    for si in np.unique(best_s):
        vox = np.flatnonzero(best_s == si)
        corr = _gaussian_correlations(apertures, rz[:, vox], xs, ys, pix_x, pix_y, sigmas[si])
        surf = corr.reshape(len(vox), len(ys), len(xs))
        iy, ix = best_c[vox] // len(xs), best_c[vox] % len(xs)
        px[vox] += step * _parabola_offset(surf, iy, ix, axis=1)
        py[vox] += step * _parabola_offset(surf, iy, ix, axis=0)
    # size refinement: a parabola in log σ through the grid neighbours at the refined centre
    log_s = np.log(sigmas)
    sig = sigmas[best_s].copy()
    inner = (best_s > 0) & (best_s < len(sigmas) - 1)
    if inner.any():
        v = np.flatnonzero(inner)
        c = [_correlation_at(apertures, rz[:, v], px[v], py[v], sigmas[best_s[v] + k])
             for k in (-1, 0, 1)]
        x0, x1, x2 = (log_s[best_s[v] + k] for k in (-1, 0, 1))
        denom = c[0] - 2 * c[1] + c[2]
        with np.errstate(invalid="ignore", divide="ignore"):
            # the grid is uniform in log σ, so the vertex offset is in units of one step
            off = np.where(denom < 0, 0.5 * (c[0] - c[2]) / denom, 0.0)
        off = np.clip(off, -0.5, 0.5)
        sig[v] = np.exp(x1 + off * (x2 - x0) / 2)
    # goodness of fit of the final (refined) Gaussian
    fit_r = _correlation_at(apertures, rz, px, py, sig)
    return {"prf_x": px, "prf_y": py, "prf_sigma": sig, "fit_r": fit_r}


def _correlation_at(apertures: np.ndarray, rz: np.ndarray, x: np.ndarray, y: np.ndarray,
                    sigma: np.ndarray) -> np.ndarray:
    """Correlation of each voxel's (normalised) responses with the aperture overlap of its
    own Gaussian (centre ``x, y``, size ``sigma``, each of shape (n_voxels,))."""
    n_ap, h, w = apertures.shape
    gx = np.exp(-(np.arange(w)[None, :] - x[:, None]) ** 2 / (2 * sigma[:, None] ** 2))
    gy = np.exp(-(np.arange(h)[None, :] - y[:, None]) ** 2 / (2 * sigma[:, None] ** 2))
    overlap = np.einsum("ayx,vx->ayv", apertures, gx)
    overlap = np.einsum("ayv,vy->av", overlap, gy)
    overlap -= overlap.mean(0)
    norm = np.linalg.norm(overlap, axis=0)
    overlap /= np.where(norm > 0, norm, np.inf)
    return (overlap * rz).sum(0)


def _gaussian_correlations(apertures: np.ndarray, rz: np.ndarray, xs: np.ndarray,
                           ys: np.ndarray, pix_x: np.ndarray, pix_y: np.ndarray,
                           sigma: float) -> np.ndarray:
    """Correlation (n_voxels, n_centres) of each voxel's responses with the aperture overlap
    of a Gaussian of size ``sigma`` at every grid centre (row-major over (ys, xs))."""
    n_ap, h, w = apertures.shape
    gx = np.exp(-(pix_x[None, :] - xs[:, None]) ** 2 / (2 * sigma ** 2))  # (nx, w)
    gy = np.exp(-(pix_y[None, :] - ys[:, None]) ** 2 / (2 * sigma ** 2))  # (ny, h)
    # separable Gaussian: overlap[a, cy, cx] = Σ_y gy[cy, y] Σ_x A[a, y, x] gx[cx, x]
    tmp = apertures @ gx.T  # (a, h, nx)
    overlap = np.einsum("yh,ahx->ayx", gy, tmp).reshape(n_ap, -1)
    overlap -= overlap.mean(0)
    norm = np.linalg.norm(overlap, axis=0)
    overlap /= np.where(norm > 0, norm, np.inf)
    return rz.T @ overlap


def _parabola_offset(surf: np.ndarray, iy: np.ndarray, ix: np.ndarray, axis: int) -> np.ndarray:
    """Sub-grid offset (−0.5..0.5) of the maximum of a parabola through three neighbours."""
    n, ny, nx = surf.shape
    i = np.arange(n)
    if axis == 1:
        ok = (ix > 0) & (ix < nx - 1)
        a, b = np.clip(ix - 1, 0, nx - 1), np.clip(ix + 1, 0, nx - 1)
        left, mid, right = surf[i, iy, a], surf[i, iy, ix], surf[i, iy, b]
    else:
        ok = (iy > 0) & (iy < ny - 1)
        a, b = np.clip(iy - 1, 0, ny - 1), np.clip(iy + 1, 0, ny - 1)
        left, mid, right = surf[i, a, ix], surf[i, iy, ix], surf[i, b, ix]
    denom = left - 2 * mid + right
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(ok & (denom < 0), 0.5 * (left - right) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def orientation_tuning(responses: np.ndarray, orientations_deg: np.ndarray,
                       ) -> dict[str, np.ndarray]:
    """Preferred orientation, selectivity and bandwidth from responses to oriented stimuli.

    Responses are taken relative to each voxel's minimum over orientations; the preferred
    orientation is half the angle of the doubled-angle vector sum, the selectivity its
    length over the summed responses (0 = untuned, 1 = one orientation only) and the
    bandwidth the half-width at half-height of the tuning curve (trigonometric interpolation,
    periodic in 180°).

    Parameters
    ----------
    responses : ndarray of shape (n_orientations, n_voxels)
    orientations_deg : ndarray of shape (n_orientations,), evenly spaced over 180°

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``preferred_orientation`` (degrees in [0, 180)), ``orientation_selectivity``,
        ``orientation_bandwidth`` (degrees, HWHM).
    """
    r = np.asarray(responses, dtype=np.float64)
    r = r - r.min(0)
    theta = np.radians(np.asarray(orientations_deg, dtype=np.float64))
    vec = (r * np.exp(2j * theta)[:, None]).sum(0)
    total = r.sum(0)
    pref = (np.degrees(np.angle(vec)) / 2.0) % 180.0
    with np.errstate(invalid="ignore", divide="ignore"):
        sel = np.where(total > 0, np.abs(vec) / total, 0.0)
    # half-width at half-height on a fine periodic grid (0.5° steps, both flanks averaged);
    # trigonometric interpolation of the evenly spaced samples, which unlike linear
    # interpolation does not widen a peak that falls between two samples
    from scipy.signal import resample

    fine = resample(r, 360, axis=0) if r.shape[0] >= 3 else np.repeat(r, 360 // len(r), 0)
    bw = np.full(r.shape[1], np.nan)
    for v in range(r.shape[1]):
        c = fine[:, v]
        if c.max() <= 0:
            continue
        rolled = np.roll(c, -int(np.argmax(c)))  # peak at index 0, periodic both ways
        below = rolled < c.max() / 2
        if not below.any():  # never falls to half height: as broad as it gets
            bw[v] = 90.0
            continue
        right = int(np.argmax(below))
        left = int(np.argmax(below[::-1])) + 1
        bw[v] = 0.5 * (right + left) * 0.5
    return {"preferred_orientation": pref, "orientation_selectivity": sel,
            "orientation_bandwidth": bw}


def spatial_frequency_tuning(responses: np.ndarray, wavelengths: np.ndarray,
                             ) -> dict[str, np.ndarray]:
    """Preferred spatial frequency: peak of the response over log frequency (parabolic).

    Parameters
    ----------
    responses : ndarray of shape (n_wavelengths, n_voxels)
    wavelengths : ndarray of shape (n_wavelengths,), px per cycle, ascending or descending

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``preferred_sf`` (cycles per px) and ``preferred_wavelength`` (px).
    """
    lam = np.asarray(wavelengths, dtype=np.float64)
    order = np.argsort(1.0 / lam)  # ascending frequency
    logf = np.log(1.0 / lam[order])
    r = np.asarray(responses, dtype=np.float64)[order]
    k = np.argmax(r, axis=0)
    best = logf[k].copy()
    inner = (k > 0) & (k < len(lam) - 1)
    if inner.any() and len(lam) >= 3:
        v = np.flatnonzero(inner)
        x0, x1, x2 = logf[k[v] - 1], logf[k[v]], logf[k[v] + 1]
        y0, y1, y2 = r[k[v] - 1, v], r[k[v], v], r[k[v] + 1, v]
        # vertex of the parabola through three (unevenly spaced) points
        d = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / d
        b = (x2 ** 2 * (y0 - y1) + x1 ** 2 * (y2 - y0) + x0 ** 2 * (y1 - y2)) / d
        with np.errstate(invalid="ignore", divide="ignore"):
            vert = np.where(a < 0, -b / (2 * a), x1)
        best[v] = np.clip(vert, x0, x2)
    sf = np.exp(best)
    return {"preferred_sf": sf, "preferred_wavelength": 1.0 / sf}


@dataclass
class ProbeSettings:
    """Stimulus sets of :func:`probe`.

    Bars: ``bar_orientations`` orientations, ``bar_step`` px apart (default: the image width
    / 28, 2 px at 56 px), ``bar_width`` px (default a tenth of the image width), textured with
    gratings at ``carrier_wavelengths`` (default: a tenth and a fifth of the image width).
    Gratings: ``grating_orientations`` orientations over 180°, ``grating_wavelengths`` px
    (default: 3 px to a third of the image width, 7 log-spaced), ``grating_phases`` phases.
    """

    bar_orientations: int = 4
    bar_step: float | None = None
    bar_width: float | None = None
    carrier_wavelengths: tuple[float, ...] | None = None
    grating_orientations: int = 12
    grating_wavelengths: tuple[float, ...] | None = None
    grating_phases: int = 4


@dataclass
class ProbeStimuli:
    """The images of an in-silico experiment and what each one is.

    Attributes
    ----------
    images : ndarray of shape (n_images, height, width), float in [0, 1]
        Bars (every aperture × every texture), then one blank, then the gratings
        (orientation-major, then wavelength, then phase).
    apertures : ndarray of shape (n_bars, height, width)
    n_carriers : int
        Textures per bar.
    orientations : ndarray of shape (n_orientations,)
        Grating orientations, degrees.
    wavelengths : ndarray of shape (n_wavelengths,)
        Grating wavelengths, px per cycle.
    n_phases : int
    """

    images: np.ndarray
    apertures: np.ndarray
    n_carriers: int
    orientations: np.ndarray
    wavelengths: np.ndarray
    n_phases: int

    @property
    def n_bar_images(self) -> int:
        return len(self.apertures) * self.n_carriers


def probe_stimuli(image_size: tuple[int, int], settings: ProbeSettings | None = None,
                  ) -> ProbeStimuli:
    """Build the bar sweep and the gratings of :func:`probe` for an image size.

    The same images can be shown to any system (e.g. the simulator's ground-truth cortex)
    and analysed with :func:`analyse_probe`.
    """
    s = settings or ProbeSettings()
    h, w = image_size
    # the default step scales with the image (2 px at 56 px): the number of bars, and so
    # the cost, stays the same for larger stimuli
    step = s.bar_step if s.bar_step is not None else max(1.0, w / 28)
    apert, _, _ = bar_apertures((h, w), s.bar_orientations, step, s.bar_width)
    carriers = _carriers((h, w), tuple(s.carrier_wavelengths or (w / 10, w / 5)))
    bars = (apert[:, None] * carriers[None]).reshape(-1, h, w)
    lam = np.asarray(s.grating_wavelengths or np.geomspace(3.0, w / 3, 7), dtype=np.float64)
    oris = 180.0 * np.arange(s.grating_orientations) / s.grating_orientations
    phases = 2 * np.pi * np.arange(s.grating_phases) / s.grating_phases
    grats = np.array([grating((h, w), o, L, p) for o in oris for L in lam for p in phases])
    images = np.concatenate([bars, np.zeros((1, h, w)), grats]).astype(np.float32)
    return ProbeStimuli(images, apert, len(carriers), oris, lam, len(phases))


def analyse_probe(stimuli: ProbeStimuli, responses: np.ndarray,
                  visual_field_deg: float | None = None) -> dict[str, np.ndarray]:
    """pRFs and tuning from one area's responses to :func:`probe_stimuli`.

    Parameters
    ----------
    stimuli : ProbeStimuli
    responses : ndarray of shape (n_images, n_voxels)
        Responses to ``stimuli.images`` (any affine scale per voxel).

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,); see :func:`probe`.
    """
    n_bar = stimuli.n_bar_images
    if np.ndim(responses) != 2 or np.shape(responses)[0] != len(stimuli.images):
        raise ValueError(f"responses must have shape ({len(stimuli.images)}, n_voxels), "
                         f"got {np.shape(responses)}")
    n_all = np.shape(responses)[1]
    per_pass = PROBE_VOXELS_PER_PASS  # bounds the float64 copies of the responses
    if n_all > per_pass:
        parts = [analyse_probe(stimuli, responses[:, i:i + per_pass], visual_field_deg)
                 for i in range(0, n_all, per_pass)]
        return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    resp = np.asarray(responses, dtype=np.float64)
    h, w = stimuli.images.shape[1:]
    n_vox = resp.shape[1]
    # each bar's response averaged over its textures, relative to the blank screen
    bar = resp[:n_bar].reshape(len(stimuli.apertures), stimuli.n_carriers, n_vox).mean(1)
    prf = fit_gaussian_prf(stimuli.apertures, bar - resp[n_bar])
    oris, lam = stimuli.orientations, stimuli.wavelengths
    g = resp[n_bar + 1:].reshape(len(oris), len(lam), stimuli.n_phases, n_vox).mean(2)
    # tuning at the best grating: the orientation curve at the preferred wavelength and the
    # wavelength curve at the preferred orientation
    flat = g.reshape(-1, n_vox).argmax(0)
    bo, bl = flat // len(lam), flat % len(lam)
    vox = np.arange(n_vox)
    ori_curve = g[:, bl, vox]  # (n_orientations, n_voxels)
    sf_curve = g[bo, :, vox].T  # (n_wavelengths, n_voxels)
    out = {**prf, **orientation_tuning(ori_curve, oris),
           **spatial_frequency_tuning(sf_curve, lam), "bar_response_range": np.ptp(bar, axis=0)}
    out.update(visual_field_coordinates(prf["prf_x"], prf["prf_y"], (h, w), visual_field_deg))
    if visual_field_deg is not None:
        dpp = degrees_per_pixel((h, w), visual_field_deg)
        out["sigma_deg"] = prf["prf_sigma"] * dpp
        out["preferred_sf_cpd"] = out["preferred_sf"] / dpp
    return out


def probe(run: Run, settings: ProbeSettings | None = None, visual_field_deg: float | None = None,
          areas: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """In-silico experiments on a trained model: a bar sweep and oriented gratings.

    The bar sweep gives each voxel a pRF (:func:`fit_gaussian_prf` on the model's responses
    to textured bars, each bar's response averaged over its textures, minus the response to
    a blank screen); it measures the whole model (features and readout), so its size
    includes the spatial extent of the area's features, which the readout-map size does
    not. Gratings (orientations × wavelengths × phases, averaged over phase) give
    orientation and spatial-frequency tuning (:func:`orientation_tuning`,
    :func:`spatial_frequency_tuning`).

    Parameters
    ----------
    run : niflow.Run
    settings : ProbeSettings, optional
    visual_field_deg : float, optional
        Visual angle of the image width (default: the run's ``data.visual_field_deg``).
    areas : list of str, optional
        Default: every area with voxels.

    Returns
    -------
    dict of area to dict of str to ndarray of shape (n_voxels,)
        ``prf_x``, ``prf_y``, ``prf_sigma`` (px), ``fit_r``, ``eccentricity``,
        ``polar_angle``, ``preferred_orientation``, ``orientation_selectivity``,
        ``orientation_bandwidth``, ``preferred_sf`` (cycles/px), ``preferred_wavelength``
        (px), ``bar_response_range`` (z units: how strongly bars drive the voxel) and, with
        degrees, ``x_deg``, ``y_deg``, ``eccentricity_deg``, ``sigma_deg``,
        ``preferred_sf_cpd``.
    """
    vf = visual_field_deg if visual_field_deg is not None else getattr(
        run.config.data, "visual_field_deg", None)
    stimuli = probe_stimuli(tuple(run.model.image_shape[1:]), settings)
    resp = model_responses(run, stimuli.images)
    return {area: analyse_probe(stimuli, resp[area], vf)
            for area in (areas or run.model.areas_with_voxels)}
