"""The ``niflow`` command: help texts, clean one-line errors (exit 2, no traceback, no run
folder) and one tiny successful train + evaluate.

Every invocation is a separate process running ``niflow.cli`` as ``__main__`` (see
``tests/_cli.py``: the help and error invocations share one start-up through a forking
driver). One error case (compared with its forked twin), the training run and the evaluation
run are plain ``[sys.executable, "-m", "niflow.cli", ...]`` subprocesses.

More bad inputs (transposed arrays, NaN stimuli, unusable voxels, geometry, memory, ...) are
in ``tests/test_validation_cli.py``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from _cli import finish, run_many, snapshot, start

N, NV1, NV2 = 40, 10, 4


# --------------------------------------------------------------------------- inputs and runs

HELP = {
    "": ["simulate", "train", "cv", "evaluate", "demo", "config", "--version"],
    "simulate": ["--n-per-letter", "--stim", "--v1", "--v2", "--seed", "--output-exponent",
                 "--reliability"],
    "train": ["--stim", "--bold", "--out", "--config", "--preset", "--test-rows",
              "--train-rows", "--epochs", "--batch-size", "--lr", "--seed", "--resume",
              "--force", "--no-memory-check", "--quiet"],
    "evaluate": ["--stim", "--bold", "--rows", "--json"],
    "demo": ["--out", "--preset", "--n-per-letter", "--epochs", "--seed", "--quiet"],
    "config": ["--preset"],
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Write the inputs, run every invocation (concurrently where independent)."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    stim = rng.integers(0, 256, (N, 56, 56), dtype=np.uint8)
    bold = {"V1": rng.normal(size=(N, NV1)), "V2": rng.normal(size=(N, NV2))}
    scipy.io.savemat(d / "stim.mat", {"stim": stim})
    scipy.io.savemat(d / "bold.mat", bold)
    scipy.io.savemat(d / "bold_v7.mat", {"V1": bold["V1"], "V7": rng.normal(size=(N, 3))})
    scipy.io.savemat(d / "bold_rows.mat", {"V1": bold["V1"][:30]})
    scipy.io.savemat(d / "images.mat", {"images": stim})
    (d / "corrupt.mat").write_bytes(rng.integers(0, 256, 2048, np.uint8).tobytes())
    (d / "bad_key.json").write_text(json.dumps({"train": {"epochs": 1}, "colour": "red"}))
    (d / "bad_area.json").write_text(json.dumps({"areas": [{"name": "V1", "kernal": 3}]}))
    (d / "own_v2.json").write_text(json.dumps({"areas": [
        {"name": "V1"}, {"name": "V2", "sources": ["V1"], "channels": 4}]}))
    exist = d / "existing"
    exist.mkdir()
    (exist / "notes.txt").write_text("my earlier run\n")
    (exist / "model.pt").write_bytes(b"\x00weights\x01" * 10)
    (exist / "figures").mkdir()
    (exist / "figures" / "rf_V1.png").write_bytes(b"\x89PNG fake")
    before_exist = snapshot(exist)
    (d / "a_file").write_text("not a folder\n")

    def train(stim_path, bold_path, out, *extra):
        return ["train", "--stim", d / stim_path, "--bold", d / bold_path, "--out", d / out,
                "--test-rows", "30:40", "--epochs", "1", "--quiet", *extra]

    errors = {
        "rows": train("stim.mat", "bold_rows.mat", "run_rows"),
        "missing_stim": train("nope.mat", "bold.mat", "run_missing_stim"),
        "missing_bold": train("stim.mat", "nope_bold.mat", "run_missing_bold"),
        "missing_variable": train("images.mat", "bold.mat", "run_missing_variable"),
        "corrupt_bold": train("stim.mat", "corrupt.mat", "run_corrupt"),
        "config_key": train("stim.mat", "bold.mat", "run_config_key", "--config",
                            d / "bad_key.json"),
        "config_area_key": train("stim.mat", "bold.mat", "run_config_area_key", "--config",
                                 d / "bad_area.json"),
        "missing_config": train("stim.mat", "bold.mat", "run_missing_config", "--config",
                                d / "nope.json"),
        "bad_epochs": train("stim.mat", "bold.mat", "run_bad_epochs") + ["--epochs", "0"],
        "test_rows": train("stim.mat", "bold.mat", "run_test_rows") + ["--test-rows", "30:50"],
        "test_rows_text": train("stim.mat", "bold.mat", "run_test_rows_text")
        + ["--test-rows", "thirty"],
        "test_rows_step": train("stim.mat", "bold.mat", "run_test_rows_step")
        + ["--test-rows", "0:40:0"],
        "test_rows_empty": train("stim.mat", "bold.mat", "run_test_rows_empty")
        + ["--test-rows", "30:30"],
        "exists": train("stim.mat", "bold.mat", "existing"),
        "out_is_file": train("stim.mat", "bold.mat", "a_file"),
        "out_under_file": train("stim.mat", "bold.mat", "a_file/run"),
    }
    jobs = {f"help:{cmd}": ([cmd, "--help"] if cmd else ["--help"]) for cmd in HELP}
    jobs.update({f"error:{k}": v for k, v in errors.items()})
    jobs["config_cmd_error"] = ["config", d / "bad_key.json"]
    jobs["config_cmd_dropped"] = ["config", d / "own_v2.json"]
    jobs["evaluate_not_a_run"] = ["evaluate", d / "existing_missing", "--stim", d / "stim.mat",
                                  "--bold", d / "bold.mat"]

    real_train = start(d, "train", "--stim", "stim.mat", "--bold", "bold.mat", "--out", "RUN",
                       "--test-rows", "30:40", "--epochs", "1", "--quiet")
    real_error = start(d, *train("nope.mat", "bold.mat", "run_real_error"))
    results = run_many(jobs, d)
    results["real:error"] = finish(real_error)
    results["train"] = finish(real_train)
    if results["train"].rc == 0:
        results["evaluate"] = finish(start(
            d, "evaluate", "RUN", "--stim", "stim.mat", "--bold", "bold.mat", "--rows",
            "30:40", "--json", "out.json"))
        results["evaluate_runs"] = finish(start(
            d, "evaluate", "RUN", "--stim", "stim.mat", "--bold", "bold.mat", "--runs", "2"))
        # training adds a response area the config lacks; a trained model cannot predict it
        results["error:areas"] = finish(start(
            d, "evaluate", "RUN", "--stim", "stim.mat", "--bold", "bold_v7.mat", "--rows",
            "30:40", "--json", "areas.json"))
    return {"dir": d, "results": results, "bold": bold, "exist_before": before_exist}


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("cmd", list(HELP))
def test_help(cli, cmd):
    res = cli["results"][f"help:{cmd}"]
    assert res.rc == 0, res.stderr
    assert res.stderr == ""
    assert res.stdout.startswith(f"usage: niflow {cmd}".rstrip())
    for option in HELP[cmd]:
        assert option in res.stdout, option
    assert "-h, --help" in res.stdout


# --------------------------------------------------------------------------- errors


def _check_error(cli, name: str, *fragments, command: str = "train") -> str:
    res = cli["results"][name]
    assert res.rc == 2, (res.rc, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"niflow {command}: error:"), lines[0]
    for frag in fragments:
        assert str(frag) in lines[0], (frag, lines[0])
    return lines[0]


def _no_run_folder(cli, out: str) -> None:
    assert not (cli["dir"] / out).exists()


def test_mismatched_area_names(cli):
    msg = _check_error(cli, "error:areas", "V7", "'V1'", "'V2'", "bold_v7.mat",
                       command="evaluate")
    assert "V7" in msg.split("config")[0]  # the unknown area is named before the config's
    assert not (cli["dir"] / "areas.json").exists()


def test_row_counts_disagree(cli):
    _check_error(cli, "error:rows", "V1", "30", "40")
    _no_run_folder(cli, "run_rows")


def test_missing_stim_file(cli):
    _check_error(cli, "error:missing_stim", cli["dir"] / "nope.mat", "not found")
    _no_run_folder(cli, "run_missing_stim")


def test_missing_stim_file_real_process(cli):
    res = cli["results"]["real:error"]
    assert res.rc == 2
    assert res.stderr == cli["results"]["error:missing_stim"].stderr
    _no_run_folder(cli, "run_real_error")


def test_missing_bold_file(cli):
    _check_error(cli, "error:missing_bold", cli["dir"] / "nope_bold.mat", "not found")
    _no_run_folder(cli, "run_missing_bold")


def test_missing_variable(cli):
    _check_error(cli, "error:missing_variable", "'stim'", "images", cli["dir"] / "images.mat")
    _no_run_folder(cli, "run_missing_variable")


def test_corrupt_response_file(cli):
    _check_error(cli, "error:corrupt_bold", cli["dir"] / "corrupt.mat")
    _no_run_folder(cli, "run_corrupt")


def test_config_unknown_key(cli):
    _check_error(cli, "error:config_key", "colour", "bad_key.json")
    _no_run_folder(cli, "run_config_key")


def test_config_unknown_area_key(cli):
    _check_error(cli, "error:config_area_key", "kernal", "bad_area.json")
    _no_run_folder(cli, "run_config_area_key")


def test_missing_config_file(cli):
    _check_error(cli, "error:missing_config", "nope.json")
    _no_run_folder(cli, "run_missing_config")


def test_invalid_command_line_value(cli):
    _check_error(cli, "error:bad_epochs", "epochs")
    _no_run_folder(cli, "run_bad_epochs")


def test_test_rows_out_of_bounds(cli):
    _check_error(cli, "error:test_rows", "30:50", "50")
    _no_run_folder(cli, "run_test_rows")


def test_test_rows_garbage(cli):
    _check_error(cli, "error:test_rows_text", "thirty")
    _no_run_folder(cli, "run_test_rows_text")


def test_test_rows_empty(cli):
    _check_error(cli, "error:test_rows_empty", "30:30", "selects no rows")
    _no_run_folder(cli, "run_test_rows_empty")


def test_test_rows_zero_step(cli):
    _check_error(cli, "error:test_rows_step", "0:40:0")
    _no_run_folder(cli, "run_test_rows_step")


def test_existing_run_folder_needs_force(cli):
    _check_error(cli, "error:exists", "--force", cli["dir"] / "existing")
    assert snapshot(cli["dir"] / "existing") == cli["exist_before"]


@pytest.mark.parametrize("case", ["out_is_file", "out_under_file"])
def test_out_is_not_a_folder(cli, case):
    _check_error(cli, f"error:{case}", "a_file")
    assert (cli["dir"] / "a_file").read_text() == "not a folder\n"


def test_config_command_error(cli):
    _check_error(cli, "config_cmd_error", "colour", "bad_key.json", command="config")


def test_config_command_refuses_areas_selection_would_drop(cli):
    _check_error(cli, "config_cmd_dropped", "own_v2.json", "V1 and V2 set differently",
                 '"candidates": []', command="config")


def test_evaluate_without_run(cli):
    _check_error(cli, "evaluate_not_a_run", "existing_missing", command="evaluate")


def test_evaluate_runs_is_for_movie_runs(cli):
    assert cli["results"]["train"].rc == 0, cli["results"]["train"].stderr
    _check_error(cli, "evaluate_runs", "--runs is for movie runs", "use --rows",
                 command="evaluate")


# --------------------------------------------------------------------------- a tiny real run


def _voxels(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (run / "voxels.csv").open(newline="") as fh:
        header = fh.readline().rstrip("\n").split(",")
    with (run / "voxels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return header, rows


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def test_train_writes_run_folder(cli):
    res = cli["results"]["train"]
    assert res.rc == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    run = cli["dir"] / "RUN"
    for name in ("config.json", "model.pt", "metrics.json", "voxels.csv", "predictions.npz",
                 "modelparams.mat", "figures/rf_V1.png"):
        assert (run / name).is_file(), name
    assert (run / "figures" / "rf_V1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 1

    header, rows = _voxels(run)
    # the contract's first seven columns; science outputs append more (tests/test_report.py)
    assert header[:7] == ["area", "voxel", "r_test", "r2_test", "prf_x", "prf_y", "prf_sigma"]
    assert [(r["area"], int(r["voxel"])) for r in rows] == (
        [("V1", j) for j in range(NV1)] + [("V2", j) for j in range(NV2)])

    # held-out r and R² recomputed from the saved predictions and the input responses
    pred = np.load(run / "predictions.npz")
    np.testing.assert_array_equal(pred["test_rows"], np.arange(30, 40))
    bold = cli["bold"]
    for area, nv in (("V1", NV1), ("V2", NV2)):
        assert pred[area].shape == (10, nv)
        true = bold[area][30:40]
        r_csv = np.array([float(r["r_test"]) for r in rows if r["area"] == area])
        r2_csv = np.array([float(r["r2_test"]) for r in rows if r["area"] == area])
        r_ref = np.array([_pearson(pred[area][:, j], true[:, j]) for j in range(nv)])
        resid = ((true - pred[area]) ** 2).sum(0)
        r2_ref = 1 - resid / ((true - true.mean(0)) ** 2).sum(0)
        np.testing.assert_allclose(r_csv, r_ref, atol=1e-4)
        np.testing.assert_allclose(r2_csv, r2_ref, rtol=1e-4, atol=1e-4)

    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["areas"]) == {"V1", "V2"}
    for area, nv in (("V1", NV1), ("V2", NV2)):
        m = metrics["areas"][area]
        r = np.array([float(x["r_test"]) for x in rows if x["area"] == area])
        assert m["n_voxels"] == nv
        assert m["median_r"] == pytest.approx(np.median(r), abs=1e-5)
        assert m["mean_r"] == pytest.approx(r.mean(), abs=1e-5)
        assert m["frac_r_above_0.3"] == pytest.approx((r > 0.3).mean())

    params = scipy.io.loadmat(run / "modelparams.mat")
    assert params["Uc_V1"].shape[1] == NV1
    assert "V1" in res.stdout and "V2" in res.stdout


def test_evaluate_matches_training_scores(cli):
    assert cli["results"]["train"].rc == 0, "training failed; see test_train_writes_run_folder"
    res = cli["results"]["evaluate"]
    assert res.rc == 0, res.stderr[-3000:]
    scores = json.loads((cli["dir"] / "out.json").read_text())
    _, rows = _voxels(cli["dir"] / "RUN")
    for area, nv in (("V1", NV1), ("V2", NV2)):
        r_csv = [float(r["r_test"]) for r in rows if r["area"] == area]
        assert len(scores[area]["r"]) == nv
        np.testing.assert_allclose(scores[area]["r"], r_csv, atol=1e-4)
        assert scores[area]["n_voxels"] == nv
