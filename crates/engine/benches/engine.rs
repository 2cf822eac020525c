//! Benchmarks of the engine (BENCHMARKS.md has the figures and how they were taken).
//!
//! Run: `cargo bench -p ballast-engine --bench engine` (filter with e.g. `-- health`).
//!
//! * `apply_100k/*`: a pre-built stream of 200,000 `oracle` and `fill` commands applied to an
//!   engine holding 100,000 funded accounts; throughput in commands per second. Variants:
//!   mixed pre-parsed (the headline figure), fills only, oracles only, `parse_line` + apply
//!   from the JSON text, and `parse_line` alone.
//! * `apply_1k/mixed`: the same kind of stream over 1,000 accounts (everything in cache).
//! * `naive_snapshot/*`: the first 100 commands of the same stream, applied by our engine and
//!   by the naive way to get atomic rejection (clone the whole engine before each command,
//!   restore the clone on rejection).
//! * `health/*`: health of one cross account with 4 positions and one haircut collateral,
//!   against a naive f64 recomputation from the public state and against the public state view.

#[path = "support/workload.rs"]
mod workload;

use ballast_engine::account::{Account, Bucket};
use ballast_engine::oracle::Validity;
use ballast_engine::{parse_line, Engine, Event, TimedCommand};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;
use workload::*;

/// The measured loop: apply, hand the events on (here: drop them), next.
fn run(engine: &mut Engine, cmds: &[TimedCommand], events: &mut Vec<Event>) {
    for c in cmds {
        let r = engine.apply(c, events);
        black_box(&r);
        black_box(&events[..]);
        events.clear();
    }
}

/// The naive way to make a command atomic: snapshot the whole engine, apply, restore the
/// snapshot if the command was rejected.
fn run_naive(engine: &mut Engine, cmds: &[TimedCommand], events: &mut Vec<Event>) {
    for c in cmds {
        let snapshot = engine.clone();
        if engine.apply(c, events).is_err() {
            *engine = snapshot;
        }
        black_box(&events[..]);
        events.clear();
    }
}

