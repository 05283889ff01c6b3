"""Training: determinism, resume, early stopping, and recovery of a known cortex."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _configs import default_config
from niflow.cli.demo import prf_recovery
from niflow.data.dataset import parse_rows
from niflow.data.simulate import simulate
from niflow.evaluate.statistics import pearson_r
from niflow.interpret.receptive_fields import receptive_fields
from niflow.runs.pipeline import train_run
from niflow.runs.run import load_run
from niflow.train import epochs as epochmod
from niflow.train import loop as trainmod


@pytest.fixture(scope="module")
def small_sim():
    return simulate(n_per_letter=10, n_voxels={"V1": 40, "V2": 30}, seed=3)


def _test_rows(sim):
    n = sim.stim.shape[0]
    return parse_rows(f"{n - n // 5}:{n}", n)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_same_seed_gives_identical_weights_and_metrics(small_sim, tmp_path):
    runs = []
    for name in ("a", "b"):
        run, hist, _ = train_run(small_sim.stim, small_sim.responses, tmp_path / name,
                                 default_config(3), _test_rows(small_sim), progress=False)
        runs.append((run, hist))
    (ra, ha), (rb, hb) = runs
    for k, v in _weights(ra.model).items():
        assert torch.equal(v, _weights(rb.model)[k]), k
    metrics = [json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab"]
    assert metrics[0]["areas"] == metrics[1]["areas"]
    assert [e["train_loss"] for e in ha.epochs] == [e["train_loss"] for e in hb.epochs]
    rc, _, _ = train_run(small_sim.stim, small_sim.responses, None, default_config(3, seed=1),
                         _test_rows(small_sim), progress=False)
    assert not torch.equal(_weights(rc.model)["readouts.V1.weight"],
                           _weights(ra.model)["readouts.V1.weight"])


def test_resume_after_interruption_matches_uninterrupted_run(small_sim, tmp_path, monkeypatch):
    cfg = default_config(4, patience=10)
    full, hist_full, _ = train_run(small_sim.stim, small_sim.responses, tmp_path / "full", cfg,
                                   _test_rows(small_sim), progress=False)
    calls = {"n": 0}
    real_append = epochmod._append_log

    def dying_append(path, record):
        calls["n"] += 1
        if calls["n"] == 3:  # killed after epoch 3's checkpoint, before its log line
            raise KeyboardInterrupt
        real_append(path, record)

    monkeypatch.setattr(epochmod, "_append_log", dying_append)
    with pytest.raises(KeyboardInterrupt):
        train_run(small_sim.stim, small_sim.responses, tmp_path / "cut", cfg,
                  _test_rows(small_sim), progress=False)
    monkeypatch.setattr(epochmod, "_append_log", real_append)
    assert trainmod.load_checkpoint(tmp_path / "cut")["epoch"] == 3
    log = (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    resumed, hist_res, _ = train_run(small_sim.stim, small_sim.responses, tmp_path / "cut",
                                     cfg, _test_rows(small_sim), resume=True, progress=False)
    for k, v in _weights(full.model).items():
        assert torch.equal(v, _weights(resumed.model)[k]), k
    def timeless(epochs):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]

    assert timeless(hist_res.epochs) == timeless(hist_full.epochs)
    log = (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4]


def test_best_validation_epoch_is_restored(small_sim):
    cfg = default_config(6, patience=2, lr=0.05)  # a large rate makes validation r wander
    run, hist, data = train_run(small_sim.stim, small_sim.responses, None, cfg,
                                _test_rows(small_sim), progress=False)
    scores = [e["val_median_r"] for e in hist.epochs]
    assert hist.best_score == max(scores)
    assert hist.best_epoch == 1 + int(np.argmax(scores))
    score, _ = trainmod.validation_score(run.model, data, data.split.val)
    assert score == pytest.approx(hist.best_score, abs=1e-6)
    if hist.stopped_early:
        assert len(hist.epochs) == hist.best_epoch + cfg.train.patience


def test_saved_run_predicts_like_the_trained_model(small_sim, tmp_path):
    run, _, _ = train_run(small_sim.stim, small_sim.responses, tmp_path / "r", default_config(1),
                          _test_rows(small_sim), progress=False)
    again = load_run(tmp_path / "r")
    x = small_sim.stim[:7]
    for area, p in run.predict(x).items():
        np.testing.assert_allclose(again.predict(x)[area], p, rtol=1e-5, atol=1e-5)
    saved = np.load(tmp_path / "r" / "predictions.npz")
    test = saved["test_rows"]
    np.testing.assert_array_equal(test, _test_rows(small_sim))
    np.testing.assert_allclose(saved["V1"], run.predict(small_sim.stim[test])["V1"], rtol=1e-5,
                               atol=1e-5)


@pytest.fixture(scope="module")
def recovery_sim():
    return simulate(n_per_letter=40, n_voxels={"V1": 150, "V2": 100}, seed=11)


def test_receptive_field_centres_are_recovered(recovery_sim):
    """popeye-style parameter recovery: pRF centres of well-predicted V1 voxels."""
    sim = recovery_sim
    cfg = default_config(15)
    run, _, _ = train_run(sim.stim, sim.responses, None, cfg, _test_rows(sim), progress=False)
    test = _test_rows(sim)
    pred = run.predict(sim.stim[test])
    r = pearson_r(pred["V1"], sim.responses["V1"][test])
    rec = prf_recovery(receptive_fields(run.model, "V1"), sim.truth["V1"], r > 0.3)
    assert rec["n_voxels"] >= 100
    assert rec["median_centre_error_px"] < 3.0
