"""Movie fMRI with a known ground truth: clips, spatiotemporal voxels, per-voxel HRFs, noise.

A movie is a sequence of 2-4 s clips cut together (as in natural-clip experiments): drifting
gratings, and textures, natural-like patches, dots, bars or letters translating at a random
velocity, with occasional mid-grey blanks. Each voxel has a Gaussian pRF and feature weights
(the static simulation of :func:`~niflow.data.simulate.cortex.simulate_responses`, applied to
every frame), a temporal profile mixing that sustained drive with its transient (the
absolute change from the previous frame, i.e. sensitivity to motion and onsets), and its own
haemodynamic response: a double gamma whose peak latency is drawn from 4-7 s. With
``motion=True`` each voxel also signals motion in one preferred direction (of 8): opponent
Reichardt correlators of the band-passed frames, half-rectified and pooled by the voxel's
pRF, mixed in with a weight drawn from 0.3-0.7 (as MT-like or direction-biased voxels would
be). Volume ``j``
of a run is the HRF-weighted sum of the neural drive of the frames shown before ``j * tr``.
Noise is AR(1) (φ = 0.3), scaled per voxel so that the mean of the test run's repeats
correlates with the noise-free BOLD at the voxel's noise ceiling (drawn uniformly from
``ceiling_range``); training runs are seen once, with the noise of a single repeat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from niflow.data.simulate.cortex import gaussian_maps, simulate_responses
from niflow.data.simulate.settings import SimConfig
from niflow.data.simulate.stimuli import make_stimuli

__all__ = ["MovieSimulation", "direction_maps", "double_gamma_hrf", "hrf_shape", "make_movie",
           "simulate_bold", "simulate_movie", "write_movie_simulation"]

_MOVIE_STREAM = 3307
_CLIP_FAMILIES = ("grating", "textures", "natural", "dots", "bars", "letters")
HRF_SECONDS = 32.0  # support of every HRF
PEAK_RANGE = (4.0, 7.0)
PEAK_STEP = 0.05  # peaks are drawn on this grid, so voxels share a handful of HRF matrices
AR_PHI = 0.3


def double_gamma_hrf(t: NDArray, peak_s: float) -> NDArray[np.float64]:
    """A double-gamma haemodynamic response with its maximum at ``peak_s`` seconds.

    Shape 6 for the response and 16 for the undershoot (ratio 1/6), the canonical form,
    with the time scale stretched to move the peak; its integral is 1 - 1/6.

    Parameters
    ----------
    t : ndarray
        Seconds after the stimulus (values ≤ 0 give 0).
    peak_s : float

    Returns
    -------
    ndarray of t's shape
    """
    scale = peak_s / 5.0  # the mode of Gamma(6, s) is 5 s
    tt = np.maximum(np.asarray(t, dtype=np.float64), 0.0) / scale

    def gamma_pdf(x, k):
        with np.errstate(divide="ignore"):
            return np.where(x > 0, np.exp((k - 1) * np.log(np.maximum(x, 1e-300)) - x
                                          - math.lgamma(k)), 0.0)

    return (gamma_pdf(tt, 6.0) - gamma_pdf(tt, 16.0) / 6.0) / scale


def hrf_shape(peak_s: float, dt: float = 0.001) -> tuple[float, float]:
    """Time of the maximum and full width at half maximum (seconds) of the HRF, measured on a
    fine grid (the peak is not exactly ``peak_s`` because the undershoot shifts it)."""
    t = np.arange(0.0, HRF_SECONDS, dt)
    h = double_gamma_hrf(t, peak_s)
    i = int(np.argmax(h))
    above = np.flatnonzero(h >= h[i] / 2)
    return float(t[i]), float((above[-1] - above[0]) * dt)


def _blank(size: int, n: int) -> NDArray[np.uint8]:
    return np.full((n, size, size), 128, dtype=np.uint8)


def _grating_clip(rng: np.random.Generator, size: int, n: int, fps: float) -> NDArray[np.uint8]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0, np.pi)
    wavelength = rng.uniform(4.0, size / 2)
    speed = rng.uniform(0.5, 3.0) * rng.choice([-1, 1])  # cycles per second
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    radius = rng.uniform(0.2, 0.5) * size
    aperture = 1 / (1 + np.exp((np.hypot(xx - cx, yy - cy) - radius) / 1.5))
    u = xx * np.cos(theta) + yy * np.sin(theta)
    contrast = rng.uniform(0.4, 1.0)
    t = np.arange(n)[:, None, None] / fps
    img = contrast * aperture * np.sin(2 * np.pi * (u / wavelength - speed * t))
    return np.clip(128 + 127 * img, 0, 255).astype(np.uint8)


def _moving_clip(rng: np.random.Generator, family: str, size: int, n: int, fps: float,
                 ) -> NDArray[np.uint8]:
    big = make_stimuli(family, 1, size=2 * size, seed=int(rng.integers(2**31)))[0]
    speed = rng.uniform(1.0, 8.0)  # pixels per second
    angle = rng.uniform(0, 2 * np.pi)
    start = rng.uniform(0, size, 2)
    t = np.arange(n) / fps
    pos = start[None, :] + speed * t[:, None] * np.array([np.cos(angle), np.sin(angle)])
    # reflect at the edges of the large image so the window stays inside it
    pos = np.abs(np.mod(pos, 2 * size) - size)
    pos = np.clip(np.round(pos).astype(int), 0, size)
    return np.stack([big[y:y + size, x:x + size] for x, y in pos])


def make_movie(run_seconds: float, fps: float, size: int, seed: int,
               families: tuple[str, ...] = _CLIP_FAMILIES) -> NDArray[np.uint8]:
    """One run of clips, ``round(run_seconds * fps)`` frames.

    Returns
    -------
    ndarray of shape (n_frames, size, size), uint8, mid-grey 128 background
    """
    rng = np.random.default_rng([seed, _MOVIE_STREAM])
    n_total = int(round(run_seconds * fps))
    clips, n = [], 0
    while n < n_total:
        length = min(n_total - n, max(1, int(round(rng.uniform(2.0, 4.0) * fps))))
        if rng.uniform() < 0.1:
            clips.append(_blank(size, length))
        else:
            family = str(rng.choice(families))
            clips.append(_grating_clip(rng, size, length, fps) if family == "grating"
                         else _moving_clip(rng, family, size, length, fps))
        n += length
    return np.concatenate(clips)


@dataclass
class MovieSimulation:
    """A movie fMRI data set and its ground truth, in the file contract of
    :mod:`niflow.data.movie`.

    Attributes
    ----------
    stim : ndarray of shape (n_frames, size, size), uint8
    fps, tr : float
    frame_run : ndarray of shape (n_frames,), int64
    volume_run : ndarray of shape (n_TR,), int64
    test_run : int
        The repeated run (the last one).
    responses : dict of str to ndarray of shape (n_TR, n_voxels), float32
        The test run's volumes hold the mean of its repeats.
    repeats : dict of str to ndarray of shape (n_repeats, n_TR_test, n_voxels), float32
    signal : dict of str to ndarray of shape (n_TR, n_voxels), float32
        Noise-free BOLD, z-scored per voxel.
    truth : dict of str to dict of str to ndarray of shape (n_voxels,)
        ``prf_x``, ``prf_y``, ``prf_sigma`` (pixels), ``hrf_peak_s``, ``hrf_fwhm_s`` (the
        HRF's measured maximum and width), ``hrf_param_s`` (its latency parameter),
        ``transient`` (weight of the transient drive, 0-1), ``noise_ceiling``.
    aperture : ndarray of shape (n_frames, size, size), uint8 0/1, optional
        Where each frame shows the stimulus (a pRF-mapping experiment's bar apertures).
    """

    stim: np.ndarray
    fps: float
    tr: float
    frame_run: np.ndarray
    volume_run: np.ndarray
    test_run: int
    responses: dict[str, np.ndarray]
    repeats: dict[str, np.ndarray]
    signal: dict[str, np.ndarray]
    truth: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    aperture: np.ndarray | None = None


def _zscore(x: NDArray) -> NDArray[np.float64]:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _transient(drive: NDArray, starts: NDArray) -> NDArray[np.float64]:
    d = np.abs(np.diff(drive, axis=0, prepend=drive[:1]))
    d[starts] = 0.0  # nothing changed before a run's first frame
    return d


DIRECTION_SHIFT_PX = 2.0  # the correlators' spacing
MOTION_WEIGHT = (0.3, 0.7)


def _bandpassed(stim: NDArray) -> NDArray[np.float32]:
    """Frames (n, H, W) in [0, 1] minus their blur at 2 px, after a blur at 1 px (a DoG)."""
    from scipy.ndimage import gaussian_filter

    x = stim.astype(np.float32) / (255.0 if stim.dtype == np.uint8 else 1.0)
    return (gaussian_filter(x, (0, 1, 1)) - gaussian_filter(x, (0, 2, 2))).astype(np.float32)


def _shifted(x: NDArray, dy: int, dx: int) -> NDArray:
    """``x`` (n, H, W) with pixel (y, x) holding the input's (y − dy, x − dx); zeros outside."""
    out = np.zeros_like(x)
    h, w = x.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def direction_maps(stim: NDArray, starts: NDArray) -> NDArray[np.float32]:
    """Half-rectified opponent Reichardt outputs for 8 directions of motion.

    For the axis ``u`` at angle θ (counter-clockwise from +x, y up), ``R_u(p, t) =
    s(p, t) s(p − δu, t−1) − s(p − δu, t) s(p, t−1)`` on band-passed frames ``s``, positive
    where content moves along ``u``; direction ``θ`` is ``max(R_u, 0)`` and ``θ + 180°`` is
    ``max(−R_u, 0)``. Zero at every run's first frame.

    Parameters
    ----------
    stim : ndarray of shape (n_frames, H, W)
    starts : ndarray of int
        First frame of every run.

    Returns
    -------
    ndarray of shape (n_frames, 8, H, W), float32; direction k is at 45·k degrees.
    """
    s = _bandpassed(stim)
    prev = np.concatenate([np.zeros_like(s[:1]), s[:-1]])
    prev[starts] = 0.0
    out = np.empty((len(s), 8, *s.shape[1:]), np.float32)
    for k in range(4):
        theta = math.radians(45.0 * k)
        dx = int(round(DIRECTION_SHIFT_PX * math.cos(theta)))
        dy = -int(round(DIRECTION_SHIFT_PX * math.sin(theta)))  # rows grow downward
        r = s * _shifted(prev, dy, dx) - _shifted(s, dy, dx) * prev
        out[:, k] = np.maximum(r, 0.0)
        out[:, k + 4] = np.maximum(-r, 0.0)
    return out


def _direction_drives(stim: NDArray, starts: NDArray,
                      voxels: Mapping[str, tuple[Mapping[str, NDArray], NDArray]],
                      chunk: int = 2048) -> dict[str, NDArray[np.float64]]:
    """Every voxel's pRF-pooled motion signal in its preferred direction.

    ``voxels``: per area, its pRFs (``prf_x``, ``prf_y``, ``prf_sigma``) and each voxel's
    direction index (V,). The correlators run once over the movie for all areas.
    Returns {area: (n_frames, V)}.
    """
    h, w = stim.shape[1:]
    gauss = {a: gaussian_maps(prf, h, w) for a, (prf, _) in voxels.items()}  # (V, H·W)
    out = {a: np.empty((len(stim), len(d))) for a, (_, d) in voxels.items()}
    for i in range(0, len(stim), chunk):
        lo = max(i - 1, 0)  # the correlators need the frame before the chunk
        firsts = starts[(starts > lo) & (starts < i + chunk)] - lo
        maps = direction_maps(stim[lo:i + chunk], firsts)[i - lo:]
        flat = maps.reshape(-1, h * w)
        for a, (_, direction) in voxels.items():
            pooled = (flat @ gauss[a].T).reshape(len(maps), 8, -1)
            out[a][i:i + len(maps)] = np.take_along_axis(pooled, direction[None, None], 1)[:, 0]
    return out


def _motion_voxels(stim: NDArray, starts: NDArray, prfs: Mapping[str, Mapping[str, NDArray]],
                   n_voxels: Mapping[str, int], seed: int,
                   ) -> dict[str, tuple[NDArray, NDArray, NDArray]]:
    """Per area: each voxel's direction index (V,), motion weight (V,) and z-scored motion
    drive (n_frames, V). Drawn from their own stream, so that the plain regime's draws stay
    the same with and without motion."""
    drawn = {}
    for i, (area, v) in enumerate(n_voxels.items()):
        rng = np.random.default_rng([seed, _MOVIE_STREAM, 2, i])
        drawn[area] = (rng.integers(0, 8, v), rng.uniform(*MOTION_WEIGHT, v))
    drives = _direction_drives(stim, starts, {a: (prfs[a], d) for a, (d, _) in drawn.items()})
    return {a: (d, m, _zscore(drives[a])) for a, (d, m) in drawn.items()}


def _bold_matrix(n_volumes: int, n_frames: int, fps: float, tr: float, peak: float,
                 ) -> NDArray[np.float64]:
    """(n_volumes, n_frames): weight of frame i in volume j, h(j·tr − i/fps)/fps for frames
    whose onset precedes the volume."""
    lag = np.arange(n_volumes)[:, None] * tr - np.arange(n_frames)[None, :] / fps
    return np.where(lag > 1e-9, double_gamma_hrf(lag, peak), 0.0) / fps


def _run_bold(neural: NDArray, peaks: NDArray, fps: float, tr: float, n_volumes: int,
              ) -> NDArray[np.float64]:
    out = np.zeros((n_volumes, neural.shape[1]))
    for p in np.unique(peaks):
        sel = peaks == p
        out[:, sel] = _bold_matrix(n_volumes, neural.shape[0], fps, tr, float(p)) @ neural[:, sel]
    return out


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], axis_len: int) -> NDArray:
    """Unit-variance AR(1) noise along the first axis of ``shape`` (volumes first)."""
    e = rng.standard_normal(shape) * math.sqrt(1 - AR_PHI**2)
    out = np.empty(shape)
    out[0] = rng.standard_normal(shape[1:])
    for j in range(1, axis_len):
        out[j] = AR_PHI * out[j - 1] + e[j]
    return out


