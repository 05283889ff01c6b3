"""The ground-truth visual cortex: voxel parameters, pooling, noise.

V1 voxels pool the V1 feature maps (oriented energy, optionally normalised and sparsified;
:mod:`niflow.data.simulate.features`) under an isotropic Gaussian population receptive
field (pRF) whose size follows an eccentricity law; V2 voxels pool a second nonlinear stage
under larger pRFs, and V3 voxels (on request) a third, of V2's maps, under larger ones
still. Each voxel has a known reliability (expected correlation between two
repeats). Coordinates are stimulus pixels: ``x`` is the column, ``y`` the row, the centre of
the top-left pixel is ``(0, 0)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from niflow.data.simulate.features import FeatureStages, as_unit_float, v2_mixing, v3_mixing
from niflow.data.simulate.settings import AREAS, DEFAULT_N_VOXELS, SimConfig, harder_configs

__all__ = [
    "AREAS",
    "DEFAULT_N_VOXELS",
    "SimConfig",
    "Simulation",
    "gaussian_maps",
    "harder_configs",
    "simulate_responses",
]


# Independent random streams: glyphs use ``default_rng(seed)``; each area of the response
# simulation uses ``default_rng([seed, _RESPONSE_STREAM, area_index])`` so that changing the
# number of voxels of one area leaves the other area's voxels unchanged.
_RESPONSE_STREAM = 7919

# Bound on the float32 feature maps held at once (elements), keeps memory ~< 100 MB.
_MAX_CHUNK_ELEMENTS = 24_000_000




@dataclass
class Simulation:
    """Stimuli, simulated responses and the ground truth that generated them.

    Attributes
    ----------
    stim : ndarray of shape (n_samples, height, width)
        The stimuli as given (uint8 0-255 for glyphs).
    labels : ndarray of shape (n_samples,), int, or None
        Letter index of each stimulus, if known.
    responses : dict of str to ndarray of shape (n_samples, n_voxels), float32
        Mean over repeats, per area.
    repeats : dict of str to ndarray of shape (n_repeats, n_samples, n_voxels), float32
        Individual noisy repeats.
    signal : dict of str to ndarray of shape (n_samples, n_voxels), float32
        Noise-free signal, z-scored per voxel across samples (each repeat is this plus
        independent noise).
    truth : dict of str to dict of str to ndarray
        Per area: ``prf_x``, ``prf_y``, ``prf_sigma``, ``eccentricity``, ``reliability``
        (each of shape (n_voxels,); pixel coordinates, x = column, y = row), and
        ``feature_weights`` of shape (n_voxels, n_features). V2 also holds the second stage:
        ``feature_threshold`` (n_v2_channels,) and, in mixing mode, ``feature_mixing``
        (n_v2_features, n_orientations); a normalised V1 holds its ``feature_threshold``
        (n_v1_features,).
    config : SimConfig
    seed : int
    """

    stim: np.ndarray
    labels: np.ndarray | None
    responses: dict[str, np.ndarray]
    repeats: dict[str, np.ndarray]
    signal: dict[str, np.ndarray]
    truth: dict[str, dict[str, np.ndarray]]
    config: SimConfig = field(default_factory=SimConfig)
    seed: int = 0

    @property
    def areas(self) -> list[str]:
        return list(self.responses)




def _draw_prfs(
    rng: np.random.Generator, n_vox: int, h: int, w: int, cfg: SimConfig, factor: float
) -> dict[str, NDArray[np.float64]]:
    cx, cy = (w - 1) / 2, (h - 1) / 2
    radius = cfg.prf_radius_frac * min(h, w)
    r = radius * np.sqrt(rng.uniform(0.0, 1.0, n_vox))  # sqrt: uniform density over the disc
    phi = rng.uniform(0.0, 2 * np.pi, n_vox)
    x = cx + r * np.cos(phi)
    y = cy + r * np.sin(phi)
    ecc = np.hypot(x - cx, y - cy)
    # Only non-default laws touch the arithmetic or the stream: the default stays bit-identical.
    grow = ecc if cfg.v1_sigma_exponent == 1.0 else ecc**cfg.v1_sigma_exponent
    sigma = factor * (cfg.v1_sigma_intercept + cfg.v1_sigma_slope * grow)
    if cfg.prf_sigma_scatter > 0:
        sigma = sigma * np.exp(cfg.prf_sigma_scatter * rng.standard_normal(n_vox))
    return {"prf_x": x, "prf_y": y, "prf_sigma": sigma, "eccentricity": ecc}


def _draw_reliability(rng: np.random.Generator, n_vox: int, cfg: SimConfig) -> NDArray:
    lo, hi = cfg.reliability_range
    if cfg.reliability_distribution == "beta":
        return lo + (hi - lo) * rng.beta(*cfg.reliability_beta, n_vox)
    return rng.uniform(lo, hi, n_vox)


def gaussian_maps(prf: Mapping[str, np.ndarray], h: int, w: int) -> NDArray[np.float32]:
    """pRF weight maps (n_vox, h*w), normalised to sum 1 over the infinite pixel plane.

    The analytic normalisation (rather than summing over the image) means voxels near the
    border are not up-weighted for the part of their pRF that falls off the image.
    """
    sig = prf["prf_sigma"][:, None]
    gx = np.exp(-((np.arange(w)[None, :] - prf["prf_x"][:, None]) ** 2) / (2 * sig**2))
    gy = np.exp(-((np.arange(h)[None, :] - prf["prf_y"][:, None]) ** 2) / (2 * sig**2))
    g = (gy[:, :, None] * gx[:, None, :]) / (2 * np.pi * sig[:, :, None] ** 2)
    # Flush the far tails to exact zero: float32 subnormals there slow the BLAS product ~50x,
    # and weights below 1e-12 of the peak change nothing.
    g[g < 1e-12 * g.max(axis=(1, 2), keepdims=True)] = 0.0
    return g.reshape(len(sig), h * w).astype(np.float32)


def _pool(
    maps: NDArray[np.float32], gauss: NDArray[np.float32], weights: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Voxel drives (n, n_vox) = sum_f weights[v, f] * <gauss[v], maps[:, f]>.

    One matrix product of the flattened maps (n*F, h*w) with the pRF maps (h*w, n_vox):
    memory scales with n*F*n_vox, never with n_vox*h*w*n.
    """
    n, f, h, w = maps.shape
    pooled = (maps.reshape(n * f, h * w) @ gauss.T).reshape(n, f, -1)
    return np.einsum("nfv,vf->nv", pooled.astype(np.float64), weights)


