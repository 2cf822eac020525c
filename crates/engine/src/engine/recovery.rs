//! Liquidation and the recovery waterfall as state changes (DESIGN §3 Liquidation, Recovery
//! waterfall). The formulas live in [`crate::liquidation`] and [`crate::adl`], the index of
//! what a price step can affect in [`crate::detection`]; this module applies them.
//!
//! After every accepted command [`Engine::detect_and_liquidate`] gathers the buckets to look
//! at — those whose triggers the new marks and asset prices crossed, those the command touched,
//! and the buckets in liquidation (all of them after `oracle`, `funding` and `tick`; after other
//! commands, those with a deadline due) — and evaluates each exactly. A healthy bucket is
//! re-filed in the index. One below maintenance, or already in liquidation, takes a step, most
//! underwater first (equity/maintenance ascending, ties by account id, then by bucket):
//!
//! 1. back at or above the liquidation-end level: the liquidation ends;
//! 2. an oracle that does not allow liquidation: nothing happens (the status stays);
//! 3. the backstop is due (equity below its threshold × maintenance, or no progress for its
//!    timeout) and the vault is within its loss cap: the vault takes the bucket over;
//! 4. negative equity: the waterfall — insurance funds (segment, then global, within their
//!    caps), then deleveraging of winners at the bankruptcy price; once the bucket is flat,
//!    what is left is socialized;
//! 5. otherwise: liquidation orders sized to bring the bucket back to the liquidation-end
//!    level, paced per window, re-issued when they expire.

use super::{positive, price_in_range, valid_id, Engine};
use crate::account::{Account, Bucket, Position};
use crate::adl::{self, Candidate, SocialChannel};
use crate::command::{Fill, Liquidate, Side};
use crate::detection::{key, triggers, unkey, Key, Source, Term};
use crate::error::Reject;
use crate::event::{Event, Id, LiquidationEnd, OrderClosed, OrderSide};
use crate::health::{
    bucket_health, bucket_health_and_risks, bucket_positions, check_oracle, position_risk, Health, PositionRisks,
};
use crate::insurance::{FundParams, InsuranceFund};
use crate::liquidation::{self as math, LiquidationParams};
use crate::num::{Price, Quote, Ratio, Round, Size};
use crate::oracle::Action;
use ethnum::I256;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::cmp::Ordering;

/// The liquidation status of one bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liquidation {
    /// When the bucket fell below maintenance (the liquidator discount escalates from here).
    pub since: u64,
    /// When a liquidation last moved part of it (the start counts); the backstop timeout runs
    /// from here.
    pub progress: u64,
    /// Pacing and the open order, per market of the bucket, in the order first liquidated
    /// (inline for one market: most liquidated buckets hold one position).
    pub markets: SmallVec<[(u32, Pacing); 1]>,
}

/// Pacing of one position's liquidation: what was closed in the current window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pacing {
    pub window_start: u64,
    /// The position's size when the window opened.
    pub window_open: Size,
    pub closed: Size,
    pub order: Option<Order>,
}

/// An engine liquidation order on the venue's book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub side: OrderSide,
    pub remaining: Size,
    pub limit: Price,
    pub expires: u64,
}

/// The backstop vault: an account that takes over buckets the book cannot liquidate in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backstop {
    pub account: u32,
    /// The vault stops taking over once its loss (`capital` − its equity), plus the negative
    /// equity a takeover would bring, would exceed this (Hyperliquid's post-JELLY rule).
    pub loss_cap: Quote,
    /// Its equity when it became the vault, plus USDC deposited since, less USDC withdrawn.
    pub capital: Quote,
}

impl Pacing {
    fn new(now: u64, size: Size) -> Self {
        Pacing { window_start: now, window_open: size, closed: Size::ZERO, order: None }
    }

    /// The pacing at `now`: a new window opens once `window_ms` have passed.
    fn at(self, now: u64, size: Size, window_ms: u64) -> Self {
        if now >= self.window_start.saturating_add(window_ms) {
            Pacing { order: self.order, ..Pacing::new(now, size) }
        } else {
            self
        }
    }
}

impl Liquidation {
    fn pacing(&self, m: u32) -> Option<&Pacing> {
        self.markets.iter().find(|(k, _)| *k == m).map(|(_, p)| p)
    }

    /// The pacing of market `m` at `now`, opened if absent.
    fn pacing_mut(&mut self, m: u32, now: u64, size: Size, window_ms: u64) -> &mut Pacing {
        let i = match self.markets.iter().position(|(k, _)| *k == m) {
            Some(i) => i,
            None => {
                self.markets.push((m, Pacing::new(now, size)));
                self.markets.len() - 1
            }
        };
        let p = &mut self.markets[i].1;
        *p = p.at(now, size, window_ms);
        p
    }

    /// The earliest time something is due without a price move: an order expiring, the
    /// backstop timeout, a pacing window reopening.
    fn deadline(&self, markets: &[crate::market::Market], backstop: bool) -> u64 {
        // Started but not acted on yet: due at once.
        let mut due = if self.markets.is_empty() { self.since } else { u64::MAX };
        for (m, p) in &self.markets {
            let params = &markets[*m as usize].params.liquidation;
            due = due.min(match p.order {
                Some(o) => o.expires,
                None => p.window_start.saturating_add(params.window_ms),
            });
            if backstop {
                due = due.min(self.progress.saturating_add(params.backstop_timeout_ms));
            }
        }
        due
    }
}

/// A bucket's positions with their risk, largest maintenance requirement first (ties by market).
type Ranked = PositionRisks;

/// The lists of a detection pass, empty between commands but keeping their capacity, so that
/// a command allocates none of them again (a liquidation fill used to allocate five).
#[derive(Clone, Debug, Default)]
pub(super) struct Scratch {
    /// Spare for the buckets a step touches (the engine's `touched` list is the other one).
    keys: Vec<Key>,
    stepped: Vec<Key>,
    due: Vec<(Health, Key, u128)>,
    ranked: Vec<Ranked>,
}

/// Buckets warmed at a time by a detection pass (see `Engine::warm`): enough loads in flight
/// to overlap the misses, few enough that their lines stay in the L1 and L2 caches.
const WARM_AHEAD: usize = 16;

impl Engine {
    // ---- commands ----------------------------------------------------------------------

    pub(super) fn create_insurance_fund(
        &mut self,
        id: &str,
        params: &FundParams,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        self.require_ungoverned("create_insurance_fund")?;
        valid_id(id)?;
        if self.fund_idx(id).is_ok() {
            return Err(Reject::AlreadyExists { kind: "insurance fund", id: id.to_string() });
        }
        params.validate()?;
        let fund = InsuranceFund::new(Id::from(id), *params);
        events.push(Event::InsuranceFundCreated { fund: fund.id.clone() });
        self.insurance.push(fund);
        Ok(())
    }

    /// USDC paid into a fund from outside the engine; counted as a deposit.
    pub(super) fn fund_insurance(&mut self, id: &str, amount: Size, events: &mut Vec<Event>) -> Result<(), Reject> {
        positive("amount", amount)?;
        let amount = super::usdc_amount(amount)?;
        let f = self.fund_idx(id)?;
        let deposits = self.totals.deposits.checked_add(amount)?;
        let balance = self.insurance[f].balance.checked_add(amount)?;
        // Commit.
        self.totals.deposits = deposits;
        self.insurance[f].balance = balance;
        events.push(Event::InsuranceFunded { fund: self.insurance[f].id.clone(), amount, balance });
        Ok(())
    }

    /// Make `account` the backstop vault (replacing any previous one); once governance is
    /// installed, only through the council (`set_backstop` change).
    pub(super) fn set_backstop(&mut self, id: &str, loss_cap: Quote, events: &mut Vec<Event>) -> Result<(), Reject> {
        self.require_ungoverned("set_backstop")?;
        self.install_backstop(id, loss_cap, events)
    }

