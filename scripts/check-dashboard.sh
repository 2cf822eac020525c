#!/usr/bin/env bash
# Start `ballast serve` on a temporary data directory, post a story (the insurance-fund
# liquidation of examples/liquidation-insurance.jsonl), render the dashboard in headless
# Chromium and check that the DOM shows the market, the insurance fund and the live feed of
# liquidation events (which arrive over the WebSocket).
# Usage: scripts/check-dashboard.sh [OUT.png]   (a screenshot is written when OUT.png is given)
# Needs Debian's chromium and curl; uses $BALLAST or target/debug/ballast (builds it if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
shot=${1:-}
target=${CARGO_TARGET_DIR:-target}
bin=${BALLAST:-$target/debug/ballast}
if [ ! -x "$bin" ]; then
    cargo build -q -p ballast
fi
command -v chromium >/dev/null 2>&1 || { echo "chromium is not installed (apt-get install -y chromium)" >&2; exit 1; }

tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

cat > "$tmp/ballast.toml" <<TOML
[[key]]
name = "venue"
sha256 = "$(printf venue-key | "$bin" hash-key)"
role = "venue"

[[key]]
name = "oracle-s1"
sha256 = "$(printf oracle-key | "$bin" hash-key)"
role = "oracle"
source = "s1"

[[key]]
name = "dashboard"
sha256 = "$(printf viewer-key | "$bin" hash-key)"
role = "viewer"
TOML

"$bin" serve --config "$tmp/ballast.toml" --data-dir "$tmp/data" --listen 127.0.0.1:0 > "$tmp/out.txt" 2> "$tmp/err.txt" &
pid=$!
addr=
for _ in $(seq 1 100); do
    addr=$(grep -o 'http://[0-9.:]*' "$tmp/out.txt" 2>/dev/null || true)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "ballast serve did not start:"; cat "$tmp/err.txt"; exit 1; } >&2

grep -v '^#' examples/liquidation-insurance.jsonl | grep -v '^$' | while IFS= read -r line; do
    key=venue-key
    case "$line" in *'"cmd":"oracle"'*) key=oracle-key ;; esac
    code=$(curl -s -o "$tmp/reply.json" -w '%{http_code}' -H "Authorization: Bearer $key" --data-binary "$line" "$addr/v1/commands")
    [ "$code" = 200 ] || { echo "POST failed ($code): $(cat "$tmp/reply.json")" >&2; exit 1; }
done

profile="$tmp/profile"
# --virtual-time-budget lets the page's fetches and the WebSocket run before the DOM is dumped.
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --user-data-dir="$profile" \
    --virtual-time-budget=8000 --dump-dom "$addr/#key=viewer-key" > "$tmp/dom.html" 2>/dev/null
if [ -n "$shot" ]; then
    out_abs=$(cd "$(dirname "$shot")" && pwd)/$(basename "$shot")
    chromium --headless --no-sandbox --disable-gpu --disable-background-networking --user-data-dir="$profile" \
        --virtual-time-budget=8000 --window-size=1200,1000 --screenshot="$out_abs" "$addr/#key=viewer-key" >/dev/null 2>&1
    echo "screenshot: $out_abs"
fi

fail=0
for want in '<td>BTC-PERP</td>' 'insurance global' '95775' 'data-event="liquidation_started"' 'data-event="insurance_paid"' 'stream: live'; do
    if ! grep -qF "$want" "$tmp/dom.html"; then
        echo "the dashboard does not show: $want" >&2
        fail=1
    fi
done
if [ "$fail" = 1 ]; then
    cp "$tmp/dom.html" /tmp/ballast-dashboard-dom.html
    echo "DOM saved to /tmp/ballast-dashboard-dom.html" >&2
    exit 1
fi
echo "dashboard OK: markets, insurance fund and the live liquidation feed are shown"
