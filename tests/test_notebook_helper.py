"""The notebook runner: cells share state, run in the given folder with this Python; errors."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from _notebook import NotebookExecutionError, execute_notebook


def _write(path: Path, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


def test_cells_share_state_and_print(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = _write(
        tmp_path / "tutorial.ipynb",
        [
            new_markdown_cell("# Tutorial\nA variable set in one cell is used in the next."),
            new_code_cell("answer = 6 * 7"),
            new_code_cell(
                "import os, sys\n"
                "print(f'answer={answer}')\n"
                "print(f'cwd={os.getcwd()}')\n"
                "print(f'python={sys.executable}')\n"
                "print(f'env={os.environ[\"NIFLOW_NOTEBOOK_TEST\"]}')"
            ),
        ],
    )
    before = path.read_text()
    nb = execute_notebook(path, cwd=work, timeout=120, env={"NIFLOW_NOTEBOOK_TEST": "yes"})
    lines = _stdout(nb.cells[2]).splitlines()
    assert "answer=42" in lines
    assert f"cwd={work.resolve()}" in lines or f"cwd={work}" in lines
    assert f"python={sys.executable}" in lines
    assert "env=yes" in lines
    assert nb.cells[1].execution_count == 1 and nb.cells[2].execution_count == 2
    assert path.read_text() == before  # the file on disk is left as it was


def test_failing_cell_names_its_index(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "broken.ipynb",
        [
            new_markdown_cell("# Broken"),
            new_code_cell("x = 1"),
            new_code_cell("print('before')"),
            new_code_cell("raise ValueError('bad value ' + str(x))"),
            new_code_cell("print('never runs')"),
        ],
    )
    with pytest.raises(NotebookExecutionError) as info:
        execute_notebook(path, cwd=tmp_path, timeout=120)
    err = info.value
    assert err.cell_index == 3
    first_line = str(err).splitlines()[0]
    assert "cell 3 failed" in first_line
    assert "ValueError: bad value 1" in first_line
    assert "broken.ipynb" in first_line


def test_cell_timeout_names_its_index(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "slow.ipynb",
        [new_code_cell("y = 2"), new_code_cell("import time\ntime.sleep(60)")],
    )
    with pytest.raises(NotebookExecutionError) as info:
        execute_notebook(path, cwd=tmp_path, timeout=1)
    assert info.value.cell_index == 1
    assert "cell 1 failed" in str(info.value) and "timed out" in str(info.value)
