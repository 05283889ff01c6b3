"""Scaling of training time and memory with voxels, rank, grid size and batch size.

Usage::

    .venv/bin/python benchmarks/scaling.py [--samples 256] [--quick]

Each configuration trains the default model for one epoch on random data in a fresh
subprocess (so peak memory is its own): it prints seconds per epoch, samples per second and
the growth of peak RSS during training (parameters are allocated before the baseline is
read, so add them for the total). Rows vary one factor from the base case: 1,000 voxels in
each of V1 and V2, rank 2, 56×56 stimuli (V1 grid 28×28), batch 64.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from niflow import config as cfgmod
from niflow.model import NIFModel


def child(voxels: int, rank: int, size: int, batch: int, samples: int) -> dict:
    torch.manual_seed(0)
    cfg = cfgmod.candidate(cfgmod.preset("default"), "learned-lowrank")  # one fit
    cfg.readout.rank = rank
    model = NIFModel(cfg, (1, size, size), {"V1": voxels, "V2": voxels})
    opt = torch.optim.Adam(model.parameter_groups(1e-3), lr=1e-3)
    x = torch.rand(samples, 1, size, size)
    y = {a: torch.randn(samples, voxels) for a in ("V1", "V2")}
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def epoch():
        for start in range(0, samples, batch):
            out = model(x[start:start + batch])
            loss = sum(torch.mean((out[a] - y[a][start:start + batch]) ** 2) for a in out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    epoch()
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": secs, "params": params, "growth": peak - base}


def row(label: str, voxels: int, rank: int, size: int, batch: int, samples: int) -> str:
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); from scaling import child; "
            f"print(json.dumps(child({voxels}, {rank}, {size}, {batch}, {samples})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"| {label} | failed: {proc.stderr.strip().splitlines()[-1]} | | | |"
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    mib = 2**20
    return (f"| {label} | {m['seconds']:.2f} | {samples / m['seconds']:.0f} | "
            f"{m['params'] / mib:.1f} | {m['growth'] / mib:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    args = ap.parse_args()
    n = args.samples
    base = {"voxels": 1000, "rank": 2, "size": 56, "batch": 64}
    cases = [("base: 1k+1k voxels, rank 2, 56 px, batch 64", base)]
    voxels = (10000,) if args.quick else (10000, 100000)
    cases += [(f"voxels {v // 1000}k + {v // 1000}k", {**base, "voxels": v}) for v in voxels]
    cases += [(f"rank {k}", {**base, "rank": k}) for k in (1, 4, 8)]
    cases += [(f"stimulus {s} px (V1 grid {s // 2})", {**base, "size": s}) for s in (28, 112)]
    cases += [(f"batch {b}", {**base, "batch": b}) for b in (8, 256)]
    print(f"threads={torch.get_num_threads()}, {n} samples per epoch, default preset")
    print("| case | s/epoch | samples/s | parameters MiB | peak RSS growth MiB |")
    print("|---|---|---|---|---|")
    for label, c in cases:
        print(row(label, c["voxels"], c["rank"], c["size"], c["batch"], n), flush=True)


if __name__ == "__main__":
    main()
