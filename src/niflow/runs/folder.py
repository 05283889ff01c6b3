"""The run folder's life cycle: create it whole or not at all, resume it, record what made it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from niflow._atomic import atomic_write_text, umask
from niflow._version import __version__
from niflow.config import RunConfig
from niflow.data.dataset import Split
from niflow.runs.run import RunError
from niflow.runs.units import SELECTION_DIR, finished_units
from niflow.train.loop import CHECKPOINT, History, load_checkpoint
from niflow.train.runtime import Runtime


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_run_dir(out: Path, force: bool, resume: bool) -> None:
    """Refuse an ``out`` that cannot be used as asked; nothing is created or changed.

    A new run needs ``out`` absent or empty (or ``force``); ``resume`` needs a run folder
    (one with ``run.json``).
    """
    check_location(out, "run folder")
    if resume:
        if not out.exists():
            raise RunError(f"{out}: nothing to resume (no such run folder); start the run "
                           f"without --resume")
        if not (out / "run.json").exists():
            raise RunError(f"{out}: nothing to resume (no run.json: not a niflow run folder)")
        return
    if out.exists() and any(out.iterdir()) and not force:
        raise RunError(f"{out}: run folder exists and is not empty; use --force to "
                       f"overwrite or --resume to continue it")


def check_location(out: Path, what: str = "folder") -> None:
    """Refuse an ``out`` that is a file or lies under a file; ``what`` names it in the
    message."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another --out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunError(f"{out}: cannot create the {what} ({parent} is a file)")
            break


def _create_run_dir(out: Path, force: bool, write: Callable[[Path], None]) -> None:
    """Make ``out`` appear with the files ``write(folder)`` puts in it, all or nothing."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out)
        staging = Path(tempfile.mkdtemp(dir=out.parent,
                                        prefix=f".{out.name}.starting-{os.getpid()}-"))
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp's folder is private (0700)
    except OSError as err:
        raise RunError(f"{out}: cannot create the run folder ({err.strerror})") from None
    try:
        write(staging)
        if out.exists():
            if any(out.iterdir()):
                if not force:  # appeared since check_run_dir: never overwrite without --force
                    raise RunError(f"{out}: run folder exists and is not empty; use --force "
                                   f"to overwrite or --resume to continue it")
                shutil.rmtree(out)
            else:
                out.rmdir()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders of ``out`` left by processes that were killed while starting."""
    for folder in out.parent.glob(f".{out.name}.starting-*"):
        match = re.fullmatch(rf"\.{re.escape(out.name)}\.starting-(\d+)-.+", folder.name)
        if match is None or not folder.is_dir():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (PermissionError, OverflowError):  # alive (someone else's) or not a pid
            pass


def _remove_temporaries(out: Path) -> None:
    """Delete temporary files an interrupted atomic write left in ``out`` (or figures/)."""
    for folder in (out, out / "figures"):
        for path in folder.glob(".*"):
            if path.is_file() and _TEMPORARY.fullmatch(path.name):
                path.unlink(missing_ok=True)


def _write_run_info(out: Path, cfg: RunConfig, inputs: dict[str, str] | None,
                    started: float, runtime: Runtime | None = None) -> None:
    info = {"niflow_version": __version__, "torch_version": torch.__version__,
            "seed": cfg.train.seed, "started": _timestamp(started),
            "runtime": {**(runtime or Runtime()).describe(),
                        "precision": cfg.train.precision},
            "inputs": {k: {"path": str(Path(p).resolve()), "sha256": sha256(p)}
                       for k, p in (inputs or {}).items()}}
    atomic_write_text(out / "run.json", json.dumps(info, indent=2) + "\n")


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def _finish_run_info(out: Path, hist: History) -> None:
    # wall-clock figures live here, not in metrics.json, which stays a pure function of the
    # inputs, the configuration and the seed (bit-identical between identical runs)
    info = json.loads((out / "run.json").read_text())
    info["finished"] = _timestamp(time.time())
    info["training_seconds"] = float(sum(e.get("seconds", 0.0) for e in hist.epochs))
    atomic_write_text(out / "run.json", json.dumps(info, indent=2) + "\n")


class RunComplete(RunError):
    """``--resume`` of a run that has finished: there is nothing to do (the command line
    prints the message and exits 0; nothing in the folder is touched)."""


