"""Training a :class:`~niflow.model.video.VideoNIF` on movie fMRI, run segment by segment.

A batch is one segment of a run: its volumes (``segment_s`` seconds of them) and every frame
from ``model.history`` frames before the first volume's window to the last volume's last
frame. Each frame's features are computed once per segment whatever the number of volumes
that see it, no segment crosses a run boundary, and the frames are read from disk per
segment, so memory does not grow with the length of the recording. Validation is on whole
runs (:func:`niflow.data.movie.movie_split`), with early stopping on the median held-out r.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from niflow.config import RunConfig
from niflow.data.dataset import Standardizer
from niflow.data.movie import MovieFiles, MovieTiming, movie_split
from niflow.model.hrf import HRFReadout
from niflow.model.video import HRF_INIT_WINDOW_S, VideoNIF
from niflow.train.runtime import Runtime, all_reduce_sum

__all__ = ["MovieFit", "Segment", "ensemble_hrf_parameters", "fit_movie", "fit_video",
           "hrf_weighted_features", "hrf_window_frames", "initialize_hrf_latencies",
           "make_segments", "predict_ensemble", "predict_video", "refine_hrf_latencies"]

INIT_VOLUMES = 1024  # training volumes the readouts' initial regression looks at


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
    valid = (idx >= 0)[..., None, None, None]
    total = (frames[pos] * valid).sum(axis=1) if wanted.size else np.zeros(
        (len(idx), *files.frame_shape), np.float32)
    return (total / np.maximum(valid.sum(axis=1), 1)).astype(np.float32)


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
    used, parts, missing = [], {p: {} for p in peaks}, {p: [] for p in peaks}
    sums: dict[str, torch.Tensor] = {}
    n, n_frames = 0, 0
    for seg in make_segments(files.timing, volumes, model.history, seconds):
        take = min(len(seg.volumes), limit - n)
        if take <= 0:
            break
        feats = model.features(_frames(files, seg, device))
        lag = seg.last[:take, None] - np.arange(seg.frame_stop - seg.frame_start)[None]
        ok = (lag >= 0) & (lag < hrf.n_lags)
        for a, f in feats.items():
            sums[a] = sums.get(a, 0) + f[0].double().sum(0).cpu()
        n_frames += seg.frame_stop - seg.frame_start
        for p, k in kernels.items():
            weights = np.where(ok, k[np.clip(lag, 0, hrf.n_lags - 1)], 0.0)  # (n_vol, T)
            missing[p].append(k.sum() - weights.sum(1))  # the HRF's share before the run
            w = torch.as_tensor(weights, dtype=torch.float32, device=device)
            for a, f in feats.items():
                parts[p].setdefault(a, []).append(
                    torch.einsum("vt,tchw->vchw", w, f[0].float()).cpu())
        used.append(seg.volumes[:take])
        n += take
    mean = {a: (v / max(n_frames, 1)).float() for a, v in sums.items()}
    out = {}
    for p, d in parts.items():
        share = torch.as_tensor(np.concatenate(missing[p]), dtype=torch.float32)
        out[p] = {a: torch.cat(v) + share[:, None, None, None] * mean[a] for a, v in d.items()}
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
        drive = model.drive(_frames(files, seg, device))
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


def _frames(files: MovieFiles, seg: Segment, device: torch.device) -> torch.Tensor:
    x = files.frames(np.arange(seg.frame_start, seg.frame_stop))
    return torch.as_tensor(x, device=device)[None]


@torch.no_grad()
def predict_video(model: VideoNIF, files: MovieFiles, volumes: np.ndarray,
                  seconds: float = 60.0) -> dict[str, np.ndarray]:
    """Predictions (z-scored units) for ``volumes``, in their order; 0 for volumes that no
    frame precedes.

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
        pred = model(_frames(files, seg, device), torch.as_tensor(seg.last, device=device))
        rows = [where[int(v)] for v in seg.volumes]
        for a, p in pred.items():
            out[a][rows] = p[0].float().cpu().numpy()
    model.train(was_training)
    return out


