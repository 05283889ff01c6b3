"""Where a video model starts: readouts fitted on HRF-weighted features, latency searches.

Before training, each voxel's readout and HRF latency start from a fitted linear pRF model
(:func:`hrf_weighted_features`, :meth:`niflow.model.video.VideoNIF.initialize_readouts`);
:func:`initialize_hrf_latencies` searches every voxel's latency on a grid with the model's
current drive (used again after training, :func:`niflow.train.video.refine_hrf_latencies`).
"""

from __future__ import annotations

import numpy as np
import torch

from niflow.data.movie import MovieFiles
from niflow.model.hrf import HRFReadout
from niflow.model.video import HRF_INIT_WINDOW_S, VideoNIF
from niflow.train.segments import make_segments, segment_frames

__all__ = ["HRF_PEAK_GRID_S", "INIT_PEAKS_S", "calibration_clips", "hrf_weighted_features",
           "hrf_window_frames", "initialize_hrf_latencies"]


def hrf_window_frames(files: MovieFiles, volumes: np.ndarray) -> np.ndarray:
    """For each volume, the mean frame shown ``HRF_INIT_WINDOW_S`` seconds before it.

    Returns
    -------
    ndarray of shape (n, channels, height, width), float32
    """
    t = files.timing
    early, late = HRF_INIT_WINDOW_S
    n_back = max(1, int(round(late * t.fps)))
    n_win = max(1, int(round((late - early) * t.fps)))
    idx = t.frames_before(np.asarray(volumes), n_back)[:, :n_win]
    wanted = np.unique(idx[idx >= 0])
    frames = files.frames(wanted) if wanted.size else np.zeros((0, *files.frame_shape),
                                                               np.float32)
    pos = np.searchsorted(wanted, np.where(idx >= 0, idx, 0))
    valid = idx >= 0
    total = np.zeros((len(idx), *files.frame_shape), np.float32)
    # one offset of the window at a time: gathering all of them at once held n_win copies
    # of the volumes' frames (512 MiB for 1,024 volumes of 64 x 64 at 8 fps)
    for j in range(n_win) if wanted.size else ():
        rows = np.flatnonzero(valid[:, j])
        total[rows] += frames[pos[rows, j]]
    count = np.maximum(valid.sum(axis=1), 1).astype(np.float32)
    return total / count[:, None, None, None]


CLIP_S = 4.0  # length of each clip the motion-energy channels calibrate on (seconds)
N_CLIPS = 32


def calibration_clips(files: MovieFiles, volumes: np.ndarray, seconds: float = CLIP_S,
                      n_clips: int = N_CLIPS) -> np.ndarray:
    """Up to ``n_clips`` runs of consecutive frames, each the ``seconds`` before one of
    ``volumes`` (evenly spaced among those with that much of their run before them), on
    which filters over time calibrate (:meth:`niflow.model.video.VideoNIF.
    initialize_readouts`).

    Returns
    -------
    ndarray of shape (n, frames, channels, height, width), float32
    """
    t = files.timing
    n_frames = max(2, int(round(seconds * t.fps)))
    idx = t.frames_before(np.asarray(volumes), n_frames)  # (n, n_frames), oldest first
    whole = np.flatnonzero((idx >= 0).all(axis=1))
    if not whole.size:
        return np.zeros((0, n_frames, *files.frame_shape), np.float32)
    pick = whole[np.unique(np.linspace(0, whole.size - 1, min(n_clips, whole.size))
                           .round().astype(int))]
    wanted = idx[pick]
    unique = np.unique(wanted)
    return files.frames(unique)[np.searchsorted(unique, wanted)]


INIT_PEAKS_S = (4.0, 5.0, 6.0, 7.0)  # HRF latencies the readouts' initial search tries
INIT_FEATURE_BYTES = 768 * 2**20  # most memory the weighted features of the search may take


