"""``niflow cv`` on the command line, and the honest ``--test-rows`` default of ``niflow
train`` / ``niflow baseline``: 288:360 only for the 360 rows of the BRAINS layout (said when
used), otherwise a one-line error asking for --test-rows.

Every invocation runs in its own process (forked from one driver, ``tests/_cli.py``).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io

from _cli import run_many, snapshot
from niflow.data.errors import DataError
from niflow.data.simulate import simulate

NOTE = "test rows: 288:360 (BRAINS layout; pass --test-rows to change)"
# one thread: two spin against each other on a busy 2-core machine (5x slower folds)
ONE_THREAD = "import torch; torch.set_num_threads(1)\n"
# The --test-rows default is decided before training; these stand-ins for the two training
# entry points report what the command line handed them (after the real validation of the
# files, for train_inputs) and stop, so that no model is trained.
STOP_TRAINING = ONE_THREAD + """
import sys
import niflow.runs.pipeline

def _report(rows, on_start):
    on_start()
    print("TEST ROWS", list(map(int, rows)))
    sys.stdout.flush()
    sys.exit(0)

def train_inputs(inputs, out, *, on_start=None, **kwargs):
    _report(inputs.split.test, on_start)

def train_stream(stim, bold, out, cfg, test_rows, *, on_start=None, **kwargs):
    from niflow.data.validate import check_row_indices
    _report(check_row_indices(test_rows, 360), on_start)

