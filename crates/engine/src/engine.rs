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
use crate::error::Reject;
use crate::event::{Event, Id};
use crate::funding::premium;
use crate::governance::Governance;
use crate::health::{bucket_health, bucket_health_with, check_oracles, meets_initial_with, Health, Patch, Prices};
use crate::market::{Market, MarketParams};
use crate::num::{FundingIndex, Price, Quote, Size};
use crate::oracle::{Action, Validity};
use crate::withdrawal::Withdrawals;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Totals of the settlement asset that entered and left the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub deposits: Quote,
    pub withdrawals: Quote,
}

/// The whole engine state. Everything that decides an outcome is in here; the id lookup map
/// is derived (rebuilt on load) and never iterated.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Engine {
    seq: u64,
    now: u64,
    assets: Vec<Asset>,
    markets: Vec<Market>,
    account_ids: Vec<Id>,
    accounts: Vec<Account>,
    fee_pool: Quote,
    totals: Totals,
    withdrawals: Withdrawals,
    governance: Governance,
    #[serde(skip)]
    account_index: HashMap<Id, u32, BuildHasherDefault<IdHasher>>,
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
    pub fn accounts(&self) -> impl Iterator<Item = (&Id, &Account)> {
        self.account_ids.iter().zip(&self.accounts)
    }
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.account_index.get(id).map(|&i| &self.accounts[i as usize])
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
        self.account_index = self.account_ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
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
                self.evaluate_breakers(events);
                self.execute_due_withdrawals(events);
                Ok(())
            }
            Err(e) => {
                events.truncate(mark);
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

    fn account_idx(&self, id: &str) -> Result<u32, Reject> {
        self.account_index.get(id).copied().ok_or_else(|| Reject::UnknownAccount(id.to_string()))
    }

    fn market_id(&self, m: u32) -> Id {
        self.markets[m as usize].id.clone()
    }

    /// The account's slot, creating it (unsaved until the caller writes back) if new.
    fn account_or_new(&self, id: &str) -> Result<(Option<u32>, Account), Reject> {
        match self.account_index.get(id) {
            Some(&i) => Ok((Some(i), self.accounts[i as usize].clone())),
            None => {
                valid_id(id)?;
                Ok((None, Account::default()))
            }
        }
    }

    fn store_account(&mut self, slot: Option<u32>, id: &str, account: Account) -> Id {
        match slot {
            Some(i) => {
                self.accounts[i as usize] = account;
                self.account_ids[i as usize].clone()
            }
            None => {
                let id = Id::from(id);
                self.account_index.insert(id.clone(), self.accounts.len() as u32);
                self.account_ids.push(id.clone());
                self.accounts.push(account);
                id
            }
        }
    }

    fn health_of(&self, account: &Account, bucket: Bucket, ts: u64) -> Result<Health, Reject> {
        bucket_health(account, bucket, self.prices(ts))
    }

    /// A risk-increasing change (withdrawal, transfer out) must leave `bucket` at or above its
    /// initial requirement, with oracles valid for risk-increasing actions.
    fn require_initial(&self, id: &str, account: &Account, bucket: Bucket, ts: u64) -> Result<(), Reject> {
        check_oracles(account, bucket, None, self.prices(ts), Action::IncreaseRisk)?;
        let h = self.health_of(account, bucket, ts)?;
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
        let (total, balance) = if d.asset == SETTLEMENT {
            let amount = usdc_amount(d.amount)?;
            let bucket = match &d.isolated {
                Some(market) => {
                    let m = self.market_idx(market)?;
                    if account.cross_position(m).is_some() {
                        return Err(cross_position_conflict(&d.account, market));
                    }
                    Bucket::Isolated(m)
                }
                None => Bucket::Cross,
            };
            account.add_cash(bucket, amount)?;
            (Total::Settlement(self.totals.deposits.checked_add(amount)?), account.cash(bucket).to_amount()?)
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
            (Total::Asset(a, asset.deposits.checked_add(d.amount)?), account.collateral(a))
        };
        // Commit.
        let asset = self.commit_total(total, |t| &mut t.deposits, |a| &mut a.deposits);
        let isolated = d.isolated.as_deref().map(Id::from);
        let account = self.store_account(slot, &d.account, account);
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
        let (total, bucket, balance) = if w.asset == SETTLEMENT {
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
            (total, bucket, account.cash(bucket).to_amount()?)
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
            (total, Bucket::Cross, account.collateral(a))
        };
        self.require_initial(&w.account, &account, bucket, ts)?;
        // Commit.
        let asset = self.commit_total(total, |t| &mut t.withdrawals, |a| &mut a.withdrawals);
        if let Bucket::Isolated(m) = bucket {
            account.drop_empty_isolated(m);
        }
        self.accounts[i as usize] = account;
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
        // The buyer pays the notional rounded up, the seller receives it rounded down.
        let (received, paid) = f.size.notional_floor_and_ceil(f.price)?;
        let (maker, taker) = (market.params.maker_fee, market.params.taker_fee);
        let (buyer_rate, seller_rate) = match f.taker {
            Side::Buyer => (taker, maker),
            Side::Seller => (maker, taker),
        };
        let buy = self.trade_leg(bi, m, f.size, paid.checked_neg()?, paid.mul_ratio_ceil(buyer_rate)?)?;
        let sell = self.trade_leg(si, m, f.size.checked_neg()?, received, paid.mul_ratio_ceil(seller_rate)?)?;
        let long_change = |l: &Leg| l.patch.position.size.max(Size::ZERO).checked_sub(l.before.size.max(Size::ZERO));
        let open_interest = market.open_interest.checked_add(long_change(&buy)?)?.checked_add(long_change(&sell)?)?;
        let rounding = paid.checked_sub(received)?;
        let fee_pool = self.fee_pool.checked_add(buy.fee)?.checked_add(sell.fee)?.checked_add(rounding)?;
        let funding_pool = market.funding_pool.checked_add(buy.funding_paid)?.checked_add(sell.funding_paid)?;
        self.check_fill_breakers(m, f, [&buy, &sell], open_interest, ts)?;

        // Margin checks see the open interest after the fill (it scales initial margin); the
        // value is restored if the fill is rejected. The trade price feeds the mark last: the
        // update is atomic, so a failure there also leaves the feed as it was.
        let old_open_interest = std::mem::replace(&mut self.markets[m as usize].open_interest, open_interest);
        let checked = self.check_leg(&f.buyer, &buy, ts).and_then(|_| self.check_leg(&f.seller, &sell, ts));
        let market = &mut self.markets[m as usize];
        let accepted = checked.and_then(|_| Ok(market.feed.on_trade(&market.params.oracle, f.price, ts)?));
        if let Err(e) = accepted {
            market.open_interest = old_open_interest;
            return Err(e);
        }
        // Commit.
        market.funding_pool = funding_pool;
        self.fee_pool = fee_pool;
        let market_id = market.id.clone();
        for (id, leg) in [(&f.buyer, &buy), (&f.seller, &sell)] {
            if !leg.funding_paid.is_zero() {
                events.push(Event::FundingSettled {
                    account: Id::from(id.as_str()),
                    market: market_id.clone(),
                    amount: leg.funding_paid,
                });
            }
        }
        events.push(Event::Filled {
            market: market_id,
            buyer: Id::from(f.buyer.as_str()),
            seller: Id::from(f.seller.as_str()),
            size: f.size,
            price: f.price,
            notional: paid,
            rounding,
            buyer_fee: buy.fee,
            seller_fee: sell.fee,
            buyer_position: buy.patch.position.size,
            seller_position: sell.patch.position.size,
            buyer_realized_pnl: buy.realized,
            seller_realized_pnl: sell.realized,
        });
        self.commit_leg(&buy);
        self.commit_leg(&sell);
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

    fn check_leg(&self, id: &str, leg: &Leg, ts: u64) -> Result<(), Reject> {
        let account = &self.accounts[leg.account as usize];
        // New risk is priced with every market of the bucket, so all of them need a price
        // valid for risk-increasing actions (Drift's margin-calculation rule).
        let increases = leg.before.increases_risk(&leg.patch.position);
        if increases {
            check_oracles(account, leg.bucket, Some(&leg.patch), self.prices(ts), Action::IncreaseRisk)?;
        }
        if meets_initial_with(account, leg.bucket, Some(&leg.patch), self.prices(ts))? {
            return Ok(());
        }
        let after = bucket_health_with(account, leg.bucket, Some(&leg.patch), self.prices(ts))?;
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

    /// Write a checked leg into its account.
    fn commit_leg(&mut self, leg: &Leg) {
        let account = &mut self.accounts[leg.account as usize];
        account.set_cash(leg.bucket, leg.cash_after);
        account.set_position(leg.bucket, leg.patch.market, leg.patch.position);
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

/// The hasher of the id lookup map: a multiply-rotate hash over 8-byte words (the Fx hash of
/// the Rust compiler), several times faster than SipHash on short ids. The map is only looked
/// up, never iterated, so its order cannot reach an output; ids come from the venue, not from
/// anonymous users, so hash flooding is not a concern.
#[derive(Default)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }
    fn finish(&self) -> u64 {
        self.0
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
#[cfg(test)]
mod tests;
mod withdrawals;
