//! The engine: state plus one handler per command.
//!
//! Every handler first computes the complete outcome on copies and checks every rule, and only
//! then writes it back, so a rejected command leaves the state bit-for-bit unchanged. Time only
//! comes from the commands' `ts`.

use crate::account::{Account, Bucket, Position};
use crate::asset::{Asset, AssetParams, SETTLEMENT};
use crate::command::{
    Command, Deposit, Fill, Funding, OraclePrice, Side, TimedCommand, TransferMargin, TransferTo, Withdraw,
};
use crate::detection::{key, Key, Term, TriggerIndex};
use crate::error::Reject;
use crate::event::{Event, Id};
use crate::funding::premium;
use crate::governance::Governance;
use crate::health::{bucket_health, bucket_health_each, Health, Patch, Prices};
use crate::insurance::{FundParams, InsuranceFund, GLOBAL};
use crate::market::{Market, MarketParams};
use crate::num::{FundingIndex, Price, Quote, Size};
use crate::oracle::{Action, Validity};
use crate::withdrawal::Withdrawals;
use ids::AccountIndex;
use recovery::Scratch;
pub use recovery::{Backstop, Liquidation, Order, Pacing};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// Totals of the settlement asset that entered and left the engine, and of what the recovery
/// waterfall absorbed. `bad_debt` is the sum of the four channels after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub deposits: Quote,
    pub withdrawals: Quote,
    pub bad_debt: Quote,
    pub insurance_paid: Quote,
    pub backstop_absorbed: Quote,
    pub adl_covered: Quote,
    pub socialized_loss: Quote,
    /// Notional closed by liquidation (book fills, liquidators, deleveraging of the bankrupt
    /// side) and taken over by the backstop vault, at the prices it moved at.
    pub liquidated_notional: Quote,
    pub adl_notional: Quote,
}

/// The whole engine state. Everything that decides an outcome is in here; the id lookup map
/// is derived (rebuilt on load) and never iterated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Engine {
    seq: u64,
    now: u64,
    assets: Vec<Asset>,
    markets: Vec<Market>,
    account_ids: Vec<Id>,
    accounts: Vec<Account>,
    fee_pool: Quote,
    totals: Totals,
    /// Insurance funds; the first is the global one.
    insurance: Vec<InsuranceFund>,
    backstop: Option<Backstop>,
    /// Buckets in liquidation, by [`detection::Key`].
    liquidations: BTreeMap<Key, Liquidation>,
    /// Id of the next liquidation order.
    next_order: u64,
    withdrawals: Withdrawals,
    governance: Governance,
    #[serde(skip)]
    account_index: AccountIndex,
    #[serde(skip)]
    index: TriggerIndex,
    /// Buckets changed by the current command, to re-file or re-check after it.
    #[serde(skip)]
    touched: Vec<Key>,
    /// The mark (per market) and price (per asset) the index was last stepped at.
    #[serde(skip)]
    stepped_marks: Vec<Option<Price>>,
    #[serde(skip)]
    stepped_assets: Vec<Option<Price>>,
    /// No liquidation has a deadline (`Liquidation::deadline`) before this: a command that
    /// moves neither prices nor time looks for due liquidations only once it is reached,
    /// instead of walking them all (0 after loading: the first command walks and resets it).
    #[serde(skip)]
    deadline_floor: u64,
    #[serde(skip)]
    scratch: Scratch,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            seq: 0,
            now: 0,
            assets: Vec::new(),
            markets: Vec::new(),
            account_ids: Vec::new(),
            accounts: Vec::new(),
            fee_pool: Quote::ZERO,
            totals: Totals::default(),
            insurance: vec![InsuranceFund::new(Id::from(GLOBAL), FundParams::default())],
            backstop: None,
            liquidations: BTreeMap::new(),
            next_order: 1,
            withdrawals: Withdrawals::default(),
            governance: Governance::default(),
            account_index: AccountIndex::default(),
            index: TriggerIndex::default(),
            touched: Vec::new(),
            stepped_marks: Vec::new(),
            stepped_assets: Vec::new(),
            deadline_floor: 0,
            scratch: Scratch::default(),
        }
    }
}

/// The persisted part of an engine: what a snapshot holds and the state hash covers, copied
/// without the derived indexes (id lookup, liquidation detection), which loading rebuilds and
/// a snapshot never needs (they are about a quarter of a full clone at 10⁶ accounts). A
/// snapshot written on another thread is made from this. It serializes exactly like the
/// engine, and can be hashed, but not applied to.
#[derive(Debug)]
pub struct Persisted(Engine);

impl Persisted {
    /// [`Engine::state_hash`] of the engine it was copied from.
    pub fn state_hash(&self) -> String {
        self.0.state_hash()
    }
}

