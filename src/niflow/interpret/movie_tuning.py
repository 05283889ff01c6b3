"""In-silico spatiotemporal tuning of a video model: drifting gratings through its drive.

Each condition is a clip of a full-field sinusoidal grating drifting in one of ``directions``
directions at one wavelength and one temporal frequency (0 Hz: static, shown at four
phases). The clip is shown after a grey screen long enough to fill the model's temporal
filters; each voxel's response is its neural drive (before the HRF:
:meth:`niflow.model.video.VideoNIF.drive`) averaged over the clip's last ``seconds``, minus
its drive to the grey screen. From the best condition the tuning curves are read as for
images (:func:`niflow.interpret.probes.orientation_tuning`,
:func:`niflow.interpret.probes.spatial_frequency_tuning`), plus direction (first harmonic of
the responses over directions) and temporal frequency. An ensemble's responses are its
members' mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from niflow.interpret.probes import (
    circular_preference,
    grating,
    orientation_tuning,
    spatial_frequency_tuning,
)
from niflow.model.video import VideoNIF

__all__ = ["MovieTuningSettings", "direction_tuning", "drifting_grating", "movie_tuning",
           "temporal_tuning", "tuning_conditions"]

CLIPS_PER_BATCH = 16
# what one batch of clips may take in the first area's filter outputs (64 values per pixel
# and frame: a Gabor bank's 32 quadrature pairs); larger frames get fewer clips per batch
BATCH_BYTES = 256 * 2**20


@dataclass
class MovieTuningSettings:
    """Conditions of :func:`movie_tuning`.

    ``directions`` drift directions over 360° (0° = rightwards, counter-clockwise, y up),
    ``wavelengths`` px per cycle (default: 5 log-spaced from 3 px to a third of the width),
    ``temporal_hz`` (default 0, 0.5, 1, 2 and 4 Hz, those under half the frame rate: at
    1 fps or less only static gratings, and no direction or temporal tuning), each clip
    ``seconds`` long.
    """

    directions: int = 8
    wavelengths: tuple[float, ...] | None = None
    temporal_hz: tuple[float, ...] | None = None
    seconds: float = 2.0


def drifting_grating(size: tuple[int, int], direction_deg: float, wavelength: float,
                     temporal_hz: float, fps: float, n_frames: int, phase: float = 0.0,
                     ) -> np.ndarray:
    """Frames of a grating drifting in ``direction_deg`` (its stripes at 90° to it).

    Returns
    -------
    ndarray of shape (n_frames, height, width), float32 in [0, 1]
    """
    # grating()'s luminance varies along (sin o, −cos o) in (x, y up): direction o − 90°
    t = np.arange(n_frames) / fps
    return np.stack([grating(size, direction_deg + 90.0, wavelength,
                             phase - 2 * math.pi * temporal_hz * s) for s in t]
                    ).astype(np.float32)


def tuning_conditions(size: tuple[int, int], fps: float,
                      settings: MovieTuningSettings | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directions (deg), wavelengths (px) and temporal frequencies (Hz) of the probe."""
    s = settings or MovieTuningSettings()
    dirs = 360.0 * np.arange(s.directions) / s.directions
    lam = np.asarray(s.wavelengths or np.geomspace(3.0, size[1] / 3, 5), dtype=np.float64)
    tfs = np.asarray(s.temporal_hz if s.temporal_hz is not None else
                     [f for f in (0.0, 0.5, 1.0, 2.0, 4.0) if f < fps / 2], dtype=np.float64)
    if not tfs.size:
        raise ValueError(f"no temporal frequency under half the frame rate ({fps:g} fps)")
    return dirs, lam, tfs


