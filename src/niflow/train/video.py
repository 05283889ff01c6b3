"""Training a :class:`~niflow.model.video.VideoNIF` on movie fMRI, run segment by segment.

A batch is one segment of a run (:mod:`niflow.train.segments`): its volumes (``segment_s``
seconds of them) and the frames before them, read from disk per segment, so memory does not
grow with the length of the recording. The model starts from a fitted linear pRF model
(:mod:`niflow.train.video_init`). Validation is on whole runs
(:func:`niflow.data.movie.movie_split`), with early stopping on the median held-out r. The
segment and start-up helpers are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from niflow.config import RunConfig
from niflow.data.dataset import Split, Standardizer
from niflow.data.movie import MovieFiles, MovieTiming, movie_split
from niflow.model.video import VideoNIF
from niflow.train.epochs import History, run_epochs
from niflow.train.runtime import Runtime, all_reduce_sum
from niflow.train.segments import (
    Segment,
    make_segments,
    median_r,
    predict_ensemble,
    predict_video,
    segment_frames,
    voxel_r,
)
from niflow.train.select import member_config
from niflow.train.video_init import (
    calibration_clips,
    hrf_weighted_features,
    hrf_window_frames,
    initialize_hrf_latencies,
)

__all__ = ["MovieData", "MovieFit", "Segment", "SegmentTask", "build_video",
           "ensemble_hrf_parameters", "fit_movie", "fit_video", "hrf_weighted_features",
           "hrf_window_frames", "initialize_hrf_latencies", "make_segments", "movie_data",
           "movie_member_data", "predict_ensemble", "predict_video", "refine_hrf_latencies",
           "train_video"]

INIT_VOLUMES = 1024  # training volumes the readouts' initial regression looks at


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
              train: np.ndarray, val: np.ndarray, cfg: RunConfig, progress: bool = False,
              segment_s: float = 60.0, runtime: Runtime | None = None,
              checkpoint_dir: Path | None = None, resume: bool = False) -> History:
    """Adam on segments of the training runs; keep the epoch with the best validation r.

    The epochs go through :func:`niflow.train.epochs.run_epochs`, as an image model's do:
    early stopping, divergence (a one-line :class:`~niflow.train.safety.TrainingDiverged`),
    checkpoints, resume and ``log.jsonl`` behave the same.

    Parameters
    ----------
    responses : dict of str to ndarray of shape (n_TR, n_voxels)
        Z-scored on the training volumes.
    train, val : ndarray of int
        Volume indices.
    cfg : RunConfig
        ``train.lr``, ``epochs``, ``patience``, ``weight_decay``, ``seed``,
        ``area_weighting`` and ``threads`` are used (a batch is one segment of
        ``segment_s``, so ``batch_size`` is not).
    progress : bool
        A bar on a terminal, else one line per epoch on stderr (rank 0).
    runtime : Runtime, optional
        Under ``torchrun`` every process takes one segment per step and the gradients are
        averaged (batch-norm statistics span the processes); every process validates on all
        validation volumes, so all stop at the same epoch with the same weights.
    checkpoint_dir : Path, optional
        After every epoch (rank 0) the whole training state (weights, optimiser, best
        weights, history, the segment order's generator) is written atomically to
        ``checkpoint_dir/checkpoint.pt``, and the epoch's record to ``log.jsonl``.
    resume : bool
        Continue from that checkpoint: the epochs that follow are those an uninterrupted
        run would have trained.

    Returns
    -------
    History
        Records with ``val_median_r``, the median r over all validation voxels.

    Raises
    ------
    TrainingDiverged
        A non-finite or exploding loss or validation r; the model is not kept.
    TrainingInterrupted
        Ctrl-C, saying which epoch's checkpoint is on disk.
    """
    runtime = runtime or Runtime()
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    if resume and checkpoint_dir is None:
        raise ValueError("resume needs checkpoint_dir")
    opt = torch.optim.Adam(model.parameter_groups(tc.lr), lr=tc.lr,
                           weight_decay=tc.weight_decay)
    task = SegmentTask(model, files, responses, train, val, opt, tc.seed, segment_s, runtime,
                       tc.area_weighting)
    hist = run_epochs(model, opt, task, epochs=tc.epochs, patience=tc.patience, lr=tc.lr,
                      run_dir=checkpoint_dir, resume=resume, progress=progress,
                      runtime=runtime)
    if runtime.distributed:
        _check_in_step(model, runtime)
    return hist


class SegmentTask:
    """Training on segments of movie runs (:class:`~niflow.train.epochs.EpochTask`): every
    epoch all training segments in a random order (a generator of ``seed``, checkpointed),
    one per process per step; validation is the median r over all voxels on the validation
    volumes. The loss is the mean squared error over all voxels (``area_weighting``
    ``"voxels"``: every voxel counts once) or the mean of the areas' (``"equal"``)."""

    def __init__(self, model: VideoNIF, files: MovieFiles, responses: dict[str, np.ndarray],
                 train: np.ndarray, val: np.ndarray, opt: torch.optim.Optimizer, seed: int,
                 segment_s: float, runtime: Runtime, area_weighting: str = "voxels") -> None:
        self.model, self.files, self.responses, self.opt = model, files, responses, opt
        self.runtime, self.segment_s = runtime, segment_s
        # the loss is sum over areas of scale[a] * (sum of the voxels' MSE) / norm
        if area_weighting == "equal":
            self.scale = {a: 1.0 / r.shape[1] for a, r in responses.items()}
            self.norm = len(responses)
        else:
            self.scale = dict.fromkeys(responses, 1.0)
            self.norm = sum(r.shape[1] for r in responses.values())
        self.segs = make_segments(files.timing, train, model.history, segment_s)
        self.val = np.sort(val)
        self.val_true = {a: r[self.val] for a, r in responses.items()}
        self.rng = np.random.default_rng(seed)

    def train_epoch(self, epoch: int) -> float:
        model, rt, segs = self.model, self.runtime, self.segs
        device = next(model.parameters()).device
        total = 0.0
        for i in _steps(len(segs), self.rng.permutation(len(segs)), rt):
            seg = segs[i]
            pred = model(segment_frames(self.files, seg, device),
                         torch.as_tensor(seg.last, device=device))
            loss = sum(((p[0] - torch.as_tensor(self.responses[a][seg.volumes], device=device,
                                                dtype=p.dtype)) ** 2).mean(0).sum()
                       * self.scale[a] for a, p in pred.items()) / self.norm
            self.opt.zero_grad()
            (loss + model.regularizer()).backward()
            if rt.distributed:
                _average_gradients(model, rt)
            self.opt.step()
            total += float(loss.detach()) * len(seg.volumes)
        if rt.distributed:  # the epoch's loss over every process's segments
            total = float(all_reduce_sum(torch.tensor([total], dtype=torch.float64), rt)[0])
        return total / max(sum(len(s.volumes) for s in segs), 1)

    def validate(self) -> tuple[float, dict]:
        rs = voxel_r(predict_video(self.model, self.files, self.val, self.segment_s),
                     self.val_true)
        val_r = float(np.median(np.concatenate(list(rs.values()))))
        return val_r, {"val_median_r": val_r,
                       "val_median_r_per_area": {a: float(np.median(r)) for a, r in rs.items()}}

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, checkpoint: dict) -> None:
        self.rng.bit_generator.state = checkpoint["rng"]


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
class MovieData:
    """A movie data set split by run and z-scored: what a video model trains on.

    Attributes
    ----------
    files : MovieFiles
    responses : dict of str to ndarray of shape (n_TR, n_voxels), float32
        Z-scored on the training and validation volumes.
    scalers : dict of str to Standardizer
        That z-scoring.
    split : Split
        Volume indices of the training, validation and test runs.
    test_runs : list of int
    """

    files: MovieFiles
    responses: dict[str, np.ndarray]
    scalers: dict[str, Standardizer]
    split: Split
    test_runs: list[int]


