"""Training a :class:`~niflow.model.video.VideoNIF` on movie fMRI, run segment by segment.

A batch is one segment of a run (:mod:`niflow.train.segments`): its volumes (``segment_s``
seconds of them) and the frames before them, read from disk per segment, so memory does not
grow with the length of the recording. The model starts from a fitted linear pRF model
(:mod:`niflow.train.video_init`). Validation is on whole runs
(:func:`niflow.data.movie.movie_split`), with early stopping on the median held-out r. The
segment and start-up helpers are re-exported here.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from niflow.config import RunConfig
from niflow.data.dataset import Standardizer
from niflow.data.movie import MovieFiles, MovieTiming, movie_split
from niflow.model.video import VideoNIF
from niflow.train.loop import CHECKPOINT, DONE, load_checkpoint, save_checkpoint
from niflow.train.runtime import Runtime, all_reduce_sum, broadcast_object
from niflow.train.safety import TrainingInterrupted
from niflow.train.segments import (
    Segment,
    make_segments,
    median_r,
    predict_ensemble,
    predict_video,
    segment_frames,
)
from niflow.train.video_init import (
    calibration_clips,
    hrf_weighted_features,
    hrf_window_frames,
    initialize_hrf_latencies,
)

__all__ = ["MovieFit", "Segment", "ensemble_hrf_parameters", "fit_movie", "fit_video",
           "hrf_weighted_features", "hrf_window_frames", "initialize_hrf_latencies",
           "make_segments", "predict_ensemble", "predict_video", "refine_hrf_latencies"]

INIT_VOLUMES = 1024  # training volumes the readouts' initial regression looks at


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
              segment_s: float = 60.0, runtime: Runtime | None = None,
              checkpoint_dir: Path | None = None, resume: bool = False) -> VideoHistory:
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
    checkpoint_dir : Path, optional
        After every epoch (rank 0) the whole training state (weights, optimiser, best
        weights, history, the segment order's generator) is written atomically to
        ``checkpoint_dir/checkpoint.pt``.
    resume : bool
        Continue from that checkpoint: the epochs that follow are those an uninterrupted
        run would have trained.

    Raises
    ------
    TrainingInterrupted
        Ctrl-C, saying which epoch's checkpoint is on disk.
    """
    runtime = runtime or Runtime()
    tc = cfg.train
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    segs = make_segments(files.timing, train, model.history, segment_s)
    val_true = {a: r[np.sort(val)] for a, r in responses.items()}
    opt = torch.optim.Adam(model.parameter_groups(tc.lr), lr=tc.lr,
                           weight_decay=tc.weight_decay)
    hist, best_state, stale, first = VideoHistory(), None, 0, 1
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume needs checkpoint_dir")
        ck = broadcast_object(load_checkpoint(checkpoint_dir) if runtime.is_main else None,
                              runtime)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        best_state, stale = ck["best_state"], ck["bad_epochs"]
        hist = VideoHistory(**ck["history"])
        rng.bit_generator.state = ck["rng"]
        first = ck["epoch"] + 1 if stale < tc.patience else tc.epochs + 1
    at = {"epoch": None, "saved": first - 1 if resume else None}
    try:
        for epoch in range(first, tc.epochs + 1):
            at["epoch"] = epoch
            best_state, stale = _epoch(epoch, model, files, responses, segs, val, val_true,
                                       opt, rng, runtime, segment_s, hist, best_state, stale)
            if checkpoint_dir is not None and runtime.is_main:
                save_checkpoint(checkpoint_dir / CHECKPOINT, {
                    "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "best_state": best_state, "bad_epochs": stale,
                    "history": dataclasses.asdict(hist), "rng": rng.bit_generator.state})
                at["saved"] = epoch
            if progress is not None:
                rec = hist.epochs[-1]
                progress(f"epoch {epoch}/{tc.epochs}  train {rec['train_loss']:.3f}  val r "
                         f"{rec['val_r']:.3f}  {rec['seconds']:.1f} s")
            if stale >= tc.patience:
                break
    except KeyboardInterrupt:
        raise TrainingInterrupted(at["epoch"], at["saved"],
                                  None if checkpoint_dir is None
                                  else checkpoint_dir / CHECKPOINT) from None
    if best_state is not None:
        model.load_state_dict(best_state)
    if runtime.distributed:
        _check_in_step(model, runtime)
    return hist


def _epoch(epoch: int, model: VideoNIF, files: MovieFiles, responses: dict[str, np.ndarray],
           segs: list[Segment], val: np.ndarray, val_true: dict[str, np.ndarray],
           opt: torch.optim.Optimizer, rng: np.random.Generator, runtime: Runtime,
           segment_s: float, hist: VideoHistory, best_state: dict | None, stale: int,
           ) -> tuple[dict | None, int]:
    """Train one epoch, validate, append its record to ``hist`` (in place); return the best
    weights so far and the epochs since they improved."""
    device = next(model.parameters()).device
    n_vox = sum(r.shape[1] for r in responses.values())
    start, total = time.perf_counter(), 0.0
    model.train()
    for i in _steps(len(segs), rng.permutation(len(segs)), runtime):
        seg = segs[i]
        pred = model(segment_frames(files, seg, device),
                     torch.as_tensor(seg.last, device=device))
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
    val_r = median_r(predict_video(model, files, np.sort(val), segment_s), val_true)
    rec = {"epoch": epoch, "train_loss": total / max(sum(len(s.volumes) for s in segs), 1),
           "val_r": val_r, "seconds": time.perf_counter() - start}
    hist.epochs.append(rec)
    if val_r > hist.best_val_r:
        hist.best_val_r, hist.best_epoch, stale = val_r, epoch, 0
        best_state = copy.deepcopy(model.state_dict())
    else:
        stale += 1
    return best_state, stale


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


