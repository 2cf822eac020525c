//! The simulator plays the venue around the engine: it lists the markets, funds the pools,
//! opens the book, then at every step sends each market's oracle prices and funding, fills the
//! engine's liquidation orders against its liquidity model (which moves the price, so selling
//! can cascade), lets liquidators unwind, and lets traders top up, cut risk or enter.

use crate::book::{self, Book};
use crate::contract::{self, LabEvent, LiqOrder};
use crate::error::LabError;
use crate::paths::{self, Prepared};
use crate::scenario::{Loaded, Scenario};
use ballast_engine::account::{Account, Bucket};
use ballast_engine::command::{Deposit, Funding, OraclePrice, Side};
use ballast_engine::num::{Price, Quote, Ratio, Size};
use ballast_engine::{Command, Engine, Event, TimedCommand};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

pub const MM: &str = "venue.mm";

/// Stands in for a reused command while it is being applied.
const PLACEHOLDER: TimedCommand = TimedCommand { ts: 0, cmd: Command::Tick };

pub fn price(x: f64) -> Price {
    Price::from_raw((x.clamp(1e-8, 1e9) * 1e8).round() as i64)
}
pub fn price_ceil(x: f64) -> Price {
    Price::from_raw((x.clamp(1e-8, 1e9) * 1e8).ceil() as i64)
}
pub fn price_floor(x: f64) -> Price {
    Price::from_raw((x.clamp(1e-8, 1e9) * 1e8).floor().max(1.0) as i64)
}
pub fn size_floor(x: f64) -> Size {
    Size::from_raw((x.max(0.0) * 1e8).floor() as i128)
}
/// A USDC amount as the `amount` of a deposit (6 decimals at most).
pub fn usdc(x: f64) -> Size {
    Size::from_raw((x.max(0.0) * 1e6).round() as i128 * 100)
}
pub fn f_price(p: Price) -> f64 {
    p.raw() as f64 / 1e8
}
pub fn f_size(s: Size) -> f64 {
    s.raw() as f64 / 1e8
}
pub fn f_quote(q: Quote) -> f64 {
    q.raw() as f64 / 1e6
}

/// splitmix64: per-path seeds from (run seed, path index).
pub fn path_seed(seed: u64, path: u64) -> u64 {
    let mut z = seed ^ path.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The numbers of one path (the summary.json figures of a single run).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PathResult {
    pub path: u64,
    /// The engine's `totals.bad_debt`: negative equity the waterfall resolved.
    pub bad_debt: f64,
    /// What each layer absorbed of it (the engine's totals); `socialized_loss` is the last.
    pub absorbed_by_insurance: f64,
    pub absorbed_by_backstop: f64,
    pub absorbed_by_adl: f64,
    pub insurance_start: f64,
    pub insurance_min: f64,
    pub insurance_end: f64,
    pub liquidation_fills: u64,
    pub liquidation_notional: f64,
    pub liquidated_accounts: u64,
    pub liquidation_orders: u64,
    pub adl_count: u64,
    pub adl_notional: f64,
    pub adl_overshoot: f64,
    pub socialized_loss: f64,
    pub backstop_start: f64,
    pub backstop_taken_notional: f64,
    pub backstop_pnl: f64,
    pub breaker_trips: u64,
    pub peak_open_interest: f64,
    pub conservation_error: String,
    /// Σ equity of the population's buckets at the end minus at the start, less the margin
    /// they added on the way (top-ups, new entrants).
    pub book_pnl: f64,
    pub underwater_accounts: u64,
    pub unabsorbed_deficit: f64,
    /// The largest deficit of the buckets below zero seen by a full scan (recorded runs only).
    pub peak_deficit: f64,
    pub peak_deficit_ts: u64,
    pub liquidatable_at_end: u64,
    pub top_ups: u64,
    pub deleveraged_by_traders: u64,
    pub new_entrants: u64,
    pub rejected_commands: u64,
    pub oracle_validity_changes: u64,
}

impl PathResult {
    pub fn insurance_drawdown(&self) -> f64 {
        self.insurance_start - self.insurance_min
    }
}

/// Where something happened, for the chart markers.
#[derive(Clone, Debug, Serialize)]
pub struct Marker {
    pub ts: u64,
    pub market: u32,
    pub kind: &'static str,
    pub price: f64,
    pub notional: f64,
}

/// Per-step series of a recorded run.
#[derive(Clone, Debug, Default)]
pub struct Detail {
    pub times: Vec<u64>,
    pub market_ids: Vec<String>,
    /// Per market, per step.
    pub fundamental: Vec<Vec<f64>>,
    pub book: Vec<Vec<f64>>,
    pub oracle: Vec<Vec<f64>>,
    pub open_interest: Vec<Vec<f64>>,
    pub breaker: Vec<Vec<u8>>,
    /// Global, per step.
    pub insurance: Vec<f64>,
    pub backstop: Vec<f64>,
    pub liquidation_fills: Vec<u32>,
    pub liquidation_notional: Vec<f64>,
    pub adl_notional: Vec<f64>,
    /// A scan of every account's health at some steps (`NaN` elsewhere): buckets below
    /// maintenance, below zero, and their deficit. Taken at most every `scan_every` steps so
    /// that a scan costs at most about 3 million health evaluations per run.
    pub liquidatable: Vec<f64>,
    pub underwater: Vec<f64>,
    pub deficit: Vec<f64>,
    pub markers: Vec<Marker>,
    /// Why `events.jsonl` could not be written in full, when it could not (see [`Keep::Events`]).
    pub events_error: Option<String>,
    pub notes: Vec<String>,
}

struct Pending {
    order: LiqOrder,
    market: u32,
    remaining: Size,
    ready_at: u64,
}

/// How much of a liquidation order the book takes now, and at what price.
///
/// Linear impact: taking notional `N` moves the price by `N / depth_1pct` percent, so the
/// average execution is `book × (1 ∓ (spread/2 + k·q·book/2))` with `k = 0.01 / depth_1pct`.
/// The size is cut so that the average stays no worse than the order's limit for the
/// liquidated account (a sell no lower, a buy no higher); `None` when nothing can be filled.
pub fn plan_fill(book: f64, order: &LiqOrder, remaining: Size, depth_1pct: f64, spread: f64) -> Option<(Size, Price)> {
    let limit = f_price(order.limit);
    let k = 0.01 / depth_1pct;
    let half_spread = spread / 2.0;
    let slack = if order.sell { 1.0 - limit / book } else { limit / book - 1.0 } - half_spread;
    if slack <= 0.0 || book <= 0.0 {
        return None;
    }
    let max_size = 2.0 * slack / (k * book);
    let q = size_floor(f_size(remaining).min(max_size));
    if q.is_zero() {
        return None;
    }
    let qf = f_size(q);
    let exec = if order.sell {
        price_ceil(book * (1.0 - half_spread - k * qf * book / 2.0)).max(order.limit)
    } else {
        price_floor(book * (1.0 + half_spread + k * qf * book / 2.0)).min(order.limit)
    };
    Some((q, exec))
}

/// Everything shared by the paths of a run: the scenario, the prepared price data, the book,
/// and the engine after setup (cloned for each path).
pub struct Setup {
    pub loaded: Loaded,
    pub prep: Prepared,
    pub book: Book,
    pub engine: Engine,
    pub notes: Vec<String>,
    pub seed: u64,
    /// Σ equity of the population at start.
    pub book_equity_start: f64,
    pub insurance_start: f64,
    pub backstop_start: f64,
    /// Health evaluations allowed for the periodic full scans of a recorded run (default 3,000,000).
    pub scan_budget: usize,
    liquidator_ids: Vec<String>,
    max_leverage: Vec<f64>,
    market_cdf: Vec<f64>,
    /// Where the engine keeps each book account: its index in `Engine::accounts()` (creation
    /// order), so that the simulation reads an account without a lookup by id.
    slots: Vec<u32>,
    /// The engine went to [`Setup::run_single`].
    spent: bool,
}

/// No engine slot: the account is read by id.
const NO_SLOT: u32 = u32::MAX;

/// The account at `slot` of `Engine::accounts()` (creation order; constant time: the engine
/// keeps its accounts in a vector and never removes one), or by id when the slot is unknown.
fn account_at<'e>(engine: &'e Engine, slot: u32, id: &str) -> Option<&'e Account> {
    if slot == NO_SLOT {
        return engine.account(id);
    }
    engine.accounts().nth(slot as usize).map(|(_, a)| a)
}