    pub(super) fn install_backstop(
        &mut self,
        id: &str,
        loss_cap: Quote,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        if loss_cap.is_negative() {
            return Err(Reject::NotPositive { field: "loss_cap", value: loss_cap.to_string() });
        }
        let i = self.account_idx(id)?;
        // Deadlines depend on whether there is a vault.
        self.deadline_floor = 0;
        if self.liquidations.keys().any(|&k| unkey(k).0 == i) {
            return Err(Reject::Conflict(format!("account '{id}' is being liquidated; it cannot be the backstop")));
        }
        // Takeovers land in the vault's cross book; an isolated bucket in the same market
        // would split a market's position across two buckets.
        if !self.accounts[i as usize].isolated.is_empty() {
            return Err(Reject::Conflict(format!(
                "account '{id}' has isolated positions; the backstop vault must be a cross-margin account"
            )));
        }
        let capital = self.health(&self.accounts[i as usize], Bucket::Cross)?.equity;
        self.backstop = Some(Backstop { account: i, loss_cap, capital });
        events.push(Event::BackstopSet { account: self.account_ids[i as usize].clone(), loss_cap, capital });
        Ok(())
    }

    /// An external liquidator takes over up to `size` of a liquidatable position at the mark
    /// less the escalating discount ([`math::liquidator_fee_at`], [`math::transfer_price`]),
    /// never more than the shortage needs ([`math::base_to_cover`]) or the pacing allows. The
    /// account also pays the capped insurance fee ([`math::insurance_fee_cap`]); the
    /// liquidator's own margin is checked like any trade's.
    pub(super) fn liquidate(&mut self, l: &Liquidate, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        positive("size", l.size)?;
        if let Some(limit) = l.limit {
            price_in_range(limit)?;
        }
        if l.liquidator == l.account {
            return Err(Reject::SelfTrade(l.account.clone()));
        }
        let m = self.market_idx(&l.market)?;
        let ai = self.account_idx(&l.account)?;
        let li = self.account_idx(&l.liquidator)?;
        let market = &self.markets[m as usize];
        check_oracle(market, ts, Action::Liquidate)?;
        let mark = market.mark().ok_or_else(|| Reject::NoPrice(l.market.clone()))?;
        let account = &self.accounts[ai as usize];
        let bucket = account.bucket_for(m);
        let k = key(ai, bucket);
        let pos = account.position(bucket, m);
        if pos.size.is_zero() {
            return Err(Reject::Conflict(format!("account '{}' has no position in {}", l.account, l.market)));
        }
        let h = bucket_health(account, bucket, self.prices(ts))?;
        let status = self.liquidations.get(&k);
        if !(h.is_liquidatable() || status.is_some() && h.equity < h.liquidation_end) {
            return Err(Reject::NotLiquidatable {
                account: l.account.clone(),
                equity: h.equity.to_string(),
                maintenance: h.maintenance.to_string(),
            });
        }
        let params = market.params.liquidation;
        let r = position_risk(market, &pos)?;
        let size_abs = pos.size.abs()?;
        let pacing = status
            .and_then(|s| s.pacing(m))
            .map_or(Pacing::new(ts, size_abs), |p| p.at(ts, size_abs, params.window_ms));
        let allowance = math::paced_size(size_abs, r.notional, &params, pacing.closed, pacing.window_open);
        if allowance.is_zero() {
            return Err(Reject::Cooldown {
                account: l.account.clone(),
                market: l.market.clone(),
                until: pacing.window_start.saturating_add(params.window_ms),
            });
        }
        let elapsed = ts - status.map_or(ts, |s| s.since);
        let discount = math::liquidator_fee_at(&params, r.maintenance.ratio_to(r.notional, Round::Floor)?, elapsed);
        let fraction = r.liquidation_end.ratio_to(r.notional, Round::Ceil)?;
        let shortage = h.liquidation_end.checked_sub(h.equity)?;
        let cover = math::base_to_cover(shortage, mark, fraction, discount, params.insurance_fee)?.unwrap_or(size_abs);
        let size = l.size.min(size_abs).min(cover.max(Size::from_raw(1))).min(allowance);
        let price = math::transfer_price(mark, pos.size, discount)?;
        let long = pos.size.is_positive();
        if let Some(limit) = l.limit {
            if (long && price > limit) || (!long && price < limit) {
                return Err(Reject::LimitBroken { price: price.to_string(), limit: limit.to_string() });
            }
        }
        let fee_fraction = math::insurance_fee_cap(shortage, size_abs, mark, fraction, discount, params.insurance_fee)?;
        let insurance_fee = size.notional(mark, Round::Ceil)?.mul_ratio_ceil(fee_fraction)?;
        let (buyer, seller, fees) =
            if long { (li, ai, (Quote::ZERO, insurance_fee)) } else { (ai, li, (insurance_fee, Quote::ZERO)) };
        let trade = self.prepare_trade(m, buyer, seller, size, price, fees)?;
        let check = if long { [Some(l.liquidator.as_str()), None] } else { [None, Some(l.liquidator.as_str())] };
        let mut checked = [None, None];
        self.check_trade(&trade, check, false, ts, &mut checked)?;
        let f = self.fund_of_market(m);
        let fund_balance = self.insurance[f].balance.checked_add(insurance_fee)?;
        // Commit.
        self.commit_trade(&trade, &checked, events)?;
        self.insurance[f].balance = fund_balance;
        self.count_liquidated(m, trade.paid, ts, events)?;
        // `self.now` is still the previous command's time here.
        self.start_liquidation(k, &h, ts, events);
        let status = self.liquidations.get_mut(&k).expect("started above");
        let p = status.pacing_mut(m, ts, size_abs, params.window_ms);
        *p = Pacing { closed: pacing.closed.checked_add(size)?, order: p.order, ..pacing };
        status.progress = ts;
        events.push(Event::Liquidated {
            liquidator: self.account_ids[li as usize].clone(),
            account: self.account_ids[ai as usize].clone(),
            market: self.market_id(m),
            size,
            price,
            mark,
            discount,
            insurance_fee,
        });
        Ok(())
    }

    /// A `fill` with `"liquidation": true`: it executes the open liquidation order of the
    /// buyer (a buy order) or the seller (a sell order), or both. The order bounds it: no
    /// larger than what remains, no worse for the account than its limit. The liquidated side
    /// pays dYdX's insurance-fund delta instead of a trading fee ([`math::insurance_fund_delta`]);
    /// a fill worse than bankruptcy draws the difference from the insurance funds. The
    /// counterparty is margin-checked and pays its usual fee.
    pub(super) fn liquidation_fill(
        &mut self,
        f: &Fill,
        m: u32,
        bi: u32,
        si: u32,
        ts: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        let mut sides: [Option<LiquidatedSide>; 2] = [None, None];
        for (slot, (i, side)) in sides.iter_mut().zip([(bi, OrderSide::Buy), (si, OrderSide::Sell)]) {
            *slot = self.liquidated_side(f, m, i, side, ts)?;
        }
        if sides.iter().all(Option::is_none) {
            return Err(Reject::LiquidationFill(format!(
                "neither '{}' nor '{}' has an open liquidation order in {}",
                f.buyer, f.seller, f.market
            )));
        }
        let params = &self.markets[m as usize].params;
        let (maker, taker) = (params.maker_fee, params.taker_fee);
        let paid = f.size.notional(f.price, Round::Ceil)?;
        let trading_fee = |side: Side| paid.mul_ratio_ceil(if f.taker == side { taker } else { maker });
        let fee_of = |s: &Option<LiquidatedSide>, side| match s {
            Some(s) => Ok(s.insurance_delta.max(Quote::ZERO)),
            None => trading_fee(side),
        };
        let fees = (fee_of(&sides[0], Side::Buyer)?, fee_of(&sides[1], Side::Seller)?);
        let trade = self.prepare_trade(m, bi, si, f.size, f.price, fees)?;
        let check = [sides[0].is_none().then_some(f.buyer.as_str()), sides[1].is_none().then_some(f.seller.as_str())];
        let mut checked = [None, None];
        self.check_trade(&trade, check, true, ts, &mut checked)?;
        let mut trading_fees = Quote::ZERO;
        let mut insurance_fees = Quote::ZERO;
        for (s, fee) in sides.iter().zip([fees.0, fees.1]) {
            match s {
                Some(_) => insurance_fees = insurance_fees.checked_add(fee)?,
                None => trading_fees = trading_fees.checked_add(fee)?,
            }
        }
        let fund = self.fund_of_market(m);
        let fund_balance = self.insurance[fund].balance.checked_add(insurance_fees)?;
        // Commit.
        self.commit_trade(&trade, &checked, events)?;
        self.insurance[fund].balance = fund_balance;
        self.collect_trading_fees(m, trading_fees)?;
        self.count_liquidated(m, trade.paid, ts, events)?;
        for s in sides.into_iter().flatten() {
            self.record_order_fill(&s, m, f, ts, events)?;
        }
        Ok(())
    }

