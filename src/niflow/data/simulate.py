"""Simulated BRAINS-like data set with known ground truth.

Two parts:

* :func:`make_glyphs` draws handwritten-looking capital letters (``B R A I N S`` by default)
  as anti-aliased white strokes on black, ordered like the real BRAINS stimuli (training
  part letter by letter, then test part letter by letter).
* :func:`simulate_responses` passes any stimuli through a two-stage model of visual cortex
  and returns noisy voxel responses together with the parameters that generated them:

  - V1 voxels pool local oriented energy (quadrature Gabor pairs) under an isotropic
    Gaussian population receptive field (pRF) whose size grows with eccentricity.
  - V2 voxels pool a second nonlinear stage (thresholded mixtures of blurred V1 energies,
    i.e. junction/corner-like detectors) under larger Gaussian pRFs.
  - Each voxel has a known reliability (expected correlation between two repeats).

All coordinates are in stimulus pixels: ``x`` is the column, ``y`` the row, and the centre of
the top-left pixel is ``(0, 0)``.

:func:`write_simulation` writes ``stim.mat``, ``bold.mat`` (the layout of the real data set)
and ``truth.npz``; :func:`load_truth` and :func:`load_simulation` read them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sfft
from scipy import ndimage

from niflow.data.io import save_mat, save_npz

__all__ = [
    "AREAS",
    "DEFAULT_N_VOXELS",
    "SimConfig",
    "harder_configs",
    "Simulation",
    "load_simulation",
    "load_truth",
    "make_glyphs",
    "simulate",
    "simulate_responses",
    "write_simulation",
]

AREAS: tuple[str, ...] = ("V1", "V2")
DEFAULT_N_VOXELS: dict[str, int] = {"V1": 800, "V2": 600}

# Independent random streams: glyphs use ``default_rng(seed)``; each area of the response
# simulation uses ``default_rng([seed, _RESPONSE_STREAM, area_index])`` so that changing the
# number of voxels of one area leaves the other area's voxels unchanged.
_RESPONSE_STREAM = 7919

# Bound on the float32 feature maps held at once (elements), keeps memory ~< 100 MB.
_MAX_CHUNK_ELEMENTS = 24_000_000

# ---------------------------------------------------------------------------------------------
# Glyphs
# ---------------------------------------------------------------------------------------------

Polyline = NDArray[np.float64]  # (k, 2) points (x, y) in the unit letter box, y pointing down


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 32) -> Polyline:
    """Elliptic arc from angle ``a0`` to ``a1`` (degrees; y down, so 90 deg is the bottom)."""
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _poly(*pts: tuple[float, float]) -> Polyline:
    return np.asarray(pts, dtype=float)


def _bowl(x0: float, y0: float, y1: float, width: float, flat: float) -> Polyline:
    """Closed-to-the-left bowl: straight top, half ellipse bulging right, straight bottom."""
    xa = x0 + flat * width
    rx = width - flat * width
    ry = (y1 - y0) / 2
    top = _poly((x0, y0), (xa, y0))
    curve = _arc(xa, y0 + ry, rx, ry, -90.0, 90.0)
    bottom = _poly((xa, y1), (x0, y1))
    return np.concatenate([top, curve, bottom])


def _letter_b(rng: np.random.Generator) -> list[Polyline]:
    ym = rng.uniform(0.42, 0.52)
    w_top = rng.uniform(0.38, 0.52)
    w_bot = w_top + rng.uniform(0.04, 0.14)
    flat = rng.uniform(0.2, 0.45)
    return [
        _poly((0.0, 0.0), (0.0, 1.0)),
        _bowl(0.0, 0.0, ym, w_top, flat),
        _bowl(0.0, ym, 1.0, w_bot, flat),
    ]


def _letter_r(rng: np.random.Generator) -> list[Polyline]:
    ym = rng.uniform(0.45, 0.56)
    w_top = rng.uniform(0.45, 0.6)
    flat = rng.uniform(0.2, 0.45)
    leg_start = rng.uniform(0.1, 0.3) * w_top
    leg_end = rng.uniform(0.55, 0.72)
    return [
        _poly((0.0, 0.0), (0.0, 1.0)),
        _bowl(0.0, 0.0, ym, w_top, flat),
        _poly((leg_start, ym), (leg_end, 1.0)),
    ]


def _letter_a(rng: np.random.Generator) -> list[Polyline]:
    width = rng.uniform(0.6, 0.8)
    apex = width * rng.uniform(0.42, 0.58)
    yc = rng.uniform(0.55, 0.7)
    # Crossbar ends on the two diagonals (x is linear in y along each diagonal).
    xl = apex * (1.0 - yc)
    xr = apex + (width - apex) * yc
    over = rng.uniform(-0.03, 0.06)
    return [
        _poly((0.0, 1.0), (apex, 0.0), (width, 1.0)),
        _poly((xl - over, yc), (xr + over, yc)),
    ]


def _letter_i(rng: np.random.Generator) -> list[Polyline]:
    strokes = [_poly((0.0, 0.0), (0.0, 1.0))]
    if rng.random() < 0.5:
        half = rng.uniform(0.14, 0.22)
        strokes += [_poly((-half, 0.0), (half, 0.0)), _poly((-half, 1.0), (half, 1.0))]
    return strokes


def _letter_n(rng: np.random.Generator) -> list[Polyline]:
    width = rng.uniform(0.55, 0.75)
    top_right = rng.uniform(-0.05, 0.08)
    return [_poly((0.0, 1.0), (0.0, 0.0), (width, 1.0), (width, top_right))]


def _letter_s(rng: np.random.Generator) -> list[Polyline]:
    ym = rng.uniform(0.44, 0.52)
    rx_top = rng.uniform(0.22, 0.3)
    rx_bot = rx_top + rng.uniform(0.0, 0.07)
    cx = 0.0
    start = rng.uniform(-40.0, -10.0)
    end = rng.uniform(135.0, 170.0)
    upper = _arc(cx, ym / 2, rx_top, ym / 2, start, -270.0)
    lower = _arc(cx, ym + (1 - ym) / 2, rx_bot, (1 - ym) / 2, -90.0, end)
    return [np.concatenate([upper, lower[1:]])]


_LETTERS: dict[str, Callable[[np.random.Generator], list[Polyline]]] = {
    "A": _letter_a,
    "B": _letter_b,
    "I": _letter_i,
    "N": _letter_n,
    "R": _letter_r,
    "S": _letter_s,
}


def _resample(poly: Polyline, step: float) -> Polyline:
    """Resample a polyline at (about) equal arc-length ``step`` keeping both end points."""
    seg = np.hypot(*np.diff(poly, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(np.ceil(s[-1] / step)), 1) + 1
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, poly[:, 0]), np.interp(t, s, poly[:, 1])], axis=1)


def _smooth_displacement(
    pts: NDArray[np.float64], rng: np.random.Generator, size: int, amplitude: float
) -> NDArray[np.float64]:
    """Low-frequency random displacement field (sum of a few plane waves) evaluated at pts."""
    n_waves = 3
    freq = rng.uniform(0.5, 1.5, n_waves) / size  # cycles per pixel: 0.5-1.5 per image
    ang = rng.uniform(0, 2 * np.pi, n_waves)
    kvec = 2 * np.pi * freq[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    phase = rng.uniform(0, 2 * np.pi, (n_waves, 2))
    amp = rng.normal(0.0, 1.0, (n_waves, 2))
    # A unit sine has variance 1/2: scale so each component's rms displacement is amplitude.
    amp *= amplitude / np.sqrt(np.sum(amp**2, axis=0) / 2 + 1e-12)
    waves = np.sin((pts @ kvec.T)[:, :, None] + phase[None])  # (k, n_waves, 2)
    return np.einsum("kwc,wc->kc", waves, amp)


def _render(segments: NDArray[np.float64], width: float, size: int) -> NDArray[np.uint8]:
    """Anti-aliased rendering of thick line segments.

    Parameters
    ----------
    segments : ndarray of shape (n_segments, 2, 2)
        Start and end points ``(x, y)`` in pixel coordinates.
    width : float
        Stroke width in pixels.
    size : int
        Output image is ``size x size``.

    Returns
    -------
    img : ndarray of shape (size, size), uint8
    """
    segments = segments.astype(np.float32)
    a = segments[:, 0]
    ab = segments[:, 1] - a
    len2 = np.maximum(np.sum(ab**2, axis=1), np.float32(1e-12))
    reach = width / 2 + 1.0
    # Only pixels near the glyph can be inked; cropping to its box saves ~half the work.
    lo = np.clip(np.floor(segments.reshape(-1, 2).min(0) - reach), 0, size - 1).astype(int)
    hi = np.clip(np.ceil(segments.reshape(-1, 2).max(0) + reach), 0, size - 1).astype(int)
    xs = np.arange(lo[0], hi[0] + 1, dtype=np.float32)
    ys = np.arange(lo[1], hi[1] + 1, dtype=np.float32)
    px = np.broadcast_to(xs[None, :], (ys.size, xs.size)).reshape(-1, 1)
    py = np.broadcast_to(ys[:, None], (ys.size, xs.size)).reshape(-1, 1)
    dx = px - a[None, :, 0]
    dy = py - a[None, :, 1]
    t = np.clip((dx * ab[:, 0] + dy * ab[:, 1]) / len2, np.float32(0), np.float32(1))
    d2 = (dx - t * ab[:, 0]) ** 2 + (dy - t * ab[:, 1]) ** 2
    d = np.sqrt(d2.min(axis=1))
    ink = np.clip(width / 2 - d + 0.5, 0.0, 1.0).reshape(ys.size, xs.size)
    img = np.zeros((size, size), dtype=np.uint8)
    img[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = np.round(ink * 255).astype(np.uint8)
    return img


def _draw_glyph(letter: str, rng: np.random.Generator, size: int) -> NDArray[np.uint8]:
    strokes = _LETTERS[letter](rng)
    width = rng.uniform(2.0, 5.0)
    height = rng.uniform(0.60, 0.85) * size
    aspect = rng.uniform(0.85, 1.15)
    shear = rng.uniform(-0.25, 0.25)
    rot = np.deg2rad(rng.uniform(-15.0, 15.0))
    shift = rng.uniform(-5.0, 5.0, 2)

    allpts = np.concatenate(strokes)
    centre = (allpts.min(0) + allpts.max(0)) / 2
    # Resample (~2.5 px) before deforming so the smooth warp also bends straight strokes; the
    # warp's wavelength is >= 2/3 of the image and the arcs' chord error is < 0.1 px.
    step = 2.5 / height
    strokes = [_resample(s - centre, step) for s in strokes]
    lengths = [len(s) for s in strokes]
    pts = np.concatenate(strokes)

    lin = np.array([[aspect, shear], [0.0, 1.0]]) * height
    c, s = np.cos(rot), np.sin(rot)
    lin = np.array([[c, -s], [s, c]]) @ lin
    pts = pts @ lin.T + (size - 1) / 2 + shift
    pts = pts + _smooth_displacement(pts, rng, size, amplitude=rng.uniform(1.0, 2.0))

    # Keep the whole stroke (including its width) inside the image: shrink if too large,
    # then shift back in.
    margin = width / 2 + 1.0
    avail = (size - 1) - 2 * margin
    lo, hi = pts.min(0), pts.max(0)
    extent = (hi - lo).max()
    if extent > avail:
        mid = (lo + hi) / 2
        pts = (pts - mid) * (avail / extent) + mid
        lo, hi = pts.min(0), pts.max(0)
    pts = pts + np.maximum(margin - lo, 0.0) - np.maximum(hi - (size - 1 - margin), 0.0)

    segs = []
    start = 0
    for n in lengths:
        p = pts[start : start + n]
        segs.append(np.stack([p[:-1], p[1:]], axis=1))
        start += n
    return _render(np.concatenate(segs), width, size)


def make_glyphs(
    n_per_letter: int = 60,
    size: int = 56,
    letters: str = "BRAINS",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Draw handwritten-style capital letters.

    Each glyph is a set of strokes (line segments and arcs) with random stroke width
    (2-5 px), letter height (60-85 % of the image), aspect, shear (+-0.25), rotation
    (+-15 deg), translation (+-5 px, clamped so the glyph stays inside), letter-shape
    parameters and a smooth random deformation (~1-2 px).

    Parameters
    ----------
    n_per_letter : int
        Number of glyphs per letter.
    size : int
        Image height and width in pixels.
    letters : str
        Letters to draw, each one of ``"ABINRS"``. The label of a glyph is the index of its
        letter in this string.
    test_fraction : float
        Fraction of each letter's glyphs that goes into the test part (rounded).
    seed : int
        Random seed; the output is a deterministic function of all arguments.

    Returns
    -------
    stim : ndarray of shape (n_samples, size, size), uint8
        White strokes (255) on black (0), anti-aliased. ``n_samples = n_per_letter *
        len(letters)``. Rows are ordered like the real BRAINS data: first the training part
        letter by letter (``n_train = n_per_letter - n_test`` glyphs of each letter), then the
        test part letter by letter (``n_test = round(test_fraction * n_per_letter)`` each).
    labels : ndarray of shape (n_samples,), int64
        Index into ``letters`` of each row.
    """
    unknown = sorted(set(letters) - set(_LETTERS))
    if unknown:
        raise ValueError(f"no stroke definition for letters {unknown}; known: {sorted(_LETTERS)}")
    if n_per_letter < 1:
        raise ValueError("n_per_letter must be >= 1")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    n_test = int(round(test_fraction * n_per_letter))
    n_train = n_per_letter - n_test
    labels = np.concatenate(
        [np.repeat(np.arange(len(letters)), n_train), np.repeat(np.arange(len(letters)), n_test)]
    ).astype(np.int64)
    rng = np.random.default_rng(seed)
    stim = np.empty((labels.size, size, size), dtype=np.uint8)
    for i, lab in enumerate(labels):
        stim[i] = _draw_glyph(letters[lab], rng, size)
    return stim, labels