def simulate_movie(n_train_runs: int = 4, run_seconds: float = 120.0, fps: float = 8.0,
                   tr: float = 1.0, size: int = 32, n_voxels: Mapping[str, int] | None = None,
                   n_repeats: int = 6, ceiling_range: tuple[float, float] = (0.3, 0.7),
                   nonlinear: bool = False, motion: bool = False, seed: int = 0,
                   ) -> MovieSimulation:
    """Simulate a movie fMRI data set: ``n_train_runs`` runs and one repeated test run.

    Parameters
    ----------
    n_train_runs : int
        Runs seen once (labels 1..n); the test run is ``n_train_runs + 1``.
    run_seconds, fps, tr : float
        Duration of every run; frame rate; seconds per volume.
    size : int
        Frame height and width (pixels).
    n_voxels : dict of str to int, optional
        Voxels per area, default ``{"V1": 200, "V2": 150}``.
    n_repeats : int
        Presentations of the test run.
    ceiling_range : tuple of float
        Range of per-voxel noise ceilings (correlation of the repeats' mean with the
        noise-free BOLD); the default has a median of 0.5.
    nonlinear : bool
        Divisively normalised, thresholded and squared V1 maps and an end-stopping and
        junction V2 (the static simulator's nonlinear stages) instead of the energy model.
    motion : bool
        Every voxel also signals motion in a preferred direction (module documentation).
    seed : int

    Returns
    -------
    MovieSimulation
    """
    n_voxels = dict(n_voxels or {"V1": 200, "V2": 150})
    if n_train_runs < 1 or n_repeats < 2:
        raise ValueError("need at least one training run and two repeats of the test run")
    cfg = (SimConfig(v1_nonlinearity="normalized", v1_threshold_quantile=0.5, v1_power=1.5,
                     v2_mode="endstop", v2_threshold_quantile=0.8, n_orientations=4,
                     wavelengths=(4.0, 8.0)) if nonlinear
           else SimConfig(n_orientations=4, wavelengths=(4.0, 8.0)))
    runs = list(range(1, n_train_runs + 2))
    movies = [make_movie(run_seconds, fps, size, seed * 1000 + r) for r in runs]
    stim = np.concatenate(movies)
    frame_run = np.concatenate([np.full(len(m), r) for m, r in zip(movies, runs, strict=True)])
    n_vol = int(math.floor(run_seconds / tr + 1e-9))
    volume_run = np.repeat(runs, n_vol).astype(np.int64)
    return simulate_bold(stim, frame_run, volume_run, fps, tr, n_voxels, n_repeats,
                         ceiling_range, cfg, seed, motion)


