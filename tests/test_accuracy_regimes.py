"""The default model against the strongest linear baselines at fMRI-like noise.

Small versions (300 + 300 voxels) of two regimes of the realistic-noise suite
(benchmarks/accuracy.py): the real BRAINS letters at median noise ceilings ≈ 0.53, and
natural-like patches, textures and dots with sparse normalised V1 and end-stopped V2. The
default ``niflow train`` (selection and ensemble included) must beat ridge regression on
pixels and on a Gabor-energy bank, both with per-voxel regularisation chosen on the same
training rows, in every area — in median r and in the share of voxels with r > 0.3 — and,
on the letters, place pRF centres within 1.5 px (V1) and 2.5 px (V2) of the truth with sizes
whose ranks follow the true ones (Spearman ≥ 0.6). On natural-textures the centres are not
yet that close (BENCHMARKS.md: V2 3.5 px), so only accuracy is asserted there.
"""

from __future__ import annotations

import numpy as np
import pytest

from niflow import config as cfgmod
from niflow.data.dataset import scale_stimuli
from niflow.data.simulate import make_regime
from niflow.data.simulate.scoring import pearson_columns, prf_metrics
from niflow.evaluate.baselines import gabor_features, pixel_features, ridge_predict
from niflow.runs.pipeline import train_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["letters-noisy", "natural-textures"])
def scored(request, brains_stim_path):
    sim, test = make_regime(request.param, seed=0, n_voxels={"V1": 300, "V2": 300},
                            brains_path=brains_stim_path)
    train = np.setdiff1d(np.arange(len(sim.stim)), test)
    run, _, _ = train_run(sim.stim, sim.responses, None, cfgmod.preset("default"), test,
                          progress=False)
    pred = run.predict(sim.stim[test])
    x = scale_stimuli(sim.stim)
    feats = {"pixels": pixel_features(x), "gabor": gabor_features(x)}
    out = {}
    for area, resp in sim.responses.items():
        ridge = {k: pearson_columns(ridge_predict(f[train], resp[train], f[test])[0],
                                    resp[test]) for k, f in feats.items()}
        r = pearson_columns(pred[area], resp[test])
        prf = prf_metrics(run.receptive_fields(area), sim.truth[area], r > 0.3)
        out[area] = (r, ridge, prf)
    return request.param, out


def test_default_beats_the_best_ridge_in_every_area(scored):
    name, out = scored
    for area, (r, ridge, _) in out.items():
        best = max(np.median(v) for v in ridge.values())
        best_frac = max((v > 0.3).mean() for v in ridge.values())
        assert np.median(r) > best, (name, area, np.median(r), best)
        assert (r > 0.3).mean() > best_frac, (name, area, (r > 0.3).mean(), best_frac)


def test_prfs_are_recovered_on_the_letters(scored):
    name, out = scored
    if name != "letters-noisy":
        pytest.skip("pRF recovery is asserted on letters-noisy only (module docstring)")
    for area, limit in (("V1", 1.5), ("V2", 2.5)):
        _, _, prf = out[area]
        assert prf["centre_error_px"] < limit, (area, prf)
        assert prf["size_spearman"] >= 0.6, (area, prf)