    /// The liquidated side of a liquidation fill, if account `i` has an order in market `m`;
    /// an order on the other side, too small, expired or with a limit the price breaks is a
    /// rejection.
    fn liquidated_side(
        &self,
        f: &Fill,
        m: u32,
        i: u32,
        side: OrderSide,
        ts: u64,
    ) -> Result<Option<LiquidatedSide>, Reject> {
        let account = &self.accounts[i as usize];
        let bucket = account.bucket_for(m);
        let k = key(i, bucket);
        let Some(order) = self.liquidations.get(&k).and_then(|l| l.pacing(m)).and_then(|p| p.order) else {
            return Ok(None);
        };
        let id = &self.account_ids[i as usize];
        let refuse = |why: String| Err(Reject::LiquidationFill(format!("order {} of '{id}': {why}", order.id)));
        if order.side != side {
            return refuse(format!("it is a {:?} order; the account is on the other side of this fill", order.side));
        }
        if ts >= order.expires {
            return refuse(format!("it expired at {}", order.expires));
        }
        if f.size > order.remaining {
            return refuse(format!("size {} is larger than the {} that remains", f.size, order.remaining));
        }
        let worse = match side {
            OrderSide::Sell => f.price < order.limit,
            OrderSide::Buy => f.price > order.limit,
        };
        if worse {
            return Err(Reject::LimitBroken { price: f.price.to_string(), limit: order.limit.to_string() });
        }
        // dYdX's insurance-fund delta against the bankruptcy quote of the closed part.
        let market = &self.markets[m as usize];
        let h = bucket_health(account, bucket, self.prices(ts))?;
        let pos = account.position(bucket, m);
        let closed = if side == OrderSide::Sell { f.size } else { f.size.checked_neg()? };
        let after = Position { size: pos.size.checked_sub(closed)?, ..pos };
        let closed_maintenance =
            position_risk(market, &pos)?.maintenance.checked_sub(position_risk(market, &after)?.maintenance)?;
        let mark = market.mark().ok_or_else(|| Reject::NoPrice(market.id.to_string()))?;
        let closed_value = closed.value_at(mark, Round::Floor)?;
        let bankruptcy_quote = math::bankruptcy_quote(closed_value, h.equity, closed_maintenance, h.maintenance)?;
        let (received, paid) = f.size.notional_floor_and_ceil(f.price)?;
        let fill_quote = if side == OrderSide::Sell { received } else { paid.checked_neg()? };
        let insurance_delta =
            math::insurance_fund_delta(fill_quote, bankruptcy_quote, market.params.liquidation.insurance_fee)?;
        Ok(Some(LiquidatedSide { key: k, order, bankruptcy_quote, insurance_delta }))
    }

    /// After a liquidation fill: the order shrinks (or closes), the pacing counts the size, and
    /// a fill worse than bankruptcy is paid by the insurance funds as far as they can.
    fn record_order_fill(
        &mut self,
        s: &LiquidatedSide,
        m: u32,
        f: &Fill,
        ts: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        let (a, _) = unkey(s.key);
        let account = self.account_ids[a as usize].clone();
        let market = self.market_id(m);
        let status = self.liquidations.get_mut(&s.key).expect("a liquidated side is in liquidation");
        status.progress = ts;
        let p = status.markets.iter_mut().find(|(k, _)| *k == m).map(|(_, p)| p).expect("the order's market");
        p.closed = p.closed.checked_add(f.size)?;
        let remaining = s.order.remaining.checked_sub(f.size)?;
        p.order = (!remaining.is_zero()).then_some(Order { remaining, ..s.order });
        events.push(Event::LiquidationFilled {
            order: s.order.id,
            account: account.clone(),
            market: market.clone(),
            size: f.size,
            price: f.price,
            bankruptcy_quote: s.bankruptcy_quote,
            insurance_fee: s.insurance_delta.max(Quote::ZERO),
        });
        if remaining.is_zero() {
            events.push(Event::LiquidationOrderClosed {
                order: s.order.id,
                account,
                market,
                reason: OrderClosed::Filled,
                unfilled: Size::ZERO,
            });
        }
        if s.insurance_delta.is_negative() {
            self.pay_deficit(s.key, s.insurance_delta.checked_neg()?, ts, events)?;
        }
        Ok(())
    }

    // ---- detection -----------------------------------------------------------------------

    /// Find and process every bucket the command may have pushed below maintenance, and every
    /// bucket in liquidation that is due (see the module documentation).
    pub(super) fn detect_and_liquidate(&mut self, moves_prices_or_time: bool, events: &mut Vec<Event>) {
        let bad_debt = self.totals.bad_debt;
        let funds: SmallVec<[Quote; 2]> = self.insurance.iter().map(|f| f.balance).collect();
        self.detect(moves_prices_or_time, events);
        // Bad debt gates withdrawals (dYdX's rule); the breakers see the funds that moved.
        if self.totals.bad_debt != bad_debt {
            let until = self.now.saturating_add(self.bad_debt_gate_ms());
            self.gate_withdrawals(until, "bad debt", events);
        }
        if self.insurance.iter().map(|f| f.balance).ne(funds.iter().copied()) {
            for m in 0..self.markets.len() {
                if self.markets[m].params.breakers.is_some() {
                    let (id, balance) =
                        (self.markets[m].id.clone(), self.insurance[self.fund_of_market(m as u32)].balance);
                    // Fails only for an unknown market: these ids come from the engine itself.
                    let _ = self.observe_insurance_balance(&id, balance, self.now, events);
                }
            }
        }
    }

    fn detect(&mut self, moves_prices_or_time: bool, events: &mut Vec<Event>) {
        let mut keys = std::mem::take(&mut self.touched);
        self.step_prices(&mut keys);
        let backstop = self.backstop.is_some();
        let now = self.now;
        let walk = moves_prices_or_time || self.deadline_floor <= now;
        if walk {
            keys.extend(
                self.liquidations
                    .iter()
                    .filter(|(_, l)| moves_prices_or_time || l.deadline(&self.markets, backstop) <= now)
                    .map(|(&k, _)| k),
            );
        }
        if keys.is_empty() {
            // Most commands leave nothing to look at.
            self.touched = keys;
            self.keep_deadline_floor(walk, &[]);
            return;
        }
        let Scratch { keys: spare, mut stepped, mut due, mut ranked } = std::mem::take(&mut self.scratch);
        self.touched = spare;
        // Each bucket takes at most one step per command; buckets the steps touch (winners of
        // deleveraging, payers of a socialized loss, the vault) are re-filed or start their own.
        while !keys.is_empty() {
            keys.sort_unstable();
            keys.dedup();
            // Only a batch (a price step) meets cold buckets; a fill's two are already cached.
            let warm = keys.len() > WARM_AHEAD;
            due.clear();
            ranked.clear();
            if warm {
                due.reserve(keys.len());
                ranked.reserve(keys.len());
                stepped.reserve(keys.len());
            }
            for (i, &k) in keys.iter().enumerate() {
                if warm && i % WARM_AHEAD == 0 {
                    let ahead = &keys[i..keys.len().min(i + WARM_AHEAD)];
                    std::hint::black_box(ahead.iter().fold(0, |x, &k| x ^ self.warm(k)));
                }
                let (a, bucket) = unkey(k);
                let Ok((h, risks)) = bucket_health_and_risks(&self.accounts[a as usize], bucket, self.prices(self.now))
                else {
                    self.index.remove(k);
                    continue;
                };
                let liquidating = self.liquidations.contains_key(&k);
                if !(liquidating || h.is_liquidatable()) {
                    // Re-filed, or kept when its entries still cover it.
                    let terms = self.terms(&self.accounts[a as usize], bucket, &risks);
                    self.refile(k, &h, &terms);
                    continue;
                }
                self.index.remove(k);
                if stepped.binary_search(&k).is_err() {
                    due.push((h, k, id_prefix(&self.account_ids[a as usize])));
                    ranked.push(risks);
                } else if !liquidating {
                    // Pushed back under by another bucket's step after its own: its liquidation
                    // starts now and acts on the next command.
                    self.start_liquidation(k, &h, self.now, events);
                }
            }
            // Every popped bucket has been removed (the first pass holds them all).
            self.index.end_pops();
            // Typically a start and an order per bucket: one allocation instead of doublings.
            events.reserve(2 * due.len());
            let order = self.most_underwater_first(&due);
            // The statuses of the buckets that start now are opened together, in key order (`due`
            // is sorted by key); their start events still go out in processing order. Nothing a
            // step reads depends on another bucket's status being there already.
            let opened = self.open_liquidations(due.iter().map(|&(_, k, _)| k), self.now);
            for (n, &i) in order.iter().enumerate() {
                if warm && n % WARM_AHEAD == 0 {
                    // The steps go in processing order, at random places of `due`, `ranked`,
                    // the statuses and the ids: warmed the same way as the first pass.
                    let ahead = &order[n..order.len().min(n + WARM_AHEAD)];
                    let warm = |&i: &usize| due[i].0.equity.raw() ^ ranked[i].len() as i128 ^ self.warm_step(due[i].1);
                    std::hint::black_box(ahead.iter().fold(0, |x, i| x ^ warm(i)));
                }
                let (h, k, _) = due[i];
                stepped.push(k);
                rank(&mut ranked[i]);
                self.liquidation_step(k, h, &ranked[i], opened[i], events);
            }
            stepped.sort_unstable();
            keys.clear();
            std::mem::swap(&mut keys, &mut self.touched);
        }
        self.keep_deadline_floor(walk, &stepped);
        stepped.clear();
        due.clear();
        ranked.clear();
        self.scratch = Scratch { keys, stepped, due, ranked };
    }

