#!/usr/bin/env bash
# Issue 5's B2 comparison, paired: ROUNDS rounds (default 3) of two Ballast runs of
# scenarios/bench/replay.toml on the 10^6-account book, then one run of the numpy replay on the
# same file. Prints each run's wall time and the CPU time the hypervisor stole during it (in
# hundredths of a second), then every Ballast/numpy ratio of a round, their median and the
# ratio of the mean times.
# Wall time on a shared machine moves by ±15%; pairing runs close in time is what keeps the
# host's slow and quiet minutes out of the ratio. See BENCHMARKS.md §6 (B).
#
#   scripts/bench/b2.sh [ROUNDS]           # PYTHON=/path/to/python-with-numpy to choose it
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=${1:-3}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "b2: ROUNDS must be a positive number, got '$rounds'" >&2; exit 2; }
python=${PYTHON:-python3}
book=out/bench/positions-1m.csv
"$python" -c 'import numpy' 2>/dev/null || { echo "b2: $python has no numpy (set PYTHON)" >&2; exit 2; }
[ -f "$book" ] || "$python" scripts/bench/gen_positions.py 1000000 "$book"
cargo build --release -q -p ballast
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Hundredths of a CPU second the hypervisor has stolen since boot (Linux /proc/stat).
steal() { awk '/^cpu /{print $9}' /proc/stat; }
# Wall seconds of one command, its output discarded.
timed() { /usr/bin/time -f %e -o "$out/t" "$@" >/dev/null 2>"$out/err" || { cat "$out/err" >&2; exit 1; }; cat "$out/t"; }

# One line per pair: the numpy time, then the Ballast time.
pairs=()
printf '%-9s %-8s %8s %6s\n' time run seconds steal
for _ in $(seq "$rounds"); do
    pair=()
    for _ in 1 2; do
        s=$(steal)
        t=$(timed target/release/ballast stress scenarios/bench/replay.toml --summary-only --out "$out/r" \
            --set "population.file=$PWD/$book")
        printf '%-9s %-8s %8s %6s\n' "$(date -u +%H:%M:%S)" ballast "$t" "$(($(steal) - s))"
        pair+=("$t")
    done
    s=$(steal)
    n=$(timed "$python" scripts/bench/naive_replay.py "$book")
    printf '%-9s %-8s %8s %6s\n' "$(date -u +%H:%M:%S)" numpy "$n" "$(($(steal) - s))"
    for t in "${pair[@]}"; do
        pairs+=("$n $t")
    done
done
printf '%s\n' "${pairs[@]}" >"$out/pairs"
awk '{ printf "%.4f\n", $1 / $2 }' "$out/pairs" | sort -g | awk '
    { x[NR] = $1; if ($1 >= 10) met++ }
    END {
        printf "ratios:"; for (i = 1; i <= NR; i++) printf " %.2f", x[i]; printf "\n"
        median = (NR % 2) ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2
        printf "median pairing %.2fx (%d of %d at 10x or more)\n", median, met, NR
    }'
# Each numpy time stands in two pairs, so this is the mean numpy time over the mean Ballast time.
awk '{ n += $1; b += $2 } END { printf "ratio of the mean times %.2fx\n", n / b }' "$out/pairs"