def simulate_bold(stim: NDArray, frame_run: NDArray, volume_run: NDArray, fps: float,
                  tr: float, n_voxels: Mapping[str, int], n_repeats: int = 6,
                  ceiling_range: tuple[float, float] = (0.3, 0.7),
                  config: SimConfig | None = None, seed: int = 0, motion: bool = False,
                  ) -> MovieSimulation:
    """Voxels, HRFs and noise for a given movie; the last run is the repeated test run.

    Parameters
    ----------
    stim : ndarray of shape (n_frames, H, W), uint8
    frame_run : ndarray of shape (n_frames,), int
        Run labels, runs in order.
    volume_run : ndarray of shape (n_TR,), int
        The same runs; each lasts as long as its frames (within one TR).
    fps, tr : float
    n_voxels : dict of str to int
    n_repeats : int
    ceiling_range : tuple of float
    config : SimConfig, optional
        The static cortex (pRF law, feature stages); default ``SimConfig()``.
    seed : int
    motion : bool
        Add each voxel's direction-selective drive; the truth then also holds
        ``direction_deg`` and ``motion_weight``.

    Returns
    -------
    MovieSimulation
    """
    frame_run = np.asarray(frame_run, dtype=np.int64)
    volume_run = np.asarray(volume_run, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, frame_run[1:] != frame_run[:-1]])
    runs = [int(r) for r in frame_run[starts]]
    static = simulate_responses(stim, n_voxels, seed=seed, config=config)
    rng = np.random.default_rng([seed, _MOVIE_STREAM, 1])
    moving = _motion_voxels(stim, starts, static.truth, n_voxels, seed) if motion else {}
    out = MovieSimulation(stim, fps, tr, frame_run, volume_run, runs[-1], {}, {}, {})
    for area, v in n_voxels.items():
        sustained = _zscore(static.signal[area].astype(np.float64))
        transient = _zscore(_transient(sustained, starts))
        w = rng.uniform(0.0, 0.6, v)
        neural = (1 - w) * sustained + w * transient
        if motion:
            direction, m, drive = moving[area]
            neural = (1 - m) * neural + m * drive
        peaks = np.round(rng.uniform(*PEAK_RANGE, v) / PEAK_STEP) * PEAK_STEP
        bold = np.concatenate([
            _run_bold(neural[frame_run == r], peaks, fps, tr, int(np.sum(volume_run == r)))
            for r in runs])
        bold = _zscore(bold)
        ceiling = rng.uniform(*ceiling_range, v)
        # the mean of R repeats with noise sd s correlates 1 / sqrt(1 + s² / R) with the signal
        noise_sd = np.sqrt(n_repeats * (1 / ceiling**2 - 1))
        train = volume_run != runs[-1]
        resp = bold.copy()
        resp[train] += noise_sd * _ar1(rng, (int(train.sum()), v), int(train.sum()))
        test = bold[~train]
        reps = np.stack([test + noise_sd * _ar1(rng, test.shape, test.shape[0])
                         for _ in range(n_repeats)])
        resp[~train] = reps.mean(axis=0)
        shapes = {p: hrf_shape(float(p)) for p in np.unique(peaks)}
        t = static.truth[area]
        out.responses[area] = resp.astype(np.float32)
        out.repeats[area] = reps.astype(np.float32)
        out.signal[area] = bold.astype(np.float32)
        out.truth[area] = {
            "prf_x": t["prf_x"], "prf_y": t["prf_y"], "prf_sigma": t["prf_sigma"],
            "hrf_param_s": peaks, "hrf_peak_s": np.array([shapes[p][0] for p in peaks]),
            "hrf_fwhm_s": np.array([shapes[p][1] for p in peaks]), "transient": w,
            "noise_ceiling": ceiling}
        if motion:
            out.truth[area].update(direction_deg=45.0 * direction, motion_weight=m)
    return out


