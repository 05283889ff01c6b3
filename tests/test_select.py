"""Automatic selection and ensembles: chosen on validation rows only, averaged, saved whole."""

from __future__ import annotations

import json

import numpy as np
import pytest

from niflow import config as cfgmod
from niflow.data.dataset import parse_rows
from niflow.data.simulate import simulate
from niflow.model.fitted import predict
from niflow.runs.pipeline import train_run
from niflow.runs.run import load_run
from niflow.train.select import ensemble_size, member_data


@pytest.fixture(scope="module")
def sim():
    return simulate(n_per_letter=10, n_voxels={"V1": 40, "V2": 30}, seed=4)


def _cfg(candidates, members, epochs=3, budget=0.0):
    cfg = cfgmod.preset("default")
    cfg.train.epochs = epochs
    cfg.select = cfgmod.SelectConfig(candidates=candidates, members=members, budget_s=budget)
    return cfg.validate()


@pytest.fixture(scope="module")
def selected(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("sel") / "run"
    test = parse_rows("48:60", 60)
    cfg = _cfg(["gabor-gaussian", "learned-lowrank"], members=2)
    run, hist, data = train_run(sim.stim, sim.responses, out, cfg, test, progress=False)
    return out, run, hist, data, test


def test_the_best_validation_candidate_is_kept(selected):
    out, run, hist, _, _ = selected
    sel = json.loads((out / "selection.json").read_text())
    scores = {k: v["val_median_r"] for k, v in sel["scores"].items()}
    assert set(scores) == {"gabor-gaussian", "learned-lowrank"}
    assert sel["chosen"] == max(scores, key=scores.get)
    assert hist.best_score == pytest.approx(scores[sel["chosen"]])
    want = cfgmod.candidate(_cfg(["gabor-gaussian", "learned-lowrank"], 2), sel["chosen"])
    assert run.config.to_dict() == want.to_dict()
    saved = json.loads((out / "config.json").read_text())
    assert saved["select"]["candidates"] == ["gabor-gaussian", "learned-lowrank"]
    assert len((out / "log.jsonl").read_text().splitlines()) == len(hist.epochs)


def test_members_see_their_own_validation_rows_and_never_the_test_rows(selected, sim):
    _, run, _, data, test = selected
    assert len(run.members) == 1
    other = member_data(data, run.config, 1)
    assert not np.array_equal(other.split.val, data.split.val)
    for d in (data, other):
        assert np.intersect1d(np.concatenate([d.split.train, d.split.val]), test).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([d.split.train, d.split.val])),
                                      np.setdiff1d(np.arange(60), test))


def test_ensemble_prediction_is_the_mean_of_its_members(selected, sim):
    _, run, _, data, test = selected
    x = data.stim[test]
    single = [predict(m, x) for m in run.ensemble]
    got = run.predict(sim.stim[test])
    for area in got:
        want = run.scalers[area].inverse(np.mean([s[area] for s in single], axis=0))
        np.testing.assert_allclose(got[area], want, rtol=1e-5, atol=1e-5)
        assert not np.allclose(single[0][area], single[1][area])  # members differ


def test_a_saved_ensemble_predicts_the_same(selected, sim):
    out, run, _, _, test = selected
    loaded = load_run(out)
    assert len(loaded.members) == len(run.members)
    for area, p in run.predict(sim.stim[test]).items():
        np.testing.assert_allclose(loaded.predict(sim.stim[test])[area], p, rtol=1e-6,
                                   atol=1e-6)
    pred = np.load(out / "predictions.npz")
    for area, p in run.predict(sim.stim[test]).items():
        np.testing.assert_allclose(pred[area], p, rtol=1e-5, atol=1e-5)


def test_budget_keeps_the_first_candidate_and_member_and_records_the_rest(sim, tmp_path):
    cfg = _cfg(["learned-gaussian", "learned-lowrank"], members=3, epochs=2, budget=1e-6)
    run, _, _ = train_run(sim.stim, sim.responses, tmp_path / "r", cfg, "48:60",
                          progress=False)
    sel = json.loads((tmp_path / "r" / "selection.json").read_text())
    assert list(sel["scores"]) == ["learned-gaussian"]
    assert sel["skipped"] == ["candidate learned-lowrank", "member 1", "member 2"]
    assert run.members == [] and run.config.readout.kind == "gaussian"


def test_unknown_candidate_is_a_config_error():
    with pytest.raises(cfgmod.ConfigError, match="config.select.candidates: unknown"):
        cfgmod.from_dict({"select": {"candidates": ["resnet"]}})
    with pytest.raises(cfgmod.ConfigError, match="config.select.members"):
        cfgmod.from_dict({"select": {"members": 0}})


def test_ensemble_size_grows_as_rows_shrink_up_to_its_cap():
    cfg = _cfg([], members=2)
    cfg.select.member_rows, cfg.select.max_members = 300, 4
    want = {1000: 2, 300: 2, 299: 2, 150: 2, 149: 3, 100: 3, 99: 4, 90: 4, 10: 4}
    assert {n: ensemble_size(cfg, n) for n in want} == want  # max(2, min(4, ceil(300 / n)))
    cfg.select.member_rows = 0
    assert ensemble_size(cfg, 10) == 2
    cfg.select.member_rows, cfg.select.members = 300, 1  # one model stays one model
    assert ensemble_size(cfg, 10) == 1


def test_few_rows_train_the_larger_ensemble(sim):
    # 48 training and validation rows: ceil(300 / 48) = 7, capped at 3
    cfg = _cfg(["learned-gaussian"], members=2, epochs=2)
    cfg.select.member_rows, cfg.select.max_members = 300, 3
    run, _, data = train_run(sim.stim, sim.responses, None, cfg.validate(), "48:60",
                             progress=False)
    assert data.split.train.size + data.split.val.size == 48
    assert len(run.ensemble) == 3
    seeds = [m.config.train.seed for m in run.ensemble]
    assert seeds == [0, 1, 2]


def test_member_rows_is_checked():
    with pytest.raises(cfgmod.ConfigError, match="config.select.member_rows: must be >= 0"):
        cfgmod.from_dict({"select": {"member_rows": -1}})
    with pytest.raises(cfgmod.ConfigError, match=r"config.select.max_members: must be in 1\.\.32"):
        cfgmod.from_dict({"select": {"max_members": 0}})