    /// Keep the deadline floor: exact after a walk of every liquidation; otherwise lowered by
    /// every liquidation the command stepped (each one it touched took a step, a new one starts
    /// due at once).
    fn keep_deadline_floor(&mut self, walk: bool, stepped: &[Key]) {
        let backstop = self.backstop.is_some();
        let deadline = |l: &Liquidation| l.deadline(&self.markets, backstop);
        self.deadline_floor = if walk {
            self.liquidations.values().map(deadline).min().unwrap_or(u64::MAX)
        } else {
            stepped.iter().filter_map(|k| self.liquidations.get(k)).map(deadline).fold(self.deadline_floor, u64::min)
        };
    }

    /// Read what a detection pass reads of bucket `k` — its account's cash and positions, its
    /// index slot, its id — and nothing more (a value to hand to `black_box`).
    ///
    /// A crash meets thousands of cold buckets at random places in a large engine: each read
    /// is a cache and TLB miss. Evaluating them one by one takes those misses one at a time,
    /// since a health evaluation is too long for the CPU to reach the next bucket's loads
    /// early. Warming [`WARM_AHEAD`] buckets first issues all their loads back to back, and the
    /// CPU overlaps the misses.
    fn warm(&self, k: Key) -> i128 {
        let (a, bucket) = unkey(k);
        let account = &self.accounts[a as usize];
        let sizes = bucket_positions(account, bucket, None).fold(0, |x, (_, p)| x ^ p.size.raw());
        let elsewhere = self.index.filed_entries(a) ^ self.account_ids[a as usize].len();
        sizes ^ account.cash(bucket).raw() ^ elsewhere as i128
    }

    /// What a liquidation step reads of bucket `k` besides its health and positions: its
    /// status and its id (see [`Self::warm`]).
    fn warm_step(&self, k: Key) -> i128 {
        let since = self.liquidations.get(&k).map_or(0, |l| l.since);
        i128::from(since) ^ self.account_ids[unkey(k).0 as usize].len() as i128
    }

    /// Add the buckets with index entries crossed by every mark and asset price that moved.
    fn step_prices(&mut self, keys: &mut Vec<Key>) {
        self.stepped_marks.resize(self.markets.len(), None);
        self.stepped_assets.resize(self.assets.len(), None);
        for m in 0..self.markets.len() {
            let mark = self.markets[m].mark();
            if mark != self.stepped_marks[m] {
                if let Some(p) = mark {
                    keys.extend(self.index.pop_crossed(Source::Market(m as u32), p));
                }
                self.stepped_marks[m] = mark;
            }
        }
        for a in 0..self.assets.len() {
            let price = self.assets[a].feed.price();
            if price != self.stepped_assets[a] {
                if let Some(p) = price {
                    keys.extend(self.index.pop_crossed(Source::Asset(a as u32), p));
                }
                self.stepped_assets[a] = price;
            }
        }
    }

    /// File `k` in the index with a fresh budget from its health `h` and its risk `terms`
    /// (computed in the same pass, at the same prices).
    pub(super) fn refile(&mut self, k: Key, h: &Health, terms: &[Term]) {
        let buffer = h.equity.checked_sub(h.maintenance).unwrap_or(Quote::ZERO);
        self.index.update(k, &triggers(buffer, terms));
    }

    /// The risk terms of a bucket of `account` whose positions have `risks` (see
    /// [`crate::detection`]).
    fn terms(&self, account: &Account, bucket: Bucket, risks: &PositionRisks) -> SmallVec<[Term; 2]> {
        let mut terms: SmallVec<[Term; 2]> =
            risks.iter().map(|(m, pos, r)| Term::of_position(*m, &self.markets[*m as usize], pos, r)).collect();
        terms.extend(Term::of_collateral(account, bucket, &self.assets));
        terms
    }

    /// Rebuild the detection index from the accounts (after loading a snapshot).
    pub(super) fn rebuild_detection(&mut self) {
        self.index = Default::default();
        self.stepped_marks = self.markets.iter().map(|m| m.mark()).collect();
        self.stepped_assets = self.assets.iter().map(|a| a.feed.price()).collect();
        for a in 0..self.accounts.len() as u32 {
            let account = &self.accounts[a as usize];
            let buckets: SmallVec<[Bucket; 2]> = std::iter::once(Bucket::Cross)
                .chain(account.isolated.iter().map(|(m, _)| Bucket::Isolated(*m)))
                .collect();
            for bucket in buckets {
                let k = key(a, bucket);
                if self.liquidations.contains_key(&k) {
                    continue;
                }
                let account = &self.accounts[a as usize];
                if let Ok((h, risks)) = bucket_health_and_risks(account, bucket, self.prices(self.now)) {
                    let terms = self.terms(account, bucket, &risks);
                    self.refile(k, &h, &terms);
                }
            }
        }
    }

    /// A full scan: every bucket below maintenance, in processing order. What the index
    /// avoids; kept for tests and the benchmark's comparison.
    pub fn scan_liquidatable(&self) -> Vec<Key> {
        let mut found = Vec::new();
        for (a, account) in self.accounts.iter().enumerate() {
            let buckets =
                std::iter::once(Bucket::Cross).chain(account.isolated.iter().map(|(m, _)| Bucket::Isolated(*m)));
            for bucket in buckets {
                if let Ok(h) = bucket_health(account, bucket, self.prices(self.now)) {
                    if h.is_liquidatable() {
                        found.push((h, key(a as u32, bucket), id_prefix(&self.account_ids[a])));
                    }
                }
            }
        }
        self.most_underwater_first(&found).into_iter().map(|i| found[i].1).collect()
    }

    /// Processing order: most underwater first (equity / maintenance ascending, exactly), ties
    /// by account id, then by bucket. Each item carries its account id's [`id_prefix`].
    ///
    /// Sorted first on one integer per bucket — the ratio scaled by 2^32, rounded down and
    /// clamped to 64 bits (which orders like the ratio wherever those differ) — so a crash with
    /// thousands of liquidations sorts without comparison callbacks. Then each run of equal
    /// integers is checked with the exact comparison (ratio, id prefix, id, key) in one pass
    /// and re-sorted with it only if the check fails: equal or near-equal ratios.
    fn most_underwater_first(&self, items: &[(Health, Key, u128)]) -> Vec<usize> {
        // Most passes rank one bucket (a liquidation fill's) or none.
        if items.len() < 2 {
            return (0..items.len()).collect();
        }
        // One `u128` per bucket, sorted with single comparisons: the ratio clamped to 64 bits
        // (order-preserving, ties allowed) above the bucket's position in `items`.
        let clamped = |h: &Health| {
            let r = scaled_ratio(h);
            let r = i64::try_from(r).unwrap_or(if r < 0 { i64::MIN } else { i64::MAX });
            u128::from(r as u64 ^ (1 << 63))
        };
        let mut keyed: Vec<u128> =
            items.iter().enumerate().map(|(i, (h, _, _))| clamped(h) << 64 | i as u128).collect();
        keyed.sort_unstable();
        // Runs of equal clamped ratios are then put in the exact order: ratio, id, key.
        let item = |x: &u128| &items[*x as u64 as usize];
        let exact = |a: &u128, b: &u128| {
            let ((ha, ka, pa), (hb, kb, pb)) = (item(a), item(b));
            let id = |k: &Key| &self.account_ids[(k >> 32) as usize];
            more_underwater(ha, hb).then(pa.cmp(pb)).then_with(|| id(ka).cmp(id(kb))).then(ka.cmp(kb))
        };
        for run in keyed.chunk_by_mut(|a, b| a >> 64 == b >> 64) {
            if !run.is_sorted_by(|a, b| exact(a, b) != Ordering::Greater) {
                run.sort_unstable_by(exact);
            }
        }
        keyed.into_iter().map(|x| x as u64 as usize).collect()
    }

