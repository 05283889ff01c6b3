"""Runs that survive SIGKILL, and reproducible runs, through the command line.

``niflow train`` runs in a subprocess and is killed with SIGKILL (no clean-up possible) at
seeded random moments: during start-up, as soon as the run folder appears (before the first
checkpoint), twice during training, and as soon as the final outputs start to appear.
``niflow train --resume`` then continues until the run completes. The result must equal an
uninterrupted run with the same seed exactly: every tensor of ``model.pt``, ``metrics.json``
and ``voxels.csv`` byte for byte, every epoch once in ``log.jsonl``. A second uninterrupted
run checks that two runs with the same seed and inputs agree bit for bit.

Every wait is bounded; the whole module takes about half a minute on 2 cores.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from _cli import finish, start
from niflow import config as cfgmod
from niflow.data.simulate import simulate
from niflow.runs.pipeline import train_run
from niflow.train import epochs as epochmod

EPOCHS = 12
DEADLINE = 60.0  # seconds for any one wait


def _train_args(d: Path, out: str, resume: bool) -> list:
    # one model (no selection): kills land inside its epochs, whose checkpoints resume; a
    # selection run repeats its (deterministic) selection on --resume
    single = d / "single.json"
    if not single.exists():
        single.write_text('{"select": {"candidates": [], "members": 1}}')
    return ["train", "--stim", d / "data" / "stim.mat", "--bold", d / "data" / "bold.mat",
            "--out", d / out, "--test-rows", "40:48", "--epochs", str(EPOCHS), "--quiet",
            "--config", single, *(["--resume"] if resume else [])]


def _log_epochs(run: Path) -> int:
    try:
        return len((run / "log.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def _wait(proc: subprocess.Popen, condition, delay: float = 0.0) -> None:
    """Wait until ``condition()`` (or the process ends), then ``delay`` more seconds."""
    end = time.monotonic() + DEADLINE
    while proc.poll() is None and not condition():
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.005)
    time.sleep(delay)


def _state(run: Path) -> dict:
    return {"folder": run.exists(), "epochs_logged": _log_epochs(run),
            "model": (run / "model.pt").exists(), "metrics": (run / "metrics.json").exists()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    simulate(d / "data", n_per_letter=8, n_voxels={"V1": 30, "V2": 20}, seed=2)
    reference = [start(d, *_train_args(d, name, False)) for name in ("A", "A2")]

    rng = np.random.default_rng(20240607)
    run = d / "B"
    kills = []
    for stage in ("start-up", "started", "training", "training", "outputs"):
        proc = start(d, *_train_args(d, "B", run.exists()))
        logged = _log_epochs(run)
        if stage == "start-up":  # importing, validating, creating the folder, first epoch
            time.sleep(rng.uniform(0.5, 2.5))
        elif stage == "started":  # the folder exists, the first checkpoint does not yet
            _wait(proc, lambda: (run / "run.json").exists())
        elif stage == "training":
            _wait(proc, lambda n=logged: _log_epochs(run) > n, rng.uniform(0.0, 0.15))
        else:
            _wait(proc, lambda: (run / "model.pt").exists())
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=DEADLINE)
        kills.append({"stage": stage, "rc": proc.returncode, **_state(run)})

    finals = []
    for _ in range(2):  # the last kill may have hit before the folder existed
        finals.append(finish(start(d, *_train_args(d, "B", run.exists())), DEADLINE))
        if finals[-1].rc == 0:
            break
    return {"dir": d, "reference": [finish(p, DEADLINE) for p in reference], "kills": kills,
            "finals": finals}


def _model(path: Path) -> dict:
    return torch.load(path / "model.pt", map_location="cpu", weights_only=False)


def _assert_equal(x, y, where: str) -> None:
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for key in x:
            _assert_equal(x[key], y[key], f"{where}.{key}")
    else:
        assert np.array_equal(np.asarray(x), np.asarray(y)), where


def _assert_same_run(a: Path, b: Path) -> None:
    ma, mb = _model(a), _model(b)
    assert ma["state_dict"].keys() == mb["state_dict"].keys()
    for key, tensor in ma["state_dict"].items():
        assert torch.equal(tensor, mb["state_dict"][key]), key
    for key in ("scalers", "voxel_index", "stim_peak", "config", "image_shape", "n_voxels"):
        _assert_equal(ma[key], mb[key], key)
    for name in ("metrics.json", "voxels.csv", "config.json", "split.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pa, pb = np.load(a / "predictions.npz"), np.load(b / "predictions.npz")
    assert sorted(pa.files) == sorted(pb.files)
    for key in pa.files:
        assert np.array_equal(pa[key], pb[key]), key
    qa, qb = scipy.io.loadmat(a / "modelparams.mat"), scipy.io.loadmat(b / "modelparams.mat")
    for key in (k for k in qa if not k.startswith("__")):
        assert np.array_equal(qa[key], qb[key]), key


def _timeless(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (path / "log.jsonl").read_text().splitlines()]


def test_uninterrupted_runs_are_bit_identical(runs):
    for res in runs["reference"]:
        assert res.rc == 0, res.stderr[-3000:]
    d = runs["dir"]
    _assert_same_run(d / "A", d / "A2")
    assert _timeless(d / "A") == _timeless(d / "A2")


def test_kills_hit_a_running_training(runs):
    kills = runs["kills"]
    killed = [k for k in kills if k["rc"] == -signal.SIGKILL]
    assert len(killed) >= 4, kills
    # one kill found the run folder without a checkpoint: resume starts training afresh
    assert any(k["folder"] and k["epochs_logged"] == 0 for k in killed), kills
    # at least one kill left a checkpoint to resume from but no final outputs
    assert any(k["epochs_logged"] > 0 and not k["metrics"] for k in killed), kills
    # the last one was waiting for the outputs: it hit them half-written
    assert kills[-1]["model"] and not kills[-1]["metrics"], kills


def test_resume_after_kills_matches_the_uninterrupted_run(runs):
    final = runs["finals"][-1]
    assert final.rc == 0, (runs["kills"], final.stderr[-3000:])
    d = runs["dir"]
    _assert_same_run(d / "A", d / "B")
    log = _timeless(d / "B")
    assert [r["epoch"] for r in log] == list(range(1, len(log) + 1))
    assert log == _timeless(d / "A")


def test_no_temporary_files_remain(runs):
    d = runs["dir"]
    assert runs["finals"][-1].rc == 0
    leftovers = [p for p in (d / "B").rglob(".*")] + list(d.glob(".B.*"))
    assert leftovers == []


# --------------------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def small_sim():
    return simulate(n_per_letter=6, n_voxels={"V1": 20, "V2": 12}, seed=5)


def test_log_ahead_of_checkpoint_is_repaired_on_resume(small_sim, tmp_path, monkeypatch):
    """A kill between a log line and its checkpoint (the order older runs used): resume
    rewrites the log from the checkpoint, so no epoch appears twice."""
    cfg = cfgmod.preset("default")
    cfg.select = cfgmod.SelectConfig()  # one model: its checkpoints are what is tested
    cfg.train.epochs, cfg.train.patience = 4, 10
    n = small_sim.stim.shape[0]
    rows = f"{n - 6}:{n}"
    calls = {"n": 0}
    real_save = epochmod.save_checkpoint

    def dying_save(path, state):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_save(path, state)

    monkeypatch.setattr(epochmod, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train_run(small_sim.stim, small_sim.responses, tmp_path / "cut", cfg, rows,
                  progress=False)
    monkeypatch.setattr(epochmod, "save_checkpoint", real_save)
    log = tmp_path / "cut" / "log.jsonl"
    lines = log.read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    log.write_text("\n".join([*lines, lines[-1].replace('"epoch": 2', '"epoch": 3')]) + "\n")
    # a run started by another version resumes, with a warning that bits may differ
    info_path = tmp_path / "cut" / "run.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "niflow_version": "0.0.0"}))

    with pytest.warns(UserWarning, match="started with niflow 0.0.0"):
        train_run(small_sim.stim, small_sim.responses, tmp_path / "cut", cfg, rows,
                  resume=True, progress=False)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1, 2, 3, 4]
