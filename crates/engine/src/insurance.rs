//! Insurance funds: one global fund plus optional segment funds (DESIGN §3 Recovery waterfall).
//!
//! A fund is fed by liquidation fees, a configurable share of trading fees and direct
//! top-ups (`fund_insurance`), and pays deficits of bankrupt accounts within two caps: at most
//! `max_payout_per_event` for one deficit and at most `max_payout_per_window` over a rolling
//! window (fixed windows opened by the first payout after the previous one ended). Payouts are
//! whole micro-units; nothing here rounds.

use crate::error::{check_range, ParamError};
use crate::event::Id;
use crate::num::{NumResult, Quote};
use serde::{Deserialize, Serialize};

/// The id of the fund every market falls back to.
pub const GLOBAL: &str = "global";

/// Payout caps of a fund. Absent caps do not bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FundParams {
    /// Largest payout for one deficit. Bounds: > 0 when given.
    pub max_payout_per_event: Option<Quote>,
    /// Largest total payout within one window. Bounds: > 0 when given.
    pub max_payout_per_window: Option<Quote>,
    /// Length of the payout window. Bounds: 1 ≤ window_ms ≤ 30 days. Default 86,400,000 (a day).
    pub window_ms: u64,
}

const DAY_MS: u64 = 86_400_000;

impl Default for FundParams {
    fn default() -> Self {
        FundParams { max_payout_per_event: None, max_payout_per_window: None, window_ms: DAY_MS }
    }
}

impl FundParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        for (name, cap) in
            [("max_payout_per_event", self.max_payout_per_event), ("max_payout_per_window", self.max_payout_per_window)]
        {
            if let Some(cap) = cap {
                check_range(name, cap, Quote::from_raw(1), Quote::from_raw(i128::MAX), "> 0")?;
            }
        }
        check_range("window_ms", self.window_ms, 1, 30 * DAY_MS, "1 ≤ window_ms ≤ 2592000000")
    }
}

/// One insurance fund and its payout window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsuranceFund {
    pub id: Id,
    pub params: FundParams,
    pub balance: Quote,
    /// Start of the current payout window and what was paid in it.
    pub window_start: u64,
    pub paid_in_window: Quote,
}

impl InsuranceFund {
    pub fn new(id: Id, params: FundParams) -> Self {
        InsuranceFund { id, params, balance: Quote::ZERO, window_start: 0, paid_in_window: Quote::ZERO }
    }

    /// What the fund may pay for one deficit at `now`: its balance, within both caps.
    pub fn available(&self, now: u64) -> NumResult<Quote> {
        let mut room = self.balance.max(Quote::ZERO);
        if let Some(cap) = self.params.max_payout_per_event {
            room = room.min(cap);
        }
        if let Some(cap) = self.params.max_payout_per_window {
            let paid = if self.window_open(now) { self.paid_in_window } else { Quote::ZERO };
            room = room.min(cap.checked_sub(paid)?.max(Quote::ZERO));
        }
        Ok(room)
    }

    /// Pay `amount` (at most [`Self::available`]) out of the fund at `now`.
    pub fn pay(&mut self, amount: Quote, now: u64) -> NumResult<()> {
        if !self.window_open(now) {
            self.window_start = now;
            self.paid_in_window = Quote::ZERO;
        }
        self.balance = self.balance.checked_sub(amount)?;
        self.paid_in_window = self.paid_in_window.checked_add(amount)?;
        Ok(())
    }

    pub fn receive(&mut self, amount: Quote) -> NumResult<()> {
        self.balance = self.balance.checked_add(amount)?;
        Ok(())
    }

    fn window_open(&self, now: u64) -> bool {
        !self.paid_in_window.is_zero() && now < self.window_start.saturating_add(self.params.window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::q;

    fn fund(per_event: Option<&str>, per_window: Option<&str>) -> InsuranceFund {
        let params = FundParams {
            max_payout_per_event: per_event.map(q),
            max_payout_per_window: per_window.map(q),
            window_ms: 1000,
        };
        params.validate().unwrap();
        let mut f = InsuranceFund::new(Id::from("global"), params);
        f.receive(q("1000")).unwrap();
        f
    }

    #[test]
    fn payouts_respect_balance_and_both_caps() {
        assert_eq!(fund(None, None).available(0), Ok(q("1000")));
        assert_eq!(fund(Some("300"), None).available(0), Ok(q("300")));
        let mut f = fund(Some("300"), Some("500"));
        f.pay(q("300"), 10).unwrap();
        assert_eq!(f.available(20), Ok(q("200")), "the window has 200 left");
        f.pay(q("200"), 20).unwrap();
        assert_eq!(f.available(1009), Ok(Quote::ZERO), "window still open until 1010");
        assert_eq!(f.available(1010), Ok(q("300")), "a new window; the event cap binds again");
        assert_eq!(f.balance, q("500"));
    }

    #[test]
    fn caps_must_be_positive() {
        let bad = FundParams { max_payout_per_event: Some(Quote::ZERO), ..FundParams::default() };
        assert!(bad.validate().is_err());
        assert!(FundParams { window_ms: 0, ..FundParams::default() }.validate().is_err());
    }
}
