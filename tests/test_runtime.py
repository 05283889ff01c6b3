"""Runtime options of training: bf16 autocast, torch.compile and its fallback, streaming."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch

from _configs import default_config
from _threads import one_thread
from niflow.data.dataset import parse_rows
from niflow.data.simulate import simulate
from niflow.evaluate.statistics import pearson_r
from niflow.runs.pipeline import train_run, train_stream
from niflow.train.runtime import Runtime


@pytest.fixture(scope="module")
def sim():
    return simulate(n_per_letter=12, n_voxels={"V1": 60, "V2": 40}, seed=7)


def _test_r(run, sim, test):
    pred = run.predict(sim.stim[test])
    return {a: pearson_r(pred[a], sim.responses[a][test]) for a in pred}


def test_bfloat16_training_keeps_accuracy(sim):
    """bf16 autocast changes every product's rounding (8-bit mantissa). Over 10 epochs,
    per-voxel held-out r must stay close to float32 training: medians within 0.02, median
    |Δr| under 0.02, and for voxels the float32 model predicts (r > 0.3; elsewhere r is
    noise) the 90th percentile under 0.06 and the maximum under 0.1 (measured: 0.008,
    0.032 and 0.054 in V1, less in V2)."""
    n = sim.stim.shape[0]
    test = parse_rows(f"{n - 14}:{n}", n)
    with one_thread():
        run32, _, _ = train_run(sim.stim, sim.responses, None, default_config(10), test,
                                progress=False)
        run16, _, _ = train_run(sim.stim, sim.responses, None,
                                default_config(10, precision="bfloat16"), test, progress=False)
    r32, r16 = _test_r(run32, sim, test), _test_r(run16, sim, test)
    for area in r32:
        d = np.abs(r16[area] - r32[area])
        good = r32[area] > 0.3
        assert abs(np.median(r16[area]) - np.median(r32[area])) < 0.02
        assert np.median(d) < 0.02 and good.mean() > 0.5
        assert np.percentile(d[good], 90) < 0.06 and d[good].max() < 0.1
    # the weights did change: bf16 really ran
    w32 = run32.model.graph.areas["V1"].conv.weight
    w16 = run16.model.graph.areas["V1"].conv.weight
    assert not torch.equal(w32, w16)


def test_failed_compilation_falls_back_to_eager(sim, monkeypatch):
    """A torch.compile that fails at the first call (missing compiler, unsupported op) gives
    one warning and the eager result, bit for bit."""
    n = sim.stim.shape[0]
    test = parse_rows(f"{n - 14}:{n}", n)
    with one_thread():
        eager, _, _ = train_run(sim.stim, sim.responses, None, default_config(2), test,
                                progress=False, runtime=Runtime())

        class Broken(torch.nn.Module):
            def __init__(self, module):
                super().__init__()
                self.module = module

            def forward(self, *args, **kwargs):
                raise RuntimeError("inductor: no working C++ compiler")

        monkeypatch.setattr(torch, "compile", lambda m, **kw: Broken(m))
        with pytest.warns(RuntimeWarning, match="torch.compile failed .*no working C"):
            fallback, _, _ = train_run(sim.stim, sim.responses, None, default_config(2), test,
                                       progress=False, runtime=Runtime(compile=True))
    for k, v in eager.model.state_dict().items():
        assert torch.equal(v, fallback.model.state_dict()[k]), k


def test_streamed_training_matches_in_memory_training(sim, tmp_path):
    """Training from HDF5 through DataLoader workers sees the same batches as training in
    memory; only the float64 (streamed) vs float32 z-scoring statistics differ."""
    s, b = tmp_path / "stim.h5", tmp_path / "bold.h5"
    with h5py.File(s, "w") as fh:
        fh.create_dataset("stim", data=sim.stim, chunks=(8, *sim.stim.shape[1:]))
    with h5py.File(b, "w") as fh:
        for area, r in sim.responses.items():
            fh[area] = r
    n = sim.stim.shape[0]
    test = parse_rows(f"{n - 14}:{n}", n)
    with one_thread():
        mem, hist_m, _ = train_run(sim.stim, sim.responses, tmp_path / "mem",
                                   default_config(4), test, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no dropped voxels, no surprises
            st, hist_s, held = train_stream(s, b, tmp_path / "st", default_config(4),
                                            f"{n - 14}:{n}", num_workers=2, progress=False)
    np.testing.assert_array_equal(held.input_rows(held.split.test), test)
    assert hist_m.best_epoch == hist_s.best_epoch
    r_m, r_s = _test_r(mem, sim, test), _test_r(st, sim, test)
    for area in r_m:
        assert np.abs(r_m[area] - r_s[area]).max() < 2e-3
    pm = np.load(tmp_path / "mem" / "predictions.npz")
    ps = np.load(tmp_path / "st" / "predictions.npz")
    np.testing.assert_array_equal(pm["test_rows"], ps["test_rows"])
    for area in r_m:
        np.testing.assert_allclose(ps[area], pm[area], atol=2e-3 * np.abs(pm[area]).max())
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == \
        sorted(p.name for p in (tmp_path / "mem").iterdir())


def test_runtime_and_streaming_errors_are_one_line_and_write_nothing(sim, tmp_path):
    """Wrong --device, --stream on a non-HDF5 file, streamed files whose rows do not match,
    an unknown area in a streamed response file: exit 2, one line naming the problem, no run
    folder."""
    from _cli import run_many
    from niflow.data.io import save_mat

    save_mat(tmp_path / "stim.mat", {"stim": sim.stim})
    save_mat(tmp_path / "bold.mat", sim.responses)
    with h5py.File(tmp_path / "stim.h5", "w") as fh:
        fh["stim"] = sim.stim
    with h5py.File(tmp_path / "short.h5", "w") as fh:
        fh["V1"] = sim.responses["V1"][:-5]
    with h5py.File(tmp_path / "v7.h5", "w") as fh:
        fh["V 7"] = sim.responses["V1"]  # not an area name (a "V7" would be added)
    base = ["train", "--test-rows", "60:72", "--quiet"]
    jobs = {
        "cuda": [*base, "--stim", "stim.mat", "--bold", "bold.mat", "--out", "r1",
                 "--device", "cuda"],
        "device": [*base, "--stim", "stim.mat", "--bold", "bold.mat", "--out", "r2",
                   "--device", "tpu"],
        "not_hdf5": [*base, "--stim", "stim.mat", "--bold", "bold.mat", "--out", "r3",
                     "--stream"],
        "rows": [*base, "--stim", "stim.h5", "--bold", "short.h5", "--out", "r4", "--stream"],
        "area": [*base, "--stim", "stim.h5", "--bold", "v7.h5", "--out", "r5", "--stream"],
    }
    if torch.cuda.is_available():
        del jobs["cuda"]
    expected = {"cuda": "no usable CUDA GPU", "device": "--device 'tpu'",
                "not_hdf5": "stim.mat: streaming needs an HDF5 file",
                "rows": "short.h5: area 'V1' has 67 rows but the stimuli have 72",
                "area": "v7.h5: area variable(s) ['V 7'] cannot name areas"}
    results = run_many(jobs, tmp_path)
    for name, res in results.items():
        assert res.rc == 2, (name, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and expected[name] in lines[0], (name, res.stderr)
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 6))
