#!/usr/bin/env python3
"""A synthetic book of isolated BTC positions for BENCHMARKS.md §5 (seeded, reproducible).

    python3 scripts/bench/gen_positions.py N OUT.csv [--seed S]

Columns `account,side,size,entry_price,isolated_margin` (the lab's positions file). Each account
holds one isolated position opened around the path's first price: 70% longs, entry = first price
x exp(N(0, 0.5%)), notional log-normal (median 5,000 USDC, sigma 1.2, within [50, 90,000]),
leverage log-normal (median 10, sigma 0.6, within [1, 45]; the initial margin of 2% allows 49).
The margin is notional / leverage plus the loss of an entry away from the first price, so that
the opening fill passes the initial check, as the lab's generated accounts do.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from naive_replay import grid_path, parse_utc  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bars", default="data/btc-usdt-perp-5m-2025-10.csv")
    ap.add_argument("--start", default="2025-10-10T12:00:00Z")
    a = ap.parse_args(argv)
    start = parse_utc(a.start)
    first = float(grid_path(a.bars, start, start, 15000)[1][0])
    rng = np.random.default_rng(a.seed)
    n = a.n
    long = rng.random(n) < 0.7
    entry = np.round(first * np.exp(0.005 * rng.standard_normal(n)), 2)
    notional = np.clip(5000.0 * np.exp(1.2 * rng.standard_normal(n)), 50.0, 90_000.0)
    leverage = np.clip(10.0 * np.exp(0.6 * rng.standard_normal(n)), 1.0, 45.0)
    size = np.floor(notional / entry * 1e8) / 1e8
    size = np.maximum(size, 1e-6)
    upnl = np.where(long, size * (first - entry), size * (entry - first))
    margin = np.round(size * entry / leverage + np.maximum(-upnl, 0.0) + 0.01, 2)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("account,side,size,entry_price,isolated_margin\n")
        side = np.where(long, "long", "short")
        for i in range(n):
            f.write(f"p{i},{side[i]},{size[i]:.8f},{entry[i]:.2f},{margin[i]:.2f}\n")
    print(f"{n} positions around {first:.2f} in {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
