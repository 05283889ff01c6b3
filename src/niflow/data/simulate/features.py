"""Feature stages of the simulated cortex.

* V1: local oriented energy ``E_f = |I * g_f|`` of quadrature Gabor pairs (FFT convolution),
  optionally divisively normalised and sparsified (``v1_nonlinearity="normalized"``).
* V2: either signed mixtures of blurred per-orientation energies (``v2_mode="mixing"``, the
  default) or end-stopping and junction detectors (``v2_mode="endstop"``); both thresholded.
* V3 (on request): thresholded signed mixtures of V2's blurred maps.

:class:`FeatureStages` holds the stimulus-dependent constants (normalisation constant and
thresholds), fitted once on a fixed, evenly spread subset of up to 64 stimuli so that they
do not depend on how the stimuli are chunked.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sfft
from scipy import ndimage

from niflow.data.simulate.settings import SimConfig, junction_pairs

__all__ = ["FeatureStages", "V1Energy", "as_unit_float", "junction_pairs"]


def as_unit_float(stim: ArrayLike) -> NDArray[np.float32]:
    """Stimuli as float32 in [0, 1]: integers are read as 0-255, floats with max > 1 too."""
    x = np.asarray(stim)
    if x.ndim != 3:
        raise ValueError(f"stim must have shape (n, height, width), got {x.shape}")
    if x.dtype == bool:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        return (x.astype(np.float32) / 255.0).clip(0.0, 1.0)
    x = x.astype(np.float32)
    if x.size and float(np.nanmax(x)) > 1.0:
        x = x / 255.0
    return np.nan_to_num(x).clip(0.0, 1.0)


def _gabor_bank(cfg: SimConfig) -> tuple[list[NDArray[np.complex64]], int]:
    """Complex Gabor kernels (even + i * odd), orientation-major, and the largest radius."""
    kernels = []
    rmax = 0
    for o in range(cfg.n_orientations):
        theta = np.pi * o / cfg.n_orientations
        for lam in cfg.wavelengths:
            sig = cfg.gabor_sigma_frac * lam
            r = int(np.ceil(3 * sig))
            rmax = max(rmax, r)
            yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(float)
            env = np.exp(-(xx**2 + yy**2) / (2 * sig**2))
            env /= env.sum()
            phase = 2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / lam
            even = env * np.cos(phase)
            # Zero DC so uniform regions (background or inside thick strokes) give no energy.
            even -= env * (even.sum() / env.sum())
            kernels.append((even + 1j * env * np.sin(phase)).astype(np.complex64))
    return kernels, rmax


class V1Energy:
    """Oriented-energy maps of a stimulus batch by FFT convolution ('same', zero padded)."""

    def __init__(self, cfg: SimConfig, h: int, w: int) -> None:
        kernels, rmax = _gabor_bank(cfg)
        # Padding by the largest radius is enough: wrap-around then only lands in zeros.
        self.shape = (sfft.next_fast_len(h + rmax), sfft.next_fast_len(w + rmax))
        self.h, self.w = h, w
        kf = np.zeros((len(kernels), *self.shape), dtype=np.complex64)
        for i, k in enumerate(kernels):
            r = k.shape[0] // 2
            # Kernel centre at index (0, 0) so the valid output is simply [:h, :w].
            kf[i] = sfft.fft2(
                np.roll(
                    np.pad(k, ((0, self.shape[0] - k.shape[0]), (0, self.shape[1] - k.shape[1]))),
                    (-r, -r),
                    axis=(0, 1),
                )
            )
        self.kf = kf

    def __call__(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Energies of shape (n, n_v1_features, h, w) for images x of shape (n, h, w)."""
        xf = sfft.fft2(x.astype(np.complex64), s=self.shape, workers=-1)
        out = np.empty((x.shape[0], self.kf.shape[0], self.h, self.w), dtype=np.float32)
        for f in range(self.kf.shape[0]):
            resp = sfft.ifft2(xf * self.kf[f], workers=-1)[:, : self.h, : self.w]
            out[:, f] = np.abs(resp)
        return out


def _signed_mixing(rng: np.random.Generator, n_out: int, n_in: int,
                   inhibition: tuple[float, float]) -> NDArray[np.float64]:
    """(n_out, n_in) weights: per row two inputs excitatory (0.5-1), the rest inhibitory
    (minus ``inhibition``'s range)."""
    n_pos = min(2, n_in)
    mixing = -rng.uniform(*inhibition, (n_out, n_in))
    for j in range(n_out):
        pos = rng.choice(n_in, size=n_pos, replace=False)
        mixing[j, pos] = rng.uniform(0.5, 1.0, n_pos)
    return mixing


def v2_mixing(cfg: SimConfig, rng: np.random.Generator) -> NDArray[np.float64]:
    """Signed mixing: two orientations excitatory, the rest inhibitory (junction-like)."""
    return _signed_mixing(rng, cfg.n_v2_features, cfg.n_orientations, (0.2, 0.5))


