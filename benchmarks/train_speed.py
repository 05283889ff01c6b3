"""Training speed: niflow against a PyTorch port of the reference formulation, side by side.

Usage::

    .venv/bin/python benchmarks/train_speed.py [--steps 150] [--threads 2] [--compile]

Prints a table of ratios measured in this one process (absolute times are not comparable
across machines or runs). BRAINS size: 360 images 56×56, 800 V1 + 1500 V2 voxels (the
sizes the reference was measured at), rank 2, batch 3.

The port reproduces the reference's order of work on purpose: the channel product
Σ_c Uc·U recomputed for every rank on a (batch, y, x, voxels) tensor, a Python loop over
ranks, the bias inside every rank term, Adam 0.01.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from niflow import config as cfgmod
from niflow.data.dataset import build_dataset, parse_rows
from niflow.data.simulate import simulate
from niflow.model import NIFModel
from niflow.train.loop import fit
from niflow.train.runtime import Runtime

N_VOX = {"V1": 800, "V2": 1500}


class ReferencePort(nn.Module):
    """basicNIF's formulation, written plainly in PyTorch."""

    def __init__(self, n_vox: dict[str, int], rank: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.rank = rank
        self.p = nn.ParameterDict()
        for area, s in (("V1", 28), ("V2", 14)):
            v = n_vox[area]
            self.p[f"Uc_{area}"] = nn.Parameter(torch.randn(6, v) * (2 / v) ** 0.5)
            self.p[f"Ux_{area}"] = nn.Parameter(torch.randn(v, s, rank) * (2 / (s * rank)) ** .5)
            self.p[f"Uy_{area}"] = nn.Parameter(torch.randn(v, s, rank) * (2 / (s * rank)) ** .5)
            self.p[f"Am_{area}"] = nn.Parameter(torch.randn(v, rank))
            self.p[f"b_{area}"] = nn.Parameter(torch.zeros(v))

    def _observe(self, u: torch.Tensor, area: str) -> torch.Tensor:
        u = u.permute(0, 2, 3, 1)  # [b, s, s, c] as in the reference
        out = 0.0
        for k in range(self.rank):
            chan = torch.matmul(u, self.p[f"Uc_{area}"])  # (b, y, x, v), again for every k
            wy = torch.softmax(self.p[f"Uy_{area}"][:, :, k], dim=1)  # (v, y)
            wx = torch.softmax(self.p[f"Ux_{area}"][:, :, k], dim=1)  # (v, x)
            rows = (chan * wy.t()[None, :, None, :]).sum(1)  # (b, x, v)
            val = (rows * wx.t()[None]).sum(1)  # (b, v)
            out = out + F.softplus(self.p[f"Am_{area}"][:, k]) * (val + self.p[f"b_{area}"])
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v1 = F.avg_pool2d(torch.sigmoid(self.conv1(x)), 2)
        v2 = F.avg_pool2d(torch.sigmoid(self.conv2(v1)), 2)
        return {"V1": self._observe(v1, "V1"), "V2": self._observe(v2, "V2")}


def time_steps(model: nn.Module, stim: torch.Tensor, resp: dict[str, torch.Tensor],
               steps: int, batch: int, fused: bool = False, precision: str = "float32",
               ) -> float:
    """Seconds per training step (random batches, Σ_areas MSE, Adam) after 5 warm-up
    steps; the same protocol for the port and for niflow's model."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=fused)
    n = stim.shape[0]
    gen = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        idx = torch.randint(0, n, (batch,), generator=gen)
        with autocast:
            out = model(stim[idx])
        loss = sum(F.mse_loss(out[a].float(), resp[a][idx]) for a in out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def niflow_model(preset: str, n_vox: dict[str, int]) -> NIFModel:
    torch.manual_seed(0)
    return NIFModel(cfgmod.preset(preset), (1, 56, 56), n_vox)


def time_niflow_fit(data, preset: str, epochs: int | None = None, batch: int | None = None,
                    **train) -> tuple[float, int, float]:
    """Seconds of the whole ``fit`` (per-epoch validation included), its step count, and the
    median seconds of one epoch after the first (for a compiled run: without compilation)."""
    cfg = cfgmod.preset(preset)
    if preset == "default":  # one fit of the previous default (the learned-lowrank candidate)
        cfg = cfgmod.candidate(cfg, "learned-lowrank")
    cfg.train.epochs = epochs or cfg.train.epochs
    cfg.train.batch_size = batch or cfg.train.batch_size
    cfg.train.patience = cfg.train.epochs + 1
    compile_ = train.pop("compile", False)
    for k, v in train.items():
        setattr(cfg.train, k, v)
    runtime = Runtime(compile=compile_)
    torch.manual_seed(0)
    model = NIFModel(cfg, data.image_shape, data.n_voxels)
    steps = cfg.train.epochs * int(np.ceil(data.split.train.size / cfg.train.batch_size))
    t0 = time.perf_counter()
    hist = fit(model, data, cfg.train, progress=False, runtime=runtime)
    later = [e["seconds"] for e in hist.epochs[1:]] or [hist.epochs[0]["seconds"]]
    return time.perf_counter() - t0, steps, float(np.median(later))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="timed steps of the port")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile'd runs (compilation takes minutes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulate(n_per_letter=60, n_voxels=N_VOX, seed=0)
    test = parse_rows("288:360", 360)
    data = build_dataset(sim.stim, sim.responses, test, val_fraction=0.1, seed=0)
    stim = torch.as_tensor(data.stim)
    resp = {a: torch.as_tensor(r) for a, r in data.responses.items()}
    n_train = data.split.train.size
    rows = []

    torch.manual_seed(0)
    port3 = time_steps(ReferencePort(N_VOX), stim, resp, args.steps, 3)
    port_15 = port3 * 15 * int(np.ceil(n_train / 3))
    rows.append(("reference port, batch 3, 15 epochs (extrapolated)", port3, port_15, 1.0))
    def add(label: str, seconds: float, steps: int) -> None:
        rows.append((label, seconds / steps, seconds, port_15 / seconds))

    def add_compiled(label: str, preset: str, epochs: int, batch: int | None) -> None:
        total, steps, epoch = time_niflow_fit(data, preset, epochs, batch, compile=True)
        add(f"{label}, compiled (incl. compilation)", total, steps)
        add(f"{label}, compiled (epochs after the first x {epochs})", epoch * epochs, steps)

    nif_s, nif_steps, _ = time_niflow_fit(data, "basicnif", 15, 3)
    add("niflow basicnif, batch 3, 15 epochs", nif_s, nif_steps)
    if args.compile:
        add_compiled("niflow basicnif, batch 3, 15 epochs", "basicnif", 15, 3)
    cfg = cfgmod.preset("default").train
    label = f"niflow default, batch {cfg.batch_size}, {cfg.epochs} epochs"
    def_s, def_steps, _ = time_niflow_fit(data, "default")
    add(label, def_s, def_steps)
    bf_s, bf_steps, _ = time_niflow_fit(data, "default", precision="bfloat16")
    add(f"{label}, bf16", bf_s, bf_steps)
    if args.compile:
        add_compiled(label, "default", cfg.epochs, None)

    print(f"threads={torch.get_num_threads()}  train rows={n_train}  voxels={N_VOX}  "
          f"(all runs in this process)")
    print(f"| {'what':<62} | ms/step | run s | speed-up vs port |")
    print("|---|---|---|---|")
    for name, step, total, speed in rows:
        print(f"| {name:<62} | {1000 * step:.1f} | {total:.1f} | {speed:.1f}x |")
    print("niflow runs are whole fits (per-epoch validation included); the port's are "
          "extrapolated from timed steps.")

    print("\nstep throughput, same protocol for both (random batches, Adam, 5 warm-up steps)")
    print("| size | batch | port ms/step | niflow basicnif ms/step | speed-up |")
    print("|---|---|---|---|---|")
    for label, n_vox, batch, steps in (("BRAINS", N_VOX, 3, args.steps),
                                       ("BRAINS", N_VOX, 64, 40),
                                       ("20k + 20k voxels", LARGE, 16, 6)):
        torch.manual_seed(0)
        y = resp if n_vox is N_VOX else {a: torch.randn(stim.shape[0], v)
                                         for a, v in n_vox.items()}
        port = time_steps(ReferencePort(n_vox), stim, y, steps, batch)
        nif = time_steps(niflow_model("basicnif", n_vox), stim, y, steps, batch, fused=True)
        print(f"| {label} | {batch} | {1000 * port:.1f} | {1000 * nif:.1f} | "
              f"{port / nif:.1f}x |", flush=True)


LARGE = {"V1": 20000, "V2": 20000}


if __name__ == "__main__":
    main()
