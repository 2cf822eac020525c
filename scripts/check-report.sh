#!/usr/bin/env bash
# Render a report.html in headless Chromium to a PNG, to check that the charts draw and nothing
# is blank. Usage: scripts/check-report.sh REPORT.html [OUT.png] [HEIGHT]
# Needs Debian's chromium (apt-get install -y chromium); installs it when missing and root.
set -euo pipefail
report=${1:?usage: scripts/check-report.sh REPORT.html [OUT.png] [HEIGHT]}
out=${2:-${report%.html}.png}
height=${3:-6000}
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is not installed (apt-get install -y chromium)" >&2
        exit 1
    fi
fi
abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: chromium refuses to run as root otherwise. The page loads nothing from the
# network (inline SVG and CSS only); --disable-background-networking keeps chromium itself quiet.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --disable-background-networking \
    --user-data-dir="$profile" --window-size=1000,"$height" --screenshot="$out_abs" "file://$abs" >/dev/null 2>&1
# A blank page compresses to almost nothing: fail on a suspiciously small screenshot.
size=$(stat -c %s "$out_abs")
if [ "$size" -lt 20000 ]; then
    echo "screenshot $out_abs is only $size bytes: the report looks blank" >&2
    exit 1
fi
echo "$out_abs ($size bytes)"
