"""Movie fMRI: the first video model against FIR motion-energy ridge on the same split.

Simulated movies (``niflow.data.simulate.movie``: clips of drifting gratings and moving
textures, dots, bars and letters; per-voxel double-gamma HRFs peaking at 4-7 s; AR(1) noise
at noise ceilings 0.3-0.7), in the energy and the nonlinear regime. Both models train on the
same training runs and are scored on the repeated test run (the mean of its repeats):
median r, the fraction of voxels with r > 0.3, and for the video model the HRF latency error
and Spearman ρ against the truth over voxels with r > 0.3.

    python benchmarks/movie.py [--runs 4] [--run-seconds 120] [--size 24] [--seeds 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import stats

from niflow import config as cfgmod
from niflow.data.movie import read_movie
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.motion_energy import (
    delay_features,
    fir_delays,
    loro_ridge,
    motion_energy_features,
    volume_features,
)
from niflow.train.video import fit_movie


def _r(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    p, t = pred - pred.mean(0), true - true.mean(0)
    return (p * t).sum(0) / np.sqrt((p * p).sum(0) * (t * t).sum(0))


def one(args, nonlinear: bool, seed: int, tmp: str) -> list[str]:
    sim = simulate_movie(n_train_runs=args.runs, run_seconds=args.run_seconds, fps=args.fps,
                         tr=args.tr, size=args.size, n_voxels={"V1": 100, "V2": 60},
                         nonlinear=nonlinear, seed=seed)
    paths = write_movie_simulation(sim, tmp)
    files = read_movie(paths["stim"], paths["bold"])
    t = files.timing
    cfg = cfgmod.candidate(cfgmod.preset("default"), "gabor-gaussian")
    cfg.train.epochs, cfg.train.patience, cfg.train.val_fraction = args.epochs, 4, 0.25
    cfg.train.seed = seed
    start = time.perf_counter()
    fit = fit_movie(files, [sim.test_run], cfg)
    nif_s = time.perf_counter() - start
    pred = fit.predict(files, fit.test)
    start = time.perf_counter()
    feats = motion_energy_features(sim.stim, t.fps, t.frame_run)
    x = delay_features(volume_features(feats, t, np.arange(t.n_volumes)), t.volume_run,
                       fir_delays(t.tr))
    train = t.volume_run != sim.test_run
    rows = []
    for area in ("V1", "V2"):
        y = files.responses[area][fit.test]
        ridge, _ = loro_ridge(x[train], files.responses[area][train], t.volume_run[train],
                              x[fit.test])
        r_nif, r_me = _r(pred[area], y), _r(ridge, y)
        peak = fit.model.hrf_parameters()[area]["hrf_peak_s"]
        good = r_nif > 0.3
        true_peak = sim.truth[area]["hrf_peak_s"]
        err = float(np.median(np.abs(peak[good] - true_peak[good]))) if good.any() else np.nan
        rho = stats.spearmanr(peak[good], true_peak[good])[0] if good.sum() > 3 else np.nan
        rows.append(f"| {'nonlinear' if nonlinear else 'energy'} | {seed} | {area} | "
                    f"{np.median(sim.truth[area]['noise_ceiling']):.2f} | "
                    f"{np.median(r_nif):.3f} | {np.mean(r_nif > 0.3):.2f} | "
                    f"{np.median(r_me):.3f} | {np.mean(r_me > 0.3):.2f} | {err:.2f} | "
                    f"{rho:.2f} |")
    me_s = time.perf_counter() - start
    rows.append(f"|  | {seed} | (time) |  | {nif_s:.0f} s |  | {me_s:.0f} s |  |  |  |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--run-seconds", type=float, default=120.0)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--tr", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--tmp", default="/tmp/niflow_movie_benchmark")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("| regime | seed | area | ceiling | video NIF r | >0.3 | ME ridge r | >0.3 | "
          "HRF peak err (s) | HRF ρ |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for nonlinear in (False, True):
        for seed in args.seeds:
            for row in one(args, nonlinear, seed, args.tmp):
                print(row, flush=True)


if __name__ == "__main__":
    main()
