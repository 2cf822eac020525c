//! Property tests of the engine's invariants (DESIGN §3 "Invariants", §4 the command contract).
//!
//! - `state_machine`: a proptest-state-machine model generates mostly plausible command streams
//!   (listings, deposits, withdrawals, margin transfers, oracle random walks with crashes, gaps
//!   and stale publish times, fills of every size, funding, time jumps; markets with circuit
//!   breakers, `settle_market`, withdrawal limits, requests and cancellations, governance traffic
//!   with valid, forged and misdirected signatures and guardian actions) mixed with deliberately
//!   bad commands. Every command is rendered to a JSON line and decoded with `parse_line` (the
//!   decoder must give back the same command), then applied to the engine. After every command:
//!   conservation of USDC (amounts reserved by pending withdrawals included) and of every
//!   collateral asset, Σ long = Σ short = open interest per
//!   market, a rejection changes nothing (state hash, events, seq), an acceptance bumps `seq` by
//!   one and leaves `view()` computable. At the end of each case: a replay into a fresh engine
//!   gives the same decisions, events and state hash, and a serde round trip (mid-stream and at
//!   the end) gives the same hash and then behaves identically.
//! - `decoder_never_panics_on_text` / `commands_never_panic`: arbitrary and mutated text, and
//!   JSON objects keyed by the real field names with hostile values, go through `parse_line` and,
//!   when they decode, into `apply` on an engine that already has markets, accounts and prices.
//!
//! Case counts: 1,000 command streams of 5 to 59 commands, and 3,000 cases for each fuzzer
//! (about 55 s for the whole file in a debug build). `PROPTEST_CASES=N` scales every test: N
//! streams, 3 N fuzzer cases. A failure is shrunk to a short stream whose Debug form is one JSON
//! line per command, ready for a plain `#[test]` or `ballast replay`; its seed is kept under
//! `proptest-regressions/invariants/` and replayed first on every run.

use ballast_engine::account::Bucket;
use ballast_engine::adl::{AdlParams, AdlPolicy, SocialChannel};
use ballast_engine::asset::AssetParams;
use ballast_engine::breaker::{BreakerParams, PriceMove, Status};
use ballast_engine::command::{
    CancelWithdrawal, Deposit, Fill, Funding, Liquidate, OraclePrice, RequestWithdrawal, SettleMarket, Side,
    TransferMargin, TransferTo, Withdraw, COMMAND_NAMES,
};
use ballast_engine::detection::key;
use ballast_engine::event::OrderSide;
use ballast_engine::funding::FundingParams;
use ballast_engine::governance::{signing_bytes, Change, Council, Hex, SignedAction, Timelocks};
use ballast_engine::liquidation::LiquidationParams;
use ballast_engine::margin::{OiScaling, Tier, VolParams};
use ballast_engine::market::MarketParams;
use ballast_engine::num::{Price, Quote, Ratio, Size};
use ballast_engine::oracle::{OracleConfig, SourceConfig, Validity};
use ballast_engine::withdrawal::WithdrawalParams;
use ballast_engine::{parse_line, Command, Engine, Event, Reject, TimedCommand};
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use serde_json::{json, Map, Value};
use std::fmt;
use std::sync::LazyLock;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Cases of the state machine; `PROPTEST_CASES` overrides it.
fn base_cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

fn config(cases: u32, file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}

const SM_REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/invariants/state_machine.txt");
const TEXT_REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/invariants/text.txt");
const JSON_REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/invariants/json.txt");

// ---------------------------------------------------------------------------------------------
// Rendering a command as its JSON line (the Debug form of a transition, so a shrunk failure
// can be pasted into a test or a .jsonl file as is)
// ---------------------------------------------------------------------------------------------

struct Line(String);

impl Line {
    fn new(ts: u64, cmd: &str) -> Line {
        Line(format!("{{\"ts\":{ts},\"cmd\":{}", Value::from(cmd)))
    }
    fn field(mut self, key: &str, v: impl serde::Serialize) -> Line {
        let v = serde_json::to_value(v).expect("serializable");
        if !v.is_null() {
            self.0.push_str(&format!(",{}:{v}", Value::from(key)));
        }
        self
    }
    fn fields(mut self, map: Map<String, Value>) -> Line {
        for (k, v) in map {
            self = self.field(&k, v);
        }
        self
    }
    fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Drop the keys of `v` whose value equals the default's (recursively), except `keep`.
fn prune(v: &mut Value, default: &Value, keep: &[&str]) {
    let (Value::Object(obj), Value::Object(def)) = (v, default) else { return };
    obj.retain(|k, val| {
        if keep.contains(&k.as_str()) {
            return true;
        }
        match def.get(k) {
            Some(d) if d == val => false,
            Some(d) => {
                prune(val, d, &[]);
                true
            }
            None => !val.is_null(),
        }
    });
}

static DEFAULT_MARKET: LazyLock<Value> = LazyLock::new(|| {
    let p: MarketParams =
        serde_json::from_value(json!({"initial_margin": "0.1", "maintenance_margin": "0.05"})).expect("defaults");
    serde_json::to_value(p).expect("serializable")
});
static DEFAULT_ASSET: LazyLock<Value> = LazyLock::new(|| {
    let p: AssetParams =
        serde_json::from_value(json!({"initial_weight": "0.8", "maintenance_weight": "0.9"})).expect("defaults");
    serde_json::to_value(p).expect("serializable")
});

fn params_map(params: impl serde::Serialize, default: &Value, keep: &[&str]) -> Map<String, Value> {
    let mut v = serde_json::to_value(params).expect("serializable");
    prune(&mut v, default, keep);
    match v {
        Value::Object(m) => m,
        _ => unreachable!("params serialize as objects"),
    }
}

/// The command as one line of the command contract.
fn render(c: &TimedCommand) -> String {
    let line = Line::new(c.ts, c.cmd.name());
    match &c.cmd {
        Command::CreateAsset { asset, params } => line.field("asset", asset).fields(params_map(
            params,
            &DEFAULT_ASSET,
            &["initial_weight", "maintenance_weight"],
        )),
        Command::CreateMarket { market, params } => line.field("market", market).fields(params_map(
            params,
            &DEFAULT_MARKET,
            &["initial_margin", "maintenance_margin"],
        )),
        Command::Deposit(d) => line
            .field("account", &d.account)
            .field("asset", &d.asset)
            .field("amount", d.amount)
            .field("isolated", &d.isolated),
        Command::Withdraw(w) => line
            .field("account", &w.account)
            .field("asset", &w.asset)
            .field("amount", w.amount)
            .field("isolated", &w.isolated),
        Command::TransferMargin(t) => {
            line.field("account", &t.account).field("market", &t.market).field("amount", t.amount).field("to", t.to)
        }
        Command::Oracle(o) => line
            .field("market", &o.market)
            .field("asset", &o.asset)
            .field("source", &o.source)
            .field("price", o.price)
            .field("publish_ts", o.publish_ts),
        Command::Fill(f) => {
            let line = line
                .field("market", &f.market)
                .field("buyer", &f.buyer)
                .field("seller", &f.seller)
                .field("size", f.size)
                .field("price", f.price);
            let line = if f.taker == Side::Seller { line.field("taker", f.taker) } else { line };
            if f.liquidation {
                line.field("liquidation", true)
            } else {
                line
            }
        }
        Command::Liquidate(l) => line
            .field("liquidator", &l.liquidator)
            .field("account", &l.account)
            .field("market", &l.market)
            .field("size", l.size)
            .field("limit", l.limit),
        Command::CreateInsuranceFund { fund, params } => {
            line.field("fund", fund).fields(params_map(params, &json!({"window_ms": 86_400_000}), &[]))
        }
        Command::FundInsurance { fund, amount } => line.field("fund", fund).field("amount", amount),
        Command::SetBackstop { account, loss_cap } => line.field("account", account).field("loss_cap", loss_cap),
        Command::Funding(f) => line.field("market", &f.market).field("rate", f.rate).field("premium", f.premium),
        Command::Tick => line,
        Command::SettleMarket(x) => line.field("market", &x.market).field("price", x.price),
        Command::ConfigureWithdrawals(p) => line.fields(params_map(p, &Value::Null, &[])),
        Command::RequestWithdrawal(r) => {
            line.field("account", &r.account).field("amount", r.amount).field("isolated", &r.isolated)
        }
        Command::CancelWithdrawal(c) => line.field("account", &c.account).field("id", c.id),
        Command::InitGovernance(g) => line.field("council", &g.council),
        Command::Propose(p) => line.field("nonce", p.nonce).field("change", &p.change),
        Command::Approve(a) | Command::Cancel(a) => {
            line.field("nonce", a.nonce).field("key", a.key).field("signature", a.signature)
        }
        Command::Execute(e) => line.field("nonce", e.nonce),
        Command::Guardian(g) => line.field("nonce", g.nonce).field("change", &g.change).field("signature", g.signature),
    }
    .done()
}

// ---------------------------------------------------------------------------------------------
// Invariant checks shared by every test
// ---------------------------------------------------------------------------------------------

/// Invariants 1 and 2 plus the account shape: checked after every command.
fn check_state(e: &Engine, ctx: &dyn fmt::Display) {
    // 1. Conservation of USDC, exactly.
    assert_eq!(e.conservation_error(), Ok(Quote::ZERO), "USDC not conserved after {ctx}");
    // 1. Conservation of every other collateral asset.
    for (a, asset) in e.assets().iter().enumerate() {
        let mut held = Size::ZERO;
        for (_, account) in e.accounts() {
            held = held.checked_add(account.collateral(a as u32)).expect("sum of collateral");
        }
        let net = asset.deposits.checked_sub(asset.withdrawals).expect("net deposits");
        assert_eq!(held, net, "{} not conserved after {ctx}", asset.id);
    }
    // 2. Per market, Σ long = Σ short = open interest.
    for (m, market) in e.markets().iter().enumerate() {
        let (mut long, mut short) = (Size::ZERO, Size::ZERO);
        for (_, account) in e.accounts() {
            let cross = account.cross.iter().filter(|(i, _)| *i as usize == m).map(|(_, p)| p.size);
            let isolated = account.isolated.iter().filter(|(i, _)| *i as usize == m).map(|(_, iso)| iso.position.size);
            for size in cross.chain(isolated) {
                if size.is_positive() {
                    long = long.checked_add(size).expect("Σ long");
                } else {
                    short = short.checked_sub(size).expect("Σ short");
                }
            }
        }
        assert_eq!(long, short, "{}: Σ long != Σ short after {ctx}", market.id);
        assert_eq!(long, market.open_interest, "{}: open interest != Σ long after {ctx}", market.id);
    }
    // 5. Recovery: every bucket below maintenance was detected (the index misses nothing), and
    // a bucket with negative equity is in liquidation, its deficit still being resolved; the
    // waterfall's channels add up to the bad debt.
    let liquidating: Vec<u64> = e.liquidations().map(|(k, _)| k).collect();
    assert!(e.detection_index_is_consistent(), "the detection index holds stale or missing entries after {ctx}");
    assert!(e.deadline_floor_holds(), "a liquidation's deadline is below the floor after {ctx}");
    for k in e.scan_liquidatable() {
        assert!(liquidating.binary_search(&k).is_ok(), "bucket {k:#x} below maintenance but not detected after {ctx}");
    }
    for (i, (id, account)) in e.accounts().enumerate() {
        let buckets = std::iter::once(Bucket::Cross).chain(account.isolated.iter().map(|(m, _)| Bucket::Isolated(*m)));
        for bucket in buckets {
            let Ok(h) = e.health(account, bucket) else { continue };
            let k = key(i as u32, bucket);
            assert!(
                !h.equity.is_negative() || liquidating.binary_search(&k).is_ok(),
                "{id} {bucket:?}: equity {} left unresolved after {ctx}",
                h.equity
            );
        }
    }
    let t = e.totals();
    let channels = [t.insurance_paid, t.backstop_absorbed, t.adl_covered, t.socialized_loss]
        .into_iter()
        .try_fold(Quote::ZERO, |a, b| a.checked_add(b))
        .expect("sum of channels");
    assert_eq!(channels, t.bad_debt, "bad debt is not the sum of its channels after {ctx}");
    // Account shape: a market's position lives in exactly one bucket, flat cross positions and
    // empty collateral entries are removed.
    for (id, account) in e.accounts() {
        for (m, p) in &account.cross {
            assert!(account.isolated(*m).is_none(), "{id}: market {m} both cross and isolated after {ctx}");
            assert!(!p.size.is_zero(), "{id}: flat cross position in market {m} kept after {ctx}");
        }
        for (a, amount) in &account.collateral {
            assert!(amount.is_positive(), "{id}: collateral {a} is {amount} after {ctx}");
        }
    }
}

/// An engine under check: its events so far and its state hash after the last command.
struct Checked {
    engine: Engine,
    events: Vec<Event>,
    hash: String,
}

impl Checked {
    fn new(engine: Engine) -> Checked {
        let hash = engine.state_hash();
        Checked { engine, events: Vec::new(), hash }
    }

