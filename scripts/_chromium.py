"""Headless Chromium for static HTML pages: the DOM after JavaScript ran, and screenshots.

Shared by ``scripts/screenshot_report.py`` and the tests (``tests/_browser.py`` loads this file).
Only the standard library is used. Chromium is Debian's ``chromium`` package
(``/usr/bin/chromium``); set ``CHROMIUM`` to use another binary. Every run gets a fresh,
throw-away profile and has all background networking switched off (Chromium can hang on a
closed network without those flags), so the page must be self-contained (local files only).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chromium's own noise on a machine without a session bus; dropped from error messages
_NOISE = re.compile(r"dbus|/usr/bin/chromium: \d+: \[")
# Written into a temporary copy of the page to measure its full height (see page_height)
_HEIGHT_ATTR = "data-chromium-page-height"
_MEASURE_JS = (
    "<script>(function(){function m(){var d=document.documentElement,b=document.body;"
    "d.setAttribute('" + _HEIGHT_ATTR + "',String(Math.ceil(Math.max(d.scrollHeight,"
    "d.getBoundingClientRect().height,b?b.scrollHeight:0,b?b.getBoundingClientRect().bottom:0))))}"
    "setInterval(m,50);addEventListener('load',m);})();</script>"
)


def chromium_path() -> str | None:
    """The Chromium binary: ``$CHROMIUM`` if set, else the first of CANDIDATES on PATH."""
    override = os.environ.get("CHROMIUM")
    if override:
        return shutil.which(override)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_chromium() -> str:
    path = chromium_path()
    if path is None:
        raise RuntimeError(
            "chromium not found (tried $CHROMIUM, " + ", ".join(CANDIDATES) + "); "
            "install Debian's chromium package: apt-get install -y chromium"
        )
    return path


def _page(html_path: str | os.PathLike[str]) -> Path:
    page = Path(html_path).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"no such page: {page}")
    return page


def _tail(stderr: str, lines: int = 15) -> str:
    kept = [line for line in stderr.splitlines() if line.strip() and not _NOISE.search(line)]
    return "\n".join(kept[-lines:]) or "(no stderr)"


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run Chromium headless with a fresh profile and ``args``; RuntimeError on failure."""
    binary = _require_chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",  # Chromium refuses its sandbox as root (CI containers run as root)
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *args,
        ]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            raise RuntimeError(
                f"chromium timed out after {timeout:g}s: {' '.join(cmd)}\n{_tail(err or '')}"
            ) from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"chromium failed (exit {proc.returncode}): {' '.join(cmd)}\n{_tail(proc.stderr)}"
        )
    return proc


def render_dom(
    html_path: str | os.PathLike[str], timeout: float = 60, width: int = 1400, height: int = 900
) -> str:
    """The page's DOM, serialised after its JavaScript ran (5 s of virtual time)."""
    page = _page(html_path)
    proc = _run(
        ["--hide-scrollbars", f"--window-size={width},{height}", "--dump-dom", page.as_uri()],
        timeout,
    )
    if not proc.stdout.strip():
        raise RuntimeError(f"chromium printed no DOM for {page}\n{_tail(proc.stderr)}")
    return proc.stdout


def png_size(png_path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header; ValueError if it is not a PNG."""
    with open(png_path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"not a PNG file: {png_path}")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def screenshot(
    html_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    width: int = 1400,
    height: int = 900,
    timeout: float = 60,
) -> Path:
    """Screenshot of the top ``width`` x ``height`` CSS pixels of the page, as a PNG."""
    page = _page(html_path)
    out = Path(png_path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    proc = _run(
        [
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        timeout,
    )
    try:
        png_size(out)
    except (OSError, ValueError):
        raise RuntimeError(
            f"chromium wrote no PNG screenshot of {page}\n{_tail(proc.stderr)}"
        ) from None
    return out


def page_height(html_path: str | os.PathLike[str], width: int = 1400, timeout: float = 60) -> int:
    """Full height in CSS pixels of the page laid out ``width`` pixels wide.

    Chromium's command line cannot report it, so a temporary copy of the page gets a
    ``<base href>`` pointing at the page's folder (relative images, scripts and styles still
    load) and a small script that writes the document height into an attribute of ``<html>``;
    the height is read back from ``--dump-dom``. It is measured in a 600-pixel-high window, so
    content sized by viewport units (``vh``) counts at that size.
    """
    page = _page(html_path)
    text = page.read_text(encoding="utf-8", errors="replace")
    inject = f'<base href="{page.parent.as_uri()}/">{_MEASURE_JS}'
    for pattern in (r"<head\b[^>]*>", r"<html\b[^>]*>", r"<!doctype\b[^>]*>"):
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            text = text[: match.end()] + inject + text[match.end() :]
            break
    else:
        text = inject + text
    with tempfile.TemporaryDirectory(prefix="chromium-measure-") as tmp:
        probe = Path(tmp) / page.name
        probe.write_text(text, encoding="utf-8")
        dom = render_dom(probe, timeout=timeout, width=width, height=600)
    match = re.search(_HEIGHT_ATTR + r'="(\d+)"', dom)
    if not match:
        raise RuntimeError(f"could not measure the height of {page}: no {_HEIGHT_ATTR} in DOM")
    return max(1, int(match.group(1)))


def full_page_screenshot(
    html_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    width: int = 1400,
    max_height: int = 32000,
    timeout: float = 60,
) -> tuple[Path, int, bool]:
    """Screenshot of the whole page: (PNG path, height used, whether it was cut at max_height)."""
    full = page_height(html_path, width=width, timeout=timeout)
    height = min(full, max_height)
    return screenshot(html_path, png_path, width, height, timeout), height, full > max_height