@torch.no_grad()
def _clip_drive(models: list[VideoNIF], clip: Callable[[int], np.ndarray], n_clips: int,
                warm: int) -> dict[str, np.ndarray]:
    """Mean drive over each clip's frames after ``warm``: {area: (n_clips, V)}; ``clip(i)``
    makes clip i, (frames, height, width) in [0, 1] (made batch by batch: the clips of a
    large frame would not fit in memory at once)."""
    out: dict[str, list[np.ndarray]] = {}
    per_clip = clip(0).size * 64 * 4
    batch = max(1, min(CLIPS_PER_BATCH, BATCH_BYTES // per_clip))
    for i in range(0, n_clips, batch):
        x = torch.as_tensor(np.stack([clip(j) for j in range(i, min(i + batch, n_clips))]))
        total: dict[str, np.ndarray] = {}
        for m in models:
            c = m.frame_shape[0]
            frames = x[:, :, None].expand(-1, -1, c, -1, -1)  # grey on every colour channel
            for a, d in m.drive(frames.to(next(m.parameters()).device)).items():
                total[a] = total.get(a, 0) + d[:, warm:].double().mean(1).cpu().numpy()
        for a, v in total.items():
            out.setdefault(a, []).append(v / len(models))
    return {a: np.concatenate(v) for a, v in out.items()}


def direction_tuning(responses: np.ndarray, directions_deg: np.ndarray,
                     ) -> dict[str, np.ndarray]:
    """Preferred direction and direction selectivity from responses over directions.

    Responses are taken relative to each voxel's minimum; the preferred direction is the
    angle of their vector sum, the selectivity its length over their sum (0 = the same in
    every direction, 1 = one direction only).

    Parameters
    ----------
    responses : ndarray of shape (n_directions, n_voxels)
    directions_deg : ndarray of shape (n_directions,), evenly spaced over 360°

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``preferred_direction`` (degrees in [0, 360)), ``direction_selectivity``.
    """
    r = np.asarray(responses, dtype=np.float64)
    pref, sel = circular_preference(r - r.min(0), directions_deg, harmonic=1)
    return {"preferred_direction": pref, "direction_selectivity": sel}


def temporal_tuning(responses: np.ndarray, temporal_hz: np.ndarray) -> dict[str, np.ndarray]:
    """Preferred temporal frequency and how transient a voxel is.

    Parameters
    ----------
    responses : ndarray of shape (n_frequencies, n_voxels)
        Relative to the grey screen.
    temporal_hz : ndarray of shape (n_frequencies,), ascending, the first 0 (static)

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``preferred_tf_hz`` (the frequency of the largest response) and
        ``transient_index`` = (r(fastest) − r(static)) / (|r(fastest)| + |r(static)|):
        −1 for a voxel that answers a static grating only, +1 for one that answers only
        the fastest drift (NaN without a static condition).
    """
    r = np.asarray(responses, dtype=np.float64)
    tf = np.asarray(temporal_hz, dtype=np.float64)
    pref = tf[np.argmax(r, axis=0)]
    if tf[0] != 0 or len(tf) < 2:
        return {"preferred_tf_hz": pref, "transient_index": np.full(r.shape[1], np.nan)}
    fast, still = r[-1], r[0]
    den = np.abs(fast) + np.abs(still)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = np.where(den > 0, (fast - still) / den, 0.0)
    return {"preferred_tf_hz": pref, "transient_index": index}


def movie_tuning(models: VideoNIF | list[VideoNIF],
                 settings: MovieTuningSettings | None = None,
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Drifting gratings through a video model (or an ensemble): spatiotemporal tuning.

    Returns
    -------
    dict of area to dict of str to ndarray of shape (n_voxels,)
        ``preferred_orientation`` (stripes, degrees in [0, 180), as the image probe),
        ``orientation_selectivity``, ``orientation_bandwidth``, ``preferred_sf``
        (cycles/px), ``preferred_wavelength`` (px), ``preferred_direction`` (degrees in
        [0, 360), 0 = rightwards, counter-clockwise), ``direction_selectivity``,
        ``preferred_tf_hz``, ``transient_index``, ``grating_response`` (the best
        condition's drive over the grey screen's).
    """
    models = [models] if isinstance(models, VideoNIF) else list(models)
    first = models[0]
    s = settings or MovieTuningSettings()
    size = tuple(first.frame_shape[1:])
    dirs, lam, tfs = tuning_conditions(size, first.fps, s)
    warm = max(m.history - max(h.n_lags for h in m.hrf.values()) for m in models) + 1
    n = max(2, int(round(s.seconds * first.fps)))
    grey = np.full((warm + n, *size), 0.5, np.float32)
    # (direction, wavelength, frequency) indices and a phase (static gratings at four)
    specs = [(i, j, k, p) for i in range(len(dirs)) for j in range(len(lam))
             for k, f in enumerate(tfs)
             for p in ((0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi) if f == 0 else (0.0,))]

    def clip(n_clip: int) -> np.ndarray:  # clip 0: the grey screen alone
        if n_clip == 0:
            return grey
        i, j, k, p = specs[n_clip - 1]
        return np.concatenate([grey[:warm],
                               drifting_grating(size, dirs[i], lam[j], tfs[k], first.fps, n, p)])

    drive = _clip_drive(models, clip, len(specs) + 1, warm)
    cells = tuple(np.array([sp[:3] for sp in specs]).T)
    grid = (len(dirs), len(lam), len(tfs))
    count = np.bincount(np.ravel_multi_index(cells, grid), minlength=int(np.prod(grid)))
    out = {}
    for area, resp in drive.items():
        r = np.zeros((*grid, resp.shape[1]))
        np.add.at(r, cells, resp[1:] - resp[0])  # each clip over the grey screen
        out[area] = _tuning(r / count.reshape(*grid, 1), dirs, lam, tfs)
    return out


def _tuning(r: np.ndarray, dirs: np.ndarray, lam: np.ndarray, tfs: np.ndarray,
            ) -> dict[str, np.ndarray]:
    """Tuning curves through each voxel's best condition of ``r`` (dirs, lam, tfs, V)."""
    nd, nl, nt, nv = r.shape
    best = r.reshape(-1, nv).argmax(0)
    bd, bl, bt = np.unravel_index(best, (nd, nl, nt))
    v = np.arange(nv)
    half = nd // 2 if nd % 2 == 0 else None
    by_dir = r[:, bl, bt, v]  # (n_directions, V)
    # orientation of the stripes: opposite drifts share it (direction + 90° modulo 180°)
    ori = 0.5 * (by_dir[:half] + by_dir[half:]) if half else by_dir
    oris = ((dirs[:half] if half else dirs) + 90.0) % 180.0
    order = np.argsort(oris)
    out = {**orientation_tuning(ori[order], oris[order]),
           **spatial_frequency_tuning(r[bd, :, bt, v].T, lam),
           **direction_tuning(by_dir, dirs),
           **temporal_tuning(r[bd, bl, :, v].T, tfs),
           "grating_response": r[bd, bl, bt, v]}
    return out
