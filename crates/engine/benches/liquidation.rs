//! Liquidation detection with 1,000,000 accounts (issue 6; BENCHMARKS.md has the figures).
//!
//! Run: `cargo bench -p ballast-engine --bench liquidation` (filter with e.g. `-- oracle_step`).
//!
//! The population (`support/population.rs`) is built once, through `Engine::apply`, before any
//! group runs. Then, in this order:
//! Set `BALLAST_BENCH_ACCOUNTS` (a multiple of 100) for another population size; the group
//! names follow it (`liquidation_100k`, …).
//!
//! * `liquidation_1m/oracle_step_nobody_liquidated`: one `apply` of an `oracle` command moving
//!   BTC-PERP by ±0.01% (alternating up and down, `ts` + 1 ms each), on the live engine.
//! * `liquidation_1m/full_scan`: `Engine::scan_liquidatable()` at the same state: the health of
//!   every bucket, the naive detection the index replaces.
//! * `liquidation_1m_crash/crash_30pct_apply`: one `apply` of an `oracle` command at −30% on a
//!   fresh clone of the engine (the clone is not timed, nor the drop): detection of the 10,000
//!   buckets it pushes below maintenance plus their liquidation orders. The event buffer is
//!   reused across crashes (cleared), as a venue's event loop does;
//!   `crash_30pct_apply_fresh_buffer` gives it a new, empty buffer each time.
//! * `liquidation_1m_crash/full_scan_after_crash`: `scan_liquidatable()` at the crashed price.
//!
//! Every figure's outcome is checked outside the timing: the small step starts no liquidation
//! and the scan finds nobody; the crash starts exactly the liquidations the scan finds and
//! issues an order for each.

#[path = "support/population.rs"]
mod population;

use ballast_engine::{Engine, Event};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use population::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// 0.01% of the price, raw.
const STEP: i64 = PRICE / 10_000;
/// The price after a 30% fall, raw.
const CRASHED: i64 = PRICE / 10 * 7;

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

fn started(events: &[Event]) -> usize {
    count(events, |e| matches!(e, Event::LiquidationStarted { .. }))
}

fn orders(events: &[Event]) -> usize {
    count(events, |e| matches!(e, Event::LiquidationOrder { .. }))
}

/// Apply the two small steps (up, then back) at `ts` and `ts + 1` outside any timing and check
/// that they liquidate nobody.
fn check_small_steps(engine: &mut Engine, ts: u64) {
    let mut events = Vec::new();
    for (t, p) in [(ts, PRICE + STEP), (ts + 1, PRICE)] {
        engine.apply(&oracle(t, p), &mut events).expect("oracle accepted");
    }
    assert_eq!(started(&events), 0, "a ±0.01% step liquidated someone");
    assert_eq!(engine.liquidations().count(), 0);
}

