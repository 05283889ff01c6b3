"""The classic Gaussian pRF fit (Dumoulin & Wandell, 2008) with a canonical HRF.

What retinotopic mapping fits to a bar-sweep experiment: each voxel's neural time course is
the overlap of an isotropic 2-D Gaussian (centre ``x``, ``y``, size ``σ``, in pixels) with the
stimulus aperture of every frame, convolved with a double-gamma haemodynamic response and
sampled at the volumes. Per voxel, a coarse grid search over ``(x, y, σ, HRF peak)`` keeps
the grid point whose prediction correlates best with the BOLD signal (all grid predictions
are computed at once and correlated with one matrix product, in chunks of grid points), and
a local least-squares refinement of ``(x, y, σ)`` from there, with amplitude and baseline
fitted as linear terms, gives the estimate.

Conventions (those of :mod:`niflow.data.movie`): ``x`` is the column, ``y`` the row, the
centre of the top-left pixel is ``(0, 0)``; the Gaussian is integrated over each pixel (exact,
with the error function), so sizes below a pixel stay meaningful. Frame ``i`` of a run is
shown at ``i / fps``; volume ``j`` is acquired at ``j · tr`` and sums the frames shown before
it, ``ŷ_j = (1 / fps) Σ_{i/fps < j·tr} h(j·tr − i/fps) n_i``, within its run. The HRF is the
canonical double gamma (response shape 6, undershoot shape 16, ratio 1/6) with its time
scale set so that its maximum falls at the requested peak latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy import optimize, sparse, special

from niflow.data.movie import MovieTiming

__all__ = ["PRFFit", "PRFGrid", "VolumeSampler", "canonical_hrf", "default_grid", "fit_prf",
           "grid_search", "pixel_gaussian", "prf_timecourses"]

HRF_SPAN_S = 48.0  # the slowest canonical undershoot (peak 8 s) is below 1e-4 of it by then
MAX_GRID_VALUES = 8_000_000  # floats of grid predictions held at once


@cache
def _peak_per_scale() -> float:
    """Where ``Γ₆(u) − Γ₁₆(u) / 6`` peaks (in units of the time scale), ≈ 4.99."""
    def neg(u: float) -> float:
        return -float(_gamma_pdf(np.array([u]), 6.0)[0] - _gamma_pdf(np.array([u]), 16.0)[0] / 6)

    return float(optimize.minimize_scalar(neg, bounds=(3.0, 6.0), method="bounded",
                                          options={"xatol": 1e-10}).x)


def _gamma_pdf(u: np.ndarray, k: float) -> np.ndarray:
    safe = np.maximum(u, 1e-300)
    return np.where(u > 0, np.exp((k - 1) * np.log(safe) - safe - special.gammaln(k)), 0.0)


def canonical_hrf(t: np.ndarray, peak_s: float = 5.0) -> np.ndarray:
    """The canonical double-gamma HRF, scaled in time so that its maximum is at ``peak_s``.

    ``h(t) = (Γ₆(t/s) − Γ₁₆(t/s) / 6) / s`` with ``s = peak_s / u*`` (``u* ≈ 4.99``, the
    maximum of the unscaled shape); its integral is 5/6.

    Parameters
    ----------
    t : ndarray
        Seconds after a frame (values ≤ 0 give 0).
    peak_s : float
        Time of the maximum, seconds.

    Returns
    -------
    ndarray of t's shape, float64
    """
    if not peak_s > 0:
        raise ValueError(f"HRF peak must be > 0 s, got {peak_s}")
    s = peak_s / _peak_per_scale()
    u = np.asarray(t, dtype=np.float64) / s
    return (_gamma_pdf(u, 6.0) - _gamma_pdf(u, 16.0) / 6.0) / s


class VolumeSampler:
    """The linear map from a frame-rate time course to HRF-convolved volumes.

    Parameters
    ----------
    timing : MovieTiming
    volumes : ndarray of shape (n,), int
        Volume indices into the concatenated responses.
    span_s : float
        Longest haemodynamic lag.
    frame_map : ndarray of shape (n_frames,), int, optional
        Index of each frame into a set of distinct frames (time courses are then given per
        distinct frame; identical frames share a column).
    """

    def __init__(self, timing: MovieTiming, volumes: np.ndarray, span_s: float = HRF_SPAN_S,
                 frame_map: np.ndarray | None = None) -> None:
        volumes = np.asarray(volumes, dtype=np.int64)
        fmap = (np.arange(timing.n_frames) if frame_map is None
                else np.asarray(frame_map, dtype=np.int64))
        self.n_rows = volumes.size
        self.n_cols = int(fmap.max()) + 1 if fmap.size else 0
        n_back = int(math.ceil(span_s * timing.fps)) + 1
        rows, cols, lags = [], [], []
        for run in np.unique(timing.volume_run[volumes]):
            sel = np.flatnonzero(timing.volume_run[volumes] == run)
            v0, _ = timing.volume_span(int(run))
            f0, f1 = timing.frame_span(int(run))
            t = (volumes[sel] - v0) * timing.tr
            stop = np.minimum(np.ceil(t * timing.fps - 1e-9).astype(np.int64), f1 - f0)
            local = stop[:, None] - 1 - np.arange(n_back)[None, :]  # frames before, newest first
            lag = t[:, None] - local / timing.fps
            ok = (local >= 0) & (lag <= span_s)
            r = np.broadcast_to(sel[:, None], local.shape)
            rows.append(r[ok])
            cols.append(fmap[local[ok] + f0])
            lags.append(lag[ok])
        self._rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self._cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        self._lags = np.concatenate(lags) if lags else np.zeros(0)
        self.fps = float(timing.fps)
        self._cache: dict[float, sparse.csr_matrix] = {}

    def matrix(self, peak_s: float) -> sparse.csr_matrix:
        """The (n, n_cols) sparse matrix of weights ``h(lag) / fps`` for an HRF peaking at
        ``peak_s`` (identical frames summed)."""
        key = float(peak_s)
        if key not in self._cache:
            data = canonical_hrf(self._lags, key) / self.fps
            self._cache[key] = sparse.csr_matrix((data, (self._rows, self._cols)),
                                                 shape=(self.n_rows, self.n_cols))
        return self._cache[key]


def pixel_gaussian(centre: np.ndarray, sigma: np.ndarray | float, n: int,
                   derivatives: bool = False):
    """A 1-D Gaussian of unit mass integrated over each of ``n`` pixels.

    Pixel ``c`` spans ``[c − 1/2, c + 1/2]``; the 2-D pRF is the outer product of the row and
    the column factors.

    Parameters
    ----------
    centre : ndarray of shape (k,)
        Centres, pixels.
    sigma : float or ndarray of shape (k,)
    n : int
        Pixels along the axis.
    derivatives : bool
        Also return the derivatives with respect to the centre and to sigma.

    Returns
    -------
    g : ndarray of shape (k, n)
        (and ``dg_dcentre``, ``dg_dsigma`` of the same shape with ``derivatives``)
    """
    c = np.asarray(centre, dtype=np.float64).reshape(-1, 1)
    s = np.broadcast_to(np.asarray(sigma, dtype=np.float64).reshape(-1, 1), c.shape)
    pix = np.arange(n, dtype=np.float64)[None, :]
    hi, lo = (pix + 0.5 - c) / s, (pix - 0.5 - c) / s
    g = special.ndtr(hi) - special.ndtr(lo)
    if not derivatives:
        return g
    phi_hi = np.exp(-0.5 * hi**2) / math.sqrt(2 * math.pi)
    phi_lo = np.exp(-0.5 * lo**2) / math.sqrt(2 * math.pi)
    return g, -(phi_hi - phi_lo) / s, -(phi_hi * hi - phi_lo * lo) / s


@dataclass(frozen=True)
class PRFGrid:
    """The coarse grid: every combination of ``x``, ``y``, ``sigma`` (pixels) and ``peak``
    (HRF peak latency, seconds)."""

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    peak: np.ndarray

    @property
    def size(self) -> int:
        return self.x.size * self.y.size * self.sigma.size * self.peak.size

    def points(self) -> dict[str, np.ndarray]:
        """Every grid point, flat index ``((i_peak · n_σ + i_σ) · n_y + i_y) · n_x + i_x``.

        Returns
        -------
        dict with ``x``, ``y``, ``sigma``, ``peak``: ndarray of shape (size,)
        """
        p, s, y, x = np.meshgrid(self.peak, self.sigma, self.y, self.x, indexing="ij")
        return {"x": x.ravel(), "y": y.ravel(), "sigma": s.ravel(), "peak": p.ravel()}


def default_grid(apertures: np.ndarray, n_positions: int = 24, n_sigmas: int = 10,
                 peaks: tuple[float, ...] = (5.0,)) -> PRFGrid:
    """Centres evenly over the pixels the apertures ever cover (at most ``n_positions`` per
    axis, at most one per pixel), sizes log-spaced from 0.5 px to a third of the image width.

    Parameters
    ----------
    apertures : ndarray of shape (n_frames, height, width)
    """
    covered = np.asarray(apertures).reshape(len(apertures), -1).max(axis=0).reshape(
        apertures.shape[1:]) > 0
    if not covered.any():
        raise ValueError("apertures: no frame covers any pixel; nothing to map")
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))

    def axis(lo: int, hi: int) -> np.ndarray:
        return np.linspace(lo, hi, min(n_positions, hi - lo + 1))

    h, w = covered.shape
    return PRFGrid(axis(int(cols[0]), int(cols[-1])), axis(int(rows[0]), int(rows[-1])),
                   np.geomspace(0.5, max(1.0, max(h, w) / 3), n_sigmas),
                   np.asarray(peaks, dtype=np.float64))


def _distinct_frames(apertures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct frames (k, H, W) float64 and each frame's index into them (n_frames,)."""
    a = np.ascontiguousarray(apertures)
    flat = a.reshape(len(a), -1)
    uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
    return uniq.reshape(-1, *a.shape[1:]).astype(np.float64), inverse.reshape(-1)