def _median_r(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> float:
    rs = []
    for a, p in pred.items():
        pc, tc = p - p.mean(0), true[a] - true[a].mean(0)
        den = np.sqrt((pc**2).sum(0) * (tc**2).sum(0))
        rs.append(np.where(den > 0, (pc * tc).sum(0) / np.where(den > 0, den, 1), 0.0))
    return float(np.median(np.concatenate(rs)))


@dataclass
class VideoHistory:
    """One record per epoch (``epoch``, ``train_loss``, ``val_r``, ``seconds``)."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_r: float = -np.inf


def _steps(n_segments: int, order: np.ndarray, runtime: Runtime) -> list[int]:
    """This process's segment at every step: step ``i`` takes ``world`` consecutive
    segments of ``order``, one per process (the last group wraps around to the start)."""
    world, rank = runtime.world_size, runtime.rank
    n_steps = -(-n_segments // world)
    return [int(order[(i * world + rank) % n_segments]) for i in range(n_steps)]


def _average_gradients(model: VideoNIF, runtime: Runtime) -> None:
    """Every process's gradient replaced by their mean: one step on ``world`` segments."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= runtime.world_size
    i = 0
    for g in grads:
        g.copy_(flat[i:i + g.numel()].view_as(g))
        i += g.numel()


def fit_video(model: VideoNIF, files: MovieFiles, responses: dict[str, np.ndarray],
              train: np.ndarray, val: np.ndarray, cfg: RunConfig,
              progress: Callable[[str], None] | None = None,
              segment_s: float = 60.0, runtime: Runtime | None = None) -> VideoHistory:
    """Adam on segments of the training runs; keep the epoch with the best validation r.

    Parameters
    ----------
    responses : dict of str to ndarray of shape (n_TR, n_voxels)
        Z-scored on the training volumes.
    train, val : ndarray of int
        Volume indices.
    cfg : RunConfig
        ``train.lr``, ``epochs``, ``patience``, ``weight_decay``, ``seed`` are used.
    runtime : Runtime, optional
        Under ``torchrun`` every process takes one segment per step and the gradients are
        averaged (batch-norm statistics span the processes); every process validates on all
        validation volumes, so all stop at the same epoch with the same weights.
    """
    runtime = runtime or Runtime()
    tc = cfg.train
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    device = next(model.parameters()).device
    segs = make_segments(files.timing, train, model.history, segment_s)
    val_true = {a: r[np.sort(val)] for a, r in responses.items()}
    opt = torch.optim.Adam(model.parameter_groups(tc.lr), lr=tc.lr,
                           weight_decay=tc.weight_decay)
    hist, best_state, stale = VideoHistory(), None, 0
    n_vox = sum(r.shape[1] for r in responses.values())
    for epoch in range(1, tc.epochs + 1):
        start, total = time.perf_counter(), 0.0
        model.train()
        for i in _steps(len(segs), rng.permutation(len(segs)), runtime):
            seg = segs[i]
            pred = model(_frames(files, seg, device), torch.as_tensor(seg.last, device=device))
            # every voxel counts once, whatever its area's size
            loss = sum(((p[0] - torch.as_tensor(responses[a][seg.volumes], device=device,
                                                dtype=p.dtype)) ** 2).mean(0).sum()
                       for a, p in pred.items()) / n_vox
            opt.zero_grad()
            (loss + model.regularizer()).backward()
            if runtime.distributed:
                _average_gradients(model, runtime)
            opt.step()
            total += float(loss.detach()) * len(seg.volumes)
        if runtime.distributed:  # the epoch's loss over every process's segments
            total = float(all_reduce_sum(torch.tensor([total], dtype=torch.float64),
                                         runtime)[0])
        val_r = _median_r(predict_video(model, files, np.sort(val), segment_s), val_true)
        rec = {"epoch": epoch, "train_loss": total / max(sum(len(s.volumes) for s in segs), 1),
               "val_r": val_r, "seconds": time.perf_counter() - start}
        hist.epochs.append(rec)
        if progress is not None:
            progress(f"epoch {epoch}/{tc.epochs}  train {rec['train_loss']:.3f}  val r "
                     f"{val_r:.3f}  {rec['seconds']:.1f} s")
        if val_r > hist.best_val_r:
            hist.best_val_r, hist.best_epoch, stale = val_r, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= tc.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    if runtime.distributed:
        _check_in_step(model, runtime)
    return hist


def _check_in_step(model: VideoNIF, runtime: Runtime) -> None:
    """Raise unless every process ended with the same weights (they take the same averaged
    steps; a difference means the processes saw different data or settings)."""
    flat = torch.cat([t.detach().double().reshape(-1).cpu() for t in model.state_dict().values()
                      if t.is_floating_point()])
    mine = torch.stack([flat.sum(), (flat * flat).sum()])
    every = [torch.zeros_like(mine) for _ in range(runtime.world_size)]
    dist.all_gather(every, mine)
    if any(not torch.allclose(e, every[0], rtol=1e-6, atol=1e-9) for e in every):
        raise RuntimeError("the data-parallel processes ended with different weights; check "
                           "that every process reads the same files with the same settings")


@dataclass
class MovieFit:
    """A video model fitted on a movie data set, with what it needs to predict.

    Attributes
    ----------
    model : VideoNIF
    scalers : dict of str to Standardizer
        Z-scoring of each area's volumes (training volumes).
    train, val, test : ndarray of int64
        Volume indices of the split (by run).
    history : VideoHistory
    """

    model: VideoNIF
    scalers: dict[str, Standardizer]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    history: VideoHistory
    members: list[VideoNIF] = field(default_factory=list)

    @property
    def ensemble(self) -> list[VideoNIF]:
        """``model`` and the further ensemble ``members`` (same kind, other validation runs
        and seeds; the z-scoring is on all non-test volumes, so it is shared)."""
        return [self.model, *self.members]

    def predict(self, files: MovieFiles, volumes: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions in the responses' units, (len(volumes), n_voxels) per area: the
        ensemble's mean."""
        z = predict_ensemble(self.ensemble, files, volumes)
        return {a: self.scalers[a].inverse(p) for a, p in z.items()}


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


def ensemble_hrf_parameters(models: list[VideoNIF]) -> dict[str, dict[str, np.ndarray]]:
    """Per area, each voxel's ``hrf_peak_s`` and ``hrf_fwhm_s``: the median over ``models``."""
    each = [m.hrf_parameters() for m in models]
    return {a: {k: np.median([e[a][k] for e in each], axis=0) for k in each[0][a]}
            for a in each[0]}


def fit_movie(files: MovieFiles, test_runs: list[int], cfg: RunConfig,
              progress: Callable[[str], None] | None = None, taps_s: float | None = None,
              segment_s: float | None = None, device: torch.device | str = "cpu",
              hrf_search: bool = False, hrf_refine: bool = True,
              runtime: Runtime | None = None) -> MovieFit:
    """Split by run, z-score on the training volumes, initialise and train a video model.

    Parameters
    ----------
    files : MovieFiles
    test_runs : list of int
        Held-out runs (never seen in training or validation).
    cfg : RunConfig
        Areas, spatial readout and training settings (``train.val_fraction`` of the
        training runs validate); ``video`` for the space-time filters and segments.
    taps_s, segment_s : float, optional
        Override ``cfg.video.taps_s`` and ``cfg.video.segment_s``.
    device : torch.device or str
        Where the model trains (frames are read on the CPU and moved per segment).
    hrf_search : bool
        Start each voxel's HRF at its best latency on a grid
        (:func:`initialize_hrf_latencies`) rather than at 5 s (off by default: on one
        simulated seed it moved V1's latency error from 0.59 to 0.53 s but V2's from 0.71
        to 0.74 s and lowered the held-out r; BENCHMARKS.md).
    hrf_refine : bool
        After training, search the latencies again with the trained drive
        (:func:`refine_hrf_latencies`).
    runtime : Runtime, optional
        ``torchrun``: see :func:`fit_video` (the model trains on ``runtime.device``).
    """
    t = files.timing
    segment_s = cfg.video.segment_s if segment_s is None else segment_s
    train, val, test = movie_split(t, test_runs, cfg.train.val_fraction, cfg.train.seed)
    fit_rows = np.concatenate([train, val])
    scalers = {a: Standardizer.fit(r[fit_rows]) for a, r in files.responses.items()}
    z = {a: scalers[a].transform(r).astype(np.float32) for a, r in files.responses.items()}
    torch.manual_seed(cfg.train.seed)
    model = VideoNIF(cfg, files.frame_shape, {a: r.shape[1] for a, r in z.items()}, t.fps,
                     taps_s=taps_s)
    init = np.sort(np.random.default_rng(cfg.train.seed).permutation(train)[:INIT_VOLUMES])
    frames = hrf_window_frames(files, init)
    last = t.frames_before(init, 1)[:, 0]
    shown = files.frames(np.unique(last[last >= 0]))  # the last frame before each volume
    model.spatial.set_input_stats(float(shown.mean()), float(shown.std()))

    def weighted() -> tuple[dict[str, torch.Tensor], dict[float, dict[str, torch.Tensor]],
                            dict[str, torch.Tensor]]:
        used, feats, mean = hrf_weighted_features(model, files, init, seconds=segment_s)
        return {a: torch.as_tensor(r[used]) for a, r in z.items()}, feats, mean

    model.initialize_readouts(torch.as_tensor(frames),
                              {a: torch.as_tensor(r[init]) for a, r in z.items()}, weighted,
                              torch.as_tensor(shown))
    model.to(runtime.device if runtime is not None and runtime.distributed else device)
    if hrf_search:
        initialize_hrf_latencies(model, files, z, train, cfg.train.seed)
    hist = fit_video(model, files, z, train, val, cfg, progress, segment_s, runtime)
    if hrf_refine:
        refine_hrf_latencies(model, files, z, train, val, hist, cfg.train.seed, segment_s,
                             progress)
    return MovieFit(model, scalers, train, val, test, hist)


HRF_REFINE_GRID_S = tuple(float(p) for p in np.arange(2.5, 10.01, 0.1))


def refine_hrf_latencies(model: VideoNIF, files: MovieFiles, responses: dict[str, np.ndarray],
                         train: np.ndarray, val: np.ndarray, hist: VideoHistory, seed: int = 0,
                         segment_s: float = 60.0,
                         progress: Callable[[str], None] | None = None) -> bool:
    """Search every voxel's latency again on a fine grid with the trained drive; keep the
    new HRFs only if the validation median r does not drop.

    Training moves a latency by small steps from where it started; with the trained
    features the search places it directly.

    Returns
    -------
    bool
        Whether the refined latencies were kept.
    """
    before = {k: v.clone() for k, v in model.hrf.state_dict().items()}
    initialize_hrf_latencies(model, files, responses, train, seed, HRF_REFINE_GRID_S,
                             segment_s)
    val_true = {a: r[np.sort(val)] for a, r in responses.items()}
    val_r = _median_r(predict_video(model, files, np.sort(val), segment_s), val_true)
    keep = val_r >= hist.best_val_r
    if progress is not None:
        progress(f"HRF latencies searched again: validation r {val_r:.3f} "
                 f"({'kept' if keep else 'not kept'}; trained {hist.best_val_r:.3f})")
    if keep:
        hist.best_val_r = val_r
    else:
        model.hrf.load_state_dict(before)
    return keep
