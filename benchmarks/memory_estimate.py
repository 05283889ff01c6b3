"""Memory guard: niflow's estimate against the measured peak resident memory of real runs.

Usage (Linux only: reads and resets the peak through /proc/self)::

    .venv/bin/python benchmarks/memory_estimate.py [--epochs 3]

Simulates BRAINS-sized data once (360 images 56×56, 800 V1 + 600 V2 voxels), then trains
each preset and batch size in a fresh process. The guard runs after the inputs are read, so
the peak is measured from that point: right after validation the process's peak resident
set size (VmHWM) is reset, and the estimate is compared with how far it rises during
training and output writing. A ratio above 1 means the estimate errs on the safe side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = [("default", 8), ("default", 64), ("default", 256), ("basicnif", 3),
           ("basicnif", 64)]


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(data: Path, preset: str, batch: int, epochs: int) -> str:
    """Train once in this process; one line: estimate, peak increase, ratio, parts."""
    from niflow import config as cfgmod
    from niflow.runs.inputs import validate_inputs
    from niflow.runs.pipeline import train_inputs
    from niflow.train.memory import estimate_training_memory

    cfg = cfgmod.preset(preset)
    cfg.train.batch_size, cfg.train.epochs = batch, epochs
    inputs = validate_inputs(data / "stim.mat", data / "bold.mat", cfg, "288:360")
    split = inputs.split
    est = estimate_training_memory(cfg, inputs.image_shape, inputs.n_voxels,
                                   inputs.n_samples, int(split.train.size),
                                   n_eval_rows=max(split.val.size, split.test.size))
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status("VmRSS")
    with tempfile.TemporaryDirectory() as out:
        train_inputs(inputs, Path(out) / "run", progress=False, memory_check=False)
    peak = _status("VmHWM") - base
    return (f"{preset:9s} batch {batch:4d}: estimate {est.total / 2**20:7.1f} MiB, peak "
            f"{peak / 2**20:7.1f} MiB, ratio {est.total / peak:.2f}  ({est.summary()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("DATA", "PRESET", "BATCH"),
                        help=argparse.SUPPRESS)  # the per-process measurement
    args = parser.parse_args()
    if args.one:
        print(measure(Path(args.one[0]), args.one[1], int(args.one[2]), args.epochs))
        return
    from niflow.data.simulate import simulate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        simulate(data, n_per_letter=60, n_voxels={"V1": 800, "V2": 600}, seed=0)
        for preset, batch in CONFIGS:  # a fresh process each: peaks do not carry over
            subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--one",
                            str(data), preset, str(batch)], check=True)


if __name__ == "__main__":
    main()
