#!/usr/bin/env bash
# Render a niflow HTML report in headless Chromium and save a full-page screenshot, to check
# that the page renders and to look at it.
#
# Usage: scripts/check_report.sh RUN_OR_REPORT_HTML [OUT_PNG] [WIDTHxHEIGHT]
#   RUN_OR_REPORT_HTML  a run folder (its report.html is written first if missing) or a page
#   OUT_PNG             screenshot to write (default: next to the page, report.png)
#   WIDTHxHEIGHT        window size (default 1400x3000)
#
# Needs Debian's chromium (`apt-get install -y chromium`, /usr/bin/chromium, or set CHROMIUM).
# The page must be self-contained: networking is switched off and Chromium gets a fresh,
# throw-away profile. Exits 0 when a PNG screenshot was written.
set -euo pipefail

if [ $# -lt 1 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
target=$1
chromium=${CHROMIUM:-/usr/bin/chromium}
niflow=${NIFLOW:-niflow}
size=${3:-1400x3000}

if [ -d "$target" ]; then
    page="$target/report.html"
    if [ ! -f "$page" ]; then
        "$niflow" report "$target"
    fi
else
    page=$target
fi
if [ ! -f "$page" ]; then
    echo "check_report: no report at $page" >&2
    exit 2
fi
out=${2:-$(dirname "$page")/report.png}
if [ ! -x "$chromium" ]; then
    echo "check_report: $chromium not found; install Debian's chromium package" >&2
    exit 2
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
abs_page=$(cd "$(dirname "$page")" && pwd)/$(basename "$page")
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
rm -f "$abs_out"
# --no-sandbox: Chromium refuses to start its sandbox as root (CI containers run as root)
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size="${size/x/,}" \
    --screenshot="$abs_out" "file://$abs_page" >/dev/null 2>&1 || true
if [ ! -s "$abs_out" ] || [ "$(head -c 8 "$abs_out" | od -An -tx1 | tr -d ' \n')" != \
        "89504e470d0a1a0a" ]; then
    echo "check_report: chromium wrote no screenshot of $abs_page" >&2
    exit 1
fi
echo "wrote $abs_out"
