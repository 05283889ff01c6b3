"""Movie runs cut into segments, and volumes predicted segment by segment.

A segment is consecutive frames of one run and the volumes predicted from them: every frame
from ``model.history`` frames before the first volume's window to the last volume's last
frame, so each frame's features are computed once per segment, no segment crosses a run
boundary and frames are read from disk per segment (memory flat in the recording's length).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from niflow.data.movie import MovieFiles, MovieTiming
from niflow.model.video import Replacements, VideoNIF

__all__ = ["Segment", "make_segments", "median_r", "predict_ensemble", "predict_video",
           "segment_frames"]


@dataclass(frozen=True)
class Segment:
    """Consecutive frames of one run and the volumes predicted from them.

    Attributes
    ----------
    frame_start, frame_stop : int
        Frames ``[frame_start, frame_stop)`` of the concatenated stimulus.
    volumes : ndarray of shape (n,), int64
        Volume indices into the concatenated responses.
    last : ndarray of shape (n,), int64
        Position (from ``frame_start``) of each volume's last preceding frame.
    """

    frame_start: int
    frame_stop: int
    volumes: np.ndarray
    last: np.ndarray


def make_segments(timing: MovieTiming, volumes: np.ndarray, history: int,
                  seconds: float = 60.0) -> list[Segment]:
    """Cut ``volumes`` into segments of about ``seconds`` within runs.

    Volumes with no frame before them (a run's first) are left out: they reflect nothing.
    """
    volumes = np.sort(np.asarray(volumes, dtype=np.int64))
    last = timing.frames_before(volumes, 1)[:, 0]
    keep = last >= 0
    volumes, last = volumes[keep], last[keep]
    per = max(1, int(round(seconds / timing.tr)))
    out = []
    for run in np.unique(timing.volume_run[volumes]):
        sel = np.flatnonzero(timing.volume_run[volumes] == run)
        f0, _ = timing.frame_span(int(run))
        for i in range(0, sel.size, per):
            part = sel[i:i + per]
            start = max(f0, int(last[part].min()) - history + 1)
            out.append(Segment(start, int(last[part].max()) + 1, volumes[part],
                               last[part] - start))
    return out


def segment_frames(files: MovieFiles, seg: Segment, device: torch.device) -> torch.Tensor:
    """The segment's frames as a batch of one movie, (1, T, C, H, W) on ``device``."""
    x = files.frames(np.arange(seg.frame_start, seg.frame_stop))
    return torch.as_tensor(x, device=device)[None]


@torch.no_grad()
def predict_video(model: VideoNIF, files: MovieFiles, volumes: np.ndarray,
                  seconds: float = 60.0, replace: Replacements | None = None,
                  ) -> dict[str, np.ndarray]:
    """Predictions (z-scored units) for ``volumes``, in their order; 0 for volumes that no
    frame precedes. ``replace``: an ablation (:meth:`~niflow.model.video.VideoNIF.features`).

    Returns
    -------
    dict of str to ndarray of shape (len(volumes), n_voxels), float32
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    volumes = np.asarray(volumes, dtype=np.int64)
    out = {a: np.zeros((volumes.size, h.n_voxels), np.float32) for a, h in model.hrf.items()}
    where = {int(v): i for i, v in enumerate(volumes)}
    for seg in make_segments(files.timing, volumes, model.history, seconds):
        pred = model(segment_frames(files, seg, device), torch.as_tensor(seg.last, device=device),
                     replace)
        rows = [where[int(v)] for v in seg.volumes]
        for a, p in pred.items():
            out[a][rows] = p[0].float().cpu().numpy()
    model.train(was_training)
    return out


def voxel_r(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per area, every voxel's Pearson r of ``pred`` with ``true`` (0 where either is
    constant)."""
    rs = {}
    for a, p in pred.items():
        pc, tc = p - p.mean(0), true[a] - true[a].mean(0)
        den = np.sqrt((pc**2).sum(0) * (tc**2).sum(0))
        rs[a] = np.where(den > 0, (pc * tc).sum(0) / np.where(den > 0, den, 1), 0.0)
    return rs


def median_r(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> float:
    """Median over every area's voxels of the Pearson r of ``pred`` with ``true``."""
    return float(np.median(np.concatenate(list(voxel_r(pred, true).values()))))


def predict_ensemble(models: list[VideoNIF], files: MovieFiles, volumes: np.ndarray,
                     ) -> dict[str, np.ndarray]:
    """The mean of :func:`predict_video` over ``models`` (z-scored units).

    Returns
    -------
    dict of str to ndarray of shape (len(volumes), n_voxels), float32
    """
    total: dict[str, np.ndarray] = {}
    for m in models:
        for a, p in predict_video(m, files, volumes).items():
            total[a] = total.get(a, 0) + p.astype(np.float64)
    return {a: (t / len(models)).astype(np.float32) for a, t in total.items()}