def movie_data(files: MovieFiles, test_runs: list[int], cfg: RunConfig) -> MovieData:
    """Split ``files`` by run (``train.val_fraction`` of the training runs validate, drawn
    with ``train.seed``) and z-score every area on the training and validation volumes."""
    train, val, test = movie_split(files.timing, test_runs, cfg.train.val_fraction,
                                   cfg.train.seed)
    fit_rows = np.concatenate([train, val])
    scalers = {a: Standardizer.fit(r[fit_rows]) for a, r in files.responses.items()}
    z = {a: scalers[a].transform(r).astype(np.float32) for a, r in files.responses.items()}
    return MovieData(files, z, scalers, Split(train, val, test), list(test_runs))


def movie_member_data(data: MovieData, cfg: RunConfig, index: int) -> MovieData:
    """Ensemble member ``index``'s data: validation runs drawn with its own seed
    (``train.seed + index``); the same test runs and, up to rounding, the same z-scoring
    (every member z-scores on all non-test volumes)."""
    if index == 0:
        return data
    return movie_data(data.files, data.test_runs, member_config(cfg, index))


def build_video(cfg: RunConfig, data: MovieData, taps_s: float | None = None) -> VideoNIF:
    """A new video model for ``data`` with weights seeded by ``train.seed`` (not yet
    started: :func:`train_video` fits its start)."""
    torch.manual_seed(cfg.train.seed)
    return VideoNIF(cfg, data.files.frame_shape,
                    {a: r.shape[1] for a, r in data.responses.items()}, data.files.timing.fps,
                    taps_s=taps_s)