impl Serialize for Persisted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Engine {
    /// A copy of the persisted state (see [`Persisted`]).
    pub fn persisted(&self) -> Persisted {
        // Exhaustive, so that a new field has to be sorted here into copied or derived.
        let Engine {
            seq,
            now,
            assets,
            markets,
            account_ids,
            accounts,
            fee_pool,
            totals,
            insurance,
            backstop,
            liquidations,
            next_order,
            withdrawals,
            governance,
            account_index: _,
            index: _,
            touched: _,
            stepped_marks: _,
            stepped_assets: _,
            deadline_floor: _,
            scratch: _,
        } = self;
        Persisted(Engine {
            seq: *seq,
            now: *now,
            assets: assets.clone(),
            markets: markets.clone(),
            account_ids: account_ids.clone(),
            accounts: accounts.clone(),
            fee_pool: *fee_pool,
            totals: *totals,
            insurance: insurance.clone(),
            backstop: *backstop,
            liquidations: liquidations.clone(),
            next_order: *next_order,
            withdrawals: withdrawals.clone(),
            governance: governance.clone(),
            ..Engine::default()
        })
    }
}

/// A trade computed without touching the accounts (see [`Engine::prepare_trade`]).
struct Trade {
    market: u32,
    size: Size,
    price: Price,
    /// What the buyer pays; the seller receives `paid − rounding`.
    paid: Quote,
    rounding: Quote,
    open_interest: Size,
    funding_pool: Quote,
    buy: Leg,
    sell: Leg,
}

/// The outcome of a fill for one side, computed without touching the account.
struct Leg {
    account: u32,
    bucket: Bucket,
    before: Position,
    /// The new position and the change of the bucket's cash.
    patch: Patch,
    /// The bucket's cash after the fill (checked when the leg is computed).
    cash_after: Quote,
    realized: Quote,
    funding_paid: Quote,
    fee: Quote,
}

