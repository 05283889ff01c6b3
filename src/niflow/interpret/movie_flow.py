"""Information flow between the areas of a video model, on a movie's held-out volumes.

As :func:`niflow.interpret.flow.information_flow` does for images, each source's input to
each area with voxels is ablated (set to zero, or to the source's mean feature tensor over
the training frames) while every other area reads the source as it is; the target's held-out
volumes are predicted again from the frames before them, and the drop in each voxel's r is
how much the area's prediction relies on that source. The connection weights per source come
with it (over all lags for an area whose kernels reach into the past).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from niflow.config import STIMULUS
from niflow.data.movie import MovieFiles
from niflow.evaluate.statistics import pearson_r
from niflow.interpret.flow import FlowResult, connection_weights
from niflow.model.video import CausalConv3d, Replacements, VideoNIF
from niflow.train.segments import make_segments, predict_video, segment_frames

__all__ = ["MAX_REFERENCE_VOLUMES", "movie_feature_statistics", "movie_information_flow"]

MAX_REFERENCE_VOLUMES = 1024  # training volumes whose frames give the mean features


@torch.no_grad()
def movie_feature_statistics(video: VideoNIF, files: MovieFiles, volumes: np.ndarray,
                             max_volumes: int = MAX_REFERENCE_VOLUMES,
                             ) -> tuple[dict[str, Tensor], dict[str, np.ndarray]]:
    """Mean feature tensor and channel spread of the standardised frames and every area,
    over the frames of segments before ``volumes`` (evenly spread over the recording, about
    ``max_volumes`` of them).

    Returns
    -------
    means : dict of str to Tensor of shape (C, H, W)
        Per source (``"stimulus"`` and each area), its features averaged over the frames.
    std : dict of str to ndarray of shape (C,)
        Per source, each channel's standard deviation about that mean, over frames and grid
        positions (how :func:`~niflow.interpret.flow.connection_weights` scales weights).
    """
    was_training = video.training
    video.eval()
    device = next(video.parameters()).device
    segs = make_segments(files.timing, np.asarray(volumes), video.history)
    total = sum(len(s.volumes) for s in segs)
    step = max(1, int(np.ceil(total / max(max_volumes, 1))))
    s1: dict[str, Tensor] = {}
    s2: dict[str, Tensor] = {}
    n = 0
    for seg in segs[::step]:
        frames = segment_frames(files, seg, device)
        feats = video.features(frames)
        feats[STIMULUS] = video.spatial.standardize(frames.flatten(0, 1))[None]
        for k, f in feats.items():
            x = f[0].double()
            s1[k] = s1.get(k, 0) + x.sum(0)
            s2[k] = s2.get(k, 0) + (x * x).sum(0)
        n += frames.shape[1]
    video.train(was_training)
    if not n:
        raise ValueError("no frame precedes the reference volumes")
    means = {k: (v / n).float() for k, v in s1.items()}
    std = {k: np.sqrt(np.clip((s2[k] / n - (s1[k] / n) ** 2).mean((1, 2)).cpu().numpy(),
                              0, None)) for k in s1}
    return means, std


def _kernel(video: VideoNIF, target: str) -> np.ndarray | None:
    """A full space-time area's kernels over all its lags, (C_out, C_in, taps, k, k)."""
    layer = video.space_time_conv[target] if target in video.space_time_conv else None
    if not isinstance(layer, CausalConv3d):
        return None
    return torch.cat([layer.past, layer.conv.weight[:, :, None]], 2).detach().cpu().numpy()


def _mean_prediction(models: list[VideoNIF], files: MovieFiles, volumes: np.ndarray,
                     ablate: list[Replacements | None]) -> dict[str, np.ndarray]:
    """The ensemble's mean prediction of every area, each model with its own ablation."""
    preds = [predict_video(m, files, volumes, replace=r)
             for m, r in zip(models, ablate, strict=True)]
    return {a: np.mean([p[a] for p in preds], axis=0) for a in preds[0]}


def movie_information_flow(models: VideoNIF | list[VideoNIF], files: MovieFiles,
                           volumes: np.ndarray, true: dict[str, np.ndarray],
                           reference_volumes: np.ndarray) -> list[FlowResult]:
    """Ablate each source of each area with voxels and score the area on ``volumes``.

    Parameters
    ----------
    models : VideoNIF or list of VideoNIF
        A model, or an ensemble of models of one kind: each is ablated alike (with its own
        mean features) and the area's prediction is their mean, as the run predicts.
    files : niflow.data.movie.MovieFiles
    volumes : ndarray of shape (n,), int
        Held-out volumes to score.
    true : dict of str to ndarray of shape (n, n_voxels)
        Their measured volumes per area (any affine scale: r is used); areas left out are
        not scored.
    reference_volumes : ndarray of int
        Training volumes; their frames give the mean features of the "mean" ablation and
        the channel spreads of the effective weight shares.

    Returns
    -------
    list of FlowResult, one per (target, source) edge, in graph order; the weight columns
    are the models' means (``channel_norms``: the first model's).
    """
    models = [models] if isinstance(models, VideoNIF) else list(models)
    stats = [movie_feature_statistics(m, files, reference_volumes) for m in models]
    first = models[0]
    full = _mean_prediction(models, files, volumes, [None] * len(models))
    results = []
    for target in first.spatial.areas_with_voxels:
        if target not in true:
            continue
        y = true[target]
        weights = [connection_weights(m.spatial, target, st[1], _kernel(m, target))
                   for m, st in zip(models, stats, strict=True)]
        r_full = pearson_r(full[target], y)
        for s in first.spatial.graph.areas[target].cfg.sources:
            zero = [{(target, s): torch.zeros_like} for _ in models]
            at_mean = [{(target, s): lambda t, m=st[0][s]: m.to(t.device).expand_as(t)}
                       for st in stats]
            w = {k: float(np.mean([wt[s][k] for wt in weights]))
                 for k in ("norm", "share", "effective_share")}
            results.append(FlowResult(
                target, s, r_full,
                pearson_r(_mean_prediction(models, files, volumes, zero)[target], y),
                pearson_r(_mean_prediction(models, files, volumes, at_mean)[target], y),
                w["norm"], w["share"], w["effective_share"], weights[0][s]["channel_norms"]))
    return results
