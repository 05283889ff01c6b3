"""Training speed: niflow against a PyTorch port of the reference formulation, side by side.

Usage::

    .venv/bin/python benchmarks/train_speed.py [--steps 150] [--threads 2]

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
from niflow.train import fit

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


def time_port_steps(stim: torch.Tensor, resp: dict[str, torch.Tensor], steps: int,
                    batch: int) -> float:
    """Seconds per training step of the reference port (Σ_areas MSE, Adam 0.01)."""
    torch.manual_seed(0)
    model = ReferencePort(N_VOX)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    n = stim.shape[0]
    gen = torch.Generator().manual_seed(0)
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()  # five warm-up steps
        idx = torch.randint(0, n, (batch,), generator=gen)
        out = model(stim[idx])
        loss = sum(F.mse_loss(out[a], resp[a][idx]) for a in out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def time_niflow_fit(data, preset: str, epochs: int, batch: int) -> tuple[float, int]:
    cfg = cfgmod.preset(preset)
    cfg.train.epochs, cfg.train.batch_size = epochs, batch
    cfg.train.patience = epochs + 1
    torch.manual_seed(0)
    model = NIFModel(cfg, data.image_shape, data.n_voxels)
    steps = epochs * int(np.ceil(data.split.train.size / batch))
    t0 = time.perf_counter()
    fit(model, data, cfg.train, progress=False)
    return time.perf_counter() - t0, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="timed steps of the port")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulate(n_per_letter=60, n_voxels=N_VOX, seed=0)
    test = parse_rows("288:360", 360)
    data = build_dataset(sim.stim, sim.responses, test, val_fraction=0.1, seed=0)
    stim = torch.as_tensor(data.stim)
    resp = {a: torch.as_tensor(r) for a, r in data.responses.items()}

    port_step = time_port_steps(stim, resp, args.steps, batch=3)
    port_15 = port_step * 15 * int(np.ceil(data.split.train.size / 3))
    nif_s, nif_steps = time_niflow_fit(data, "basicnif", 15, 3)
    def_s, def_steps = time_niflow_fit(data, "default", 30, 8)
    rows = [
        ("reference port, batch 3 (15 epochs, extrapolated)", port_step, port_15, 1.0),
        ("niflow basicnif preset, batch 3, 15 epochs", nif_s / nif_steps, nif_s,
         port_15 / nif_s),
        ("niflow default preset, batch 8, 30 epochs", def_s / def_steps, def_s,
         port_15 / def_s),
    ]
    print(f"threads={torch.get_num_threads()}  train rows={data.split.train.size}  "
          f"voxels={N_VOX}  (all runs in this process)")
    print(f"{'what':<52} {'ms/step':>8} {'run s':>8} {'speed-up':>9}")
    for name, step, total, speed in rows:
        print(f"{name:<52} {1000 * step:>8.1f} {total:>8.1f} {speed:>8.1f}x")
    print("niflow times include per-epoch validation; the port's exclude it.")


if __name__ == "__main__":
    main()