# ---------------------------------------------------------------------------------------------
# Ground-truth visual cortex
# ---------------------------------------------------------------------------------------------


@dataclass
class SimConfig:
    """Knobs of the simulated visual cortex. The defaults give the default simulation.

    Attributes
    ----------
    n_orientations : int
        Number of Gabor orientations (evenly spaced over 180 deg).
    wavelengths : tuple of float
        Gabor wavelengths in pixels. V1 has ``n_orientations * len(wavelengths)`` feature
        channels, ordered orientation-major (``channel = o * len(wavelengths) + k``).
    gabor_sigma_frac : float
        Gabor envelope standard deviation as a fraction of its wavelength.
    v1_sigma_intercept, v1_sigma_slope : float
        V1 pRF size rule ``sigma = intercept + slope * eccentricity`` (pixels).
    v2_sigma_factor : float
        V2 pRF sigma is this factor times V1's rule at the same eccentricity.
    prf_radius_frac : float
        pRF centres are uniform over a disc of radius ``prf_radius_frac * min(h, w)`` around
        the image centre.
    dirichlet_concentration : float
        Concentration of the symmetric Dirichlet prior of each voxel's feature weights
        (small: voxels dominated by one feature; large: near-uniform weights).
    output_exponent : float
        Static output nonlinearity ``drive ** output_exponent`` on the non-negative drive.
    v2_blur_sigma : float
        Gaussian blur (pixels) of the V1 energy maps before the V2 stage.
    n_v2_features : int
        Number of V2 feature maps.
    v2_threshold_quantile : float
        Each V2 threshold is this quantile of the feature's positive linear drive over
        (a subset of up to 64 of) the stimuli.
    reliability_range : tuple of float
        Per-voxel reliability (correlation between two repeats) is uniform in this range.
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

    def __post_init__(self) -> None:
        # Tuples survive a JSON round trip as lists; normalise so equality still holds.
        self.wavelengths = tuple(float(w) for w in self.wavelengths)
        self.reliability_range = (
            float(self.reliability_range[0]),
            float(self.reliability_range[1]),
        )
        lo, hi = self.reliability_range
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError("reliability_range must satisfy 0 < low <= high <= 1")
        if self.n_orientations < 1 or not self.wavelengths:
            raise ValueError("need at least one orientation and one wavelength")
        if self.n_repeats < 1:
            raise ValueError("n_repeats must be >= 1")
        if self.output_exponent <= 0:
            raise ValueError("output_exponent must be > 0")

    @property
    def n_v1_features(self) -> int:
        return self.n_orientations * len(self.wavelengths)

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
        ``feature_mixing`` (n_v2_features, n_orientations) and ``feature_threshold``
        (n_v2_features,).
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


def _as_unit_float(stim: ArrayLike) -> NDArray[np.float32]:
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


class _V1Energy:
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


def _v2_linear(
    energy: NDArray[np.float32], cfg: SimConfig, mixing: NDArray[np.float64]
) -> NDArray[np.float32]:
    """Linear V2 drive (n, n_v2_features, h, w) from V1 energies (n, F, h, w)."""
    n, _, h, w = energy.shape
    per_ori = energy.reshape(n, cfg.n_orientations, len(cfg.wavelengths), h, w).sum(2)
    if cfg.v2_blur_sigma > 0:
        per_ori = ndimage.gaussian_filter(
            per_ori, sigma=(0, 0, cfg.v2_blur_sigma, cfg.v2_blur_sigma), mode="constant"
        )
    return np.einsum("jo,nohw->njhw", mixing.astype(np.float32), per_ori, optimize=True)


def _v2_mixing(cfg: SimConfig, rng: np.random.Generator) -> NDArray[np.float64]:
    """Signed mixing: two orientations excitatory, the rest inhibitory (junction-like)."""
    n_o = cfg.n_orientations
    n_pos = min(2, n_o)
    mixing = -rng.uniform(0.2, 0.5, (cfg.n_v2_features, n_o))
    for j in range(cfg.n_v2_features):
        pos = rng.choice(n_o, size=n_pos, replace=False)
        mixing[j, pos] = rng.uniform(0.5, 1.0, n_pos)
    return mixing


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
    sigma = factor * (cfg.v1_sigma_intercept + cfg.v1_sigma_slope * ecc)
    return {"prf_x": x, "prf_y": y, "prf_sigma": sigma, "eccentricity": ecc}


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
        See :class:`Simulation`. Output is a deterministic function of the arguments. V2
        thresholds depend on the stimulus set (a quantile over up to 64 of its images).

    Notes
    -----
    V1 feature ``f = (orientation, wavelength)`` is the local energy ``E_f = |I * g_f|`` of
    a quadrature Gabor pair. A V1 voxel's drive is
    ``sum_f w_f sum_{y,x} G(y, x) E_f(y, x)`` with ``G`` its Gaussian pRF. V2 features are
    ``relu(sum_o M_jo * blur(sum_k E_{o,k}) - theta_j)``, pooled the same way under a pRF
    ``v2_sigma_factor`` times larger. The drive (non-negative) is raised to
    ``output_exponent`` and z-scored per voxel; repeat ``r`` is that signal plus Gaussian
    noise of variance ``(1 - rho) / rho`` so two repeats correlate with expectation
    ``rho`` (the voxel's reliability).
    """
    cfg = config if config is not None else SimConfig()
    n_voxels = dict(DEFAULT_N_VOXELS if n_voxels is None else n_voxels)
    unknown = sorted(set(n_voxels) - set(AREAS))
    if unknown:
        raise ValueError(f"unknown areas {unknown}; supported: {list(AREAS)}")
    areas = [a for a in AREAS if a in n_voxels]
    x = _as_unit_float(stim)
    n, h, w = x.shape
    if n < 1:
        raise ValueError("need at least one stimulus")

    rngs = {a: np.random.default_rng([seed, _RESPONSE_STREAM, AREAS.index(a)]) for a in areas}
    n_feat = {"V1": cfg.n_v1_features, "V2": cfg.n_v2_features}
    factor = {"V1": 1.0, "V2": cfg.v2_sigma_factor}
    truth: dict[str, dict[str, np.ndarray]] = {}
    gauss: dict[str, NDArray[np.float32]] = {}
    for a in areas:
        rng = rngs[a]
        nv = int(n_voxels[a])
        t = _draw_prfs(rng, nv, h, w, cfg, factor[a])
        t["feature_weights"] = rng.dirichlet(np.full(n_feat[a], cfg.dirichlet_concentration), nv)
        t["reliability"] = rng.uniform(*cfg.reliability_range, nv)
        if a == "V2":
            t["feature_mixing"] = _v2_mixing(cfg, rng)
        truth[a] = t
        gauss[a] = _gaussian_maps(t, h, w)

    energy_fn = _V1Energy(cfg, h, w)

    if "V2" in areas:
        # Thresholds from a fixed, evenly spread subset so that they do not depend on chunking.
        sub = np.unique(np.linspace(0, n - 1, min(n, 64)).round().astype(int))
        lin = _v2_linear(energy_fn(x[sub]), cfg, truth["V2"]["feature_mixing"])
        thr = np.zeros(cfg.n_v2_features)
        for j in range(cfg.n_v2_features):
            v = lin[:, j]
            # Ignore FFT round-off (~1e-7) in blank regions; it would drag the quantile to 0.
            pos = v[v > 1e-3 * v.max()]
            if pos.size:
                thr[j] = np.quantile(pos, cfg.v2_threshold_quantile)
        truth["V2"]["feature_threshold"] = thr

    drive = {a: np.empty((n, int(n_voxels[a]))) for a in areas}
    # Largest feature value each area pools: the scale against which a voxel counts as flat.
    peak = dict.fromkeys(areas, 0.0)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // (max(n_feat.values()) * h * w))
    for i0 in range(0, n, chunk):
        sl = slice(i0, min(n, i0 + chunk))
        energy = energy_fn(x[sl])
        if "V1" in areas:
            peak["V1"] = max(peak["V1"], float(energy.max()))
            drive["V1"][sl] = _pool(energy, gauss["V1"], truth["V1"]["feature_weights"])
        if "V2" in areas:
            lin = _v2_linear(energy, cfg, truth["V2"]["feature_mixing"])
            del energy
            thr32 = truth["V2"]["feature_threshold"].astype(np.float32)[None, :, None, None]
            feat = np.maximum(lin - thr32, 0.0, out=lin)
            peak["V2"] = max(peak["V2"], float(feat.max()))
            drive["V2"][sl] = _pool(feat, gauss["V2"], truth["V2"]["feature_weights"])

    responses, repeats, signal = {}, {}, {}
    for a in areas:
        d = np.maximum(drive[a], 0.0) ** cfg.output_exponent
        sd = d.std(axis=0)
        # A voxel that sees no stimulus energy (only float32 FFT round-off, ~1e-7 of the peak)
        # stays flat (signal 0, responses pure noise) instead of having round-off z-scored
        # into a fake signal.
        flat = sd <= 1e-5 * peak[a] ** cfg.output_exponent
        z = (d - d.mean(axis=0)) / np.where(flat, np.inf, sd)
        rho = truth[a]["reliability"]
        noise_sd = np.sqrt((1.0 - rho) / rho)
        noise = rngs[a].standard_normal((cfg.n_repeats, n, z.shape[1])) * noise_sd
        rep = (z[None] + noise).astype(np.float32)
        signal[a] = z.astype(np.float32)
        repeats[a] = rep
        responses[a] = rep.mean(axis=0)

    return Simulation(
        stim=np.asarray(stim),
        labels=None if labels is None else np.asarray(labels),
        responses=responses,
        repeats=repeats,
        signal=signal,
        truth=truth,
        config=cfg,
        seed=int(seed),
    )


