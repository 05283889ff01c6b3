"""Safe failures of ``niflow train``: divergence, unreadable checkpoints, what ``--resume``
says, Ctrl-C, progress without a terminal, too many ``--workers``.

Each failure must give one line, a non-zero exit where it is an error, and lose nothing
already written. The command-line cases run in subprocesses (``tests/_cli.py``: one shared
start-up, stdout and stderr are files, so no terminal); the SIGINT cases are plain
subprocesses, interrupted as soon as their first epoch lines appear.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import shlex
import shutil
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from _cli import TIMEOUT, finish, run_many, snapshot, start
from _configs import default_config
from niflow import config as cfgmod
from niflow.data.io import load_responses, load_stimuli
from niflow.data.simulate import simulate
from niflow.data.stream import available_cores
from niflow.runs.folder import RunComplete, check_resume, config_differences
from niflow.runs.inputs import check_arrays
from niflow.runs.pipeline import train_run
from niflow.train import loop as trainmod
from niflow.train.safety import (
    DIVERGED_LOSS,
    CheckpointError,
    TrainingDiverged,
    check_finite_training,
)
from niflow.train.select import select_and_train

EPOCHS = 3
FINISHED = ("model.pt", "metrics.json", "voxels.csv", "predictions.npz")


def _train(d: Path, out: str, *extra, config: str = "single.json") -> list:
    return ["train", "--stim", d / "data" / "stim.mat", "--bold", d / "data" / "bold.mat",
            "--out", d / out, "--test-rows", "40:48", "--config", d / config, *extra]


def _one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def _unfinished(run: Path) -> None:
    assert run.is_dir()
    assert not any((run / name).exists() for name in FINISHED), sorted(
        p.name for p in run.iterdir())
    assert "finished" not in json.loads((run / "run.json").read_text())


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    d = tmp_path_factory.mktemp("safe")
    sim = simulate(d / "data", n_per_letter=8, n_voxels={"V1": 30, "V2": 20}, seed=2)
    (d / "single.json").write_text(json.dumps(
        {"select": {"candidates": [], "members": 1}, "train": {"epochs": EPOCHS}}))
    (d / "selection.json").write_text(json.dumps({"train": {"epochs": 2}}))
    with h5py.File(d / "stim.h5", "w") as fh:
        fh.create_dataset("stim", data=sim.stim)
    with h5py.File(d / "bold.h5", "w") as fh:
        for area, r in sim.responses.items():
            fh.create_dataset(area, data=np.asarray(r, np.float32))
    workers = available_cores() + 1
    first = run_many({
        "diverge": _train(d, "div", "--lr", "100", "--quiet"),
        "diverge_selection": _train(d, "div_sel", "--lr", "100", "--quiet",
                                    config="selection.json"),
        "done": _train(d, "done"),  # not --quiet: the progress lines are tested
        "workers": ["train", "--stim", d / "stim.h5", "--bold", d / "bold.h5", "--stream",
                    "--out", d / "streamed", "--test-rows", "40:48", "--config",
                    d / "single.json", "--quiet", "--workers", str(workers),
                    "--lr", "100"],  # diverges at once: the warning comes before training
    }, d)
    assert first["done"].rc == 0, first["done"].stderr[-2000:]
    # unfinished copies of the finished run (as if killed while writing its outputs), with
    # an intact, a truncated and an overwritten checkpoint
    for name in ("intact", "truncated", "garbage"):
        shutil.copytree(d / "done", d / name)
        info = json.loads((d / name / "run.json").read_text())
        del info["finished"]
        (d / name / "run.json").write_text(json.dumps(info))
    ck = d / "truncated" / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    (d / "garbage" / "checkpoint.pt").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    before = {name: snapshot(d / name) for name in ("done", "truncated", "garbage", "div")}
    second = run_many({
        "complete": _train(d, "done", "--resume"),
        "changed": _train(d, "done", "--resume", "--lr", "0.01", "--epochs", "4"),
        "truncated": _train(d, "truncated", "--resume"),
        "garbage": _train(d, "garbage", "--resume"),
        "resume_diverged": _train(d, "div", "--resume", "--lr", "100", "--quiet"),
    }, d)
    after = {name: snapshot(d / name) for name in before}
    return {"dir": d, **first, **second, "before": before, "after": after,
            "workers_n": workers}


def test_divergence_stops_with_one_line_and_no_finished_files(cli):
    res = cli["diverge"]
    assert res.rc == 2
    line = _one_line(res.stderr)
    assert re.fullmatch(r"niflow train: error: training diverged at epoch 1 \(loss \S+\); "
                        r"try a lower --lr \(now 100\); .*div is left unfinished.*--force",
                        line), line
    _unfinished(cli["dir"] / "div")
    assert not (cli["dir"] / "div" / "log.jsonl").exists()  # no epoch of it was kept


def test_resume_of_a_diverged_run_diverges_again_and_keeps_its_files(cli):
    res = cli["resume_diverged"]
    assert res.rc == 2
    assert "training diverged at epoch 1" in _one_line(res.stderr)
    assert res.stdout.strip() == f"resuming {cli['dir'] / 'div'} from epoch 1 of {EPOCHS} " \
                                 f"(no checkpoint yet)"
    assert cli["after"]["div"].keys() == cli["before"]["div"].keys()
    _unfinished(cli["dir"] / "div")


def test_selection_where_every_candidate_diverges_is_an_error(cli):
    res = cli["diverge_selection"]
    assert res.rc == 2
    line = _one_line(res.stderr)
    assert "training diverged at epoch 1" in line and "in every candidate" in line, line
    assert "--lr (now 100)" in line
    _unfinished(cli["dir"] / "div_sel")
    assert not (cli["dir"] / "div_sel" / "selection.json").exists()


def test_progress_without_a_terminal_is_one_line_per_epoch(cli):
    res = cli["done"]
    assert "\r" not in res.stderr and "\r" not in res.stdout
    lines = [x for x in res.stderr.splitlines() if x.startswith("epoch ")]
    log = [json.loads(x) for x in (cli["dir"] / "done" / "log.jsonl").read_text().splitlines()]
    assert len(lines) == len(log) >= 1
    for line, rec in zip(lines, log, strict=True):
        m = re.fullmatch(r"epoch (\d+)/(\d+)  train (\S+)  val r (\S+)  best (\d+)  (\S+) s",
                         line)
        assert m, line
        assert int(m[1]) == rec["epoch"] and int(m[2]) == EPOCHS
        assert float(m[3]) == pytest.approx(rec["train_loss"], abs=6e-4)
        assert float(m[4]) == pytest.approx(rec["val_median_r"], abs=6e-3)
        scores = [r["val_median_r"] for r in log[:rec["epoch"]]]
        assert int(m[5]) == 1 + int(np.argmax(scores))  # the best epoch so far


def test_resume_of_a_complete_run_does_nothing(cli):
    res = cli["complete"]
    assert res.rc == 0, res.stderr
    assert _one_line(res.stdout).startswith(f"{cli['dir'] / 'done'} is already complete")
    assert "nothing to do" in res.stdout
    assert cli["after"]["done"] == cli["before"]["done"]  # contents and modification times


def test_resume_names_the_config_keys_that_differ(cli):
    res = cli["changed"]
    assert res.rc == 2
    line = _one_line(res.stderr)
    old = json.loads((cli["dir"] / "done" / "config.json").read_text())["train"]
    assert f"train.lr: {json.dumps(old['lr'])} → 0.01" in line, line
    assert f"train.epochs: {old['epochs']} → 4" in line, line
    assert line.count("→") == 2


@pytest.mark.parametrize("case", ["truncated", "garbage"])
def test_unreadable_checkpoint_is_one_line_and_nothing_changes(cli, case):
    res = cli[case]
    assert res.rc == 2
    line = _one_line(res.stderr)
    path = cli["dir"] / case / "checkpoint.pt"
    assert re.fullmatch(rf"niflow train: error: {re.escape(str(path))}: unreadable checkpoint "
                        r"\(.+\); delete it to start over", line), line
    assert cli["after"][case] == cli["before"][case]


def test_api_resume_says_where_and_refuses_a_complete_run(cli):
    d = cli["dir"]
    stim, resp = load_stimuli(d / "data" / "stim.mat"), load_responses(d / "data" / "bold.mat")
    cfg = cfgmod.load(d / "done" / "config.json")
    with pytest.raises(RunComplete, match="is already complete"):
        train_run(stim, resp, d / "done", cfg, "40:48", resume=True, progress=False)
    # the unfinished copy ends after its last checkpoint: only the outputs remain to write
    inputs = check_arrays(stim, resp, cfg, "40:48")
    note = check_resume(d / "intact", cfg, inputs.split, {})
    epoch = trainmod.load_checkpoint(d / "intact")["epoch"]
    assert note == f"resuming {d / 'intact'}: training ended at epoch {epoch}; writing the " \
                   f"outputs"
    # the diverged run has no checkpoint; on_resume hears so before it diverges again
    notes = []
    with pytest.raises(TrainingDiverged):
        train_run(stim, resp, d / "div", dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, lr=100.0)), "40:48", resume=True,
            progress=False, on_resume=notes.append)
    assert notes == [f"resuming {d / 'div'} from epoch 1 of {EPOCHS} (no checkpoint yet)"]
    assert snapshot(d / "done") == cli["before"]["done"]


def test_too_many_workers_warn_with_both_numbers(cli):
    res = cli["workers"]
    assert res.rc == 2 and "training diverged" in res.stderr.splitlines()[-1], res.stderr
    warned = [x for x in res.stderr.splitlines() if "--workers" in x]
    assert len(warned) == 1, res.stderr
    assert warned[0].startswith(f"niflow: warning: --workers {cli['workers_n']}: ")
    assert f"the {available_cores()} CPU core(s)" in warned[0]


# --------------------------------------------------------------------------- Ctrl-C


def _interrupt_after(proc, prefix: str, count: int = 1) -> list[str]:
    """Read stderr until the ``count``-th line that starts with ``prefix``, then send SIGINT."""
    seen = []
    end = time.monotonic() + TIMEOUT
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(prefix) and sum(x.startswith(prefix) for x in seen) == count:
            proc.send_signal(signal.SIGINT)
            return seen
        assert time.monotonic() < end, seen
    raise AssertionError(f"no line {prefix!r}: {seen}")


def _timeless(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"}
            for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def interrupted(cli):
    d = cli["dir"]
    (d / "long.json").write_text(json.dumps(
        {"select": {"candidates": [], "members": 1}, "train": {"epochs": 8, "patience": 8}}))
    reference = start(d, *_train(d, "ref", "--quiet", config="long.json"))
    proc = start(d, *_train(d, "sig", config="long.json"))
    seen = _interrupt_after(proc, "epoch 2/")
    res = finish(proc)
    state = {"files": sorted(p.name for p in (d / "sig").iterdir()),
             "checkpoint": trainmod.load_checkpoint(d / "sig")["epoch"]}
    command = shlex.split(_one_line(res.stderr).rpartition("resume with: ")[2])
    resumed = finish(start(d, *command[1:]))
    return {"dir": d, "res": res, "seen": seen, "state": state, "command": command,
            "resumed": resumed, "reference": finish(reference)}


def test_sigint_saves_a_checkpoint_and_prints_the_resume_command(interrupted):
    d, res = interrupted["dir"], interrupted["res"]
    assert res.rc == 130
    line = _one_line(res.stderr)
    m = re.fullmatch(r"niflow train: interrupted (in|after) epoch (\d+); checkpoint of epoch "
                     r"(\d+) saved \((.+)\); resume with: (.+)", line)
    assert m, line
    saved = int(m[3])
    assert saved >= 2 and saved == interrupted["state"]["checkpoint"]
    assert m[4] == str(d / "sig" / "checkpoint.pt")
    assert not set(FINISHED) & set(interrupted["state"]["files"])
    assert interrupted["command"] == ["niflow", *map(str, _train(d, "sig", config="long.json")),
                                      "--resume"]
    # read through a pipe: one progress line per epoch, in order, no carriage return
    epochs = [x for x in interrupted["seen"] if x.startswith("epoch ")]
    assert [x.split()[1] for x in epochs] == [f"{k}/8" for k in range(1, len(epochs) + 1)]
    assert not any("\r" in x for x in interrupted["seen"])


def test_the_printed_command_resumes_to_the_uninterrupted_result(interrupted):
    d, res = interrupted["dir"], interrupted["resumed"]
    assert interrupted["reference"].rc == 0
    assert res.rc == 0, res.stderr[-2000:]
    saved = interrupted["state"]["checkpoint"]
    assert res.stdout.splitlines()[0] == f"resuming {d / 'sig'} from epoch {saved + 1} of 8"
    a = torch.load(d / "ref" / "model.pt", map_location="cpu", weights_only=False)
    b = torch.load(d / "sig" / "model.pt", map_location="cpu", weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    for name in ("metrics.json", "voxels.csv"):
        assert (d / "ref" / name).read_bytes() == (d / "sig" / name).read_bytes(), name
    assert _timeless(d / "sig") == _timeless(d / "ref")


def _selection_seconds_dropped(run: Path) -> dict:
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if not k.endswith("seconds")}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(json.loads((run / "selection.json").read_text()))


def test_sigint_during_model_selection_resumes_to_the_uninterrupted_result(cli):
    # the default preset selects between two candidates and trains three more members; each
    # trains with checkpoints of its own, so Ctrl-C loses at most the epoch in progress
    d = cli["dir"]
    reference = start(d, *_train(d, "ref_sel", "--quiet", config="selection.json"))
    proc = start(d, *_train(d, "sig_sel", config="selection.json"))
    # in the second candidate's first epoch: the first candidate has finished
    _interrupt_after(proc, "epoch 1/", count=2)
    res = finish(proc)
    assert res.rc == 130
    line = _one_line(res.stderr)
    m = re.fullmatch(r"niflow train: interrupted during model selection \((?:(?:candidate|"
                     r"member)-[\w-]+|between models)\)(?:, epoch \d+)?; (?:checkpoint of "
                     r"epoch \d+ saved \(.+\), finished models kept|no checkpoint of it yet, "
                     r"finished models kept|finished models kept \(.+\)); resume with: (.+)",
                     line)
    assert m, line
    assert m[1] == shlex.join(["niflow", *map(str, _train(d, "sig_sel",
                                                            config="selection.json")),
                               "--resume"])
    _unfinished(d / "sig_sel")
    assert not (d / "sig_sel" / "selection.json").exists()
    assert (d / "sig_sel" / "selection" / "candidate-gabor-gaussian" / "done.pt").exists()
    resumed = finish(start(d, *shlex.split(m[1])[1:]))
    assert resumed.rc == 0, resumed.stderr[-2000:]
    assert resumed.stdout.splitlines()[0].startswith(
        f"resuming {d / 'sig_sel'}: model selection, ")
    assert finish(reference).rc == 0
    a = torch.load(d / "ref_sel" / "model.pt", map_location="cpu", weights_only=False)
    b = torch.load(d / "sig_sel" / "model.pt", map_location="cpu", weights_only=False)
    # the default's ensemble for 40 training and validation rows: 4 models
    assert len(a["members"]) == len(b["members"]) == 3
    for sa, sb in zip([a["state_dict"], *a["members"]], [b["state_dict"], *b["members"]],
                      strict=True):
        for key, tensor in sa.items():
            assert torch.equal(tensor, sb[key]), key
    for name in ("metrics.json", "voxels.csv"):
        assert (d / "ref_sel" / name).read_bytes() == (d / "sig_sel" / name).read_bytes(), name
    assert _selection_seconds_dropped(d / "sig_sel") == _selection_seconds_dropped(
        d / "ref_sel")
    assert not (d / "sig_sel" / "selection").exists()  # removed once the run is finished


# --------------------------------------------------------------------------- in process


def test_divergence_rule():
    check_finite_training(3, DIVERGED_LOSS, 0.2, 0.01, None)  # at the bound: not diverged
    for loss, score in ((DIVERGED_LOSS * 1.01, 0.2), (float("nan"), 0.2), (float("inf"), None),
                        (0.5, float("nan"))):
        with pytest.raises(TrainingDiverged) as err:
            check_finite_training(3, loss, score, 0.01, Path("runs/x"))
        assert err.value.epoch == 3 and "\n" not in str(err.value)
        assert "--lr (now 0.01)" in str(err.value) and "checkpoint of epoch 2" in str(err.value)
        again = pickle.loads(pickle.dumps(err.value))  # errors travel between DDP processes
        assert str(again) == str(err.value) and again.epoch == 3


def test_divergence_through_the_api(tmp_path):
    sim = simulate(n_per_letter=4, n_voxels={"V1": 12, "V2": 8}, seed=4)
    n = sim.stim.shape[0]
    with pytest.raises(TrainingDiverged) as err:
        train_run(sim.stim, sim.responses, tmp_path / "r", default_config(3, lr=100.0),
                  f"{n - 4}:{n}", progress=False, memory_check=False)
    assert err.value.epoch == 1 and err.value.lr == 100.0
    _unfinished(tmp_path / "r")


def _fake_selection(diverging: set[int], members: int = 2):
    cfg = cfgmod.preset("default")
    cfg.select = cfgmod.SelectConfig(candidates=["gabor-gaussian", "learned-gaussian"],
                                     members=members)
    calls = []

    def fit(model, data, c):
        calls.append(c)
        if len(calls) in diverging:
            raise TrainingDiverged(2, float("inf"), c.train.lr)
        return trainmod.History(epochs=[{"epoch": 1, "val_median_r": 0.1 * len(calls)}],
                                best_epoch=1, best_score=0.1 * len(calls))

    sim = simulate(n_per_letter=4, n_voxels={"V1": 6, "V2": 4}, seed=1)
    from niflow.data.dataset import build_dataset

    n = sim.stim.shape[0]
    data = build_dataset(sim.stim, sim.responses, np.arange(n - 4, n))
    return select_and_train(cfg, data, lambda c, d: object(), fit), calls


def test_selection_skips_a_diverged_candidate_and_member():
    (chosen, models, hists, sel), calls = _fake_selection({1, 3})
    assert sel.chosen == "learned-gaussian"  # the first candidate diverged
    assert sel.skipped == ["candidate gabor-gaussian: diverged at epoch 2 (loss inf)",
                           "member 1: diverged at epoch 2 (loss inf)"]
    assert len(models) == len(hists) == 1 and len(calls) == 3
    assert list(sel.scores) == ["learned-gaussian"]


def test_selection_where_every_candidate_diverges_raises():
    with pytest.raises(TrainingDiverged):
        _fake_selection({1, 2})


def test_config_differences_name_dotted_keys():
    old = {"train": {"lr": 0.006, "epochs": 25}, "areas": [{"name": "V1", "kernel": 5}],
           "x": 1}
    new = {"train": {"lr": 0.01, "epochs": 25}, "areas": [{"name": "V1", "kernel": 3}],
           "y": "a"}
    assert config_differences(old, new) == ["train.lr: 0.006 → 0.01", "areas.0.kernel: 5 → 3",
                                            "x: 1 → (none)", 'y: (none) → "a"']
    assert config_differences(old, old) == []


def test_load_checkpoint_errors(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        trainmod.load_checkpoint(tmp_path)
    buf = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3}, buf)  # a loadable file that is not a training state
    with pytest.raises(CheckpointError, match="no model, optimizer"):
        trainmod.load_checkpoint(tmp_path)


def test_progress_on_a_terminal_is_a_bar(monkeypatch):
    from niflow.train.safety import EpochProgress

    class Tty:
        text = ""

        def write(self, s):
            Tty.text += s

        def flush(self):
            pass

        def isatty(self):
            return True

    bar = EpochProgress(1, 2, True, Tty())
    bar.update({"epoch": 1, "train_loss": 0.5, "val_median_r": 0.3, "seconds": 0.1}, 1)
    bar.close()
    assert "\r" in Tty.text and "epoch 1/2" not in Tty.text
