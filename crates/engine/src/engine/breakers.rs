//! The engine's side of the circuit breakers (see [`crate::breaker`]): the checks a fill must
//! pass, `settle_market`, the evaluation after every accepted command, and the entry points the
//! liquidation layer calls (insurance balance, liquidated volume, whether liquidations may run).

use super::{price_in_range, Engine, Leg};
use crate::account::Bucket;
use crate::breaker::{within_band, Observation, Status};
use crate::command::{Fill, SettleMarket};
use crate::error::Reject;
use crate::event::Event;
use crate::num::{Quote, Size};
use crate::oracle::Action;

/// One position closed by `settle_market`, computed before anything is written.
struct Close {
    account: u32,
    bucket: Bucket,
    size: Size,
    cash_after: Quote,
    realized: Quote,
    funding_paid: Quote,
}

impl Engine {
    /// What the breakers require of a fill in market `m`, judged at `ts` without changing
    /// anything: no fill in a settled market; no side that increases risk while the market is
    /// reduce-only or halted; open interest not raised above its cap; the price within the band
    /// around the oracle. The band is skipped only when both sides reduce risk and the oracle is
    /// not valid for risk-increasing actions: its reference price is then not trustworthy, and
    /// an account must be able to cut risk on a broken oracle (Mango v4 #663).
    pub(super) fn check_fill_breakers(
        &self,
        m: u32,
        f: &Fill,
        legs: [&Leg; 2],
        open_interest: Size,
        ts: u64,
    ) -> Result<(), Reject> {
        let market = &self.markets[m as usize];
        let status = market.breaker.status_at(ts);
        if status == Status::Settlement {
            return Err(Reject::MarketSettled(f.market.clone()));
        }
        let increases = legs.map(|l| l.before.increases_risk(&l.patch.position));
        if status.blocks_new_risk() {
            for (id, inc) in [&f.buyer, &f.seller].into_iter().zip(increases) {
                if inc {
                    return Err(Reject::MarketStatus { market: f.market.clone(), status, account: id.clone() });
                }
            }
        }
        let Some(p) = &market.params.breakers else { return Ok(()) };
        if let Some(cap) =
            p.open_interest_cap.filter(|cap| open_interest > *cap && open_interest > market.open_interest)
        {
            return Err(Reject::OpenInterestCap {
                market: f.market.clone(),
                open_interest: open_interest.to_string(),
                cap: cap.to_string(),
            });
        }
        if let Some(band) = p.price_band {
            let oracle_ok = market.params.oracle.allow.allows(Action::IncreaseRisk, market.validity(ts));
            let oracle = market.feed.price().ok_or_else(|| Reject::NoPrice(f.market.clone()))?;
            if (oracle_ok || increases.contains(&true)) && !within_band(f.price, oracle, band) {
                return Err(Reject::PriceOutsideBand {
                    market: f.market.clone(),
                    price: f.price.to_string(),
                    oracle: oracle.to_string(),
                    band: band.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Wind market `s.market` down at `s.price`: every position (cross or isolated, accounts in
    /// creation order) settles its funding and closes at the price — a long receives
    /// `size × price` rounded down, a short pays it rounded up, and the difference goes to the
    /// fee pool, so conservation holds exactly. Realized PnL lands in the bucket's cash (a
    /// bucket may end negative: that is bad debt for the loss waterfall). The market's status
    /// becomes `settlement` for good. Neither a breaker, the price band nor the oracle's validity
    /// can block it (Drift's lesson).
    pub(super) fn settle_market(&mut self, s: &SettleMarket, events: &mut Vec<Event>) -> Result<(), Reject> {
        price_in_range(s.price)?;
        let m = self.market_idx(&s.market)?;
        let market = &self.markets[m as usize];
        if market.breaker.manual == Status::Settlement {
            return Err(Reject::MarketSettled(s.market.clone()));
        }
        let index = market.funding_index;
        let (mut closes, mut moved, mut funding_pool) = (Vec::new(), Quote::ZERO, market.funding_pool);
        for (i, account) in self.accounts.iter().enumerate() {
            let bucket = account.bucket_for(m);
            let mut pos = account.position(bucket, m);
            if pos.size.is_zero() {
                continue;
            }
            let funding_paid = pos.funding_owed(index)?;
            pos.funding_index = index;
            let (floor, ceil) = pos.size.notional_floor_and_ceil(s.price)?;
            let cash = if pos.size.is_positive() { floor } else { ceil.checked_neg()? };
            let (_, realized) = pos.trade(pos.size.checked_neg()?, cash)?;
            let cash_after = account.cash(bucket).checked_add(realized)?.checked_sub(funding_paid)?;
            moved = moved.checked_add(cash)?;
            funding_pool = funding_pool.checked_add(funding_paid)?;
            closes.push(Close { account: i as u32, bucket, size: pos.size, cash_after, realized, funding_paid });
        }
        let rounding = moved.checked_neg()?;
        let fee_pool = self.fee_pool.checked_add(rounding)?;
        let positions = u32::try_from(closes.len()).map_err(|_| crate::num::NumError::Overflow)?;
        // Commit.
        let market_id = self.market_id(m);
        for c in &closes {
            let account = &mut self.accounts[c.account as usize];
            account.set_cash(c.bucket, c.cash_after);
            account.set_position(c.bucket, m, Default::default());
            self.touched.push(crate::detection::key(c.account, c.bucket));
            let id = self.account_ids[c.account as usize].clone();
            if !c.funding_paid.is_zero() {
                events.push(Event::FundingSettled {
                    account: id.clone(),
                    market: market_id.clone(),
                    amount: c.funding_paid,
                });
            }
            events.push(Event::PositionSettled {
                account: id,
                market: market_id.clone(),
                size: c.size,
                price: s.price,
                realized_pnl: c.realized,
                isolated: c.bucket != Bucket::Cross,
            });
        }
        self.fee_pool = fee_pool;
        let market = &mut self.markets[m as usize];
        market.funding_pool = funding_pool;
        market.open_interest = Size::ZERO;
        events.push(Event::MarketSettled { market: market_id.clone(), price: s.price, positions, rounding });
        market.breaker.set_manual(Status::Settlement, self.now, &market_id, events);
        Ok(())
    }

    /// After every accepted command: evaluate the automatic triggers of every market that has
    /// breakers or active trips, and announce trips, recoveries and status changes.
    pub(super) fn evaluate_breakers(&mut self, events: &mut Vec<Event>) {
        let now = self.now;
        for m in 0..self.markets.len() {
            let market = &self.markets[m];
            let b = &market.breaker;
            if b.manual == Status::Settlement || (market.params.breakers.is_none() && b.trips.is_empty()) {
                continue;
            }
            let obs = self.observation(m, now);
            let market = &mut self.markets[m];
            market.breaker.evaluate(market.params.breakers.as_deref(), obs, now, &market.id, events);
        }
    }

    /// The liquidation layer reports the balance of `market`'s insurance segment at `ts` (for
    /// example after paying a deficit). Below the market's `insurance_floor` the market turns
    /// reduce-only and its initial requirement is multiplied by the floor's
    /// `margin_multiplier`; the trip clears `cooldown_ms` after a balance at or above the floor
    /// is reported. Events are appended to `events`.
    pub fn observe_insurance_balance(
        &mut self,
        market: &str,
        balance: Quote,
        ts: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        let m = self.market_idx(market)? as usize;
        let market = &mut self.markets[m];
        market.breaker.observe_insurance(market.params.breakers.as_deref(), balance);
        let obs = self.observation(m, ts);
        let market = &mut self.markets[m];
        market.breaker.evaluate(market.params.breakers.as_deref(), obs, ts, &market.id, events);
        Ok(())
    }

    /// The liquidation layer reports `notional` liquidated in `market` at `ts`. Over the
    /// `liquidation_volume` limit in the current window the market halts, which pauses
    /// liquidations for the cool-down (pacing).
    pub fn record_liquidation(
        &mut self,
        market: &str,
        notional: Quote,
        ts: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        let m = self.market_idx(market)? as usize;
        let market = &mut self.markets[m];
        market.breaker.record_liquidation(market.params.breakers.as_deref(), notional, ts, &market.id, events);
        Ok(())
    }

    /// Whether liquidations may run in `market` at `ts`: the market is not halted and the
    /// oracle grace period after an outage has passed (the oracle's own allow-list for
    /// `liquidate` is checked separately, by `health::check_oracle`).
    pub fn liquidation_allowed(&self, market: &str, ts: u64) -> Result<bool, Reject> {
        let m = self.market_idx(market)? as usize;
        Ok(self.markets[m].breaker.allows_liquidation(ts))
    }

    fn observation(&self, m: usize, ts: u64) -> Observation {
        let market = &self.markets[m];
        Observation {
            price: market.feed.price(),
            oracle_ok: market.params.oracle.allow.allows(Action::IncreaseRisk, market.validity(ts)),
            open_interest: market.open_interest,
        }
    }
}

#[cfg(test)]
mod tests;