    /// Apply one command and check invariants 3 and 6 around it, then 1 and 2 after it.
    fn apply(&mut self, cmd: &TimedCommand, ctx: &dyn fmt::Display) -> Result<(), Reject> {
        let e = &mut self.engine;
        let (seq, n) = (e.seq(), self.events.len());
        let result = e.apply(cmd, &mut self.events);
        match &result {
            Err(reason) => {
                assert_eq!(e.state_hash(), self.hash, "rejected ({reason}) but the state changed: {ctx}");
                assert_eq!(self.events.len(), n, "rejected ({reason}) but events were appended: {ctx}");
                assert_eq!(e.seq(), seq, "rejected ({reason}) but seq moved: {ctx}");
            }
            Ok(()) => {
                assert_eq!(e.seq(), seq + 1, "accepted but seq did not move by one: {ctx}");
                assert_eq!(e.now(), cmd.ts, "accepted but now is not the command's ts: {ctx}");
                match e.view() {
                    // The view carries the state hash: the reference for the next command.
                    Ok(view) => self.hash = view.state_hash,
                    Err(err) => panic!("view() failed ({err}) after accepted {ctx}"),
                }
            }
        }
        check_state(e, ctx);
        result
    }
}

/// Serialize, deserialize and re-index; the copy must hash the same. The copy of the persisted
/// state that background snapshots are written from serializes to the same text.
fn round_trip(e: &Engine) -> Engine {
    let text = serde_json::to_string(e).expect("engine serializes");
    assert_eq!(serde_json::to_string(&e.persisted()).expect("serializes"), text, "persisted copy");
    let mut back: Engine = serde_json::from_str(&text).expect("engine deserializes");
    back.rebuild_index();
    assert_eq!(back.state_hash(), e.state_hash(), "serde round trip changed the state hash");
    back
}

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

const ACCOUNTS: [&str; 5] = ["alice", "bob", "carol", "dave", "mm"];
const MARKET_NAMES: [&str; 3] = ["BTC-PERP", "ETH-PERP", "SOL-PERP"];
const ASSET_NAMES: [&str; 2] = ["ETH", "WBTC"];
/// 0.00012345, 1.2345, 150, 3000, 50000, 12345.67891234 (raw, 8 decimals).
const START_PRICES: [i64; 6] =
    [12_345, 123_450_000, 15_000_000_000, 300_000_000_000, 5_000_000_000_000, 1_234_567_891_234];
const ONE: i64 = Ratio::ONE_RAW;

#[derive(Clone, Debug)]
struct MarketModel {
    id: String,
    /// Initial margin fraction, raw (markets only).
    initial: i64,
    /// Source ids to quote from (the configured ones, or two ad-hoc ids).
    sources: Vec<String>,
    max_age_ms: u64,
    min_sources: usize,
    /// Last publish time per source (index into `sources`), if quoted.
    quoted: Vec<Option<u64>>,
    /// Last quoted price, raw; 0 before the first quote.
    price: i64,
    max_rate: i64,
}

impl MarketModel {
    fn is_fresh(&self, t: &Option<u64>, now: u64) -> bool {
        t.is_some_and(|t| now.saturating_sub(t) <= self.max_age_ms)
    }
    fn fresh(&self, now: u64) -> usize {
        self.quoted.iter().filter(|t| self.is_fresh(t, now)).count()
    }
    /// Sources not fresh at `now` (all of them when every one is fresh).
    fn stale_sources(&self, now: u64) -> Vec<String> {
        let stale: Vec<String> = self
            .sources
            .iter()
            .zip(&self.quoted)
            .filter(|(_, t)| !self.is_fresh(t, now))
            .map(|(s, _)| s.clone())
            .collect();
        if stale.is_empty() {
            self.sources.clone()
        } else {
            stale
        }
    }
    fn unknown(id: &str) -> MarketModel {
        MarketModel {
            id: id.into(),
            initial: 0,
            sources: vec!["s1".into()],
            max_age_ms: 60_000,
            min_sources: 1,
            quoted: vec![None],
            price: 0,
            max_rate: 0,
        }
    }
}

/// What the generator needs to know to make mostly plausible commands. It follows the stream
/// optimistically (a fill is assumed to go through), so it is a guide, never an oracle.
#[derive(Clone, Debug, Default)]
struct Model {
    now: u64,
    markets: Vec<MarketModel>,
    assets: Vec<MarketModel>,
    funded: Vec<String>,
    /// USDC deposited per funded account, raw (what a leveraged fill is sized from).
    deposited: Vec<(String, i128)>,
    isolated: Vec<(String, String)>,
    positions: Vec<(String, String, i128)>,
    /// Withdrawal limits were configured (valid ones).
    limits: bool,
    /// Withdrawal requests sent so far (an upper bound of the ids in use).
    requests: u64,
    governed: bool,
    /// The highest nonce sent and the proposals made.
    nonce: u64,
    proposals: Vec<(u64, Option<Change>)>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

fn feed_model(id: &str, oracle: &OracleConfig) -> MarketModel {
    let sources = if oracle.sources.is_empty() {
        vec!["s1".to_string(), "s2".to_string()]
    } else {
        oracle.sources.iter().map(|s| s.id.clone()).collect()
    };
    let quoted = vec![None; sources.len()];
    let min_sources = oracle.min_sources as usize;
    MarketModel {
        id: id.to_string(),
        initial: 0,
        sources,
        max_age_ms: oracle.max_age_ms,
        min_sources,
        quoted,
        price: 0,
        max_rate: 0,
    }
}

impl Model {
    fn market(&mut self, id: &str) -> Option<&mut MarketModel> {
        self.markets.iter_mut().find(|m| m.id == id)
    }
    fn asset(&mut self, id: &str) -> Option<&mut MarketModel> {
        self.assets.iter_mut().find(|m| m.id == id)
    }
    fn add_position(&mut self, account: &str, market: &str, delta: i128) {
        match self.positions.iter_mut().find(|(a, m, _)| a == account && m == market) {
            Some(p) => p.2 += delta,
            None => self.positions.push((account.to_string(), market.to_string(), delta)),
        }
    }
}

/// A transition: one command. Its Debug form is the command's JSON line.
#[derive(Clone)]
struct Step(TimedCommand);

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", render(&self.0))
    }
}

fn step(ts: u64, cmd: Command) -> Step {
    Step(TimedCommand { ts, cmd })
}

// ---- number generators ---------------------------------------------------------------------

const fn pow10(n: u32) -> i128 {
    10i128.pow(n)
}

/// Log-uniform-ish integers in `[10^lo, 10^(hi+1))`; shrinks toward `10^lo`.
fn log_raw(lo: u32, hi: u32) -> impl Strategy<Value = i128> + Clone {
    (lo..=hi, 0i128..1_000_000).prop_map(|(e, m)| pow10(e) * (1_000_000 + 9 * m) / 1_000_000)
}

/// `p × num / den` as a positive raw price.
fn scale(p: i64, num: i64, den: i64) -> i64 {
    let v = i128::from(p) * i128::from(num) / i128::from(den);
    v.clamp(1, i128::from(i64::MAX)) as i64
}

/// USDC amounts (Size, at most 6 decimals when valid): mostly 1 .. 1,000,000, some dust, and
/// bad ones: zero, negative, 7-8 decimals, absurdly large.
fn usdc_amount() -> BoxedStrategy<Size> {
    prop_oneof![
        80 => log_raw(6, 11).prop_map(|micro| Size::from_raw(micro * 100)),
        8 => log_raw(0, 5).prop_map(|micro| Size::from_raw(micro * 100)),
        2 => Just(Size::ZERO),
        3 => log_raw(6, 10).prop_map(|micro| Size::from_raw(-micro * 100)),
        3 => (1i128..100, log_raw(6, 9)).prop_map(|(d, micro)| Size::from_raw(micro * 100 + d)),
        2 => log_raw(15, 20).prop_map(|micro| Size::from_raw(micro * 100)),
    ]
    .boxed()
}

/// Amounts of a collateral asset (8 decimals): 1e-8 .. 1,000, some bad ones.
fn asset_amount() -> BoxedStrategy<Size> {
    prop_oneof![
        85 => log_raw(0, 11).prop_map(Size::from_raw),
        3 => Just(Size::ZERO),
        3 => log_raw(0, 10).prop_map(|r| Size::from_raw(-r)),
        3 => log_raw(20, 26).prop_map(Size::from_raw),
    ]
    .boxed()
}

/// The next oracle quote after `p` (raw; 0 = never quoted): a random walk with crashes, spikes,
/// gaps and the odd absurd (up to `Price::MAX`) or non-positive value.
fn next_price(p: i64) -> BoxedStrategy<Price> {
    if p <= 0 {
        return prop_oneof![
            9 => select(START_PRICES.to_vec()).prop_map(Price::from_raw),
            1 => (1i64..=1_000_000_000_000_000).prop_map(Price::from_raw),
        ]
        .boxed();
    }
    prop_oneof![
        70 => (-30_000i64..=30_000).prop_map(move |d| Price::from_raw(scale(p, 1_000_000 + d, 1_000_000))),
        6 => Just(Price::from_raw(scale(p, 7, 10))),
        4 => Just(Price::from_raw(scale(p, 13, 10))),
        6 => (300_000i64..3_000_000).prop_map(move |f| Price::from_raw(scale(p, f, 1_000_000))),
        4 => Just(Price::from_raw(p)),
        2 => prop_oneof![Just(Price::ZERO), Just(Price::from_raw(-p))],
        2 => (1i64..=1_000_000_000_000_000).prop_map(Price::from_raw),
        1 => (0i64..1_000_000_000_000).prop_map(|d| Price::from_raw(i64::MAX - d)),
    ]
    .boxed()
}

/// A fill price around `p`: within 2% (awkward digits come from the walk), sometimes
/// 12345.67891234, sometimes far off (up to `Price::MAX`), rarely non-positive.
fn fill_price(p: i64) -> BoxedStrategy<Price> {
    let p = if p <= 0 { 10_000_000_000 } else { p };
    prop_oneof![
        80 => (-200_000i64..=200_000).prop_map(move |d| Price::from_raw(scale(p, 10_000_000 + d, 10_000_000))),
        5 => Just(Price::from_raw(1_234_567_891_234)),
        2 => (0i64..1_000_000_000_000).prop_map(|d| Price::from_raw(i64::MAX - d)),
        8 => (-3_000_000i64..=30_000_000).prop_map(move |d| Price::from_raw(scale(p, 10_000_000 + d, 10_000_000))),
        2 => prop_oneof![Just(Price::ZERO), Just(Price::from_raw(-p))],
        2 => (1i64..=1_000_000_000_000_000).prop_map(Price::from_raw),
    ]
    .boxed()
}