/// What a passed margin check saw of one side after the trade: the bucket's health and risk
/// terms, at the prices the commit leaves in place — enough to re-file the bucket in the
/// detection index without computing its health again (see [`Engine::commit_trade`]).
struct Checked {
    health: Health,
    terms: SmallVec<[Term; 2]>,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of accepted commands so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The `ts` of the last accepted command.
    pub fn now(&self) -> u64 {
        self.now
    }
    pub fn markets(&self) -> &[Market] {
        &self.markets
    }
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }
    pub fn fee_pool(&self) -> Quote {
        self.fee_pool
    }
    pub fn totals(&self) -> Totals {
        self.totals
    }
    pub fn withdrawals(&self) -> &Withdrawals {
        &self.withdrawals
    }
    pub fn governance(&self) -> &Governance {
        &self.governance
    }
    /// Accounts with their ids, in creation order.
    pub fn accounts(&self) -> impl ExactSizeIterator<Item = (&Id, &Account)> {
        self.account_ids.iter().zip(&self.accounts)
    }
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.account_index.get(&self.account_ids, id).map(|i| &self.accounts[i as usize])
    }
    pub fn market(&self, id: &str) -> Option<&Market> {
        self.markets.iter().find(|m| &*m.id == id)
    }

    /// The markets and assets with their prices, judged at `now`.
    pub fn prices(&self, now: u64) -> Prices<'_> {
        Prices { markets: &self.markets, assets: &self.assets, now }
    }

    /// Health of one bucket of an account at the current time.
    pub fn health(&self, account: &Account, bucket: Bucket) -> Result<Health, Reject> {
        bucket_health(account, bucket, self.prices(self.now))
    }

    /// Rebuild the derived lookup map after deserializing a snapshot.
    pub fn rebuild_index(&mut self) {
        self.account_index = AccountIndex::build(&self.account_ids);
        self.rebuild_detection();
    }

    /// Apply one command. On success its events are appended to `events`; on rejection
    /// nothing changes (state or `events`) and the reason is returned.
    pub fn apply(&mut self, cmd: &TimedCommand, events: &mut Vec<Event>) -> Result<(), Reject> {
        if cmd.ts < self.now {
            return Err(Reject::TimeWentBackwards { ts: cmd.ts, last: self.now });
        }
        let mark = events.len();
        let ts = cmd.ts;
        // Validity is a function of the feeds and the time: only a new time or a new price can
        // change it.
        let validity_may_change = ts != self.now || matches!(cmd.cmd, Command::Oracle(_));
        let result = match &cmd.cmd {
            Command::CreateAsset { asset, params } => self.create_asset(asset, params, events),
            Command::CreateMarket { market, params } => self.create_market(market, params, events),
            Command::Deposit(d) => self.deposit(d, events),
            Command::Withdraw(w) => self.withdraw(w, ts, events),
            Command::TransferMargin(t) => self.transfer_margin(t, ts, events),
            Command::Oracle(o) => self.oracle(o, ts, events),
            Command::Fill(f) => self.fill(f, ts, events),
            Command::Funding(f) => self.funding(f, ts, events),
            Command::Tick => Ok(()),
            Command::Liquidate(l) => self.liquidate(l, ts, events),
            Command::CreateInsuranceFund { fund, params } => self.create_insurance_fund(fund, params, events),
            Command::FundInsurance { fund, amount } => self.fund_insurance(fund, *amount, events),
            Command::SetBackstop { account, loss_cap } => self.set_backstop(account, *loss_cap, events),
            Command::SettleMarket(s) => self.settle_market(s, events),
            Command::ConfigureWithdrawals(p) => self.configure_withdrawals(p, events),
            Command::RequestWithdrawal(r) => self.request_withdrawal(r, ts, events),
            Command::CancelWithdrawal(c) => self.cancel_withdrawal(c, events),
            Command::InitGovernance(g) => self.init_governance(&g.council, events),
            Command::Propose(p) => self.propose(p, ts, events),
            Command::Approve(a) => self.approve(a, ts, events),
            Command::Execute(e) => self.execute_proposal(e, ts, events),
            Command::Cancel(c) => self.cancel(c, events),
            Command::Guardian(g) => self.guardian(g, ts, events),
        };
        match result {
            Ok(()) => {
                self.now = ts;
                self.seq += 1;
                if validity_may_change {
                    self.report_validity_changes(events);
                }
                let moves_prices_or_time = matches!(cmd.cmd, Command::Oracle(_) | Command::Funding(_) | Command::Tick);
                self.detect_and_liquidate(moves_prices_or_time, events);
                self.evaluate_breakers(events);
                self.execute_due_withdrawals(events);
                Ok(())
            }
            Err(e) => {
                events.truncate(mark);
                self.touched.clear();
                Err(e)
            }
        }
    }

    // ---- lookups -------------------------------------------------------------------------

    fn market_idx(&self, id: &str) -> Result<u32, Reject> {
        self.markets
            .iter()
            .position(|m| &*m.id == id)
            .map(|i| i as u32)
            .ok_or_else(|| Reject::UnknownMarket(id.to_string()))
    }

    fn asset_idx(&self, id: &str) -> Result<u32, Reject> {
        self.assets
            .iter()
            .position(|a| &*a.id == id)
            .map(|i| i as u32)
            .ok_or_else(|| Reject::UnknownAsset(id.to_string()))
    }

    pub(crate) fn account_idx(&self, id: &str) -> Result<u32, Reject> {
        self.account_index.get(&self.account_ids, id).ok_or_else(|| Reject::UnknownAccount(id.to_string()))
    }

    fn market_id(&self, m: u32) -> Id {
        self.markets[m as usize].id.clone()
    }

    /// The account's slot, creating it (unsaved until the caller writes back) if new.
    fn account_or_new(&self, id: &str) -> Result<(Option<u32>, Account), Reject> {
        match self.account_index.get(&self.account_ids, id) {
            Some(i) => Ok((Some(i), self.accounts[i as usize].clone())),
            None => {
                valid_id(id)?;
                Ok((None, Account::default()))
            }
        }
    }

    /// Make room for `additional` new accounts: a caller that creates many at once (the stress
    /// lab opening a book of a million) then does not grow the account tables step by step,
    /// copying them and rehashing the id map each time. Capacity only; the state is unchanged.
    pub fn reserve_accounts(&mut self, additional: usize) {
        self.accounts.reserve(additional);
        self.account_ids.reserve(additional);
        self.account_index.reserve(&self.account_ids, additional);
        self.index.reserve_accounts(self.accounts.len().saturating_add(additional));
    }

    /// Writes the account back to its slot, or files it as new; returns its slot and id.
    fn store_account(&mut self, slot: Option<u32>, id: &str, account: Account) -> (u32, Id) {
        match slot {
            Some(i) => {
                self.accounts[i as usize] = account;
                (i, self.account_ids[i as usize].clone())
            }
            None => {
                let i = self.accounts.len() as u32;
                self.account_ids.push(Id::from(id));
                self.account_index.insert(&self.account_ids, i);
                self.accounts.push(account);
                (i, self.account_ids[i as usize].clone())
            }
        }
    }

    fn health_of(&self, account: &Account, bucket: Bucket, ts: u64) -> Result<Health, Reject> {
        bucket_health(account, bucket, self.prices(ts))
    }

    /// A risk-increasing change (withdrawal, transfer out) must leave `bucket` at or above its
    /// initial requirement, with oracles valid for risk-increasing actions.
    fn require_initial(&self, id: &str, account: &Account, bucket: Bucket, ts: u64) -> Result<(), Reject> {
        let h = bucket_health_each(account, bucket, None, Some(Action::IncreaseRisk), self.prices(ts), |_, _, _| {})?;
        if h.meets_initial() {
            return Ok(());
        }
        Err(Reject::InsufficientMargin {
            account: id.to_string(),
            equity: h.initial_equity.to_string(),
            requirement: h.initial.to_string(),
            where_: self.bucket_label(bucket),
        })
    }

    fn bucket_label(&self, bucket: Bucket) -> String {
        match bucket {
            Bucket::Cross => " (cross)".to_string(),
            Bucket::Isolated(m) => format!(" (isolated {})", self.markets[m as usize].id),
        }
    }

    // ---- listing -------------------------------------------------------------------------

    fn create_asset(&mut self, id: &str, params: &AssetParams, events: &mut Vec<Event>) -> Result<(), Reject> {
        valid_id(id)?;
        if id == SETTLEMENT || self.asset_idx(id).is_ok() {
            return Err(Reject::AlreadyExists { kind: "asset", id: id.to_string() });
        }
        params.validate()?;
        let asset = Asset::new(Id::from(id), params.clone());
        events.push(Event::AssetCreated { asset: asset.id.clone() });
        self.assets.push(asset);
        Ok(())
    }

    fn create_market(&mut self, id: &str, params: &MarketParams, events: &mut Vec<Event>) -> Result<(), Reject> {
        valid_id(id)?;
        if self.market_idx(id).is_ok() {
            return Err(Reject::AlreadyExists { kind: "market", id: id.to_string() });
        }
        let tiers = params.validate()?;
        self.check_segment(params.insurance_segment.as_deref())?;
        let market = Market::new(Id::from(id), params.clone(), tiers);
        events.push(Event::MarketCreated { market: market.id.clone() });
        self.markets.push(market);
        Ok(())
    }

    // ---- collateral ----------------------------------------------------------------------

    /// Deposits need no margin check; USDC may go to an isolated position's collateral, any
    /// other asset only to the cross book, within the asset's deposit cap.
    fn deposit(&mut self, d: &Deposit, events: &mut Vec<Event>) -> Result<(), Reject> {
        positive("amount", d.amount)?;
        let (slot, mut account) = self.account_or_new(&d.account)?;
        let (total, balance, bucket, usdc) = if d.asset == SETTLEMENT {
            let amount = usdc_amount(d.amount)?;
            let bucket = match &d.isolated {
                Some(market) => {
                    self.check_not_vault(&d.account)?;
                    let m = self.market_idx(market)?;
                    if account.cross_position(m).is_some() {
                        return Err(cross_position_conflict(&d.account, market));
                    }
                    Bucket::Isolated(m)
                }
                None => Bucket::Cross,
            };
            account.add_cash(bucket, amount)?;
            let total = Total::Settlement(self.totals.deposits.checked_add(amount)?);
            (total, account.cash(bucket).to_amount()?, bucket, amount)
        } else {
            let a = self.asset_idx(&d.asset)?;
            if d.isolated.is_some() {
                return Err(Reject::Conflict("isolated collateral must be USDC".into()));
            }
            let asset = &self.assets[a as usize];
            let held = asset.deposits.checked_sub(asset.withdrawals)?;
            if let Some(cap) = asset.params.deposit_cap.filter(|cap| held.checked_add(d.amount).is_ok_and(|t| t > *cap))
            {
                return Err(Reject::DepositCap {
                    asset: d.asset.clone(),
                    cap: cap.to_string(),
                    deposited: held.to_string(),
                    requested: d.amount.to_string(),
                });
            }
            account.add_collateral(a, d.amount)?;
            (Total::Asset(a, asset.deposits.checked_add(d.amount)?), account.collateral(a), Bucket::Cross, Quote::ZERO)
        };
        let vault_capital = self.vault_capital_after(slot, usdc)?;
        // Commit.
        let asset = self.commit_total(total, |t| &mut t.deposits, |a| &mut a.deposits);
        let isolated = d.isolated.as_deref().map(Id::from);
        let (slot, account) = self.store_account(slot, &d.account, account);
        self.set_vault_capital(vault_capital);
        // USDC only adds to the bucket's buffer, and no risk term: the triggers it has filed
        // still fire no later than its new bounds (detection.rs). Only a bucket in liquidation,
        // which the deposit may bring back, needs a look; another asset adds a term.
        let k = key(slot, bucket);
        if usdc.is_zero() || self.liquidations.contains_key(&k) {
            self.touched.push(k);
        }
        events.push(Event::Deposited { account, asset, amount: d.amount, isolated, balance });
        Ok(())
    }

    /// A withdrawal may not overdraw the balance and must leave the bucket above its initial
    /// requirement (a withdrawal increases risk). This is the immediate path: closed while the
    /// withdrawal gate is, and for USDC only while no withdrawal limits are configured
    /// (`engine/withdrawals.rs`).
    fn withdraw(&mut self, w: &Withdraw, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        self.check_immediate_withdrawal(w, ts)?;
        positive("amount", w.amount)?;
        let i = self.account_idx(&w.account)?;
        let mut account = self.accounts[i as usize].clone();
        let (total, bucket, balance, usdc) = if w.asset == SETTLEMENT {
            let amount = usdc_amount(w.amount)?;
            let bucket = match &w.isolated {
                Some(market) => Bucket::Isolated(self.isolated_bucket(&w.account, &account, market)?),
                None => Bucket::Cross,
            };
            let available = account.cash(bucket);
            if amount > available {
                return Err(insufficient(SETTLEMENT, available, amount));
            }
            account.add_cash(bucket, amount.checked_neg()?)?;
            let total = Total::Settlement(self.totals.withdrawals.checked_add(amount)?);
            (total, bucket, account.cash(bucket).to_amount()?, amount)
        } else {
            let a = self.asset_idx(&w.asset)?;
            if w.isolated.is_some() {
                return Err(Reject::Conflict("isolated collateral is always USDC".into()));
            }
            let available = account.collateral(a);
            if w.amount > available {
                return Err(insufficient(&w.asset, available, w.amount));
            }
            account.add_collateral(a, w.amount.checked_neg()?)?;
            let total = Total::Asset(a, self.assets[a as usize].withdrawals.checked_add(w.amount)?);
            (total, Bucket::Cross, account.collateral(a), Quote::ZERO)
        };
        self.require_initial(&w.account, &account, bucket, ts)?;
        let vault_capital = self.vault_capital_after(Some(i), usdc.checked_neg()?)?;
        // Commit.
        let asset = self.commit_total(total, |t| &mut t.withdrawals, |a| &mut a.withdrawals);
        if let Bucket::Isolated(m) = bucket {
            account.drop_empty_isolated(m);
        }
        self.accounts[i as usize] = account;
        self.set_vault_capital(vault_capital);
        self.touched.push(key(i, bucket));
        let isolated = w.isolated.as_deref().map(Id::from);
        let account = self.account_ids[i as usize].clone();
        events.push(Event::Withdrawn { account, asset, amount: w.amount, isolated, balance });
        Ok(())
    }

    /// Write a new running total (deposits or withdrawals) and return the asset's id.
    fn commit_total(
        &mut self,
        total: Total,
        settlement: impl FnOnce(&mut Totals) -> &mut Quote,
        asset: impl FnOnce(&mut Asset) -> &mut Size,
    ) -> Id {
        match total {
            Total::Settlement(v) => {
                *settlement(&mut self.totals) = v;
                Id::from(SETTLEMENT)
            }
            Total::Asset(a, v) => {
                let a = &mut self.assets[a as usize];
                *asset(a) = v;
                a.id.clone()
            }
        }
    }

    fn isolated_bucket(&self, id: &str, account: &Account, market: &str) -> Result<u32, Reject> {
        let m = self.market_idx(market)?;
        match account.isolated(m) {
            Some(_) => Ok(m),
            None => Err(Reject::Conflict(format!("account '{id}' has no isolated collateral in {market}"))),
        }
    }

    /// Moving USDC out of a bucket is risk-increasing for that bucket: it must stay above its
    /// initial requirement. The receiving bucket only gets safer.
    fn transfer_margin(&mut self, t: &TransferMargin, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        positive("amount", t.amount)?;
        let amount = usdc_amount(t.amount)?;
        let m = self.market_idx(&t.market)?;
        let i = self.account_idx(&t.account)?;
        let mut account = self.accounts[i as usize].clone();
        let (from, to) = match t.to {
            TransferTo::Isolated => {
                self.check_not_vault(&t.account)?;
                if account.cross_position(m).is_some() {
                    return Err(cross_position_conflict(&t.account, &t.market));
                }
                (Bucket::Cross, Bucket::Isolated(m))
            }
            TransferTo::Cross => {
                (Bucket::Isolated(self.isolated_bucket(&t.account, &account, &t.market)?), Bucket::Cross)
            }
        };
        let available = account.cash(from);
        if amount > available {
            return Err(insufficient(SETTLEMENT, available, amount));
        }
        account.add_cash(from, amount.checked_neg()?)?;
        account.add_cash(to, amount)?;
        self.require_initial(&t.account, &account, from, ts)?;
        // Commit.
        let (cross_cash, isolated_margin) = (account.cash, account.cash(Bucket::Isolated(m)));
        account.drop_empty_isolated(m);
        self.accounts[i as usize] = account;
        self.touched.extend([key(i, from), key(i, to)]);
        events.push(Event::MarginTransferred {
            account: self.account_ids[i as usize].clone(),
            market: self.market_id(m),
            amount,
            to: t.to,
            cross_cash,
            isolated_margin,
        });
        Ok(())
    }

    // ---- prices --------------------------------------------------------------------------

    /// A source price for a market or a collateral asset; the market's volatility margin
    /// follows its aggregate price.
    fn oracle(&mut self, o: &OraclePrice, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        price_in_range(o.price)?;
        let publish_ts = o.publish_ts.unwrap_or(ts);
        let source = Id::from(o.source.as_str());
        match (&o.market, &o.asset) {
            (Some(market), None) => {
                let m = self.market_idx(market)? as usize;
                let market = &mut self.markets[m];
                // `submit` is atomic: on a rejection the feed is unchanged.
                let up = market.feed.submit(&market.params.oracle, &o.source, o.price, publish_ts, ts)?;
                let old_fraction = market.vol.fraction;
                if let Some(p) = &market.params.volatility_margin {
                    // Fails only for a non-positive price; an accepted aggregate is positive.
                    market.vol = market.vol.next(p, up.price, ts).expect("an accepted aggregate price is positive");
                }
                let vol = market.vol;
                events.push(Event::OracleUpdated {
                    market: Some(market.id.clone()),
                    asset: None,
                    source,
                    source_price: o.price,
                    price: up.price,
                    mark: market.mark(),
                    fresh_sources: up.fresh_sources,
                    validity: up.validity,
                });
                if vol.fraction > old_fraction {
                    // A higher maintenance fraction shrinks every holder's buffer.
                    self.touched.extend(self.index.holders(m as u32));
                }
                let market = &self.markets[m];
                if vol.fraction != old_fraction {
                    events.push(Event::VolatilityMarginChanged {
                        market: market.id.clone(),
                        from: old_fraction,
                        to: vol.fraction,
                    });
                }
            }
            (None, Some(asset)) => {
                let a = self.asset_idx(asset)? as usize;
                let asset = &mut self.assets[a];
                let up = asset.feed.submit(&asset.params.oracle, &o.source, o.price, publish_ts, ts)?;
                events.push(Event::OracleUpdated {
                    market: None,
                    asset: Some(asset.id.clone()),
                    source,
                    source_price: o.price,
                    price: up.price,
                    mark: None,
                    fresh_sources: up.fresh_sources,
                    validity: up.validity,
                });
            }
            _ => return Err(Reject::Conflict("an oracle command names exactly one of \"market\" or \"asset\"".into())),
        }
        Ok(())
    }

    /// Announce every oracle whose validity changed since it was last announced.
    fn report_validity_changes(&mut self, events: &mut Vec<Event>) {
        let now = self.now;
        for market in &mut self.markets {
            let v = market.validity(now);
            if v != market.reported_validity {
                events.push(Event::OracleValidityChanged {
                    market: Some(market.id.clone()),
                    asset: None,
                    from: market.reported_validity,
                    to: v,
                });
                market.reported_validity = v;
            }
        }
        for asset in &mut self.assets {
            let v = asset.feed.validity(&asset.params.oracle, now);
            if v != asset.reported_validity {
                events.push(Event::OracleValidityChanged {
                    market: None,
                    asset: Some(asset.id.clone()),
                    from: asset.reported_validity,
                    to: v,
                });
                asset.reported_validity = v;
            }
        }
    }

    // ---- trading -------------------------------------------------------------------------

    /// A fill moves `notional` from the buyer's position to the seller's. Each side either ends
    /// at or above its initial requirement, or — when it does not — the fill must reduce its
    /// risk without worsening its health (dYdX's rule for undercollateralized accounts).
    /// Risk-increasing sides need a fully valid oracle; risk-reducing sides never do.
    /// A fill with `"liquidation": true` fills engine liquidation orders instead (see
    /// [`Engine::liquidation_fill`]).
    fn fill(&mut self, f: &Fill, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        positive("size", f.size)?;
        price_in_range(f.price)?;
        if f.buyer == f.seller {
            return Err(Reject::SelfTrade(f.buyer.clone()));
        }
        let m = self.market_idx(&f.market)?;
        let bi = self.account_idx(&f.buyer)?;
        let si = self.account_idx(&f.seller)?;
        let market = &self.markets[m as usize];
        if market.mark().is_none() {
            return Err(Reject::NoPrice(f.market.clone()));
        }
        if f.liquidation {
            return self.liquidation_fill(f, m, bi, si, ts, events);
        }
        let (maker, taker) = (market.params.maker_fee, market.params.taker_fee);
        let (buyer_rate, seller_rate) = match f.taker {
            Side::Buyer => (taker, maker),
            Side::Seller => (maker, taker),
        };
        let paid = f.size.notional(f.price, crate::num::Round::Ceil)?;
        let fees = (paid.mul_ratio_ceil(buyer_rate)?, paid.mul_ratio_ceil(seller_rate)?);
        let trade = self.prepare_trade(m, bi, si, f.size, f.price, fees)?;
        self.check_fill_breakers(m, f, [&trade.buy, &trade.sell], trade.open_interest, ts)?;
        let mut checked = [None, None];
        self.check_trade(&trade, [Some(f.buyer.as_str()), Some(f.seller.as_str())], true, ts, &mut checked)?;
        // Commit.
        self.commit_trade(&trade, &checked, events)?;
        self.collect_trading_fees(m, trade.buy.fee.checked_add(trade.sell.fee)?)?;
        Ok(())
    }

    /// Both sides of a trade of `size` at `price` in market `m`, computed without touching the
    /// accounts: the buyer pays the notional rounded up, the seller receives it rounded down,
    /// and the rounding goes to the fee pool. `fees` (buyer, seller) are debited from the sides.
    fn prepare_trade(
        &self,
        m: u32,
        buyer: u32,
        seller: u32,
        size: Size,
        price: Price,
        fees: (Quote, Quote),
    ) -> Result<Trade, Reject> {
        let market = &self.markets[m as usize];
        let (received, paid) = size.notional_floor_and_ceil(price)?;
        let buy = self.trade_leg(buyer, m, size, paid.checked_neg()?, fees.0)?;
        let sell = self.trade_leg(seller, m, size.checked_neg()?, received, fees.1)?;
        let long_change = |l: &Leg| l.patch.position.size.max(Size::ZERO).checked_sub(l.before.size.max(Size::ZERO));
        let open_interest = market.open_interest.checked_add(long_change(&buy)?)?.checked_add(long_change(&sell)?)?;
        let funding_pool = market.funding_pool.checked_add(buy.funding_paid)?.checked_add(sell.funding_paid)?;
        let rounding = paid.checked_sub(received)?;
        Ok(Trade { market: m, size, price, paid, rounding, open_interest, funding_pool, buy, sell })
    }

    /// Margin checks of the sides named in `check` (buyer, seller), seeing the open interest
    /// after the trade (it scales initial margin); then, for a trade of the venue's book
    /// (`feeds_mark`), the trade price feeds the mark. Either failure leaves the market as it was.
    /// `seen` receives what each check saw, unless the trade moved the mark (then it is stale);
    /// it is filled in place because what a check saw is large to move around.
    fn check_trade(
        &mut self,
        t: &Trade,
        check: [Option<&str>; 2],
        feeds_mark: bool,
        ts: u64,
        seen: &mut [Option<Checked>; 2],
    ) -> Result<(), Reject> {
        let m = t.market as usize;
        let old_open_interest = std::mem::replace(&mut self.markets[m].open_interest, t.open_interest);
        let checked =
            check.iter().zip([&t.buy, &t.sell]).zip(seen.iter_mut()).try_for_each(|((id, leg), seen)| match id {
                Some(id) => self.check_leg(id, leg, ts, seen),
                None => Ok(()),
            });
        let market = &mut self.markets[m];
        let mark = market.mark();
        let accepted = checked.and_then(|_| match feeds_mark {
            true => Ok(market.feed.on_trade(&market.params.oracle, t.price, ts)?),
            false => Ok(()),
        });
        if let Err(e) = accepted {
            market.open_interest = old_open_interest;
            return Err(e);
        }
        if market.mark() != mark {
            *seen = [None, None];
        }
        Ok(())
    }

    /// Write a prepared trade: positions, cash, open interest, funding pool, the rounding to
    /// the fee pool; the events of funding settled and of the fill. Fees are the caller's to
    /// credit. Fails only on arithmetic overflow of the fee pool, before anything is written.
    ///
    /// A side whose check saw it healthy (`checked`) and that is not in liquidation is re-filed
    /// in the detection index at once; every other side is left to detection.
    fn commit_trade(
        &mut self,
        t: &Trade,
        checked: &[Option<Checked>; 2],
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        let fee_pool = self.fee_pool.checked_add(t.rounding)?;
        let market = &mut self.markets[t.market as usize];
        market.open_interest = t.open_interest;
        market.funding_pool = t.funding_pool;
        self.fee_pool = fee_pool;
        let market_id = market.id.clone();
        for leg in [&t.buy, &t.sell] {
            if !leg.funding_paid.is_zero() {
                events.push(Event::FundingSettled {
                    account: self.account_ids[leg.account as usize].clone(),
                    market: market_id.clone(),
                    amount: leg.funding_paid,
                });
            }
        }
        events.push(Event::Filled(Box::new(crate::event::Filled {
            market: market_id,
            buyer: self.account_ids[t.buy.account as usize].clone(),
            seller: self.account_ids[t.sell.account as usize].clone(),
            size: t.size,
            price: t.price,
            notional: t.paid,
            rounding: t.rounding,
            buyer_fee: t.buy.fee,
            seller_fee: t.sell.fee,
            buyer_position: t.buy.patch.position.size,
            seller_position: t.sell.patch.position.size,
            buyer_realized_pnl: t.buy.realized,
            seller_realized_pnl: t.sell.realized,
        })));
        for (leg, checked) in [&t.buy, &t.sell].into_iter().zip(checked) {
            let account = &mut self.accounts[leg.account as usize];
            account.set_cash(leg.bucket, leg.cash_after);
            account.set_position(leg.bucket, leg.patch.market, leg.patch.position);
            let k = key(leg.account, leg.bucket);
            match checked {
                Some(c) if !c.health.is_liquidatable() && !self.liquidations.contains_key(&k) => {
                    self.refile(k, &c.health, &c.terms)
                }
                _ => self.touched.push(k),
            }
        }
        Ok(())
    }

    /// Trading fees of market `m`: its `insurance_fee_share` to its insurance fund, the rest to
    /// the fee pool (the fund's share rounded down).
    fn collect_trading_fees(&mut self, m: u32, fees: Quote) -> Result<(), Reject> {
        let params = &self.markets[m as usize].params;
        let to_fund = fees.mul_ratio_floor(params.insurance_fee_share)?;
        let fee_pool = self.fee_pool.checked_add(fees.checked_sub(to_fund)?)?;
        let f = self.fund_of_market(m);
        self.insurance[f].receive(to_fund)?;
        self.fee_pool = fee_pool;
        Ok(())
    }

    /// One side of a fill: settle funding, trade, realize, pay the fee.
    fn trade_leg(&self, i: u32, m: u32, delta: Size, cash: Quote, fee: Quote) -> Result<Leg, Reject> {
        let account = &self.accounts[i as usize];
        let bucket = account.bucket_for(m);
        let mut before = account.position(bucket, m);
        let index = self.markets[m as usize].funding_index;
        let funding_paid = before.funding_owed(index)?;
        before.funding_index = index;
        let (after, realized) = before.trade(delta, cash)?;
        let cash_delta = realized.checked_sub(funding_paid)?.checked_sub(fee)?;
        let cash_after = account.cash(bucket).checked_add(cash_delta)?;
        let patch = Patch { market: m, position: after, cash_delta };
        Ok(Leg { account: i, bucket, before, patch, cash_after, realized, funding_paid, fee })
    }

    /// The margin check of one side, written into `seen` (see [`Engine::check_trade`]).
    fn check_leg(&self, id: &str, leg: &Leg, ts: u64, seen: &mut Option<Checked>) -> Result<(), Reject> {
        let account = &self.accounts[leg.account as usize];
        // New risk is priced with every market of the bucket, so all of them need a price
        // valid for risk-increasing actions (Drift's margin-calculation rule); checked on the
        // same pass as the health.
        let increases = leg.before.increases_risk(&leg.patch.position);
        let oracles = increases.then_some(Action::IncreaseRisk);
        let Checked { health, terms } = seen.insert(Checked { health: Health::default(), terms: SmallVec::new() });
        *health = bucket_health_each(account, leg.bucket, Some(&leg.patch), oracles, self.prices(ts), |m, pos, r| {
            terms.push(Term::of_position(m, &self.markets[m as usize], pos, r))
        })?;
        terms.extend(Term::of_collateral(account, leg.bucket, &self.assets));
        let after = *health;
        if after.meets_initial() {
            return Ok(());
        }
        let where_ = self.bucket_label(leg.bucket);
        if increases {
            return Err(Reject::InsufficientMargin {
                account: id.to_string(),
                equity: after.initial_equity.to_string(),
                requirement: after.initial.to_string(),
                where_,
            });
        }
        let before = self.health_of(account, leg.bucket, ts)?;
        if after.no_riskier_than(&before) {
            Ok(())
        } else {
            Err(Reject::NotRiskReducing { account: id.to_string(), where_ })
        }
    }

    /// One funding period: the index moves by `rate × oracle price`; positions settle lazily.
    fn funding(&mut self, f: &Funding, ts: u64, events: &mut Vec<Event>) -> Result<(), Reject> {
        let m = self.market_idx(&f.market)? as usize;
        let market = &self.markets[m];
        let params = &market.params.funding;
        // The index moves by `rate × oracle price`: a stale price would misstate every payment.
        let validity = market.validity(ts);
        if matches!(validity, Validity::Stale | Validity::Missing) {
            return Err(Reject::OracleNotValidFor { market: f.market.clone(), validity, action: "funding" });
        }
        let index_price = market.feed.price().ok_or_else(|| Reject::NoPrice(f.market.clone()))?;
        let rate = match (f.rate, f.premium) {
            (Some(_), Some(_)) => return Err(Reject::Conflict("give either \"rate\" or \"premium\", not both".into())),
            (Some(rate), None) => {
                if rate.abs()? > params.max_rate {
                    return Err(Reject::FundingRateTooLarge {
                        rate: rate.to_string(),
                        max: params.max_rate.to_string(),
                    });
                }
                rate
            }
            (None, Some(p)) => params.rate_from_premium(p)?,
            (None, None) => {
                let mark = market.mark().ok_or_else(|| Reject::NoPrice(f.market.clone()))?;
                params.rate_from_premium(premium(mark, index_price)?)?
            }
        };
        let funding_index = market.funding_index.checked_add(FundingIndex::increment(rate, index_price)?)?;
        // Commit.
        let market = &mut self.markets[m];
        market.funding_index = funding_index;
        events.push(Event::FundingApplied { market: market.id.clone(), rate, index_price, funding_index });
        // Funding moves every holder's equity: their triggers are re-filed after the command.
        self.touched.extend(self.index.holders(m as u32));
        Ok(())
    }
}

