"""`niflow simulate` + `niflow train` + `niflow evaluate` end to end on the real BRAINS stimuli."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.io


def niflow(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "niflow.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"niflow {args[0]} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_train_on_real_brains_stimuli_with_simulated_responses(brains_stim_path, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    niflow("simulate", data, "--stim", brains_stim_path, "--v1", 120, "--v2", 90, "--seed", 2)
    proc = niflow("train", "--stim", brains_stim_path, "--bold", data / "bold.mat", "--out",
                  run, "--test-rows", "288:360", "--epochs", 8, "--quiet")
    assert "V1" in proc.stdout and "V2" in proc.stdout

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test_rows"] == 72
    for area, n in (("V1", 120), ("V2", 90)):
        m = metrics["areas"][area]
        assert m["n_voxels"] == n
        assert m["median_r"] > 0.5  # simulated voxels are well above noise after 8 epochs
        assert set(m) >= {"median_r", "mean_r", "frac_r_above_0.3"}

    rows = list(csv.DictReader((run / "voxels.csv").open()))
    assert len(rows) == 210
    v1 = [r for r in rows if r["area"] == "V1"]
    assert [int(r["voxel"]) for r in v1] == list(range(120))
    xs = np.array([float(r["prf_x"]) for r in rows])
    assert np.all((xs > -1) & (xs < 56))  # stimulus pixel coordinates

    split = json.loads((run / "split.json").read_text())
    assert split["test"] == list(range(288, 360))
    assert not set(split["test"]) & set(split["train"] + split["val"])

    pred = np.load(run / "predictions.npz")
    assert pred["V1"].shape == (72, 120) and pred["V2"].shape == (72, 90)
    np.testing.assert_array_equal(pred["test_rows"], np.arange(288, 360))

    params = scipy.io.loadmat(run / "modelparams.mat")
    assert params["prf_centre_V1"].shape == (120, 2)  # the default's Gaussian readouts
    assert params["prf_sigma_V2"].size == 90
    assert params["Uc_V2"].shape[1] == 90
    assert params["convW_V1"].ndim == 4
    for fig in ("rf_V1.png", "rf_V2.png", "kernels_V1.png", "training.png"):
        assert (run / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = niflow("evaluate", run, "--stim", brains_stim_path, "--bold", data / "bold.mat",
                 "--rows", "288:360", "--json", tmp_path / "eval.json")
    scores = json.loads((tmp_path / "eval.json").read_text())
    for area in ("V1", "V2"):
        assert scores[area]["median_r"] == pytest.approx(metrics["areas"][area]["median_r"],
                                                         abs=1e-4)
    assert "V2" in out.stdout
