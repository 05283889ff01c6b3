"""The README's Python examples run as written.

Every ```python block of README.md is executed, in README order, in one namespace (later
blocks use the run the "Python API" block trains), in a temporary folder. A block is left
out only when the line before its fence is ``<!-- example: skip (REASON) -->`` (e.g. one
that needs the user's own HDF5 files); the examples are written small (60 simulated
images, one model, a few epochs), so nothing is substituted.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!--\s*example:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) of every ```python block of ``text``."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            skip = SKIP.search(before)
            blocks.append((start + 1, "\n".join(lines[i + 1:j]) + "\n",
                           skip.group("reason") if skip else None))
            i = j
        i += 1
    return blocks


def test_block_parser_sees_fences_and_markers():
    text = ("x\n```python\na = 1\n```\n<!-- example: skip (needs files) -->\n```python\nb\n"
            "```\n```bash\nls\n```\n")
    assert python_blocks(text) == [(2, "a = 1\n", None), (6, "b\n", "needs files")]


def test_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    run_blocks = [b for b in blocks if b[2] is None]
    skipped = [b for b in blocks if b[2] is not None]
    # only the streaming example (the user's HDF5 files) is left out
    assert len(skipped) == 1 and "train_stream" in skipped[0][1], skipped
    assert len(run_blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for line, code, _ in run_blocks:
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as err:  # name the block that failed
            pytest.fail(f"README.md block at line {line} failed: {type(err).__name__}: {err}")
    # what the examples claim they produce
    assert (tmp_path / "runs/r1/voxels.csv").exists() and (tmp_path / "runs/r2").is_dir()
    assert (tmp_path / "runs/cv1/cv_voxels.csv").exists()
    assert namespace["pred"].shape == namespace["true"].shape == (12, 40)  # 12 test rows
    assert set(namespace["results"]) == {"V1", "V2"}
    assert np.isfinite(namespace["st"]["r"]).all()
    assert [(f.target, f.source) for f in namespace["flow"]] == [("V2", "V1")]
    assert namespace["page"] == Path("compare.html") and (tmp_path / "compare.html").exists()