fn positive<T: std::fmt::Display + Default + PartialOrd>(field: &'static str, value: T) -> Result<(), Reject> {
    if value > T::default() {
        Ok(())
    } else {
        Err(Reject::NotPositive { field, value: value.to_string() })
    }
}

/// A USDC amount given on the 8-decimal asset scale; more than 6 decimals is rejected.
fn usdc_amount(amount: Size) -> Result<Quote, Reject> {
    Quote::from_amount(amount).map_err(|reason| Reject::InvalidNumber { field: "amount", reason })
}

/// A price must be positive and at most [`Price::MAX_SUPPORTED`].
fn price_in_range(price: Price) -> Result<(), Reject> {
    positive("price", price)?;
    if price > Price::MAX_SUPPORTED {
        return Err(Reject::PriceOutOfRange {
            field: "price",
            value: price.to_string(),
            max: Price::MAX_SUPPORTED.to_string(),
        });
    }
    Ok(())
}

fn insufficient(asset: &str, available: impl std::fmt::Display, requested: impl std::fmt::Display) -> Reject {
    Reject::InsufficientBalance {
        asset: asset.to_string(),
        available: available.to_string(),
        requested: requested.to_string(),
    }
}

/// Ids are 1–64 characters from `A-Z a-z 0-9 - _ . : /`.
fn valid_id(id: &str) -> Result<(), Reject> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Reject::InvalidId(id.to_string()))
    }
}

fn cross_position_conflict(account: &str, market: &str) -> Reject {
    Reject::Conflict(format!(
        "account '{account}' holds a cross position in {market}; close it before isolating that market"
    ))
}

/// A new running total of deposits or withdrawals, computed before the commit.
enum Total {
    Settlement(Quote),
    Asset(u32, Size),
}

mod breakers;
mod governance;
mod ids;
mod recovery;
#[cfg(test)]
mod tests;
mod withdrawals;
