"""What ``niflow train`` says when it stops early: Ctrl-C (what was saved, and the command
that resumes), and ``--resume`` of a run that is already complete."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from niflow.train.safety import TrainingInterrupted


def resume_command(argv: list[str]) -> str:
    """The shell-quoted command line that resumes the run ``argv`` started: the same
    arguments, without ``--force``, with ``--resume``."""
    args = [a for a in argv if a != "--force"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["niflow", *args])


def interrupted(err: KeyboardInterrupt, out: Path, argv: list[str]) -> KeyboardInterrupt:
    """The interrupt to re-raise, its message one line saying what is saved in ``out`` and
    how to resume (``niflow.cli.main`` prints it and exits 130)."""
    resume = f"resume with: {resume_command(argv)}"
    if isinstance(err, TrainingInterrupted) and err.stage.startswith("model selection"):
        if err.checkpoint is None:
            return KeyboardInterrupt(
                f"interrupted during model selection (candidates train in memory: nothing "
                f"saved, {out} is unfinished); {resume} (repeats the selection)")
        if err.saved is not None:
            saved = (f"checkpoint of epoch {err.saved} saved ({err.checkpoint}), finished "
                     f"models kept")
        elif err.epoch is not None:
            saved = "no checkpoint of it yet, finished models kept"
        else:
            saved = f"finished models kept ({err.checkpoint})"
        at = f", epoch {err.epoch}" if err.epoch is not None else ""
        return KeyboardInterrupt(f"interrupted during {err.stage}{at}; {saved}; {resume}")
    if isinstance(err, TrainingInterrupted) and err.checkpoint is not None:
        if err.saved is None:
            return KeyboardInterrupt(f"interrupted at epoch {err.epoch}, before the first "
                                     f"checkpoint; {resume} (starts from epoch 1)")
        at = (f"in epoch {err.epoch}" if err.epoch not in (None, err.saved)
              else f"after epoch {err.saved}")
        return KeyboardInterrupt(f"interrupted {at}; checkpoint of epoch {err.saved} saved "
                                 f"({err.checkpoint}); {resume}")
    if _unfinished(out):
        return KeyboardInterrupt(f"interrupted; {out} is unfinished; {resume}")
    return err


def _unfinished(out: Path) -> bool:
    try:
        return "finished" not in json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return False
