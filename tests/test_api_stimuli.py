"""The public API takes stimuli as loaded: (n, H, W) uint8 or float, with a Run/FittedModel.

Every function that takes stimuli gives the same result for uint8 images and the equivalent
float images, and the same as the manual path (scale as in training, add the channel axis,
call the bare network); a wrong image size is a ValueError naming both shapes.
"""

from __future__ import annotations

import numpy as np
import pytest

import niflow
from niflow.data.dataset import scale_stimuli
from niflow.evaluate.statistics import read_table
from niflow.interpret.probes import model_responses


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-epoch single-model run on a small simulation (48 images, 20 + 15 voxels)."""
    root = tmp_path_factory.mktemp("api")
    sim = niflow.simulate(root / "data", n_per_letter=8, n_voxels={"V1": 20, "V2": 15}, seed=0)
    cfg = niflow.preset("default")
    cfg.select.candidates, cfg.select.members, cfg.train.epochs = [], 1, 2
    run, _, _ = niflow.train_run(sim.stim, sim.responses, root / "run", cfg.validate(),
                                 test_rows=niflow.parse_rows("36:48", 48), progress=False)
    return sim, niflow.load_run(root / "run")


def _manual(stim_uint8: np.ndarray) -> np.ndarray:
    """The training path for uint8 images: /255 and a channel axis."""
    return (stim_uint8.astype(np.float32) / 255.0)[:, None]


def test_stimuli_are_uint8(tiny):
    sim, _ = tiny
    assert sim.stim.dtype == np.uint8 and sim.stim.ndim == 3


def test_model_input_matches_training_scale(tiny):
    sim, run = tiny
    x = run.model_input(sim.stim[:6])
    assert x.shape == (6, 1, 56, 56) and x.dtype == np.float32
    np.testing.assert_allclose(x, _manual(sim.stim[:6]), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(x, scale_stimuli(sim.stim[:6]))
    # the equivalent float images, in [0, 1] or in 0-255 units, even a dark subset
    dark = sim.stim[:6] // 2
    for equivalent in (dark.astype(np.float64) / 255.0, dark.astype(np.float32)):
        np.testing.assert_allclose(run.model_input(equivalent), _manual(dark), atol=1e-6)
    np.testing.assert_array_equal(run.model_input(sim.stim[:6, None]), x)


def test_predict_uint8_float_and_manual(tiny):
    sim, run = tiny
    stim = sim.stim[:10]
    manual = niflow.predict(run.model, _manual(stim))            # z units, bare network
    manual = {a: run.scalers[a].inverse(p) for a, p in manual.items()}
    for given in (stim, stim.astype(np.float32) / 255.0, stim.astype(np.float64)):
        got = niflow.predict(run, given)
        assert set(got) == {"V1", "V2"}
        for a in got:
            np.testing.assert_allclose(got[a], manual[a], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(run.predict(given)[a], manual[a], rtol=1e-5, atol=1e-5)


def test_information_flow_takes_a_run_and_raw_stimuli(tiny):
    sim, run = tiny
    test, train = np.arange(36, 48), np.arange(36)
    true = {a: sim.responses[a][test][:, run.voxel_index[a]] for a in ("V1", "V2")}
    manual = niflow.information_flow(run.model, _manual(sim.stim[test]), true,
                                     reference_stim=_manual(sim.stim[train]))
    for given in (sim.stim, sim.stim.astype(np.float32) / 255.0):
        flow = niflow.information_flow(run, given[test], true, reference_stim=given[train])
        assert [(f.target, f.source) for f in flow] == [(f.target, f.source) for f in manual]
        for f, m in zip(flow, manual, strict=True):
            np.testing.assert_allclose(f.r_full, m.r_full, atol=1e-5)
            np.testing.assert_allclose(f.r_mean, m.r_mean, atol=1e-5)
            np.testing.assert_allclose(f.weight_share, m.weight_share, atol=1e-6)


def test_receptive_fields_of_a_run_are_the_reported_ones(tiny, tmp_path):
    _, run = tiny
    table = read_table(run.path / "voxels.csv")
    v1 = np.asarray(table["area"]) == "V1"
    prf = niflow.receptive_fields(run, "V1", visual_field_deg=10.0)
    for key in ("prf_x", "prf_y", "prf_sigma"):
        np.testing.assert_allclose(prf[key], np.asarray(table[key], float)[v1], rtol=1e-4,
                                   atol=1e-3)
    np.testing.assert_allclose(prf["sigma_deg"], prf["prf_sigma"] * 10.0 / 56, rtol=1e-6)
    own = niflow.receptive_fields(run.model, "V1")                # bare network still works
    assert own["prf_x"].shape == prf["prf_x"].shape


def test_model_responses_uint8_and_float(tiny):
    sim, run = tiny
    a = model_responses(run, sim.stim[:5])
    b = model_responses(run, sim.stim[:5].astype(np.float32) / 255.0)
    c = niflow.predict(run.model, _manual(sim.stim[:5]))
    for area in a:
        np.testing.assert_allclose(a[area], b[area], atol=1e-5)
        np.testing.assert_allclose(a[area], c[area], atol=1e-5)


def test_evaluate_run_uint8_and_float(tiny):
    sim, run = tiny
    rows = np.arange(36, 48)
    a = niflow.evaluate_run(run, sim.stim, sim.responses, rows, n_permutations=10)
    b = niflow.evaluate_run(run, sim.stim.astype(np.float32) / 255.0, sim.responses, rows,
                            n_permutations=10)
    for area in a:
        np.testing.assert_allclose(a[area]["stats"]["r"], b[area]["stats"]["r"], atol=1e-5)


@pytest.mark.parametrize("bad", [(4, 28, 28), (4, 56, 57), (4, 3, 56, 56), (56, 56, 4)])
def test_wrong_shape_names_both_shapes(tiny, bad):
    sim, run = tiny
    stim = np.zeros(bad, np.uint8)
    true = {"V1": np.zeros((bad[0], 20))}
    calls = [lambda: run.predict(stim), lambda: niflow.predict(run, stim),
             lambda: niflow.information_flow(run, stim, true),
             lambda: model_responses(run, stim)]
    for call in calls:
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert str(tuple(bad)) in msg and "56, 56" in msg, msg


def test_bare_network_with_raw_stimuli_says_what_to_pass(tiny):
    sim, run = tiny
    with pytest.raises(ValueError, match=r"\(8, 56, 56\).*\(n, 1, 56, 56\).*Run"):
        niflow.information_flow(run.model, sim.stim[:8], {"V1": np.zeros((8, 20))})
    with pytest.raises(ValueError, match=r"\(8, 56, 56\).*Run"):
        niflow.predict(run.model, sim.stim[:8])


def test_baselines_take_stimuli_as_loaded(tiny):
    sim, _ = tiny
    test, few = np.arange(36, 48), {"V1": np.arange(4)}  # four voxels keep ridge quick
    resp = {"V1": sim.responses["V1"]}
    manual = niflow.baseline_scores(_manual(sim.stim), resp, test, "pixels", voxel_index=few,
                                    n_permutations=10)
    for given in (sim.stim, sim.stim.astype(np.float32) / 255.0):
        got = niflow.baseline_scores(given, resp, test, "pixels", voxel_index=few,
                                     n_permutations=10)
        for area in manual:
            np.testing.assert_allclose(got[area]["pred"], manual[area]["pred"], atol=1e-8)
    np.testing.assert_allclose(niflow.gabor_features(sim.stim[:4]),
                               niflow.gabor_features(_manual(sim.stim[:4])), atol=1e-10)
