"""The embedded default: simulate a cortex, train, score held-out voxels, check pRF recovery."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from niflow import config as cfgmod
from niflow.data.dataset import parse_rows
from niflow.data.simulate.files import simulate
from niflow.data.simulate.settings import SimConfig
from niflow.evaluate.statistics import pearson_r
from niflow.runs.evaluation import baseline_folder, evaluate_folder
from niflow.runs.pipeline import train_run


def prf_recovery(est: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                 keep: np.ndarray) -> dict[str, float]:
    """Median centre distance (px) and size rank (Spearman) correlation over voxels where
    ``keep``."""
    from scipy.stats import spearmanr

    dist = np.hypot(est["prf_x"] - truth["prf_x"], est["prf_y"] - truth["prf_y"])[keep]
    sig_r = float("nan")
    if keep.sum() > 2:
        sig_r = float(spearmanr(est["prf_sigma"][keep], truth["prf_sigma"][keep])[0])
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
             sim_config: SimConfig | None = None, progress: bool = True,
             regime: str | None = "letters-noisy") -> dict:
    """Simulate data into ``out/data``, train into ``out/run`` and compare with the truth.

    By default the data are the ``letters-noisy`` regime of
    :func:`niflow.data.simulate.regimes` (the real BRAINS letters when ``../shared`` has
    them, fMRI-like noise: median noise ceilings ≈ 0.53); ``regime=None`` simulates
    ``n_per_letter`` glyphs per letter with ``sim_config`` instead. Both ridge baselines
    (pixels, Gabor energy; per-voxel α on the training rows) are fitted on the same split and,
    with the noise ceiling of the simulation's repeats, written into the run folder
    (:func:`write_demo_scores`), where ``niflow report`` finds them.

    Returns
    -------
    dict
        Per area: ``median_r``, ``ridge_median_r`` (the better ridge), ``ridge`` (each
        feature set), ``median_ceiling``, pRF recovery; ``seconds`` for simulation,
        training (selection, ensemble and readout refit included), outputs and the ridge
        baselines.
    """
    from niflow.data.simulate.files import write_simulation
    from niflow.data.simulate.regimes import make_regime

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # the demo owns its folder and always starts afresh
    t0 = time.perf_counter()
    if regime is not None:
        sim, test = make_regime(regime, seed=seed, n_voxels=n_voxels)
        write_simulation(sim, out / "data")
    else:
        sim = simulate(out / "data", n_per_letter=n_per_letter, n_voxels=n_voxels, seed=seed,
                       config=sim_config)
        test = None
    t_sim = time.perf_counter() - t0
    n = sim.stim.shape[0]
    if test is None:
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
    t_total = time.perf_counter() - t0
    t_train = _training_seconds(out / "run", hist)
    pred = run.predict(sim.stim[test])
    t0 = time.perf_counter()
    ridge_all = write_demo_scores(run, sim, test, out / "run")

    summary: dict = {"areas": {}, "regime": regime}
    for area in sim.areas:
        r = pearson_r(pred[area], sim.responses[area][test])
        ridge = {kind: float(np.median(res[area]["stats"]["r"]))
                 for kind, res in ridge_all.items()}
        truth = sim.truth[area]
        ceiling = noise_ceiling_of_mean(truth["reliability"], sim.config.n_repeats)
        est = run.receptive_fields(area)
        summary["areas"][area] = {
            "n_voxels": int(r.size), "median_r": float(np.median(r)),
            "ridge": ridge, "ridge_median_r": max(ridge.values()),
            "median_ceiling": float(np.median(ceiling)),
            "median_r_over_ceiling": float(np.median(r / ceiling)),
            "prf": prf_recovery(est, truth, r > 0.3),
        }
    summary["seconds"] = {"simulate": t_sim, "train": t_train, "outputs": t_total - t_train,
                          "ridge": time.perf_counter() - t0}
    summary["best_epoch"] = hist.best_epoch
    summary["run_dir"] = str(out / "run")
    return summary


def write_demo_scores(run, sim, test: np.ndarray, run_dir: Path) -> dict[str, dict]:
    """Write what ``niflow baseline`` and ``niflow evaluate`` would into the demo's run folder:
    ridge on pixels and on Gabor energy (``baseline_*.csv/json``, ``figures/baselines.png``)
    and the statistics with the split-half noise ceiling of the simulation's two repeats
    (``stats_voxels.csv``, ``stats.json``, ``figures/noise_ceiling.png``), so that
    ``niflow report`` shows them without another command.

    Returns
    -------
    dict of feature set to :func:`niflow.evaluate.baselines.baseline_scores` results.
    """
    ridge = baseline_folder(sim.stim, sim.responses, run_dir, ["pixels", "gabor"])
    evaluate_folder(run, sim.stim, sim.responses, test, sim.repeats, run_dir,
                    info={"stim": str(run_dir.parent / "data" / "stim.mat"),
                          "bold": str(run_dir.parent / "data" / "bold.mat"),
                          "repeats": "the simulation's repeats (data/truth.npz)"})
    return ridge


def _training_seconds(run_dir: Path, hist) -> float:
    """Seconds spent training: every candidate and member and the readout refit
    (selection.json), or the epochs."""
    import json

    sel = run_dir / "selection.json"
    if sel.exists():
        record = json.loads(sel.read_text())
        return float(record["seconds"]) + float(record.get("refit_seconds", 0.0))
    return float(sum(e["seconds"] for e in hist.epochs))


def format_summary(summary: dict) -> str:
    """A plain-text table of :func:`run_demo`'s summary."""
    head = (f"{'area':<5} {'voxels':>6} {'NIF r':>7} {'ridge-gabor':>11} {'ridge-pix':>9} "
            f"{'ceiling':>8} {'r/ceil':>7} {'pRF err px':>11} {'size corr':>9}")
    lines = [f"simulation: {summary.get('regime') or 'glyphs'}; held-out test rows, median "
             f"over voxels; pRF error over voxels with r > 0.3", head, "-" * len(head)]
    for area, s in summary["areas"].items():
        p = s["prf"]
        ridge = s.get("ridge", {})
        lines.append(
            f"{area:<5} {s['n_voxels']:>6} {s['median_r']:>7.3f} "
            f"{ridge.get('gabor', float('nan')):>11.3f} "
            f"{ridge.get('pixels', s['ridge_median_r']):>9.3f} "
            f"{s['median_ceiling']:>8.3f} {s['median_r_over_ceiling']:>7.3f} "
            f"{p['median_centre_error_px']:>11.2f} {p['sigma_correlation']:>9.2f}")
    sec = summary["seconds"]
    lines.append(f"time: simulate {sec['simulate']:.1f} s, train {sec['train']:.1f} s "
                 f"(selection, ensemble, refit), run-folder outputs {sec['outputs']:.1f} s, ridge "
                 f"baselines and noise ceilings {sec['ridge']:.1f} s; run folder: "
                 f"{summary['run_dir']} (`niflow report {summary['run_dir']}` shows it all)")
    return "\n".join(lines)