fn bench_apply(c: &mut Criterion) {
    let w = workload(ACCOUNTS);
    let cell = OnceCell::new();
    let data = || cell.get_or_init(|| prepare(&w));
    let mut events = Vec::with_capacity(16);

    let mut g = c.benchmark_group("apply_100k");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(20));
    type Select = fn(&Prepared) -> &[TimedCommand];
    let variants: [(&str, usize, Select); 3] = [
        ("mixed", w.stream.len(), |p| &p.stream),
        ("fills_only", w.opens + w.closes, |p| &p.fills),
        ("oracles_only", w.oracles, |p| &p.oracles),
    ];
    for (name, len, cmds) in variants {
        g.throughput(Throughput::Elements(len as u64));
        g.bench_function(name, |b| {
            let p = data();
            b.iter_batched_ref(|| p.base.clone(), |e| run(e, cmds(p), &mut events), BatchSize::PerIteration)
        });
    }
    g.throughput(Throughput::Elements(w.stream.len() as u64));
    g.bench_function("mixed_parse_line_and_apply", |b| {
        let p = data();
        b.iter_batched_ref(
            || p.base.clone(),
            |e| {
                for line in &w.stream {
                    let cmd = parse_line(line).expect("valid line");
                    black_box(&e.apply(&cmd, &mut events));
                    events.clear();
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("mixed_parse_line_only", |b| {
        b.iter(|| {
            for line in &w.stream {
                black_box(parse_line(black_box(line)).expect("valid line"));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("naive_snapshot");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(NAIVE_COMMANDS as u64));
    g.bench_function("ours_first_100", |b| {
        let p = data();
        let first = &p.stream[..NAIVE_COMMANDS];
        b.iter_batched_ref(|| p.base.clone(), |e| run(e, first, &mut events), BatchSize::PerIteration)
    });
    g.bench_function("clone_per_command_first_100", |b| {
        let p = data();
        let first = &p.stream[..NAIVE_COMMANDS];
        b.iter_batched_ref(|| p.base.clone(), |e| run_naive(e, first, &mut events), BatchSize::PerIteration)
    });
    g.finish();

    let few = workload(FEW_ACCOUNTS);
    let cell = OnceCell::new();
    let mut g = c.benchmark_group("apply_1k");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(few.stream.len() as u64));
    g.bench_function("mixed", |b| {
        let p = cell.get_or_init(|| prepare(&few));
        b.iter_batched_ref(|| p.base.clone(), |e| run(e, &p.stream, &mut events), BatchSize::PerIteration)
    });
    g.finish();
}

// ---- health of one account ---------------------------------------------------------------

/// Health as f64 (equity, initial equity, initial, liquidation-end, maintenance).
#[derive(Debug, Clone, Copy, PartialEq)]
struct FloatHealth {
    equity: f64,
    initial_equity: f64,
    initial: f64,
    liquidation_end: f64,
    maintenance: f64,
}

/// The naive first version: recompute health from the public state in f64, the textbook
/// formulas (value = size × mark + cash leg − funding owed; requirement = notional × tier rate −
/// tier deduction, tier looked up by floor; collateral = amount × price × weight). No rounding
/// direction, no overflow checks, no volatility or open-interest terms (the markets here have
/// none).
#[allow(clippy::float_arithmetic)]
fn naive_f64_health(engine: &Engine, account: &Account) -> Option<FloatHealth> {
    let q = |raw: i128| raw as f64 / 1e6;
    let r = |raw: i64| raw as f64 / 1e8;
    let cash = q(account.cash.raw());
    let mut h =
        FloatHealth { equity: cash, initial_equity: cash, initial: 0.0, liquidation_end: 0.0, maintenance: 0.0 };
    for (m, pos) in &account.cross {
        let market = &engine.markets()[*m as usize];
        let mark = r(market.mark()?.raw());
        let size = pos.size.raw() as f64 / 1e8;
        let funding = (market.funding_index.raw() - pos.funding_index.raw()) as f64 / 1e16 * size;
        let value = size * mark + q(pos.quote.raw()) - funding;
        let notional = size.abs() * mark;
        let rows = market.tiers.rows();
        let tier = rows.iter().rev().find(|t| q(t.floor.raw()) <= notional).unwrap_or(&rows[0]);
        let maintenance = notional * r(tier.maintenance_margin.raw()) - q(tier.maintenance_deduction.raw());
        let initial = notional * r(tier.initial_margin.raw()) - q(tier.initial_deduction.raw());
        let share = r(market.params.liquidation_end_share.raw());
        h.equity += value;
        h.initial_equity += value;
        h.initial += initial;
        h.maintenance += maintenance;
        h.liquidation_end += maintenance + share * (initial - maintenance);
    }
    for (a, amount) in &account.collateral {
        let asset = &engine.assets()[*a as usize];
        let Some(price) = asset.feed.price() else { continue };
        let value = amount.raw() as f64 / 1e8 * r(price.raw());
        h.equity += value * r(asset.params.maintenance_weight.raw());
        if asset.feed.validity(&asset.params.oracle, engine.now()) == Validity::Valid {
            h.initial_equity += value * r(asset.params.initial_weight.raw());
        }
    }
    Some(h)
}

fn bench_health(c: &mut Criterion) {
    let engine = health_engine();
    let carol = engine.account("carol").expect("carol exists");
    assert_eq!(carol.cross.len(), 4);
    assert_eq!(carol.collateral.len(), 1);
    let ours = engine.health(carol, Bucket::Cross).expect("health");
    let naive = naive_f64_health(&engine, carol).expect("priced");
    eprintln!("health: ours {ours:?}\nhealth: naive f64 {naive:?}");

    let mut g = c.benchmark_group("health");
    g.bench_function("ours_4_positions_1_collateral", |b| {
        b.iter(|| black_box(&engine).health(black_box(carol), Bucket::Cross).expect("health"))
    });
    g.bench_function("naive_f64_recompute", |b| {
        b.iter(|| naive_f64_health(black_box(&engine), black_box(carol)).expect("priced"))
    });
    g.bench_function("naive_state_view", |b| {
        b.iter(|| {
            let view = black_box(&engine).view().expect("view");
            let a = &view.accounts["carol"];
            black_box((a.equity, a.initial_equity, a.initial_requirement, a.maintenance_requirement));
        })
    });
    g.finish();
}

criterion_group!(benches, bench_health, bench_apply);
criterion_main!(benches);
