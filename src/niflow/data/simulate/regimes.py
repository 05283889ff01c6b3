"""Named simulation regimes at realistic noise, for tests and the accuracy benchmark.

Every regime has median noise ceilings (of the mean of two repeats) of 0.4-0.6 in every area
with a per-voxel spread of reliabilities, like real fMRI, and varies the other knobs
(stimuli, orientations, wavelengths, Dirichlet concentration, output exponent, pRF size law
and radius, V1/V2 stages) so that no model can be tuned to one of them.

>>> sim, test_rows = make_regime("sparse-v1", seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from numpy.typing import NDArray

from niflow.data.simulate.cortex import Simulation, simulate_responses
from niflow.data.simulate.glyphs import make_glyphs
from niflow.data.simulate.settings import SimConfig
from niflow.data.simulate.stimuli import make_stimuli

__all__ = ["Regime", "brains_stim_path", "make_regime", "regime_stimuli", "regimes"]

# Random stream of the test-row draw, apart from the stimulus and response streams.
_SPLIT_STREAM = 6053
_N_VOXELS = {"V1": 1000, "V2": 800}


@dataclass(frozen=True)
class Regime:
    """One named simulation.

    Attributes
    ----------
    name, description : str
    stimuli : tuple of str
        ``("brains",)`` — the real BRAINS letters if the file is found (else synthetic
        glyphs in the same layout) — or stimulus families of
        :data:`~niflow.data.simulate.stimuli.STIMULUS_FAMILIES`, mixed evenly.
    n_images : int
        Number of stimuli (for ``"brains"``: as many as the file holds).
    config : SimConfig
    n_voxels : dict of str to int
    test_rule : {"last-20%", "random-20%", "none"}
        ``"last-20%"``: the BRAINS test part (rows 288:360 of 360); ``"random-20%"``: a
        seeded random fifth of the rows; ``"none"``: no held-out rows (use ``cv_folds``).
    cv_folds : int or None
        Number of cross-validation folds for small data sets, else None.
    """

    name: str
    description: str
    stimuli: tuple[str, ...]
    n_images: int
    config: SimConfig
    n_voxels: dict[str, int] = field(default_factory=lambda: dict(_N_VOXELS))
    test_rule: str = "random-20%"
    cv_folds: int | None = None


def _rel(lo: float, hi: float, beta: tuple[float, float] | None = None) -> dict:
    """Reliability knobs: uniform in [lo, hi], or lo + (hi - lo) * Beta(*beta)."""
    if beta is None:
        return {"reliability_range": (lo, hi)}
    return {"reliability_range": (lo, hi), "reliability_distribution": "beta",
            "reliability_beta": beta}


def _letters_noisy() -> Regime:
    return Regime("letters-noisy", "BRAINS letters, default cortex at realistic noise",
                  ("brains",), 360, SimConfig(**_rel(0.03, 0.30)), test_rule="last-20%")


def _sparse_v1() -> Regime:
    cfg = SimConfig(v1_nonlinearity="normalized", v1_threshold_quantile=0.6, v1_power=2.0,
                    n_orientations=6, wavelengths=(4.0, 7.0, 12.0), dirichlet_concentration=0.5,
                    v1_sigma_intercept=1.2, v1_sigma_slope=0.1, **_rel(0.02, 0.5, (2.0, 5.0)))
    return Regime("sparse-v1", "divisively normalised, thresholded, squared V1 (sparse, "
                  "heavy-tailed); letters", ("brains",), 360, cfg, test_rule="last-20%")


def _v2_endstop() -> Regime:
    cfg = SimConfig(v1_nonlinearity="normalized", v1_threshold_quantile=0.5, v1_power=1.5,
                    v2_mode="endstop", v2_threshold_quantile=0.8, n_orientations=4,
                    wavelengths=(4.5, 8.0), dirichlet_concentration=0.4, output_exponent=0.8,
                    prf_radius_frac=0.35, v2_sigma_factor=1.8, **_rel(0.04, 0.30))
    return Regime("v2-endstop", "V2 of normalised end-stopping and junction detectors on a "
                  "normalised V1; letters", ("brains",), 360, cfg, test_rule="last-20%")


def _wide_sf() -> Regime:
    cfg = SimConfig(wavelengths=(4.0, 6.3, 10.0, 16.0), gabor_sigma_frac=0.45, n_orientations=8,
                    dirichlet_concentration=2.0, output_exponent=0.7, v1_sigma_intercept=2.0,
                    v1_sigma_slope=0.1, **_rel(0.02, 0.40, (2.0, 3.0)))
    return Regime("wide-sf", "Gabor wavelengths 4-16 px, 8 orientations; band-pass textures",
                  ("textures",), 360, cfg)


def _ecc_laws() -> Regime:
    cfg = SimConfig(v1_sigma_intercept=0.8, v1_sigma_slope=0.45, v1_sigma_exponent=0.7,
                    prf_sigma_scatter=0.25, n_orientations=6, wavelengths=(4.0, 8.0),
                    output_exponent=0.5, dirichlet_concentration=0.7, prf_radius_frac=0.45,
                    v2_sigma_factor=2.2, **_rel(0.02, 0.20))
    return Regime("ecc-laws", "pRF size 0.8 + 0.45 ecc^0.7 with log-normal scatter (sd 0.25); "
                  "bars and gratings", ("bars",), 360, cfg)


def _natural_textures() -> Regime:
    cfg = SimConfig(v1_nonlinearity="normalized", v1_threshold_quantile=0.5, v1_power=2.0,
                    v2_mode="endstop", v2_threshold_quantile=0.7, v1_sigma_intercept=2.5,
                    v1_sigma_slope=0.0, prf_sigma_scatter=0.35, v2_sigma_factor=1.6,
                    n_orientations=8, wavelengths=(4.0, 6.0, 9.0, 13.0),
                    dirichlet_concentration=1.5, prf_radius_frac=0.42,
                    **_rel(0.03, 0.5, (1.5, 4.0)))
    return Regime("natural-textures", "natural-like patches, textures and dots; constant pRF "
                  "size with scatter, sparse V1, end-stopping V2",
                  ("natural", "textures", "dots"), 360, cfg)


def _small_data() -> Regime:
    cfg = SimConfig(v1_sigma_intercept=1.0, v1_sigma_slope=0.12, prf_sigma_scatter=0.2,
                    n_orientations=5, wavelengths=(4.5, 8.0, 14.0), dirichlet_concentration=0.8,
                    output_exponent=0.7, prf_radius_frac=0.38, n_v2_features=6,
                    v2_threshold_quantile=0.6, **_rel(0.05, 0.33))
    return Regime("small-data", "100 images of letters, bars, natural-like patches and dots; "
                  "10-fold cross-validation", ("letters", "bars", "natural", "dots"), 100, cfg,
                  test_rule="none", cv_folds=10)


def regimes() -> OrderedDict[str, Regime]:
    """The named regimes, in benchmark order (see each one's ``description``)."""
    out: OrderedDict[str, Regime] = OrderedDict()
    for make in (_letters_noisy, _sparse_v1, _v2_endstop, _wide_sf, _ecc_laws,
                 _natural_textures, _small_data):
        r = make()
        out[r.name] = r
    return out


def brains_stim_path() -> Path:
    """Where the real BRAINS stimuli are looked for: ``$NIFLOW_BRAINS_STIM``, else
    ``shared/data/brains/stim.mat`` beside the source checkout."""
    env = os.environ.get("NIFLOW_BRAINS_STIM")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[5] / "shared" / "data" / "brains" / "stim.mat"


def regime_stimuli(regime: Regime, seed: int = 0,
                   brains_path: str | os.PathLike | None = None) -> NDArray[np.uint8]:
    """The regime's stimuli, uint8 of shape (n_images, 56, 56) (read in place, never copied)."""
    if regime.stimuli == ("brains",):
        path = Path(brains_path) if brains_path is not None else brains_stim_path()
        if path.exists():
            return np.asarray(scipy.io.loadmat(path)["stim"], dtype=np.uint8)
        return make_glyphs(n_per_letter=regime.n_images // 6, seed=seed)[0]
    return make_stimuli(regime.stimuli, regime.n_images, seed=seed)


def _test_rows(regime: Regime, n: int, seed: int) -> NDArray[np.int64] | None:
    if regime.test_rule == "none":
        return None
    if regime.test_rule == "last-20%":
        return np.arange(n - n // 5, n, dtype=np.int64)
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    return np.sort(rng.choice(n, n // 5, replace=False)).astype(np.int64)


def make_regime(regime: Regime | str, seed: int = 0, n_voxels: dict[str, int] | None = None,
                brains_path: str | os.PathLike | None = None,
                ) -> tuple[Simulation, NDArray[np.int64] | None]:
    """Simulate one regime.

    Parameters
    ----------
    regime : Regime or str
        A regime or the name of one of :func:`regimes`.
    seed : int
        Seeds the stimuli (families, or glyphs without the real file), voxels, noise and
        the random test rows; the result is a deterministic function of the arguments.
    n_voxels : dict of str to int, optional
        Override the regime's voxel counts (e.g. fewer for quick runs).
    brains_path : path-like, optional
        Real BRAINS ``stim.mat``; default :func:`brains_stim_path`.

    Returns
    -------
    sim : Simulation
    test_rows : ndarray of shape (n_test,), int64, or None
        Held-out rows, or None when the regime is evaluated by ``cv_folds``-fold CV.
    """
    if isinstance(regime, str):
        all_regimes = regimes()
        if regime not in all_regimes:
            raise ValueError(f"unknown regime {regime!r}; known: {list(all_regimes)}")
        regime = all_regimes[regime]
    stim = regime_stimuli(regime, seed, brains_path)
    sim = simulate_responses(stim, n_voxels=n_voxels or regime.n_voxels, seed=seed,
                             config=regime.config)
    return sim, _test_rows(regime, len(stim), seed)
