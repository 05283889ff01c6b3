"""Memory of training from HDF5 (``--stream``) against loading the files, as samples grow.

Usage::

    .venv/bin/python benchmarks/streaming.py [--sizes 4000 16000 64000] [--workers 2]

For each file size N this writes HDF5 stimuli (N × 56 × 56, uint8) and responses (N × 1000
voxels in each of V1 and V2, float32), then trains the default model in a fresh process in
two ways: in memory (the files are read, as ``niflow train`` does) and streamed
(``niflow train --stream``: one chunked pass for the z-scoring statistics, then batches
read by DataLoader workers). The same 2,048 training rows, spread over the whole file, and
the same 256 test rows are used at every N, so the work per epoch is fixed and only the file
grows. Printed: peak resident memory of the training process and of its largest worker,
the file size, and seconds per epoch.
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

import h5py
import numpy as np

VOXELS = 1000
TRAIN_ROWS, TEST_ROWS = 2048, 256


def write_files(folder: Path, n: int, chunked: bool = True) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    s, b = folder / f"stim_{n}.h5", folder / f"bold_{n}.h5"
    with h5py.File(s, "w") as fh:
        ds = fh.create_dataset("stim", (n, 56, 56), np.uint8,
                               chunks=(64, 56, 56) if chunked else None)
        for i in range(0, n, 4096):
            ds[i:i + 4096] = rng.integers(0, 256, (min(4096, n - i), 56, 56), np.uint8)
    with h5py.File(b, "w") as fh:
        for area in ("V1", "V2"):
            ds = fh.create_dataset(area, (n, VOXELS), np.float32,
                                   chunks=(64, VOXELS) if chunked else None)
            for i in range(0, n, 4096):
                ds[i:i + 4096] = rng.standard_normal((min(4096, n - i), VOXELS), np.float32)
    return s, b


def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    train = np.linspace(0, n - TEST_ROWS - 1, TRAIN_ROWS).astype(np.int64)
    return np.unique(train), np.arange(n - TEST_ROWS, n)


def child(stim: str, bold: str, n: int, mode: str, workers: int) -> dict:
    import torch

    from niflow import config as cfgmod
    from niflow.data.io import load_responses, load_stimuli
    from niflow.runs.pipeline import train_run, train_stream

    torch.set_num_threads(2)
    cfg = cfgmod.candidate(cfgmod.preset("default"), "learned-lowrank")  # one fit
    cfg.train.epochs, cfg.train.patience = 2, 10
    train, test = rows(n)
    t0 = time.perf_counter()
    if mode == "stream":
        _, hist, _ = train_stream(stim, bold, None, cfg, test, train_rows=train,
                                  num_workers=workers, progress=False, memory_check=False)
    else:
        s, r = load_stimuli(stim), load_responses(bold)
        _, hist, _ = train_run(s, r, None, cfg, test, train_rows=train, progress=False,
                               memory_check=False)
    total = time.perf_counter() - t0
    return {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "worker_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
            "epoch_s": float(np.median([e["seconds"] for e in hist.epochs])),
            "total_s": total}


def run_child(stim: Path, bold: Path, n: int, mode: str, workers: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); from streaming import child; "
            f"print(json.dumps(child({str(stim)!r}, {str(bold)!r}, {n}, {mode!r}, {workers})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 16000, 64000])
    ap.add_argument("--layout", choices=("chunked", "contiguous"), default="chunked",
                    help="HDF5 storage: chunks of 64 rows (read through h5py) or contiguous "
                    "(memory-mapped)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: niflow's "
                    "default_workers, 0 on a 2-core machine)")
    args = ap.parse_args()
    if args.workers is None:
        import torch

        from niflow.data.stream import default_workers

        torch.set_num_threads(2)
        args.workers = default_workers("cpu")
    mib = 2**20
    print(f"default preset, {VOXELS}+{VOXELS} voxels, {TRAIN_ROWS} training rows and "
          f"{TEST_ROWS} test rows at every size, 2 epochs, {args.workers} DataLoader workers, "
          f"{args.layout} files")
    print("| samples in file | file MiB | in memory: peak MiB | streamed: peak MiB | "
          "streamed: largest worker MiB | s/epoch in memory | s/epoch streamed |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            stim, bold = write_files(Path(tmp), n, args.layout == "chunked")
            size = (stim.stat().st_size + bold.stat().st_size) / mib
            mem = run_child(stim, bold, n, "memory", args.workers)
            st = run_child(stim, bold, n, "stream", args.workers)
            worker = f"{st['worker_peak'] / mib:.0f}" if args.workers else "(no workers)"
            print(f"| {n} | {size:.0f} | {mem['peak'] / mib:.0f} | {st['peak'] / mib:.0f} | "
                  f"{worker} | {mem['epoch_s']:.2f} | "
                  f"{st['epoch_s']:.2f} |", flush=True)
            stim.unlink()
            bold.unlink()


if __name__ == "__main__":
    main()