def train_video(model: VideoNIF, data: MovieData, cfg: RunConfig, folder: Path | None = None,
                resume: bool = False, *, progress: Callable[[str], None] | None = None,
                segment_s: float | None = None, device: torch.device | str = "cpu",
                hrf_refine: bool = True, runtime: Runtime | None = None) -> History:
    """Start ``model`` from a fitted linear pRF model, train it, and search its HRF
    latencies again.

    Parameters
    ----------
    model : VideoNIF
        From :func:`build_video`; trained in place on ``device``.
    data : MovieData
    cfg : RunConfig
        ``train`` settings; ``video.segment_s`` unless ``segment_s`` is given.
    folder : Path, optional
        Checkpoints and ``log.jsonl`` of :func:`fit_video`.
    resume : bool
        Continue from ``folder``'s checkpoint (which holds every weight of the started
        model, so the start is not fitted again).
    progress : callable, optional
        Told one line per epoch and the latency search's outcome.
    hrf_refine : bool
        After training, search the latencies again with the trained drive
        (:func:`refine_hrf_latencies`).
    runtime : Runtime, optional
        ``torchrun``: see :func:`fit_video` (the model trains on ``runtime.device``).
    """
    segment_s = cfg.video.segment_s if segment_s is None else segment_s
    train, val = data.split.train, data.split.val
    if not resume:
        _initialize(model, data.files, data.responses, train, cfg.train.seed, segment_s)
    model.to(runtime.device if runtime is not None and runtime.distributed else device)
    hist = fit_video(model, data.files, data.responses, train, val, cfg, progress is not None,
                     segment_s, runtime, folder, resume=resume)
    if hrf_refine:
        refine_hrf_latencies(model, data.files, data.responses, train, val, hist,
                             cfg.train.seed, segment_s, progress)
    return hist


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
    history : History
    """

    model: VideoNIF
    scalers: dict[str, Standardizer]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    history: History
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


def ensemble_hrf_parameters(models: list[VideoNIF]) -> dict[str, dict[str, np.ndarray]]:
    """Per area, each voxel's ``hrf_peak_s`` and ``hrf_fwhm_s``: the median over ``models``."""
    each = [m.hrf_parameters() for m in models]
    return {a: {k: np.median([e[a][k] for e in each], axis=0) for k in each[0][a]}
            for a in each[0]}


