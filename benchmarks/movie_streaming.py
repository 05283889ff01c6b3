"""Movie training from disk: memory against recording length, epoch time, and throughput
against a plain PyTorch loop over the same model.

Usage::

    .venv/bin/python benchmarks/movie_streaming.py [--minutes 15 30 60] [--size 64]
        [--fps 8] [--tr 1] [--voxels 1000 1000] [--plain-minutes 5]

For each length this writes an HDF5 movie (``--size`` px square, uint8, chunked per 64
frames, 10 runs of equal length) and responses (one TR per ``--tr`` s, V1 and V2 voxels,
float32; random: accuracy is not measured here), then in a fresh process trains one epoch of
the default ``gabor-gaussian`` video model with :func:`niflow.train.video.fit_movie` (frames
read from the file segment by segment, one run held out, one validating). Printed per length:
the movie's size on disk and as float32 in memory, the training process's peak resident
memory (with glibc's default allocator settings, and again in a second process with
allocations from 64 KiB up mapped separately, ``MALLOC_MMAP_THRESHOLD_=65536``, so that
freed memory kept by the allocator for reuse does not count), seconds of the fitted start,
seconds of the epoch (training segments plus validation) and training frames per second
(the first process's).

Throughput: on the first ``--plain-minutes`` of the movie, one epoch of niflow's loop against
a plain loop written here (frames already in memory as one float32 tensor, the same
VideoNIF, the same segments, Adam, MSE), measured in the same process one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

RUNS = 10


def write_movie(folder: Path, minutes: float, size: int, fps: float, tr: float,
                voxels: tuple[int, int]) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    per_run = int(round(minutes * 60 / RUNS / tr))  # volumes per run
    frames_per_run = int(round(per_run * tr * fps))
    n_frames = frames_per_run * RUNS
    s, b = folder / f"stim_{minutes:g}.h5", folder / f"bold_{minutes:g}.h5"
    with h5py.File(s, "w") as fh:
        ds = fh.create_dataset("stim", (n_frames, size, size), np.uint8,
                               chunks=(64, size, size))
        block = 2048
        for i in range(0, n_frames, block):
            n = min(block, n_frames - i)
            # smooth random blobs drifting over time: a movie, not white noise
            base = rng.integers(0, 256, (n // 16 + 1, size // 8, size // 8)).astype(np.uint8)
            up = np.repeat(np.repeat(np.repeat(base, 16, 0)[:n], 8, 1), 8, 2)
            ds[i:i + n] = up
        fh["fps"] = fps
        fh["run"] = np.repeat(np.arange(1, RUNS + 1), frames_per_run)
    with h5py.File(b, "w") as fh:
        for area, v in zip(("V1", "V2"), voxels, strict=True):
            fh[area] = rng.standard_normal((per_run * RUNS, v)).astype(np.float32)
        fh["tr"] = tr
        fh["run"] = np.repeat(np.arange(1, RUNS + 1), per_run)
    return s, b


def _config():
    from niflow import config as cfgmod

    cfg = cfgmod.candidate(cfgmod.preset("default"), "gabor-gaussian")
    cfg.train.epochs, cfg.train.patience, cfg.train.val_fraction = 1, 1, 0.1
    return cfg


def child_memory(stim: str, bold: str) -> dict:
    import torch

    from niflow.data.movie import read_movie
    from niflow.train.video import fit_movie

    torch.set_num_threads(max(1, torch.get_num_threads()))
    files = read_movie(stim, bold)
    start = time.perf_counter()
    fit = fit_movie(files, [files.timing.runs[-1]], _config(), hrf_refine=False)
    total = time.perf_counter() - start
    epoch = fit.history.epochs[0]
    train_frames = sum(int(np.sum(files.timing.frame_run == r))
                       for r in set(files.timing.volume_run[fit.train].tolist()))
    return {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "epoch_s": epoch["seconds"], "fit_s": total, "train_frames": train_frames}


def child_throughput(stim: str, bold: str, minutes: float) -> dict:
    import torch

    from niflow.data.dataset import Standardizer
    from niflow.data.movie import read_movie
    from niflow.model.video import VideoNIF
    from niflow.train.video import fit_video, make_segments

    torch.set_num_threads(max(1, torch.get_num_threads()))
    files = read_movie(stim, bold)
    t = files.timing
    runs = t.runs[: max(2, int(round(RUNS * minutes / 60)))]
    train = t.volumes_of(runs[:-1])
    val = t.volumes_of(runs[-1:])
    cfg = _config()
    z = {a: Standardizer.fit(r[train]).transform(r).astype(np.float32)
         for a, r in files.responses.items()}

    def model() -> VideoNIF:
        torch.manual_seed(0)
        return VideoNIF(cfg, files.frame_shape, {a: r.shape[1] for a, r in z.items()}, t.fps)

    net = model()
    segs = make_segments(t, train, net.history)
    frames = sum(s.frame_stop - s.frame_start for s in segs)
    hist = fit_video(net, files, z, train, val, cfg)
    niflow_s = hist.epochs[0]["seconds"]
    # the plain loop: the whole movie in memory, the same model, segments and optimiser,
    # and no validation (niflow's epoch includes it, so it is timed separately below)
    net = model()
    movie = torch.as_tensor(files.frames(np.arange(t.n_frames)))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    n_vox = sum(r.shape[1] for r in z.values())
    start = time.perf_counter()
    for seg in segs:
        pred = net(movie[seg.frame_start:seg.frame_stop][None], torch.as_tensor(seg.last))
        loss = sum(((p[0] - torch.as_tensor(z[a][seg.volumes])) ** 2).mean(0).sum()
                   for a, p in pred.items()) / n_vox
        opt.zero_grad()
        loss.backward()
        opt.step()
    plain_s = time.perf_counter() - start
    from niflow.train.video import predict_video

    start = time.perf_counter()
    predict_video(net, files, val)
    val_s = time.perf_counter() - start
    return {"frames": frames, "niflow_s": niflow_s, "plain_s": plain_s, "val_s": val_s}


# glibc keeps freed heap memory for reuse; with its default (dynamic) mmap threshold a long
# run of differently sized tensors leaves that heap larger than what is live at any time.
# Allocations from 64 KiB up mapped separately (returned to the system when freed) show what
# the run itself holds.
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def run_child(kind: str, *args, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)],
                         capture_output=True, text=True, check=True,
                         env=None if env is None else {**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[15, 30, 60])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--tr", type=float, default=1.0)
    ap.add_argument("--voxels", type=int, nargs=2, default=[1000, 1000])
    ap.add_argument("--plain-minutes", type=float, default=5.0)
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        res = (child_memory(*rest) if kind == "memory"
               else child_throughput(rest[0], rest[1], float(rest[2])))
        print(json.dumps(res))
        return
    mib = 2**20
    with tempfile.TemporaryDirectory(prefix="niflow-movie-stream-") as tmp:
        print(f"{args.size}x{args.size} px at {args.fps:g} fps, TR {args.tr:g} s, "
              f"{sum(args.voxels)} voxels, {RUNS} runs")
        print("| minutes | frames | volumes | file MiB | movie as float32 MiB | peak RSS MiB | "
              "peak RSS MiB, mmap ≥ 64 KiB | fitted start s | epoch s (train + validation) | "
              "training frames/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        paths = {}
        for m in args.minutes:
            s, b = write_movie(Path(tmp), m, args.size, args.fps, args.tr, tuple(args.voxels))
            paths[m] = (s, b)
            with h5py.File(s) as fh:
                n = fh["stim"].shape[0]
            with h5py.File(b) as fh:
                n_tr = fh["V1"].shape[0]
            res = run_child("memory", s, b)
            mapped = run_child("memory", s, b, env=MMAP_ENV)
            print(f"| {m:g} | {n} | {n_tr} | {s.stat().st_size / mib:.0f} | "
                  f"{n * args.size**2 * 4 / mib:.0f} | {res['peak'] / mib:.0f} | "
                  f"{mapped['peak'] / mib:.0f} | {res['fit_s'] - res['epoch_s']:.0f} | "
                  f"{res['epoch_s']:.0f} | {res['train_frames'] / res['epoch_s']:.0f} |",
                  flush=True)
        s, b = paths[max(args.minutes)]
        res = run_child("throughput", s, b, args.plain_minutes)
        niflow_train = res["niflow_s"] - res["val_s"]
        print(f"\nthroughput on {args.plain_minutes:g} min ({res['frames']} frames per epoch "
              f"incl. each segment's history): niflow (frames read from HDF5 per segment) "
              f"{res['frames'] / niflow_train:.0f} frames/s, plain PyTorch loop (movie in "
              f"memory) {res['frames'] / res['plain_s']:.0f} frames/s; ratio niflow/plain "
              f"{res['plain_s'] / niflow_train:.2f} (validation, {res['val_s']:.1f} s, "
              f"taken out of niflow's epoch)")


if __name__ == "__main__":
    main()
