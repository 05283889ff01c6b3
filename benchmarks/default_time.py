"""Wall-clock time of the default ``niflow train`` at BRAINS size, selection and ensemble in.

Usage::

    .venv/bin/python benchmarks/default_time.py [--voxels 1000] [--threads 2]

360 images (the real BRAINS letters when ``../shared`` has them), ``--voxels`` per area in
V1 and V2 (default 1000 + 1000), the realistic-noise ``letters-noisy`` regime, test rows
288:360. Prints each candidate's and member's training seconds (from ``selection.json``),
the readout refit, the training total, and the whole ``train_run`` (run-folder outputs
included), against the 60 s target for training.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from niflow import config as cfgmod
from niflow.data.simulate import make_regime
from niflow.runs.pipeline import train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim, test = make_regime("letters-noisy", seed=0,
                            n_voxels={"V1": args.voxels, "V2": args.voxels})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        train_run(sim.stim, sim.responses, out, cfgmod.preset("default"), test,
                  progress=False)
        wall = time.perf_counter() - t0
        sel = json.loads((out / "selection.json").read_text())
    print(f"{len(sim.stim)} images, {args.voxels} + {args.voxels} voxels, "
          f"{args.threads} threads")
    for name, s in sel["scores"].items():
        print(f"candidate {name}: {s['seconds']:.1f} s, val median r {s['val_median_r']:.3f}, "
              f"{s['epochs_run']} epochs")
    for i, m in enumerate(sel["members"][1:], 1):
        print(f"member {i}: {m['seconds']:.1f} s, val median r {m['val_median_r']:.3f}")
    if sel["skipped"]:
        print(f"skipped by the {sel['budget_s']:.0f} s budget: {', '.join(sel['skipped'])}")
    refit = sel.get("refit_seconds", 0.0)
    total = sel["seconds"] + refit
    print(f"readout refit: {refit:.1f} s")
    print(f"chosen: {sel['chosen']}; training (selection + ensemble + refit) {total:.1f} s "
          f"({'under' if total < 60 else 'OVER'} the 60 s target); whole train_run "
          f"with outputs {wall:.1f} s")


if __name__ == "__main__":
    main()
