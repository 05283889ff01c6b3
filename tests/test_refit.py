"""The readout refit after training: GCV ridge against a naive per-voxel reference, weight
recovery on a model's own features, and its place at the end of ``train_run``."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from niflow import config as cfgmod
from niflow.data.simulate import simulate
from niflow.data.stream import open_streaming
from niflow.model.nif import NIFModel
from niflow.model.refit import REFIT_ALPHAS, ChannelMoments, ridge_gcv
from niflow.runs.pipeline import train_run, train_stream


def naive_gcv_ridge(x, y, alphas):
    """One voxel: explicit hat matrix with an intercept, GCV = n·RSS / (n − tr H)²."""
    n, c = x.shape
    xc, yc = x - x.mean(0), y - y.mean()
    scale = np.trace(xc.T @ xc) / c
    best = (np.inf, None, None)
    for a in alphas:
        inv = np.linalg.inv(xc.T @ xc + a * scale * np.eye(c))
        hat = xc @ inv @ xc.T + np.full((n, n), 1.0 / n)
        resid = y - hat @ y
        gcv = n * (resid @ resid) / (n - np.trace(hat)) ** 2
        if gcv < best[0]:
            best = (gcv, a, inv @ xc.T @ yc)
    _, a, w = best
    return w, y.mean() - x.mean(0) @ w, a


def test_gcv_ridge_matches_naive_reference_batch_by_batch():
    rng = np.random.default_rng(0)
    n, c, v = 40, 5, 6
    pooled = rng.normal(size=(n, c, v)) + rng.normal(size=(1, c, v))  # non-zero means
    true = rng.normal(size=(c, v)) * np.array([0.0, 0.05, 0.3, 1.0, 3.0, 0.5])
    y = np.einsum("ncv,cv->nv", pooled, true) + 2.0 + rng.normal(size=(n, v))
    moments = ChannelMoments.zeros(v, c)
    for part in np.array_split(np.arange(n), 3):  # several batches = one pass
        moments.add(torch.as_tensor(pooled[part]), torch.as_tensor(y[part]))
    weight, bias, alpha = ridge_gcv(moments)
    chosen = set()
    for j in range(v):
        w, b, a = naive_gcv_ridge(pooled[:, :, j], y[:, j], REFIT_ALPHAS)
        chosen.add(a)
        assert alpha[j].item() == pytest.approx(a)
        np.testing.assert_allclose(weight[:, j].numpy(), w, rtol=1e-8, atol=1e-10)
        assert bias[j].item() == pytest.approx(b, rel=1e-8)
    assert len(chosen) > 1  # the voxels' penalties differ: it is chosen per voxel


def test_moments_refuse_mismatched_shapes():
    moments = ChannelMoments.zeros(3, 2)
    with pytest.raises(ValueError, match=r"pooled channels \(4, 2, 3\) and responses \(4, 2\)"):
        moments.add(torch.zeros(4, 2, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 3 rows"):
        ridge_gcv(moments)


def _model(kind: str) -> NIFModel:
    cfg = cfgmod.preset("default")
    cfg.readout.kind = kind
    torch.manual_seed(0)
    return NIFModel(cfg.validate(), (1, 32, 32), {"V1": 30, "V2": 20})


def test_refit_recovers_the_responses_that_generated_the_data():
    model = _model("gaussian")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 1, 32, 32, generator=g)
    held = slice(300, 400)
    model.eval()  # predictions are made in eval mode (batch norm's running statistics)
    with torch.no_grad():
        feats = model.features(x)
        signal, y = {}, {}
        for a, ro in model.readouts.items():
            truth = torch.randn(ro.weight.shape, generator=g)
            signal[a] = torch.einsum("bcv,cv->bv", ro.pooled(feats[a]), truth) + 0.5
            noise = torch.randn(signal[a].shape, generator=g) * signal[a].std(0)
            y[a] = signal[a] + noise  # half the variance is noise
            ro.weight.zero_()  # nothing of the truth left in the model
    centres = {a: ro.centre.detach().clone() for a, ro in model.readouts.items()}
    model.train()
    batches = [slice(i, min(i + 64, 300)) for i in range(0, 300, 64)]  # the rows `fit`
    alphas = model.refit_readouts((({"stimulus": x[b]}, {a: v[b] for a, v in y.items()})
                                   for b in batches), 300)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        pred = model(x[held])
    for a, ro in model.readouts.items():
        assert alphas[a].shape == (ro.n_voxels,)
        r = [np.corrcoef(pred[a][:, v], signal[a][held, v])[0, 1] for v in range(ro.n_voxels)]
        # held-out prediction of the noise-free signal, against 0.71 for the noisy data
        assert np.median(r) > 0.95, (a, np.median(r))
        assert torch.equal(ro.centre.detach(), centres[a])  # pRFs are not refitted


def test_refit_leaves_lowrank_readouts_alone():
    model = _model("lowrank")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 1, 32, 32)
    out = model.refit_readouts([({"stimulus": x},
                                 {"V1": torch.randn(8, 30), "V2": torch.randn(8, 20)})], 8)
    assert out == {}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.fixture(scope="module")
def sim():
    # 204 images: 172 training and validation rows, enough for 16 channels per area
    return simulate(n_per_letter=34, n_voxels={"V1": 40, "V2": 30}, seed=4)


def _cfg(refit: bool):
    cfg = cfgmod.preset("default")
    cfg.train.epochs = 3
    cfg.readout.refit = refit
    cfg.select = cfgmod.SelectConfig(candidates=["learned-gaussian"], members=2)
    return cfg.validate()


def test_train_run_ends_with_the_refit_on_training_and_validation_rows(sim, tmp_path):
    test = "172:204"
    run, _, data = train_run(sim.stim, sim.responses, tmp_path / "r", _cfg(True), test,
                             progress=False)
    rows = np.sort(np.concatenate([data.split.train, data.split.val]))
    assert rows.size == 172 and run.model.readouts["V2"].channels == 16
    sel = json.loads((tmp_path / "r" / "selection.json").read_text())
    assert set(sel["refit_alpha"]) == {"V1", "V2"}
    assert all(len(v) == 2 for v in sel["refit_alpha"].values())  # both members
    x = torch.as_tensor(data.stim[rows])
    y = {a: torch.as_tensor(r[rows]) for a, r in data.responses.items()}
    for m in run.ensemble:
        before = {a: ro.weight.detach().clone() for a, ro in m.readouts.items()}
        m.refit_readouts([({"stimulus": x}, y)], rows.size)  # again: nothing changes
        for a, ro in m.readouts.items():
            torch.testing.assert_close(ro.weight.detach(), before[a], rtol=1e-4, atol=1e-5)
    # without the refit the weights are where training left them
    plain, _, _ = train_run(sim.stim, sim.responses, None, _cfg(False), test, progress=False)
    for a, ro in plain.model.readouts.items():
        assert not torch.allclose(ro.weight, run.model.readouts[a].weight, atol=1e-3)


def test_too_few_rows_per_channel_leave_the_trained_weights():
    model = _model("gaussian")  # 16 channels in V1 and V2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(159, 1, 32, 32)
    y = {"V1": torch.randn(159, 30), "V2": torch.randn(159, 20)}
    assert model.refit_readouts([({"stimulus": x}, y)], 159) == {}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert set(model.refit_readouts([({"stimulus": x}, y)], 159,
                                    min_rows_per_channel=5)) == {"V1", "V2"}


def test_a_streamed_run_is_refitted_on_rows_read_from_disk(sim, tmp_path):
    with h5py.File(tmp_path / "stim.h5", "w") as fh:
        fh.create_dataset("stim", data=sim.stim)
    with h5py.File(tmp_path / "bold.h5", "w") as fh:
        for area, r in sim.responses.items():
            fh.create_dataset(area, data=np.asarray(r, np.float32))
    cfg = _cfg(True)
    cfg.select = cfgmod.SelectConfig()  # streamed runs train one model
    cfg.train.epochs = 2
    run, _, _ = train_stream(tmp_path / "stim.h5", tmp_path / "bold.h5", None, cfg.validate(),
                             "172:204", progress=False, num_workers=0)
    data = open_streaming(tmp_path / "stim.h5", tmp_path / "bold.h5", np.arange(172, 204),
                          val_fraction=cfg.train.val_fraction, seed=cfg.train.seed,
                          num_workers=0)
    rows = np.sort(np.concatenate([data.split.train, data.split.val]))
    x, y = data.read(rows)
    before = {a: ro.weight.detach().clone() for a, ro in run.model.readouts.items()}
    run.model.refit_readouts([({"stimulus": torch.as_tensor(x)},
                               {a: torch.as_tensor(v) for a, v in y.items()})], rows.size)
    for a, ro in run.model.readouts.items():
        torch.testing.assert_close(ro.weight.detach(), before[a], rtol=1e-4, atol=1e-5)