/// Size (raw) whose notional at `p` is about `notional_micro` micro-USDC, at least 1e-8.
fn size_for(notional_micro: i128, p: i64) -> Size {
    let p = i128::from(p.max(1));
    Size::from_raw((notional_micro * 10_000_000_000 / p).max(1))
}

/// Fill sizes at price `p`: notionals from 1e-4 to 1e5 USDC, some far beyond any margin,
/// 0.00000001 and other dust, absurd sizes (up to 1e22), zero and negative.
fn fill_size(p: i64) -> BoxedStrategy<Size> {
    prop_oneof![
        60 => log_raw(2, 11).prop_map(move |n| size_for(n, p)),
        10 => log_raw(11, 13).prop_map(move |n| size_for(n, p)),
        8 => Just(Size::from_raw(1)),
        5 => (1i128..1_000).prop_map(Size::from_raw),
        3 => log_raw(17, 22).prop_map(Size::from_raw),
        1 => log_raw(22, 30).prop_map(Size::from_raw),
        2 => prop_oneof![Just(Size::ZERO), (1i128..1_000_000_000).prop_map(|r| Size::from_raw(-r))],
    ]
    .boxed()
}

/// Timestamps: mostly a little after `now`, sometimes long gaps (stale oracles), sometimes a
/// few milliseconds back in time.
fn ts_after(now: u64) -> BoxedStrategy<u64> {
    prop_oneof![
        60 => (0u64..2_000).prop_map(move |d| now + d),
        10 => Just(now),
        4 => (2_000u64..90_000).prop_map(move |d| now + d),
        2 => (3_600_000u64..86_400_000).prop_map(move |d| now + d),
        4 => (1u64..5).prop_map(move |d| now.saturating_sub(d)),
    ]
    .boxed()
}

/// Timestamps for trading and margin commands: mostly within a second.
fn ts_soon(now: u64) -> BoxedStrategy<u64> {
    prop_oneof![
        84 => (0u64..1_000).prop_map(move |d| now + d),
        12 => Just(now),
        4 => ts_after(now),
    ]
    .boxed()
}

fn ratio(lo: i64, hi: i64) -> impl Strategy<Value = Ratio> + Clone {
    (lo..=hi).prop_map(Ratio::from_raw)
}

// ---- name generators -----------------------------------------------------------------------

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn account_name(s: &Model) -> BoxedStrategy<String> {
    let mut arms = vec![(10, select(strings(&ACCOUNTS)).boxed()), (1, select(strings(&["zed", "bad id", ""])).boxed())];
    if !s.funded.is_empty() {
        arms.push((25, select(s.funded.clone()).boxed()));
    }
    Union::new_weighted(arms).boxed()
}

fn market_name(s: &Model) -> BoxedStrategy<String> {
    let mut arms = vec![(2, select(strings(&MARKET_NAMES)).boxed()), (1, Just("DOGE-PERP".to_string()).boxed())];
    if !s.markets.is_empty() {
        arms.push((25, select(s.markets.iter().map(|m| m.id.clone()).collect::<Vec<_>>()).boxed()));
    }
    Union::new_weighted(arms).boxed()
}

fn collateral_name(s: &Model) -> BoxedStrategy<String> {
    let mut arms = vec![(2, select(strings(&ASSET_NAMES)).boxed()), (1, Just("DOGE".to_string()).boxed())];
    if !s.assets.is_empty() {
        arms.push((20, select(s.assets.iter().map(|m| m.id.clone()).collect::<Vec<_>>()).boxed()));
    }
    Union::new_weighted(arms).boxed()
}

/// Two accounts for a fill: distinct most of the time, sometimes the same (a self-trade).
fn counterparties(s: &Model) -> BoxedStrategy<(String, String)> {
    let pool = if s.funded.len() >= 2 { s.funded.clone() } else { strings(&ACCOUNTS) };
    let n = pool.len();
    prop_oneof![
        96 => (0..n, 1..n).prop_map(move |(i, d)| (pool[i].clone(), pool[(i + d) % n].clone())),
        2 => select(strings(&ACCOUNTS)).prop_map(|a| (a.clone(), a)),
        2 => (select(strings(&ACCOUNTS)), select(strings(&["zed", "bad id"]))).prop_map(|(a, b)| (b, a)),
    ]
    .boxed()
}

// ---- parameter generators ------------------------------------------------------------------

fn oracle_config() -> BoxedStrategy<OracleConfig> {
    (
        2usize..=3,
        prop::collection::vec(1u32..=5, 3),
        1u32..=3,
        select(vec![5_000u64, 10_000, 60_000]),
        prop::option::weighted(0.3, ratio(100_000, 10_000_000)),
        prop::option::weighted(0.3, ratio(5_000_000, 50_000_000)),
        prop::option::weighted(0.2, ratio(0, 5_000_000)),
        select(vec![60_000u64, 300_000]),
        any::<bool>(),
    )
        .prop_map(|(n, weights, quorum, max_age_ms, div, jump, band, twap, liquidate_volatile)| {
            let mut c = OracleConfig {
                sources: (0..n).map(|i| SourceConfig { id: format!("s{}", i + 1), weight: weights[i] }).collect(),
                max_age_ms,
                min_sources: quorum.min(n as u32),
                max_divergence: div,
                max_jump: jump,
                twap_window_ms: twap,
                mark_band: band.unwrap_or(Ratio::ZERO),
                ..OracleConfig::default()
            };
            if liquidate_volatile {
                c.allow.liquidate.push(Validity::Volatile);
            }
            c
        })
        .boxed()
}

fn tiers() -> impl Strategy<Value = Vec<(i128, i64, i64)>> {
    prop::collection::vec((log_raw(10, 13), 0i64..5_000_000, 0i64..10_000_000), 1..=3)
}

fn market_params() -> BoxedStrategy<MarketParams> {
    let fractions = (prop_oneof![4 => 100_000i64..=20_000_000, 1 => 1i64..100_000], 0i64..=3_000, 0u8..40);
    let fees = prop::option::weighted(0.35, (0i64..=50_000, 0i64..=100_000));
    let oi = prop::option::weighted(0.2, (log_raw(6, 12), log_raw(6, 13)));
    let vol = prop::option::weighted(
        0.2,
        (
            90_000_000i64..99_000_000,
            ONE..=5 * ONE,
            (1u32..=100, select(vec![1u64, 1_000, 10_000, 60_000])),
            1_000_000i64..=ONE,
            5_000_000i64..90_000_000,
            ONE..=3 * ONE,
        ),
    );
    let funding = prop::option::weighted(0.2, (-1_000_000i64..=1_000_000, 0i64..=1_000_000, 1i64..=10_000_000));
    let breakers = prop::option::weighted(0.3, breaker_params());
    (
        fractions,
        prop::option::weighted(0.3, tiers()),
        fees,
        prop::option::weighted(0.2, 0..=ONE),
        oi,
        vol,
        prop::option::weighted(0.35, oracle_config()),
        funding,
        (recovery_params(), breakers),
    )
        .prop_map(|((mm, extra, invalid), tiers, fees, share, oi, vol, oracle, funding, (recovery, breakers))| {
            let im = (mm + mm * extra / 1_000).min(ONE);
            // One in forty: maintenance above initial, an invalid listing.
            let (im, mm) = if invalid == 0 { (mm, im + 1) } else { (im, mm) };
            let mut maintenance_tiers = Vec::new();
            let (mut floor, mut prev_im, mut prev_mm) = (0i128, im, mm);
            for (step, dmm, dim) in tiers.unwrap_or_default() {
                floor += step;
                let t_mm = (prev_mm + dmm).min(ONE - 1);
                let t_im = (prev_im + dim).max(t_mm).min(ONE);
                maintenance_tiers.push(Tier {
                    notional_floor: Quote::from_raw(floor),
                    initial_margin: Ratio::from_raw(t_im),
                    maintenance_margin: Ratio::from_raw(t_mm),
                });
                (prev_im, prev_mm) = (t_im, t_mm);
            }
            let (maker, taker) = fees.unwrap_or((0, 0));
            let defaults: MarketParams = serde_json::from_value(DEFAULT_MARKET.clone()).expect("defaults");
            MarketParams {
                initial_margin: Ratio::from_raw(im),
                maintenance_margin: Ratio::from_raw(mm),
                maintenance_tiers,
                liquidation_end_share: share.map_or(defaults.liquidation_end_share, Ratio::from_raw),
                maker_fee: Ratio::from_raw(maker),
                taker_fee: Ratio::from_raw(taker),
                open_interest_scaling: oi.map(|(lo, span)| OiScaling {
                    lower_cap: Quote::from_raw(lo),
                    upper_cap: Quote::from_raw(lo + span),
                }),
                volatility_margin: vol.map(|(lambda, k, h, inc, cap, im_mult)| VolParams {
                    lambda: Ratio::from_raw(lambda),
                    multiplier: Ratio::from_raw(k),
                    horizon_samples: h.0,
                    sample_interval_ms: h.1,
                    max_increase_per_hour: Ratio::from_raw(inc),
                    cap: Ratio::from_raw(cap),
                    initial_multiplier: Ratio::from_raw(im_mult),
                }),
                oracle: oracle.unwrap_or_default(),
                funding: funding.map_or_else(FundingParams::default, |(rate, band, max)| FundingParams {
                    interest_rate: Ratio::from_raw(rate),
                    interest_band: Ratio::from_raw(band),
                    max_rate: Ratio::from_raw(max),
                }),
                liquidation: recovery.0,
                adl: recovery.1,
                socialized_loss: recovery.2,
                insurance_fee_share: recovery.3,
                breakers,
                ..defaults
            }
        })
        .boxed()
}

/// Liquidation pacing (small thresholds so pacing binds), every ADL policy with or without a
/// profit cap or ADL at all, every socialized-loss channel, a share of fees to the fund.
fn recovery_params() -> BoxedStrategy<(LiquidationParams, AdlParams, SocialChannel, Ratio)> {
    let policy = select(vec![
        AdlPolicy::ProRata,
        AdlPolicy::LeverageWeightedProRata,
        AdlPolicy::Bitmex,
        AdlPolicy::Binance,
        AdlPolicy::Hyperliquid,
    ]);
    let channel = select(vec![SocialChannel::OpenInterest, SocialChannel::Winners, SocialChannel::Depositors]);
    (
        (log_raw(6, 12), 1_000_000i64..=ONE, select(vec![1_000u64, 30_000]), select(vec![500u64, 3_000])),
        (0i64..=ONE, select(vec![1_000u64, 60_000])),
        (any::<bool>(), policy, prop::option::weighted(0.3, 10_000_000i64..=ONE)),
        channel,
        prop::option::weighted(0.3, 0i64..=ONE),
    )
        .prop_map(
            |((threshold, fraction, window, ttl), (backstop, timeout), (enabled, policy, cap), channel, share)| {
                let liquidation = LiquidationParams {
                    partial_threshold: Quote::from_raw(threshold),
                    max_fraction_per_window: Ratio::from_raw(fraction),
                    window_ms: window,
                    order_ttl_ms: ttl,
                    backstop_threshold: Ratio::from_raw(backstop),
                    backstop_timeout_ms: timeout,
                    ..LiquidationParams::default()
                };
                let adl = AdlParams { enabled, policy, profit_cap: cap.map(Ratio::from_raw) };
                (liquidation, adl, channel, Ratio::from_raw(share.unwrap_or(0)))
            },
        )
        .boxed()
}

