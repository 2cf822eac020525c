//! Withdrawal protection (DESIGN §3 Withdrawals): delayed USDC withdrawals with the amount
//! reserved meanwhile, a global outflow rate limiter (ERC-7265 style) and a gate after bad debt
//! (dYdX v4 gates withdrawals after a negative-equity account is seen,
//! shared/reference/anchors-onchain.md §4).
//!
//! The flow: `request_withdrawal` checks the bucket would still meet its initial requirement at
//! conservative prices without the amount, moves the amount out of the bucket into a pending
//! withdrawal (so it backs nothing and cannot be requested twice) and sets its unlock time;
//! after every accepted command with `ts ≥ unlock_ts` the engine executes it if the bucket is
//! still margin-safe, the gate is open and the limiter has room; `cancel_withdrawal` gives the
//! amount back.

use crate::error::{check_range, ParamError};
use crate::num::{mul_div, NumResult, Quote, Ratio, Round};
use serde::{Deserialize, Serialize};

const DAY_MS: u64 = 86_400_000;
const MAX_DELAY_MS: u64 = 30 * DAY_MS;
const MAX_WINDOW_MS: u64 = 7 * DAY_MS;
/// Most withdrawals pending at once (bounds state size; a request beyond it is refused).
pub const MAX_PENDING: usize = 10_000;

/// The `configure_withdrawals` parameters (also a governance change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalParams {
    /// Delay of every request. Bounds: 0..=`max_delay_ms`.
    pub base_delay_ms: u64,
    /// Extra delay of a request for the whole pool; a request for a share `x` of the pool
    /// waits `base_delay_ms + x × pool_delay_ms` (rounded up). Bounds: 0..=2,592,000,000 (30 days).
    pub pool_delay_ms: u64,
    /// Cap on the delay. Bounds: `base_delay_ms`..=2,592,000,000.
    pub max_delay_ms: u64,
    /// Share of the pool that may leave per window. Bounds: (0, 1].
    pub outflow_share: Ratio,
    /// The limiter's rolling window. Bounds: 1..=604,800,000 (7 days).
    pub outflow_window_ms: u64,
    /// How long withdrawals stay gated after bad debt is recorded (dYdX: 50 blocks, about a
    /// minute). Default 60,000; bounds 0..=604,800,000.
    #[serde(default = "default_gate")]
    pub bad_debt_gate_ms: u64,
}

fn default_gate() -> u64 {
    60_000
}

impl WithdrawalParams {
    /// Check every bound documented on the fields.
    pub fn validate(&self) -> Result<(), ParamError> {
        check_range("max_delay_ms", self.max_delay_ms, 0, MAX_DELAY_MS, "0..=2592000000 (30 days)")?;
        check_range("base_delay_ms", self.base_delay_ms, 0, self.max_delay_ms, "0..=max_delay_ms")?;
        check_range("pool_delay_ms", self.pool_delay_ms, 0, MAX_DELAY_MS, "0..=2592000000 (30 days)")?;
        check_range("outflow_share", self.outflow_share, Ratio::from_raw(1), Ratio::ONE, "(0, 1]")?;
        check_range("outflow_window_ms", self.outflow_window_ms, 1, MAX_WINDOW_MS, "1..=604800000 (7 days)")?;
        check_range("bad_debt_gate_ms", self.bad_debt_gate_ms, 0, MAX_WINDOW_MS, "0..=604800000 (7 days)")?;
        Ok(())
    }

    /// True when `self` is at least as strict as `old`: delays and windows no shorter, the
    /// outflow share no larger, the bad-debt gate no shorter.
    pub fn at_least_as_strict_as(&self, old: &WithdrawalParams) -> bool {
        self.base_delay_ms >= old.base_delay_ms
            && self.pool_delay_ms >= old.pool_delay_ms
            && self.max_delay_ms >= old.max_delay_ms
            && self.outflow_share <= old.outflow_share
            && self.outflow_window_ms >= old.outflow_window_ms
            && self.bad_debt_gate_ms >= old.bad_debt_gate_ms
    }

    /// Delay of a request for `amount` out of a pool of `pool`:
    /// `min(max_delay_ms, base_delay_ms + ⌈pool_delay_ms × amount / pool⌉)`; an empty pool
    /// gives the maximum.
    pub fn delay_ms(&self, amount: Quote, pool: Quote) -> u64 {
        if !pool.is_positive() {
            return self.max_delay_ms;
        }
        let extra = mul_div(i128::from(self.pool_delay_ms), amount.raw(), pool.raw(), Round::Ceil)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(u64::MAX);
        self.base_delay_ms.saturating_add(extra).min(self.max_delay_ms)
    }
}

