//! The engine's side of withdrawal protection (see [`crate::withdrawal`]): `configure_withdrawals`,
//! `request_withdrawal`, `cancel_withdrawal`, the execution of unlocked requests after every
//! accepted command, the gate, and the check that routes `withdraw` of USDC through requests
//! once limits are configured.

use super::{insufficient, positive, usdc_amount, Engine};
use crate::account::{Account, Bucket};
use crate::asset::SETTLEMENT;
use crate::command::{CancelWithdrawal, RequestWithdrawal, Withdraw};
use crate::error::Reject;
use crate::event::{Event, Id};
use crate::health::{bucket_positions, Prices};
use crate::num::{Quote, Round};
use crate::withdrawal::{Gate, Pending, WithdrawalParams, MAX_PENDING};

impl Engine {
    /// Set the withdrawal limits directly; only before governance is installed (afterwards they
    /// change through a proposal).
    pub(super) fn configure_withdrawals(
        &mut self,
        p: &WithdrawalParams,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        self.require_ungoverned("configure_withdrawals")?;
        p.validate()?;
        self.withdrawals.params = Some(p.clone());
        events.push(Event::WithdrawalParamsSet { params: Some(p.clone()) });
        Ok(())
    }

    /// `withdraw` is the immediate path: refused while the gate is closed, and for USDC refused
    /// altogether once withdrawal limits are configured (USDC then leaves only through
    /// `request_withdrawal`, so the delay and the limiter cannot be bypassed). Other collateral
    /// assets keep the immediate, margin-checked path: the limiter counts the settlement asset.
    pub(super) fn check_immediate_withdrawal(&self, w: &Withdraw, ts: u64) -> Result<(), Reject> {
        self.check_gate(ts)?;
        if self.withdrawals.params.is_some() && w.asset == SETTLEMENT {
            return Err(Reject::UseRequestWithdrawal);
        }
        Ok(())
    }

    /// Reserve USDC of a bucket for a delayed withdrawal. The bucket must keep its initial
    /// requirement without the amount at conservative prices ([`Engine::require_conservative`]);
    /// the amount may not exceed what one limiter window can ever let out; the delay grows with
    /// the amount's share of the pool (net USDC deposits).
    pub(super) fn request_withdrawal(
        &mut self,
        r: &RequestWithdrawal,
        ts: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        let p = self.withdrawals.params.as_ref().ok_or(Reject::WithdrawalsNotConfigured)?;
        self.check_gate(ts)?;
        positive("amount", r.amount)?;
        let amount = usdc_amount(r.amount)?;
        let i = self.account_idx(&r.account)?;
        let mut account = self.accounts[i as usize].clone();
        let bucket = match &r.isolated {
            Some(market) => Bucket::Isolated(self.isolated_bucket(&r.account, &account, market)?),
            None => Bucket::Cross,
        };
        let available = account.cash(bucket);
        if amount > available {
            return Err(insufficient(SETTLEMENT, available, amount));
        }
        if self.withdrawals.pending.len() >= MAX_PENDING {
            return Err(Reject::Conflict(format!("{MAX_PENDING} withdrawals are already pending")));
        }
        let pool = self.totals.deposits.checked_sub(self.totals.withdrawals)?;
        let (_, limit) = self.withdrawals.room(p, pool, ts)?;
        if amount > limit {
            return Err(Reject::OutflowLimit { amount: amount.to_string(), limit: limit.to_string() });
        }
        account.add_cash(bucket, amount.checked_neg()?)?;
        self.require_conservative(&r.account, &account, bucket, ts)?;
        let unlock_ts = ts.saturating_add(p.delay_ms(amount, pool));
        let id = self.withdrawals.next_id;
        let next_id = id.checked_add(1).ok_or(crate::num::NumError::Overflow)?;
        // Commit.
        self.accounts[i as usize] = account;
        self.touched.push(crate::detection::key(i, bucket));
        let isolated = isolated_of(bucket);
        self.withdrawals.pending.push(Pending { id, account: i, isolated, amount, unlock_ts });
        self.withdrawals.next_id = next_id;
        events.push(Event::WithdrawalRequested {
            id,
            account: self.account_ids[i as usize].clone(),
            amount,
            isolated: isolated.map(|m| self.market_id(m)),
            unlock_ts,
        });
        Ok(())
    }