/// Breakers driven by prices, fills and time: price moves, the oracle breaker, an open-interest
/// cap and a price band, with short or long cool-downs (the insurance and liquidation-volume
/// triggers are inputs of the liquidation layer, tested in the engine's unit tests).
fn breaker_params() -> BoxedStrategy<Box<BreakerParams>> {
    (
        prop::option::weighted(0.5, (ratio(1_000_000, 50_000_000), select(vec![1_000u64, 60_000]), any::<bool>())),
        prop::option::weighted(0.4, 0u64..=60_000),
        prop::option::weighted(0.3, log_raw(8, 14)),
        prop::option::weighted(0.4, ratio(1_000_000, ONE)),
        select(vec![0u64, 1_000, 60_000]),
    )
        .prop_map(|(price_move, grace, cap, band, cooldown_ms)| {
            Box::new(BreakerParams {
                price_move: price_move.map(|(max_move, window_ms, halt)| PriceMove {
                    max_move,
                    window_ms,
                    level: if halt { Status::Halted } else { Status::ReduceOnly },
                }),
                oracle: grace.map(|grace_ms| ballast_engine::breaker::OracleBreaker { grace_ms }),
                insurance_floor: None,
                open_interest_cap: cap.map(Size::from_raw),
                liquidation_volume: None,
                price_band: band,
                cooldown_ms,
            })
        })
        .boxed()
}

fn asset_params() -> BoxedStrategy<AssetParams> {
    (
        50_000_000i64..=ONE,
        0i64..=30_000_000,
        prop::option::weighted(0.2, log_raw(8, 12)),
        prop::option::weighted(0.3, oracle_config()),
        0u8..20,
    )
        .prop_map(|(mw, haircut, cap, oracle, banded)| AssetParams {
            initial_weight: Ratio::from_raw((mw - haircut).max(0)),
            maintenance_weight: Ratio::from_raw(mw),
            deposit_cap: cap.map(Size::from_raw),
            // Collateral has no mark: a mark band is invalid (one listing in twenty keeps it).
            oracle: oracle.map_or_else(OracleConfig::default, |o| OracleConfig {
                mark_band: if banded == 0 { o.mark_band } else { Ratio::ZERO },
                ..o
            }),
        })
        .boxed()
}

// ---- command generators --------------------------------------------------------------------

/// Names for a new listing: mostly ones not taken yet, sometimes taken or invalid ones.
fn listing_name(
    all: &[&str],
    taken: impl Fn(&str) -> bool,
    bad: &[&str],
    fresh_weight: u32,
) -> Union<BoxedStrategy<String>> {
    let fresh: Vec<String> = all.iter().filter(|n| !taken(n)).map(|n| n.to_string()).collect();
    let mut names = vec![(2, select(strings(all)).boxed()), (1, select(strings(bad)).boxed())];
    if !fresh.is_empty() {
        names.push((fresh_weight, select(fresh).boxed()));
    }
    Union::new_weighted(names)
}

fn create_market(s: &Model) -> BoxedStrategy<Step> {
    let names = listing_name(&MARKET_NAMES, |n| s.markets.iter().any(|m| m.id == n), &["BAD PERP", ""], 30);
    (ts_after(s.now), names, market_params())
        .prop_map(|(ts, market, params)| step(ts, Command::CreateMarket { market, params: Box::new(params) }))
        .boxed()
}

fn create_asset(s: &Model) -> BoxedStrategy<Step> {
    let names = listing_name(&ASSET_NAMES, |n| s.assets.iter().any(|a| a.id == n), &["USDC", "b@d"], 20);
    (ts_after(s.now), names, asset_params())
        .prop_map(|(ts, asset, params)| step(ts, Command::CreateAsset { asset, params: Box::new(params) }))
        .boxed()
}

/// The fields of a deposit or withdrawal of a non-USDC collateral (rarely, and wrongly, isolated).
fn collateral_move(s: &Model) -> impl Strategy<Value = (u64, String, String, Size, Option<String>)> {
    (ts_after(s.now), account_name(s), collateral_name(s), asset_amount(), prop::option::weighted(0.03, market_name(s)))
}

fn deposit(s: &Model) -> BoxedStrategy<Step> {
    let usdc = (ts_after(s.now), account_name(s), usdc_amount(), prop::option::weighted(0.2, market_name(s))).prop_map(
        |(ts, account, amount, isolated)| {
            step(ts, Command::Deposit(Deposit { account, asset: "USDC".into(), amount, isolated }))
        },
    );
    let other = collateral_move(s).prop_map(|(ts, account, asset, amount, isolated)| {
        step(ts, Command::Deposit(Deposit { account, asset, amount, isolated }))
    });
    let w = if s.assets.is_empty() { 1 } else { 3 };
    prop_oneof![10 => usdc, w => other].boxed()
}

fn withdraw(s: &Model) -> BoxedStrategy<Step> {
    let small = || prop_oneof![4 => log_raw(4, 10).prop_map(|m| Size::from_raw(m * 100)), 1 => usdc_amount()];
    let usdc = (ts_soon(s.now), account_name(s), small()).prop_map(|(ts, account, amount)| {
        step(ts, Command::Withdraw(Withdraw { account, asset: "USDC".into(), amount, isolated: None }))
    });
    let other = collateral_move(s).prop_map(|(ts, account, asset, amount, isolated)| {
        step(ts, Command::Withdraw(Withdraw { account, asset, amount, isolated }))
    });
    let mut arms = vec![(6, usdc.boxed()), (if s.assets.is_empty() { 1 } else { 3 }, other.boxed())];
    let pairs = if s.isolated.is_empty() {
        (account_name(s), market_name(s)).boxed()
    } else {
        select(s.isolated.clone()).boxed()
    };
    let iso = (ts_soon(s.now), pairs, small()).prop_map(|(ts, (account, market), amount)| {
        step(ts, Command::Withdraw(Withdraw { account, asset: "USDC".into(), amount, isolated: Some(market) }))
    });
    arms.push((if s.isolated.is_empty() { 1 } else { 4 }, iso.boxed()));
    Union::new_weighted(arms).boxed()
}

fn transfer(s: &Model) -> BoxedStrategy<Step> {
    let amount = || prop_oneof![4 => log_raw(4, 10).prop_map(|m| Size::from_raw(m * 100)), 1 => usdc_amount()];
    let to_iso =
        (ts_soon(s.now), account_name(s), market_name(s), amount()).prop_map(|(ts, account, market, amount)| {
            step(ts, Command::TransferMargin(TransferMargin { account, market, amount, to: TransferTo::Isolated }))
        });
    let pairs = if s.isolated.is_empty() {
        (account_name(s), market_name(s)).boxed()
    } else {
        prop_oneof![4 => select(s.isolated.clone()), 1 => (account_name(s), market_name(s))].boxed()
    };
    let to_cross = (ts_soon(s.now), pairs, amount()).prop_map(|(ts, (account, market), amount)| {
        step(ts, Command::TransferMargin(TransferMargin { account, market, amount, to: TransferTo::Cross }))
    });
    prop_oneof![to_iso, to_cross].boxed()
}

/// Publish time relative to the command's ts: mostly none (= ts), sometimes older (possibly
/// stale), in the future, or 0.
fn publish_offset(max_age: u64) -> BoxedStrategy<Option<i64>> {
    let max_age = max_age as i64;
    prop_oneof![
        85 => Just(None),
        8 => (0i64..=2 * max_age).prop_map(Some),
        3 => (-1_000i64..0).prop_map(Some),
        2 => Just(Some(i64::MAX)),
    ]
    .boxed()
}

fn quote(s: &Model, target: &MarketModel, is_asset: bool) -> BoxedStrategy<Step> {
    let id = target.id.clone();
    let sources = prop_oneof![
        10 => select(target.sources.clone()),
        10 => select(target.stale_sources(s.now)),
        1 => select(strings(&["rogue", ""])),
    ];
    (ts_after(s.now), sources, next_price(target.price), publish_offset(target.max_age_ms))
        .prop_map(move |(ts, source, price, offset)| {
            let publish_ts = offset.map(|o| (i128::from(ts) - i128::from(o)).clamp(0, i128::from(u64::MAX)) as u64);
            let (market, asset) = if is_asset { (None, Some(id.clone())) } else { (Some(id.clone()), None) };
            step(ts, Command::Oracle(OraclePrice { market, asset, source, price, publish_ts }))
        })
        .boxed()
}

/// A crash or a squeeze: one source of a priced market quotes 15–50% away, at the command's time.
fn crash(s: &Model) -> Option<BoxedStrategy<Step>> {
    let markets: Vec<MarketModel> = s.markets.iter().filter(|m| m.price > 0).cloned().collect();
    if markets.is_empty() {
        return None;
    }
    let factor = prop_oneof![500_000i64..=850_000, 1_150_000i64..=1_600_000];
    Some(
        (ts_after(s.now), select(markets), factor)
            .prop_map(|(ts, m, f)| {
                let price = Price::from_raw(scale(m.price, f, 1_000_000));
                let source = m.sources[0].clone();
                step(
                    ts,
                    Command::Oracle(OraclePrice { market: Some(m.id), asset: None, source, price, publish_ts: None }),
                )
            })
            .boxed(),
    )
}

fn oracle(s: &Model) -> BoxedStrategy<Step> {
    let mut arms: Vec<(u32, BoxedStrategy<Step>)> = Vec::new();
    // Feeds below quorum (as far as the model knows) get quoted more often.
    for m in &s.markets {
        arms.push((if m.fresh(s.now) < m.min_sources { 25 } else { 4 }, quote(s, m, false)));
    }
    for a in &s.assets {
        arms.push((if a.fresh(s.now) < a.min_sources { 6 } else { 2 }, quote(s, a, true)));
    }
    // Unknown targets, and both or neither of market and asset.
    arms.push((1, quote(s, &MarketModel::unknown("DOGE-PERP"), false)));
    let both = (ts_after(s.now), prop::option::of(market_name(s)), prop::option::of(collateral_name(s)), next_price(0))
        .prop_filter("exactly one of market or asset is the normal case", |(_, m, a, _)| m.is_some() == a.is_some())
        .prop_map(|(ts, market, asset, price)| {
            step(ts, Command::Oracle(OraclePrice { market, asset, source: "s1".into(), price, publish_ts: None }))
        });
    arms.push((1, both.boxed()));
    Union::new_weighted(arms).boxed()
}

fn fill_in(s: &Model, m: &MarketModel) -> BoxedStrategy<Step> {
    let market = m.id.clone();
    (ts_soon(s.now), counterparties(s), fill_size(m.price), fill_price(m.price), any::<bool>())
        .prop_map(move |(ts, (buyer, seller), size, price, seller_takes)| {
            let taker = if seller_takes { Side::Seller } else { Side::Buyer };
            step(
                ts,
                Command::Fill(Fill { market: market.clone(), buyer, seller, size, price, taker, liquidation: false }),
            )
        })
        .boxed()
}

/// A fill against an existing (modelled) position: close it exactly, reduce it, or flip it.
fn fill_against(s: &Model, account: &str, m: &MarketModel, size: i128) -> BoxedStrategy<Step> {
    let pool = if s.funded.len() >= 2 { s.funded.clone() } else { strings(&ACCOUNTS) };
    let others: Vec<String> = pool.into_iter().filter(|a| a != account).collect();
    let (account, market, abs) = (account.to_string(), m.id.clone(), size.unsigned_abs() as i128);
    let long = size > 0;
    let amount = prop_oneof![
        4 => Just(abs),
        3 => (1i128..1_000).prop_map(move |k| (abs * k / 1_000).max(1)),
        3 => (1_001i128..4_000).prop_map(move |k| abs * k / 1_000),
        1 => (1i128..3).prop_map(move |d| abs + d),
    ];
    (ts_soon(s.now), select(others), amount, fill_price(m.price), any::<bool>())
        .prop_map(move |(ts, other, raw, price, seller_takes)| {
            let (buyer, seller) = if long { (other, account.clone()) } else { (account.clone(), other) };
            let taker = if seller_takes { Side::Seller } else { Side::Buyer };
            let size = Size::from_raw(raw);
            step(
                ts,
                Command::Fill(Fill { market: market.clone(), buyer, seller, size, price, taker, liquidation: false }),
            )
        })
        .boxed()
}