def v3_mixing(cfg: SimConfig, rng: np.random.Generator) -> NDArray[np.float64]:
    """Signed mixing of V2's maps (n_v3_features, n_v2_channels): two excitatory, the rest
    inhibitory (conjunctions of V2 features)."""
    return _signed_mixing(rng, cfg.n_v3_features, cfg.n_v2_channels, (0.1, 0.3))


def _v3_linear(v2: NDArray[np.float32], cfg: SimConfig,
               mixing: NDArray[np.float64]) -> NDArray[np.float32]:
    """Linear V3 drive (n, n_v3_features, h, w) from V2's maps (n, J, h, w), blurred."""
    if cfg.v3_blur_sigma > 0:
        v2 = ndimage.gaussian_filter(
            v2, sigma=(0, 0, cfg.v3_blur_sigma, cfg.v3_blur_sigma), mode="constant")
    return np.einsum("kj,njhw->nkhw", mixing.astype(np.float32), v2, optimize=True)


def stimulus_subset(n: int) -> NDArray[np.int64]:
    """Up to 64 evenly spread row indices: the stimuli the stage constants are fitted on."""
    return np.unique(np.linspace(0, n - 1, min(n, 64)).round().astype(int))


def _quantiles(drive: NDArray[np.float32], q: float) -> NDArray[np.float64]:
    """Per channel of ``drive`` (n, C, h, w), :func:`_positive_quantile` ``q``: thresholds."""
    return np.array([_positive_quantile(drive[:, c], q) for c in range(drive.shape[1])])


def _positive_quantile(v: NDArray[np.float32], q: float) -> float:
    """Quantile ``q`` of the clearly positive values of ``v`` (0 if there are none)."""
    # Ignore FFT round-off (~1e-7) in blank regions; it would drag the quantile to 0.
    pos = v[v > 1e-3 * v.max()] if v.size else v
    return float(np.quantile(pos, q)) if pos.size else 0.0


def _per_orientation(v1: NDArray[np.float32], cfg: SimConfig) -> NDArray[np.float32]:
    """Sum over wavelengths (n, n_orientations, h, w), blurred by ``v2_blur_sigma``."""
    n, _, h, w = v1.shape
    per_ori = v1.reshape(n, cfg.n_orientations, len(cfg.wavelengths), h, w).sum(2)
    if cfg.v2_blur_sigma > 0:
        per_ori = ndimage.gaussian_filter(
            per_ori, sigma=(0, 0, cfg.v2_blur_sigma, cfg.v2_blur_sigma), mode="constant"
        )
    return per_ori


def _v2_linear(
    energy: NDArray[np.float32], cfg: SimConfig, mixing: NDArray[np.float64]
) -> NDArray[np.float32]:
    """Linear V2 drive (n, n_v2_features, h, w) from V1 energies (n, F, h, w)."""
    per_ori = _per_orientation(energy, cfg)
    return np.einsum("jo,nohw->njhw", mixing.astype(np.float32), per_ori, optimize=True)


def _v2_endstop(v1: NDArray[np.float32], cfg: SimConfig, sigma: float) -> NDArray[np.float32]:
    """End-stopping and junction maps (n, 2 n_o + n_pairs, h, w) from V1 outputs (n, F, h, w).

    With ``A_o`` the blurred per-orientation map and ``u_o`` the direction along which that
    channel's stripes (and the edges that drive it) run:

    * end-stopping, two per orientation: ``relu(A_o(p) - gain * A_o(p + s d u_o))`` for
      ``s = +-1``, so a line drives it only where it ends;
    * junctions, per pair of orientations >= 45 deg apart: ``relu(min(A_o1, A_o2) -
      mean_o A_o)``, non-zero only where both dominate the other orientations (corners,
      crossings), not along a straight stroke or inside a smooth curve.

    Each map is then divided by ``sigma + P`` with ``P`` the mean V1 map pooled over
    ``v2_norm_pool_sigma`` px (if > 0): V2 then signals the kind of structure, not how much
    ink lies under its pRF.
    """
    per_ori = _per_orientation(v1, cfg)
    d, gain = cfg.v2_endstop_distance, np.float32(cfg.v2_endstop_gain)
    feats = []
    for o in range(cfg.n_orientations):
        theta = np.pi * o / cfg.n_orientations
        # The Gabor carrier varies along (cos, sin) in (x, y): its stripes run along (-sin, cos).
        ux, uy = -np.sin(theta) * d, np.cos(theta) * d
        for s in (1.0, -1.0):
            # ndimage.shift: out(p) = in(p - shift), so shift = -s d u samples A(p + s d u).
            ahead = ndimage.shift(per_ori[:, o], (0.0, -s * uy, -s * ux), order=1,
                                  mode="constant")
            feats.append(np.maximum(per_ori[:, o] - gain * ahead, 0.0))
    mean_ori = per_ori.mean(axis=1)
    for i, j in junction_pairs(cfg.n_orientations):
        feats.append(np.maximum(np.minimum(per_ori[:, i], per_ori[:, j]) - mean_ori, 0.0))
    out = np.stack(feats, axis=1)
    if cfg.v2_norm_pool_sigma > 0:
        s = cfg.v2_norm_pool_sigma
        pool = ndimage.gaussian_filter(v1.mean(axis=1), sigma=(0, s, s), mode="reflect")
        out /= np.float32(sigma) + pool[:, None]
    return out