/// One pending withdrawal. Its amount has left the bucket and is held here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: u64,
    pub account: u32,
    /// The isolated market it came from (None: the cross book).
    pub isolated: Option<u32>,
    pub amount: Quote,
    pub unlock_ts: u64,
}

/// A gate: no withdrawal requests or executions before `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub until: u64,
    pub reason: String,
}

/// The engine's withdrawal state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawals {
    /// None (the default): `withdraw` is immediate and there are no requests.
    pub params: Option<WithdrawalParams>,
    /// Pending withdrawals in request order.
    pub pending: Vec<Pending>,
    /// The id of the next request.
    pub next_id: u64,
    /// Executed outflows `(ts, amount)` still inside the limiter's window, oldest first.
    pub outflows: Vec<(u64, Quote)>,
    pub gate: Option<Gate>,
}

impl Withdrawals {
    /// The gate in force at `now`, if any.
    pub fn gate_at(&self, now: u64) -> Option<&Gate> {
        self.gate.as_ref().filter(|g| now < g.until)
    }

    /// Σ pending amounts (they count in conservation).
    pub fn reserved(&self) -> NumResult<Quote> {
        crate::num::sum_quote(self.pending.iter().map(|p| p.amount))
    }

    /// Room left in the limiter at `now` with `net_deposits` in the pool (ERC-7265's rolling
    /// window): `limit − used`, where `used` is the outflow of the last `outflow_window_ms` and
    /// `limit = ⌊outflow_share × (net_deposits + used)⌋` — the share of the pool as it was before
    /// this window's outflows, so the limit does not shrink as withdrawals execute. Also returns
    /// the limit.
    pub fn room(&self, p: &WithdrawalParams, net_deposits: Quote, now: u64) -> NumResult<(Quote, Quote)> {
        let since = now.saturating_sub(p.outflow_window_ms);
        let used = crate::num::sum_quote(self.outflows.iter().filter(|(t, _)| *t > since).map(|(_, a)| *a))?;
        let limit = net_deposits.checked_add(used)?.max(Quote::ZERO).mul_ratio_floor(p.outflow_share)?;
        Ok((limit.checked_sub(used)?.max(Quote::ZERO), limit))
    }

    /// Forget outflows that left the window at `now`.
    pub fn prune(&mut self, window_ms: u64, now: u64) {
        let since = now.saturating_sub(window_ms);
        self.outflows.retain(|(t, _)| *t > since);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{q, r};

    fn params() -> WithdrawalParams {
        WithdrawalParams {
            base_delay_ms: 1_000,
            pool_delay_ms: 100_000,
            max_delay_ms: 50_000,
            outflow_share: r("0.1"),
            outflow_window_ms: 3_600_000,
            bad_debt_gate_ms: 60_000,
        }
    }

    #[test]
    fn delay_grows_with_the_share_of_the_pool_and_is_capped() {
        let p = params();
        assert_eq!(p.delay_ms(q("0"), q("1000")), 1_000);
        assert_eq!(p.delay_ms(q("10"), q("1000")), 2_000, "1% of the pool: 1,000 ms more");
        assert_eq!(p.delay_ms(q("0.000001"), q("1000")), 1_001, "rounded up");
        assert_eq!(p.delay_ms(q("1000"), q("1000")), 50_000, "capped");
        assert_eq!(p.delay_ms(q("1"), Quote::ZERO), 50_000, "empty pool: the maximum");
    }

    #[test]
    fn the_limiter_rolls_and_does_not_shrink_as_withdrawals_execute() {
        let p = params();
        let mut w = Withdrawals::default();
        assert_eq!(w.room(&p, q("1000"), 0).unwrap(), (q("100"), q("100")));
        w.outflows.push((10, q("60")));
        // The pool is now 940; the limit is still 10% of the 1,000 it was.
        assert_eq!(w.room(&p, q("940"), 20).unwrap(), (q("40"), q("100")));
        assert_eq!(w.room(&p, q("940"), 3_600_010).unwrap().0, q("94"), "the outflow left the window");
        w.prune(p.outflow_window_ms, 3_600_010);
        assert!(w.outflows.is_empty());
    }

    #[test]
    fn validate_names_the_bound() {
        let mut p = params();
        p.base_delay_ms = 60_000;
        assert!(p.validate().unwrap_err().to_string().contains("base_delay_ms"));
        let mut p = params();
        p.outflow_share = Ratio::ZERO;
        assert!(p.validate().unwrap_err().to_string().contains("outflow_share"));
        assert!(params().validate().is_ok());
    }
}
