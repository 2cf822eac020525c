//! Instruction counts of the engine's hot paths: deterministic where wall time is noisy (this
//! project's machines are shared virtual machines). Counts are per operation and exclude the
//! setup: only the function `measured` is collected.
//!
//! `scripts/instructions.sh` runs every case under callgrind and prints the counts; one case by
//! hand:
//!
//! ```sh
//! cargo build --release -p ballast-engine --example instructions
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' \
//!     target/release/examples/instructions mixed
//! ```
//!
//! Cases: `mixed`, `fills`, `oracles` (the 200,000-command stream of the `apply_100k` benchmark,
//! over 100,000 accounts) and `health` (10,000 health computations of the benchmark's account with
//! 4 positions and one collateral).

#[path = "../benches/support/workload.rs"]
mod workload;

use ballast_engine::account::Bucket;
use ballast_engine::{Engine, Event, TimedCommand};
use std::hint::black_box;
use workload::{health_engine, prepare, workload, ACCOUNTS};

const HEALTH_CALLS: usize = 10_000;

fn main() {
    let case = std::env::args().nth(1).unwrap_or_else(|| "mixed".into());
    let ops = match case.as_str() {
        "mixed" | "fills" | "oracles" => {
            let data = prepare(&workload(ACCOUNTS));
            let stream: Vec<TimedCommand> = match case.as_str() {
                "fills" => data.fills,
                "oracles" => data.oracles,
                _ => data.stream,
            };
            let mut engine = data.base;
            measured_apply(&mut engine, &stream);
            stream.len()
        }
        "health" => {
            let engine = health_engine();
            measured_health(&engine);
            HEALTH_CALLS
        }
        other => {
            eprintln!("unknown case {other}; use mixed, fills, oracles or health");
            std::process::exit(2);
        }
    };
    // Read by scripts/instructions.sh.
    println!("ops={ops}");
}

#[inline(never)]
fn measured_apply(engine: &mut Engine, stream: &[TimedCommand]) {
    let mut events: Vec<Event> = Vec::with_capacity(8);
    for c in stream {
        // Every command of these workloads is accepted (`prepare` checks it before).
        black_box(engine.apply(c, &mut events).is_ok());
        events.clear();
    }
}

#[inline(never)]
fn measured_health(engine: &Engine) {
    let carol = engine.account("carol").expect("carol exists");
    for _ in 0..HEALTH_CALLS {
        black_box(engine.health(black_box(carol), Bucket::Cross).expect("health"));
    }
}