    /// Give a pending withdrawal back to its bucket (only its own account may cancel it).
    pub(super) fn cancel_withdrawal(&mut self, c: &CancelWithdrawal, events: &mut Vec<Event>) -> Result<(), Reject> {
        let i = self.account_idx(&c.account)?;
        let k = self
            .withdrawals
            .pending
            .iter()
            .position(|p| p.id == c.id && p.account == i)
            .ok_or_else(|| Reject::UnknownWithdrawal { id: c.id, account: c.account.clone() })?;
        let account = self.refunded(&self.withdrawals.pending[k])?;
        // Commit.
        let w = self.withdrawals.pending.remove(k);
        self.accounts[i as usize] = account;
        events.push(self.cancelled(&w, "requested"));
        Ok(())
    }

    /// After every accepted command: execute, in request order, each unlocked withdrawal while
    /// the gate is open. One whose bucket no longer meets its initial requirement at
    /// conservative prices is cancelled and its amount returned (it backs the positions
    /// again); one that needs a valid oracle that is not there, or that does not fit in the
    /// limiter's room, waits for a later command.
    pub(super) fn execute_due_withdrawals(&mut self, events: &mut Vec<Event>) {
        let now = self.now;
        if self.withdrawals.pending.is_empty() || self.withdrawals.gate_at(now).is_some() {
            return;
        }
        let mut k = 0;
        while k < self.withdrawals.pending.len() {
            let w = &self.withdrawals.pending[k];
            if w.unlock_ts > now || self.execute_withdrawal(k, events).is_err() {
                k += 1;
            }
        }
        if let Some(p) = &self.withdrawals.params {
            self.withdrawals.prune(p.outflow_window_ms, now);
        }
    }

    /// Execute (or cancel for margin) pending withdrawal `k`; `Err` leaves it pending.
    fn execute_withdrawal(&mut self, k: usize, events: &mut Vec<Event>) -> Result<(), Reject> {
        let now = self.now;
        let w = &self.withdrawals.pending[k];
        let (i, bucket) = (w.account as usize, bucket_of(w));
        let id = self.account_ids[i].clone();
        match self.require_conservative(&id, &self.accounts[i], bucket, now) {
            Ok(()) => {}
            Err(e @ (Reject::OracleNotValidFor { .. } | Reject::NoPrice(_))) => return Err(e),
            Err(_) => {
                let account = self.refunded(w)?;
                let w = self.withdrawals.pending.remove(k);
                self.accounts[i] = account;
                events.push(self.cancelled(&w, "margin"));
                return Ok(());
            }
        }
        let pool = self.totals.deposits.checked_sub(self.totals.withdrawals)?;
        if let Some(p) = &self.withdrawals.params {
            let (room, limit) = self.withdrawals.room(p, pool, now)?;
            if w.amount > room {
                return Err(Reject::OutflowLimit { amount: w.amount.to_string(), limit: limit.to_string() });
            }
        }
        let withdrawals = self.totals.withdrawals.checked_add(w.amount)?;
        // Commit.
        let w = self.withdrawals.pending.remove(k);
        self.totals.withdrawals = withdrawals;
        self.withdrawals.outflows.push((now, w.amount));
        if let Some(m) = w.isolated {
            self.accounts[i].drop_empty_isolated(m);
        }
        events.push(Event::WithdrawalExecuted {
            id: w.id,
            account: id,
            amount: w.amount,
            isolated: w.isolated.map(|m| self.market_id(m)),
        });
        Ok(())
    }

    /// Close the withdrawal gate until `until_ts` (kept if already closed for longer), for
    /// `reason`. The liquidation layer calls it when bad debt is recorded, with
    /// `ts + bad_debt_gate_ms()`; the guardian and the council through governance.
    pub fn gate_withdrawals(&mut self, until_ts: u64, reason: &str, events: &mut Vec<Event>) {
        let until = self.withdrawals.gate.as_ref().map_or(until_ts, |g| g.until.max(until_ts));
        self.withdrawals.gate = Some(Gate { until, reason: reason.to_string() });
        events.push(Event::WithdrawalsGated { until, reason: reason.to_string() });
    }