def _normalize(
    energy: NDArray[np.float32], cfg: SimConfig, sigma: float
) -> NDArray[np.float32]:
    """Divisive normalisation ``E_f / (sigma + pool(mean_f E_f))`` (n, F, h, w)."""
    pool = energy.mean(axis=1)
    if cfg.v1_norm_pool_sigma > 0:
        s = cfg.v1_norm_pool_sigma
        pool = ndimage.gaussian_filter(pool, sigma=(0, s, s), mode="reflect")
    return energy / (np.float32(sigma) + pool[:, None])


class FeatureStages:
    """The per-area feature maps of a stimulus batch, with constants fitted on a subset.

    Parameters
    ----------
    cfg : SimConfig
    x : ndarray of shape (n, h, w), float32 in [0, 1]
        All stimuli; the constants are fitted on :func:`stimulus_subset` of them.
    v2_mixing : ndarray of shape (n_v2_features, n_orientations), optional
        Needed for ``v2_mode="mixing"`` when V2 is simulated.
    areas : sequence of str
        Areas to prepare (``"V1"``, ``"V2"``, ``"V3"``; V3 needs V2).
    v3_mixing : ndarray of shape (n_v3_features, n_v2_channels), optional
        Needed when V3 is simulated.
    """

    def __init__(self, cfg: SimConfig, x: NDArray[np.float32],
                 v2_mixing: NDArray[np.float64] | None, areas: tuple[str, ...],
                 v3_mixing: NDArray[np.float64] | None = None) -> None:
        self.cfg = cfg
        self.areas = tuple(areas)
        self.mixing = v2_mixing
        self.v3_mixing = v3_mixing
        self.energy = V1Energy(cfg, x.shape[1], x.shape[2])
        self.norm_sigma = self.v2_norm_sigma = 0.0
        self.threshold: dict[str, NDArray[np.float64]] = {}
        sub = self.energy(x[stimulus_subset(x.shape[0])])
        if cfg.v1_nonlinearity == "normalized":
            # Semi-saturation relative to the stimulus set's mean energy: contrast-invariant.
            self.norm_sigma = cfg.v1_norm_sigma * float(sub.mean())
            norm = _normalize(sub, cfg, self.norm_sigma)
            self.threshold["V1"] = _quantiles(norm, cfg.v1_threshold_quantile)
            sub = norm
        if "V2" in self.areas:
            self.v2_norm_sigma = cfg.v1_norm_sigma * float(sub.mean())
            lin = self._v2_drive(sub)
            self.threshold["V2"] = _quantiles(lin, cfg.v2_threshold_quantile)
            if "V3" in self.areas:
                lin3 = _v3_linear(self._above("V2", lin), cfg, self.v3_mixing)
                self.threshold["V3"] = _quantiles(lin3, cfg.v2_threshold_quantile)

    def _v2_drive(self, v1: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.cfg.v2_mode == "endstop":
            return _v2_endstop(v1, self.cfg, self.v2_norm_sigma)
        return _v2_linear(v1, self.cfg, self.mixing)

    def _above(self, area: str, lin: NDArray[np.float32]) -> NDArray[np.float32]:
        """``relu(lin - threshold)`` per channel of ``area`` (in place: ``lin`` is spent)."""
        thr = self.threshold[area].astype(np.float32)[None, :, None, None]
        return np.maximum(lin - thr, 0.0, out=lin)

    def __call__(self, x: NDArray[np.float32]) -> dict[str, NDArray[np.float32]]:
        """Feature maps per area, each of shape (n, n_features_area, h, w), float32."""
        out: dict[str, NDArray[np.float32]] = {}
        v1 = self.energy(x)
        if self.cfg.v1_nonlinearity == "normalized":
            v1 = _normalize(v1, self.cfg, self.norm_sigma)
        if "V1" in self.areas:
            out["V1"] = v1
            if "V1" in self.threshold:
                thr = self.threshold["V1"].astype(np.float32)[None, :, None, None]
                out["V1"] = np.maximum(v1 - thr, 0.0) ** np.float32(self.cfg.v1_power)
        if "V2" in self.areas:
            out["V2"] = self._above("V2", self._v2_drive(v1))
        if "V3" in self.areas:
            out["V3"] = self._above("V3", _v3_linear(out["V2"], self.cfg, self.v3_mixing))
        return out