/// The slots of `book`'s accounts: they were created in book order from `from` on (checked
/// id by id); an account that is not where expected is read by id.
fn locate(engine: &Engine, book: &Book, from: usize) -> Vec<u32> {
    let mut slots = Vec::with_capacity(book.len());
    let mut it = engine.accounts().skip(from).enumerate();
    for id in &book.ids {
        match it.next() {
            Some((k, (eid, _))) if eid.as_str() == id.as_str() => slots.push((from + k) as u32),
            _ => {
                // Not in creation order (a repeated id in a positions file): fall back to ids.
                return vec![NO_SLOT; book.len()];
            }
        }
    }
    slots
}

/// Number of accounts in the engine (constant time).
fn account_count(engine: &Engine) -> usize {
    engine.accounts().size_hint().0
}

fn apply(engine: &mut Engine, cmd: &TimedCommand, events: &mut Vec<Event>) -> Result<(), LabError> {
    engine.apply(cmd, events).map_err(|e| LabError::Setup(format!("{} at {}: {e}", cmd.cmd.name(), cmd.ts)))
}

fn deposit_cmd(ts: u64, account: &str, amount: f64, isolated: Option<&str>) -> TimedCommand {
    TimedCommand {
        ts,
        cmd: Command::Deposit(Deposit {
            account: account.to_string(),
            asset: "USDC".into(),
            amount: usdc(amount),
            isolated: isolated.map(str::to_string),
        }),
    }
}

/// Rewrite a deposit command in place (as [`contract::set_fill`]: no allocation once warm).
fn set_deposit(cmd: &mut TimedCommand, ts: u64, account: &str, amount: f64, isolated: Option<&str>) {
    cmd.ts = ts;
    if let Command::Deposit(d) = &mut cmd.cmd {
        d.account.clear();
        d.account.push_str(account);
        d.amount = usdc(amount);
        match (isolated, &mut d.isolated) {
            (Some(m), Some(field)) => {
                field.clear();
                field.push_str(m);
            }
            (m, field) => *field = m.map(str::to_string),
        }
    }
}

/// The commands that open the book's accounts, rewritten for each one.
struct Opening {
    deposit: TimedCommand,
    fill: TimedCommand,
}

impl Opening {
    fn new() -> Self {
        Opening {
            deposit: deposit_cmd(0, "", 0.0, None),
            fill: contract::fill(0, "", "", "", Size::ZERO, Price::ONE, Side::Buyer),
        }
    }
}

/// Build the run: load data, draw the book, set the engine up at the scenario's start.
pub fn setup(loaded: Loaded, seed: u64) -> Result<Setup, LabError> {
    let prep = paths::prepare(&loaded)?;
    let s = &loaded.scenario;
    let mut rng = ChaCha8Rng::seed_from_u64(path_seed(seed, u64::MAX));
    // Initial prices: path 0's first point (the same for every path).
    let mut p0_rng = ChaCha8Rng::seed_from_u64(0);
    let first: Vec<f64> = paths::generate_first(&loaded, &prep, &mut p0_rng);
    let mut book = book::build(&loaded, &first, &mut rng)?;
    book.sort_by_liquidation_price();
    let ts = loaded.start_ms;
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let mut notes = prep.notes.clone();
    notes.extend(unreachable_orders(s));
    for m in &s.markets {
        apply(
            &mut engine,
            &TimedCommand {
                ts,
                cmd: Command::CreateMarket { market: m.id.clone(), params: Box::new(m.params.clone()) },
            },
            &mut events,
        )?;
    }
    let mut insurance_start = 0.0;
    if s.insurance.fund > 0.0 {
        apply(&mut engine, &contract::fund_insurance(ts, "global", &usdc(s.insurance.fund).to_string()), &mut events)?;
        insurance_start = s.insurance.fund;
    }
    let mut backstop_start = 0.0;
    if s.insurance.backstop > 0.0 {
        for cmd in contract::backstop(ts, &usdc(s.insurance.backstop).to_string()) {
            apply(&mut engine, &cmd, &mut events)?;
        }
        backstop_start = s.insurance.backstop;
    }
    // The venue's market maker takes the other side of the opening book and of unwinds.
    let gross: f64 = (0..book.len()).map(|i| book.size[i] * book.entry[i]).sum();
    apply(&mut engine, &deposit_cmd(ts, MM, (gross * 5.0).clamp(1e9, 1e15), None), &mut events)?;
    let liquidator_ids: Vec<String> = (0..s.liquidators.count).map(|i| format!("liq.{i}")).collect();
    for id in &liquidator_ids {
        if s.liquidators.capital > 0.0 {
            apply(&mut engine, &deposit_cmd(ts, id, s.liquidators.capital, None), &mut events)?;
        }
    }
    for (i, m) in s.markets.iter().enumerate() {
        for src in 0..m.oracle.sources {
            let cmd = TimedCommand {
                ts,
                cmd: Command::Oracle(OraclePrice {
                    market: Some(m.id.clone()),
                    asset: None,
                    source: format!("s{src}"),
                    price: price(first[i]),
                    publish_ts: None,
                }),
            };
            apply(&mut engine, &cmd, &mut events)?;
        }
    }
    let mut capped = 0usize;
    let first_slot = account_count(&engine);
    let mut opening = Opening::new();
    engine.reserve_accounts(book.len());
    for i in 0..book.len() {
        let market = &s.markets[book.market[i] as usize].id;
        // The setup's events are not used: dropped as they come (a book of 10^6 accounts
        // would otherwise keep millions of them).
        events.clear();
        if open_account(&mut engine, &mut opening, ts, &book, i, market, &mut events, &mut capped)?.is_none() {
            return Err(LabError::Setup(format!(
                "account '{}' could not open its position ({} {} @ {}) even with 50% more margin",
                book.ids[i],
                if book.long[i] { "long" } else { "short" },
                book.size[i],
                book.entry[i]
            )));
        }
    }
    if capped > 0 {
        notes.push(format!(
            "{capped} accounts needed more margin than their drawn leverage to pass the initial check (notional tiers)"
        ));
    }
    let slots = locate(&engine, &book, first_slot);
    let book_equity_start = book_equity(&engine, &book, &slots).0;
    let max_leverage = book::max_leverage(&loaded);
    let market_cdf = book::market_cdf(&loaded);
    Ok(Setup {
        loaded,
        prep,
        book,
        engine,
        notes,
        seed,
        book_equity_start,
        insurance_start,
        backstop_start,
        scan_budget: 3_000_000,
        liquidator_ids,
        max_leverage,
        market_cdf,
        slots,
        spent: false,
    })
}