    /// Buckets in liquidation, by key.
    pub fn liquidations(&self) -> impl Iterator<Item = (Key, &Liquidation)> {
        self.liquidations.iter().map(|(&k, l)| (k, l))
    }

    /// The liquidation of bucket `k`, if one is in progress.
    pub fn liquidation(&self, k: Key) -> Option<&Liquidation> {
        self.liquidations.get(&k)
    }

    pub fn insurance_funds(&self) -> &[InsuranceFund] {
        &self.insurance
    }

    pub fn backstop(&self) -> Option<&Backstop> {
        self.backstop.as_ref()
    }

    /// Number of buckets filed in the detection index.
    pub fn filed_buckets(&self) -> usize {
        self.index.len()
    }

    /// A self-check for tests: no liquidation has a deadline before the floor that lets
    /// commands skip looking for due liquidations.
    pub fn deadline_floor_holds(&self) -> bool {
        let backstop = self.backstop.is_some();
        self.liquidations.values().all(|l| l.deadline(&self.markets, backstop) >= self.deadline_floor)
    }

    /// A self-check for tests: the detection index holds exactly what the buckets filed.
    pub fn detection_index_is_consistent(&self) -> bool {
        self.index.is_consistent()
    }

    fn health_of_key(&self, k: Key) -> Result<Health, Reject> {
        let (a, bucket) = unkey(k);
        bucket_health(&self.accounts[a as usize], bucket, self.prices(self.now))
    }

    // ---- one step --------------------------------------------------------------------------

    /// Start the liquidation of `k` at `ts` unless it has started.
    fn start_liquidation(&mut self, k: Key, h: &Health, ts: u64, events: &mut Vec<Event>) {
        if self.open_liquidation(k, ts) {
            self.liquidation_started(k, h, events);
        }
    }

    /// The status half of [`Self::start_liquidation`]: false if `k` is already in liquidation.
    fn open_liquidation(&mut self, k: Key, ts: u64) -> bool {
        self.open_liquidations(std::iter::once(k), ts)[0]
    }

    /// [`Self::open_liquidation`] of each of `keys` (ascending), in one pass.
    ///
    /// A crash opens thousands of statuses at once. Inserted one by one in key order they
    /// would leave the tree's nodes about half full (a split keeps half of a node on each
    /// side); built as one tree and merged (`append`, linear in both sizes) the nodes are
    /// full, so a crash writes about half the memory for its statuses, mostly fresh pages the
    /// kernel must clear first. The merge is used only while the new statuses outnumber the
    /// open ones, so that it never rebuilds a large tree for a few additions.
    fn open_liquidations(&mut self, keys: impl Iterator<Item = Key> + Clone, ts: u64) -> Vec<bool> {
        let opened: Vec<bool> = keys.clone().map(|k| !self.liquidations.contains_key(&k)).collect();
        let new = keys.zip(&opened).filter(|&(_, &o)| o).map(|(k, _)| k);
        let status = || Liquidation { since: ts, progress: ts, markets: SmallVec::new() };
        let count = opened.iter().filter(|&&o| o).count();
        if count > self.liquidations.len() {
            // Collected at its final size first: a collect straight into the tree would grow
            // its buffer by doubling, copying the statuses each time.
            let mut statuses = Vec::with_capacity(count);
            statuses.extend(new.clone().map(|k| (k, status())));
            let mut built = std::collections::BTreeMap::from_iter(statuses);
            self.liquidations.append(&mut built);
        } else {
            for k in new.clone() {
                self.liquidations.insert(k, status());
            }
        }
        if opened.contains(&true) {
            // A new liquidation is due at once.
            self.deadline_floor = self.deadline_floor.min(ts);
        }
        for k in new {
            self.index.remove(k);
        }
        opened
    }

    fn liquidation_started(&self, k: Key, h: &Health, events: &mut Vec<Event>) {
        let (account, isolated) = self.bucket_ids(k);
        events.push(Event::LiquidationStarted { account, isolated, equity: h.equity, maintenance: h.maintenance });
    }

    fn end_liquidation(&mut self, k: Key, reason: LiquidationEnd, events: &mut Vec<Event>) {
        let Some(status) = self.liquidations.remove(&k) else { return };
        let (account, isolated) = self.bucket_ids(k);
        for (m, p) in status.markets {
            if let Some(o) = p.order {
                events.push(Event::LiquidationOrderClosed {
                    order: o.id,
                    account: account.clone(),
                    market: self.market_id(m),
                    reason: OrderClosed::Cancelled,
                    unfilled: o.remaining,
                });
            }
        }
        events.push(Event::LiquidationEnded { account, isolated, reason });
        // The next round files the bucket again (or starts it over), unless it is an isolated
        // bucket left flat: its entries left the index when the liquidation started, and it
        // has nothing to file.
        let (a, bucket) = unkey(k);
        let flat_isolated = match bucket {
            Bucket::Isolated(m) => self.accounts[a as usize].position(bucket, m).size.is_zero(),
            Bucket::Cross => false,
        };
        if !flat_isolated {
            self.touched.push(k);
        }
    }

    /// One step of `k`; `opened`: its liquidation was opened for this step (the start event
    /// goes out first).
    fn liquidation_step(&mut self, k: Key, h: Health, ranked: &Ranked, opened: bool, events: &mut Vec<Event>) {
        if opened {
            self.liquidation_started(k, &h, events);
        }
        if let Err(e) = self.liquidation_actions(k, h, ranked, events) {
            let (account, isolated) = self.bucket_ids(k);
            events.push(Event::LiquidationSkipped { account, isolated, reason: e.to_string() });
        }
    }

    fn liquidation_actions(
        &mut self,
        k: Key,
        h: Health,
        ranked: &Ranked,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        if !ranked.is_empty() && h.equity >= h.liquidation_end {
            self.end_liquidation(k, LiquidationEnd::Recovered, events);
            return Ok(());
        }
        let now = self.now;
        // The oracle must allow liquidation, and no breaker may pause it (a halt, or the grace
        // period after an oracle outage).
        let paused = |m: u32| {
            let market = &self.markets[m as usize];
            check_oracle(market, now, Action::Liquidate).is_err() || !market.breaker.allows_liquidation(now)
        };
        if ranked.iter().any(|(m, _, _)| paused(*m)) {
            return Ok(());
        }
        if let Some(&(m, _, _)) = ranked.first() {
            if self.backstop_takes(k, &h, &self.markets[m as usize].params.liquidation)? {
                self.take_over(k, &h, events)?;
                self.end_liquidation(k, LiquidationEnd::TakenOver, events);
                return Ok(());
            }
        }
        let (mut h, mut reread) = (h, None);
        if h.equity.is_negative() {
            self.recover(k, &h, ranked, events)?;
            h = self.health_of_key(k)?;
            reread = Some(self.ranked_positions(k)?);
        }
        let ranked = reread.as_ref().unwrap_or(ranked);
        // `ranked` lists the bucket's open positions (re-read after a recovery), so the account
        // itself, long out of cache in a crash step, need not be read again.
        if ranked.is_empty() {
            if h.equity.is_negative() {
                self.socialize(k, h.equity.checked_neg()?, events)?;
            }
            // What no channel could take keeps the bucket in liquidation: it is retried.
            if !self.health_of_key(k)?.equity.is_negative() {
                self.end_liquidation(k, LiquidationEnd::Closed, events);
            }
            return Ok(());
        }
        if h.equity >= h.liquidation_end {
            self.end_liquidation(k, LiquidationEnd::Recovered, events);
            return Ok(());
        }
        self.issue_orders(k, &h, ranked, events)
    }

