"""docs/tutorial.ipynb runs from top to bottom (small data) and shows what it says it shows."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat

from _notebook import execute_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "text/plain" in o.get("data", {}):
            out.append(o["data"]["text/plain"])
    return "".join(out)


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    headings = [ln for c in nb.cells if c.cell_type == "markdown"
                for ln in c.source.splitlines() if ln.startswith("## ")]
    for step in ("Simulate", "Train", "Evaluate", "Receptive fields", "probe", "Report",
                 "Your own data"):
        assert any(step in h for h in headings), (step, headings)


def test_tutorial_runs_and_shows_results(tmp_path):
    nb = execute_notebook(NOTEBOOK, tmp_path, timeout=300,
                          env={"PYTHONPATH": str(ROOT / "src")})
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert str(ROOT / "src" / "niflow") in text  # the kernel imported this tree
    run = tmp_path / "runs" / "r1"
    for name in ("voxels.csv", "metrics.json", "stats_voxels.csv", "probe.json",
                 "report.html"):
        assert (run / name).exists(), name
    assert (tmp_path / "runs" / "compare.html").exists()
    assert (tmp_path / "runs" / "own" / "voxels.csv").exists()
    # the printed medians are the run's own, and finite
    metrics = json.loads((run / "metrics.json").read_text())
    for area in ("V1", "V2"):
        m = re.search(rf"{area}: \d+ voxels, median held-out r = (-?[0-9.]+)", text)
        assert m, text[:2000]
        assert math.isfinite(float(m.group(1)))
        assert float(m.group(1)) == round(metrics["areas"][area]["median_r"], 3)
    assert "uint8 and float give the same predictions: True" in text
    assert "HDF5 copy identical: True" in text and "same as the arrays: True" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in
              o.get("data", {})]
    assert len(images) >= 2  # the stimuli and the receptive-field figures
