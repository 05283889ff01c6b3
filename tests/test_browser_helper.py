"""The headless-Chromium helpers: JavaScript runs before the DOM is dumped; screenshots."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from _browser import chromium_path, page_height, render_dom, screenshot

REPO = Path(__file__).resolve().parents[1]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sort</title>
<style>body { margin: 0; font-family: sans-serif; } .tall { height: 2500px; }</style></head>
<body>
<table id="scores"><tbody>
<tr><td>V3</td><td>0.30</td></tr>
<tr><td>V1</td><td>0.90</td></tr>
<tr><td>V2</td><td>0.60</td></tr>
</tbody></table>
<div class="tall"></div>
<script>
  const body = document.querySelector("#scores tbody");
  const rows = Array.from(body.rows);
  rows.sort((a, b) => parseFloat(b.cells[1].textContent) - parseFloat(a.cells[1].textContent));
  rows.forEach((row) => body.appendChild(row));
  const order = rows.map((r) => r.cells[0].textContent).join(",");
  document.getElementById("scores").dataset.sorted = order;
</script>
</body></html>
"""


@pytest.fixture
def page(tmp_path: Path) -> Path:
    if chromium_path() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    path = tmp_path / "page.html"
    path.write_text(PAGE, encoding="utf-8")
    return path


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_render_dom_runs_javascript(page: Path) -> None:
    dom = render_dom(page)
    assert 'data-sorted="V1,V2,V3"' in dom
    # the rows themselves were reordered by the script, highest score first
    assert dom.index("V1") < dom.index("V2") < dom.index("V3")


def test_screenshot_has_requested_size(page: Path, tmp_path: Path) -> None:
    out = screenshot(page, tmp_path / "shots" / "page.png", width=800, height=600)
    assert out.is_file()
    assert _png_size(out) == (800, 600)


def test_page_height_measures_full_page(page: Path) -> None:
    height = page_height(page, width=800)
    assert 2500 < height < 2700  # the 2500-pixel block plus the table above it


def test_missing_page_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        render_dom(tmp_path / "nope.html")


def test_screenshot_report_script_full_page(page: Path, tmp_path: Path) -> None:
    out = tmp_path / "full.png"
    script = REPO / "scripts" / "screenshot_report.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(page), str(out), "--width", "640"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    width, height = _png_size(out)
    assert width == 640
    assert 2500 < height < 2700


def test_screenshot_report_script_missing_page(tmp_path: Path) -> None:
    script = REPO / "scripts" / "screenshot_report.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "nope.html"), str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "no such page" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_chromium_failure_raises_runtime_error(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\necho 'fake chromium: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CHROMIUM", str(fake))
    page = tmp_path / "p.html"
    page.write_text("<p>hi</p>")
    with pytest.raises(RuntimeError, match=r"exit 3(.|\n)*fake chromium: cannot start"):
        render_dom(page)