    /// The bucket's positions with their risk, largest maintenance first, ties by market.
    fn ranked_positions(&self, k: Key) -> Result<Ranked, Reject> {
        let (a, bucket) = unkey(k);
        let (_, mut risks) = bucket_health_and_risks(&self.accounts[a as usize], bucket, self.prices(self.now))?;
        rank(&mut risks);
        Ok(risks)
    }

    /// Orders for the venue's book: per position (largest requirement first) the size that
    /// restores the liquidation-end level ([`math::base_to_cover`] with the position's
    /// liquidation-end fraction, rounded up so it never closes more than needed), within the
    /// pacing allowance; limit = dYdX's fillable price. A live order is left alone; an expired
    /// one is closed and re-issued at a fresh price.
    fn issue_orders(&mut self, k: Key, h: &Health, ranked: &Ranked, events: &mut Vec<Event>) -> Result<(), Reject> {
        let now = self.now;
        let (account, _) = self.bucket_ids(k);
        let mut shortage = h.liquidation_end.checked_sub(h.equity)?;
        for &(m, pos, r) in ranked {
            let params = self.markets[m as usize].params.liquidation;
            let size_abs = pos.size.abs()?;
            let fraction = r.liquidation_end.ratio_to(r.notional, Round::Ceil)?;
            let freed_per_notional = fraction.checked_sub(params.insurance_fee)?.max(Ratio::ZERO);
            let status = self.liquidations.get_mut(&k).expect("in liquidation");
            let pacing = status.pacing_mut(m, now, size_abs, params.window_ms);
            if let Some(o) = pacing.order {
                if now < o.expires {
                    let freed = o.remaining.notional(r.mark, Round::Floor)?.mul_ratio_floor(freed_per_notional)?;
                    shortage = shortage.checked_sub(freed)?;
                    continue;
                }
                pacing.order = None;
                events.push(Event::LiquidationOrderClosed {
                    order: o.id,
                    account: account.clone(),
                    market: self.markets[m as usize].id.clone(),
                    reason: OrderClosed::Expired,
                    unfilled: o.remaining,
                });
            }
            if !shortage.is_positive() {
                continue;
            }
            let cover = math::base_to_cover(shortage, r.mark, fraction, Ratio::ZERO, params.insurance_fee)?;
            let allowance = math::paced_size(size_abs, r.notional, &params, pacing.closed, pacing.window_open);
            let size = size_abs.min(cover.unwrap_or(size_abs)).min(allowance);
            if size.is_zero() {
                continue;
            }
            let value = pos.size.value_at(r.mark, Round::Floor)?;
            let limit = math::fillable_price(&params, value, pos.size, r.maintenance, h.equity, h.maintenance)?
                .clamp(Price::from_raw(1), Price::MAX_SUPPORTED);
            let side = if pos.size.is_positive() { OrderSide::Sell } else { OrderSide::Buy };
            let order = Order {
                id: self.next_order,
                side,
                remaining: size,
                limit,
                expires: now.saturating_add(params.order_ttl_ms),
            };
            pacing.order = Some(order);
            self.next_order += 1;
            shortage =
                shortage.checked_sub(size.notional(r.mark, Round::Floor)?.mul_ratio_floor(freed_per_notional)?)?;
            events.push(Event::LiquidationOrder {
                order: order.id,
                account: account.clone(),
                market: self.markets[m as usize].id.clone(),
                side,
                size,
                limit,
                expires: order.expires,
            });
        }
        Ok(())
    }

    // ---- backstop --------------------------------------------------------------------------

    /// Whether the vault takes `k` over now: the trigger is due ([`math::backstop_due`]) and the
    /// vault's loss so far plus the negative equity it would absorb stays within its cap.
    fn backstop_takes(&self, k: Key, h: &Health, params: &LiquidationParams) -> Result<bool, Reject> {
        let Some(b) = self.backstop else { return Ok(false) };
        if unkey(k).0 == b.account {
            return Ok(false);
        }
        let status = &self.liquidations[&k];
        if !math::backstop_due(h.equity, h.maintenance, params, self.now - status.progress)? {
            return Ok(false);
        }
        let vault = bucket_health(&self.accounts[b.account as usize], Bucket::Cross, self.prices(self.now))?;
        let loss = b.capital.checked_sub(vault.equity)?.max(Quote::ZERO);
        let absorbed = h.equity.checked_neg()?.max(Quote::ZERO);
        Ok(loss.checked_add(absorbed)? <= b.loss_cap)
    }

    /// The vault takes the bucket's positions (with their cash legs: at their entry, so value
    /// moves exactly), its settlement cash and, for a cross book, its other collateral. The
    /// positions join the vault's own (settling funding on both first).
    fn take_over(&mut self, k: Key, h: &Health, events: &mut Vec<Event>) -> Result<(), Reject> {
        let (a, bucket) = unkey(k);
        let v = self.backstop.expect("checked by backstop_takes").account;
        let mut account = self.accounts[a as usize].clone();
        let mut vault = self.accounts[v as usize].clone();
        let mut markets = Vec::new();
        let positions: SmallVec<[(u32, Position); 2]> = bucket_positions(&account, bucket, None).collect();
        for (m, pos) in positions {
            let market = &self.markets[m as usize];
            let index = market.funding_index;
            let owed = pos.funding_owed(index)?;
            account.add_cash(bucket, owed.checked_neg()?)?;
            let vb = Bucket::Cross;
            let mut held = vault.position(vb, m);
            let vault_owed = held.funding_owed(index)?;
            held.funding_index = index;
            let (merged, realized) = held.trade(pos.size, pos.quote)?;
            vault.add_cash(vb, realized.checked_sub(vault_owed)?)?;
            vault.set_position(vb, m, merged);
            account.set_position(bucket, m, Position { funding_index: index, ..Position::default() });
            let long = |s: Size| s.max(Size::ZERO);
            let oi = market
                .open_interest
                .checked_add(long(merged.size))?
                .checked_sub(long(held.size))?
                .checked_sub(long(pos.size))?;
            let pool = market.funding_pool.checked_add(owed)?.checked_add(vault_owed)?;
            let notional = pos.size.notional(market.mark().unwrap_or(Price::ZERO), Round::Ceil)?;
            markets.push((m, oi, pool, notional));
        }
        let cash = account.cash(bucket);
        vault.add_cash(Bucket::Cross, cash)?;
        account.set_cash(bucket, Quote::ZERO);
        if bucket == Bucket::Cross {
            for (asset, amount) in std::mem::take(&mut account.collateral) {
                vault.add_collateral(asset, amount)?;
            }
        } else if let Bucket::Isolated(m) = bucket {
            account.drop_empty_isolated(m);
        }
        let absorbed = h.equity.checked_neg()?.max(Quote::ZERO);
        let totals = self.totals;
        let backstop_absorbed = totals.backstop_absorbed.checked_add(absorbed)?;
        let bad_debt = totals.bad_debt.checked_add(absorbed)?;
        let notional = markets.iter().try_fold(Quote::ZERO, |sum, m| sum.checked_add(m.3))?;
        // Commit.
        self.accounts[a as usize] = account;
        self.accounts[v as usize] = vault;
        self.totals.backstop_absorbed = backstop_absorbed;
        self.totals.bad_debt = bad_debt;
        for (m, oi, pool, notional) in markets {
            let market = &mut self.markets[m as usize];
            market.open_interest = oi;
            market.funding_pool = pool;
            self.count_liquidated(m, notional, self.now, events)?;
        }
        self.touched.push(key(v, Bucket::Cross));
        let (account, isolated) = self.bucket_ids(k);
        events.push(Event::BackstopTakeover {
            account,
            isolated,
            vault: self.account_ids[v as usize].clone(),
            equity: h.equity,
            absorbed,
            notional,
        });
        Ok(())
    }

    // ---- the waterfall ---------------------------------------------------------------------

    /// Cover a bankrupt bucket's deficit: insurance funds first, then deleveraging of winners
    /// position by position (largest requirement first) where the market allows it.
    fn recover(&mut self, k: Key, h: &Health, ranked: &Ranked, events: &mut Vec<Event>) -> Result<(), Reject> {
        let left = self.pay_deficit(k, h.equity.checked_neg()?, self.now, events)?;
        if left.is_zero() {
            return Ok(());
        }
        for &(m, _, _) in ranked {
            if !self.markets[m as usize].params.adl.enabled {
                continue;
            }
            let h = self.health_of_key(k)?;
            if !h.equity.is_negative() {
                break;
            }
            self.deleverage(k, m, &h, events)?;
        }
        Ok(())
    }

