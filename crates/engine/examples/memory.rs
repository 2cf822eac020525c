//! Memory per account: N accounts, each with one cross position, created through real commands
//! (`deposit`, then a `fill` between accounts 2k and 2k+1) applied with `Engine::apply`.
//!
//! Run: `cargo run --release -p ballast-engine --example memory -- 1000000`
//!
//! A counting global allocator wraps the system allocator and tracks the bytes requested and
//! not yet freed (live bytes) and a histogram of live allocations by size. Reported:
//! * live bytes per account (the engine after setup minus the engine with its market and price)
//!   and the live allocations by size, for the breakdown;
//! * the resident set size growth of the engine, which includes the allocator's own per-chunk
//!   overhead;
//! * the same accounts in a naive layout measured in the same run: a `HashMap<String, _>` of
//!   accounts, each with a `BTreeMap<String, i128>` of balances and a `BTreeMap<String, _>` of
//!   positions keyed by market name.

use ballast_engine::{parse_line, Engine};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed};

/// Allocation sizes tracked one by one; larger ones go to one bucket.
const SMALL: usize = 1024;
/// Live allocations of at least this size are also listed one by one (the big tables).
const HUGE: usize = 1 << 20;
const HUGE_SLOTS: usize = 64;

struct Counting {
    live: AtomicUsize,
    /// Live allocations per exact size (index = size) for sizes < SMALL.
    count: [AtomicI64; SMALL],
    large_count: AtomicI64,
    large_bytes: AtomicI64,
    /// Sizes of the live allocations of at least HUGE bytes (0: free slot).
    huge: [AtomicUsize; HUGE_SLOTS],
}