def check_resume(out: Path, config: RunConfig, split: Split, sources: dict[str, str],
                 selection: bool = False) -> str:
    """Refuse to resume ``out`` with inputs other than the ones it started with.

    Compared with what the run folder recorded: the sha256 of each input file in
    ``sources`` (``{"stim": path, "bold": path}``, against ``run.json``), the resolved
    configuration (``config.json``; the message names every differing key) and the train,
    validation and test rows (``split.json``). A different niflow or torch version only
    warns: results are then no longer guaranteed to match an uninterrupted run bit for bit.
    Then: a finished run raises :class:`RunComplete`, an unreadable ``checkpoint.pt`` a
    :class:`~niflow.train.safety.CheckpointError`.

    Parameters
    ----------
    selection : bool
        Whether the run trains by model selection (in memory, no checkpoints).

    Returns
    -------
    str
        Where training resumes, e.g. ``"resuming runs/r1 from epoch 5 of 25"``.
    """
    info = _read_json(out / "run.json", out)
    for key, path in sources.items():
        old = info.get("inputs", {}).get(key)
        if old is not None and old["sha256"] != sha256(path):
            raise RunError(f"{out}: input {key!r} ({path}) differs from the one the run "
                           f"started with; start a new run instead of --resume")
    changed = config_differences(_read_json(out / "config.json", out), config.to_dict())
    if changed:
        raise RunError(f"{out}: the configuration differs from the run's config.json "
                       f"({'; '.join(changed)}); resume with the same config")
    if _read_json(out / "split.json", out) != split.to_dict():
        raise RunError(f"{out}: the train/validation/test rows differ from the run's "
                       f"split.json; resume with the same --test-rows (and --train-rows)")
    versions = {"niflow": (info.get("niflow_version"), __version__),
                "torch": (info.get("torch_version"), torch.__version__)}
    for name, (then, now) in versions.items():
        if then != now:
            warnings.warn(f"{out}: the run started with {name} {then}, this is {now}; the "
                          f"result may differ from an uninterrupted run", stacklevel=3)
    if "finished" in info:
        raise RunComplete(f"{out} is already complete (finished {info['finished']}; "
                          f"metrics.json, model.pt); nothing to do")
    return _resume_note(out, config, selection)


def _resume_note(out: Path, config: RunConfig, selection: bool) -> str:
    total = config.train.epochs
    if (out / CHECKPOINT).exists():
        ck = load_checkpoint(out)  # CheckpointError (one line) if unreadable
        done = int(ck["epoch"])
        if ck["history"].get("stopped_early") or done >= total:
            return f"resuming {out}: training ended at epoch {done}; writing the outputs"
        return f"resuming {out} from epoch {done + 1} of {total}"
    if selection:
        return _selection_note(out, total)
    return f"resuming {out} from epoch 1 of {total} (no checkpoint yet)"


def _selection_note(out: Path, total: int) -> str:
    done = finished_units(out)
    note = f"resuming {out}: model selection"
    if done:
        note += f", {len(done)} model(s) already trained ({', '.join(done)})"
    partial = sorted(p.parent for p in (out / SELECTION_DIR).glob(f"*/{CHECKPOINT}")
                     if p.parent.name not in done)
    if partial:
        ck = load_checkpoint(partial[0])  # CheckpointError (one line) if unreadable
        note += f"; {partial[0].name} from epoch {int(ck['epoch']) + 1} of {total}"
    return note


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The keys (dotted paths) whose values differ between two configuration dicts, as
    ``"train.lr: 0.006 → 0.01"`` (``(none)`` for a key one of them lacks)."""
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key, _NONE), new.get(key, _NONE)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            out += config_differences(dict(enumerate(a)), dict(enumerate(b)),
                                      f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_show(a)} → {_show(b)}")
    return out


_NONE = object()


def _show(value) -> str:
    return "(none)" if value is _NONE else json.dumps(value)


def _read_json(path: Path, out: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{out}: no {path.name}; not a complete niflow run folder") from None
    except (OSError, ValueError) as err:
        raise RunError(f"{out}: {path.name} is unreadable ({err})") from None


# temporary files of niflow._atomic: ".<stem>.<8 random characters><suffix>"
_TEMPORARY = re.compile(r"\.[^.]+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?")