def _draw_truth(
    rng: np.random.Generator, area: str, n_vox: int, h: int, w: int, cfg: SimConfig
) -> dict[str, np.ndarray]:
    """pRFs, feature weights, reliabilities (and V2 mixing) of one area, in a fixed order."""
    n_feat = {"V1": cfg.n_v1_features, "V2": cfg.n_v2_channels, "V3": cfg.n_v3_features}
    factor = {"V1": 1.0, "V2": cfg.v2_sigma_factor, "V3": cfg.v3_sigma_factor}
    t = _draw_prfs(rng, n_vox, h, w, cfg, factor[area])
    t["feature_weights"] = rng.dirichlet(np.full(n_feat[area], cfg.dirichlet_concentration),
                                         n_vox)
    t["reliability"] = _draw_reliability(rng, n_vox, cfg)
    if area == "V2" and cfg.v2_mode == "mixing":
        t["feature_mixing"] = v2_mixing(cfg, rng)
    if area == "V3":
        t["feature_mixing"] = v3_mixing(cfg, rng)
    return t


def _chunk_size(cfg: SimConfig, areas: list[str], h: int, w: int) -> int:
    """Images per pass so the feature maps held at once stay near ``_MAX_CHUNK_ELEMENTS``."""
    n_feat = {"V1": cfg.n_v1_features, "V2": cfg.n_v2_channels, "V3": cfg.n_v3_features}
    n_feat = {a: n for a, n in n_feat.items() if a != "V3" or a in areas}
    load = max(n_feat.values())
    if cfg.v1_nonlinearity != "energy" or cfg.v2_mode != "mixing":
        # These stages hold energy, normalised and output maps of both areas at once.
        load = 2 * cfg.n_v1_features + sum(n_feat[a] for a in areas)
    return max(1, _MAX_CHUNK_ELEMENTS // (load * h * w))


def _noisy(
    drive: NDArray[np.float64], peak: float, rho: NDArray[np.float64], cfg: SimConfig,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Signal (n, n_vox) z-scored per voxel and repeats (n_repeats, n, n_vox) of one area."""
    d = np.maximum(drive, 0.0) ** cfg.output_exponent
    sd = d.std(axis=0)
    # A voxel that sees no stimulus energy (only float32 FFT round-off, ~1e-7 of the peak)
    # stays flat (signal 0, responses pure noise) instead of having round-off z-scored
    # into a fake signal.
    flat = sd <= 1e-5 * peak**cfg.output_exponent
    z = (d - d.mean(axis=0)) / np.where(flat, np.inf, sd)
    noise_sd = np.sqrt((1.0 - rho) / rho)
    noise = rng.standard_normal((cfg.n_repeats, *z.shape)) * noise_sd
    return z.astype(np.float32), (z[None] + noise).astype(np.float32)


def simulate_responses(
    stim: ArrayLike,
    n_voxels: Mapping[str, int] | None = None,
    seed: int = 0,
    config: SimConfig | None = None,
    labels: ArrayLike | None = None,
) -> Simulation:
    """Simulate V1 and V2 voxel responses to arbitrary stimuli.

    Parameters
    ----------
    stim : array_like of shape (n_samples, height, width)
        uint8/integer stimuli in 0-255, or float stimuli in [0, 1] (float arrays whose
        maximum exceeds 1 are read as 0-255). Bright = ink.
    n_voxels : dict of str to int, optional
        Voxels per area; keys are a subset of ``("V1", "V2", "V3")`` (V3 only with V2).
        Default ``{"V1": 800, "V2": 600}``.
    seed : int
        Random seed for voxel parameters and noise.
    config : SimConfig, optional
        Model knobs; default ``SimConfig()``.
    labels : array_like of shape (n_samples,), optional
        Stored in the result unchanged.

    Returns
    -------
    Simulation
        See :class:`Simulation`. Output is a deterministic function of the arguments. Stage
        thresholds depend on the stimulus set (a quantile over up to 64 of its images).

    Notes
    -----
    Default V1 feature ``f = (orientation, wavelength)`` is the local energy
    ``E_f = |I * g_f|`` of a quadrature Gabor pair. A V1 voxel's drive is
    ``sum_f w_f sum_{y,x} G(y, x) E_f(y, x)`` with ``G`` its Gaussian pRF. Default V2
    features are ``relu(sum_o M_jo * blur(sum_k E_{o,k}) - theta_j)``, pooled the same way
    under a pRF ``v2_sigma_factor`` times larger (other stages: :class:`SimConfig`). The
    drive (non-negative) is raised to ``output_exponent`` and z-scored per voxel; repeat
    ``r`` is that signal plus Gaussian noise of variance ``(1 - rho) / rho`` so two repeats
    correlate with expectation ``rho`` (the voxel's reliability).
    """
    cfg = config if config is not None else SimConfig()
    n_voxels = dict(DEFAULT_N_VOXELS if n_voxels is None else n_voxels)
    unknown = sorted(set(n_voxels) - set(AREAS))
    if unknown:
        raise ValueError(f"unknown areas {unknown}; supported: {list(AREAS)}")
    areas = [a for a in AREAS if a in n_voxels]
    if "V3" in areas and "V2" not in areas:
        raise ValueError("V3 pools V2's features: simulate V2 voxels too")
    x = as_unit_float(stim)
    n, h, w = x.shape
    if n < 1:
        raise ValueError("need at least one stimulus")

    rngs = {a: np.random.default_rng([seed, _RESPONSE_STREAM, AREAS.index(a)]) for a in areas}
    truth = {a: _draw_truth(rngs[a], a, int(n_voxels[a]), h, w, cfg) for a in areas}
    gauss = {a: gaussian_maps(truth[a], h, w) for a in areas}
    stages = FeatureStages(cfg, x, truth.get("V2", {}).get("feature_mixing"), tuple(areas),
                           truth.get("V3", {}).get("feature_mixing"))
    for a, thr in stages.threshold.items():
        if a in truth:
            truth[a]["feature_threshold"] = thr

    drive = {a: np.empty((n, int(n_voxels[a]))) for a in areas}
    # Largest feature value each area pools: the scale against which a voxel counts as flat.
    peak = dict.fromkeys(areas, 0.0)
    chunk = _chunk_size(cfg, areas, h, w)
    for i0 in range(0, n, chunk):
        sl = slice(i0, min(n, i0 + chunk))
        for a, maps in stages(x[sl]).items():
            peak[a] = max(peak[a], float(maps.max()))
            drive[a][sl] = _pool(maps, gauss[a], truth[a]["feature_weights"])

    signal, repeats = {}, {}
    for a in areas:
        signal[a], repeats[a] = _noisy(drive[a], peak[a], truth[a]["reliability"], cfg, rngs[a])
    return Simulation(
        stim=np.asarray(stim),
        labels=None if labels is None else np.asarray(labels),
        responses={a: repeats[a].mean(axis=0) for a in areas},
        repeats=repeats,
        signal=signal,
        truth=truth,
        config=cfg,
        seed=int(seed),
    )
