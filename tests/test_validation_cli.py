"""Bad input through the command line: one clear line, exit status 2, nothing written.

Each case runs ``niflow`` in its own process (forked from one driver that imported niflow
once, see ``tests/_cli.py``) and checks that stderr is exactly one line
``niflow <cmd>: error: ...`` naming the file and the variable, that stdout is empty, that no
run folder (nor a staging folder) appeared and that an existing run folder is unchanged, byte
for byte. The basic cases (missing files and variables, unknown areas, a plain row-count
mismatch, bad test-row specs, unknown config keys, an existing run folder) are in
``tests/test_cli_errors.py``.

One real training run reads responses with NaN, Inf and constant voxels: the user sees one
warning line per area with the right counts, and ``voxels.csv`` keeps the input's voxel
indices.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from _cli import finish, run_many, snapshot, start
from niflow.config import preset
from niflow.runs.inputs import check_arrays

N, NV1, NV2, SIZE = 40, 10, 4, 56
TEST = "30:40"
SMALL_MEMORY = 10 * 2**20
PRETEND_SMALL_MEMORY = (
    "import niflow.train.memory as r\n"
    f"r.available_memory = lambda device='cpu': {SMALL_MEMORY}\n")


def _write_inputs(d: Path) -> dict:
    rng = np.random.default_rng(4)
    stim = rng.integers(0, 256, (N, SIZE, SIZE), dtype=np.uint8)
    v1, v2 = rng.normal(size=(N, NV1)), rng.normal(size=(N, NV2))
    scipy.io.savemat(d / "stim.mat", {"stim": stim})
    scipy.io.savemat(d / "bold.mat", {"V1": v1, "V2": v2})

    # NaN/Inf and constant voxels, in training and in test rows
    v1n, v2n = v1.copy(), v2.copy()
    v1n[:, 2] = np.nan
    v1n[35, 5] = np.inf  # a test row: the voxel cannot be scored either
    v1n[:, 7] = 3.0
    v2n[4, 0] = np.nan
    scipy.io.savemat(d / "bold_nan.mat", {"V1": v1n, "V2": v2n})

    # MATLAB-style exports: images stacked on the last axis, voxels × samples
    scipy.io.savemat(d / "stim_T.mat", {"stim": stim.transpose(1, 2, 0)})
    scipy.io.savemat(d / "bold_T1.mat", {"V1": v1.T, "V2": v2})
    np.savez(d / "bold_T2.npz", V1=v1, V2=v2.T)
    scipy.io.savemat(d / "bold_bothT.mat", {"V1": v1.T, "V2": v2.T})

    np.savez(d / "stim_flat.npz", stim=stim.reshape(N, -1))
    np.savez(d / "stim_5d.npz", stim=stim[:, None, None])
    np.savez(d / "stim_text.npz", stim=np.array(["a", "b"]))
    np.savez(d / "stim_empty.npz", stim=stim[:0])
    fstim = stim.astype(np.float64)
    fstim[3, 2, 1] = np.nan
    fstim[17, 0, 0] = np.nan
    scipy.io.savemat(d / "stim_nan.mat", {"stim": fstim})
    istim = stim.astype(np.float32)
    istim[9, 5, 5] = -np.inf
    np.savez(d / "stim_inf.npz", stim=istim)
    np.savez(d / "stim_small.npz", stim=stim[:, :28, :28])

    scipy.io.savemat(d / "bold_allnan.mat", {"V1": np.full((N, NV1), np.nan), "V2": v2})
    scipy.io.savemat(d / "bold_const.mat", {"V1": v1, "V2": np.ones((N, NV2))})
    np.savez(d / "bold_novox.npz", V1=v1, V2=np.zeros((N, 0)))
    scipy.io.savemat(d / "bold_fewer.mat", {"V1": v1[:, :5], "V2": v2})
    (d / "data.txt").write_text("1 2 3\n")
    (d / "fake.h5").write_bytes(b"hello, not HDF5" * 10)
    (d / "folder.mat").mkdir()

    configs = {
        "rank_neg": {"readout": {"rank": -1}},
        "kernel_big": {"areas": [{"name": "V1", "kernel": 57, "padding": 0},
                                 {"name": "V2", "sources": ["V1"]}]},
        "pool_zero": {"preset": "basicnif", "areas": [
            {"name": f"V{i + 1}", "sources": ["stimulus" if i == 0 else f"V{i}"]}
            for i in range(6)]},
        "channels_type": {"areas": [{"name": "V1", "channels": "16"},
                                    {"name": "V2", "sources": ["V1"]}]},
        "areas_dropped": {"areas": [{"name": "V1", "channels": 8},
                                    {"name": "V2", "sources": ["V1"]}]},
        # trained as given (a selection's candidates would replace these areas)
        "huge": {"areas": [{"name": "V1", "channels": 10_000_000},
                           {"name": "V2", "sources": ["V1"]}], "select": {"candidates": []}},
    }
    for name, cfg in configs.items():
        (d / f"{name}.json").write_text(json.dumps(cfg))
    (d / "not_json.json").write_text("{oops")
    return {"v1": v1n, "v2": v2n}


def _train(d: Path, stim: str, bold: str, out: str, *extra) -> list:
    return ["train", "--stim", d / stim, "--bold", d / bold, "--out", d / out,
            "--test-rows", TEST, "--epochs", "1", "--quiet", *extra]


# name -> (stim, bold, extra arguments, fragments the one-line message must contain)
TRAIN_ERRORS = {
    # files of the wrong kind
    "unsupported_type": ("data.txt", "bold.mat", [], ["data.txt", "unsupported file type"]),
    "not_hdf5": ("stim.mat", "fake.h5", [], ["fake.h5", "not an HDF5 file"]),
    "folder": ("folder.mat", "bold.mat", [], ["folder.mat", "not a file"]),
    "bold_as_stim": ("bold.mat", "bold.mat", [], ["bold.mat", "'stim'", "response file"]),
    "stim_as_bold": ("stim.mat", "stim.mat", [], ["stim.mat", "'stim'", "stimulus file"]),
    # stimuli that are not one image per row
    "stim_flat": ("stim_flat.npz", "bold.mat", [],
                  ["stim_flat.npz", "'stim'", f"({N}, {SIZE * SIZE})", "reshape flattened"]),
    "stim_5d": ("stim_5d.npz", "bold.mat", [], ["stim_5d.npz", "'stim'", "expected images"]),
    "stim_text": ("stim_text.npz", "bold.mat", [], ["stim_text.npz", "'stim'", "numeric"]),
    "stim_empty": ("stim_empty.npz", "bold.mat", [], ["stim_empty.npz", "'stim'", "no images"]),
    "stim_nan": ("stim_nan.mat", "bold.mat", [],
                 ["stim_nan.mat", "'stim'", "NaN or Inf in 2 image(s)", "row 3"]),
    "stim_inf": ("stim_inf.npz", "bold.mat", [],
                 ["stim_inf.npz", "'stim'", "NaN or Inf in 1 image(s)", "row 9"]),
    # transposed exports
    "stim_transposed": ("stim_T.mat", "bold.mat", [],
                        ["stim_T.mat", "'stim'", f"({SIZE}, {SIZE}, {N})", "looks transposed",
                         f"({N}, {SIZE}, {SIZE})", "stim.transpose(2, 0, 1)"]),
    "bold_transposed": ("stim.mat", "bold_T1.mat", [],
                        ["bold_T1.mat", "'V1'", f"({NV1}, {N})", "looks transposed",
                         f"({N}, {NV1})", "V1.T"]),
    "second_area_transposed": ("stim.mat", "bold_T2.npz", [],
                               ["bold_T2.npz", "'V2'", f"({NV2}, {N})", "looks transposed"]),
    "all_transposed": ("stim_T.mat", "bold_bothT.mat", [],
                       ["stim_T.mat", "'stim'", "looks transposed"]),
    # unusable areas
    "area_all_nan": ("stim.mat", "bold_allnan.mat", [],
                     ["bold_allnan.mat", "'V1'", f"none of its {NV1} voxels",
                      f"{NV1} with NaN/Inf"]),
    "area_constant": ("stim.mat", "bold_const.mat", [],
                      ["bold_const.mat", "'V2'", f"none of its {NV2} voxels",
                       f"{NV2} constant"]),
    "area_no_voxels": ("stim.mat", "bold_novox.npz", [],
                       ["bold_novox.npz", "'V2'", "no voxels"]),
    # rows
    "rows_overlap": ("stim.mat", "bold.mat", ["--train-rows", "0:32"],
                     ["train rows and test rows share 2 row(s) (30, 31)"]),
    "train_rows_outside": ("stim.mat", "bold.mat", ["--train-rows", "0:45"],
                           ["train rows '0:45'", "45"]),
    "too_few_training_rows": ("stim.mat", "bold.mat", ["--test-rows", "2:40"],
                              ["only 2 training rows", "validation"]),
    # configuration
    "rank_negative": ("stim.mat", "bold.mat", ["--config", "{d}/rank_neg.json"],
                      ["rank_neg.json", "rank", "-1"]),
    "kernel_too_big": ("stim.mat", "bold.mat", ["--config", "{d}/kernel_big.json"],
                       ["kernel_big.json", "'V1'", "kernel 57", "larger than its input grid",
                        f"{SIZE}x{SIZE}"]),
    "pool_to_zero": ("stim.mat", "bold.mat", ["--config", "{d}/pool_zero.json"],
                     ["pool_zero.json", "'V6'", "shrinks grid"]),
    "wrong_type": ("stim.mat", "bold.mat", ["--config", "{d}/channels_type.json"],
                   ["channels_type.json", "channels", "str"]),
    "not_json": ("stim.mat", "bold.mat", ["--config", "{d}/not_json.json"],
                 ["not_json.json", "JSON"]),
    "negative_batch": ("stim.mat", "bold.mat", ["--batch-size", "-4"], ["batch_size", "-4"]),
    "areas_dropped": ("stim.mat", "bold.mat", ["--config", "{d}/areas_dropped.json"],
                      ["areas_dropped.json", "V1 and V2 set differently", "select.candidates",
                       '"candidates": []']),
    # memory
    "memory_impossible": ("stim.mat", "bold.mat", ["--config", "{d}/huge.json"],
                          ["training needs about", "TiB", "available", "--batch-size"]),
    "memory_small": ("stim.mat", "bold.mat", [],
                     ["training needs about", "MiB", "10.0 MiB is available",
                      "--no-memory-check"]),
}

# cases against the trained run folder RUN: (arguments, fragments, command)
RUN_ERRORS = {
    "resume_changed_input": (["--resume"], ["RUN", "'bold'", "bold.mat", "differs"], "train"),
    "resume_changed_rows": (["--resume", "--test-rows", "31:40"], ["RUN", "split.json"],
                            "train"),
    "resume_changed_config": (["--resume", "--epochs", "3"], ["RUN", "config"], "train"),
    "force_with_bad_input": (["--force"], ["stim_T.mat", "looks transposed"], "train"),
    "evaluate_transposed": ([], ["bold_T1.mat", "'V1'", "looks transposed"], "evaluate"),
    "evaluate_image_size": ([], ["stim_small.npz", "'stim'", "(1, 28, 28)",
                                 f"(1, {SIZE}, {SIZE})"], "evaluate"),
    "evaluate_rows": ([], ["rows '50:60'", "50"], "evaluate"),
    "evaluate_fewer_voxels": ([], ["bold_fewer.mat", "'V1'", "5 voxels"], "evaluate"),
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    d = tmp_path_factory.mktemp("validation")
    truth = _write_inputs(d)
    before = {p.name for p in d.iterdir()}

    jobs, setup = {}, {}
    for name, (stim, bold, extra, _) in TRAIN_ERRORS.items():
        jobs[name] = _train(d, stim, bold, f"run_{name}",
                            *[str(a).format(d=d) for a in extra])
    setup["memory_small"] = PRETEND_SMALL_MEMORY
    jobs["memory_check_off"] = _train(d, "stim.mat", "bold.mat", "run_memory_check_off",
                                      "--no-memory-check")
    setup["memory_check_off"] = PRETEND_SMALL_MEMORY
    jobs["resume_missing"] = _train(d, "stim.mat", "bold.mat", "run_resume_missing",
                                    "--resume")
    jobs["resume_force"] = _train(d, "stim.mat", "bold.mat", "run_resume_force", "--resume",
                                  "--force")

    real = start(d, *_train(d, "stim.mat", "bold_nan.mat", "RUN"))
    results = run_many(jobs, d, setup)
    results["train_nan"] = finish(real)
    assert results["train_nan"].rc == 0, results["train_nan"].stderr[-3000:]
    run_before = snapshot(d / "RUN")

    run_jobs = {
        "resume_changed_input": _train(d, "stim.mat", "bold.mat", "RUN", "--resume"),
        "resume_changed_rows": _train(d, "stim.mat", "bold_nan.mat", "RUN", "--resume",
                                      "--test-rows", "31:40"),
        "resume_changed_config": _train(d, "stim.mat", "bold_nan.mat", "RUN", "--resume",
                                        "--epochs", "3"),
        "force_with_bad_input": _train(d, "stim_T.mat", "bold_nan.mat", "RUN", "--force"),
    }
    for name, stim, bold, rows in (("evaluate_transposed", "stim.mat", "bold_T1.mat", TEST),
                                   ("evaluate_image_size", "stim_small.npz", "bold.mat", TEST),
                                   ("evaluate_rows", "stim.mat", "bold.mat", "50:60"),
                                   ("evaluate_fewer_voxels", "stim.mat", "bold_fewer.mat",
                                    TEST)):
        run_jobs[name] = ["evaluate", d / "RUN", "--stim", d / stim, "--bold", d / bold,
                          "--rows", rows]
    results.update(run_many(run_jobs, d))
    return {"dir": d, "results": results, "before": before, "run_before": run_before,
            "truth": truth}


def _check_error(res, command: str, fragments) -> str:
    assert res.rc == 2, (res.rc, res.stderr[-2000:])
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"niflow {command}: error: "), lines[0]
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", list(TRAIN_ERRORS))
def test_bad_input_is_one_line_and_writes_nothing(cli, case):
    *_, fragments = TRAIN_ERRORS[case]
    _check_error(cli["results"][case], "train", fragments)
    assert not (cli["dir"] / f"run_{case}").exists()


@pytest.mark.parametrize("case", list(RUN_ERRORS))
def test_bad_input_leaves_the_existing_run_untouched(cli, case):
    _, fragments, command = RUN_ERRORS[case]
    _check_error(cli["results"][case], command, fragments)
    assert snapshot(cli["dir"] / "RUN") == cli["run_before"]


def test_transposed_message_gives_the_matlab_fix(cli):
    msg = _check_error(cli["results"]["stim_transposed"], "train", [])
    assert "permute(stim, [3 1 2])" in msg
    msg = _check_error(cli["results"]["bold_transposed"], "train", [])
    assert "V1 = V1'" in msg


def test_resume_needs_a_run_folder(cli):
    _check_error(cli["results"]["resume_missing"], "train",
                 ["run_resume_missing", "nothing to resume"])
    _check_error(cli["results"]["resume_force"], "train", ["--resume", "--force"])


def test_memory_check_can_be_turned_off(cli):
    res = cli["results"]["memory_check_off"]
    assert res.rc == 0, res.stderr[-3000:]
    assert (cli["dir"] / "run_memory_check_off" / "metrics.json").is_file()


def test_nothing_else_was_written(cli):
    """No run folder, staging folder or temporary file appeared beside the inputs."""
    now = {p.name for p in cli["dir"].iterdir()}
    assert now - cli["before"] == {"RUN", "run_memory_check_off", ".cli-jobs"}


def test_dropped_voxels_are_one_warning_line_per_area(cli):
    res = cli["results"]["train_nan"]
    bold = cli["dir"] / "bold_nan.mat"
    assert res.stderr.splitlines() == [
        f"niflow train: warning: {bold}: variable 'V1': dropped 3 of {NV1} voxels (2 with "
        f"NaN/Inf, 1 constant on the training rows); outputs keep the input's voxel indices",
        f"niflow train: warning: {bold}: variable 'V2': dropped 1 of {NV2} voxels (1 with "
        f"NaN/Inf, 0 constant on the training rows); outputs keep the input's voxel indices",
    ]


def test_dropped_voxels_keep_input_indices_in_every_output(cli):
    run = cli["dir"] / "RUN"
    truth = cli["truth"]
    # the kept voxels, computed here from the written arrays: finite everywhere, varying
    kept = {area: [j for j in range(arr.shape[1])
                   if np.isfinite(arr[:, j]).all() and np.ptp(arr[:, j]) > 0]
            for area, arr in (("V1", truth["v1"]), ("V2", truth["v2"]))}
    assert kept == {"V1": [0, 1, 3, 4, 6, 8, 9], "V2": [1, 2, 3]}
    with (run / "voxels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["area"], int(r["voxel"])) for r in rows] == (
        [("V1", j) for j in kept["V1"]] + [("V2", j) for j in kept["V2"]])
    metrics = json.loads((run / "metrics.json").read_text())
    assert {a: m["n_voxels"] for a, m in metrics["areas"].items()} == {"V1": 7, "V2": 3}
    pred = np.load(run / "predictions.npz")
    assert pred["V1"].shape == (10, 7) and pred["V2"].shape == (10, 3)
    params = scipy.io.loadmat(run / "modelparams.mat")
    assert params["Uc_V1"].shape[1] == 7


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="file permissions do not stop the superuser")
def test_unreadable_file(tmp_path):
    path = tmp_path / "stim.mat"
    scipy.io.savemat(path, {"stim": np.zeros((4, 8, 8), np.uint8)})
    path.chmod(0)
    results = run_many({"unreadable": _train(tmp_path, "stim.mat", "stim.mat", "out")},
                       tmp_path)
    _check_error(results["unreadable"], "train", [str(path), "cannot read", "ermission"])
    assert not (tmp_path / "out").exists()


def test_train_rows_choose_the_rows_trained_on():
    """API twin of ``--train-rows``: training and validation come from the given rows only."""
    rng = np.random.default_rng(0)
    stim = rng.integers(0, 256, (N, SIZE, SIZE), dtype=np.uint8)
    responses = {"V1": rng.normal(size=(N, NV1))}
    inputs = check_arrays(stim, responses, preset("default"), TEST, train_rows="0:20")
    fit = np.sort(np.concatenate([inputs.split.train, inputs.split.val]))
    assert np.array_equal(fit, np.arange(20))
    assert np.array_equal(inputs.split.test, np.arange(30, 40))
    assert inputs.split.val.size == 2  # 10% of 20 rows