    /// How long bad debt gates withdrawals: the configured `bad_debt_gate_ms`, 60,000 without a
    /// configuration.
    pub fn bad_debt_gate_ms(&self) -> u64 {
        self.withdrawals.params.as_ref().map_or(60_000, |p| p.bad_debt_gate_ms)
    }

    fn check_gate(&self, ts: u64) -> Result<(), Reject> {
        match self.withdrawals.gate_at(ts) {
            Some(g) => Err(Reject::WithdrawalsGated { until: g.until, reason: g.reason.clone() }),
            None => Ok(()),
        }
    }

    /// The initial-requirement check of a withdrawal (oracles valid for risk-increasing
    /// actions, `initial_equity ≥ initial`), and the same at conservative prices: initial
    /// equity less [`adverse_twap_move`] must still cover the initial requirement.
    fn require_conservative(&self, id: &str, account: &Account, bucket: Bucket, ts: u64) -> Result<(), Reject> {
        self.require_initial(id, account, bucket, ts)?;
        let h = self.health_of(account, bucket, ts)?;
        let equity = h.initial_equity.checked_sub(adverse_twap_move(account, bucket, self.prices(ts))?)?;
        if equity >= h.initial {
            return Ok(());
        }
        Err(Reject::InsufficientMargin {
            account: id.to_string(),
            equity: equity.to_string(),
            requirement: h.initial.to_string(),
            where_: format!("{} at conservative prices", self.bucket_label(bucket)),
        })
    }

    /// The account with pending withdrawal `w`'s amount back in its bucket (the cross book if
    /// the account has since opened a cross position in that market).
    fn refunded(&self, w: &Pending) -> Result<Account, Reject> {
        let mut account = self.accounts[w.account as usize].clone();
        let bucket = match w.isolated {
            Some(m) if account.cross_position(m).is_none() => Bucket::Isolated(m),
            _ => Bucket::Cross,
        };
        account.add_cash(bucket, w.amount)?;
        Ok(account)
    }

    fn cancelled(&self, w: &Pending, reason: &str) -> Event {
        Event::WithdrawalCancelled {
            id: w.id,
            account: self.account_ids[w.account as usize].clone(),
            amount: w.amount,
            reason: Id::from(reason),
        }
    }
}

fn isolated_of(bucket: Bucket) -> Option<u32> {
    match bucket {
        Bucket::Cross => None,
        Bucket::Isolated(m) => Some(m),
    }
}

fn bucket_of(w: &Pending) -> Bucket {
    w.isolated.map_or(Bucket::Cross, Bucket::Isolated)
}

/// What the bucket would lose if every price moved to the worse of its current value and its
/// TWAP (Drift's TWAP-based withdraw guard): Σ |size| × (mark − twap) for longs above their
/// TWAP, Σ |size| × (twap − mark) for shorts below it, and for cross collateral
/// Σ amount × (price − twap) × initial_weight where the price is above its TWAP. Rounded up.
fn adverse_twap_move(account: &Account, bucket: Bucket, prices: Prices<'_>) -> Result<Quote, Reject> {
    let mut loss = Quote::ZERO;
    for (m, pos) in bucket_positions(account, bucket, None) {
        let market = &prices.markets[m as usize];
        let (Some(mark), Some(twap)) = (market.mark(), market.feed.twap()) else { continue };
        let adverse = if pos.size.is_positive() { mark.checked_sub(twap)? } else { twap.checked_sub(mark)? };
        if adverse.is_positive() {
            loss = loss.checked_add(pos.size.notional(adverse, Round::Ceil)?)?;
        }
    }
    if bucket == Bucket::Cross {
        for (a, amount) in &account.collateral {
            let asset = &prices.assets[*a as usize];
            let (Some(price), Some(twap)) = (asset.feed.price(), asset.feed.twap()) else { continue };
            let above = price.checked_sub(twap)?;
            if above.is_positive() {
                loss = loss
                    .checked_add(amount.value_at(above, Round::Ceil)?.mul_ratio_ceil(asset.params.initial_weight)?)?;
            }
        }
    }
    Ok(loss)
}

#[cfg(test)]
mod tests;
