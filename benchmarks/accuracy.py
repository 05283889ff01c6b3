"""Realistic-SNR accuracy suite: niflow against voxelwise ridge on every simulation regime.

Usage::

    .venv/bin/python benchmarks/accuracy.py                       # all regimes, ~2000 voxels
    .venv/bin/python benchmarks/accuracy.py --quick --regimes letters-noisy,sparse-v1
    .venv/bin/python benchmarks/accuracy.py --seed 1 --json runs/accuracy.json
    .venv/bin/python benchmarks/accuracy.py --regimes wide-sf,ecc-laws --v3 300

Regimes: :func:`niflow.data.simulate.regimes` (median noise ceilings 0.4-0.6 in every
area, per-voxel spread). On each regime's split (BRAINS test part 288:360, else a seeded
random 20 %; the small-data regime by 10-fold cross-validation with fold-centred r) this
scores

* niflow: ``train_run`` with the ``default`` preset, pRFs from
  :func:`niflow.interpret.receptive_fields`;
* ridge on the Gabor-energy bank of :mod:`niflow.baselines` (designed independently of the
  simulator) and ridge on pixels, both with per-voxel alpha from the training rows only;
* a reference pRF estimate: the centroid and spread, near its peak, of each voxel's
  (smoothed) correlation map with the bank's total local energy (training rows only).

Each regime x area prints one markdown row: median ceiling; median r, median r/ceiling and
share of voxels with r > 0.3 for each model; niflow's median pRF centre error and size
Spearman rho over its voxels with r > 0.3 (the reference's over the same voxels); niflow's
seconds; and PASS/FAIL of :func:`niflow.data.simulate.scoring.check_rule`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from niflow import config as cfgmod
from niflow.data.dataset import scale_stimuli
from niflow.data.simulate import Regime, make_regime, regimes
from niflow.data.simulate.scoring import (
    R_GOOD,
    accuracy_metrics,
    check_rule,
    fold_centred_r,
    kfold,
    noise_ceiling,
    pearson_columns,
    prf_metrics,
)
from niflow.evaluate.baselines import (
    gabor_energy_maps,
    gabor_features,
    pixel_features,
    ridge_predict,
)

MODELS = ("niflow", "gabor", "pixels")
QUICK_VOXELS = {"V1": 200, "V2": 200}


def baseline_features(x: np.ndarray) -> dict[str, np.ndarray]:
    """Ridge feature matrices (n, n_features) of scaled stimuli x (n, h, w)."""
    return {"gabor": gabor_features(x), "pixels": pixel_features(x)}


def total_energy(x: np.ndarray, chunk: int = 64) -> np.ndarray:
    """The baseline bank's summed local energy (n, h*w), for the reference pRF maps."""
    parts = [gabor_energy_maps(x[i:i + chunk]).sum(1) for i in range(0, len(x), chunk)]
    return np.concatenate(parts).reshape(len(x), -1)


def reference_prf(energy: np.ndarray, y: np.ndarray, shape: tuple[int, int],
                  blur: float = 1.5, radius: float = 8.0) -> dict:
    """Centroid and spread of each voxel's correlation map with local energy, near its peak.

    Parameters
    ----------
    energy : ndarray of shape (n_train, h*w)
    y : ndarray of shape (n_train, V)
    shape : (h, w)
    blur, radius : float
        The map is smoothed by a Gaussian of ``blur`` px; only pixels within ``radius`` px of
        its peak and above half the peak count (the rest of the map is mostly noise).

    Returns
    -------
    dict with ``prf_x``, ``prf_y``, ``prf_sigma`` of shape (V,), pixels
    """
    from scipy import ndimage

    corr = pearson_map(energy, y).T.reshape(-1, *shape)
    flat = ndimage.gaussian_filter(corr, (0, blur, blur)).reshape(len(corr), -1)  # (V, h*w)
    yy, xx = (g.ravel().astype(np.float64) for g in np.mgrid[0:shape[0], 0:shape[1]])
    peak = flat.argmax(1)
    near = np.hypot(xx[None] - xx[peak, None], yy[None] - yy[peak, None]) <= radius
    w = np.where(near, np.maximum(flat - 0.5 * flat.max(1, keepdims=True), 0.0), 0.0)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
    cx, cy = w @ xx, w @ yy
    var = (w * ((xx[None] - cx[:, None]) ** 2 + (yy[None] - cy[:, None]) ** 2)).sum(1) / 2
    return {"prf_x": cx, "prf_y": cy, "prf_sigma": np.sqrt(var)}