def write_movie_simulation(sim: MovieSimulation, out_dir: str | Path) -> dict[str, Path]:
    """Write ``stim.h5``, ``bold.h5`` (the contract of :mod:`niflow.data.movie`) and
    ``truth.npz`` (``<AREA>_<key>`` arrays) into ``out_dir``; each file atomically.
    ``stim.h5`` also holds ``aperture`` (uint8 0/1, like ``stim``) when the simulation has
    one."""
    import h5py

    from niflow._atomic import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def stim_file(p: Path) -> None:
        with h5py.File(p, "w") as fh:
            fh.create_dataset("stim", data=sim.stim, chunks=(min(64, len(sim.stim)),
                                                             *sim.stim.shape[1:]))
            fh["fps"] = sim.fps
            fh["run"] = sim.frame_run
            if sim.aperture is not None:
                fh.create_dataset("aperture", data=sim.aperture.astype(np.uint8),
                                  chunks=(min(64, len(sim.stim)), *sim.stim.shape[1:]))

    def bold_file(p: Path) -> None:
        with h5py.File(p, "w") as fh:
            for a in sim.responses:
                fh[a] = sim.responses[a]
                fh[a + "_repeats"] = sim.repeats[a]
            fh["tr"] = sim.tr
            fh["run"] = sim.volume_run

    def truth_file(p: Path) -> None:
        arrays = {f"{a}_{k}": v for a, t in sim.truth.items() for k, v in t.items()}
        with open(p, "wb") as fh:
            np.savez(fh, test_run=sim.test_run, **arrays)

    paths = {"stim": out / "stim.h5", "bold": out / "bold.h5", "truth": out / "truth.npz"}
    atomic_write(paths["stim"], stim_file)
    atomic_write(paths["bold"], bold_file)
    atomic_write(paths["truth"], truth_file)
    return paths
