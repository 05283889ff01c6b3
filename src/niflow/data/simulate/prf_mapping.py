"""A simulated pRF-mapping experiment (moving bars) in the movie contract, with known truth.

Each run shows a bar sweeping across a circular field in 8 directions (0°, 45°, …, 315°; 0°
moves right, 90° up), one sweep after another, with a mid-grey blank after every second
sweep (as in Dumoulin & Wandell, 2008). The bar is ``1/8`` of the field wide and steps by
half its width, once per TR (``step="tr"``) or a little every frame (``step="frame"``).
Inside the bar a checkerboard aligned with the bar (two checks across it) reverses contrast
several times a second, as real experiments do; outside it the screen is mid-grey. Frames are
uint8; the binary aperture (1 where the bar is) is kept with them, since the classic pRF fit
(:mod:`niflow.evaluate.prf_fit`) needs it.

Training runs show the 8 directions in a random order each; the test run (the last) has its
own order and is repeated. Voxels are those of the movie simulator
(:func:`~niflow.data.simulate.movie.simulate_bold`): V1 and V2 Gaussian pRFs whose size grows
with eccentricity (V2 twice V1's), pooling oriented energy (V1) or a second stage (V2) of the
frames, a sustained/transient mix, a double-gamma HRF per voxel peaking at 4-7 s and AR(1)
noise at per-voxel noise ceilings (median about 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from niflow.data.simulate.movie import MovieSimulation, simulate_bold
from niflow.data.simulate.settings import SimConfig

__all__ = ["DIRECTIONS_DEG", "PRF_MAPPING_CONFIG", "bar_sweep_run", "simulate_prf_mapping"]

DIRECTIONS_DEG = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)
_ORDER_STREAM = 5101
# the movie simulator's energy cortex with a wider range of pRF sizes (σ = 1 + 0.15·ecc px)
PRF_MAPPING_CONFIG = SimConfig(n_orientations=4, wavelengths=(4.0, 8.0),
                               v1_sigma_intercept=1.0, v1_sigma_slope=0.15)


def bar_sweep_run(size: int | tuple[int, int], fps: float, tr: float,
                  directions: Sequence[float] = DIRECTIONS_DEG, step: str = "tr",
                  bar_width: float | None = None, steps_per_sweep: int | None = None,
                  blank_s: float = 12.0, blank_every: int = 2, reversal_hz: float = 4.0,
                  ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """One run of bar sweeps.

    Parameters
    ----------
    size : int or (int, int)
        Frame height and width (pixels), or ``(height, width)``; the field is the disc of
        radius ``min(height, width) / 2`` around the frame's centre.
    fps, tr : float
        Frames per second; seconds per volume (a step lasts one TR).
    directions : sequence of float
        Motion direction of each sweep, degrees (0 = rightwards, 90 = upwards).
    step : {"tr", "frame"}
        The bar moves once per TR, or by a fraction of a step every frame.
    bar_width : float, optional
        Pixels; default an eighth of the field's diameter.
    steps_per_sweep : int, optional
        Default: steps of half the bar's width from just outside the field to just outside
        the other side.
    blank_s : float
        Mid-grey blank after every ``blank_every`` sweeps, rounded to whole TRs.
    reversal_hz : float
        Contrast reversals of the checkerboard per second (at most one per frame).

    Returns
    -------
    stim : ndarray of shape (n_frames, height, width), uint8
        Mid-grey (128) background, checks at 1 and 255.
    aperture : ndarray of shape (n_frames, height, width), uint8
        1 where the bar is shown, else 0.
    """
    if step not in ("tr", "frame"):
        raise ValueError(f"step must be 'tr' or 'frame', got {step!r}")
    h, w = (size, size) if isinstance(size, int | np.integer) else (int(size[0]), int(size[1]))
    radius = min(h, w) / 2
    width = 2 * radius / 8 if bar_width is None else float(bar_width)
    n_steps = (int(math.ceil((2 * radius + width) / (width / 2))) if steps_per_sweep is None
               else int(steps_per_sweep))
    if width <= 0 or n_steps < 1 or fps <= 0 or tr <= 0:
        raise ValueError("need bar_width > 0, steps_per_sweep >= 1, fps > 0 and tr > 0")
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy_up = xx - (w - 1) / 2, (h - 1) / 2 - yy
    inside = np.hypot(dx, dy_up) <= radius
    check = width / 2
    per_reversal = max(1, int(round(fps / min(reversal_hz, fps))))
    sweep_frames = int(round(n_steps * tr * fps))
    blank_frames = int(round(round(blank_s / tr) * tr * fps))
    stims, aps = [], []
    frame = 0
    for i, theta in enumerate(directions):
        t = math.radians(theta)
        along = dx * math.cos(t) + dy_up * math.sin(t)
        across = -dx * math.sin(t) + dy_up * math.cos(t)
        k = np.arange(sweep_frames)
        if step == "tr":
            progress = (np.floor(k / (tr * fps) + 1e-9) + 0.5) / n_steps
        else:
            progress = (k + 0.5) / sweep_frames
        pos = -(radius + width / 2) + progress * (2 * radius + width)
        rel = along[None] - pos[:, None, None]  # (frames, H, W): distance from the bar's axis
        ap = (np.abs(rel) < width / 2) & inside[None]
        parity = (np.floor(rel / check) + np.floor(across[None] / check)) % 2
        polarity = np.where(((frame + k) // per_reversal) % 2 == 0, 1.0, -1.0)[:, None, None]
        img = 128 + 127 * np.where(parity == 0, 1.0, -1.0) * polarity * ap
        stims.append(img.astype(np.uint8))
        aps.append(ap.astype(np.uint8))
        frame += sweep_frames
        if blank_frames and (i + 1) % blank_every == 0:
            stims.append(np.full((blank_frames, h, w), 128, np.uint8))
            aps.append(np.zeros((blank_frames, h, w), np.uint8))
            frame += blank_frames
    return np.concatenate(stims), np.concatenate(aps)


def simulate_prf_mapping(n_train_runs: int = 3, size: int = 32, fps: float = 4.0,
                         tr: float = 1.0, n_voxels: Mapping[str, int] | None = None,
                         n_repeats: int = 6, ceiling_range: tuple[float, float] = (0.3, 0.7),
                         step: str = "tr", config: SimConfig | None = None, seed: int = 0,
                         **sweep) -> MovieSimulation:
    """Simulate a bar-sweep pRF-mapping data set: training runs and one repeated test run.

    Parameters
    ----------
    n_train_runs : int
        Runs seen once (labels 1..n); the test run is ``n_train_runs + 1``.
    size : int
        Frame height and width (pixels).
    fps, tr : float
    n_voxels : dict of str to int, optional
        Default ``{"V1": 200, "V2": 150}``.
    n_repeats : int
        Presentations of the test run.
    ceiling_range : tuple of float
        Per-voxel noise ceilings (the default's median is 0.5).
    step : {"tr", "frame"}
    config : SimConfig, optional
        The simulated cortex; default :data:`PRF_MAPPING_CONFIG`.
    seed : int
    **sweep
        Passed to :func:`bar_sweep_run` (``bar_width``, ``steps_per_sweep``, ``blank_s``, …).

    Returns
    -------
    MovieSimulation
        With ``aperture`` (n_frames, size, size) uint8 0/1 set; the truth as for movies.
    """
    n_voxels = dict(n_voxels or {"V1": 200, "V2": 150})
    if n_train_runs < 1 or n_repeats < 2:
        raise ValueError("need at least one training run and two repeats of the test run")
    rng = np.random.default_rng([seed, _ORDER_STREAM])
    runs = list(range(1, n_train_runs + 2))
    orders = np.array([rng.permutation(DIRECTIONS_DEG) for _ in runs])
    made = [bar_sweep_run(size, fps, tr, order, step=step, **sweep) for order in orders]
    stim = np.concatenate([m[0] for m in made])
    aperture = np.concatenate([m[1] for m in made])
    frame_run = np.concatenate([np.full(len(m[0]), r) for m, r in zip(made, runs, strict=True)])
    n_vol = int(round(len(made[0][0]) / fps / tr))
    volume_run = np.repeat(runs, n_vol).astype(np.int64)
    sim = simulate_bold(stim, frame_run, volume_run, fps, tr, n_voxels, n_repeats,
                        ceiling_range, config or PRF_MAPPING_CONFIG, seed)
    sim.aperture = aperture
    return sim