def pearson_map(e: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Correlation of every energy pixel (n, P) with every voxel (n, V): (P, V)."""
    ez = (e - e.mean(0)) / np.maximum(e.std(0), 1e-12)
    yz = (y - y.mean(0)) / np.maximum(y.std(0), 1e-12)
    return ez.T @ yz / len(e)


def split_scores(sim, test: np.ndarray, seed: int) -> dict:
    """Per area: r of every model on the held-out rows, niflow's and the reference pRFs."""
    from niflow.runs.pipeline import train_run

    n = len(sim.stim)
    train = np.setdiff1d(np.arange(n), test)
    x = scale_stimuli(sim.stim)[:, 0]
    feats = baseline_features(x)
    energy = total_energy(x)
    cfg = cfgmod.preset("default")
    cfg.train.seed = seed
    t0 = time.perf_counter()
    run, _, _ = train_run(sim.stim, sim.responses, None, cfg, test, progress=False)
    seconds = time.perf_counter() - t0
    pred = run.predict(sim.stim[test])
    out = {}
    for area in sim.areas:
        cols = np.asarray(run.voxel_index[area])
        y = np.asarray(sim.responses[area][:, cols], dtype=np.float64)
        r = {"niflow": pearson_columns(pred[area], y[test])}
        for kind, f in feats.items():
            r[kind] = pearson_columns(ridge_predict(f[train], y[train], f[test])[0], y[test])
        out[area] = {"cols": cols, "r": r, "prf": run.receptive_fields(area),
                     "ref_prf": reference_prf(energy[train], y[train], x.shape[1:]),
                     "seconds": seconds}
    return out


def cv_scores(sim, k: int, seed: int) -> dict:
    """As :func:`split_scores` by k-fold cross-validation (niflow.crossval if present)."""
    x = scale_stimuli(sim.stim)[:, 0]
    cfg = cfgmod.preset("default")
    cfg.train.seed = seed
    try:
        from niflow.runs.crossval import cross_validate
    except ImportError:
        res = None
    else:
        t0 = time.perf_counter()
        res = cross_validate(sim.stim, sim.responses, cfg, k=k, seed=seed,
                             baselines=("pixels", "gabor"), progress=False)
        seconds = time.perf_counter() - t0
    if res is None:
        return _cv_fallback(sim, x, cfg, k, seed)
    energy = total_energy(x)
    out = {}
    for area in sim.areas:
        cols = np.asarray(getattr(res, "voxel", {}).get(area, np.arange(res.r[area].size)))
        y = np.asarray(sim.responses[area][:, cols], dtype=np.float64)
        r = {"niflow": res.r[area], **{kind: res.baseline_r[kind][area] for kind in ("gabor",
                                                                                   "pixels")}}
        out[area] = {"cols": cols, "r": r, "prf": res.prf[area],
                     "ref_prf": reference_prf(energy, y, x.shape[1:]), "seconds": seconds}
    return out


def _cv_fallback(sim, x: np.ndarray, cfg, k: int, seed: int) -> dict:
    """k-fold loop with train_run and ridge_predict; fold-centred r; median fold pRFs."""
    from niflow.runs.pipeline import train_run

    folds = kfold(len(x), k, seed)
    feats = baseline_features(x)
    pred = {m: {a: np.zeros(sim.responses[a].shape) for a in sim.areas} for m in MODELS}
    prfs: dict[str, list] = {a: [] for a in sim.areas}
    seconds = 0.0
    for f in range(k):
        test, train = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        t0 = time.perf_counter()
        run, _, _ = train_run(sim.stim, sim.responses, None, cfg, test, progress=False)
        seconds += time.perf_counter() - t0
        p = run.predict(sim.stim[test])
        for a in sim.areas:
            # Simulated voxels are never constant, so every run keeps every column.
            pred["niflow"][a][test] = p[a]
            prfs[a].append(run.receptive_fields(a))
            y = sim.responses[a]
            for kind, fx in feats.items():
                pred[kind][a][test] = ridge_predict(fx[train], y[train], fx[test])[0]
    energy = total_energy(x)
    out = {}
    for a in sim.areas:
        y = np.asarray(sim.responses[a], dtype=np.float64)
        est = {key: np.median([q[key] for q in prfs[a]], axis=0)
               for key in ("prf_x", "prf_y", "prf_sigma")}
        out[a] = {"cols": np.arange(y.shape[1]),
                  "r": {m: fold_centred_r(pred[m][a], y, folds) for m in MODELS},
                  "prf": est, "ref_prf": reference_prf(energy, y, x.shape[1:]),
                  "seconds": seconds}
    return out


def summarize(regime: Regime, sim, scores: dict) -> dict:
    """Metrics and rule verdict per area of one regime."""
    rows = {}
    for area, s in scores.items():
        truth = {k: np.asarray(v)[s["cols"]] for k, v in sim.truth[area].items()
                 if k in ("prf_x", "prf_y", "prf_sigma", "reliability")}
        ceil = noise_ceiling(truth["reliability"], sim.config.n_repeats)
        models = {m: accuracy_metrics(s["r"][m], ceil) for m in MODELS}
        good = np.nan_to_num(s["r"]["niflow"]) > R_GOOD
        prf = prf_metrics(s["prf"], truth, good)
        ref = prf_metrics(s["ref_prf"], truth, good)
        fails = check_rule(area, models, prf)
        rows[area] = {"median_ceiling": float(np.median(ceil)), "models": models, "prf": prf,
                      "reference_prf": ref, "niflow_seconds": s["seconds"],
                      "n_voxels": int(len(ceil)), "pass": not fails, "failures": fails,
                      "evaluation": f"{regime.cv_folds}-fold CV" if regime.cv_folds
                      else regime.test_rule}
    return rows


HEADER = ("| regime | area | ceiling | niflow r | r/c | >0.3 | gabor r | r/c | >0.3 | pixels r "
          "| r/c | >0.3 | pRF err px | size ρ | ref err px | ref size ρ | niflow s | rule |")


def format_row(name: str, area: str, row: dict) -> str:
    cells = [name, area, f"{row['median_ceiling']:.3f}"]
    for m in MODELS:
        mm = row["models"][m]
        cells += [f"{mm['median_r']:.3f}", f"{mm['median_r_over_ceiling']:.2f}",
                  f"{mm['frac_r_gt_0.3']:.2f}"]
    p, q = row["prf"], row["reference_prf"]
    cells += [f"{p['centre_error_px']:.2f}", f"{p['size_spearman']:.2f}",
              f"{q['centre_error_px']:.2f}", f"{q['size_spearman']:.2f}",
              f"{row['niflow_seconds']:.0f}",
              "PASS" if row["pass"] else "FAIL: " + "; ".join(row["failures"])]
    return "| " + " | ".join(cells) + " |"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--regimes", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help=f"fewer voxels ({QUICK_VOXELS}) for fast iteration")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("--v3", type=int, default=0,
                    help="also simulate this many V3 voxels (training adds V3 to the model, "
                    "reading V2; V1 and V2 are simulated as without)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    known = regimes()
    names = [n for n in args.regimes.split(",") if n] or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown regimes {unknown}; known: {list(known)}")
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    results, n_pass, n_rows = {}, 0, 0
    for name in names:
        reg = known[name]
        n_voxels = dict(QUICK_VOXELS if args.quick else reg.n_voxels)
        if args.v3:
            n_voxels["V3"] = args.v3
        sim, test = make_regime(reg, seed=args.seed, n_voxels=n_voxels)
        scores = (cv_scores(sim, reg.cv_folds, args.seed) if reg.cv_folds
                  else split_scores(sim, test, args.seed))
        results[name] = summarize(reg, sim, scores)
        for area, row in results[name].items():
            print(format_row(name, area, row), flush=True)
            n_pass += row["pass"]
            n_rows += 1
    print(f"\nrule: {n_pass}/{n_rows} regime x area rows PASS (seed {args.seed}"
          f"{', quick' if args.quick else ''})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"seed": args.seed, "quick": args.quick,
                                         "regimes": results}, indent=2) + "\n")
    return 0 if n_pass == n_rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
