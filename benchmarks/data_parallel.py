"""Data-parallel training (torchrun + DDP) against one process, on this machine.

Usage::

    .venv/bin/python benchmarks/data_parallel.py [--nproc 2] [--epochs 10]

Trains the default preset on the default simulation (360 images, 800 + 600 voxels) with
``niflow train`` three ways: one process with ``nproc`` threads, one process with one
thread, and ``torchrun --nproc_per_node nproc`` with one thread per process (gloo on a CPU,
NCCL on GPUs with ``--device cuda``). Prints the training seconds recorded in each run's
``run.json`` and how far the held-out r of the data-parallel run is from the single-process
one. On a CPU the processes share the machine's cores, so this measures the overhead of
the gradient all-reduce, not a speed-up; on several GPUs each process has its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from niflow.data.io import save_mat
from niflow.data.simulate import simulate
from niflow.evaluate.statistics import pearson_r


def train(cmd: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim = simulate(n_per_letter=60, seed=0)
        save_mat(root / "stim.mat", {"stim": sim.stim})
        save_mat(root / "bold.mat", sim.responses)
        base = ["-m", "niflow", "train", "--stim", str(root / "stim.mat"), "--bold",
                str(root / "bold.mat"), "--test-rows", "288:360", "--epochs",
                str(args.epochs), "--quiet", "--device", args.device]
        runs = {
            f"1 process, {args.nproc} threads": ([sys.executable, *base], args.nproc),
            "1 process, 1 thread": ([sys.executable, *base], 1),
            f"torchrun, {args.nproc} processes x 1 thread": (
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", str(args.nproc), *base], 1),
        }
        results = {}
        for i, (label, (cmd, threads)) in enumerate(runs.items()):
            out = root / f"run{i}"
            train([*cmd, "--out", str(out)], threads)
            info = json.loads((out / "run.json").read_text())
            pred = np.load(out / "predictions.npz")
            test = pred["test_rows"]
            r = np.concatenate([pearson_r(pred[a], sim.responses[a][test])
                                for a in ("V1", "V2")])
            results[label] = (info["training_seconds"], r)
        ref_s, ref_r = results["1 process, 1 thread"]
        print(f"default preset, {args.epochs} epochs, device {args.device}")
        print("| how | training s | vs 1 process, 1 thread | median r | "
              "max abs(Δr) vs 1 process |")
        print("|---|---|---|---|---|")
        for label, (secs, r) in results.items():
            print(f"| {label} | {secs:.1f} | {ref_s / secs:.2f}x | {np.median(r):.3f} | "
                  f"{np.abs(r - ref_r).max():.4f} |")


if __name__ == "__main__":
    main()
