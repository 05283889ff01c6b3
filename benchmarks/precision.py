"""bfloat16 autocast against float32 training: held-out accuracy per voxel, and time.

Usage::

    .venv/bin/python benchmarks/precision.py [--device auto]

Trains the default preset on the default simulation and on the two harder ones
(``harder_configs()``), once in float32 and once with ``train.precision = "bfloat16"``, in
this one process, and compares held-out per-voxel Pearson r (last 20% of rows). bf16 is
fast where the hardware has bf16 matrix units (recent GPUs; Intel CPUs with AMX).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from niflow import config as cfgmod
from niflow.data.dataset import parse_rows
from niflow.data.simulate import harder_configs, simulate
from niflow.evaluate.statistics import pearson_r
from niflow.runs.pipeline import train_run
from niflow.train.runtime import runtime_from_environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    sims = {"default": simulate(n_per_letter=60, seed=0)}
    sims.update({k: simulate(n_per_letter=60, seed=1, config=c)
                 for k, c in harder_configs().items()})
    print(f"device={runtime_from_environment(args.device).device}  "
          f"threads={torch.get_num_threads()}")
    print("| simulation | area | median r float32 | median r bf16 | median abs(Δr) | "
          "95th pct abs(Δr), voxels with r32 > 0.3 | train s float32 | train s bf16 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, sim in sims.items():
        n = sim.stim.shape[0]
        test = parse_rows(f"{n - n // 5}:{n}", n)
        res = {}
        for precision in ("float32", "bfloat16"):
            cfg = cfgmod.candidate(cfgmod.preset("default"), "learned-lowrank")  # one fit
            cfg.train.precision = precision
            runtime = runtime_from_environment(args.device)
            t0 = time.perf_counter()
            run, _, _ = train_run(sim.stim, sim.responses, None, cfg, test, progress=False,
                                  runtime=runtime)
            secs = time.perf_counter() - t0
            pred = run.predict(sim.stim[test])
            res[precision] = ({a: pearson_r(pred[a], sim.responses[a][test]) for a in pred},
                              secs)
        (r32, t32), (r16, t16) = res["float32"], res["bfloat16"]
        for area in r32:
            d = np.abs(r16[area] - r32[area])
            good = r32[area] > 0.3
            print(f"| {name} | {area} | {np.median(r32[area]):.3f} | "
                  f"{np.median(r16[area]):.3f} | {np.median(d):.4f} | "
                  f"{np.percentile(d[good], 95):.4f} | {t32:.1f} | {t16:.1f} |", flush=True)


if __name__ == "__main__":
    main()
