"""pRF mapping: niflow's video model against the classic Gaussian pRF fit on a bar-sweep
experiment with known pRFs.

Simulation: ``niflow.data.simulate.prf_mapping`` (checkerboard bars in 8 directions, one step
per TR, blanks after every second sweep; V1/V2 Gaussian pRFs pooling Gabor energy, sizes
growing with eccentricity; per-voxel HRFs peaking at 4-7 s; AR(1) noise at ceilings 0.3-0.7
for the mean of the test run's repeats). niflow: ``train_movie`` (the default preset, with
``--candidates`` and at most ``--epochs`` epochs), pRFs from its readout (``voxels.csv``) and,
as a second row, from the in-silico bar sweep of ``niflow probe``. Classic: ``fit_prf`` on
the same training runs (the validation run included) with the binary apertures, HRF peak
among 4, 5, 6, 7 s, and again on niflow's fitting runs only (without its validation run).
Per area: held-out median r on the test run (the mean of its repeats), the fraction above
0.3, the median centre error (px) and the Spearman ρ of sizes against the truth over all
voxels and over those whose held-out r (the method's own; niflow's for the in-silico row)
exceeds 0.3, the median centre error and the median size error |σ − σ_true| (px) over the
voxels that both niflow and the classic fit (all training runs) predict with r > 0.3 (the
same voxels in every row), the slope of estimated on true centres (x and y pooled, from the
field's centre; below 1: pulled towards the centre), the median σ (and the truth's) and the
median |HRF peak error| (s) over all voxels.

    python benchmarks/prf_mapping.py [--seeds 0 1] [--size 24] [--runs 4] [--epochs 25]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from niflow import config as cfgmod
from niflow.data.movie import read_movie
from niflow.data.simulate.movie import write_movie_simulation
from niflow.data.simulate.prf_mapping import simulate_prf_mapping
from niflow.evaluate.prf_fit import fit_prf
from niflow.evaluate.statistics import read_table
from niflow.runs.movie import train_movie
from niflow.runs.movie_probe import probe_movie_run


def _r(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    p, t = pred - pred.mean(0), true - true.mean(0)
    return (p * t).sum(0) / np.sqrt((p * p).sum(0) * (t * t).sum(0))


def _row(seed, area, ceiling, name, r, x, y, sigma, peak, truth, size, common) -> str:
    err = np.hypot(x - truth["prf_x"], y - truth["prf_y"])
    size_err = np.abs(sigma - truth["prf_sigma"])
    good = r > 0.3

    def rho(m):
        ok = m & np.isfinite(sigma)
        return (f"{stats.spearmanr(sigma[ok], truth['prf_sigma'][ok])[0]:.2f}"
                if ok.sum() > 3 and np.ptp(sigma[ok]) > 0 else "n/a")

    def med(v):
        return f"{np.nanmedian(v):.2f}" if v.size else "n/a"

    # slope of the estimated on the true centre (x and y pooled, from the field's centre):
    # 1 when unbiased, below 1 when estimates are pulled towards the centre
    c = (size - 1) / 2
    true_c = np.r_[truth["prf_x"], truth["prf_y"]] - c
    est_c = np.r_[x, y] - c
    ok = np.isfinite(est_c)
    slope = float(true_c[ok] @ est_c[ok] / (true_c[ok] @ true_c[ok]))
    return (f"| {seed} | {area} | {ceiling:.2f} | {name} | {np.median(r):.3f} | "
            f"{good.mean():.2f} | {med(err)} | {med(err[good])} ({good.sum()}) | "
            f"{med(err[common])} ({common.sum()}) | {med(size_err[common])} | "
            f"{slope:.2f} | {rho(np.ones_like(good))} | {rho(good)} | "
            f"{med(sigma)} ({med(truth['prf_sigma'])}) | "
            f"{med(np.abs(peak - truth['hrf_peak_s']))} |")


def one(args, seed: int) -> list[str]:
    tmp = Path(args.tmp) / f"seed{seed}"
    shutil.rmtree(tmp, ignore_errors=True)
    sim = simulate_prf_mapping(n_train_runs=args.runs, size=args.size, fps=args.fps,
                               tr=args.tr, n_voxels={"V1": args.v1, "V2": args.v2},
                               n_repeats=args.repeats, seed=seed)
    paths = write_movie_simulation(sim, tmp / "data")
    cfg = cfgmod.preset("default")
    if args.candidates != "default":
        cfg.select.candidates = args.candidates.split(",")
    cfg.train.epochs, cfg.train.patience, cfg.train.seed = args.epochs, args.patience, seed
    start = time.perf_counter()
    run = train_movie(paths["stim"], paths["bold"], tmp / "run", cfg, [sim.test_run],
                      progress=False)
    nif_s = time.perf_counter() - start
    table = read_table(tmp / "run" / "voxels.csv")
    probe = probe_movie_run(run, tmp / "probe")
    probe_s = time.perf_counter() - start - nif_s
    files = read_movie(paths["stim"], paths["bold"])
    t = files.timing
    train = t.volumes_of([r for r in t.runs if r != sim.test_run])
    test = t.volumes_of([sim.test_run])
    fit_rows = np.asarray(json.loads((tmp / "run" / "split.json").read_text())["train"])
    rows, classic_s = [], 0.0
    for area in ("V1", "V2"):
        truth = sim.truth[area]
        ceiling = float(np.median(truth["noise_ceiling"]))
        m = table["area"] == area
        r_nif = table["r_test"][m].astype(float)
        c0 = time.perf_counter()
        fit = fit_prf(sim.aperture, files.responses[area], t, volumes=train,
                      peaks=(4.0, 5.0, 6.0, 7.0))
        r_classic = _r(fit.predict(sim.aperture, t, test), files.responses[area][test])
        classic_s += time.perf_counter() - c0
        # the voxels both predict with r > 0.3: the same voxels for every row
        common = (r_nif > 0.3) & (r_classic > 0.3)
        rows.append(_row(seed, area, ceiling, "niflow readout", r_nif, table["prf_x"][m],
                         table["prf_y"][m], table["prf_sigma"][m], table["hrf_peak_s"][m],
                         truth, args.size, common))
        f = probe["fits"][area]
        rows.append(_row(seed, area, ceiling, "niflow in-silico", r_nif, f.x, f.y, f.sigma,
                         f.hrf_peak_s, truth, args.size, common))
        rows.append(_row(seed, area, ceiling, "classic pRF", r_classic, fit.x, fit.y,
                         fit.sigma, fit.hrf_peak_s, truth, args.size, common))
        # the same fit on niflow's fitting runs only (niflow holds one out for stopping)
        fit = fit_prf(sim.aperture, files.responses[area], t, volumes=fit_rows,
                      peaks=(4.0, 5.0, 6.0, 7.0))
        r_fit_runs = _r(fit.predict(sim.aperture, t, test), files.responses[area][test])
        rows.append(_row(seed, area, ceiling, "classic, niflow's fit runs", r_fit_runs, fit.x,
                         fit.y, fit.sigma, fit.hrf_peak_s, truth, args.size, common))
    rows.append(f"| {seed} | (time) | | niflow {nif_s:.0f} s + probe {probe_s:.0f} s, "
                f"classic {classic_s:.0f} s | | | | | | | | | | | |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--runs", type=int, default=4, help="training runs")
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--tr", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the test run")
    ap.add_argument("--v1", type=int, default=100)
    ap.add_argument("--v2", type=int, default=60)
    ap.add_argument("--candidates", default="gabor-gaussian",
                    help="comma-separated select.candidates, or 'default' for the preset's")
    ap.add_argument("--epochs", type=int, default=25, help="the default preset's 25")
    ap.add_argument("--patience", type=int, default=6, help="the default preset's 6")
    ap.add_argument("--tmp", default="/tmp/niflow_prf_mapping_benchmark")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("| seed | area | ceiling | method | held-out r | >0.3 | centre err (px) | "
          "centre err, r>0.3 (n) | centre err, both r>0.3 (n) | σ err, both r>0.3 (px) | "
          "centre slope | size ρ | size ρ, r>0.3 | σ px (true) | HRF peak err (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        for row in one(args, seed):
            print(row, flush=True)


if __name__ == "__main__":
    main()