/// A note for each market whose liquidation orders expire (`order_ttl_ms`) no later than the
/// liquidators can reach them (`latency_ms`): there the liquidators fill nothing, and every
/// liquidation falls to the backstop vault and the layers after it (docs/scenarios.md, "The
/// liquidation contract"). Such a scenario is valid, but its report should not leave a reader to
/// find the cause.
fn unreachable_orders(s: &Scenario) -> Vec<String> {
    let latency = s.liquidators.latency_ms;
    if s.liquidators.count == 0 {
        return Vec::new();
    }
    s.markets
        .iter()
        .filter(|m| latency >= m.params.liquidation.order_ttl_ms)
        .map(|m| {
            format!(
                "{}: the liquidators act {latency} ms after an order, but its liquidation orders expire after {} ms \
                 (liquidation.order_ttl_ms): the liquidators fill none of them, and its liquidations fall to the \
                 backstop vault and the later layers of the waterfall",
                m.id, m.params.liquidation.order_ttl_ms
            )
        })
        .collect()
}

/// Deposit and open one account's position against the market maker; when the initial check
/// fails (tiers), add margin in steps of 10% of the notional, up to 5 times.
#[allow(clippy::too_many_arguments)]
fn open_account(
    engine: &mut Engine,
    cmds: &mut Opening,
    ts: u64,
    book: &Book,
    i: usize,
    market: &str,
    events: &mut Vec<Event>,
    capped: &mut usize,
) -> Result<Option<()>, LabError> {
    let id = &book.ids[i];
    let iso = book.isolated[i].then_some(market);
    set_deposit(&mut cmds.deposit, ts, id, book.margin[i], iso);
    apply(engine, &cmds.deposit, events)?;
    let (buyer, seller, taker) =
        if book.long[i] { (id.as_str(), MM, Side::Buyer) } else { (MM, id.as_str(), Side::Seller) };
    let size = size_floor(book.size[i]).max(Size::from_raw(1));
    contract::set_fill(&mut cmds.fill, ts, market, buyer, seller, size, price(book.entry[i]), taker);
    for attempt in 0..6 {
        match engine.apply(&cmds.fill, events) {
            Ok(()) => return Ok(Some(())),
            Err(_) if attempt < 5 => {
                if attempt == 0 {
                    *capped += 1;
                }
                set_deposit(&mut cmds.deposit, ts, id, book.size[i] * book.entry[i] * 0.1, iso);
                apply(engine, &cmds.deposit, events)?;
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

/// Σ equity of the population's buckets, the number below zero and their deficit, and the
/// number below maintenance. Accounts are read by slot, in chunks of a fixed size that run in
/// parallel and are summed in order: the result does not depend on the number of threads.
fn book_equity(engine: &Engine, book: &Book, slots: &[u32]) -> (f64, u64, f64, u64) {
    const CHUNK: usize = 4096;
    let one = |i: usize| -> Option<(f64, bool)> {
        let acc = account_at(engine, slots.get(i).copied().unwrap_or(NO_SLOT), &book.ids[i])?;
        let bucket = if book.isolated[i] { Bucket::Isolated(book.market[i]) } else { Bucket::Cross };
        let h = engine.health(acc, bucket).ok()?;
        Some((f_quote(h.equity), h.is_liquidatable()))
    };
    let chunk = |c: usize| {
        let (mut total, mut under, mut deficit, mut liq) = (0.0, 0u64, 0.0, 0u64);
        for i in c * CHUNK..((c + 1) * CHUNK).min(book.len()) {
            if let Some((e, l)) = one(i) {
                total += e;
                if e < 0.0 {
                    under += 1;
                    deficit -= e;
                }
                liq += u64::from(l);
            }
        }
        (total, under, deficit, liq)
    };
    let n = book.len().div_ceil(CHUNK);
    let parts: Vec<(f64, u64, f64, u64)> =
        if n > 1 { (0..n).into_par_iter().map(chunk).collect() } else { (0..n).map(chunk).collect() };
    parts.into_iter().fold((0.0, 0, 0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3))
}

struct Run<'a> {
    s: &'a Setup,
    engine: Engine,
    rng: ChaCha8Rng,
    events: Vec<Event>,
    /// Open liquidation orders by order id: the engine numbers them in the order it issues
    /// them, so iteration is oldest first. Boxed: the tree moves its values as it splits and
    /// merges nodes, and a pointer is 8 bytes where an order is 128.
    pending: BTreeMap<u64, Box<Pending>>,
    impact: Vec<f64>,
    /// The path's price this step, and the book's (path × (1 + impact)).
    fund_px: Vec<f64>,
    book_px: Vec<f64>,
    breaker: Vec<u8>,
    r: PathResult,
    insurance: f64,
    detail: Option<Detail>,
    step_fills: u32,
    step_notional: f64,
    /// Per market, this step's ADL marker in `detail.markers` (see [`Run::adl_marker`]).
    step_adl_marker: Vec<Option<usize>>,
    cum_liq_notional: f64,
    cum_adl_notional: f64,
    extra: Book,
    extra_slots: Vec<u32>,
    /// events.jsonl of a run with [`Keep::Events`]: the events gathered since the last hand-over
    /// to the writer thread, at the end of each step or every [`EVENT_BATCH`] events
    /// (serializing them is a tenth of a recorded run).
    event_batch: EventBatch,
    event_writer: Option<EventWriter>,
    added_margin: f64,
    next_liquidator: usize,
    ts: u64,
    /// Reused commands for liquidation fills and unwinds (no allocation per fill).
    liq_fill: TimedCommand,
    unwind_fill: TimedCommand,
}

/// One events.jsonl line per event: `{"seq":N,"ts":T,` then the engine's own event JSON
/// without its opening brace (the same text as serializing them flattened into one object).
pub fn write_event_line(out: &mut Vec<u8>, scratch: &mut Vec<u8>, seq: u64, ts: u64, ev: &Event) {
    scratch.clear();
    if serde_json::to_writer(&mut *scratch, ev).is_err() || scratch.first() != Some(&b'{') {
        return;
    }
    let _ = write!(out, "{{\"seq\":{seq},\"ts\":{ts},");
    if scratch.len() == 2 {
        // `{}`: no fields.
        out.pop();
        out.extend_from_slice(b"}");
    } else {
        out.extend_from_slice(&scratch[1..]);
    }
    out.push(b'\n');
}

/// Events as (seq, ts, event), one batch per step.
type EventBatch = Vec<(u64, u64, Event)>;
/// The channel to the events.jsonl writer thread, and the thread (it returns why it stopped
/// early, if it did).
type EventWriter = (mpsc::SyncSender<EventBatch>, std::thread::JoinHandle<Result<(), String>>);

/// Events handed to the writer at once, at most: a step that deleverages pro-rata can make
/// millions.
const EVENT_BATCH: usize = 1 << 16;

/// What a run keeps besides its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep<'a> {
    /// The result alone (Monte Carlo paths, `--summary-only`).
    Result,
    /// Also the per-step series and markers of the charts and the report.
    Detail,
    /// The detail, and every event but `oracle_updated` written as the run goes to the file
    /// `events.jsonl` at this path, by a thread of its own. Streamed, not kept: a run that
    /// deleverages pro-rata in a large book logs gigabytes.
    Events(&'a Path),
}

/// The events.jsonl writer: batches in, lines out to `path`. At most two batches wait, so a
/// simulation that outruns the disk waits for it instead of holding its events in memory.
fn spawn_event_writer(path: &Path) -> EventWriter {
    let (tx, rx) = mpsc::sync_channel::<EventBatch>(2);
    let path = path.to_path_buf();
    let handle = std::thread::spawn(move || {
        let write = || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
            let (mut line, mut scratch) = (Vec::with_capacity(512), Vec::with_capacity(512));
            for batch in rx {
                for (seq, ts, ev) in &batch {
                    line.clear();
                    write_event_line(&mut line, &mut scratch, *seq, *ts, ev);
                    out.write_all(&line)?;
                }
            }
            out.flush()
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    });
    (tx, handle)
}

impl Setup {
    /// Run path `path`, keeping what `keep` says (the detail is `None` with [`Keep::Result`]).
    pub fn run_path(
        &self,
        path: u64,
        keep: Keep<'_>,
        progress: Option<&(dyn Fn(usize, usize) + Sync)>,
    ) -> (PathResult, Option<Detail>) {
        assert!(!self.spent, "the set-up engine was handed to a single run (Setup::run_single)");
        self.run_on(self.engine.clone(), path, keep, progress)
    }

    /// Run path `path` on the set-up engine itself instead of a copy, for a command that runs
    /// one path: copying a million-account engine and dropping the copy took about 0.4 s of a
    /// 3 s replay. The setup cannot run another path afterwards.
    pub fn run_single(
        &mut self,
        path: u64,
        keep: Keep<'_>,
        progress: Option<&(dyn Fn(usize, usize) + Sync)>,
    ) -> (PathResult, Option<Detail>) {
        assert!(!self.spent, "the set-up engine was handed to a single run (Setup::run_single)");
        self.spent = true;
        let engine = std::mem::take(&mut self.engine);
        self.run_on(engine, path, keep, progress)
    }

    fn run_on(
        &self,
        engine: Engine,
        path: u64,
        keep: Keep<'_>,
        progress: Option<&(dyn Fn(usize, usize) + Sync)>,
    ) -> (PathResult, Option<Detail>) {
        let (mut run, fundamental) = self.begin(engine, path, keep);
        run.simulate(&fundamental, progress);
        run.finish()
    }

    /// A path ready to run on `engine` (the set-up state): its prices and its bookkeeping.
    fn begin(&self, engine: Engine, path: u64, keep: Keep<'_>) -> (Run<'_>, Vec<Vec<f64>>) {
        let mut rng = ChaCha8Rng::seed_from_u64(path_seed(self.seed, path));
        let fundamental = paths::generate(&self.loaded, &self.prep, &mut rng);
        let n_m = self.loaded.scenario.markets.len();
        let n = self.prep.steps();
        let detail = (keep != Keep::Result).then(|| Detail {
            times: self.prep.times.clone(),
            market_ids: self.loaded.scenario.markets.iter().map(|m| m.id.clone()).collect(),
            fundamental: fundamental.clone(),
            book: vec![Vec::with_capacity(n); n_m],
            oracle: vec![Vec::with_capacity(n); n_m],
            open_interest: vec![Vec::with_capacity(n); n_m],
            breaker: vec![Vec::with_capacity(n); n_m],
            notes: self.notes.clone(),
            ..Detail::default()
        });
        let run = Run {
            s: self,
            engine,
            rng,
            events: Vec::with_capacity(256),
            pending: BTreeMap::new(),
            impact: vec![0.0; n_m],
            fund_px: vec![0.0; n_m],
            book_px: vec![0.0; n_m],
            breaker: vec![0; n_m],
            r: PathResult {
                path,
                insurance_start: self.insurance_start,
                insurance_min: self.insurance_start,
                backstop_start: self.backstop_start,
                ..PathResult::default()
            },
            insurance: self.insurance_start,
            detail,
            step_fills: 0,
            step_notional: 0.0,
            step_adl_marker: vec![None; n_m],
            cum_liq_notional: 0.0,
            cum_adl_notional: 0.0,
            extra: Book::default(),
            extra_slots: Vec::new(),
            event_batch: Vec::new(),
            event_writer: match keep {
                Keep::Events(path) => Some(spawn_event_writer(path)),
                _ => None,
            },
            added_margin: 0.0,
            next_liquidator: 0,
            ts: self.loaded.start_ms,
            liq_fill: contract::liquidation_fill(0, "", "", "", Size::ZERO, Price::ONE),
            unwind_fill: contract::fill(0, "", "", "", Size::ZERO, Price::ONE, Side::Buyer),
        };
        (run, fundamental)
    }
}

impl Run<'_> {
    fn simulate(&mut self, fundamental: &[Vec<f64>], progress: Option<&(dyn Fn(usize, usize) + Sync)>) {
        let s = &self.s.loaded.scenario;
        let prep = &self.s.prep;
        let n = prep.steps();
        let n_m = s.markets.len();
        let decay: Vec<f64> = s
            .markets
            .iter()
            .map(|m| (-(s.step_ms as f64) * std::f64::consts::LN_2 / m.liquidity.impact_half_life_ms as f64).exp())
            .collect();
        let delay_steps: Vec<usize> = s.markets.iter().map(|m| (m.oracle.delay_ms / s.step_ms) as usize).collect();
        let windows: Vec<_> = s
            .markets
            .iter()
            .map(|m| {
                let w =
                    |f: &str, t: &str| (crate::time::parse_utc(f).unwrap_or(0), crate::time::parse_utc(t).unwrap_or(0));
                (
                    m.oracle.stale.as_ref().map(|x| (x.source, w(&x.from, &x.to))),
                    m.oracle.manipulated.as_ref().map(|x| (x.source, w(&x.from, &x.to), x.factor)),
                )
            })
            .collect();
        // Oracle commands built once and updated in place (no allocation per step).
        let mut oracle_cmds: Vec<Vec<TimedCommand>> = s
            .markets
            .iter()
            .map(|m| {
                (0..m.oracle.sources)
                    .map(|src| TimedCommand {
                        ts: 0,
                        cmd: Command::Oracle(OraclePrice {
                            market: Some(m.id.clone()),
                            asset: None,
                            source: format!("s{src}"),
                            price: Price::ONE,
                            publish_ts: None,
                        }),
                    })
                    .collect()
            })
            .collect();
        let mut funding_cursor = vec![0usize; n_m];
        let mut book_hist: Vec<Vec<f64>> = vec![Vec::with_capacity(n); n_m];
        let report_every = (n / 200).max(1);
        for k in 0..n {
            let ts = prep.times[k];
            self.ts = ts;
            self.step_fills = 0;
            self.step_notional = 0.0;
            self.step_adl_marker.fill(None);
            for m in 0..n_m {
                self.impact[m] *= decay[m];
                self.fund_px[m] = fundamental[m][k];
                self.book_px[m] = fundamental[m][k] * (1.0 + self.impact[m]);
                book_hist[m].push(self.book_px[m]);
            }
            // Oracle prices (the setup already priced step 0).
            for m in 0..n_m {
                let seen = book_hist[m][k.saturating_sub(delay_steps[m])];
                let mut reported = seen;
                for (src, cmd) in oracle_cmds[m].iter_mut().enumerate() {
                    let src = src as u32;
                    if k == 0 {
                        break;
                    }
                    if let Some((ss, (a, b))) = windows[m].0 {
                        if ss == src && ts >= a && ts <= b {
                            continue;
                        }
                    }
                    let noise = s.markets[m].oracle.noise;
                    let mut p = if noise > 0.0 {
                        seen * (1.0 + noise * self.rng.sample::<f64, _>(StandardNormal))
                    } else {
                        seen
                    };
                    if let Some((ms, (a, b), f)) = windows[m].1 {
                        if ms == src && ts >= a && ts <= b {
                            p *= f;
                        }
                    }
                    if src == 0 {
                        reported = p;
                    }
                    cmd.ts = ts;
                    if let Command::Oracle(o) = &mut cmd.cmd {
                        o.price = price(p);
                    }
                    self.submit(cmd);
                }
                if let Some(d) = &mut self.detail {
                    d.oracle[m].push(reported);
                }
            }
            // Funding periods due at this step.
            for m in 0..n_m {
                let evs = &prep.funding[m];
                while funding_cursor[m] < evs.len() && evs[funding_cursor[m]].step <= k {
                    let fe = evs[funding_cursor[m]];
                    funding_cursor[m] += 1;
                    let max = book::ratio_f64(s.markets[m].params.funding.max_rate.raw());
                    let rate = fe.rate.map(|r| Ratio::from_raw((r.clamp(-max, max) * 1e8).round() as i64));
                    let cmd = TimedCommand {
                        ts,
                        cmd: Command::Funding(Funding { market: s.markets[m].id.clone(), rate, premium: None }),
                    };
                    self.submit(&cmd);
                }
            }
            self.fill_orders();
            // Liquidators act `latency_ms` after an order: within the step when that comes before
            // the next one (orders live only `order_ttl_ms`). Fills make new orders; a few rounds.
            let next = prep.times.get(k + 1).copied().unwrap_or(u64::MAX);
            for _ in 0..8 {
                let due = self.pending.values().map(|p| p.ready_at).filter(|&r| r > self.ts && r < next).min();
                let Some(due) = due else { break };
                self.ts = due;
                self.fill_orders();
            }
            self.unwind_liquidators();
            self.traders();
            self.record(k);
            self.flush_events();
            if let Some(p) = progress {
                if k % report_every == 0 || k + 1 == n {
                    p(k + 1, n);
                }
            }
        }
    }

    /// Apply a command the simulation generated; a refusal is counted, not fatal.
    fn submit(&mut self, cmd: &TimedCommand) -> bool {
        self.events.clear();
        let res = self.engine.apply(cmd, &mut self.events);
        if let Err(e) = &res {
            if std::env::var("BALLAST_LAB_DEBUG").is_ok() {
                eprintln!("rejected {}: {e}", cmd.cmd.name());
            }
        }
        let ok = res.is_ok();
        if !ok {
            self.r.rejected_commands += 1;
            return false;
        }
        if !self.events.is_empty() {
            let evs = std::mem::take(&mut self.events);
            for ev in &evs {
                self.on_event(ev);
            }
            self.events = evs;
        }
        true
    }

    fn market_index(&self, id: &str) -> u32 {
        self.s.loaded.scenario.markets.iter().position(|m| m.id == id).unwrap_or(0) as u32
    }

    fn on_event(&mut self, ev: &Event) {
        if self.event_writer.is_some() && !matches!(ev, Event::OracleUpdated { .. }) {
            self.event_batch.push((self.engine.seq(), self.ts, ev.clone()));
            if self.event_batch.len() >= EVENT_BATCH {
                self.flush_events();
            }
        }
        self.handle(contract::classify(ev));
    }

    /// Hand the events gathered so far to the writer thread. A writer that stopped (the disk
    /// refused a write) has its reason waiting at [`Run::finish`]; what comes after is dropped.
    fn flush_events(&mut self) {
        if let Some((tx, _)) = &self.event_writer {
            if !self.event_batch.is_empty() {
                let _ = tx.send(std::mem::take(&mut self.event_batch));
            }
        }
    }

    /// Act on one event of the liquidation contract.
    fn handle(&mut self, lab: LabEvent) {
        match lab {
            LabEvent::Quiet => {}
            LabEvent::LiquidationOrder(o) => {
                self.r.liquidation_orders += 1;
                let market = self.market_index(&o.market);
                let ready_at = self.ts + self.s.loaded.scenario.liquidators.latency_ms;
                self.pending.insert(o.order, Box::new(Pending { remaining: o.size, market, ready_at, order: o }));
            }
            LabEvent::LiquidationOrderExpired { order } => {
                self.pending.remove(&order);
            }
            LabEvent::LiquidationStarted => self.r.liquidated_accounts += 1,
            LabEvent::LiquidationEnded => {}
            LabEvent::BackstopTakeover { notional } => self.r.backstop_taken_notional += notional,
            LabEvent::InsurancePaid { balance, .. } => {
                self.insurance = balance;
                self.r.insurance_min = self.r.insurance_min.min(self.insurance);
            }
            LabEvent::Deleveraged { market, notional } => {
                self.r.adl_count += 1;
                self.r.adl_notional += notional;
                self.cum_adl_notional += notional;
                let m = self.market_index(&market);
                self.adl_marker(m, notional);
            }
            LabEvent::AdlOvershoot { notional } => self.r.adl_overshoot += notional,
            LabEvent::SocializedLoss { amount } => self.r.socialized_loss += amount,
            LabEvent::Breaker { market, state } => {
                let m = self.market_index(&market) as usize;
                if state > 0 && self.breaker[m] == 0 {
                    self.r.breaker_trips += 1;
                }
                self.breaker[m] = state;
            }
            LabEvent::OracleValidity { .. } => self.r.oracle_validity_changes += 1,
        }
    }

    /// Add a winner's deleveraging trade to this step's ADL marker of `market`, at the book
    /// price when the step's first one came. One marker per step and market: a pro-rata
    /// deleveraging trades with every winner of the market, thousands of trades a step in a
    /// large book, and a marker each would swell the report with triangles drawn on one spot.
    fn adl_marker(&mut self, market: u32, notional: f64) {
        let Some(d) = &mut self.detail else { return };
        let m = market as usize;
        match self.step_adl_marker[m] {
            Some(i) => d.markers[i].notional += notional,
            None => {
                self.step_adl_marker[m] = Some(d.markers.len());
                d.markers.push(Marker { ts: self.ts, market, kind: "adl", price: self.book_px[m], notional });
            }
        }
    }

    /// Fill ready liquidation orders against the liquidity model, oldest first. An order is
    /// filled as far as the book allows (repeatedly: each fill moves the book) before the next.
    fn fill_orders(&mut self) {
        // At most this many fills per call (a guard: every fill moves the book towards the
        // limits, so an order stops being fillable long before).
        let mut guard = 0;
        let mut next_id = 0u64;
        while guard < 100_000 {
            let Some((&order_id, p)) = self.pending.range(next_id..).next() else { break };
            next_id = order_id + 1;
            if p.order.expires <= self.ts {
                self.pending.remove(&order_id);
                continue;
            }
            if p.ready_at > self.ts || p.remaining.is_zero() {
                continue;
            }
            let m = p.market as usize;
            let liq = &self.s.loaded.scenario.markets[m].liquidity;
            let Some((q, exec)) = plan_fill(self.book_px[m], &p.order, p.remaining, liq.depth_1pct, liq.spread) else {
                continue;
            };
            guard += 1;
            let qf = f_size(q);
            let k = 0.01 / liq.depth_1pct;
            let sell = p.order.sell;
            let mut done = false;
            let n_liq = self.s.liquidator_ids.len();
            for attempt in 0..n_liq {
                let who = self.s.liquidator_ids[(self.next_liquidator + attempt) % n_liq].as_str();
                let Some(p) = self.pending.get(&order_id) else { break };
                let (buyer, seller) =
                    if sell { (who, p.order.account.as_str()) } else { (p.order.account.as_str(), who) };
                // The liquidated account's order takes the liquidator's liquidity.
                let taker = if sell { Side::Seller } else { Side::Buyer };
                contract::set_fill(&mut self.liq_fill, self.ts, &p.order.market, buyer, seller, q, exec, taker);
                let cmd = std::mem::replace(&mut self.liq_fill, PLACEHOLDER);
                let ok = self.submit(&cmd);
                self.liq_fill = cmd;
                if ok {
                    self.next_liquidator = (self.next_liquidator + attempt + 1) % n_liq;
                    done = true;
                    break;
                }
            }
            if !done {
                continue;
            }
            let notional = qf * f_price(exec);
            self.r.liquidation_fills += 1;
            self.r.liquidation_notional += notional;
            self.cum_liq_notional += notional;
            self.step_fills += 1;
            self.step_notional += notional;
            self.impact[m] = (self.impact[m] + if sell { -k * notional } else { k * notional }).clamp(-0.95, 10.0);
            self.book_px[m] = (self.fund_px[m] * (1.0 + self.impact[m])).max(1e-8);
            if let Some(d) = &mut self.detail {
                d.markers.push(Marker {
                    ts: self.ts,
                    market: m as u32,
                    kind: "liquidation",
                    price: f_price(exec),
                    notional,
                });
            }
            // The order may have been removed or re-issued by the events of the fill; what is
            // left of it is tried again at the moved book.
            if let Some(p) = self.pending.get_mut(&order_id) {
                let rem = p.remaining.checked_sub(q).unwrap_or(Size::ZERO);
                if rem.raw() <= 0 {
                    self.pending.remove(&order_id);
                } else {
                    p.remaining = rem;
                    next_id = order_id;
                }
            }
        }
    }

    /// Liquidators hand what they took over to the market maker each step, at the path's
    /// impact-free price.
    fn unwind_liquidators(&mut self) {
        for li in 0..self.s.liquidator_ids.len() {
            for m in 0..self.s.loaded.scenario.markets.len() {
                let pos = self
                    .engine
                    .account(&self.s.liquidator_ids[li])
                    .and_then(|a| a.cross_position(m as u32))
                    .map(|p| p.size)
                    .unwrap_or(Size::ZERO);
                if pos.is_zero() {
                    continue;
                }
                let id = self.s.liquidator_ids[li].as_str();
                let mid = self.s.loaded.scenario.markets[m].id.as_str();
                let (buyer, seller, taker) =
                    if pos.is_positive() { (MM, id, Side::Seller) } else { (id, MM, Side::Buyer) };
                // At the impact-free price: what the liquidity they provided earns once the
                // impact decays (they bought below it, or sold above it).
                let fair = price(self.fund_px[m]);
                contract::set_fill(
                    &mut self.unwind_fill,
                    self.ts,
                    mid,
                    buyer,
                    seller,
                    pos.abs().unwrap_or(pos),
                    fair,
                    taker,
                );
                let cmd = std::mem::replace(&mut self.unwind_fill, PLACEHOLDER);
                self.submit(&cmd);
                self.unwind_fill = cmd;
            }
        }
    }

    /// Top-ups, deleveraging and new entrants.
    fn traders(&mut self) {
        let s = &self.s.loaded.scenario;
        let n_book = self.s.book.len();
        if let Some(t) = &s.traders.top_up {
            for _ in 0..t.checks_per_step {
                let i = self.rng.random_range(0..n_book.max(1));
                if n_book == 0 {
                    break;
                }
                if let Some(need) = self.at_risk(i, t.trigger) {
                    if self.rng.random::<f64>() < t.probability {
                        let amount = need.1 * t.fraction;
                        let book = &self.s.book;
                        let iso = book.isolated[i].then(|| s.markets[book.market[i] as usize].id.as_str());
                        let cmd = deposit_cmd(self.ts, &book.ids[i], amount, iso);
                        if self.submit(&cmd) {
                            self.r.top_ups += 1;
                            self.added_margin += f_size(usdc(amount));
                        }
                    }
                }
            }
        }
        if let Some(d) = &s.traders.deleverage {
            for _ in 0..d.checks_per_step {
                if n_book == 0 {
                    break;
                }
                let i = self.rng.random_range(0..n_book);
                if self.at_risk(i, d.trigger).is_some() && self.rng.random::<f64>() < d.probability {
                    let book = &self.s.book;
                    let m = book.market[i];
                    let Some(acc) = account_at(&self.engine, self.s.slots[i], &book.ids[i]) else { continue };
                    let pos = if book.isolated[i] {
                        acc.isolated(m).map(|x| x.position.size)
                    } else {
                        acc.cross_position(m).map(|p| p.size)
                    };
                    let Some(pos) = pos.filter(|p| !p.is_zero()) else { continue };
                    let q = size_floor(f_size(pos).abs() * d.fraction);
                    if q.is_zero() {
                        continue;
                    }
                    let px = self.book_px[m as usize];
                    let half = s.markets[m as usize].liquidity.spread / 2.0;
                    let id = book.ids[i].clone();
                    let mid = s.markets[m as usize].id.clone();
                    let cmd = if pos.is_positive() {
                        contract::fill(self.ts, &mid, MM, &id, q, price(px * (1.0 - half)), Side::Seller)
                    } else {
                        contract::fill(self.ts, &mid, &id, MM, q, price(px * (1.0 + half)), Side::Buyer)
                    };
                    if self.submit(&cmd) {
                        self.r.deleveraged_by_traders += 1;
                    }
                }
            }
        }
        if let Some(e) = &s.traders.new_entrants {
            let lambda = e.per_hour * s.step_ms as f64 / 3_600_000.0;
            if lambda > 0.0 {
                let count = Poisson::new(lambda).map(|p| p.sample(&mut self.rng)).unwrap_or(0.0) as u64;
                let mut opening = Opening::new();
                for _ in 0..count {
                    let (m, long, size, entry, isolated, margin) = book::draw_account(
                        &s.population,
                        &self.s.market_cdf,
                        &self.book_px,
                        &self.s.max_leverage,
                        &mut self.rng,
                    );
                    let id = compact_str::format_compact!("new{}", self.extra.len());
                    self.extra.push(id, m, long, size, entry, isolated, margin);
                    let i = self.extra.len() - 1;
                    let market = s.markets[m as usize].id.clone();
                    let mut events = std::mem::take(&mut self.events);
                    let mut capped = 0;
                    let before = self.engine.totals().deposits;
                    let slot = account_count(&self.engine);
                    let ok = open_account(
                        &mut self.engine,
                        &mut opening,
                        self.ts,
                        &self.extra,
                        i,
                        &market,
                        &mut events,
                        &mut capped,
                    );
                    let created =
                        self.engine.accounts().nth(slot).is_some_and(|(eid, _)| eid.as_str() == self.extra.ids[i]);
                    self.extra_slots.push(if created { slot as u32 } else { NO_SLOT });
                    for ev in &events {
                        self.on_event(ev);
                    }
                    events.clear();
                    self.events = events;
                    self.added_margin +=
                        f_quote(self.engine.totals().deposits.checked_sub(before).unwrap_or(Quote::ZERO));
                    if matches!(ok, Ok(Some(()))) {
                        self.r.new_entrants += 1;
                    }
                }
            }
        }
    }

    /// Some((equity, notional)) when the account's bucket is within `trigger` × maintenance.
    fn at_risk(&self, i: usize, trigger: f64) -> Option<(f64, f64)> {
        let book = &self.s.book;
        let acc = account_at(&self.engine, self.s.slots[i], &book.ids[i])?;
        let bucket = if book.isolated[i] { Bucket::Isolated(book.market[i]) } else { Bucket::Cross };
        let h = self.engine.health(acc, bucket).ok()?;
        let (eq, mm) = (f_quote(h.equity), f_quote(h.maintenance));
        (mm > 0.0 && eq > 0.0 && eq < trigger * mm)
            .then_some((eq, book.size[i] * self.book_px[book.market[i] as usize]))
    }

    fn record(&mut self, k: usize) {
        if let Some(d) = &mut self.detail {
            let n = self.s.book.len() + self.extra.len();
            let steps = self.s.prep.steps();
            let samples = (self.s.scan_budget / n.max(1)).clamp(10, steps.max(10));
            let every = steps.div_ceil(samples).max(1);
            if k.is_multiple_of(every) || k + 1 == steps {
                let (_, u1, d1, l1) = book_equity(&self.engine, &self.s.book, &self.s.slots);
                let (_, u2, d2, l2) = book_equity(&self.engine, &self.extra, &self.extra_slots);
                d.liquidatable.push((l1 + l2) as f64);
                d.underwater.push((u1 + u2) as f64);
                d.deficit.push(d1 + d2);
                if d1 + d2 > self.r.peak_deficit {
                    self.r.peak_deficit = d1 + d2;
                    self.r.peak_deficit_ts = self.ts;
                }
            } else {
                d.liquidatable.push(f64::NAN);
                d.underwater.push(f64::NAN);
                d.deficit.push(f64::NAN);
            }
        }
        let mut oi_total = 0.0;
        let mut oi = [0.0f64; 64];
        for (m, market) in self.engine.markets().iter().enumerate() {
            let mark = market.mark().map(f_price).unwrap_or(0.0);
            let v = f_size(market.open_interest) * mark;
            oi_total += v;
            if m < 64 {
                oi[m] = v;
            }
        }
        self.r.peak_open_interest = self.r.peak_open_interest.max(oi_total);
        if let Some(d) = &mut self.detail {
            for m in 0..d.book.len() {
                d.book[m].push(self.book_px[m]);
                d.open_interest[m].push(oi[m.min(63)]);
                d.breaker[m].push(self.breaker[m]);
            }
            d.insurance.push(self.insurance);
            d.backstop.push(self.r.backstop_start);
            d.liquidation_fills.push(self.step_fills);
            d.liquidation_notional.push(self.cum_liq_notional);
            d.adl_notional.push(self.cum_adl_notional);
        }
    }

    fn finish(mut self) -> (PathResult, Option<Detail>) {
        self.flush_events();
        if let Some((tx, handle)) = self.event_writer.take() {
            drop(tx);
            let written = handle.join().unwrap_or_else(|_| Err("the events.jsonl writer panicked".into()));
            if let Some(d) = &mut self.detail {
                d.events_error = written.err();
            }
        }
        let (eq, under, deficit, liq) = book_equity(&self.engine, &self.s.book, &self.s.slots);
        let (eq2, under2, deficit2, liq2) = book_equity(&self.engine, &self.extra, &self.extra_slots);
        self.r.book_pnl = eq + eq2 - self.s.book_equity_start - self.added_margin;
        self.r.underwater_accounts = under + under2;
        self.r.unabsorbed_deficit = deficit + deficit2;
        self.r.liquidatable_at_end = liq + liq2;
        self.insurance = contract::insurance_balance(&self.engine);
        self.r.insurance_end = self.insurance;
        self.r.insurance_min = self.r.insurance_min.min(self.insurance);
        let w = contract::waterfall(&self.engine);
        self.r.bad_debt = w.bad_debt;
        self.r.absorbed_by_insurance = w.insurance;
        self.r.absorbed_by_backstop = w.backstop;
        self.r.absorbed_by_adl = w.adl;
        self.r.socialized_loss = w.socialized;
        self.r.backstop_pnl = contract::backstop_pnl(&self.engine);
        self.r.conservation_error = match self.engine.conservation_error() {
            Ok(q) => q.to_string(),
            Err(e) => format!("overflow: {e}"),
        };
        (self.r, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(sell: bool, size: &str, limit: &str) -> LiqOrder {
        LiqOrder {
            order: 1,
            account: "a1".into(),
            market: "BTC-PERP".into(),
            sell,
            size: Size::parse(size).unwrap(),
            limit: Price::parse(limit).unwrap(),
            expires: u64::MAX,
        }
    }

    #[test]
    fn a_small_order_fills_whole_near_the_book() {
        // 1 BTC at 50,000 against 10M per 1%: impact 0.05% / 2 on average, plus half the spread.
        let o = order(true, "1", "49000");
        let (q, px) = plan_fill(50_000.0, &o, o.size, 10_000_000.0, 0.0002).unwrap();
        assert_eq!(q, o.size);
        let expected = 50_000.0 * (1.0 - 0.0001 - 0.01 / 10_000_000.0 * 50_000.0 / 2.0);
        assert!((f_price(px) - expected).abs() < 1e-6, "{px} vs {expected}");
    }

    #[test]
    fn a_large_order_is_cut_at_the_limit() {
        // Limit 1% under the book, no spread: average impact k·q·book/2 <= 1% → q <= 2·0.01/(k·book).
        let o = order(true, "1000", "49500");
        let (q, px) = plan_fill(50_000.0, &o, o.size, 1_000_000.0, 0.0).unwrap();
        let max = 2.0 * 0.01 / (0.01 / 1_000_000.0 * 50_000.0);
        assert!((f_size(q) - max).abs() < 1e-6, "{q}");
        assert!(px >= o.limit);
        let b = order(false, "1000", "50500");
        let (qb, pb) = plan_fill(50_000.0, &b, b.size, 1_000_000.0, 0.0).unwrap();
        assert!((f_size(qb) - max).abs() < 1e-6);
        assert!(pb <= b.limit);
    }

    #[test]
    fn nothing_fills_beyond_the_limit() {
        let o = order(true, "1", "50000");
        assert_eq!(plan_fill(49_990.0, &o, o.size, 1e9, 0.0), None);
        let o = order(false, "1", "50000");
        assert_eq!(plan_fill(50_010.0, &o, o.size, 1e9, 0.0), None);
    }

    /// The venue side of the liquidation contract: the engine liquidates alice (2 BTC long on
    /// 20,000 of isolated margin falls below maintenance at 42,000) and emits an order; a
    /// liquidator fills it against the liquidity model after its latency, never beyond the
    /// limit, the book price moves, and the liquidator hands the position to the market maker.
    #[test]
    fn a_liquidation_order_is_filled_against_the_book_and_unwound() {
        let dir = std::env::temp_dir().join(format!("ballast-lab-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bars = String::from("timestamp_utc,open,high,low,close,volume\n");
        for i in 0..20 {
            bars.push_str(&format!("2025-01-01T00:{i:02}:00Z,50000,50000,50000,50000,1\n"));
        }
        std::fs::write(dir.join("bars.csv"), bars).unwrap();
        std::fs::write(
            dir.join("positions.csv"),
            "account,side,size,entry_price,isolated_margin\nalice,long,2,50000,20000\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("s.toml"),
            r#"
name = "unit"
start = "2025-01-01T00:00:00Z"
end = "2025-01-01T00:10:00Z"
[[markets]]
id = "BTC-PERP"
params = { initial_margin = "0.1", maintenance_margin = "0.05" }
price = { model = "csv", file = "bars.csv" }
liquidity = { depth_1pct = 25000, spread = 0.0 }
[population]
file = "positions.csv"
[liquidators]
count = 2
latency_ms = 1000
capital = 1000000
"#,
        )
        .unwrap();
        let setup = super::setup(crate::scenario::load(&dir.join("s.toml"), &[]).unwrap(), 1).unwrap();
        let (mut run, _) = setup.begin(setup.engine.clone(), 0, Keep::Detail);
        run.ts = setup.loaded.start_ms + 60_000;
        let crash = TimedCommand {
            ts: run.ts,
            cmd: Command::Oracle(OraclePrice {
                market: Some("BTC-PERP".into()),
                asset: None,
                source: "s0".into(),
                price: Price::parse("42000").unwrap(),
                publish_ts: None,
            }),
        };
        let mut events = Vec::new();
        run.engine.apply(&crash, &mut events).unwrap();
        for ev in &events {
            run.handle(contract::classify(ev));
        }
        assert_eq!(run.r.liquidation_orders, 1, "{events:?}");
        let order = run.pending.values().next().unwrap().order.clone();
        assert!(order.sell && order.account == "alice");
        run.book_px[0] = 42_000.0;
        run.fund_px[0] = 42_000.0;
        run.fill_orders();
        assert_eq!(run.r.liquidation_fills, 0, "not before the liquidators' latency");
        run.ts += 1000;
        run.fill_orders();
        assert!(run.r.liquidation_fills >= 1, "filled after the latency");
        assert!(run.book_px[0] < 42_000.0, "the liquidation sale moved the book: {}", run.book_px[0]);
        let alice = run.engine.account("alice").unwrap().isolated(0).unwrap().position.size;
        assert!(alice < Size::parse("2").unwrap(), "alice was partly liquidated: {alice}");
        run.unwind_liquidators();
        assert!(run.engine.account("liq.0").unwrap().cross_position(0).is_none_or(|p| p.size.is_zero()));
        let (r, d) = run.finish();
        assert_eq!(r.conservation_error, "0");
        assert!(d.unwrap().markers.iter().any(|m| m.kind == "liquidation"));
    }

    /// events.jsonl lines are the envelope flattened with the event, as serde's `flatten` writes them.
    #[test]
    fn event_lines_are_the_flattened_envelope() {
        #[derive(Serialize)]
        struct Line<'a> {
            seq: u64,
            ts: u64,
            #[serde(flatten)]
            event: &'a Event,
        }
        let events = [
            Event::LiquidationOrder {
                order: 7,
                account: "a1".into(),
                market: "BTC-PERP".into(),
                side: ballast_engine::event::OrderSide::Sell,
                size: Size::parse("0.5").unwrap(),
                limit: Price::parse("49000.5").unwrap(),
                expires: 61000,
            },
            Event::Deleveraged {
                market: "BTC-PERP".into(),
                account: "a\"1".into(),
                counterparty: "w".into(),
                size: Size::parse("2").unwrap(),
                price: Price::parse("100").unwrap(),
            },
        ];
        for ev in &events {
            let mut ours = Vec::new();
            write_event_line(&mut ours, &mut Vec::new(), 12, 3456, ev);
            let mut theirs = serde_json::to_vec(&Line { seq: 12, ts: 3456, event: ev }).unwrap();
            theirs.push(b'\n');
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
        }
    }

    /// A book account read by its slot is the one read by its id.
    #[test]
    fn book_accounts_are_found_by_slot() {
        let l = crate::scenario::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/synthetic-mc.toml"),
            &["population.accounts=50".into()],
        )
        .unwrap();
        let setup = super::setup(l, 3).unwrap();
        assert_eq!(setup.slots.len(), 50);
        for (i, id) in setup.book.ids.iter().enumerate() {
            assert_ne!(setup.slots[i], NO_SLOT);
            let by_slot = account_at(&setup.engine, setup.slots[i], id).unwrap();
            assert!(std::ptr::eq(by_slot, setup.engine.account(id).unwrap()), "{id}");
        }
        // A book whose ids are not in creation order is read by id.
        let mut shuffled = setup.book.clone();
        shuffled.ids.swap(0, 1);
        let first = setup.slots[0] as usize;
        assert_eq!(locate(&setup.engine, &setup.book, first), setup.slots);
        assert!(locate(&setup.engine, &shuffled, first).iter().all(|&s| s == NO_SLOT));
    }

    #[test]
    fn seeds_differ_per_path() {
        assert_ne!(path_seed(1, 0), path_seed(1, 1));
        assert_ne!(path_seed(1, 0), path_seed(2, 0));
        assert_eq!(path_seed(7, 3), path_seed(7, 3));
    }
}