fn bench_liquidation(c: &mut Criterion) {
    let rss_before = rss_kib();
    let t = Instant::now();
    let n = accounts();
    let expected = risky(n);
    let (mut engine, census) = build(n);
    let built = t.elapsed();
    let rss_after = rss_kib();
    let buckets = census.cross + census.isolated + MAKERS;
    eprintln!(
        "population: {} accounts + {MAKERS} makers ({} cross, {} isolated; {} risky longs: {} cross, {} isolated; \
         {} longs at 1.0-1.3x, {} shorts at 1.0-3.0x) built through apply in {:.2?}",
        n,
        census.cross,
        census.isolated,
        census.risky_cross + census.risky_isolated,
        census.risky_cross,
        census.risky_isolated,
        census.safe_longs,
        census.shorts,
        built
    );
    eprintln!(
        "detection index: {} filed buckets (of {buckets}); RSS {:?} KiB before building, {:?} KiB after",
        engine.filed_buckets(),
        rss_before,
        rss_after
    );
    assert_eq!(engine.filed_buckets(), buckets, "every bucket with a position is filed");

    // Nobody is liquidatable at the start, nor after a small step either way.
    let t = Instant::now();
    let found = engine.scan_liquidatable();
    eprintln!("full scan at 60,000: {} liquidatable, one scan {:.2?}", found.len(), t.elapsed());
    assert!(found.is_empty());
    let mut ts = engine.now() + 1;
    check_small_steps(&mut engine, ts);
    ts += 2;

    // Group names carry the population size: `liquidation_1m`, `liquidation_100k`, …
    let size = match n {
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    };
    let mut g = c.benchmark_group(format!("liquidation_{size}"));
    g.bench_function("oracle_step_nobody_liquidated", |b| {
        let mut cmds = [oracle(0, PRICE + STEP), oracle(0, PRICE)];
        let mut events = Vec::with_capacity(16);
        let (mut n, mut rejected) = (0usize, 0usize);
        b.iter(|| {
            let cmd = &mut cmds[n & 1];
            n += 1;
            cmd.ts = ts;
            ts += 1;
            let r = engine.apply(cmd, &mut events);
            rejected += usize::from(r.is_err());
            black_box(&events[..]);
            events.clear();
        });
        assert_eq!(rejected, 0, "every timed oracle step is accepted");
        // Leave the price at 60,000 for what follows.
        if n % 2 == 1 {
            engine.apply(&oracle(ts, PRICE), &mut events).expect("oracle accepted");
            ts += 1;
        }
    });
    check_small_steps(&mut engine, ts);
    ts += 2;
    assert_eq!(engine.filed_buckets(), buckets, "the small steps popped nothing from the index");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("full_scan", |b| b.iter(|| black_box(black_box(&engine).scan_liquidatable())));
    assert!(engine.scan_liquidatable().is_empty());
    g.finish();

    // The crash, on a clone each time.
    let crash = oracle(ts, CRASHED);
    {
        let mut e = engine.clone();
        let mut events = Vec::new();
        let t = Instant::now();
        e.apply(&crash, &mut events).expect("crash accepted");
        let took = t.elapsed();
        let (s, o) = (started(&events), orders(&events));
        let in_liquidation: Vec<u64> = e.liquidations().map(|(k, _)| k).collect();
        let mut scanned = e.scan_liquidatable();
        scanned.sort_unstable();
        eprintln!(
            "crash to 42,000 (check run, {took:.2?}): {} events, {s} liquidations started, {o} liquidation orders, \
             {} other events; full scan finds {} liquidatable; {} buckets left filed",
            events.len(),
            events.len() - s - o,
            scanned.len(),
            e.filed_buckets()
        );
        assert_eq!(s, expected, "the crash makes exactly the risky longs liquidatable");
        assert_eq!(o, expected, "one liquidation order each");
        assert_eq!(in_liquidation, scanned, "the index found exactly what the full scan finds");
        assert_eq!(e.filed_buckets(), buckets - expected);
    }
    // Criterion sizes the samples by the timed durations only (`iter_custom`), which leave out
    // the clone: 0.6 s of timed crashes make 10 samples of one to three crashes each, about
    // 30 clones in all with the warm-up.
    let mut g = c.benchmark_group(format!("liquidation_{size}_crash"));
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(60))
        .measurement_time(Duration::from_millis(600));
    // The clone (about 0.6 s at 1,000,000 accounts) and the drop are outside the timing.
    let crash_on_clones = |iters: u64, events: &mut Vec<Event>, reuse: bool| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let mut e = engine.clone();
            if !reuse {
                *events = Vec::new();
            }
            events.clear();
            let t = Instant::now();
            let r = e.apply(&crash, events);
            total += t.elapsed();
            black_box(&r);
        }
        total
    };
    // A venue's event loop clears and reuses its event buffer, so its memory is already mapped.
    let mut events = Vec::new();
    g.bench_function("crash_30pct_apply", |b| b.iter_custom(|iters| crash_on_clones(iters, &mut events, true)));
    // The same with a new, empty buffer each time: the 20,000 events (at most 144 bytes each)
    // then also pay for the kernel mapping about 2.9 MB of fresh pages.
    g.bench_function("crash_30pct_apply_fresh_buffer", |b| {
        b.iter_custom(|iters| crash_on_clones(iters, &mut Vec::new(), false))
    });
    let mut crashed = engine.clone();
    crashed.apply(&crash, &mut Vec::new()).expect("crash accepted");
    g.bench_function("full_scan_after_crash", |b| b.iter(|| black_box(black_box(&crashed).scan_liquidatable())));
    assert_eq!(crashed.scan_liquidatable().len(), expected);
    g.finish();
}

criterion_group!(benches, bench_liquidation);
criterion_main!(benches);
