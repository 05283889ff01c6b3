"""Execute a Jupyter notebook in tests, with the test interpreter's own ipykernel.

``execute_notebook`` runs every cell in order with nbclient and returns the executed notebook.
The kernel is always ``sys.executable -m ipykernel_launcher``: the kernelspec is built from the
installed ipykernel (``ipykernel.kernelspec.get_kernel_dict``) instead of being looked up on
disk, so no ``ipython kernel install`` is needed and a user-level or system ``python3``
kernelspec pointing at another Python cannot be picked up. The kernel listens on 127.0.0.1
only (ipykernel warns on stderr that this TCP link is unencrypted; harmless here, and pytest
captures it). Needs nbformat, nbclient and ipykernel (the ``dev`` extra).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import nbformat
from ipykernel.kernelspec import RESOURCES, get_kernel_dict
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from traitlets import default

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookExecutionError(RuntimeError):
    """A notebook cell failed; ``cell_index`` counts all cells (markdown too) from 0."""

    def __init__(self, path: Path, cell_index: int, summary: str, details: str = "") -> None:
        self.path = path
        self.cell_index = cell_index
        self.summary = summary
        self.details = details
        message = f"{path}: cell {cell_index} failed: {summary}"
        if details:
            message += "\n\n" + details
        super().__init__(message)


class _ThisPythonKernelSpecs(KernelSpecManager):
    """Every kernel name resolves to the ipykernel of the running interpreter."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())


class _ThisPythonKernelManager(AsyncKernelManager):
    @default("kernel_spec_manager")
    def _default_this_python_specs(self) -> KernelSpecManager:
        return _ThisPythonKernelSpecs()


def _lines(text: str) -> list[str]:
    return [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()] or [
        "(no message)"
    ]


def execute_notebook(
    path: str | os.PathLike[str],
    cwd: str | os.PathLike[str],
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
) -> nbformat.NotebookNode:
    """Run all cells of the notebook at ``path`` with ``cwd`` as the kernel's working folder.

    ``timeout`` is per cell, in seconds. ``env`` is added to (and overrides) this process's
    environment for the kernel. The notebook file is not changed; the executed notebook, with
    its outputs, is returned. Raises NotebookExecutionError naming the failing cell's index and
    the exception's last line (``ename: evalue``), with the full traceback after it.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    current = {"index": -1}

    def on_cell_start(cell: nbformat.NotebookNode, cell_index: int) -> None:
        current["index"] = cell_index

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        kernel_manager_class=_ThisPythonKernelManager,
        resources={"metadata": {"path": str(Path(cwd))}},
        on_cell_start=on_cell_start,
    )
    kernel_env = {**os.environ, **(env or {})}
    try:
        client.execute(env=kernel_env)
    except CellExecutionError as exc:
        summary = f"{exc.ename}: {exc.evalue}" if exc.ename else _lines(str(exc))[-1]
        raise NotebookExecutionError(
            path, current["index"], summary, _ANSI.sub("", str(exc))
        ) from None
    except CellTimeoutError as exc:  # "A cell timed out ... after N seconds." then the cell
        lines = _lines(str(exc))
        raise NotebookExecutionError(
            path, current["index"], lines[0], "\n".join(lines[1:])
        ) from None
    except DeadKernelError as exc:
        raise NotebookExecutionError(
            path, current["index"], f"kernel died: {_lines(str(exc))[-1]}"
        ) from None
    return nb