@torch.no_grad()
def hrf_weighted_features(model: VideoNIF, files: MovieFiles, volumes: np.ndarray,
                          peaks: tuple[float, ...] = INIT_PEAKS_S, seconds: float = 60.0,
                          ) -> tuple[np.ndarray, dict[float, dict[str, torch.Tensor]],
                                     dict[str, torch.Tensor]]:
    """Every area's per-frame features weighted by a canonical HRF and summed over the
    frames before each volume, for each HRF latency in ``peaks``.

    With the temporal filters at the identity (as a model starts) a voxel's readout is
    linear in these, so regressing its volumes on them fits the model's own prediction,
    where the features of one averaged frame would blur everything that moved. Frames
    before a run's start count as the mean frame's features (the drive before a run is the
    voxel's baseline, :class:`~niflow.model.hrf.HRFReadout`). Volumes are taken in file
    order until the features would pass ``INIT_FEATURE_BYTES``.

    Returns
    -------
    volumes : ndarray of shape (n,), int64
        The volumes used (a leading part of the sorted ``volumes``; a run's first volume,
        which no frame precedes, is left out).
    features : dict of float to dict of str to Tensor of shape (n, C, H', W')
        Per peak latency (seconds), per area.
    mean : dict of str to Tensor of shape (C, H', W')
        Per area, the features averaged over the frames read.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_volume = sum(g.channels * g.grid[0] * g.grid[1] * 4
                     for g in model.spatial.graph.geometries.values()) * len(peaks)
    limit = max(1, INIT_FEATURE_BYTES // max(per_volume, 1))
    hrf = HRFReadout(1, model.fps, model.hrf_span_s)
    kernels = {}
    for p in peaks:
        hrf.initialize(p)
        kernels[p] = hrf.kernel()[0].double().numpy() / model.fps  # k[l]: l frames back
    segs = make_segments(files.timing, volumes, model.history, seconds)
    n_total = min(sum(len(s.volumes) for s in segs), limit)
    # the features are written into buffers of their final size: pieces kept per segment
    # and joined at the end sat between the segments' temporaries on the heap, which then
    # grew beyond what was live (an hour of 64 x 64: the start peaked 470 MiB higher)
    out: dict[float, dict[str, torch.Tensor]] = {p: {} for p in peaks}
    share = {p: torch.zeros(n_total) for p in peaks}  # the HRF's share before the run
    used: list[np.ndarray] = []
    sums: dict[str, torch.Tensor] = {}
    n, n_frames = 0, 0
    for seg in segs:
        take = min(len(seg.volumes), n_total - n)
        if take <= 0:
            break
        feats = model.features(segment_frames(files, seg, device))
        lag = seg.last[:take, None] - np.arange(seg.frame_stop - seg.frame_start)[None]
        ok = (lag >= 0) & (lag < hrf.n_lags)
        for a, f in feats.items():
            sums[a] = sums.get(a, 0) + f[0].double().sum(0).cpu()
        n_frames += seg.frame_stop - seg.frame_start
        for p, k in kernels.items():
            weights = np.where(ok, k[np.clip(lag, 0, hrf.n_lags - 1)], 0.0)  # (n_vol, T)
            share[p][n:n + take] = torch.as_tensor(k.sum() - weights.sum(1))
            w = torch.as_tensor(weights, dtype=torch.float32, device=device)
            for a, f in feats.items():
                if a not in out[p]:
                    out[p][a] = torch.empty((n_total, *f.shape[2:]), dtype=torch.float32)
                out[p][a][n:n + take] = torch.einsum("vt,tchw->vchw", w, f[0].float()).cpu()
        used.append(seg.volumes[:take])
        n += take
    mean = {a: (v / max(n_frames, 1)).float() for a, v in sums.items()}
    for p, d in out.items():
        for a, f in d.items():
            f.addcmul_(share[p].view(-1, 1, 1, 1), mean[a][None])
    model.train(was_training)
    return np.concatenate(used) if used else np.zeros(0, np.int64), out, mean


HRF_PEAK_GRID_S = tuple(float(p) for p in np.arange(3.0, 9.01, 0.25))
HRF_INIT_VOLUMES = 2048  # training volumes the latency search looks at


@torch.no_grad()
def initialize_hrf_latencies(model: VideoNIF, files: MovieFiles,
                             responses: dict[str, np.ndarray], volumes: np.ndarray,
                             seed: int = 0, grid: tuple[float, ...] = HRF_PEAK_GRID_S,
                             seconds: float = 60.0) -> dict[str, np.ndarray]:
    """Start every voxel's HRF at the peak latency (from ``grid``) whose prediction from
    the initial drive correlates best with its training volumes.

    A gradient from one shared start moves a voxel's latency slowly and can stop in the
    wrong valley of a periodic stimulus; a search over the canonical shape's latencies
    costs one forward pass over at most ``HRF_INIT_VOLUMES`` volumes.

    Parameters
    ----------
    responses : dict of str to ndarray of shape (n_TR, n_voxels)
        Z-scored volumes.
    volumes : ndarray of int
        Training volume indices (segments of them, drawn in random order, are used).

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        The chosen peak latency of each voxel (seconds).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # the drive predictions are made with (batch norm's running statistics)
    segs = make_segments(files.timing, volumes, model.history, seconds)
    order = np.random.default_rng(seed).permutation(len(segs))
    g = len(grid)
    sums = {a: np.zeros((5, g, h.n_voxels)) for a, h in model.hrf.items()}
    n = 0
    for i in order:
        seg = segs[i]
        drive = model.drive(segment_frames(files, seg, device))
        last = torch.as_tensor(seg.last, device=device)
        for a, h in model.hrf.items():
            y = torch.as_tensor(responses[a][seg.volumes], device=device, dtype=torch.float64)
            for k, peak in enumerate(grid):
                h.initialize(peak)
                p = h(drive[a], last)[0].double()
                for j, v in enumerate((p, p * p, p * y, y, y * y)):
                    sums[a][j, k] += v.sum(0).cpu().numpy()
        n += len(seg.volumes)
        if n >= HRF_INIT_VOLUMES:
            break
    chosen = {}
    for a, h in model.hrf.items():
        sp, spp, spy, sy, syy = sums[a]
        cov = spy - sp * sy / n
        den = np.sqrt(np.clip(spp - sp**2 / n, 0, None) * np.clip(syy - sy**2 / n, 0, None))
        r = np.where(den > 0, cov / np.where(den > 0, den, 1), -np.inf)
        chosen[a] = np.asarray(grid)[np.argmax(r, axis=0)]
        h.initialize(torch.as_tensor(chosen[a]))
    model.train(was_training)
    return chosen
