"""Information flow: source ablations and inter-area weight summaries, on a graph where the
answer is known by construction."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from _threads import one_thread
from niflow import config as cfgmod
from niflow.data.dataset import parse_rows
from niflow.data.simulate import simulate
from niflow.evaluate.statistics import pearson_r
from niflow.interpret.flow import connection_weights, information_flow
from niflow.model.fitted import predict
from niflow.runs.pipeline import train_run


def blind_source_config() -> cfgmod.RunConfig:
    """V3 reads V1 (local oriented energy) and V0, an area pooled to a single 1×1 cell: V0
    only knows global image statistics, so voxels with local receptive fields need V1 and
    can do without V0."""
    return cfgmod.from_dict({
        "preset": "default",
        "areas": [
            {"name": "V1", "sources": ["stimulus"], "channels": 8, "kernel": 7,
             "nonlinearity": "square", "norm": "divisive", "mix_channels": 8},
            {"name": "V0", "sources": ["stimulus"], "channels": 4, "kernel": 5,
             "nonlinearity": "relu", "pool": 56},
            {"name": "V3", "sources": ["V1", "V0"], "channels": 8, "kernel": 3,
             "nonlinearity": "relu", "norm": "batch", "pool": 1},
        ],
        "train": {"epochs": 12, "seed": 1},
    })


@pytest.fixture(scope="module")
def trained():
    sim = simulate(n_per_letter=30, n_voxels={"V1": 140}, seed=4)
    n = sim.stim.shape[0]
    test = parse_rows(f"{n - n // 5}:{n}", n)
    v1 = sim.responses["V1"]
    # the simulated V1 voxels are split between the model's V1 and V3: both need local energy
    responses = {"V1": v1[:, :60], "V3": v1[:, 60:]}
    with one_thread():
        run, _, data = train_run(sim.stim, responses, None, blind_source_config(), test,
                                 progress=False)
    x = data.stim
    true = {a: data.raw[a][test] for a in data.areas}
    return run, x[test], true, x[data.split.train]


def _by_edge(flow):
    return {(f.target, f.source): f for f in flow}


def test_the_source_the_data_need_costs_more_than_the_one_they_do_not(trained):
    run, x_test, true, x_train = trained
    flow = _by_edge(information_flow(run.model, x_test, true, reference_stim=x_train))
    assert set(flow) == {("V1", "stimulus"), ("V3", "V1"), ("V3", "V0")}
    need, spare = flow[("V3", "V1")], flow[("V3", "V0")]
    assert np.median(need.r_full) > 0.5
    for mode in ("zero", "mean"):
        drop_need = need.row()[f"median_drop_{mode}"]
        drop_spare = spare.row()[f"median_drop_{mode}"]
        assert drop_need > 0.4, (mode, drop_need)
        assert drop_need > drop_spare + 0.3, (mode, drop_need, drop_spare)
    # the intact scores are those of the model's own predictions
    pred = predict(run.model, x_test)
    np.testing.assert_allclose(need.r_full, pearson_r(pred["V3"], true["V3"]), atol=1e-6)


def test_replacing_the_only_source_by_its_mean_leaves_nothing_to_predict(trained):
    # constant input → constant prediction → r is 0 by definition
    run, x_test, true, x_train = trained
    flow = _by_edge(information_flow(run.model, x_test, true, reference_stim=x_train))
    np.testing.assert_array_equal(flow[("V1", "stimulus")].r_mean, 0.0)


def test_a_source_whose_weights_are_cut_costs_exactly_nothing(trained):
    run, x_test, true, x_train = trained
    model = copy.deepcopy(run.model)
    conv = model.graph.areas["V3"].conv
    with torch.no_grad():
        conv.weight[:, 8:] = 0.0  # V0's 4 channels follow V1's 8 (config order)
    flow = _by_edge(information_flow(model, x_test, true, reference_stim=x_train))
    cut = flow[("V3", "V0")]
    np.testing.assert_allclose(cut.r_zero, cut.r_full, atol=1e-6)
    np.testing.assert_allclose(cut.r_mean, cut.r_full, atol=1e-6)
    assert cut.weight_norm == 0.0 and cut.weight_share == 0.0
    assert flow[("V3", "V1")].weight_share == pytest.approx(1.0)


def test_channel_weight_norms_match_a_naive_loop(trained):
    run = trained[0]
    w = run.model.graph.areas["V3"].conv.weight.detach().numpy().astype(np.float64)
    std = {"V1": np.linspace(1, 2, 8), "V0": np.full(4, 0.5)}
    cw = connection_weights(run.model, "V3", std)
    naive = np.array([[np.sqrt(sum(float(v) ** 2 for v in w[o, i].ravel()))
                       for i in range(12)] for o in range(8)])
    np.testing.assert_allclose(cw["V1"]["channel_norms"], naive[:, :8], rtol=1e-10)
    np.testing.assert_allclose(cw["V0"]["channel_norms"], naive[:, 8:], rtol=1e-10)
    total = (naive ** 2).sum()
    assert cw["V1"]["share"] == pytest.approx((naive[:, :8] ** 2).sum() / total)
    assert cw["V1"]["share"] + cw["V0"]["share"] == pytest.approx(1.0)
    eff = {"V1": ((naive[:, :8] * std["V1"]) ** 2).sum(),
           "V0": ((naive[:, 8:] * std["V0"]) ** 2).sum()}
    assert cw["V0"]["effective_share"] == pytest.approx(eff["V0"] / (eff["V0"] + eff["V1"]))


def test_measuring_flow_does_not_change_the_model(trained):
    # batch norm in training mode would use and update batch statistics
    run, x_test, true, x_train = trained
    model = copy.deepcopy(run.model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    information_flow(model, x_test, true, reference_stim=x_train)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
