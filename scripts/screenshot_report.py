#!/usr/bin/env python3
"""Full-page screenshot of an HTML report in headless Chromium.

Usage: python scripts/screenshot_report.py RUN_DIR/report.html OUT.png [--width 1400] [--height N]

Without --height the page's full height is measured first (one extra Chromium run, about a
second) and the screenshot covers the whole page, cut at --max-height (default 32000 px).
--height N takes the top N pixels instead. Needs Debian's chromium (apt-get install -y chromium)
or $CHROMIUM; the page must be self-contained, since networking is switched off.
Exits 0 with "wrote OUT.png (WxH)", 2 with a one-line message when chromium or the page is
missing or an argument is bad, 1 when chromium fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _chromium import chromium_path, full_page_screenshot, png_size, screenshot


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels: {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="screenshot_report.py", description="Full-page screenshot of an HTML report."
    )
    parser.add_argument("page", type=Path, help="the HTML page, e.g. RUN_DIR/report.html")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--width", type=_positive, default=1400, help="window width (1400)")
    parser.add_argument(
        "--height", type=_positive, default=None, help="fixed height (default: the full page)"
    )
    parser.add_argument(
        "--max-height", type=_positive, default=32000, help="cap on the measured height (32000)"
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds per chromium run")
    args = parser.parse_args(argv)

    if not args.page.is_file():
        print(f"screenshot_report: no such page: {args.page}", file=sys.stderr)
        return 2
    if chromium_path() is None:
        print(
            "screenshot_report: chromium not found; install it: apt-get install -y chromium",
            file=sys.stderr,
        )
        return 2
    try:
        if args.height is None:
            out, _, cut = full_page_screenshot(
                args.page, args.out, args.width, args.max_height, args.timeout
            )
            if cut:
                print(
                    f"screenshot_report: page is taller than --max-height {args.max_height}; "
                    "screenshot cut",
                    file=sys.stderr,
                )
        else:
            out = screenshot(args.page, args.out, args.width, args.height, args.timeout)
    except RuntimeError as exc:
        print(f"screenshot_report: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    width, height = png_size(out)
    print(f"wrote {out} ({width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