def ensemble_hrf_parameters(models: list[VideoNIF]) -> dict[str, dict[str, np.ndarray]]:
    """Per area, each voxel's ``hrf_peak_s`` and ``hrf_fwhm_s``: the median over ``models``."""
    each = [m.hrf_parameters() for m in models]
    return {a: {k: np.median([e[a][k] for e in each], axis=0) for k in each[0][a]}
            for a in each[0]}


def fit_movie(files: MovieFiles, test_runs: list[int], cfg: RunConfig,
              progress: Callable[[str], None] | None = None, taps_s: float | None = None,
              segment_s: float | None = None, device: torch.device | str = "cpu",
              hrf_refine: bool = True,
              runtime: Runtime | None = None, unit_dir: Path | None = None,
              resume: bool = False) -> MovieFit:
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
    hrf_refine : bool
        After training, search the latencies again with the trained drive
        (:func:`refine_hrf_latencies`).
    runtime : Runtime, optional
        ``torchrun``: see :func:`fit_video` (the model trains on ``runtime.device``).
    unit_dir : Path, optional
        A folder of this fit's own (rank 0 creates it): ``checkpoint.pt`` after every epoch
        and, once finished, ``done.pt`` (the kept weights and history).
    resume : bool
        With ``unit_dir``: a finished fit is loaded from ``done.pt``, an interrupted one
        continues from its checkpoint (without starting the model again), any other starts.
    """
    t = files.timing
    runtime_ = runtime or Runtime()
    segment_s = cfg.video.segment_s if segment_s is None else segment_s
    train, val, test = movie_split(t, test_runs, cfg.train.val_fraction, cfg.train.seed)
    fit_rows = np.concatenate([train, val])
    scalers = {a: Standardizer.fit(r[fit_rows]) for a, r in files.responses.items()}
    z = {a: scalers[a].transform(r).astype(np.float32) for a, r in files.responses.items()}
    torch.manual_seed(cfg.train.seed)
    model = VideoNIF(cfg, files.frame_shape, {a: r.shape[1] for a, r in z.items()}, t.fps,
                     taps_s=taps_s)
    target = runtime.device if runtime is not None and runtime.distributed else device
    stage, done = _unit_stage(unit_dir, resume, runtime_)
    if done is not None:
        model.load_state_dict(done["model"])
        return MovieFit(model.to(target), scalers, train, val, test,
                        VideoHistory(**done["history"]))
    if stage is None:  # a checkpoint holds every weight of a started model
        _initialize(model, files, z, train, cfg.train.seed, segment_s)
    model.to(target)
    if unit_dir is not None and runtime_.is_main:
        unit_dir.mkdir(parents=True, exist_ok=True)
    hist = fit_video(model, files, z, train, val, cfg, progress, segment_s, runtime,
                     unit_dir, resume=stage == "checkpoint")
    if hrf_refine:
        refine_hrf_latencies(model, files, z, train, val, hist, cfg.train.seed, segment_s,
                             progress)
    if unit_dir is not None and runtime_.is_main:
        save_checkpoint(unit_dir / DONE, {"model": model.state_dict(),
                                          "history": dataclasses.asdict(hist)})
    return MovieFit(model, scalers, train, val, test, hist)


def _unit_stage(unit_dir: Path | None, resume: bool, runtime: Runtime,
                ) -> tuple[str | None, dict | None]:
    """Where a resumed fit stands: ``("done", state of done.pt)``, ``("checkpoint", None)``
    (training continues from it) or ``(None, None)`` (it starts); rank 0 looks, every
    process gets the answer."""
    if not resume or unit_dir is None:
        return None, None

    def look() -> tuple[str | None, dict | None]:
        if (unit_dir / DONE).exists():
            return "done", torch.load(unit_dir / DONE, map_location="cpu", weights_only=False)
        return ("checkpoint" if (unit_dir / CHECKPOINT).exists() else None), None

    return broadcast_object(look() if runtime.is_main else None, runtime)


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
    val_r = median_r(predict_video(model, files, np.sort(val), segment_s), val_true)
    keep = val_r >= hist.best_val_r
    if progress is not None:
        progress(f"HRF latencies searched again: validation r {val_r:.3f} "
                 f"({'kept' if keep else 'not kept'}; trained {hist.best_val_r:.3f})")
    if keep:
        hist.best_val_r = val_r
    else:
        model.hrf.load_state_dict(before)
    return keep
