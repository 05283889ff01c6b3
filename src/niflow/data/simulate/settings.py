"""Knobs of the simulated visual cortex (:class:`SimConfig`) and harder presets of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["AREAS", "DEFAULT_N_VOXELS", "SimConfig", "harder_configs", "junction_pairs"]

AREAS: tuple[str, ...] = ("V1", "V2", "V3")
DEFAULT_N_VOXELS: dict[str, int] = {"V1": 800, "V2": 600}

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
    v3_sigma_factor, v3_blur_sigma, n_v3_features : float, float, int
        V3 (simulated only when asked for, and only with V2): ``n_v3_features`` signed
        mixtures of V2's maps blurred by ``v3_blur_sigma`` px (two V2 features excitatory,
        the rest inhibitory: conjunctions), thresholded at ``v2_threshold_quantile`` and
        pooled under pRFs ``v3_sigma_factor`` times V1's law.
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
    v3_sigma_factor: float = 3.5
    v3_blur_sigma: float = 3.0
    n_v3_features: int = 8

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


def junction_pairs(n_orientations: int) -> list[tuple[int, int]]:
    """Orientation index pairs at least 45 deg apart (those that make corners and crossings)."""
    pairs = []
    for i in range(n_orientations):
        for j in range(i + 1, n_orientations):
            d = min(j - i, n_orientations - (j - i)) * 180.0 / n_orientations
            if d >= 45.0 - 1e-9:
                pairs.append((i, j))
    return pairs
