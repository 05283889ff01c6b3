"""Movie fMRI: the default video model (``niflow train`` on movie data) against FIR
motion-energy ridge (``niflow baseline`` on movie data) on the same split.

Simulated movies (``niflow.data.simulate.movie``: clips of drifting gratings and moving
textures, dots, bars and letters; per-voxel double-gamma HRFs peaking at 4-7 s; AR(1) noise
at noise ceilings 0.3-0.7), in the energy and the nonlinear regime, and optionally the energy
regime with direction-selective voxels (``motion``). The video model is
:func:`niflow.runs.movie.train_movie` with the default preset (selection between its
candidates on a validation run) at ``--epochs``; the ridge is
:func:`niflow.runs.movie_baseline.movie_baseline_folder` in the same run folder (same test
run, α per voxel by leave-one-run-out on the training runs). Both are scored on the
repeated test run (the mean of its repeats): median r, the fraction of voxels with r > 0.3,
and for the video model the HRF latency error and Spearman ρ against the truth over voxels
with r > 0.3, and the pRF centre error (px) over the same voxels.

    python benchmarks/movie.py [--runs 4] [--run-seconds 120] [--size 24] [--seeds 0 1]
        [--regimes energy nonlinear motion] [--space-time factorised|full]
        [--candidates gabor-gaussian] [--motion-hz [2 ...]] [--v2-pool 1] [--members 3]
        [--spatial-lr-scale 1] [--v3 60] [--input-max-px 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from niflow import config as cfgmod
from niflow.data.movie import read_movie
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.statistics import read_table
from niflow.runs.movie import train_movie
from niflow.runs.movie_baseline import movie_baseline_folder


def one(args, regime: str, seed: int, tmp: str) -> list[str]:
    sim = simulate_movie(n_train_runs=args.runs, run_seconds=args.run_seconds, fps=args.fps,
                         tr=args.tr, size=args.size,
                         n_voxels={"V1": 100, "V2": 60, **({"V3": args.v3} if args.v3 else {})},
                         nonlinear=regime == "nonlinear", motion=regime == "motion", seed=seed)
    folder = Path(tmp) / f"{regime}_{seed}"
    paths = write_movie_simulation(sim, folder / "data")
    cfg = cfgmod.preset("default")
    cfg.train.epochs, cfg.train.patience, cfg.train.val_fraction = args.epochs, 4, 0.25
    cfg.train.seed = seed
    cfg.video.space_time = args.space_time
    if args.candidates:
        cfg.select.candidates = list(args.candidates)
    if args.members is not None:
        cfg.select.members = args.members
    if args.input_max_px is not None:  # candidates keep the data settings
        cfg.data.input_max_px = args.input_max_px
    if args.spatial_lr_scale is not None:  # candidates keep the readout's settings
        cfg.readout.spatial_lr_scale = args.spatial_lr_scale
    if args.motion_hz is not None:  # the Gabor candidate with these motion channels
        select = cfg.select
        cfg = cfgmod.candidate(cfg, "gabor-gaussian")
        cfg.areas[0].motion_hz = list(args.motion_hz)
        cfg.select = select
        cfg.select.candidates = []
    start = time.perf_counter()
    train_movie(paths["stim"], paths["bold"], folder / "run", cfg, [sim.test_run],
                force=True, progress=False)
    nif_s = time.perf_counter() - start
    start = time.perf_counter()
    movie_baseline_folder(read_movie(paths["stim"], paths["bold"]), folder / "run",
                          n_permutations=0)
    me_s = time.perf_counter() - start
    table = read_table(folder / "run" / "voxels.csv")
    ridge = read_table(folder / "run" / "baseline_motion_energy.csv")
    chosen = json.loads((folder / "run" / "selection.json").read_text())["chosen"]
    rows = []
    for area in sim.truth:
        m = table["area"] == area
        r_nif = table["r_test"][m].astype(float)
        r_me = ridge["r_test"][ridge["area"] == area].astype(float)
        peak = table["hrf_peak_s"][m].astype(float)
        good = r_nif > 0.3
        truth = sim.truth[area]
        err = float(np.median(np.abs(peak[good] - truth["hrf_peak_s"][good]))) \
            if good.any() else np.nan
        rho = stats.spearmanr(peak[good], truth["hrf_peak_s"][good])[0] \
            if good.sum() > 3 else np.nan
        dist = np.hypot(table["prf_x"][m].astype(float) - truth["prf_x"],
                        table["prf_y"][m].astype(float) - truth["prf_y"])
        prf_err = float(np.median(dist[good])) if good.any() else np.nan
        rows.append(f"| {regime} | {seed} | {area} | "
                    f"{np.median(truth['noise_ceiling']):.2f} | "
                    f"{np.median(r_nif):.3f} | {np.mean(r_nif > 0.3):.2f} | "
                    f"{np.median(r_me):.3f} | {np.mean(r_me > 0.3):.2f} | {err:.2f} | "
                    f"{rho:.2f} | {int(good.sum())} | {prf_err:.2f} |")
    rows.append(f"|  | {seed} | (time; chose {chosen}) |  | {nif_s:.0f} s |  | {me_s:.0f} s "
                f"|  |  |  |  |  |")
    return rows


def _set_v2_pool(pool: int) -> None:
    """Make every family member's V2 pool by ``pool`` (candidates bring their own areas)."""
    def with_pool(make):
        def areas():
            out = make()
            out[1].pool = pool
            return out
        return areas

    for name, (make, kind) in list(cfgmod.FAMILY.items()):
        cfgmod.FAMILY[name] = (with_pool(make), kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--run-seconds", type=float, default=120.0)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--tr", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--regimes", nargs="+", choices=("energy", "nonlinear", "motion"),
                    default=["energy", "nonlinear"],
                    help="motion: the energy cortex with direction-selective voxels")
    ap.add_argument("--space-time", choices=cfgmod.SPACE_TIME, default="factorised",
                    help="config.video.space_time of the video model")
    ap.add_argument("--candidates", nargs="+", default=None,
                    help="restrict the default preset's selection to these candidates")
    ap.add_argument("--motion-hz", type=float, nargs="*", default=None,
                    help="train the gabor-gaussian candidate (and its ensemble member) with "
                         "these motion-energy frequencies in V1 (none given: without)")
    ap.add_argument("--v2-pool", type=int, default=None,
                    help="V2's pooling in every candidate (the family's is 2; 1: V2 keeps "
                         "V1's grid)")
    ap.add_argument("--members", type=int, default=None,
                    help="config.select.members of the video model (the default preset's: 2)")
    ap.add_argument("--spatial-lr-scale", type=float, default=None,
                    help="config.readout.spatial_lr_scale: the pRF centres' and sizes' "
                         "learning rate over the training one (the default preset's: 10)")
    ap.add_argument("--input-max-px", type=int, default=None,
                    help="config.data.input_max_px: frames larger than this are area-averaged "
                         "by a whole factor before V1 (default 0: never)")
    ap.add_argument("--v3", type=int, default=0,
                    help="also simulate this many V3 voxels (added to the model as an area "
                    "reading V2; V1 and V2 are simulated as without)")
    ap.add_argument("--tmp", default="/tmp/niflow_movie_benchmark")
    args = ap.parse_args()
    if args.v2_pool is not None:
        _set_v2_pool(args.v2_pool)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("| regime | seed | area | ceiling | video NIF r | >0.3 | ME ridge r | >0.3 | "
          "HRF peak err (s) | HRF ρ | voxels r>0.3 | pRF centre err (px) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for regime in args.regimes:
        for seed in args.seeds:
            for row in one(args, regime, seed, args.tmp):
                print(row, flush=True)


if __name__ == "__main__":
    main()
