"""Frames larger than ``data.input_max_px``: time and memory of one video model trained on
the frames area-averaged by the default's whole factor against the same model on every
pixel (``data.input_max_px`` 0), side by side on the same simulated movie.

Usage::

    .venv/bin/python benchmarks/large_frames.py [--size 128] [--fps 16] [--runs 2]
        [--run-seconds 60] [--limits 64 0]

The movie is :func:`niflow.data.simulate.movie.simulate_movie` at ``--size`` px (``--runs``
training runs of ``--run-seconds`` and a repeated test run; 200 V1 and 100 V2 voxels). For
each limit a fresh process trains one epoch of the default preset's ``gabor-gaussian``
candidate (:func:`niflow.train.video.fit_movie`, frames read from the HDF5 file segment by
segment, the test run held out) and reports its peak resident memory, the fitted start
(calibration, pRF search, HRF latencies) and the epoch (training segments plus validation).
Accuracy after one epoch means little; ``benchmarks/movie.py --input-max-px`` compares
accuracy.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(stim: str, bold: str, limit: int, test_run: int) -> dict:
    import torch

    from niflow import config as cfgmod
    from niflow.data.movie import read_movie
    from niflow.train.video import fit_movie

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = cfgmod.candidate(cfgmod.preset("default"), "gabor-gaussian")
    cfg.train.epochs, cfg.train.patience, cfg.train.val_fraction = 1, 1, 0.34
    cfg.data.input_max_px = limit
    files = read_movie(stim, bold)
    start = time.perf_counter()
    fit = fit_movie(files, [test_run], cfg, hrf_refine=False)
    total = time.perf_counter() - start
    epoch = fit.history.epochs[0]["seconds"]
    return {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "start_s": total - epoch, "epoch_s": epoch,
            "grid": list(fit.model.spatial.geometry("stimulus").grid)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--fps", type=float, default=16.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--run-seconds", type=float, default=60.0)
    ap.add_argument("--limits", type=int, nargs="+", default=[64, 0])
    ap.add_argument("--child", nargs=4)
    args = ap.parse_args()
    if args.child:
        stim, bold, limit, test_run = args.child
        print(json.dumps(child(stim, bold, int(limit), int(test_run))))
        return
    from niflow.data.simulate.movie import simulate_movie, write_movie_simulation

    with tempfile.TemporaryDirectory(prefix="niflow-large-frames-") as tmp:
        sim = simulate_movie(n_train_runs=args.runs, run_seconds=args.run_seconds,
                             fps=args.fps, size=args.size, n_voxels={"V1": 200, "V2": 100},
                             seed=3)
        paths = write_movie_simulation(sim, Path(tmp))
        print(f"{args.size} x {args.size} px at {args.fps:g} fps, {args.runs} training runs "
              f"of {args.run_seconds:g} s (+ test run {sim.test_run}), 300 voxels")
        print("| data.input_max_px | grid V1 reads | peak RSS MiB | fitted start s | "
              "epoch s |")
        print("|---|---|---|---|---|")
        results = {}
        for limit in args.limits:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(paths["stim"]), str(paths["bold"]),
                 str(limit), str(sim.test_run)], capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[limit] = res
            print(f"| {limit} | {res['grid'][0]} x {res['grid'][1]} | "
                  f"{res['peak'] / 2**20:.0f} | {res['start_s']:.0f} | {res['epoch_s']:.0f} |",
                  flush=True)
        if len(results) >= 2:
            a, b = (results[k] for k in args.limits[:2])
            print(f"ratios {args.limits[1]} / {args.limits[0]}: peak memory "
                  f"{b['peak'] / a['peak']:.2f}, fitted start "
                  f"{b['start_s'] / max(a['start_s'], 1e-9):.2f}, epoch "
                  f"{b['epoch_s'] / max(a['epoch_s'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