/// A fill that opens near an account's leverage limit (from what it deposited) against the
/// best-funded account, so that the crashes of the price walk liquidate someone.
fn leveraged_fill(s: &Model) -> Option<BoxedStrategy<Step>> {
    let markets: Vec<MarketModel> = s.markets.iter().filter(|m| m.price > 0 && m.initial > 0).cloned().collect();
    let deep = s.deposited.iter().max_by_key(|(_, d)| *d)?.0.clone();
    let traders: Vec<(String, i128)> = s.deposited.iter().filter(|(a, _)| *a != deep).cloned().collect();
    if markets.is_empty() || traders.is_empty() {
        return None;
    }
    Some(
        (ts_soon(s.now), select(markets), select(traders), 300i128..=950, any::<bool>())
            .prop_map(move |(ts, m, (trader, deposit), per_mille, long)| {
                // notional = deposit × leverage, leverage = per_mille/1000 of 1/initial.
                let notional = deposit * per_mille * i128::from(ONE) / 1_000 / i128::from(m.initial);
                let size = size_for(notional, m.price);
                let (buyer, seller) = if long { (trader, deep.clone()) } else { (deep.clone(), trader) };
                let (market, price, taker) = (m.id.clone(), Price::from_raw(m.price), Side::Buyer);
                step(ts, Command::Fill(Fill { market, buyer, seller, size, price, taker, liquidation: false }))
            })
            .boxed(),
    )
}

fn fill(s: &Model) -> BoxedStrategy<Step> {
    let mut arms: Vec<(u32, BoxedStrategy<Step>)> = Vec::new();
    for m in &s.markets {
        // Mostly where the model believes the oracle is valid; stale markets still get some fills
        // (risk-reducing ones must go through).
        let weight = match (m.price > 0, m.fresh(s.now) >= m.min_sources) {
            (true, true) => 8,
            (true, false) => 2,
            (false, _) => 1,
        };
        arms.push((weight, fill_in(s, m)));
    }
    for (account, market, size) in &s.positions {
        if let Some(m) = s.markets.iter().find(|m| &m.id == market).filter(|m| *size != 0 && m.price > 0) {
            arms.push((2, fill_against(s, account, m, *size)));
        }
    }
    arms.push((1, fill_in(s, &MarketModel::unknown("DOGE-PERP"))));
    if let Some(leveraged) = leveraged_fill(s) {
        arms.push((6, leveraged));
    }
    Union::new_weighted(arms).boxed()
}

fn funding(s: &Model) -> BoxedStrategy<Step> {
    let mut arms: Vec<(u32, BoxedStrategy<Step>)> = Vec::new();
    for m in &s.markets {
        let (market, max) = (m.id.clone(), m.max_rate.max(1));
        let how = prop_oneof![
            8 => (-max..=max).prop_map(|r| (Some(Ratio::from_raw(r)), None)),
            1 => (1i64..1_000_000).prop_map(move |d| (Some(Ratio::from_raw(max + d)), None)),
            3 => (-5_000_000i64..=5_000_000).prop_map(|p| (None, Some(Ratio::from_raw(p)))),
            3 => Just((None, None)),
            1 => Just((Some(Ratio::from_raw(1)), Some(Ratio::from_raw(1)))),
        ];
        arms.push((
            4,
            (ts_after(s.now), how)
                .prop_map(move |(ts, (rate, premium))| {
                    step(ts, Command::Funding(Funding { market: market.clone(), rate, premium }))
                })
                .boxed(),
        ));
    }
    arms.push((
        1,
        (ts_after(s.now), market_name(s))
            .prop_map(|(ts, market)| step(ts, Command::Funding(Funding { market, rate: None, premium: None })))
            .boxed(),
    ));
    Union::new_weighted(arms).boxed()
}

/// Wind a market down at a price near (or far from) its last quote.
fn settle(s: &Model) -> BoxedStrategy<Step> {
    let markets: Vec<(String, i64)> = s.markets.iter().map(|m| (m.id.clone(), m.price)).collect();
    (ts_soon(s.now), select(markets))
        .prop_flat_map(|(ts, (market, p))| {
            fill_price(p)
                .prop_map(move |price| step(ts, Command::SettleMarket(SettleMarket { market: market.clone(), price })))
        })
        .boxed()
}

/// Withdrawal limits: short or long delays, a small or large outflow share, short windows (so
/// streams see the limiter refill); one in ten out of bounds.
fn configure_withdrawals(s: &Model) -> BoxedStrategy<Step> {
    (ts_after(s.now), 0u64..5_000, 0u64..200_000, 0u64..60_000, ratio(1, ONE), 1u64..600_000, 0u64..120_000, 0u8..10)
        .prop_map(|(ts, base, pool, extra, share, window, gate, bad)| {
            let max = if bad == 0 { base.saturating_sub(1) } else { base + extra };
            let p = WithdrawalParams {
                base_delay_ms: base,
                pool_delay_ms: pool,
                max_delay_ms: max,
                outflow_share: share,
                outflow_window_ms: window,
                bad_debt_gate_ms: gate,
            };
            step(ts, Command::ConfigureWithdrawals(p))
        })
        .boxed()
}

/// Requests from the cross book or an isolated bucket, and cancellations of recent ids.
fn withdrawal_request(s: &Model) -> BoxedStrategy<Step> {
    let amount = || prop_oneof![4 => log_raw(4, 10).prop_map(|m| Size::from_raw(m * 100)), 1 => usdc_amount()];
    let pairs = if s.isolated.is_empty() {
        (account_name(s), market_name(s)).boxed()
    } else {
        select(s.isolated.clone()).boxed()
    };
    let cross = (ts_soon(s.now), account_name(s), amount()).prop_map(|(ts, account, amount)| {
        step(ts, Command::RequestWithdrawal(RequestWithdrawal { account, amount, isolated: None }))
    });
    let iso = (ts_soon(s.now), pairs, amount()).prop_map(|(ts, (account, market), amount)| {
        step(ts, Command::RequestWithdrawal(RequestWithdrawal { account, amount, isolated: Some(market) }))
    });
    let last = s.requests;
    let cancel = (ts_soon(s.now), account_name(s), 0..=last)
        .prop_map(|(ts, account, id)| step(ts, Command::CancelWithdrawal(CancelWithdrawal { account, id })));
    prop_oneof![5 => cross, 2 => iso, 3 => cancel].boxed()
}

/// Council keys 1..=3 (seeds) and the guardian 9; 4 is a stranger.
fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(seed: u8) -> Hex<32> {
    Hex(signing_key(seed).verifying_key().to_bytes())
}

fn init_governance(s: &Model) -> BoxedStrategy<Step> {
    let timelocks = Timelocks { tighten_ms: 1_000, loosen_ms: 5_000, rotation_ms: 20_000 };
    (ts_after(s.now), 1u32..=3)
        .prop_map(move |(ts, threshold)| {
            let council =
                Council { keys: (1..=3).map(public).collect(), threshold, guardian: Some(public(9)), timelocks };
            step(ts, Command::InitGovernance(ballast_engine::command::InitGovernance { council }))
        })
        .boxed()
}

/// Tightening and loosening changes of the markets and the withdrawal gate.
fn change(s: &Model) -> BoxedStrategy<Change> {
    let markets = market_name(s);
    prop_oneof![
        (markets.clone(), ratio(ONE, 3 * ONE))
            .prop_map(|(market, multiplier)| Change::SetMarginMultiplier { market, multiplier }),
        (markets, select(vec![Status::Active, Status::ReduceOnly, Status::Halted]))
            .prop_map(|(market, status)| Change::SetMarketStatus { market, status }),
        (0u64..200_000).prop_map(|until_ts| Change::GateWithdrawals { until_ts }),
    ]
    .boxed()
}

/// Governance traffic: proposals, approvals signed by council keys, strangers or nobody (and for
/// the wrong nonce), executions and guardian actions, with nonces near the last one.
fn governance(s: &Model) -> BoxedStrategy<Step> {
    let last = s.nonce;
    let nonce = move || prop_oneof![3 => Just(last + 1), 1 => 0..=last + 2];
    let propose = (ts_soon(s.now), nonce(), change(s)).prop_map(|(ts, nonce, change)| {
        step(ts, Command::Propose(Box::new(ballast_engine::command::Propose { nonce, change })))
    });
    let proposals = s.proposals.clone();
    let approve =
        (ts_soon(s.now), select(if proposals.is_empty() { vec![(0, None)] } else { proposals }), 1u8..=4, 0u8..8)
            .prop_map(|(ts, (nonce, change), seed, mode)| {
                let change = change.unwrap_or(Change::GateWithdrawals { until_ts: 0 });
                let signed_nonce = if mode == 0 { nonce + 1 } else { nonce };
                let action = if mode == 1 { SignedAction::Cancel } else { SignedAction::Approve };
                let sig = Hex(signing_key(seed).sign(&signing_bytes(action, signed_nonce, &change)).to_bytes());
                let signed = ballast_engine::command::SignedNonce { nonce, key: public(seed), signature: sig };
                step(ts, if mode == 2 { Command::Cancel(signed) } else { Command::Approve(signed) })
            });
    let execute = (ts_after(s.now), 0..=last + 1)
        .prop_map(|(ts, nonce)| step(ts, Command::Execute(ballast_engine::command::Execute { nonce })));
    let guardian =
        (ts_soon(s.now), nonce(), change(s), select(vec![9u8, 9, 1])).prop_map(|(ts, nonce, change, seed)| {
            let signature =
                Hex(signing_key(seed).sign(&signing_bytes(SignedAction::Guardian, nonce, &change)).to_bytes());
            step(ts, Command::Guardian(Box::new(ballast_engine::command::GuardianAction { nonce, change, signature })))
        });
    prop_oneof![3 => propose, 5 => approve, 2 => execute, 2 => guardian].boxed()
}

fn tick(s: &Model) -> BoxedStrategy<Step> {
    ts_after(s.now).prop_map(|ts| step(ts, Command::Tick)).boxed()
}

/// A liquidator takes over part of a position, mostly of an account that holds one.
fn liquidate(s: &Model) -> BoxedStrategy<Step> {
    let targets: Vec<(String, String)> =
        s.positions.iter().filter(|p| p.2 != 0).map(|(a, m, _)| (a.clone(), m.clone())).collect();
    let target = if targets.is_empty() {
        (account_name(s), market_name(s)).boxed()
    } else {
        prop_oneof![4 => select(targets), 1 => (account_name(s), market_name(s))].boxed()
    };
    let limit = prop::option::weighted(0.3, select(START_PRICES.to_vec()).prop_map(Price::from_raw));
    (ts_soon(s.now), account_name(s), target, log_raw(4, 9), limit)
        .prop_map(|(ts, liquidator, (account, market), size, limit)| {
            step(ts, Command::Liquidate(Liquidate { liquidator, account, market, size: Size::from_raw(size), limit }))
        })
        .boxed()
}

fn fund_insurance(s: &Model) -> BoxedStrategy<Step> {
    let fund = select(strings(&["global", "global", "global", "nofund"]));
    (ts_soon(s.now), fund, usdc_amount())
        .prop_map(|(ts, fund, amount)| step(ts, Command::FundInsurance { fund, amount }))
        .boxed()
}