def _overlap(frames: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """``Σ_{r,c} frames[f, r, c] · gy[v, r] · gx[v, c]``: frames (k, H, W), gy (V, H), gx (V, W)
    → (k, V)."""
    k, h, w = frames.shape
    t = (frames.reshape(k * h, w) @ gx.T).reshape(k, h, -1)  # (k, H, V)
    return np.einsum("khv,vh->kv", t, gy)


def _check(apertures: np.ndarray, timing: MovieTiming, bold: np.ndarray | None) -> np.ndarray:
    a = np.asarray(apertures)
    if a.ndim != 3 or a.dtype.kind not in "biuf":
        raise ValueError(f"apertures: expected a numeric (n_frames, height, width) array, got "
                         f"shape {a.shape} of {a.dtype}")
    if a.shape[0] != timing.n_frames:
        raise ValueError(f"apertures: {a.shape[0]} frames but the timing has "
                         f"{timing.n_frames}")
    if bold is not None:
        if bold.ndim != 2 or bold.shape[0] != timing.n_volumes:
            raise ValueError(f"bold: expected shape ({timing.n_volumes}, n_voxels) (one row "
                             f"per volume of the timing), got {bold.shape}")
        if not np.isfinite(bold).all():
            raise ValueError("bold: NaN or Inf values")
    return a


def _timing(timing: MovieTiming | None, fps, tr, frame_run, volume_run, n_frames: int,
            n_volumes: int) -> MovieTiming:
    if timing is not None:
        return timing
    if fps is None or tr is None:
        raise ValueError("give timing (a MovieTiming) or fps and tr")
    fr = np.zeros(n_frames, np.int64) if frame_run is None else np.asarray(frame_run, np.int64)
    vr = np.zeros(n_volumes, np.int64) if volume_run is None else np.asarray(volume_run,
                                                                             np.int64)
    return MovieTiming(float(fps), float(tr), fr, vr)


def _zscore_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns z-scored (population sd) and a mask of the non-constant ones."""
    xc = x - x.mean(axis=0)
    sd = np.sqrt((xc**2).mean(axis=0))
    ok = sd > 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0)))
    return xc / np.where(ok, sd, 1.0), ok


def grid_search(apertures: np.ndarray, bold: np.ndarray, sampler: VolumeSampler,
                grid: PRFGrid, normalise: bool = True,
                max_values: int = MAX_GRID_VALUES) -> tuple[np.ndarray, np.ndarray]:
    """Best grid point of every voxel by Pearson r.

    Parameters
    ----------
    apertures : ndarray of shape (k, H, W)
        The distinct frames of the apertures, float (the columns of ``sampler``).
    bold : ndarray of shape (n, V)
        The volumes ``sampler`` predicts.
    sampler : VolumeSampler
        Built with the frame map of the distinct frames.
    grid : PRFGrid
    normalise : bool
        Unit-mass Gaussians (the time course is the fraction of the pRF covered) rather than
        unit-peak ones; r does not depend on it (a constant per pRF), the amplitude does.
    max_values : int
        Bound on the predictions held at once (volumes × grid points).

    Returns
    -------
    best : ndarray of shape (V,), int64
        Flat grid index (:meth:`PRFGrid.points`); -1 where no grid prediction varies or the
        voxel's BOLD is constant.
    r : ndarray of shape (V,)
        Its Pearson r (-inf where ``best`` is -1).
    """
    n, v = bold.shape
    zy, varies = _zscore_columns(np.asarray(bold, dtype=np.float64))
    best = np.full(v, -1, dtype=np.int64)
    best_r = np.full(v, -np.inf)
    _, h, w = apertures.shape
    nx, ny = grid.x.size, grid.y.size
    rows_per_chunk = max(1, min(ny, max_values // max(1, n * nx)))
    for i_s, s in enumerate(grid.sigma):
        gx, gy = pixel_gaussian(grid.x, s, w), pixel_gaussian(grid.y, s, h)
        if not normalise:
            gx, gy = gx * math.sqrt(2 * math.pi) * s, gy * math.sqrt(2 * math.pi) * s
        k = apertures.shape[0]
        t = (apertures.reshape(k * h, w) @ gx.T).reshape(k, h, nx)
        for y0 in range(0, ny, rows_per_chunk):
            neural = np.matmul(gy[y0:y0 + rows_per_chunk][None], t).reshape(k, -1)  # (k, c)
            for i_p, p in enumerate(grid.peak):
                pred = sampler.matrix(float(p)) @ neural  # (n, c)
                zp, ok = _zscore_columns(pred)
                r = (zp.T @ zy) / n  # (c, V)
                r[~ok] = -np.inf
                j = np.argmax(r, axis=0)
                rj = r[j, np.arange(v)]
                better = rj > best_r
                flat = ((i_p * grid.sigma.size + i_s) * ny + y0) * nx + j
                best[better], best_r[better] = flat[better], rj[better]
    best[~varies], best_r[~varies] = -1, -np.inf
    return best, best_r


def _linear_fit(p: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Amplitude, baseline and Pearson r of ``y ≈ a p + b``."""
    pc, yc = p - p.mean(), y - y.mean()
    ss = float(pc @ pc)
    if ss <= 0:
        return 0.0, float(y.mean()), -np.inf
    a = float(pc @ yc) / ss
    den = math.sqrt(ss * float(yc @ yc))
    return a, float(y.mean() - a * p.mean()), float(pc @ yc) / den if den > 0 else -np.inf


class _Model:
    """One voxel's prediction and its Jacobian, for the refinement."""

    def __init__(self, frames: np.ndarray, normalise: bool) -> None:
        self.frames, self.normalise = frames, normalise
        k, h, w = frames.shape
        self.flat = frames.reshape(k * h, w)
        self.h, self.w = h, w

    def neural(self, x: float, y: float, s: float, jac: bool = False):
        gx, dgx, sgx = pixel_gaussian(np.array([x]), s, self.w, derivatives=True)
        gy, dgy, sgy = pixel_gaussian(np.array([y]), s, self.h, derivatives=True)
        k = self.frames.shape[0]
        t = (self.flat @ np.stack([gx[0], dgx[0], sgx[0]], axis=1)).reshape(k, self.h, 3)
        n = t[:, :, 0] @ gy[0]
        if not jac:
            return n * (2 * math.pi * s * s) if not self.normalise else n
        dn = np.stack([t[:, :, 1] @ gy[0], t[:, :, 0] @ dgy[0],
                       t[:, :, 0] @ sgy[0] + t[:, :, 2] @ gy[0]], axis=1)
        if not self.normalise:
            area = 2 * math.pi * s * s
            dn = dn * area
            dn[:, 2] += 4 * math.pi * s * n
            n = n * area
        return n, dn


def _refine(model: _Model, op: sparse.csr_matrix, y: np.ndarray, start: np.ndarray,
            lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Least squares over ``(x, y, σ, amplitude, baseline)`` from ``start`` (x, y, σ)."""
    def parts(theta):
        n, dn = model.neural(theta[0], theta[1], theta[2], jac=True)
        return op @ n, op @ dn

    p0, _ = parts(start)
    a0, b0, _ = _linear_fit(p0, y)
    x0 = np.array([*start, a0, b0])

    def residual(theta):
        p = op @ model.neural(theta[0], theta[1], theta[2])
        return theta[3] * p + theta[4] - y

    def jacobian(theta):
        p, dp = parts(theta)
        return np.column_stack([theta[3] * dp, p, np.ones_like(p)])

    big = np.inf
    res = optimize.least_squares(residual, x0, jac=jacobian, method="trf",
                                 bounds=(np.r_[lo, -big, -big], np.r_[hi, big, big]),
                                 x_scale="jac", max_nfev=200)
    return res.x[:3]


@dataclass
class PRFFit:
    """Gaussian pRF estimates of every voxel.

    Attributes
    ----------
    x, y, sigma : ndarray of shape (V,)
        Centre (column, row) and size, pixels; NaN (as every attribute) where the voxel's
        BOLD or every grid prediction is constant.
    hrf_peak_s : ndarray of shape (V,)
        Peak latency of the chosen canonical HRF, seconds.
    amplitude, baseline : ndarray of shape (V,)
        ``BOLD ≈ amplitude · prediction + baseline`` on the fitted volumes.
    r : ndarray of shape (V,)
        Pearson r of the final prediction on the fitted volumes.
    grid_r : ndarray of shape (V,)
        The grid search's best r.
    normalise : bool
    span_s : float
    """

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    hrf_peak_s: np.ndarray
    amplitude: np.ndarray
    baseline: np.ndarray
    r: np.ndarray
    grid_r: np.ndarray
    normalise: bool = True
    span_s: float = HRF_SPAN_S
    info: dict = field(default_factory=dict)

    def predict(self, apertures: np.ndarray, timing: MovieTiming, volumes: np.ndarray,
                ) -> np.ndarray:
        """Predicted BOLD of every voxel at ``volumes`` of a (possibly new) recording.

        Parameters
        ----------
        apertures : ndarray of shape (n_frames, H, W)
        timing : MovieTiming
        volumes : ndarray of shape (n,), int

        Returns
        -------
        ndarray of shape (n, V), float64
            NaN columns for voxels without an estimate.
        """
        a = _check(apertures, timing, None)
        frames, fmap = _distinct_frames(a)
        sampler = VolumeSampler(timing, volumes, self.span_s, fmap)
        out = np.full((sampler.n_rows, self.x.size), np.nan)
        ok = np.isfinite(self.x)
        _, h, w = frames.shape
        gx = pixel_gaussian(self.x[ok], self.sigma[ok], w)
        gy = pixel_gaussian(self.y[ok], self.sigma[ok], h)
        neural = _overlap(frames, gy, gx)
        if not self.normalise:
            neural = neural * (2 * math.pi * self.sigma[ok] ** 2)
        idx = np.flatnonzero(ok)
        for p in np.unique(self.hrf_peak_s[ok]):
            sel = self.hrf_peak_s[ok] == p
            pred = sampler.matrix(float(p)) @ neural[:, sel]
            out[:, idx[sel]] = pred * self.amplitude[idx[sel]] + self.baseline[idx[sel]]
        return out


def prf_timecourses(apertures: np.ndarray, timing: MovieTiming, volumes: np.ndarray,
                    x: np.ndarray, y: np.ndarray, sigma: np.ndarray, peak_s: np.ndarray,
                    normalise: bool = True) -> np.ndarray:
    """Predicted volumes (amplitude 1, baseline 0) of Gaussian pRFs.

    Parameters
    ----------
    apertures : ndarray of shape (n_frames, H, W)
    timing : MovieTiming
    volumes : ndarray of shape (n,), int
    x, y, sigma, peak_s : ndarray of shape (k,)

    Returns
    -------
    ndarray of shape (n, k), float64
    """
    k = np.asarray(x).size
    fit = PRFFit(np.asarray(x, float), np.asarray(y, float), np.asarray(sigma, float),
                 np.asarray(peak_s, float), np.ones(k), np.zeros(k), np.zeros(k), np.zeros(k),
                 normalise=normalise)
    return fit.predict(apertures, timing, volumes)


def fit_prf(apertures: np.ndarray, bold: np.ndarray, timing: MovieTiming | None = None, *,
            fps: float | None = None, tr: float | None = None,
            frame_run: np.ndarray | None = None, volume_run: np.ndarray | None = None,
            volumes: np.ndarray | None = None, grid: PRFGrid | None = None,
            peaks: tuple[float, ...] = (5.0,), normalise: bool = True, refine: bool = True,
            max_values: int = MAX_GRID_VALUES) -> PRFFit:
    """Fit a Gaussian pRF and pick a canonical HRF's peak latency for every voxel.

    Parameters
    ----------
    apertures : ndarray of shape (n_frames, H, W)
        Stimulus aperture of every frame (binary 0/1 or float; 1 = stimulated).
    bold : ndarray of shape (n_TR, V)
        One row per volume of the timing.
    timing : MovieTiming, optional
        Frame and volume timing; or give ``fps``, ``tr`` and optionally ``frame_run`` /
        ``volume_run`` (default: one run).
    volumes : ndarray of shape (n,), int, optional
        The volumes to fit (e.g. the training runs'); default all.
    grid : PRFGrid, optional
        Default :func:`default_grid` with ``peaks``.
    peaks : tuple of float
        HRF peak latencies to choose from (seconds); default the canonical 5 s only.
    normalise : bool
        Unit-mass Gaussians (see :func:`grid_search`).
    refine : bool
        Refine centre and size by least squares after the grid search.
    max_values : int
        Bound on the grid predictions held at once.

    Returns
    -------
    PRFFit
    """
    bold = np.asarray(bold, dtype=np.float64)
    if bold.ndim == 1:
        bold = bold[:, None]
    timing = _timing(timing, fps, tr, frame_run, volume_run, len(apertures), len(bold))
    a = _check(apertures, timing, bold)
    vols = np.arange(timing.n_volumes) if volumes is None else np.asarray(volumes, np.int64)
    grid = grid if grid is not None else default_grid(a, peaks=peaks)
    frames, fmap = _distinct_frames(a)
    sampler = VolumeSampler(timing, vols, HRF_SPAN_S, fmap)
    y = bold[vols]
    best, grid_r = grid_search(frames, y, sampler, grid, normalise, max_values)
    pts = grid.points()
    v = y.shape[1]
    out = {k: np.full(v, np.nan) for k in ("x", "y", "sigma", "peak", "a", "b", "r")}
    model = _Model(frames, normalise)
    margin = 0.5 * max(float(np.diff(grid.x).max(initial=1.0)),
                       float(np.diff(grid.y).max(initial=1.0)))
    lo = np.array([grid.x.min() - margin, grid.y.min() - margin, 0.5 * grid.sigma.min()])
    hi = np.array([grid.x.max() + margin, grid.y.max() + margin, 1.5 * grid.sigma.max()])
    for j in np.flatnonzero(best >= 0):
        theta = np.array([pts["x"][best[j]], pts["y"][best[j]], pts["sigma"][best[j]]])
        peak = float(pts["peak"][best[j]])
        cand = [(theta, peak)]
        if refine:
            start = np.clip(theta, lo + 1e-6, hi - 1e-6)
            moved = _refine(model, sampler.matrix(peak), y[:, j], start, lo, hi)
            n = model.neural(*moved)
            # the refined pRF with every grid latency, the best of them refined again
            rs = [_linear_fit(sampler.matrix(float(p)) @ n, y[:, j])[2] for p in grid.peak]
            other = float(grid.peak[int(np.argmax(rs))])
            cand.append((moved, peak))
            if other != peak:
                cand.append((_refine(model, sampler.matrix(other), y[:, j],
                                     np.clip(moved, lo + 1e-6, hi - 1e-6), lo, hi), other))
        # keep the best positive pRF (the grid point itself if refinement lost it)
        scored = [(*_linear_fit(sampler.matrix(pk) @ model.neural(*th), y[:, j]), th, pk)
                  for th, pk in cand]
        fit_a, fit_b, r, th, pk = max(scored, key=lambda c: (c[0] > 0, c[2]))
        out["x"][j], out["y"][j], out["sigma"][j] = th
        out["peak"][j], out["a"][j], out["b"][j], out["r"][j] = pk, fit_a, fit_b, r
    grid_r = np.where(best >= 0, grid_r, np.nan)
    return PRFFit(out["x"], out["y"], out["sigma"], out["peak"], out["a"], out["b"], out["r"],
                  grid_r, normalise, HRF_SPAN_S,
                  {"grid_points": grid.size, "refined": bool(refine),
                   "peaks_s": [float(p) for p in grid.peak]})