niflow.runs.pipeline.train_inputs = train_inputs
niflow.runs.pipeline.train_stream = train_stream
"""


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_cv")
    sim = simulate(n_per_letter=8, n_voxels={"V1": 30, "V2": 20}, seed=5)  # 48 rows
    scipy.io.savemat(d / "stim.mat", {"stim": sim.stim, "labels": sim.labels})
    scipy.io.savemat(d / "bold.mat", sim.responses)
    letters = np.array(list("BRAINS"))[sim.labels]
    (d / "letters.txt").write_text("\n".join(letters) + "\n")
    (d / "short.txt").write_text(" ".join(letters[:-1]) + "\n")
    with h5py.File(d / "stim.h5", "w") as fh:
        fh["stim"] = sim.stim
    with h5py.File(d / "bold.h5", "w") as fh:
        for area, r in sim.responses.items():
            fh[area] = r
    # the BRAINS layout: 360 rows (small images and few voxels: quick to train)
    rng = np.random.default_rng(0)
    brains_stim = rng.integers(0, 256, (360, 28, 28), dtype=np.uint8)
    brains_bold = {"V1": rng.normal(size=(360, 4)).astype(np.float32)}
    scipy.io.savemat(d / "brains_stim.mat", {"stim": brains_stim})
    scipy.io.savemat(d / "brains_bold.mat", brains_bold)
    with h5py.File(d / "brains_stim.h5", "w") as fh:
        fh["stim"] = brains_stim
    with h5py.File(d / "brains_bold.h5", "w") as fh:
        fh["V1"] = brains_bold["V1"]
    (d / "existing").mkdir()
    (d / "existing" / "notes.txt").write_text("keep me\n")
    before = snapshot(d / "existing")

    def cv(out, *extra):
        return ["cv", "--stim", d / "stim.mat", "--bold", d / "bold.mat", "--out", d / out,
                "--epochs", "1", "--quiet", *extra]

    def train(stim, bold, out, *extra):
        return ["train", "--stim", d / stim, "--bold", d / bold, "--out", d / out,
                "--epochs", "1", "--quiet", *extra]

    jobs = {
        "help": ["cv", "--help"],
        "cv_file_groups": cv("CV", "--k", "3", "--groups", d / "letters.txt"),
        "cv_variable_groups": cv("CV2", "--k", "2", "--groups", "labels", "--baselines",
                                 "none", "--seed", "7"),
        "err:k_groups": cv("E1", "--k", "7", "--groups", "labels"),
        "err:variable": cv("E2", "--groups", "nope"),
        "err:length": cv("E3", "--k", "3", "--groups", d / "short.txt"),
        "err:baselines": cv("E4", "--baselines", "pixels,hog"),
        "err:exists": cv("existing", "--k", "3"),
        "err:k1": cv("E5", "--k", "1"),
        "err:small_folds": cv("E6", "--k", "20"),
        "err:train_auto": train("stim.mat", "bold.mat", "R1"),
        "err:stream_auto": train("stim.h5", "bold.h5", "R2", "--stream"),
        "err:baseline_auto": ["baseline", "--stim", d / "stim.mat", "--bold", d / "bold.mat",
                              "--out", d / "B1", "--permutations", "10"],
        "brains": train("brains_stim.mat", "brains_bold.mat", "RB"),
        "brains_stream": train("brains_stim.h5", "brains_bold.h5", "RS", "--stream"),
        "explicit": train("brains_stim.mat", "brains_bold.mat", "RE", "--test-rows", "0:60"),
    }
    setup = {name: STOP_TRAINING if name in STOPPED else ONE_THREAD for name in jobs}
    return {"dir": d, "res": run_many(jobs, d, setup), "sim": sim, "existing": before}


STOPPED = ("brains", "brains_stream", "explicit")


def _error(cli, name: str, command: str, *fragments) -> str:
    res = cli["res"][name]
    assert res.rc == 2, (res.rc, res.stderr[-2000:])
    assert res.stdout == "" and "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"niflow {command}: error:"), lines[0]
    for frag in fragments:
        assert str(frag) in lines[0], (frag, lines[0])
    return lines[0]


def test_cv_help(cli):
    res = cli["res"]["help"]
    assert res.rc == 0 and res.stdout.startswith("usage: niflow cv")
    for option in ("--stim", "--bold", "--out", "--k", "--groups", "--config", "--preset",
                   "--seed", "--baselines", "--epochs", "--force", "--quiet"):
        assert option in res.stdout, option


def test_cv_with_a_label_file(cli):
    res = cli["res"]["cv_file_groups"]
    assert res.rc == 0, res.stderr[-3000:]
    out = cli["dir"] / "CV"
    info = json.loads((out / "cv.json").read_text())
    assert info["k"] == 3 and info["groups"] == {"n_groups": 6,
                                                  "source": str(cli["dir"] / "letters.txt")}
    folds = np.array(info["folds"])
    labels = cli["sim"].labels
    for g in range(6):
        assert np.unique(folds[labels == g]).size == 1
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 1
    pred = np.load(out / "cv_predictions.npz")
    assert pred["V1"].shape == (48, 30) and pred["gabor_V2"].shape == (48, 20)
    # the table: one line per area with niflow and both baselines, the numbers of cv.json
    lines = res.stdout.splitlines()
    assert "3-fold cross-validation of 48 rows, 6 groups kept whole" in lines[0]
    header = lines[1].split()
    assert header[:2] == ["area", "voxels"] and "niflow" in header and "gabor" in header
    for area, nv in (("V1", 30), ("V2", 20)):
        row = next(line for line in lines if line.startswith(area + " ")).split()
        assert int(row[1]) == nv
        s = info["areas"][area]
        expected = [s[m][key] for m in ("niflow", "pixels", "gabor")
                    for key in ("median_r", "frac_r_above_0.3")]
        np.testing.assert_allclose([float(v) for v in row[2:]], expected, atol=0.006)
    assert "wrote" in lines[-1]


def test_cv_with_a_variable_of_the_stimulus_file(cli):
    res = cli["res"]["cv_variable_groups"]
    assert res.rc == 0, res.stderr[-3000:]
    info = json.loads((cli["dir"] / "CV2" / "cv.json").read_text())
    assert info["k"] == 2 and info["seed"] == 7 and info["baselines"] == []
    assert info["groups"]["source"].endswith("stim.mat:labels")
    assert set(info["areas"]["V1"]) >= {"niflow"} and "pixels" not in info["areas"]["V1"]
    assert "pixels" not in res.stdout and "niflow r" in res.stdout


@pytest.mark.parametrize(("name", "fragments"), [
    ("err:k_groups", ["k = 7", "only 6 groups"]),
    ("err:variable", ["'nope'", "stim.mat", "labels"]),
    ("err:length", ["short.txt", "shape (47,)", "48"]),
    ("err:baselines", ["hog", "pixels, gabor"]),
    ("err:exists", ["existing", "not empty", "--force"]),
    ("err:k1", ["at least 2 folds"]),
    ("err:small_folds", ["20 folds of 48 rows", "smaller k"]),
])
def test_cv_errors_are_one_line(cli, name, fragments):
    _error(cli, name, "cv", *fragments)
    assert not (cli["dir"] / f"E{name}").exists()
    assert snapshot(cli["dir"] / "existing") == cli["existing"]


@pytest.mark.parametrize(("name", "command", "stim"), [
    ("err:train_auto", "train", "stim.mat"),
    ("err:stream_auto", "train", "stim.h5"),
    ("err:baseline_auto", "baseline", "stim.mat"),
])
def test_without_brains_layout_test_rows_must_be_given(cli, name, command, stim):
    msg = _error(cli, name, command, cli["dir"] / stim, "48 samples", "--test-rows",
                 "--test-rows 38:48", "niflow cv")
    assert "288:360" not in msg
    for out in ("R1", "R2", "B1"):
        assert not (cli["dir"] / out).exists()


@pytest.mark.parametrize("name", ["brains", "brains_stream"])
def test_brains_layout_takes_288_360_and_says_so(cli, name):
    res = cli["res"][name]
    assert res.rc == 0, res.stderr[-3000:]
    assert res.stdout.splitlines() == [NOTE, f"TEST ROWS {list(range(288, 360))}"]


def test_explicit_test_rows_are_used_silently(cli):
    res = cli["res"]["explicit"]
    assert res.rc == 0, res.stderr[-3000:]
    assert res.stdout.splitlines() == [f"TEST ROWS {list(range(60))}"]


def test_auto_test_rows_in_the_python_checks():
    from niflow import preset
    from niflow.data.dataset import auto_test_rows
    from niflow.runs.inputs import check_arrays

    assert auto_test_rows(360) == "288:360"
    with pytest.raises(DataError, match=r"x\.mat: 100 samples.*--test-rows 80:100.*niflow cv"):
        auto_test_rows(100, "x.mat")
    rng = np.random.default_rng(1)
    stim = rng.integers(0, 256, (360, 28, 28), dtype=np.uint8)
    checked = check_arrays(stim, {"V1": rng.normal(size=(360, 3))}, preset("default"), "auto")
    np.testing.assert_array_equal(checked.split.test, np.arange(288, 360))
    with pytest.raises(DataError, match="stimuli: 359 samples"):
        check_arrays(stim[1:], {"V1": rng.normal(size=(359, 3))}, preset("default"), "auto")