impl Counting {
    fn add(&self, size: usize, sign: i64) {
        if sign > 0 {
            self.live.fetch_add(size, Relaxed);
        } else {
            self.live.fetch_sub(size, Relaxed);
        }
        if size < SMALL {
            self.count[size].fetch_add(sign, Relaxed);
        } else {
            self.large_count.fetch_add(sign, Relaxed);
            self.large_bytes.fetch_add(sign * size as i64, Relaxed);
        }
        if size >= HUGE {
            // Record or forget one slot holding this size (sizes of equal value are interchangeable).
            let (from, to) = if sign > 0 { (0, size) } else { (size, 0) };
            let _ = self.huge.iter().any(|slot| slot.compare_exchange(from, to, Relaxed, Relaxed).is_ok());
        }
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.add(layout.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.add(layout.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        self.add(layout.size(), -1);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.add(layout.size(), -1);
            self.add(new_size, 1);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting {
    live: AtomicUsize::new(0),
    count: [const { AtomicI64::new(0) }; SMALL],
    large_count: AtomicI64::new(0),
    large_bytes: AtomicI64::new(0),
    huge: [const { AtomicUsize::new(0) }; HUGE_SLOTS],
};

fn live() -> usize {
    ALLOC.live.load(Relaxed)
}

/// Live allocation counts per size (small sizes) and the large bucket, as a snapshot.
fn histogram() -> (Vec<i64>, i64, i64) {
    let small = ALLOC.count.iter().map(|c| c.load(Relaxed)).collect();
    (small, ALLOC.large_count.load(Relaxed), ALLOC.large_bytes.load(Relaxed))
}

/// Sizes of the live allocations of at least HUGE bytes, largest first.
fn huge() -> Vec<usize> {
    let mut v: Vec<usize> = ALLOC.huge.iter().map(|s| s.load(Relaxed)).filter(|&s| s != 0).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// Resident set size in bytes, from /proc (0 where unavailable).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn account(i: usize) -> String {
    format!("acct-{i:07}")
}

/// The naive layout: everything keyed by strings, one ordered map per account and concern.
#[allow(dead_code)]
#[derive(Default)]
struct NaivePosition {
    size: i128,
    quote: i128,
    funding_index: i128,
}

#[derive(Default)]
struct NaiveAccount {
    balances: BTreeMap<String, i128>,
    positions: BTreeMap<String, NaivePosition>,
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().expect("N: a number of accounts")).unwrap_or(1_000_000);
    assert!(n >= 2 && n.is_multiple_of(2), "N must be even (accounts trade in pairs)");

    let mut engine = Engine::new();
    // The event buffer is reused (cleared after each command) and exists before the baseline.
    let mut events = Vec::new();
    let mut apply = |engine: &mut Engine, line: &str| {
        let cmd = parse_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        engine.apply(&cmd, &mut events).unwrap_or_else(|e| panic!("rejected: {e}: {line}"));
        events.clear();
    };
    apply(
        &mut engine,
        r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.05","maintenance_margin":"0.025","taker_fee":"0.0005","maker_fee":"0.0002"}"#,
    );
    apply(&mut engine, r#"{"ts":1000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"60000"}"#);
    let (base_live, base_rss, base_hist, base_huge) = (live(), rss(), histogram(), huge());

    for i in 0..n {
        let line =
            format!(r#"{{"ts":1000,"cmd":"deposit","account":"{}","asset":"USDC","amount":"10000"}}"#, account(i));
        apply(&mut engine, &line);
    }
    for i in (0..n).step_by(2) {
        let line = format!(
            r#"{{"ts":1000,"cmd":"fill","market":"BTC-PERP","buyer":"{}","seller":"{}","size":"0.01","price":"60000"}}"#,
            account(i),
            account(i + 1)
        );
        apply(&mut engine, &line);
    }
    assert_eq!(engine.accounts().count(), n);
    assert!(engine.accounts().all(|(_, a)| a.cross.len() == 1 && a.isolated.is_empty() && a.collateral.is_empty()));
    let (ours_live, ours_rss, hist) = (live() - base_live, rss().saturating_sub(base_rss), histogram());

    println!("accounts: {n}, each with one cross position (BTC-PERP) and a USDC balance");
    println!("engine: {ours_live} live bytes = {:.1} bytes/account", per(ours_live as i64, n));
    println!("engine: resident set growth {ours_rss} bytes = {:.1} bytes/account", per(ours_rss as i64, n));
    println!(
        "sizes: Account {} B, (market, Position) entry {} B, id {} B (inline up to 24 bytes)",
        std::mem::size_of::<ballast_engine::account::Account>(),
        std::mem::size_of::<(u32, ballast_engine::account::Position)>(),
        std::mem::size_of::<ballast_engine::event::Id>()
    );
    println!("live allocations added, by size (count x size = bytes, bytes/account):");
    for (size, (now, before)) in hist.0.iter().zip(&base_hist.0).enumerate() {
        let count = now - before;
        if count != 0 {
            let bytes = count * size as i64;
            println!("  {count:>9} x {size:>4} B = {bytes:>11} B  {:>7.1} B/account", per(bytes, n));
        }
    }
    let (large_count, large_bytes) = (hist.1 - base_hist.1, hist.2 - base_hist.2);
    println!("  {large_count:>9} of >= {SMALL} B = {large_bytes:>11} B  {:>7.1} B/account", per(large_bytes, n));
    for size in huge().into_iter().filter(|s| !base_huge.contains(s)) {
        println!("      one of {size:>11} B  {:>7.1} B/account", per(size as i64, n));
    }
    drop(engine);

    // The naive layout, same accounts, same run. (Its resident set growth is not comparable:
    // it reuses the pages the engine just freed.)
    let base_live = live();
    let mut naive: HashMap<String, NaiveAccount> = HashMap::new();
    for i in 0..n {
        let a = naive.entry(account(i)).or_default();
        a.balances.insert("USDC".to_string(), 10_000_000_000);
        let size = if i % 2 == 0 { 1_000_000 } else { -1_000_000 };
        a.positions.insert("BTC-PERP".to_string(), NaivePosition { size, quote: -size * 600, funding_index: 0 });
    }
    let naive_live = live() - base_live;
    println!(
        "naive HashMap<String, {{ BTreeMap<String, i128>, BTreeMap<String, Position> }}>: {naive_live} live bytes = {:.1} bytes/account",
        per(naive_live as i64, n)
    );
    assert_eq!(naive.len(), n);
}

#[allow(clippy::float_arithmetic)]
fn per(bytes: i64, n: usize) -> f64 {
    bytes as f64 / n as f64
}