# ---------------------------------------------------------------------------------------------
# Writing and reading
# ---------------------------------------------------------------------------------------------


def _stim_uint8(stim: ArrayLike) -> NDArray[np.uint8]:
    x = np.asarray(stim)
    if x.dtype == np.uint8:
        return x
    return np.round(_as_unit_float(x) * 255).astype(np.uint8)


def write_simulation(sim: Simulation, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write a simulation in the layout of the real BRAINS data plus the ground truth.

    Files (each written atomically: temp file in ``out_dir``, then ``os.replace``):

    * ``stim.mat``: variable ``stim``, uint8 of shape (n_samples, height, width).
    * ``bold.mat``: one variable per area, float32 of shape (n_samples, n_voxels).
    * ``truth.npz``: ``{area}_{key}`` for every key of ``sim.truth[area]`` (at least
      ``prf_x``, ``prf_y``, ``prf_sigma``, ``reliability``, ``feature_weights``), plus
      ``{area}_repeats`` (n_repeats, n_samples, n_voxels), ``{area}_signal``
      (n_samples, n_voxels), ``labels`` (n_samples,) if known, ``areas`` (n_areas,) str and
      ``config_json`` (0-d str: SimConfig fields plus ``seed`` and ``n_voxels``).

    Parameters
    ----------
    sim : Simulation
    out_dir : str or path-like
        Created if missing.

    Returns
    -------
    dict of str to Path
        ``{"stim": ..., "bold": ..., "truth": ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"stim": out / "stim.mat", "bold": out / "bold.mat", "truth": out / "truth.npz"}

    stim = _stim_uint8(sim.stim)
    save_mat(paths["stim"], {"stim": stim})
    save_mat(paths["bold"], {a: np.asarray(r, dtype=np.float32) for a, r in sim.responses.items()})

    arrays: dict[str, np.ndarray] = {}
    for a in sim.areas:
        for k, v in sim.truth[a].items():
            arrays[f"{a}_{k}"] = np.asarray(v)
        arrays[f"{a}_repeats"] = np.asarray(sim.repeats[a], dtype=np.float32)
        arrays[f"{a}_signal"] = np.asarray(sim.signal[a], dtype=np.float32)
    if sim.labels is not None:
        arrays["labels"] = np.asarray(sim.labels)
    arrays["areas"] = np.asarray(sim.areas, dtype=str)
    meta = sim.config.to_dict()
    meta["seed"] = sim.seed
    meta["n_voxels"] = {a: int(sim.responses[a].shape[1]) for a in sim.areas}
    arrays["config_json"] = np.asarray(json.dumps(meta, sort_keys=True))
    save_npz(paths["truth"], arrays)
    return paths


def _split_truth(z: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    areas = [str(a) for a in z["areas"]]
    out: dict[str, dict[str, np.ndarray]] = {a: {} for a in areas}
    # Longest names first so an area name that prefixes another cannot steal its keys.
    for key in z:
        for a in sorted(areas, key=len, reverse=True):
            if key.startswith(a + "_"):
                out[a][key[len(a) + 1 :]] = z[key]
                break
    return out


def load_truth(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read ``truth.npz`` (or the directory containing it).

    Returns
    -------
    dict of str to dict of str to ndarray
        Per area everything stored under ``{area}_*``: ``prf_x``, ``prf_y``, ``prf_sigma``,
        ``eccentricity``, ``reliability`` (n_voxels,), ``feature_weights``
        (n_voxels, n_features), ``repeats`` (n_repeats, n_samples, n_voxels), ``signal``
        (n_samples, n_voxels), and for V2 ``feature_mixing`` / ``feature_threshold``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "truth.npz"
    with np.load(p, allow_pickle=False) as z:
        return _split_truth({k: z[k] for k in z.files})


def load_simulation(out_dir: str | os.PathLike) -> Simulation:
    """Read back a directory written by :func:`write_simulation` into a :class:`Simulation`."""
    d = Path(out_dir)
    stim = scipy.io.loadmat(d / "stim.mat")["stim"]
    bold = scipy.io.loadmat(d / "bold.mat")
    with np.load(d / "truth.npz", allow_pickle=False) as z:
        flat = {k: z[k] for k in z.files}
    truth = _split_truth(flat)
    meta = json.loads(str(flat["config_json"]))
    repeats = {a: truth[a].pop("repeats") for a in truth}
    signal = {a: truth[a].pop("signal") for a in truth}
    return Simulation(
        stim=stim,
        labels=flat.get("labels"),
        responses={a: np.asarray(bold[a], dtype=np.float32) for a in truth},
        repeats=repeats,
        signal=signal,
        truth=truth,
        config=SimConfig.from_dict(meta),
        seed=int(meta.get("seed", 0)),
    )


def simulate(
    out_dir: str | os.PathLike | None = None,
    n_per_letter: int = 60,
    n_voxels: Mapping[str, int] | None = None,
    seed: int = 0,
    config: SimConfig | None = None,
    stim: ArrayLike | None = None,
) -> Simulation:
    """Glyphs (or the given stimuli) plus simulated responses, written if ``out_dir`` is set.

    Parameters
    ----------
    out_dir : str or path-like, optional
        If given, :func:`write_simulation` writes the result there.
    n_per_letter : int
        Glyphs per letter of ``"BRAINS"`` when ``stim`` is None (default 60: 360 images, rows
        288:360 are the test part).
    n_voxels : dict of str to int, optional
        See :func:`simulate_responses`.
    seed : int
        Seed for both the glyphs and the responses (independent streams).
    config : SimConfig, optional
    stim : array_like of shape (n_samples, height, width), optional
        Use these stimuli instead of generated glyphs (labels are then None).

    Returns
    -------
    Simulation
    """
    labels = None
    if stim is None:
        stim, labels = make_glyphs(n_per_letter=n_per_letter, seed=seed)
    sim = simulate_responses(stim, n_voxels=n_voxels, seed=seed, config=config, labels=labels)
    if out_dir is not None:
        write_simulation(sim, out_dir)
    return sim
