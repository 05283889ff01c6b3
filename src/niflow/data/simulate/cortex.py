"""The ground-truth visual cortex: voxel parameters, pooling, noise.

V1 voxels pool the V1 feature maps (oriented energy, optionally normalised and sparsified;
:mod:`niflow.data.simulate.features`) under an isotropic Gaussian population receptive
field (pRF) whose size follows an eccentricity law; V2 voxels pool a second nonlinear stage
under larger pRFs. Each voxel has a known reliability (expected correlation between two
repeats). Coordinates are stimulus pixels: ``x`` is the column, ``y`` the row, the centre of
the top-left pixel is ``(0, 0)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from niflow.data.simulate.features import (
    FeatureStages,
    as_unit_float,
    junction_pairs,
    v2_mixing,
)

__all__ = [
    "AREAS",
    "DEFAULT_N_VOXELS",
    "SimConfig",
    "Simulation",
    "harder_configs",
    "simulate_responses",
]

AREAS: tuple[str, ...] = ("V1", "V2")
DEFAULT_N_VOXELS: dict[str, int] = {"V1": 800, "V2": 600}

# Independent random streams: glyphs use ``default_rng(seed)``; each area of the response
# simulation uses ``default_rng([seed, _RESPONSE_STREAM, area_index])`` so that changing the
# number of voxels of one area leaves the other area's voxels unchanged.
_RESPONSE_STREAM = 7919

# Bound on the float32 feature maps held at once (elements), keeps memory ~< 100 MB.
_MAX_CHUNK_ELEMENTS = 24_000_000

_CHOICES = {
    "reliability_distribution": ("uniform", "beta"),
    "v1_nonlinearity": ("energy", "normalized"),
    "v2_mode": ("mixing", "endstop"),
}


@dataclass
class SimConfig:
    """Knobs of the simulated visual cortex. The defaults give the default simulation.

    Attributes
    ----------
    n_orientations : int
        Number of Gabor orientations (evenly spaced over 180 deg).
    wavelengths : tuple of float
        Gabor wavelengths in pixels (>= 2). V1 has ``n_orientations * len(wavelengths)``
        feature channels, ordered orientation-major (``channel = o * len(wavelengths) + k``).
    gabor_sigma_frac : float
        Gabor envelope standard deviation as a fraction of its wavelength (kernels are cut at
        3 sd: 4-16 px wavelengths at 0.5 give radii 6-24 px).
    v1_sigma_intercept, v1_sigma_slope, v1_sigma_exponent : float
        V1 pRF size law ``sigma = intercept + slope * eccentricity ** exponent`` (pixels);
        ``slope = 0`` makes it constant.
    prf_sigma_scatter : float
        Standard deviation of a per-voxel log-normal factor on sigma (0: sizes fixed by
        eccentricity), drawn independently per area.
    v2_sigma_factor : float
        V2 pRF sigma is this factor times V1's law at the same eccentricity.
    prf_radius_frac : float
        pRF centres are uniform over a disc of radius ``prf_radius_frac * min(h, w)`` around
        the image centre.
    dirichlet_concentration : float
        Concentration of the symmetric Dirichlet prior of each voxel's feature weights
        (small: voxels dominated by one feature; large: near-uniform weights).
    output_exponent : float
        Static output nonlinearity ``drive ** output_exponent`` on the non-negative drive.
    v1_nonlinearity : {"energy", "normalized"}
        ``"energy"``: V1 features are the Gabor energies. ``"normalized"``: each energy is
        divided by ``sigma + G * mean_f E_f`` (``G`` a Gaussian of ``v1_norm_pool_sigma`` px,
        ``sigma = v1_norm_sigma`` times the mean energy), then ``relu(N - theta) **
        v1_power`` with ``theta`` the ``v1_threshold_quantile`` of each channel: a sparse,
        heavy-tailed V1 read linearly through the pRF.
    v1_norm_sigma, v1_norm_pool_sigma, v1_threshold_quantile, v1_power : float
        See ``v1_nonlinearity``.
    v2_mode : {"mixing", "endstop"}
        ``"mixing"``: ``n_v2_features`` signed mixtures of blurred per-orientation V1 maps.
        ``"endstop"``: end-stopping maps (``relu(A_o(p) - gain A_o(p +- d u_o))``, two per
        orientation) and junction maps (``relu(min(A_o1, A_o2) - mean_o A_o)``, orientations
        >= 45 deg apart) of the (normalised, if so configured) V1 energies, divisively
        normalised; ``n_v2_features`` is then unused.
    v2_endstop_distance, v2_endstop_gain : float
        Displacement ``d`` (pixels) along the preferred orientation and inhibition gain.
    v2_norm_pool_sigma : float
        Endstop mode: each V2 map is divided by ``sigma`` plus the mean V1 map pooled over
        this many pixels (0: no V2 normalisation), ``sigma = v1_norm_sigma`` times its mean.
    v2_blur_sigma : float
        Gaussian blur (pixels) of the per-orientation V1 maps before the V2 stage.
    n_v2_features : int
        Number of V2 feature maps of the ``"mixing"`` mode.
    v2_threshold_quantile : float
        Each V2 threshold is this quantile of the feature's positive drive over (a subset of
        up to 64 of) the stimuli.
    reliability_distribution : {"uniform", "beta"}
        Per-voxel reliability (correlation between two repeats) is uniform in
        ``reliability_range``, or ``low + (high - low) * Beta(*reliability_beta)``.
    reliability_range : tuple of float
    reliability_beta : tuple of float
    n_repeats : int
        Number of noisy repeats per stimulus.
    """

    n_orientations: int = 4
    wavelengths: tuple[float, ...] = (5.0, 9.0)
    gabor_sigma_frac: float = 0.5
    v1_sigma_intercept: float = 1.5
    v1_sigma_slope: float = 0.08
    v2_sigma_factor: float = 2.0
    prf_radius_frac: float = 0.4
    dirichlet_concentration: float = 1.0
    output_exponent: float = 1.0
    v2_blur_sigma: float = 2.0
    n_v2_features: int = 8
    v2_threshold_quantile: float = 0.5
    reliability_range: tuple[float, float] = (0.5, 0.9)
    n_repeats: int = 2
    v1_sigma_exponent: float = 1.0
    prf_sigma_scatter: float = 0.0
    reliability_distribution: str = "uniform"
    reliability_beta: tuple[float, float] = (2.0, 5.0)
    v1_nonlinearity: str = "energy"
    v1_norm_sigma: float = 0.5
    v1_norm_pool_sigma: float = 4.0
    v1_threshold_quantile: float = 0.5
    v1_power: float = 2.0
    v2_mode: str = "mixing"
    v2_endstop_distance: float = 5.0
    v2_endstop_gain: float = 1.0
    v2_norm_pool_sigma: float = 4.0

    def __post_init__(self) -> None:
        # Tuples survive a JSON round trip as lists; normalise so equality still holds.
        self.wavelengths = tuple(float(w) for w in self.wavelengths)
        self.reliability_range = tuple(float(v) for v in self.reliability_range)
        self.reliability_beta = tuple(float(v) for v in self.reliability_beta)
        lo, hi = self.reliability_range
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError("reliability_range must satisfy 0 < low <= high <= 1")
        if min(self.reliability_beta) <= 0:
            raise ValueError("reliability_beta parameters must be > 0")
        if self.n_orientations < 1 or not self.wavelengths:
            raise ValueError("need at least one orientation and one wavelength")
        if min(self.wavelengths) < 2.0:
            raise ValueError("wavelengths below 2 px alias on the pixel grid")
        if self.n_repeats < 1:
            raise ValueError("n_repeats must be >= 1")
        if self.output_exponent <= 0 or self.v1_power <= 0:
            raise ValueError("output_exponent and v1_power must be > 0")
        if self.v1_sigma_intercept <= 0 or self.v1_sigma_slope < 0 or self.prf_sigma_scatter < 0:
            raise ValueError("need v1_sigma_intercept > 0, v1_sigma_slope >= 0, scatter >= 0")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def n_v1_features(self) -> int:
        return self.n_orientations * len(self.wavelengths)

    @property
    def n_v2_channels(self) -> int:
        """Number of V2 feature maps (``n_v2_features`` in mixing mode)."""
        if self.v2_mode == "endstop":
            return 2 * self.n_orientations + len(junction_pairs(self.n_orientations))
        return self.n_v2_features

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> SimConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def harder_configs() -> dict[str, SimConfig]:
    """Simulations harder than the default, with other receptive-field statistics.

    Tests and benchmarks use them to check that niflow is not tuned to its own default:
    ``compressive-large-rf`` (output exponent 0.5, σ = 3 + 0.15·ecc px, centres within 0.3
    of the image, sparse feature tuning) and ``noisy-small-rf`` (reliability 0.2–0.5,
    σ = 1 + 0.05·ecc px, 6 orientations × 3 wavelengths, exponent 0.7).
    """
    return {
        "compressive-large-rf": SimConfig(output_exponent=0.5, v1_sigma_intercept=3.0,
                                          v1_sigma_slope=0.15, prf_radius_frac=0.3,
                                          dirichlet_concentration=0.3),
        "noisy-small-rf": SimConfig(reliability_range=(0.2, 0.5), v1_sigma_intercept=1.0,
                                    v1_sigma_slope=0.05, n_orientations=6,
                                    wavelengths=(4.0, 7.0, 12.0), output_exponent=0.7),
    }


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


def _gaussian_maps(prf: Mapping[str, np.ndarray], h: int, w: int) -> NDArray[np.float32]:
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
    n_feat = cfg.n_v1_features if area == "V1" else cfg.n_v2_channels
    t = _draw_prfs(rng, n_vox, h, w, cfg, 1.0 if area == "V1" else cfg.v2_sigma_factor)
    t["feature_weights"] = rng.dirichlet(np.full(n_feat, cfg.dirichlet_concentration), n_vox)
    t["reliability"] = _draw_reliability(rng, n_vox, cfg)
    if area == "V2" and cfg.v2_mode == "mixing":
        t["feature_mixing"] = v2_mixing(cfg, rng)
    return t


def _chunk_size(cfg: SimConfig, areas: list[str], h: int, w: int) -> int:
    """Images per pass so the feature maps held at once stay near ``_MAX_CHUNK_ELEMENTS``."""
    n_feat = {"V1": cfg.n_v1_features, "V2": cfg.n_v2_channels}
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
        Voxels per area; keys are a subset of ``("V1", "V2")``. Default
        ``{"V1": 800, "V2": 600}``.
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
    x = as_unit_float(stim)
    n, h, w = x.shape
    if n < 1:
        raise ValueError("need at least one stimulus")

    rngs = {a: np.random.default_rng([seed, _RESPONSE_STREAM, AREAS.index(a)]) for a in areas}
    truth = {a: _draw_truth(rngs[a], a, int(n_voxels[a]), h, w, cfg) for a in areas}
    gauss = {a: _gaussian_maps(truth[a], h, w) for a in areas}
    stages = FeatureStages(cfg, x, truth.get("V2", {}).get("feature_mixing"), tuple(areas))
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