fn set_backstop(s: &Model) -> BoxedStrategy<Step> {
    (ts_soon(s.now), account_name(s), log_raw(6, 13))
        .prop_map(|(ts, account, cap)| step(ts, Command::SetBackstop { account, loss_cap: Quote::from_raw(cap) }))
        .boxed()
}

struct EngineMachine;

impl ReferenceStateMachine for EngineMachine {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(s: &Model) -> BoxedStrategy<Step> {
        let listed = !s.markets.is_empty();
        let priced = s.markets.iter().any(|m| m.price > 0);
        let valid = s.markets.iter().any(|m| m.price > 0 && m.fresh(s.now) >= m.min_sources);
        let tradable = priced && s.funded.len() >= 2;
        let mut arms: Vec<(u32, BoxedStrategy<Step>)> = vec![
            (
                if !listed {
                    30
                } else if s.markets.len() < 3 {
                    3
                } else {
                    1
                },
                create_market(s),
            ),
            (if s.assets.is_empty() { 3 } else { 1 }, create_asset(s)),
            (if s.funded.len() < 3 { 20 } else { 8 }, deposit(s)),
            (3, withdraw(s)),
            (3, transfer(s)),
            (
                if !listed {
                    2
                } else if priced {
                    10
                } else {
                    20
                },
                oracle(s),
            ),
            (2, tick(s)),
            (1, configure_withdrawals(s)),
            (1, init_governance(s)),
            (if s.governed { 4 } else { 1 }, governance(s)),
            (if s.limits { 4 } else { 1 }, withdrawal_request(s)),
        ];
        if listed {
            arms.push((
                match (tradable, valid) {
                    (true, true) => 24,
                    (true, false) => 4,
                    (false, _) => 1,
                },
                fill(s),
            ));
            arms.push((2, funding(s)));
            arms.push((3, liquidate(s)));
            arms.push((1, settle(s)));
        }
        if let Some(crash) = crash(s).filter(|_| !s.positions.is_empty()) {
            arms.push((5, crash));
        }
        arms.push((2, fund_insurance(s)));
        arms.push((1, set_backstop(s)));
        Union::new_weighted(arms).boxed()
    }

    fn apply(mut s: Model, Step(c): &Step) -> Model {
        if c.ts < s.now {
            // Most likely rejected for going back in time.
            return s;
        }
        s.now = c.ts;
        match &c.cmd {
            Command::CreateAsset { asset, params }
                if valid_id(asset) && asset != "USDC" && s.asset(asset).is_none() && params.validate().is_ok() =>
            {
                s.assets.push(feed_model(asset, &params.oracle));
            }
            Command::CreateMarket { market, params }
                if valid_id(market) && s.market(market).is_none() && params.validate().is_ok() =>
            {
                let mut m = feed_model(market, &params.oracle);
                m.max_rate = params.funding.max_rate.raw();
                m.initial = params.initial_margin.raw();
                s.markets.push(m);
            }
            Command::Deposit(d) => {
                let whole_micros = d.amount.raw() % 100 == 0 && d.amount.raw() < pow10(20);
                if d.asset == "USDC" && d.amount.is_positive() && whole_micros && valid_id(&d.account) {
                    if !s.funded.contains(&d.account) {
                        s.funded.push(d.account.clone());
                    }
                    let micros = d.amount.raw() / 100;
                    match s.deposited.iter_mut().find(|(a, _)| *a == d.account) {
                        Some(e) => e.1 += micros,
                        None => s.deposited.push((d.account.clone(), micros)),
                    }
                    if let Some(m) = &d.isolated {
                        let pair = (d.account.clone(), m.clone());
                        if s.market(m).is_some() && !s.isolated.contains(&pair) {
                            s.isolated.push(pair);
                        }
                    }
                }
            }
            Command::TransferMargin(t) => {
                let pair = (t.account.clone(), t.market.clone());
                if t.to == TransferTo::Isolated && s.funded.contains(&t.account) && !s.isolated.contains(&pair) {
                    s.isolated.push(pair);
                }
            }
            Command::Oracle(o) if o.price.is_positive() => {
                let target = match (&o.market, &o.asset) {
                    (Some(m), None) => s.market(m),
                    (None, Some(a)) => s.asset(a),
                    _ => None,
                };
                let at = o.publish_ts.unwrap_or(c.ts);
                if let Some(t) = target.filter(|_| at <= c.ts) {
                    t.price = o.price.raw();
                    if let Some(i) = t.sources.iter().position(|id| *id == o.source) {
                        t.quoted[i] = Some(t.quoted[i].map_or(at, |q| q.max(at)));
                    }
                }
            }
            Command::ConfigureWithdrawals(p) if p.validate().is_ok() => s.limits = true,
            Command::RequestWithdrawal(_) => s.requests += 1,
            Command::InitGovernance(_) => s.governed = true,
            Command::Propose(p) => {
                s.nonce = s.nonce.max(p.nonce);
                s.proposals.push((p.nonce, Some(p.change.clone())));
            }
            Command::Guardian(g) => s.nonce = s.nonce.max(g.nonce),
            Command::SettleMarket(x) if x.price.is_positive() => s.positions.retain(|(_, m, _)| *m != x.market),
            Command::Fill(f) => {
                let known = s.funded.contains(&f.buyer) && s.funded.contains(&f.seller);
                if known
                    && f.buyer != f.seller
                    && f.size.is_positive()
                    && f.price.is_positive()
                    && s.market(&f.market).is_some()
                {
                    s.add_position(&f.buyer, &f.market, f.size.raw());
                    s.add_position(&f.seller, &f.market, -f.size.raw());
                }
            }
            _ => {}
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------------------------

struct Record {
    cmd: TimedCommand,
    result: Result<(), Reject>,
    events: Vec<Event>,
}

struct Sut {
    checked: Checked,
    log: Vec<Record>,
}

struct Ctx<'a>(usize, &'a str);

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command #{}: {}", self.0, self.1)
    }
}

impl StateMachineTest for EngineMachine {
    type SystemUnderTest = Sut;
    type Reference = EngineMachine;

    fn init_test(_: &Model) -> Sut {
        Sut { checked: Checked::new(Engine::new()), log: Vec::new() }
    }

    fn apply(mut sut: Sut, _: &Model, Step(cmd): Step) -> Sut {
        // Every command goes through the decoder: its JSON line must decode to the same command.
        let line = render(&cmd);
        match parse_line(&line) {
            Ok(parsed) => assert_eq!(parsed, cmd, "decoding {line} gave another command"),
            Err(e) => panic!("decoding {line} failed: {e}"),
        }
        let n = sut.checked.events.len();
        let result = sut.checked.apply(&cmd, &Ctx(sut.log.len(), &line));
        let events = sut.checked.events[n..].to_vec();
        let ts = cmd.ts;
        sut.log.push(Record { cmd, result, events });
        // The venue: take every new liquidation order with the best-funded other account —
        // through the book at the order's limit (whole or half), or, for every third order, by
        // that account as an external liquidator — and log those commands like any other.
        let mut k = 0;
        while k < sut.log.last().map_or(0, |r| r.events.len()) {
            let order = match &sut.log.last().expect("logged").events[k] {
                Event::LiquidationOrder { order, account, market, side, size, limit, .. } => {
                    Some((*order, account.to_string(), market.to_string(), *side, *size, *limit))
                }
                _ => None,
            };
            k += 1;
            let Some((order, account, market, side, size, price)) = order else { continue };
            let Some(deep) = best_funded(&sut.checked.engine, &account) else { continue };
            let cmd = if order % 3 == 2 {
                let limit = None;
                Command::Liquidate(Liquidate { liquidator: deep, account, market, size, limit })
            } else {
                let size = if order % 3 == 0 { size } else { Size::from_raw((size.raw() / 2).max(1)) };
                let (buyer, seller) = match side {
                    OrderSide::Sell => (deep, account),
                    OrderSide::Buy => (account, deep),
                };
                Command::Fill(Fill { market, buyer, seller, size, price, taker: Side::Buyer, liquidation: true })
            };
            let cmd = TimedCommand { ts, cmd };
            let line = render(&cmd);
            assert_eq!(parse_line(&line).as_ref(), Ok(&cmd), "decoding {line}");
            let n = sut.checked.events.len();
            let result = sut.checked.apply(&cmd, &Ctx(sut.log.len(), &line));
            let events = sut.checked.events[n..].to_vec();
            sut.log.push(Record { cmd, result, events });
            k = 0;
        }
        sut
    }

    fn check_invariants(sut: &Sut, _: &Model) {
        // Checked in `apply` right after each command (with the command in the message); here
        // only what holds for the initial state too.
        check_state(&sut.checked.engine, &"the commands so far");
    }

    fn teardown(sut: Sut, _: Model) {
        // 4. Determinism: the same stream into a fresh engine gives the same decisions, events and
        // state; a serde round trip mid-stream continues identically.
        let mid = sut.log.len() / 2;
        let mut fresh = Engine::new();
        let mut restored: Option<Engine> = None;
        for (i, rec) in sut.log.iter().enumerate() {
            if i == mid {
                restored = Some(round_trip(&fresh));
            }
            let mut events = Vec::new();
            let result = fresh.apply(&rec.cmd, &mut events);
            assert_eq!(result, rec.result, "replay decided differently on command #{i}: {}", render(&rec.cmd));
            assert_eq!(events, rec.events, "replay emitted other events on command #{i}: {}", render(&rec.cmd));
            if let Some(r) = restored.as_mut() {
                let mut events = Vec::new();
                let result = r.apply(&rec.cmd, &mut events);
                assert_eq!(result, rec.result, "restored engine decided differently on #{i}: {}", render(&rec.cmd));
                assert_eq!(events, rec.events, "restored engine emitted other events on #{i}: {}", render(&rec.cmd));
            }
        }
        assert_eq!(fresh.state_hash(), sut.checked.engine.state_hash(), "replay reached another state");
        if let Some(r) = &restored {
            assert_eq!(r.state_hash(), sut.checked.engine.state_hash(), "restored engine reached another state");
        }
        // Round trip at the end, then a few more commands on both copies.
        let mut original = sut.checked.engine;
        let mut copy = round_trip(&original);
        for (i, cmd) in probes(&original).iter().enumerate() {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let ra = original.apply(cmd, &mut a);
            let rb = copy.apply(cmd, &mut b);
            assert_eq!((ra, a), (rb, b), "probe #{i} differs after a round trip: {}", render(cmd));
        }
        assert_eq!(original.state_hash(), copy.state_hash(), "the probes left a restored engine in another state");
    }
}

/// The account with the most cross-book USDC other than `except` (ties to the smaller id).
fn best_funded(e: &Engine, except: &str) -> Option<String> {
    e.accounts()
        .filter(|(id, a)| id.as_str() != except && a.cash.is_positive())
        .max_by(|(ia, a), (ib, b)| a.cash.cmp(&b.cash).then(ib.cmp(ia)))
        .map(|(id, _)| id.to_string())
}

