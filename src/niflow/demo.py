"""The embedded default: simulate a cortex, train, score held-out voxels, check pRF recovery."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from niflow import config as cfgmod
from niflow.baselines import pixel_features, ridge_predict
from niflow.data.dataset import parse_rows, scale_stimuli
from niflow.data.simulate import SimConfig, simulate
from niflow.evaluate import pearson_r
from niflow.run import train_run


def prf_recovery(est: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                 keep: np.ndarray) -> dict[str, float]:
    """Median centre distance (px) and size correlation over voxels where ``keep``."""
    dist = np.hypot(est["prf_x"] - truth["prf_x"], est["prf_y"] - truth["prf_y"])[keep]
    sig_r = float("nan")
    if keep.sum() > 2:
        sig_r = float(np.corrcoef(est["prf_sigma"][keep], truth["prf_sigma"][keep])[0, 1])
    return {"n_voxels": int(keep.sum()),
            "median_centre_error_px": float(np.median(dist)) if dist.size else float("nan"),
            "sigma_correlation": sig_r}


def noise_ceiling_of_mean(reliability: np.ndarray, n_repeats: int) -> np.ndarray:
    """Highest r a perfect model can reach against the mean of ``n_repeats`` repeats.

    ``reliability`` is the correlation between two single repeats; Spearman–Brown gives the
    reliability of their mean, whose square root bounds the correlation with the signal.
    """
    rel_mean = n_repeats * reliability / (1 + (n_repeats - 1) * reliability)
    return np.sqrt(rel_mean)


def run_demo(out: str | Path = "runs/demo", preset: str = "default", n_per_letter: int = 60,
             n_voxels: dict[str, int] | None = None, seed: int = 0, epochs: int | None = None,
             sim_config: SimConfig | None = None, progress: bool = True) -> dict:
    """Simulate data into ``out/data``, train into ``out/run`` and compare with the truth.

    Returns
    -------
    dict
        Per area: ``median_r``, ``ridge_median_r``, ``median_ceiling``, pRF recovery; and
        ``seconds`` for simulation, training and the ridge baseline.
    """
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # the demo owns its folder and always starts afresh
    t0 = time.perf_counter()
    sim = simulate(out / "data", n_per_letter=n_per_letter, n_voxels=n_voxels, seed=seed,
                   config=sim_config)
    t_sim = time.perf_counter() - t0
    n = sim.stim.shape[0]
    test = parse_rows(f"{n - n // 5}:{n}", n)
    cfg = cfgmod.preset(preset)
    cfg.train.seed = seed
    if epochs is not None:
        cfg.train.epochs = epochs
    t0 = time.perf_counter()
    run, hist, data = train_run(sim.stim, sim.responses, out / "run", cfg, test,
                                progress=progress,
                                inputs={"stim": str(out / "data" / "stim.mat"),
                                        "bold": str(out / "data" / "bold.mat")})
    t_train = time.perf_counter() - t0
    pred = run.predict(sim.stim[test])
    train_rows = np.setdiff1d(np.arange(n), test)
    pix = pixel_features(scale_stimuli(sim.stim))
    t0 = time.perf_counter()
    from niflow.interpret import receptive_fields

    summary: dict = {"areas": {}}
    for area in sim.areas:
        r = pearson_r(pred[area], sim.responses[area][test])
        ridge, _ = ridge_predict(pix[train_rows], sim.responses[area][train_rows], pix[test])
        r_ridge = pearson_r(ridge, sim.responses[area][test])
        truth = sim.truth[area]
        ceiling = noise_ceiling_of_mean(truth["reliability"], sim.config.n_repeats)
        est = receptive_fields(run.model, area)
        summary["areas"][area] = {
            "n_voxels": int(r.size), "median_r": float(np.median(r)),
            "ridge_median_r": float(np.median(r_ridge)),
            "frac_voxels_beating_ridge": float((r > r_ridge).mean()),
            "median_ceiling": float(np.median(ceiling)),
            "median_r_over_ceiling": float(np.median(r / ceiling)),
            "prf": prf_recovery(est, truth, r > 0.3),
        }
    # training proper (the epochs: steps and validation) apart from writing the run
    # folder's outputs (figures, significance, information flow), which train_run also does
    t_epochs = float(sum(e["seconds"] for e in hist.epochs))
    summary["seconds"] = {"simulate": t_sim, "train": t_epochs, "outputs": t_train - t_epochs,
                          "ridge": time.perf_counter() - t0}
    summary["best_epoch"] = hist.best_epoch
    summary["run_dir"] = str(out / "run")
    return summary


def format_summary(summary: dict) -> str:
    """A plain-text table of :func:`run_demo`'s summary."""
    head = (f"{'area':<5} {'voxels':>6} {'NIF r':>7} {'ridge r':>8} {'ceiling':>8} "
            f"{'r/ceil':>7} {'pRF err px':>11} {'size corr':>9}")
    lines = ["held-out test rows, median over voxels; pRF error over voxels with r > 0.3",
             head, "-" * len(head)]
    for area, s in summary["areas"].items():
        p = s["prf"]
        lines.append(
            f"{area:<5} {s['n_voxels']:>6} {s['median_r']:>7.3f} {s['ridge_median_r']:>8.3f} "
            f"{s['median_ceiling']:>8.3f} {s['median_r_over_ceiling']:>7.3f} "
            f"{p['median_centre_error_px']:>11.2f} {p['sigma_correlation']:>9.2f}")
    sec = summary["seconds"]
    lines.append(f"time: simulate {sec['simulate']:.1f} s, train {sec['train']:.1f} s, "
                 f"run-folder outputs {sec['outputs']:.1f} s, ridge baseline "
                 f"{sec['ridge']:.1f} s; run folder: {summary['run_dir']}")
    return "\n".join(lines)
