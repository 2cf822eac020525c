//! The 1,000,000-account population of `benches/liquidation.rs` (issue 6), built through
//! `Engine::apply` like any venue would build it: `create_market`, `oracle`, one `deposit` and
//! one `fill` per account.
//!
//! One market, BTC-PERP at 60,000: initial 0.1, maintenance 0.05 (no tiers), default
//! liquidation parameters (liquidation ends half-way between maintenance and initial), default
//! oracle (any source, quorum 1, no jump guard), no fees, no volatility margin.
//!
//! Accounts `acct-0000000` … `acct-0999999` (by default): even index cross, odd index isolated (the `deposit`
//! goes to the BTC-PERP isolated bucket). Each deposits 1,000–100,000 USDC (whole units,
//! uniform) and trades once against one of [`MAKERS`] market makers (cross, 10^11 USDC each):
//! - [`RISKY`] accounts (every 100th, half cross, half isolated) go long at 3.05–3.30×
//!   leverage. A 30% fall costs them 91.5–99% of their equity while maintenance is 3.5% of
//!   the old notional, i.e. 10.7–11.6% of their equity: every one is below maintenance and
//!   none is bankrupt, so the crash issues liquidation orders (no insurance, no deleveraging).
//!   Liquidatable needs a leverage above 1/0.335 = 2.985×, solvency one below 1/0.3 = 3.33×.
//! - the others go long at 1.00–1.30× (a 30% fall leaves them at ≥ 0.61 of their equity, far
//!   above maintenance) or short at 1.00–3.00× (they gain on a fall), half and half.
//!
//! The smallest buffer in the population is a 3.30× long's: equity − maintenance = 25.3% of its
//! notional, so its trigger sits 25.3% (less rounding) below 60,000: a ±0.01% step crosses
//! no entry of the index.

#![allow(dead_code)] // each user takes what it needs

use ballast_engine::command::{Deposit, Fill, OraclePrice, Side};
use ballast_engine::num::{Price, Size};
use ballast_engine::{parse_line, Command, Engine, TimedCommand};

/// Accounts in the population: 1,000,000, or `BALLAST_BENCH_ACCOUNTS` (a multiple of 100) to
/// see how the figures scale.
pub fn accounts() -> usize {
    match std::env::var("BALLAST_BENCH_ACCOUNTS") {
        Ok(n) => n.parse().expect("BALLAST_BENCH_ACCOUNTS is a number"),
        Err(_) => 1_000_000,
    }
}
/// Every 100th account is a risky long.
pub fn risky(accounts: usize) -> usize {
    accounts / 100
}
pub const MAKERS: usize = 4;
pub const MARKET: &str = "BTC-PERP";
pub const SOURCE: &str = "s1";
/// 60,000 in raw price units (8 decimals).
pub const PRICE: i64 = 60_000 * 100_000_000;
/// `ts` of every set-up command after the market's creation.
pub const SETUP_TS: u64 = 1_000;

/// splitmix64, as in `workload.rs` (no extra dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

pub fn account(i: usize) -> String {
    format!("acct-{i:07}")
}

pub fn maker(k: usize) -> String {
    format!("mm-{k}")
}

/// Whether account `i` is one of the risky longs: the 100th accounts `i ≡ 0 (mod 100)` in even
/// hundreds (cross) and `i ≡ 1 (mod 100)` in odd hundreds (isolated).
pub fn is_risky(i: usize) -> bool {
    i % 100 == (i / 100) % 2
}

pub fn oracle(ts: u64, raw_price: i64) -> TimedCommand {
    TimedCommand {
        ts,
        cmd: Command::Oracle(OraclePrice {
            market: Some(MARKET.to_string()),
            asset: None,
            source: SOURCE.to_string(),
            price: Price::from_raw(raw_price),
            publish_ts: None,
        }),
    }
}

/// What the population holds, counted while building it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Census {
    pub cross: usize,
    pub isolated: usize,
    pub risky_cross: usize,
    pub risky_isolated: usize,
    pub safe_longs: usize,
    pub shorts: usize,
}

/// Build the population. Commands are made one at a time as `TimedCommand` values (no JSON) and
/// applied at once; every one must be accepted.
pub fn build(accounts: usize) -> (Engine, Census) {
    assert!(accounts > 0 && accounts.is_multiple_of(100), "a multiple of 100 accounts");
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let mut run = |engine: &mut Engine, cmd: &TimedCommand| {
        if let Err(e) = engine.apply(cmd, &mut events) {
            panic!("set-up command rejected: {e} ({cmd:?})");
        }
        events.clear();
    };
    let setup = format!(
        r#"{{"ts":0,"cmd":"create_market","market":"{MARKET}","initial_margin":"0.1","maintenance_margin":"0.05"}}"#
    );
    run(&mut engine, &parse_line(&setup).expect("valid create_market"));
    run(&mut engine, &oracle(SETUP_TS, PRICE));
    for k in 0..MAKERS {
        let d = deposit(maker(k), 100_000_000_000, None);
        run(&mut engine, &d);
    }
    let mut rng = Rng(6);
    let mut census = Census::default();
    let start = std::time::Instant::now();
    for i in 0..accounts {
        if i > 0 && i % 100_000 == 0 {
            eprintln!("population: {i} accounts after {:.1?}", start.elapsed());
        }
        let id = account(i);
        let isolated = i % 2 == 1;
        let usdc = rng.range(1_000, 100_000);
        run(&mut engine, &deposit(id.clone(), usdc, isolated.then(|| MARKET.to_string())));
        // Leverage in thousandths; positive = long.
        let lev = if is_risky(i) {
            if isolated {
                census.risky_isolated += 1;
            } else {
                census.risky_cross += 1;
            }
            rng.range(3_050, 3_300)
        } else if rng.next().is_multiple_of(2) {
            census.safe_longs += 1;
            rng.range(1_000, 1_300)
        } else {
            census.shorts += 1;
            -rng.range(1_000, 3_000)
        };
        if isolated {
            census.isolated += 1;
        } else {
            census.cross += 1;
        }
        // size = usdc × leverage / 60,000 BTC, in raw units (1e-8), rounded down.
        let size = i128::from(usdc) * i128::from(lev.abs()) * 100_000_000 / (60_000 * 1_000);
        let mm = maker(i % MAKERS);
        let (buyer, seller) = if lev > 0 { (id, mm) } else { (mm, id) };
        let fill = TimedCommand {
            ts: SETUP_TS,
            cmd: Command::Fill(Fill {
                market: MARKET.to_string(),
                buyer,
                seller,
                size: Size::from_raw(size),
                price: Price::from_raw(PRICE),
                taker: Side::Buyer,
                liquidation: false,
            }),
        };
        run(&mut engine, &fill);
    }
    (engine, census)
}

fn deposit(account: String, usdc: i64, isolated: Option<String>) -> TimedCommand {
    TimedCommand {
        ts: SETUP_TS,
        cmd: Command::Deposit(Deposit {
            account,
            asset: "USDC".to_string(),
            amount: Size::from_raw(i128::from(usdc) * 100_000_000),
            isolated,
        }),
    }
}

/// The process's resident set size in KiB (Linux), if readable.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
