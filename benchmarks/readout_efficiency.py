"""Observation-model efficiency: achieved FLOP/s against a plain matmul, and peak memory.

Usage::

    .venv/bin/python benchmarks/readout_efficiency.py [--voxels 20000] [--batch 64]

1. FLOP/s of one readout's forward + backward at large size (default: 20,000 voxels, 16
   channels, a 28×28 grid, rank 2, batch 64), against ``torch.matmul`` of the same
   (B·C, H·W) @ (H·W, V) shape timed in the same run: the practical limit of the machine.
   FLOPs counted: 2·B·C·H·W·V for the forward product and twice that for the backward
   (gradients for features and for the maps); building the maps is not counted.
2. Peak memory of a training step of the whole default model with that many voxels in V1
   and V2, measured as the growth of peak RSS in a fresh subprocess, against parameters +
   one batch of activations (every tensor the forward pass produces, counted exactly with a
   dispatch mode).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from niflow import config as cfgmod
from niflow.model import LowRankReadout, NIFModel


def best_of(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def flops_table(v: int, b: int, c: int = 16, grid: int = 28, rank: int = 2) -> list[str]:
    torch.manual_seed(0)
    ro = LowRankReadout(v, c, (grid, grid), rank)
    x = torch.randn(b, c, grid, grid, requires_grad=True)

    def step():
        ro.zero_grad(set_to_none=True)
        x.grad = None
        ro(x).sum().backward()

    a = torch.randn(b * c, grid * grid)
    m = torch.randn(grid * grid, v)
    t_ro = best_of(step)
    t_mm = best_of(lambda: torch.matmul(a, m))
    flop = 2 * b * c * grid * grid * v
    ro_rate, mm_rate = 3 * flop / t_ro / 1e9, flop / t_mm / 1e9
    return [f"| readout fwd+bwd, {v} voxels, batch {b} | {1000 * t_ro:.0f} ms | "
            f"{ro_rate:.1f} | {ro_rate / mm_rate:.2f} |",
            f"| matmul ({b * c}×{grid * grid}) @ ({grid * grid}×{v}) | {1000 * t_mm:.0f} ms | "
            f"{mm_rate:.1f} | 1.00 |"]


class _Produced(TorchDispatchMode):
    """Sums the bytes of every tensor produced by the operations run under it."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.bytes += t.numel() * t.element_size()
        return out


def memory_child(v: int, b: int) -> dict:
    """Run in a fresh process: one training step of the default model; report bytes."""
    torch.manual_seed(0)
    cfg = cfgmod.candidate(cfgmod.preset("default"), "learned-lowrank")  # one fit
    model = NIFModel(cfg, (1, 56, 56), {"V1": v, "V2": v})
    opt = torch.optim.Adam(model.parameter_groups(1e-3), lr=1e-3)
    x = torch.rand(b, 1, 56, 56)
    y = {a: torch.randn(b, v) for a in ("V1", "V2")}
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):
        out = model(x)
        loss = sum(torch.mean((out[a] - y[a]) ** 2) for a in out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with _Produced() as prod, torch.no_grad():  # counted after, so it cannot raise the peak
        model(x)
    return {"params": params, "activations": prod.bytes, "peak_growth": peak - base}


def memory_row(v: int, b: int) -> str:
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); "
            "from readout_efficiency import memory_child; "
            f"print(json.dumps(memory_child({v}, {b})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    m = json.loads(out.strip().splitlines()[-1])
    mib = 2**20
    ref = m["params"] + m["activations"]
    # the step's growth excludes the parameters, allocated before the baseline was read
    total = m["peak_growth"] + m["params"]
    return (f"| {v} + {v} | {b} | {m['params'] / mib:.0f} | {m['activations'] / mib:.0f} | "
            f"{total / mib:.0f} | {total / ref:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={torch.get_num_threads()}")
    print("| what | time | GFLOP/s | fraction of matmul |\n|---|---|---|---|")
    print("\n".join(flops_table(args.voxels, args.batch)))
    print("\n| voxels (V1 + V2) | batch | parameters MiB | one batch of activations MiB | "
          "peak during training MiB | peak / (params + activations) |\n|---|---|---|---|---|---|")
    for v in (args.voxels, 5 * args.voxels):
        print(memory_row(v, args.batch), flush=True)


if __name__ == "__main__":
    main()
