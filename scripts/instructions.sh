#!/usr/bin/env bash
# Instructions per operation of the engine's hot paths, counted by callgrind: the same on every
# run of the same binary, unlike wall time on a shared machine. Needs valgrind
# (Debian: apt-get install valgrind). See crates/engine/examples/instructions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p ballast-engine --example instructions
bin=target/release/examples/instructions
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf '%-8s %14s %10s %18s\n' case instructions ops "instructions/op"
for case in "${@:-mixed fills oracles health}"; do
    for c in $case; do
        ops=$(valgrind --tool=callgrind --callgrind-out-file="$tmp/$c.out" --collect-atstart=no \
            --toggle-collect='*measured*' "$bin" "$c" 2>"$tmp/$c.log" | sed -n 's/^ops=//p')
        total=$(sed -n 's/^totals: *//p;s/^summary: *//p' "$tmp/$c.out" | head -1 | awk '{print $1}')
        printf '%-8s %14s %10s %18s\n' "$c" "$total" "$ops" "$((total / ops))"
    done
done