    /// Pay up to `deficit` into bucket `k` from its insurance funds (the market's segment for
    /// an isolated bucket, then the global fund), within their caps. Returns what is left.
    fn pay_deficit(&mut self, k: Key, deficit: Quote, ts: u64, events: &mut Vec<Event>) -> Result<Quote, Reject> {
        let (a, bucket) = unkey(k);
        let mut funds: SmallVec<[usize; 2]> = SmallVec::new();
        if let Bucket::Isolated(m) = bucket {
            funds.push(self.fund_of_market(m));
        }
        if !funds.contains(&0) {
            funds.push(0);
        }
        let mut left = deficit;
        for f in funds {
            let pay = self.insurance[f].available(ts)?.min(left);
            if !pay.is_positive() {
                continue;
            }
            let paid = self.totals.insurance_paid.checked_add(pay)?;
            let bad_debt = self.totals.bad_debt.checked_add(pay)?;
            let cash = self.accounts[a as usize].cash(bucket).checked_add(pay)?;
            // Commit.
            self.insurance[f].pay(pay, ts)?;
            self.accounts[a as usize].set_cash(bucket, cash);
            self.totals.insurance_paid = paid;
            self.totals.bad_debt = bad_debt;
            left = left.checked_sub(pay)?;
            let (account, isolated) = self.bucket_ids(k);
            let fund = &self.insurance[f];
            events.push(Event::InsurancePaid {
                fund: fund.id.clone(),
                account,
                isolated,
                amount: pay,
                balance: fund.balance,
            });
        }
        self.touched.push(k);
        Ok(left)
    }

    /// Close the bankrupt position in market `m` against winners on the other side at the
    /// bankruptcy price (dYdX's formula, [`math::bankruptcy_quote`]), chosen and sized by the
    /// market's ADL policy ([`adl::allocate`]). Only what balances the bankrupt position is
    /// executed ([`adl::Allocation::matched`]), so open interest stays balanced; the event
    /// reports what the policy's own rule would have closed and its overshoot.
    fn deleverage(&mut self, k: Key, m: u32, h: &Health, events: &mut Vec<Event>) -> Result<(), Reject> {
        let (a, bucket) = unkey(k);
        let market = &self.markets[m as usize];
        let mark = market.mark().ok_or_else(|| Reject::NoPrice(market.id.to_string()))?;
        let pos = self.accounts[a as usize].position(bucket, m);
        let r = position_risk(market, &pos)?;
        let value = pos.size.value_at(mark, Round::Floor)?;
        let quote = math::bankruptcy_quote(value, h.equity, r.maintenance, h.maintenance)?;
        let price = math::bankruptcy_price(quote, pos.size)?.clamp(Price::from_raw(1), Price::MAX_SUPPORTED);
        let (keys, candidates) = self.adl_candidates(k, m, pos.size, mark)?;
        if candidates.is_empty() {
            return Ok(());
        }
        let params = market.params.adl;
        let needed = pos.size.abs()?;
        let allocation = adl::allocate(&params, &candidates, needed, price, mark)?;
        let mut closed = Size::ZERO;
        for (c, size) in allocation.matched(needed) {
            let (w, _) = unkey(keys[c as usize]);
            let (buyer, seller) = if pos.size.is_positive() { (w, a) } else { (a, w) };
            let trade = self.prepare_trade(m, buyer, seller, size, price, (Quote::ZERO, Quote::ZERO))?;
            let adl_notional = self.totals.adl_notional.checked_add(trade.paid)?;
            self.commit_trade(&trade, &[None, None], events)?;
            self.totals.adl_notional = adl_notional;
            self.count_liquidated(m, trade.paid, self.now, events)?;
            closed = closed.checked_add(size)?;
            events.push(Event::Deleveraged {
                market: self.market_id(m),
                account: self.account_ids[a as usize].clone(),
                counterparty: self.account_ids[w as usize].clone(),
                size,
                price,
            });
        }
        let covered = self.health_of_key(k)?.equity.checked_sub(h.equity)?.max(Quote::ZERO);
        self.totals.adl_covered = self.totals.adl_covered.checked_add(covered)?;
        self.totals.bad_debt = self.totals.bad_debt.checked_add(covered)?;
        events.push(Event::AutoDeleveraged {
            market: self.market_id(m),
            account: self.account_ids[a as usize].clone(),
            policy: params.policy,
            bankruptcy_price: price,
            needed,
            closed,
            policy_closed: allocation.closed,
            overshoot_notional: allocation.overshoot_notional,
            deficit_covered: covered,
        });
        Ok(())
    }

    /// Winners of market `m` against a bankrupt position of size `against`: positions on the
    /// other side with unrealized profit at the mark, with their buckets' health; buckets in
    /// liquidation are not candidates. Returned with their keys, `Candidate::id` = index.
    fn adl_candidates(&self, k: Key, m: u32, against: Size, mark: Price) -> Result<(Vec<Key>, Vec<Candidate>), Reject> {
        let mut keys = Vec::new();
        let mut candidates = Vec::new();
        for hk in self.index.holders(m) {
            let (ha, hb) = unkey(hk);
            let account = &self.accounts[ha as usize];
            let p = account.position(hb, m);
            if hk == k || p.size.is_zero() || p.size.signum() == against.signum() {
                continue;
            }
            let unrealized_pnl = p.unrealized_pnl(mark)?;
            if !unrealized_pnl.is_positive() {
                continue;
            }
            let health = bucket_health(account, hb, self.prices(self.now))?;
            candidates.push(Candidate {
                id: candidates.len() as u32,
                size: p.size,
                // No entry price in range (dust charged a socialized loss): ranked as if
                // entered at the mark rather than stopping the deleveraging.
                entry_price: p.entry_price().unwrap_or(mark).max(Price::from_raw(1)),
                equity: health.equity,
                collateral: account.cash(hb),
                maintenance: health.maintenance,
                unrealized_pnl,
            });
            keys.push(hk);
        }
        Ok((keys, candidates))
    }

    /// Charge the deficit `loss` of the flat bucket `k` to the channel of the market it was
    /// last liquidated in (DESIGN §3), split by the largest-remainder method so the parts sum
    /// exactly to the loss. A channel with no payers falls back to open interest, then to
    /// depositors; depositors pay at most their balances, and what no one can pay stays on the
    /// account as `unresolved`.
    fn socialize(&mut self, k: Key, loss: Quote, events: &mut Vec<Event>) -> Result<(), Reject> {
        let (a, bucket) = unkey(k);
        let market = match bucket {
            Bucket::Isolated(m) => Some(m),
            Bucket::Cross => self.liquidations.get(&k).and_then(|l| l.markets.last()).map(|(m, _)| *m),
        };
        let preferred = market.map_or(SocialChannel::Depositors, |m| self.markets[m as usize].params.socialized_loss);
        let mut chosen = (preferred, Vec::new());
        for channel in [preferred, SocialChannel::OpenInterest, SocialChannel::Depositors] {
            let payers = self.payers(channel, market, k)?;
            if !payers.is_empty() {
                chosen = (channel, payers);
                break;
            }
        }
        let (channel, payers) = chosen;
        if payers.is_empty() {
            return Ok(());
        }
        let capacity = match channel {
            SocialChannel::Depositors => {
                payers.iter().try_fold(Quote::ZERO, |s, &(_, w)| s.checked_add(Quote::from_raw(w)))?
            }
            _ => loss,
        };
        let charged = loss.min(capacity);
        let weights: Vec<(u32, i128)> = payers.iter().enumerate().map(|(i, &(_, w))| (i as u32, w)).collect();
        let parts = adl::largest_remainder(charged.raw(), &weights)?;
        // Each payer's new cash (depositors) or new position cash leg, computed before any
        // write; payers are buckets other than the bankrupt one, each listed once.
        let mut charges = Vec::with_capacity(parts.len());
        for (i, part) in parts {
            let (pk, _) = payers[i as usize];
            let (pa, pb) = unkey(pk);
            let payer = &self.accounts[pa as usize];
            let part = Quote::from_raw(part);
            let charge = match (channel, market) {
                (SocialChannel::Depositors, _) | (_, None) => Charge::Cash(payer.cash(pb).checked_sub(part)?),
                (_, Some(m)) => {
                    let mut pos = payer.position(pb, m);
                    pos.quote = pos.quote.checked_sub(part)?;
                    Charge::Position(m, pos)
                }
            };
            charges.push((pk, charge, part));
        }
        let cash = self.accounts[a as usize].cash(bucket).checked_add(charged)?;
        let socialized = self.totals.socialized_loss.checked_add(charged)?;
        let bad_debt = self.totals.bad_debt.checked_add(charged)?;
        // Commit.
        self.accounts[a as usize].set_cash(bucket, cash);
        self.totals.socialized_loss = socialized;
        self.totals.bad_debt = bad_debt;
        let (account, isolated) = self.bucket_ids(k);
        events.push(Event::SocializedLoss {
            market: market.map(|m| self.market_id(m)),
            account,
            isolated,
            channel,
            amount: charged,
            payers: charges.len() as u32,
            unresolved: loss.checked_sub(charged)?,
        });
        for (pk, charge, amount) in charges {
            let (pa, pb) = unkey(pk);
            let payer = &mut self.accounts[pa as usize];
            match charge {
                Charge::Cash(c) => payer.set_cash(pb, c),
                Charge::Position(m, pos) => payer.set_position(pb, m, pos),
            }
            self.touched.push(pk);
            if amount.is_positive() {
                let (account, isolated) = self.bucket_ids(pk);
                events.push(Event::LossCharged { account, isolated, amount });
            }
        }
        Ok(())
    }