/// Further commands for the round-trip check, built from the engine's own state.
fn probes(e: &Engine) -> Vec<TimedCommand> {
    let now = e.now();
    let mut out = Vec::new();
    let accounts: Vec<String> = e.accounts().map(|(id, _)| id.to_string()).collect();
    let (a, b) = match accounts.as_slice() {
        [a, b, ..] => (a.clone(), b.clone()),
        [a] => (a.clone(), "bob".to_string()),
        [] => ("alice".to_string(), "bob".to_string()),
    };
    for m in e.markets() {
        let source = m.params.oracle.sources.first().map_or("s1".to_string(), |s| s.id.clone());
        let price = m.feed.price().unwrap_or(Price::from_raw(10_000_000_000));
        let market = m.id.to_string();
        out.push(TimedCommand {
            ts: now + 1_000,
            cmd: Command::Oracle(OraclePrice {
                market: Some(market.clone()),
                asset: None,
                source,
                price,
                publish_ts: None,
            }),
        });
        out.push(TimedCommand {
            ts: now + 1_000,
            cmd: Command::Fill(Fill {
                market: market.clone(),
                buyer: a.clone(),
                seller: b.clone(),
                size: size_for(1_000_000_000, price.raw()),
                price,
                taker: Side::Buyer,
                liquidation: false,
            }),
        });
        out.push(TimedCommand {
            ts: now + 2_000,
            cmd: Command::Funding(Funding { market: market.clone(), rate: None, premium: None }),
        });
        out.push(TimedCommand {
            ts: now + 2_000,
            cmd: Command::TransferMargin(TransferMargin {
                account: b.clone(),
                market,
                amount: Size::from_raw(100_000_000),
                to: TransferTo::Isolated,
            }),
        });
    }
    out.push(TimedCommand {
        ts: now + 3_000,
        cmd: Command::Withdraw(Withdraw {
            account: a,
            asset: "USDC".into(),
            amount: Size::from_raw(100_000_000),
            isolated: None,
        }),
    });
    out.push(TimedCommand {
        ts: now + 3_000,
        cmd: Command::RequestWithdrawal(RequestWithdrawal {
            account: b,
            amount: Size::from_raw(100_000_000),
            isolated: None,
        }),
    });
    out.push(TimedCommand { ts: now + 7_200_000, cmd: Command::Tick });
    out
}

prop_state_machine! {
    #![proptest_config(config(base_cases(), SM_REGRESSIONS))]

    #[test]
    fn state_machine(sequential 5..60 => EngineMachine);
}

// ---------------------------------------------------------------------------------------------
// No panic on any input
// ---------------------------------------------------------------------------------------------

const BASE_TS: u64 = 10_000;

/// A valid stream that leaves markets (one with tiers, fees, a three-source oracle, volatility
/// margin and open-interest scaling), a collateral asset, cross and isolated accounts, prices,
/// positions and a funding index in place.
const BASE_LINES: &[&str] = &[
    r#"{"ts":0,"cmd":"create_asset","asset":"ETH","initial_weight":"0.8","maintenance_weight":"0.9","deposit_cap":"1000"}"#,
    r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.05","maintenance_margin":"0.025","maker_fee":"0.0002","taker_fee":"0.0005","maintenance_tiers":[{"notional_floor":"1000000","initial_margin":"0.1","maintenance_margin":"0.05"}],"open_interest_scaling":{"lower_cap":"1000000","upper_cap":"5000000"},"volatility_margin":{"lambda":"0.94","multiplier":"3","horizon_samples":10,"sample_interval_ms":1000,"max_increase_per_hour":"0.1","cap":"0.5","initial_multiplier":"2"},"oracle":{"sources":[{"id":"s1","weight":2},{"id":"s2"},{"id":"s3"}],"min_sources":2,"max_age_ms":30000,"max_divergence":"0.05","max_jump":"0.2","mark_band":"0.01"}}"#,
    r#"{"ts":0,"cmd":"create_market","market":"ETH-PERP","initial_margin":"0.1","maintenance_margin":"0.05"}"#,
    r#"{"ts":0,"cmd":"deposit","account":"alice","asset":"USDC","amount":"100000"}"#,
    r#"{"ts":0,"cmd":"deposit","account":"bob","asset":"USDC","amount":"100000"}"#,
    r#"{"ts":0,"cmd":"deposit","account":"carol","asset":"USDC","amount":"5000","isolated":"BTC-PERP"}"#,
    r#"{"ts":0,"cmd":"deposit","account":"dave","asset":"ETH","amount":"10"}"#,
    r#"{"ts":0,"cmd":"deposit","account":"dave","asset":"USDC","amount":"10.5"}"#,
    r#"{"ts":1000,"cmd":"oracle","asset":"ETH","source":"s1","price":"3000"}"#,
    r#"{"ts":1000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"50000"}"#,
    r#"{"ts":1000,"cmd":"oracle","market":"BTC-PERP","source":"s2","price":"50010.12345678"}"#,
    r#"{"ts":1000,"cmd":"oracle","market":"ETH-PERP","source":"s1","price":"3000"}"#,
    r#"{"ts":2000,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"1","price":"50000"}"#,
    r#"{"ts":2000,"cmd":"fill","market":"BTC-PERP","buyer":"carol","seller":"bob","size":"0.5","price":"50001.5","taker":"seller"}"#,
    r#"{"ts":3000,"cmd":"fill","market":"ETH-PERP","buyer":"alice","seller":"dave","size":"5","price":"3000"}"#,
    r#"{"ts":4000,"cmd":"funding","market":"BTC-PERP","rate":"0.0001"}"#,
    r#"{"ts":10000,"cmd":"oracle","market":"BTC-PERP","source":"s3","price":"50005"}"#,
];

static BASE: LazyLock<Engine> = LazyLock::new(|| {
    let mut e = Engine::new();
    let mut events = Vec::new();
    for line in BASE_LINES {
        let cmd = parse_line(line).unwrap_or_else(|err| panic!("{line}: {err}"));
        e.apply(&cmd, &mut events).unwrap_or_else(|err| panic!("{line}: {err}"));
    }
    assert_eq!(e.now(), BASE_TS);
    e
});
static BASE_HASH: LazyLock<String> = LazyLock::new(|| BASE.state_hash());

/// Decode one line and, if it decodes, apply it with every check.
fn feed(e: &mut Checked, line: &str) {
    if let Ok(cmd) = parse_line(line) {
        let _ = e.apply(&cmd, &line);
    }
}

/// Every field name of the command contract, nested ones included.
const FIELDS: &[&str] = &[
    "ts",
    "cmd",
    "market",
    "asset",
    "account",
    "amount",
    "isolated",
    "to",
    "source",
    "price",
    "publish_ts",
    "buyer",
    "seller",
    "size",
    "taker",
    "rate",
    "premium",
    "initial_margin",
    "maintenance_margin",
    "maintenance_tiers",
    "notional_floor",
    "liquidation_end_share",
    "maker_fee",
    "taker_fee",
    "open_interest_scaling",
    "lower_cap",
    "upper_cap",
    "volatility_margin",
    "lambda",
    "multiplier",
    "horizon_samples",
    "sample_interval_ms",
    "max_increase_per_hour",
    "cap",
    "initial_multiplier",
    "oracle",
    "sources",
    "id",
    "weight",
    "max_age_ms",
    "min_sources",
    "max_divergence",
    "max_jump",
    "twap_window_ms",
    "mark_band",
    "allow",
    "increase_risk",
    "liquidate",
    "funding",
    "interest_rate",
    "interest_band",
    "max_rate",
    "initial_weight",
    "maintenance_weight",
    "deposit_cap",
    "breakers",
    "price_move",
    "max_move",
    "window_ms",
    "level",
    "grace_ms",
    "insurance_floor",
    "floor",
    "margin_multiplier",
    "open_interest_cap",
    "liquidation_volume",
    "max_notional",
    "price_band",
    "cooldown_ms",
    "base_delay_ms",
    "pool_delay_ms",
    "max_delay_ms",
    "outflow_share",
    "outflow_window_ms",
    "bad_debt_gate_ms",
];

/// Words that are meaningful somewhere: ids that exist, enum values (and every command name,
/// added from `COMMAND_NAMES`).
const WORDS: &[&str] = &[
    "BTC-PERP",
    "ETH-PERP",
    "SOL-PERP",
    "USDC",
    "ETH",
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "s1",
    "s2",
    "s3",
    "isolated",
    "cross",
    "buyer",
    "seller",
    "valid",
    "uncertain",
    "low_quorum",
    "volatile",
    "stale",
    "missing",
    "",
    "set_margin_multiplier",
    "reduce_only",
    "halted",
];

