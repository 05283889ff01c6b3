"""Run ``niflow`` command lines in subprocesses, many of them cheaply (for the CLI tests).

Every invocation is a separate process running ``niflow.cli`` as ``__main__``, as
``python -m niflow.cli`` does. Starting Python and importing torch costs about 1.5 s per
process, so :func:`run_many` shares one start-up: a driver process imports ``niflow`` once
and forks a fresh child per invocation, in which ``niflow.cli`` is executed with ``runpy``
exactly as ``-m`` executes it (exit status, stdout and stderr are the child's own). A job may
carry ``setup`` code that the child runs first (e.g. to pretend that little memory is
available). Without ``os.fork`` (Windows) every job is a plain subprocess instead, and jobs
with ``setup`` code are not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 180

DRIVER = r"""
import json, os, runpy, sys, traceback

import niflow  # noqa: F401  (torch and friends, imported once; niflow.cli is not imported)

jobs = json.loads(open(sys.argv[1]).read())
codes = []
for job in jobs:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(job["cwd"])
            for fd, name in ((1, job["stdout"]), (2, job["stderr"])):
                f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            exec(job["setup"], {})
            sys.argv = ["niflow", *job["argv"]]
            try:
                runpy.run_module("niflow.cli", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exc:
                if exc.code is None:
                    code = 0
                elif isinstance(exc.code, int):
                    code = exc.code
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    codes.append(os.waitstatus_to_exitcode(status))
print(json.dumps(codes))
"""


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def cli_argv(*args) -> list[str]:
    """The command line ``python -m niflow.cli ARGS``."""
    return [sys.executable, "-m", "niflow.cli", *map(str, args)]


def popen_kwargs(cwd: Path) -> dict:
    return {"cwd": cwd, "env": {**os.environ, "PYTHONUNBUFFERED": "1"},
            "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}


def start(cwd: Path, *args) -> subprocess.Popen:
    """Start ``niflow ARGS`` as a plain subprocess."""
    return subprocess.Popen(cli_argv(*args), **popen_kwargs(cwd))


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> Result:
    out, err = proc.communicate(timeout=timeout)
    return Result(proc.returncode, out, err)


def run_many(jobs: dict[str, list], workdir: Path, setup: dict[str, str] | None = None,
             ) -> dict[str, Result]:
    """Run ``niflow ARGV`` for every job, each in its own process, in ``workdir``.

    Parameters
    ----------
    jobs : dict of str to list
        Job name to command-line arguments (converted with ``str``).
    workdir : Path
        Working directory of every job; the driver's files go to ``workdir/.cli-jobs``.
    setup : dict of str to str, optional
        Python code a job's process runs before ``niflow.cli``.

    Returns
    -------
    dict of str to Result
    """
    setup = setup or {}
    files = workdir / ".cli-jobs"
    files.mkdir(exist_ok=True)
    spec = [{"name": name, "argv": [str(a) for a in argv], "cwd": str(workdir),
             "setup": setup.get(name, ""),
             "stdout": str(files / f"job{i}.out"), "stderr": str(files / f"job{i}.err")}
            for i, (name, argv) in enumerate(jobs.items())]
    results: dict[str, Result] = {}
    if hasattr(os, "fork"):
        (files / "jobs.json").write_text(json.dumps(spec))
        (files / "driver.py").write_text(DRIVER)
        driver = subprocess.Popen([sys.executable, str(files / "driver.py"),
                                   str(files / "jobs.json")], **popen_kwargs(workdir))
        drv = finish(driver)
        assert drv.rc == 0, drv.stderr
        for job, code in zip(spec, json.loads(drv.stdout), strict=True):
            results[job["name"]] = Result(code, Path(job["stdout"]).read_text(),
                                          Path(job["stderr"]).read_text())
    else:  # no fork (Windows): one full process per invocation, slower but equivalent
        for job in spec:
            if not job["setup"]:
                results[job["name"]] = finish(start(workdir, *job["argv"]))
    return results


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Content and modification time of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}
