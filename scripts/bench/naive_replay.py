#!/usr/bin/env python3
"""The baseline of BENCHMARKS.md §5: a liquidation replay written the way a risk analyst would
write it, in vectorized numpy, scanning every account at every step.

    python3 scripts/bench/naive_replay.py POSITIONS.csv [--bars CSV] [--start ...] [--end ...]

Book: isolated positions, one market, read from a positions CSV (`account,side,size,
entry_price,isolated_margin`, the lab's positions file). Path: the lab's intra-bar expansion of
a CSV of bars (docs/scenarios.md "Intra-bar path", crates/lab/src/data.rs `intrabar_points`):
each bar gives four points, open at 0, the extreme nearer to the open at 1/4 of the bar, the
farther at 1/2, close at 3/4 (equally near: first the extreme the bar does not close at), and the
price at each grid time `start, start + step, ..., end` is the linear interpolation between
points. Rule, at every step: equity = margin + side x size x (price - entry); an open position
whose equity is below maintenance (maintenance_margin x size x price) is closed whole at the
step's price; it pays a fee of insurance_fee x notional to the fund, capped at its remaining
equity; a negative equity is bad debt, paid from the fund.

Prints one JSON object: the figures and the time spent loading and replaying.
"""

import argparse
import csv
import json
import sys
import time
from datetime import datetime, timezone

import numpy as np


def parse_utc(s):
    """ISO 8601 UTC ('2025-10-10T12:00:00Z') to epoch milliseconds."""
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp() * 1000)


def read_bars(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    ts = np.array([parse_utc(r["timestamp_utc"]) for r in rows], dtype=np.int64)
    cols = {k: np.array([float(r[k]) for r in rows]) for k in ("open", "high", "low", "close")}
    return ts, cols["open"], cols["high"], cols["low"], cols["close"]


def intrabar_points(ts, o, h, l, c):
    """Four points per bar at 0, 1/4, 1/2 and 3/4 of the bar (the lab's expansion)."""
    d = int(np.diff(ts).min())  # the bar size: the smallest spacing
    up, down = np.abs(h - o), np.abs(o - l)
    high_first = np.where(up < down, True, np.where(up > down, False, c <= o))
    first = np.where(high_first, h, l)
    second = np.where(high_first, l, h)
    t = np.stack([ts, ts + d // 4, ts + d // 2, ts + 3 * d // 4], axis=1).ravel()
    p = np.stack([o, first, second, c], axis=1).ravel()
    return t, p


def grid_path(bars, start, end, step_ms):
    ts, o, h, l, c = read_bars(bars)
    t, p = intrabar_points(ts, o, h, l, c)
    times = np.arange(start, end + 1, step_ms, dtype=np.int64)
    return times, np.interp(times.astype(np.float64), t.astype(np.float64), p)


def read_positions(path):
    """The positions CSV, columns by name; side long/buy = +1, short/sell = -1."""
    with open(path) as f:
        header = f.readline().strip().split(",")
    col = {name: i for i, name in enumerate(header)}
    num = np.loadtxt(path, delimiter=",", skiprows=1,
                     usecols=(col["size"], col["entry_price"], col["isolated_margin"]), ndmin=2)
    side = np.loadtxt(path, delimiter=",", skiprows=1, usecols=col["side"], dtype="U5", ndmin=1)
    sign = np.where(np.isin(side, ("long", "buy")), 1.0, -1.0)
    return sign, num[:, 0], num[:, 1], num[:, 2]


def replay(path, sign, size, entry, margin, mm, insurance_fee, fund):
    """Every account at every step: liquidate whole at maintenance, fee to the fund, bad debt from it."""
    alive = np.ones(size.shape[0], dtype=bool)
    liquidated = 0
    notional_closed = fees = bad_debt = 0.0
    fund_min = fund
    for price in path:
        equity = margin + sign * size * (price - entry)
        notional = size * price
        hit = alive & (equity < mm * notional)
        if hit.any():
            e, n = equity[hit], notional[hit]
            fee = np.minimum(insurance_fee * n, np.maximum(e, 0.0))
            deficit = np.maximum(-e, 0.0).sum()
            fees += fee.sum()
            bad_debt += deficit
            fund += fee.sum() - deficit
            fund_min = min(fund_min, fund)
            liquidated += int(hit.sum())
            notional_closed += n.sum()
            alive &= ~hit
    return {
        "liquidated_accounts": liquidated,
        "liquidated_notional": round(notional_closed, 2),
        "fees_to_fund": round(fees, 2),
        "bad_debt": round(bad_debt, 2),
        "insurance_fund_end": round(fund, 2),
        "insurance_fund_min": round(fund_min, 2),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("positions")
    ap.add_argument("--bars", default="data/btc-usdt-perp-5m-2025-10.csv")
    ap.add_argument("--start", default="2025-10-10T12:00:00Z")
    ap.add_argument("--end", default="2025-10-11T04:00:00Z")
    ap.add_argument("--step-ms", type=int, default=15000)
    ap.add_argument("--maintenance-margin", type=float, default=0.01)
    ap.add_argument("--insurance-fee", type=float, default=0.01)
    ap.add_argument("--fund", type=float, default=1e9)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    _, path = grid_path(a.bars, parse_utc(a.start), parse_utc(a.end), a.step_ms)
    sign, size, entry, margin = read_positions(a.positions)
    t1 = time.perf_counter()
    out = replay(path, sign, size, entry, margin, a.maintenance_margin, a.insurance_fee, a.fund)
    t2 = time.perf_counter()
    out = {"accounts": int(size.shape[0]), "steps": int(path.shape[0]), **out,
           "load_s": round(t1 - t0, 3), "replay_s": round(t2 - t1, 3)}
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