    /// Who pays through `channel`, with their weights (raw units), sorted by key. The bankrupt
    /// account pays nothing for itself (an isolated loss never reaches its other buckets).
    fn payers(&self, channel: SocialChannel, market: Option<u32>, bankrupt: Key) -> Result<Vec<(Key, i128)>, Reject> {
        let except = unkey(bankrupt).0;
        let mut payers = Vec::new();
        match (channel, market) {
            (SocialChannel::Depositors, _) => {
                for (a, account) in self.accounts.iter().enumerate() {
                    if a as u32 != except && account.cash.is_positive() {
                        payers.push((key(a as u32, Bucket::Cross), account.cash.raw()));
                    }
                }
            }
            (_, None) => {}
            (channel, Some(m)) => {
                let mark = self.markets[m as usize].mark().unwrap_or(Price::ZERO);
                for hk in self.index.holders(m) {
                    let (ha, hb) = unkey(hk);
                    let p = self.accounts[ha as usize].position(hb, m);
                    if ha == except || p.size.is_zero() {
                        continue;
                    }
                    let weight = match channel {
                        SocialChannel::Winners => p.unrealized_pnl(mark)?.raw(),
                        _ => p.size.abs()?.raw(),
                    };
                    if weight > 0 {
                        payers.push((hk, weight));
                    }
                }
            }
        }
        Ok(payers)
    }

    // ---- helpers ---------------------------------------------------------------------------

    /// Count `notional` liquidated in market `m`: the totals, and the market's liquidation-volume
    /// breaker.
    fn count_liquidated(&mut self, m: u32, notional: Quote, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        self.totals.liquidated_notional = self.totals.liquidated_notional.checked_add(notional)?;
        let id = self.market_id(m);
        self.record_liquidation(&id, notional, ts, events)
    }

    pub(super) fn fund_idx(&self, id: &str) -> Result<usize, Reject> {
        self.insurance.iter().position(|f| &*f.id == id).ok_or_else(|| Reject::UnknownFund(id.to_string()))
    }

    /// The fund that receives market `m`'s fees and pays first for its isolated positions.
    pub(super) fn fund_of_market(&self, m: u32) -> usize {
        self.markets[m as usize].params.insurance_segment.as_deref().and_then(|s| self.fund_idx(s).ok()).unwrap_or(0)
    }

    /// The backstop vault keeps everything in its cross book (see [`Engine::set_backstop`]).
    pub(super) fn check_not_vault(&self, account: &str) -> Result<(), Reject> {
        match self.backstop {
            Some(b) if &*self.account_ids[b.account as usize] == account => Err(Reject::Conflict(format!(
                "account '{account}' is the backstop vault; it holds no isolated positions"
            ))),
            _ => Ok(()),
        }
    }

    /// Check that `create_market` names an existing insurance segment.
    pub(super) fn check_segment(&self, segment: Option<&str>) -> Result<(), Reject> {
        segment.map_or(Ok(()), |s| self.fund_idx(s).map(|_| ()))
    }

    /// The vault's capital after a USDC deposit (`delta` > 0) or withdrawal by account `slot`,
    /// when that account is the vault.
    pub(super) fn vault_capital_after(&self, slot: Option<u32>, delta: Quote) -> Result<Option<Quote>, Reject> {
        match self.backstop {
            Some(b) if slot == Some(b.account) => Ok(Some(b.capital.checked_add(delta)?)),
            _ => Ok(None),
        }
    }

    pub(super) fn set_vault_capital(&mut self, capital: Option<Quote>) {
        if let (Some(b), Some(c)) = (&mut self.backstop, capital) {
            b.capital = c;
        }
    }

    /// The account id and, for an isolated bucket, its market id.
    fn bucket_ids(&self, k: Key) -> (Id, Option<Id>) {
        let (a, bucket) = unkey(k);
        let isolated = match bucket {
            Bucket::Isolated(m) => Some(self.market_id(m)),
            Bucket::Cross => None,
        };
        (self.account_ids[a as usize].clone(), isolated)
    }
}

/// What a socialized loss writes into one payer bucket.
enum Charge {
    Cash(Quote),
    Position(u32, Position),
}

/// The liquidated side of a liquidation fill.
struct LiquidatedSide {
    key: Key,
    order: Order,
    bankruptcy_quote: Quote,
    /// Positive: the fund's fee; negative: what the fund must pay.
    insurance_delta: Quote,
}

/// Positions largest maintenance requirement first, ties by market.
fn rank(risks: &mut Ranked) {
    risks.sort_by(|x, y| y.2.maintenance.cmp(&x.2.maintenance).then(x.0.cmp(&y.0)));
}

/// `⌊equity × 2^32 / maintenance⌋`, saturated; a bucket with no requirement sorts first when
/// its equity is negative, last otherwise. Monotone in the exact ratio.
fn scaled_ratio(h: &Health) -> i128 {
    let (e, m) = (h.equity.raw(), h.maintenance.raw());
    if m <= 0 {
        return if e < 0 { i128::MIN } else { i128::MAX };
    }
    match e.checked_mul(1 << 32) {
        Some(x) => x.div_euclid(m),
        // A product beyond 2^127: exactly in 256 bits, clamped (still monotone).
        None => {
            let q = (I256::from(e) << 32u32).div_euclid(I256::from(m));
            q.clamp(I256::from(i128::MIN), I256::from(i128::MAX)).as_i128()
        }
    }
}

/// `equity_a × maintenance_b` against `equity_b × maintenance_a` in 128 bits, when all four
/// fit in 64 (the common case; `None` otherwise).
fn cross_i128(a: &Health, b: &Health) -> Option<Ordering> {
    let n = |q: Quote| i64::try_from(q.raw()).ok().map(i128::from);
    Some((n(a.equity)? * n(b.maintenance)?).cmp(&(n(b.equity)? * n(a.maintenance)?)))
}

/// The first 16 bytes of an id, zero-padded, as a big-endian number: ids hold no zero bytes, so
/// these order like the ids wherever they differ.
fn id_prefix(id: &Id) -> u128 {
    let mut bytes = [0u8; 16];
    let n = id.len().min(16);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// Most underwater first: `equity / maintenance` ascending, compared exactly. A bucket with no
/// requirement and negative equity counts as the most underwater.
fn more_underwater(a: &Health, b: &Health) -> Ordering {
    let ratio = |h: &Health| (I256::from(h.equity.raw()), I256::from(h.maintenance.raw()));
    let ((ea, ma), (eb, mb)) = (ratio(a), ratio(b));
    match (ma == 0, mb == 0) {
        (false, false) => match cross_i128(a, b) {
            Some(order) => order,
            None => (ea * mb).cmp(&(eb * ma)),
        },
        (true, true) => ea.cmp(&eb),
        (true, false) => {
            if ea < 0 {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (false, true) => {
            if eb < 0 {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
    }
}

#[cfg(test)]
mod tests;
