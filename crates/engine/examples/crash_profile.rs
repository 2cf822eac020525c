//! Time the 30% crash of the liquidation benchmark repeatedly, for profiling.
//!
//! `cargo run --release -p ballast-engine --example crash_profile -- [crashes]`: builds the
//! benchmark's population (`BALLAST_BENCH_ACCOUNTS`, default 1,000,000), then, as the benchmark
//! does, clones it, applies the crash to the clone (reusing one event buffer) and drops the
//! clone, once per crash; it prints each crash's wall and CPU time and the page faults it took
//! (none once the allocator reuses the memory of the dropped clones).
//! Run it under `perf record` to see where a crash step's time goes.

#[path = "../benches/support/population.rs"]
mod population;

use population::*;
use std::time::Instant;

/// The measured call (a separate function so that callgrind can collect it alone:
/// `--collect-atstart=no --toggle-collect='*crash_once*'`).
#[inline(never)]
fn crash_once(
    e: &mut ballast_engine::Engine,
    crash: &ballast_engine::TimedCommand,
    events: &mut Vec<ballast_engine::Event>,
) {
    e.apply(crash, events).expect("crash accepted");
}

/// Time this thread has run, in ns (Linux `/proc/thread-self/schedstat`): unlike wall time, it
/// leaves out the time other processes had the core.
fn cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    stat.split_whitespace().next().and_then(|s| s.parse().ok()).expect("run time in ns")
}

/// Minor page faults of this process so far (`/proc/self/stat`, field 10): fresh memory the
/// kernel had to map (and clear) for it.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux stat");
    // The command name (field 2) may hold spaces; count the fields after its closing ')'.
    let after = &stat[stat.rfind(')').expect("stat has the command name") + 2..];
    after.split_whitespace().nth(7).and_then(|s| s.parse().ok()).expect("minflt")
}

fn main() {
    let crashes: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let (engine, _) = build(accounts());
    let crash = oracle(engine.now() + 1, PRICE / 10 * 7);
    eprintln!("built; crashing {crashes} clones");
    // One event buffer, cleared and reused (the first crash maps its memory).
    let mut events = Vec::new();
    for _ in 0..crashes {
        let mut e = engine.clone();
        events.clear();
        let (t, cpu, faults) = (Instant::now(), cpu_ns(), minor_faults());
        crash_once(&mut e, &crash, &mut events);
        let (took, cpu, faults) = (t.elapsed(), cpu_ns() - cpu, minor_faults() - faults);
        let cpu = std::time::Duration::from_nanos(cpu);
        eprintln!("crash: {took:.2?} wall, {cpu:.2?} on the CPU, {faults} page faults, {} events", events.len());
    }
}
