"""The movie baseline: voxelwise ridge on FIR-delayed motion-energy features.

What users fit to movie fMRI today (the voxelwise-modelling tradition): spatiotemporal
quadrature filters give motion energy, averaged within each volume's acquisition window,
stacked at several delays (a finite impulse response, so each voxel's haemodynamic lag is
learned by the weights), and fitted by ridge regression with each voxel's penalty chosen by
leave-one-run-out cross-validation on the training runs.

Features of frame ``t`` at position ``(y, x)``: for a spatial complex Gabor ``g_{θ,λ}``
(even + i·odd) and a causal temporal window ``w`` (Gaussian, ``window_s`` long),
``E_{θ,λ,±ω} = log(1 + |Σ_τ w(τ) e^{±iωτ} (I_{t−τ} ∗ g_{θ,λ})(y, x)|)``; ω = 0 is static
energy, ω > 0 responds to drift one way (+) or the other (−) across the stripes. Maps are
averaged over ``pool`` × ``pool`` blocks. Temporal filtering restarts at every run.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft

from niflow.data.movie import MovieTiming
from niflow.model.filters import gabor_kernel

__all__ = ["delay_features", "fir_delays", "loro_ridge", "motion_energy_features",
           "volume_features"]

DEFAULT_ALPHAS = np.logspace(-1, 6, 15)


def _spectra(h: int, w: int, n_orientations: int, wavelengths: tuple[float, ...],
             ) -> tuple[np.ndarray, tuple[int, int], list[int]]:
    kernels = [gabor_kernel(lam, 180.0 * o / n_orientations, 0.56)
               for o in range(n_orientations) for lam in wavelengths]
    pad = max(k.shape[0] for k in kernels)
    shape = (sfft.next_fast_len(h + pad), sfft.next_fast_len(w + pad))
    spec = np.stack([sfft.fft2(k, s=shape) for k in kernels]).astype(np.complex64)
    return spec, shape, [k.shape[0] // 2 for k in kernels]


def _temporal_filters(fps: float, temporal_hz: tuple[float, ...], window_s: float,
                      ) -> np.ndarray:
    """(n_temporal, L) complex causal filters, oldest lag last: ω = 0 once, ω > 0 twice."""
    length = max(1, int(round(window_s * fps)))
    tau = np.arange(length) / fps
    env = np.exp(-0.5 * (tau / (window_s / 2.5)) ** 2)
    env /= env.sum()
    rows = []
    for f in temporal_hz:
        if f == 0:
            rows.append(env.astype(np.complex128))
        else:
            if f >= fps / 2:
                raise ValueError(f"temporal frequency {f} Hz is not below the Nyquist "
                                 f"frequency of {fps} fps")
            rows += [env * np.exp(2j * np.pi * f * tau), env * np.exp(-2j * np.pi * f * tau)]
    return np.stack(rows)


def motion_energy_features(frames: np.ndarray, fps: float, frame_run: np.ndarray | None = None,
                           n_orientations: int = 8, wavelengths: tuple[float, ...] | None = None,
                           temporal_hz: tuple[float, ...] | None = None, window_s: float = 0.75,
                           pool: int = 4) -> np.ndarray:
    """Motion-energy features of every frame.

    Parameters
    ----------
    frames : ndarray of shape (n_frames, height, width) or (n_frames, height, width, 3)
        Luminance (colour is averaged), any scale (features are z-scored later).
    fps : float
    frame_run : ndarray of shape (n_frames,), optional
        Run labels; temporal filters restart at each run (default: one run).
    n_orientations : int
    wavelengths : tuple of float, optional
        Spatial wavelengths (pixels); default three from 4 px to a quarter of the width.
    temporal_hz : tuple of float, optional
        Temporal frequencies; default ``(0, fps / 4)``.
    window_s : float
        Length of the causal temporal window (seconds).
    pool : int
        Block size of the spatial pooling.

    Returns
    -------
    ndarray of shape (n_frames, n_channels · (height // pool) · (width // pool)), float32
        ``n_channels = n_orientations · len(wavelengths) · (1 or 2 per temporal frequency)``.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim == 4:
        x = x.mean(axis=3)
    n, h, w = x.shape
    lams = wavelengths or tuple(np.geomspace(4.0, max(w / 4, 4.5), 3))
    temporal = _temporal_filters(fps, temporal_hz or (0.0, fps / 4), window_s)
    spec, shape, offsets = _spectra(h, w, n_orientations, tuple(lams))
    runs = np.zeros(n, dtype=np.int64) if frame_run is None else np.asarray(frame_run)
    hb, wb = h // pool, w // pool
    out = np.empty((n, spec.shape[0] * temporal.shape[0], hb, wb), dtype=np.float32)
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    for a, b in zip(starts, [*starts[1:], n], strict=True):
        xf = sfft.fft2(x[a:b] - x[a:b].mean(), s=shape, workers=-1)
        for c, off in enumerate(offsets):
            # the kernel sits at the origin of the padded grid: 'same' output starts at its
            # half-width
            resp = sfft.ifft2(xf * spec[c], workers=-1)[:, off:off + h, off:off + w]
            for t, filt in enumerate(temporal):
                # causal: output at frame i uses frames i, i-1, ..., i-L+1 of this run
                acc = np.zeros_like(resp)
                for lag, wt in enumerate(filt):
                    if lag:
                        acc[lag:] += wt * resp[:-lag]
                    else:
                        acc += wt * resp
                e = np.log1p(np.abs(acc))
                blocks = e[:, :hb * pool, :wb * pool].reshape(b - a, hb, pool, wb, pool)
                out[a:b, c * temporal.shape[0] + t] = blocks.mean((2, 4))
    return out.reshape(n, -1)


def volume_features(features: np.ndarray, timing: MovieTiming, volumes: np.ndarray,
                    ) -> np.ndarray:
    """Mean of the frame features shown during each volume's TR (the ``tr`` seconds before
    its acquisition); zeros for a run's first volume, which reflects no frame.

    Parameters
    ----------
    features : ndarray of shape (n_frames, n_features)
    volumes : ndarray of shape (n,), int

    Returns
    -------
    ndarray of shape (n, n_features), float64
    """
    n_window = max(1, int(math.ceil(timing.tr * timing.fps - 1e-9)))
    idx = timing.frames_before(volumes, n_window)
    valid = idx >= 0
    gathered = features[np.where(valid, idx, 0)].astype(np.float64) * valid[..., None]
    count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    return gathered.sum(axis=1) / count


def fir_delays(tr: float, span_s: float = 8.0, max_delays: int = 8) -> tuple[int, ...]:
    """Delays (in volumes) covering ``span_s`` seconds after a volume: 1, 2, ... for slow TRs,
    every k-th volume for fast ones so that at most ``max_delays`` are stacked."""
    k = max(1, int(math.ceil(span_s / tr)))
    step = max(1, int(math.ceil(k / max_delays)))
    return tuple(range(step, k + 1, step))


def delay_features(x: np.ndarray, volume_run: np.ndarray, delays: tuple[int, ...],
                   ) -> np.ndarray:
    """Stack ``x`` delayed by each of ``delays`` volumes, within each run (zeros before a
    run's start).

    Parameters
    ----------
    x : ndarray of shape (n_volumes, n_features)
    volume_run : ndarray of shape (n_volumes,)
    delays : tuple of int

    Returns
    -------
    ndarray of shape (n_volumes, len(delays) · n_features)
    """
    out = np.zeros((x.shape[0], len(delays) * x.shape[1]), dtype=x.dtype)
    starts = np.flatnonzero(np.r_[True, volume_run[1:] != volume_run[:-1]])
    for a, b in zip(starts, [*starts[1:], x.shape[0]], strict=True):
        for i, d in enumerate(delays):
            if d < b - a:
                out[a + d:b, i * x.shape[1]:(i + 1) * x.shape[1]] = x[a:b - d]
    return out


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return [(a - mu) / sd for a in (train, *others)]


def _ridge_path(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, alphas: np.ndarray,
                ) -> np.ndarray:
    """Predictions (n_alphas, n_new, n_voxels) of ridge fits with centred ``y``.

    One eigendecomposition serves every penalty: of the Gram matrix ``x xᵀ`` (n × n) when
    there are more features than rows (the usual FIR design: ``x_new xᵀ (x xᵀ + α I)⁻¹ y``),
    else of ``xᵀ x`` (p × p). Both are the exact ridge solution; a wide SVD is ~30 times
    slower for a few hundred volumes by tens of thousands of features.
    """
    yc = y - y.mean(0)
    if x.shape[0] <= x.shape[1]:
        lam, vec = np.linalg.eigh(x @ x.T)
        proj, rhs = (x_new @ x.T) @ vec, vec.T @ yc
    else:
        lam, vec = np.linalg.eigh(x.T @ x)
        proj, rhs = x_new @ vec, vec.T @ (x.T @ yc)
    lam = np.maximum(lam, 0.0)  # rounding can leave tiny negative eigenvalues
    return np.stack([proj @ (rhs / (lam + a)[:, None]) for a in alphas]) + y.mean(0)


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(-2, keepdims=True), b - b.mean(-2, keepdims=True)
    den = np.sqrt((a * a).sum(-2) * (b * b).sum(-2))
    return np.where(den > 0, (a * b).sum(-2) / np.where(den > 0, den, 1), 0.0)


def loro_ridge(x_train: np.ndarray, y_train: np.ndarray, train_runs: np.ndarray,
               x_test: np.ndarray, alphas: np.ndarray = DEFAULT_ALPHAS,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Ridge per voxel, its penalty chosen by leave-one-run-out on the training runs.

    Parameters
    ----------
    x_train : ndarray of shape (n_train, n_features)
    y_train : ndarray of shape (n_train, n_voxels)
    train_runs : ndarray of shape (n_train,)
        Run of each training row; each run is held out once, and each voxel takes the α
        with the best mean held-out Pearson r (one run only: generalised cross-validation
        is not used; the largest-r α on that run's last fifth is).
    x_test : ndarray of shape (n_test, n_features)
    alphas : ndarray of shape (n_alphas,)

    Returns
    -------
    pred : ndarray of shape (n_test, n_voxels)
    alpha : ndarray of shape (n_voxels,)
    """
    runs = np.unique(train_runs)
    folds = ([train_runs == r for r in runs] if runs.size > 1
             else [np.arange(train_runs.size) >= int(0.8 * train_runs.size)])
    score = np.zeros((alphas.size, y_train.shape[1]))
    for held in folds:
        xa, xb = _standardise(x_train[~held], x_train[held])
        pred = _ridge_path(xa, y_train[~held], xb, alphas)
        score += _pearson_columns(pred, y_train[held][None])
    best = np.argmax(score, axis=0)
    xa, xt = _standardise(x_train, x_test)
    path = _ridge_path(xa, y_train, xt, alphas)
    pred = path[best, :, np.arange(y_train.shape[1])].T
    return pred, alphas[best]
