"""Headless Chromium for tests: the DOM after JavaScript ran, and screenshots.

The logic lives in ``scripts/_chromium.py`` (shared with ``scripts/screenshot_report.py``); this
module loads that file and re-exports it. Tests call ``chromium_path()`` and skip when it is
None (CI has no Chromium; on a developer machine: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SOURCE = Path(__file__).resolve().parents[1] / "scripts" / "_chromium.py"


def _load():
    name = "_niflow_scripts_chromium"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_chromium = _load()

chromium_path = _chromium.chromium_path
render_dom = _chromium.render_dom
screenshot = _chromium.screenshot
page_height = _chromium.page_height
full_page_screenshot = _chromium.full_page_screenshot
png_size = _chromium.png_size

__all__ = [
    "chromium_path",
    "full_page_screenshot",
    "page_height",
    "png_size",
    "render_dom",
    "screenshot",
]