/// Decimal-looking strings: signs, leading zeros, many decimals, exponents, huge magnitudes.
fn decimal_text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "-?[0-9]{1,6}(\\.[0-9]{1,8})?",
        3 => "[-+]?[0-9]{0,24}(\\.[0-9]{0,14})?([eE][-+]?[0-9]{1,3})?",
        1 => select(strings(&[
            "0", "-0", "0.00000001", "0.000000001", "-0.00000001", "1e3", ".5", "5.", "+1", " 1", "1 ", "NaN", "inf",
            "0x10", "١٢", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
            "170141183460469231731687303715884105727", "92233720368.54775807", "92233720368.54775808",
            "1701411834604692317316873037.15884105727", "99999999999999999999999999999999999999999",
        ])),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => decimal_text().prop_map(Value::String),
        4 => select(WORDS.iter().chain(&COMMAND_NAMES).copied().collect::<Vec<_>>()).prop_map(Value::from),
        2 => any::<u64>().prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => (0u64..100).prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => "\\PC{0,8}".prop_map(Value::String),
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((select(FIELDS.to_vec()), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
        .boxed()
}

/// Valid commands against the base engine, to be mutated.
fn templates() -> Vec<Value> {
    vec![
        json!({"cmd":"deposit","account":"alice","asset":"USDC","amount":"100"}),
        json!({"cmd":"deposit","account":"erin","asset":"USDC","amount":"50","isolated":"ETH-PERP"}),
        json!({"cmd":"deposit","account":"dave","asset":"ETH","amount":"0.5"}),
        json!({"cmd":"withdraw","account":"alice","asset":"USDC","amount":"100"}),
        json!({"cmd":"withdraw","account":"carol","asset":"USDC","amount":"10","isolated":"BTC-PERP"}),
        json!({"cmd":"withdraw","account":"dave","asset":"ETH","amount":"1"}),
        json!({"cmd":"transfer_margin","account":"alice","market":"ETH-PERP","amount":"10","to":"isolated"}),
        json!({"cmd":"transfer_margin","account":"carol","market":"BTC-PERP","amount":"10","to":"cross"}),
        json!({"cmd":"oracle","market":"BTC-PERP","source":"s2","price":"50100"}),
        json!({"cmd":"oracle","market":"ETH-PERP","source":"x","price":"2900","publish_ts":9000}),
        json!({"cmd":"oracle","asset":"ETH","source":"s1","price":"3100"}),
        json!({"cmd":"fill","market":"BTC-PERP","buyer":"bob","seller":"alice","size":"0.5","price":"50000"}),
        json!({"cmd":"fill","market":"ETH-PERP","buyer":"dave","seller":"alice","size":"2","price":"3000.5","taker":"seller"}),
        json!({"cmd":"fill","market":"BTC-PERP","buyer":"carol","seller":"bob","size":"0.00000001","price":"12345.67891234"}),
        json!({"cmd":"funding","market":"BTC-PERP","rate":"0.0001"}),
        json!({"cmd":"funding","market":"ETH-PERP","premium":"0.001"}),
        json!({"cmd":"funding","market":"BTC-PERP"}),
        json!({"cmd":"tick"}),
        json!({"cmd":"create_asset","asset":"WBTC","initial_weight":"0.7","maintenance_weight":"0.8","oracle":{"max_age_ms":5000}}),
        json!({"cmd":"create_market","market":"SOL-PERP","initial_margin":"0.1","maintenance_margin":"0.05",
            "maintenance_tiers":[{"notional_floor":"100000","initial_margin":"0.2","maintenance_margin":"0.1"}],
            "maker_fee":"0.0001","taker_fee":"0.0003","liquidation_end_share":"0.3",
            "open_interest_scaling":{"lower_cap":"0","upper_cap":"1000"},
            "volatility_margin":{"lambda":"0.9","multiplier":"2","horizon_samples":4,"sample_interval_ms":1,"max_increase_per_hour":"1","cap":"0.9","initial_multiplier":"1.5"},
            "oracle":{"sources":[{"id":"a","weight":1},{"id":"b","weight":3}],"min_sources":2,"allow":{"liquidate":["valid","stale"]}},
            "funding":{"interest_rate":"0.0001","interest_band":"0.0005","max_rate":"0.01"}}),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(&'static str, Value),
    Remove(&'static str),
    /// Replace a nested field of an object-valued field.
    SetNested(&'static str, &'static str, Value),
    /// Replace one decimal string (at any depth) with hostile decimal text.
    Decimal(prop::sample::Index, String),
    /// Replace one JSON number (at any depth) with another.
    Integer(prop::sample::Index, Value),
}

fn visit_leaves(v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match v {
        Value::Object(m) => m.values_mut().for_each(|x| visit_leaves(x, f)),
        Value::Array(a) => a.iter_mut().for_each(|x| visit_leaves(x, f)),
        leaf => f(leaf),
    }
}

/// Replace the `at`-th leaf (among those `pick` selects) with `with`.
fn replace_leaf(v: &mut Value, pick: fn(&Value) -> bool, at: prop::sample::Index, with: Value) {
    let mut count = 0;
    visit_leaves(v, &mut |x| count += usize::from(pick(x)));
    if count == 0 {
        return;
    }
    let (target, mut i) = (at.index(count), 0);
    visit_leaves(v, &mut |x| {
        if pick(x) {
            if i == target {
                *x = with.clone();
            }
            i += 1;
        }
    });
}

fn is_decimal(v: &Value) -> bool {
    matches!(v, Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-'))
}

fn mutation() -> BoxedStrategy<Mutation> {
    let integer = prop_oneof![
        Just(Value::from(0)),
        Just(Value::from(u64::from(u32::MAX) + 1)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(-1)),
        (0u64..200).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
    ];
    prop_oneof![
        3 => (select(FIELDS.to_vec()), json_value()).prop_map(|(k, v)| Mutation::Set(k, v)),
        2 => select(FIELDS.to_vec()).prop_map(Mutation::Remove),
        2 => (select(FIELDS.to_vec()), select(FIELDS.to_vec()), json_value())
            .prop_map(|(k, n, v)| Mutation::SetNested(k, n, v)),
        6 => (any::<prop::sample::Index>(), decimal_text()).prop_map(|(i, t)| Mutation::Decimal(i, t)),
        2 => (any::<prop::sample::Index>(), integer).prop_map(|(i, v)| Mutation::Integer(i, v)),
    ]
    .boxed()
}

/// The `ts` of a fuzzed command: mostly a step forward from the previous one, sometimes an
/// absolute value (in the past, huge) or not a timestamp at all.
#[derive(Clone, Debug)]
enum Ts {
    Step(u64),
    Raw(Value),
}

fn fuzz_ts() -> BoxedStrategy<Ts> {
    prop_oneof![
        14 => (0u64..3_000).prop_map(Ts::Step),
        1 => (10_000u64..200_000).prop_map(Ts::Step),
        1 => (0..BASE_TS).prop_map(|t| Ts::Raw(t.into())),
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(i64::MAX as u64)].prop_map(|t| Ts::Raw(t.into())),
        1 => json_value().prop_map(Ts::Raw),
    ]
    .boxed()
}

/// A JSON command without its `ts`: a valid template with mutations, or an object of random
/// fields.
fn json_command() -> BoxedStrategy<(Ts, Value)> {
    let mutated = (select(templates()), prop::collection::vec(mutation(), 0..4)).prop_map(|(mut t, muts)| {
        for m in muts {
            let Value::Object(obj) = &mut t else { unreachable!("templates are objects") };
            match m {
                Mutation::Set(k, v) => {
                    obj.insert(k.into(), v);
                }
                Mutation::Remove(k) => {
                    obj.remove(k);
                }
                Mutation::SetNested(k, n, v) => {
                    if let Some(Value::Object(inner)) = obj.get_mut(k) {
                        inner.insert(n.into(), v);
                    }
                }
                Mutation::Decimal(at, text) => replace_leaf(&mut t, is_decimal, at, Value::String(text)),
                Mutation::Integer(at, v) => replace_leaf(&mut t, Value::is_number, at, v),
            }
        }
        t
    });
    let random = (select(COMMAND_NAMES.to_vec()), prop::collection::vec((select(FIELDS.to_vec()), json_value()), 0..8))
        .prop_map(|(cmd, kv)| {
            let mut obj: Map<String, Value> = kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            obj.insert("cmd".into(), Value::from(cmd));
            Value::Object(obj)
        });
    (fuzz_ts(), prop_oneof![4 => mutated, 1 => random]).boxed()
}

/// Text: arbitrary strings, JSON-looking strings, and valid lines with a few characters cut,
/// inserted or replaced.
fn text_line() -> BoxedStrategy<String> {
    let valid: Vec<String> = BASE_LINES
        .iter()
        .map(|s| s.to_string())
        .chain(templates().into_iter().map(|mut t| {
            t["ts"] = Value::from(BASE_TS + 1);
            t.to_string()
        }))
        .collect();
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0usize..4, "\\PC{0,3}"), 1..4);
    let mutated = (select(valid), edits).prop_map(|(line, edits)| {
        let mut chars: Vec<char> = line.chars().collect();
        for (at, cut, insert) in edits {
            let i = at.index(chars.len() + 1);
            let end = (i + cut).min(chars.len());
            chars.splice(i..end, insert.chars());
        }
        chars.into_iter().collect::<String>()
    });
    prop_oneof![
        2 => any::<String>(),
        2 => "\\{(\"[a-z_]{1,12}\":(\"[-+0-9.eE]{0,12}\"|-?[0-9]{1,20}|null|true|\\{\\}|\\[\\]),?){0,6}\\}",
        6 => mutated,
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(3 * base_cases(), TEXT_REGRESSIONS))]

    /// 5. No panic on any text: `parse_line` never panics, and what decodes applies cleanly.
    #[test]
    fn decoder_never_panics_on_text(lines in prop::collection::vec(text_line(), 1..4)) {
        let mut e = Checked { engine: BASE.clone(), events: Vec::new(), hash: BASE_HASH.clone() };
        for line in &lines {
            feed(&mut e, line);
        }
    }
}

proptest! {
    #![proptest_config(config(3 * base_cases(), JSON_REGRESSIONS))]

    /// 5. No panic on any command: JSON objects with the real field names and hostile values.
    #[test]
    fn commands_never_panic(cmds in prop::collection::vec(json_command(), 1..8)) {
        let mut e = Checked { engine: BASE.clone(), events: Vec::new(), hash: BASE_HASH.clone() };
        let mut now = BASE_TS;
        for (ts, cmd) in &cmds {
            let mut cmd = cmd.clone();
            cmd["ts"] = match ts {
                Ts::Step(d) => {
                    now += d;
                    Value::from(now)
                }
                Ts::Raw(v) => v.clone(),
            };
            feed(&mut e, &cmd.to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed checks
// ---------------------------------------------------------------------------------------------

/// The shipped examples keep every invariant, and their lines render back identically.
#[test]
fn examples_keep_the_invariants() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("examples dir").map(|f| f.expect("entry").path()).collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files.iter().filter(|p| p.extension().is_some_and(|x| x == "jsonl")) {
        let text = std::fs::read_to_string(path).expect("readable");
        let mut e = Checked::new(Engine::new());
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cmd = parse_line(line).unwrap_or_else(|err| panic!("{}:{}: {err}", path.display(), i + 1));
            assert_eq!(parse_line(&render(&cmd)).as_ref(), Ok(&cmd), "render of {line}");
            let _ = e.apply(&cmd, &line);
        }
        assert_eq!(round_trip(&e.engine).state_hash(), e.hash);
    }
}

/// The checks are not vacuous: a state one raw unit off in any ledger is caught.
#[test]
fn the_checks_catch_a_tampered_state() {
    fn bump_quote(v: &mut Value) {
        let q = Quote::parse(v.as_str().expect("a decimal string")).expect("a quote");
        *v = Value::from(q.checked_add(Quote::from_raw(1)).expect("in range").to_string());
    }
    fn bump_size(v: &mut Value) {
        let s = Size::parse(v.as_str().expect("a decimal string")).expect("a size");
        *v = Value::from(s.checked_add(Size::from_raw(1)).expect("in range").to_string());
    }
    type Tamper = (&'static str, fn(&mut Value));
    let tampered: [Tamper; 4] = [
        ("USDC not conserved", |e| bump_quote(&mut e["accounts"][0]["cash"])),
        ("USDC not conserved", |e| bump_quote(&mut e["fee_pool"])),
        ("open interest", |e| bump_size(&mut e["markets"][1]["open_interest"])),
        ("ETH not conserved", |e| bump_size(&mut e["accounts"][3]["collateral"][0][1])),
    ];
    for (expected, tamper) in tampered {
        let mut v = serde_json::to_value(&*BASE).expect("serializes");
        tamper(&mut v);
        let mut e: Engine = serde_json::from_value(v).expect("deserializes");
        e.rebuild_index();
        let caught = std::panic::catch_unwind(|| check_state(&e, &"tampering")).expect_err("tampering went unnoticed");
        let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains(expected), "{expected}: {message}");
    }
}

/// Found by `state_machine` (invariant 6): a fill near `Price::MAX` used to be accepted, after
/// which `Position::entry_price` overflowed (the buyer's cash leg is rounded up, so `|leg| / size`
/// can exceed the price) and `view()` failed for good. Prices above `MAX_PRICE` are now refused.
#[test]
fn prices_beyond_the_supported_range_are_refused() {
    let mut e = Engine::new();
    let mut events = Vec::new();
    for line in [
        r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.1","maintenance_margin":"0.05"}"#,
        r#"{"ts":0,"cmd":"deposit","account":"alice","asset":"USDC","amount":"1000"}"#,
        r#"{"ts":0,"cmd":"deposit","account":"bob","asset":"USDC","amount":"1"}"#,
        r#"{"ts":0,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"50000"}"#,
    ] {
        assert_eq!(e.apply(&parse_line(line).expect("decodes"), &mut events), Ok(()), "{line}");
    }
    let before = e.state_hash();
    for line in [
        r#"{"ts":0,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"0.00000001","price":"92233720368.54775807"}"#,
        r#"{"ts":0,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"1000000000.00000001"}"#,
    ] {
        let result = e.apply(&parse_line(line).expect("decodes"), &mut events);
        assert!(matches!(result, Err(ballast_engine::Reject::PriceOutOfRange { .. })), "{line}: {result:?}");
    }
    assert_eq!(e.state_hash(), before);
    assert!(e.view().is_ok());
}

/// Shrunk by `state_machine` from a failure on an in-progress engine (`view()` failed once flat
/// isolated buckets were listed): an isolated deposit in a market that was never priced.
#[test]
fn view_of_an_isolated_deposit_in_an_unpriced_market() {
    let mut e = Checked::new(Engine::new());
    for line in [
        r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.001","maintenance_margin":"0.001"}"#,
        r#"{"ts":1451,"cmd":"deposit","account":"alice","asset":"USDC","amount":"1","isolated":"BTC-PERP"}"#,
    ] {
        let cmd = parse_line(line).expect("decodes");
        assert_eq!(e.apply(&cmd, &line), Ok(()), "{line}");
    }
}

#[test]
fn base_engine_keeps_the_invariants() {
    check_state(&BASE, &"the base stream");
    assert!(BASE.view().is_ok());
    assert_eq!(BASE.seq(), BASE_LINES.len() as u64);
}