def fit_movie(files: MovieFiles, test_runs: list[int], cfg: RunConfig,
              progress: Callable[[str], None] | None = None, taps_s: float | None = None,
              segment_s: float | None = None, device: torch.device | str = "cpu",
              hrf_refine: bool = True, runtime: Runtime | None = None) -> MovieFit:
    """Split by run, z-score on the training volumes, start and train one video model.

    (``niflow train`` selects among candidates and trains an ensemble with
    :func:`niflow.train.select.select_and_train` of :func:`build_video` and
    :func:`train_video`, as for images.)

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
    hrf_refine, runtime
        See :func:`train_video`.
    """
    data = movie_data(files, test_runs, cfg)
    model = build_video(cfg, data, taps_s)
    hist = train_video(model, data, cfg, progress=progress, segment_s=segment_s,
                       device=device, hrf_refine=hrf_refine, runtime=runtime)
    return MovieFit(model, data.scalers, data.split.train, data.split.val, data.split.test,
                    hist)


def initial_volumes(timing: MovieTiming, train: np.ndarray, history: int, seed: int,
                    seconds: float = 60.0) -> np.ndarray:
    """About ``INIT_VOLUMES`` training volumes for the fitted start: whole training segments
    in a random order until there are that many.

    Volumes drawn one by one from an hour of recording would each need their own HRF
    history, so reading them took nearly every frame of the movie (time and memory grew
    with its length); whole segments need their own frames and one history each.

    Returns
    -------
    ndarray of int64, sorted
        The volumes (a run's first volume, which no frame precedes, is never among them).
    """
    segs = make_segments(timing, train, history, seconds)
    picked, n = [], 0
    for i in np.random.default_rng(seed).permutation(len(segs)):
        if n >= INIT_VOLUMES:
            break
        picked.append(segs[i].volumes)
        n += len(segs[i].volumes)
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _initialize(model: VideoNIF, files: MovieFiles, z: dict[str, np.ndarray],
                train: np.ndarray, seed: int, segment_s: float) -> None:
    """The readouts, latencies, baselines and normalisations of a new model (on the CPU):
    a fitted linear pRF model on up to ``INIT_VOLUMES`` training volumes."""
    t = files.timing
    init = initial_volumes(t, train, model.history, seed, segment_s)
    frames = hrf_window_frames(files, init)
    last = t.frames_before(init, 1)[:, 0]
    shown = files.frames(np.unique(last[last >= 0]))  # the last frame before each volume
    model.spatial.set_input_stats(float(shown.mean()), float(shown.std()))

    def weighted() -> tuple[dict[str, torch.Tensor], dict[float, dict[str, torch.Tensor]],
                            dict[str, torch.Tensor]]:
        used, feats, mean = hrf_weighted_features(model, files, init, seconds=segment_s)
        return {a: torch.as_tensor(r[used]) for a, r in z.items()}, feats, mean

    clips = calibration_clips(files, init) if model.needs_clips else None
    model.initialize_readouts(torch.as_tensor(frames),
                              {a: torch.as_tensor(r[init]) for a, r in z.items()}, weighted,
                              torch.as_tensor(shown),
                              None if clips is None else torch.as_tensor(clips))


HRF_REFINE_GRID_S = tuple(float(p) for p in np.arange(2.5, 10.01, 0.1))


def refine_hrf_latencies(model: VideoNIF, files: MovieFiles, responses: dict[str, np.ndarray],
                         train: np.ndarray, val: np.ndarray, hist: History, seed: int = 0,
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
    val_r = median_r(predict_video(model, files, np.sort(val), segment_s), val_true)
    keep = val_r >= hist.best_score
    if progress is not None:
        progress(f"HRF latencies searched again: validation r {val_r:.3f} "
                 f"({'kept' if keep else 'not kept'}; trained {hist.best_score:.3f})")
    if keep:
        hist.best_score = val_r
    else:
        model.hrf.load_state_dict(before)
    return keep
