//! The workloads of the engine benchmarks, shared by `benches/engine.rs` (wall time) and
//! `examples/instructions.rs` (instruction counts), so both measure exactly the same streams.

#![allow(dead_code)] // each user takes what it needs

use ballast_engine::{parse_line, Command, Engine, TimedCommand};
pub const ACCOUNTS: usize = 100_000;
/// The same stream over few accounts (all state in the CPU caches), to show the cost of
/// touching cold accounts.
pub const FEW_ACCOUNTS: usize = 1_000;
pub const STREAM: usize = 200_000;
pub const NAIVE_COMMANDS: usize = 100;

// ---- a tiny deterministic PRNG (no extra dependency) ----------------------------------------

pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// `cents` (price × 100) as a decimal string.
pub fn price_str(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// `milli` (size × 1000, signed) as a decimal string of its absolute value.
pub fn size_str(milli: i64) -> String {
    let m = milli.unsigned_abs();
    format!("{}.{:03}", m / 1000, m % 1000)
}

pub fn account(i: usize) -> String {
    format!("acct-{i:06}")
}

// ---- the 100k-account workload -----------------------------------------------------------

pub struct MarketSpec {
    pub id: &'static str,
    /// Starting price in cents.
    pub price: i64,
    /// Fill sizes for opening/adding, in thousandths of a unit.
    pub size_lo: i64,
    pub size_hi: i64,
}

pub const MARKETS: [MarketSpec; 2] = [
    MarketSpec { id: "BTC-PERP", price: 6_000_000, size_lo: 1, size_hi: 100 },
    MarketSpec { id: "ETH-PERP", price: 300_000, size_lo: 10, size_hi: 1_000 },
];
pub const SOURCES: [&str; 3] = ["binance", "okx", "kraken"];

pub struct Workload {
    /// Markets, funded accounts, first prices, one opening fill per account.
    pub setup: Vec<String>,
    /// The measured stream: oracle updates and fills, non-decreasing `ts`.
    pub stream: Vec<String>,
    pub oracles: usize,
    pub opens: usize,
    pub closes: usize,
}

/// Setup: two markets (3 weighted sources, quorum 2, two notional tiers, fees), `accounts`
/// with 100,000 USDC each, a price per market, and one BTC position per account (pairs of
/// accounts trade 0.05 BTC), so the stream meets accounts that already hold positions.
///
/// Stream: 20% oracle updates (a random source of a random market, the price a random walk of
/// at most ±0.05% per update), 80% fills between random accounts at the oracle price ±0.1%.
/// 30% of the fills close a random account's whole position in that market (a close for that
/// account; for the counterparty an open, an add, a reduction or a flip); the rest open or add
/// 0.001–0.1 BTC or 0.01–1 ETH. Everyone stays far inside the initial margin, so every command
/// is accepted (checked before measuring). `ts` advances 1 ms every 5 commands (the oracle's
/// max age is 60 s, so fills-only runs stay on a fresh price).
pub fn workload(accounts: usize) -> Workload {
    let mut setup = Vec::new();
    for m in &MARKETS {
        setup.push(format!(
            r#"{{"ts":0,"cmd":"create_market","market":"{}","initial_margin":"0.05","maintenance_margin":"0.025","maintenance_tiers":[{{"notional_floor":"1000000","initial_margin":"0.1","maintenance_margin":"0.05"}}],"taker_fee":"0.0005","maker_fee":"0.0002","oracle":{{"sources":[{{"id":"binance","weight":3}},{{"id":"okx","weight":2}},{{"id":"kraken","weight":1}}],"min_sources":2}}}}"#,
            m.id
        ));
    }
    for i in 0..accounts {
        setup
            .push(format!(r#"{{"ts":0,"cmd":"deposit","account":"{}","asset":"USDC","amount":"100000"}}"#, account(i)));
    }
    for m in &MARKETS {
        for s in SOURCES {
            setup.push(format!(
                r#"{{"ts":1000,"cmd":"oracle","market":"{}","source":"{s}","price":"{}"}}"#,
                m.id,
                price_str(m.price)
            ));
        }
    }
    // Simulated positions (thousandths), to generate closing fills.
    let mut pos = vec![[0i64; MARKETS.len()]; accounts];
    for i in (0..accounts).step_by(2) {
        setup.push(format!(
            r#"{{"ts":1000,"cmd":"fill","market":"BTC-PERP","buyer":"{}","seller":"{}","size":"0.05","price":"60000"}}"#,
            account(i),
            account(i + 1)
        ));
        pos[i][0] += 50;
        pos[i + 1][0] -= 50;
    }

    let mut rng = Rng(42);
    let mut prices: Vec<i64> = MARKETS.iter().map(|m| m.price).collect();
    let (mut oracles, mut opens, mut closes) = (0, 0, 0);
    let mut stream = Vec::with_capacity(STREAM);
    for n in 0..STREAM {
        let ts = 2000 + n / 5;
        let m = rng.below(MARKETS.len() as u64) as usize;
        let id = MARKETS[m].id;
        if rng.below(5) == 0 {
            let p = prices[m];
            prices[m] = p + p * rng.range(-5, 5) / 10_000;
            let source = SOURCES[rng.below(3) as usize];
            stream.push(format!(
                r#"{{"ts":{ts},"cmd":"oracle","market":"{id}","source":"{source}","price":"{}"}}"#,
                price_str(prices[m])
            ));
            oracles += 1;
            continue;
        }
        let price = prices[m] + prices[m] * rng.range(-10, 10) / 10_000;
        let a = rng.below(accounts as u64) as usize;
        let mut b = rng.below(accounts as u64 - 1) as usize;
        if b >= a {
            b += 1;
        }
        // Size in thousandths, signed from `a`'s side: positive = `a` buys.
        let delta = if rng.below(10) < 3 && pos[a][m] != 0 {
            closes += 1;
            -pos[a][m]
        } else {
            opens += 1;
            let s = rng.range(MARKETS[m].size_lo, MARKETS[m].size_hi);
            if rng.below(2) == 0 {
                s
            } else {
                -s
            }
        };
        let (buyer, seller) = if delta > 0 { (a, b) } else { (b, a) };
        let taker = if rng.below(2) == 0 { "buyer" } else { "seller" };
        pos[a][m] += delta;
        pos[b][m] -= delta;
        stream.push(format!(
            r#"{{"ts":{ts},"cmd":"fill","market":"{id}","buyer":"{}","seller":"{}","size":"{}","price":"{}","taker":"{taker}"}}"#,
            account(buyer),
            account(seller),
            size_str(delta),
            price_str(price)
        ));
    }
    Workload { setup, stream, oracles, opens, closes }
}

pub fn parse_all(lines: &[String]) -> Vec<TimedCommand> {
    lines.iter().map(|l| parse_line(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Apply every command, panicking on a rejection (the workloads are built to be accepted).
pub fn apply_all(engine: &mut Engine, cmds: &[TimedCommand]) -> usize {
    let mut events = Vec::new();
    let mut n = 0;
    for c in cmds {
        engine.apply(c, &mut events).unwrap_or_else(|e| panic!("rejected: {e} ({c:?})"));
        n += events.len();
        events.clear();
    }
    n
}

/// Everything the apply benchmarks share, parsed and set up once, only when one of them runs.
pub struct Prepared {
    pub base: Engine,
    pub stream: Vec<TimedCommand>,
    pub fills: Vec<TimedCommand>,
    pub oracles: Vec<TimedCommand>,
}

pub fn prepare(w: &Workload) -> Prepared {
    let setup = parse_all(&w.setup);
    let stream = parse_all(&w.stream);
    let mut base = Engine::new();
    apply_all(&mut base, &setup);
    let is_fill = |c: &&TimedCommand| matches!(c.cmd, Command::Fill(_));
    let fills: Vec<TimedCommand> = stream.iter().filter(is_fill).cloned().collect();
    let oracles: Vec<TimedCommand> = stream.iter().filter(|c| !is_fill(c)).cloned().collect();
    assert_eq!((fills.len(), oracles.len()), (w.opens + w.closes, w.oracles));
    // Every variant is fully accepted (checked here, outside the measurement).
    let events = apply_all(&mut base.clone(), &stream);
    apply_all(&mut base.clone(), &fills);
    apply_all(&mut base.clone(), &oracles);
    eprintln!(
        "workload: {} accounts, {} commands ({} oracle, {} fills: {} opening/adding, {} closing), {} events",
        base.accounts().count(),
        stream.len(),
        w.oracles,
        w.opens + w.closes,
        w.opens,
        w.closes,
        events
    );
    Prepared { base, stream, fills, oracles }
}

/// One cross account (`carol`) with 4 positions (long BTC, short ETH, long SOL, short DOGE;
/// each market with two notional tiers) and 2 ETH of collateral weighted 0.8 / 0.9, plus the
/// market maker she traded with. Funding has moved once so funding owed is non-zero.
pub fn health_engine() -> Engine {
    let mut lines =
        vec![r#"{"ts":0,"cmd":"create_asset","asset":"ETH","initial_weight":"0.8","maintenance_weight":"0.9"}"#
            .to_string()];
    let markets = [
        ("BTC-PERP", "60000", "0.5"),
        ("ETH-PERP", "3000", "10"),
        ("SOL-PERP", "150", "100"),
        ("DOGE-PERP", "0.15", "100000"),
    ];
    for (m, _, _) in markets {
        lines.push(format!(
            r#"{{"ts":0,"cmd":"create_market","market":"{m}","initial_margin":"0.05","maintenance_margin":"0.025","maintenance_tiers":[{{"notional_floor":"1000000","initial_margin":"0.1","maintenance_margin":"0.05"}},{{"notional_floor":"5000000","initial_margin":"0.2","maintenance_margin":"0.1"}}],"taker_fee":"0.0005","maker_fee":"0.0002"}}"#
        ));
    }
    lines.push(r#"{"ts":0,"cmd":"deposit","account":"carol","asset":"ETH","amount":"2"}"#.into());
    lines.push(r#"{"ts":0,"cmd":"deposit","account":"carol","asset":"USDC","amount":"20000"}"#.into());
    lines.push(r#"{"ts":0,"cmd":"deposit","account":"mm","asset":"USDC","amount":"10000000"}"#.into());
    lines.push(r#"{"ts":1000,"cmd":"oracle","asset":"ETH","source":"s1","price":"3000"}"#.into());
    for (m, p, _) in markets {
        lines.push(format!(r#"{{"ts":1000,"cmd":"oracle","market":"{m}","source":"s1","price":"{p}"}}"#));
    }
    for (i, (m, p, size)) in markets.into_iter().enumerate() {
        let (buyer, seller) = if i % 2 == 0 { ("carol", "mm") } else { ("mm", "carol") };
        lines.push(format!(
            r#"{{"ts":2000,"cmd":"fill","market":"{m}","buyer":"{buyer}","seller":"{seller}","size":"{size}","price":"{p}"}}"#
        ));
    }
    for (m, _, _) in markets {
        lines.push(format!(r#"{{"ts":3000,"cmd":"funding","market":"{m}","rate":"0.0001"}}"#));
    }
    // Prices move after the trades.
    lines.push(r#"{"ts":4000,"cmd":"oracle","asset":"ETH","source":"s1","price":"3100"}"#.into());
    for (m, p) in [("BTC-PERP", "61000"), ("ETH-PERP", "3100"), ("SOL-PERP", "148.5"), ("DOGE-PERP", "0.1512")] {
        lines.push(format!(r#"{{"ts":4000,"cmd":"oracle","market":"{m}","source":"s1","price":"{p}"}}"#));
    }
    let mut engine = Engine::new();
    apply_all(&mut engine, &parse_all(&lines));
    engine
}
