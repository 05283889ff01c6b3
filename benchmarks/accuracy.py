"""Held-out accuracy and pRF recovery: niflow presets against voxelwise ridge on pixels.

Usage::

    .venv/bin/python benchmarks/accuracy.py

Every model is fitted on the same training rows and scored on the same held-out rows
(the last 20%: 288:360 for 360 images). Simulations: the default, two harder ones (the same
as in tests/test_vs_ridge.py) and the real BRAINS stimuli with simulated compressive voxels.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scipy.io

from niflow import config as cfgmod
from niflow.baselines import pixel_features, ridge_predict
from niflow.data.dataset import parse_rows, scale_stimuli
from niflow.data.simulate import SimConfig, harder_configs, simulate
from niflow.demo import noise_ceiling_of_mean, prf_recovery
from niflow.evaluate import pearson_r
from niflow.interpret import receptive_fields
from niflow.run import train_run

BRAINS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brains" / "stim.mat"

SIMS = {"default": SimConfig(), **harder_configs()}


def evaluate(name: str, sim, stim: np.ndarray) -> list[str]:
    n = stim.shape[0]
    test = parse_rows(f"{n - n // 5}:{n}", n)
    train = np.setdiff1d(np.arange(n), test)
    pix = pixel_features(scale_stimuli(stim))
    lines = []
    fits = {}
    for preset in ("default", "basicnif"):
        t0 = time.perf_counter()
        run, _, _ = train_run(stim, sim.responses, None, cfgmod.preset(preset), test,
                              progress=False)
        fits[preset] = (run, run.predict(stim[test]), time.perf_counter() - t0)
    for area, resp in sim.responses.items():
        ridge, _ = ridge_predict(pix[train], resp[train], pix[test])
        r_ridge = pearson_r(ridge, resp[test])
        ceil = np.median(noise_ceiling_of_mean(sim.truth[area]["reliability"],
                                               sim.config.n_repeats))
        cells = []
        for preset in ("default", "basicnif"):
            run, pred, secs = fits[preset]
            r = pearson_r(pred[area], resp[test])
            rec = prf_recovery(receptive_fields(run.model, area), sim.truth[area], r > 0.3)
            cells.append(f"{np.median(r):.3f} ({rec['median_centre_error_px']:.1f} px, "
                         f"{secs:.0f} s)")
        lines.append(f"| {name} | {area} | {ceil:.3f} | {cells[0]} | {cells[1]} | "
                     f"{np.median(r_ridge):.3f} |")
    return lines


def main() -> None:
    print("| simulation | area | median noise ceiling | niflow default: median r "
          "(pRF centre error, train time) | basicnif preset | ridge on pixels |")
    print("|---|---|---|---|---|---|")
    for name, cfg in SIMS.items():
        sim = simulate(n_per_letter=60, seed=0, config=cfg)
        print("\n".join(evaluate(name, sim, sim.stim)), flush=True)
    if BRAINS.exists():
        stim = scipy.io.loadmat(BRAINS)["stim"]
        sim = simulate(stim=stim, seed=0, config=SimConfig(output_exponent=0.5))
        print("\n".join(evaluate("real BRAINS stimuli, compressive", sim, stim)), flush=True)


if __name__ == "__main__":
    main()
