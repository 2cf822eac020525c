//! Circuit breakers (DESIGN §3 Circuit breakers): a per-market state machine
//! `Active → ReduceOnly → Halted → Settlement`, its triggers, cool-down and automatic recovery,
//! and the fill price band (fat-finger guard).
//!
//! A market's status is the most severe of its *trips* (one per trigger, each with the time it
//! expires) and of the *manual* status that governance or the guardian set. An automatic trip
//! holds while its condition holds and for `cooldown_ms` after the first evaluation that finds
//! it gone (a one-off event, a price move or a liquidation burst, holds `cooldown_ms` from when
//! it fired), then clears by itself; a manual status holds until governance changes it; `Settlement` is final.
//!
//! | Trigger | Condition | Level |
//! |---|---|---|
//! | `price_move` | oracle aggregate moved more than `max_move` from the price at the start of the current window of `window_ms` (tumbling windows: a new window starts at the first evaluation at or after the previous window's end, and after each trip) | `level` (default `halted`) |
//! | `oracle` | the oracle's validity does not allow risk-increasing actions (market priced at least once); after it recovers, liquidations wait `grace_ms` more (Aave's PriceOracleSentinel) | `reduce_only` |
//! | `insurance_floor` | the insurance balance the liquidation layer reports is below `floor`; the initial requirement is also multiplied by `margin_multiplier` | `reduce_only` |
//! | `open_interest` | open interest ≥ `open_interest_cap` (fills that would raise it above the cap are also refused) | `reduce_only` |
//! | `liquidation_volume` | liquidated notional in the current window of `window_ms` above `max_notional` (pacing) | `halted` |
//!
//! What each status blocks: `reduce_only` and `halted` refuse fill sides that increase risk;
//! `halted` also pauses liquidations; `settlement` refuses every fill (the market has been wound
//! down by `settle_market`). Risk-reducing fills, margin top-ups, withdrawals that keep an
//! account healthy and settlement are never blocked by a breaker (Drift's and Mango's lessons,
//! shared/reference/anchors-onchain.md §6).
//!
//! Everything is integer arithmetic; time is the commands' `ts`.

use crate::error::{check_range, ParamError};
use crate::event::{Event, Id};
use crate::num::{Price, Quote, Ratio, Round, Size};
use serde::{Deserialize, Serialize};

const DAY_MS: u64 = 86_400_000;
/// Largest margin multiplier a breaker or governance may apply (10×).
pub const MAX_MARGIN_MULTIPLIER: Ratio = Ratio::from_raw(10 * Ratio::ONE_RAW);

/// A market's trading status, ordered from least to most severe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    ReduceOnly,
    Halted,
    Settlement,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::ReduceOnly => "reduce_only",
            Status::Halted => "halted",
            Status::Settlement => "settlement",
        }
    }
    /// Whether fill sides that increase risk are refused.
    pub fn blocks_new_risk(self) -> bool {
        self != Status::Active
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What tripped a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    PriceMove,
    Oracle,
    InsuranceFloor,
    OpenInterest,
    LiquidationVolume,
}

/// The `breakers` object of `create_market`. Every trigger is optional (off when absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerParams {
    #[serde(default)]
    pub price_move: Option<PriceMove>,
    #[serde(default)]
    pub oracle: Option<OracleBreaker>,
    #[serde(default)]
    pub insurance_floor: Option<InsuranceFloor>,
    /// Largest open interest (Σ long size). Bounds: > 0.
    #[serde(default)]
    pub open_interest_cap: Option<Size>,
    #[serde(default)]
    pub liquidation_volume: Option<LiquidationVolume>,
    /// Fat-finger guard: a fill price must be within `oracle × (1 ± price_band)`. Bounds: (0, 1].
    #[serde(default)]
    pub price_band: Option<Ratio>,
    /// How long a trip holds after its condition was last seen. Default 60,000; bounds
    /// 0..=86,400,000.
    #[serde(default = "default_cooldown")]
    pub cooldown_ms: u64,
}

fn default_cooldown() -> u64 {
    60_000
}

/// Trip when the oracle aggregate moves more than `max_move` (relative) within a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceMove {
    /// Bounds: (0, 10].
    pub max_move: Ratio,
    /// Bounds: 1..=86,400,000.
    pub window_ms: u64,
    /// `reduce_only` or `halted` (default).
    #[serde(default = "halted")]
    pub level: Status,
}

fn halted() -> Status {
    Status::Halted
}

/// Reduce-only while the oracle does not allow risk-increasing actions; liquidations resume
/// `grace_ms` after it recovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleBreaker {
    /// Bounds: 0..=86,400,000.
    pub grace_ms: u64,
}

/// Reduce-only and a margin multiplier while the insurance segment is below `floor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsuranceFloor {
    /// Bounds: ≥ 0.
    pub floor: Quote,
    /// Multiplies the initial requirement while tripped. Bounds: 1..=10.
    pub margin_multiplier: Ratio,
}

/// Halt when more than `max_notional` is liquidated within a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiquidationVolume {
    /// Bounds: > 0.
    pub max_notional: Quote,
    /// Bounds: 1..=86,400,000.
    pub window_ms: u64,
}

impl BreakerParams {
    /// Check every bound documented on the fields.
    pub fn validate(&self) -> Result<(), ParamError> {
        let tiny = Ratio::from_raw(1);
        if let Some(p) = &self.price_move {
            check_range(
                "breakers.price_move.max_move",
                p.max_move,
                tiny,
                Ratio::from_raw(10 * Ratio::ONE_RAW),
                "(0, 10]",
            )?;
            check_range("breakers.price_move.window_ms", p.window_ms, 1, DAY_MS, "1..=86400000")?;
            if !matches!(p.level, Status::ReduceOnly | Status::Halted) {
                return Err(ParamError::Inconsistent(
                    "breakers.price_move.level must be \"reduce_only\" or \"halted\"".into(),
                ));
            }
        }
        if let Some(o) = &self.oracle {
            check_range("breakers.oracle.grace_ms", o.grace_ms, 0, DAY_MS, "0..=86400000")?;
        }
        if let Some(i) = &self.insurance_floor {
            check_range("breakers.insurance_floor.floor", i.floor, Quote::ZERO, Quote::MAX, "≥ 0")?;
            check_multiplier("breakers.insurance_floor.margin_multiplier", i.margin_multiplier)?;
        }
        if let Some(cap) = self.open_interest_cap {
            check_range("breakers.open_interest_cap", cap, Size::from_raw(1), Size::MAX, "> 0")?;
        }
        if let Some(l) = &self.liquidation_volume {
            check_range(
                "breakers.liquidation_volume.max_notional",
                l.max_notional,
                Quote::from_raw(1),
                Quote::MAX,
                "> 0",
            )?;
            check_range("breakers.liquidation_volume.window_ms", l.window_ms, 1, DAY_MS, "1..=86400000")?;
        }
        if let Some(b) = self.price_band {
            check_range("breakers.price_band", b, tiny, Ratio::ONE, "(0, 1]")?;
        }
        check_range("breakers.cooldown_ms", self.cooldown_ms, 0, DAY_MS, "0..=86400000")?;
        Ok(())
    }

    /// True when `self` is at least as strict as `old` in every trigger: each trigger of `old`
    /// is present with a threshold no looser (smaller move, band, caps; larger floor and
    /// multiplier; longer windows for volume limits, grace and cool-down). Used by governance
    /// to pick the short timelock.
    pub fn at_least_as_strict_as(&self, old: &BreakerParams) -> bool {
        fn opt<T>(new: &Option<T>, old: &Option<T>, f: impl Fn(&T, &T) -> bool) -> bool {
            match (new, old) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(n), Some(o)) => f(n, o),
            }
        }
        opt(&self.price_move, &old.price_move, |n, o| {
            n.max_move <= o.max_move && n.window_ms >= o.window_ms && n.level >= o.level
        }) && opt(&self.oracle, &old.oracle, |n, o| n.grace_ms >= o.grace_ms)
            && opt(&self.insurance_floor, &old.insurance_floor, |n, o| {
                n.floor >= o.floor && n.margin_multiplier >= o.margin_multiplier
            })
            && opt(&self.open_interest_cap, &old.open_interest_cap, |n, o| n <= o)
            && opt(&self.liquidation_volume, &old.liquidation_volume, |n, o| {
                n.max_notional <= o.max_notional && n.window_ms >= o.window_ms
            })
            && opt(&self.price_band, &old.price_band, |n, o| n <= o)
            && self.cooldown_ms >= old.cooldown_ms
    }
}

/// `1 ≤ multiplier ≤ 10`.
pub fn check_multiplier(name: &'static str, m: Ratio) -> Result<(), ParamError> {
    check_range(name, m, Ratio::ONE, MAX_MARGIN_MULTIPLIER, "1..=10")
}

/// One active trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trip {
    pub trigger: Trigger,
    pub level: Status,
    /// The trip clears at the first evaluation with `ts ≥ until` at which its condition no
    /// longer holds.
    pub until: u64,
    /// Its condition held at the last evaluation (conditions that last: oracle, insurance,
    /// open interest).
    pub held: bool,
}

/// What the automatic triggers observe of a market at one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    /// The oracle aggregate (None before the first price).
    pub price: Option<Price>,
    /// The oracle allows risk-increasing actions now.
    pub oracle_ok: bool,
    pub open_interest: Size,
}

/// A market's breaker state. Present on every market (a manual status and the governance
/// margin multiplier apply even without `breakers` parameters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    /// The status last announced (the most severe of `manual` and the trips).
    pub status: Status,
    /// Set by governance or the guardian; `Settlement` once the market is settled.
    pub manual: Status,
    /// Multiplier of the initial requirement set by governance (1 = none).
    pub margin_multiplier: Ratio,
    /// Active trips, at most one per trigger, sorted by trigger.
    pub trips: Vec<Trip>,
    /// The price and time that opened the current price-move window.
    pub window_anchor: Option<(Price, u64)>,
    /// The oracle was degraded at the last evaluation.
    pub oracle_degraded: bool,
    /// Liquidations wait until this time (the oracle grace period).
    pub liquidations_resume_at: u64,
    /// The last insurance balance reported was below the floor.
    pub insurance_below_floor: bool,
    /// Start of the current liquidation-volume window and the notional liquidated in it.
    pub liquidation_window: (u64, Quote),
}

impl Default for BreakerState {
    fn default() -> Self {
        BreakerState {
            status: Status::Active,
            manual: Status::Active,
            margin_multiplier: Ratio::ONE,
            trips: Vec::new(),
            window_anchor: None,
            oracle_degraded: false,
            liquidations_resume_at: 0,
            insurance_below_floor: false,
            liquidation_window: (0, Quote::ZERO),
        }
    }
}

impl BreakerState {
    /// The status in force at `now`: trips that expired by `now` no longer count, even before
    /// the next evaluation clears them (so a check never needs to change state).
    pub fn status_at(&self, now: u64) -> Status {
        self.trips.iter().filter(|t| t.held || t.until > now).map(|t| t.level).fold(self.manual, Status::max)
    }

    /// Multiplier of the initial requirement: the larger of governance's and, while the
    /// insurance trip is active, the insurance floor's.
    pub fn initial_multiplier(&self, params: Option<&BreakerParams>) -> Ratio {
        let insurance = params
            .and_then(|p| p.insurance_floor)
            .filter(|_| self.trips.iter().any(|t| t.trigger == Trigger::InsuranceFloor))
            .map_or(Ratio::ONE, |i| i.margin_multiplier);
        self.margin_multiplier.max(insurance)
    }

    /// Whether liquidations may run at `now`: not halted (a settled market has no positions
    /// left, and settlement itself is never blocked) and past the oracle grace period.
    pub fn allows_liquidation(&self, now: u64) -> bool {
        self.status_at(now) != Status::Halted && now >= self.liquidations_resume_at
    }

    /// Re-evaluate the automatic triggers at `now`, expire trips and announce any change.
    pub fn evaluate(
        &mut self,
        params: Option<&BreakerParams>,
        obs: Observation,
        now: u64,
        market: &Id,
        events: &mut Vec<Event>,
    ) {
        let was_held: Vec<Trigger> = self.trips.iter().filter(|t| t.held).map(|t| t.trigger).collect();
        for t in &mut self.trips {
            t.held = false;
        }
        let cooldown = params.map_or(0, |p| p.cooldown_ms);
        if let Some(p) = params {
            let until = now.saturating_add(p.cooldown_ms);
            if let (Some(pm), Some(price)) = (&p.price_move, obs.price) {
                match self.window_anchor {
                    Some((anchor, start)) if now < start.saturating_add(pm.window_ms) => {
                        let moved = relative_move(price, anchor);
                        if moved > pm.max_move {
                            let value = moved.to_string();
                            let limit = pm.max_move.to_string();
                            self.trip(Trigger::PriceMove, pm.level, until, false, value, limit, market, events);
                            self.window_anchor = Some((price, now));
                        }
                    }
                    _ => self.window_anchor = Some((price, now)),
                }
            }
            if let Some(o) = &p.oracle {
                let degraded = obs.price.is_some() && !obs.oracle_ok;
                if degraded {
                    let (value, limit) = ("degraded".to_string(), "valid".to_string());
                    self.trip(Trigger::Oracle, Status::ReduceOnly, until, true, value, limit, market, events);
                } else if self.oracle_degraded {
                    self.liquidations_resume_at = now.saturating_add(o.grace_ms);
                }
                self.oracle_degraded = degraded;
            }
            if let Some(i) = &p.insurance_floor {
                if self.insurance_below_floor {
                    let (value, limit) = ("below".to_string(), i.floor.to_string());
                    self.trip(Trigger::InsuranceFloor, Status::ReduceOnly, until, true, value, limit, market, events);
                }
            }
            if let Some(cap) = p.open_interest_cap {
                if obs.open_interest >= cap {
                    let value = obs.open_interest.to_string();
                    self.trip(
                        Trigger::OpenInterest,
                        Status::ReduceOnly,
                        until,
                        true,
                        value,
                        cap.to_string(),
                        market,
                        events,
                    );
                }
            }
        }
        // A condition seen gone for the first time: its cool-down starts now.
        for t in self.trips.iter_mut().filter(|t| !t.held && was_held.contains(&t.trigger)) {
            t.until = t.until.max(now.saturating_add(cooldown));
        }
        self.expire(now, market, events);
    }

    /// Record the insurance segment's balance (reported by the liquidation layer). Trips at the
    /// next evaluation when below the floor.
    pub fn observe_insurance(&mut self, params: Option<&BreakerParams>, balance: Quote) {
        self.insurance_below_floor = params.and_then(|p| p.insurance_floor).is_some_and(|i| balance < i.floor);
    }

    /// Add a liquidation's notional to the current window; trips `liquidation_volume` at once
    /// when the window's total exceeds the limit.
    pub fn record_liquidation(
        &mut self,
        params: Option<&BreakerParams>,
        notional: Quote,
        now: u64,
        market: &Id,
        events: &mut Vec<Event>,
    ) {
        let Some(p) = params else { return };
        let Some(l) = &p.liquidation_volume else { return };
        let (start, volume) = self.liquidation_window;
        let (start, volume) =
            if now >= start.saturating_add(l.window_ms) { (now, Quote::ZERO) } else { (start, volume) };
        // Saturating: a sum beyond the type's range is certainly over the limit.
        let volume = volume.checked_add(notional).unwrap_or(Quote::MAX);
        self.liquidation_window = (start, volume);
        if volume > l.max_notional {
            let until = now.saturating_add(p.cooldown_ms);
            let (value, limit) = (volume.to_string(), l.max_notional.to_string());
            self.trip(Trigger::LiquidationVolume, Status::Halted, until, false, value, limit, market, events);
            self.refresh(now, market, events);
        }
    }

    /// Set the manual status (governance, guardian, settlement) and announce the change.
    pub fn set_manual(&mut self, status: Status, now: u64, market: &Id, events: &mut Vec<Event>) {
        self.manual = status;
        self.refresh(now, market, events);
    }

    /// Trip `trigger` (or extend an active trip of it) until `until`; `held` marks a condition
    /// seen at this evaluation. A new trip is announced with the observed value and the limit;
    /// an extension is silent.
    #[allow(clippy::too_many_arguments)]
    fn trip(
        &mut self,
        trigger: Trigger,
        level: Status,
        until: u64,
        held: bool,
        value: String,
        limit: String,
        market: &Id,
        events: &mut Vec<Event>,
    ) {
        match self.trips.binary_search_by_key(&trigger, |t| t.trigger) {
            Ok(i) => {
                let t = &mut self.trips[i];
                t.until = t.until.max(until);
                t.level = t.level.max(level);
                t.held |= held;
            }
            Err(i) => {
                self.trips.insert(i, Trip { trigger, level, until, held });
                events.push(Event::BreakerTripped { market: market.clone(), trigger, level, until, value, limit });
            }
        }
    }

    /// Clear the trips that expired by `now` and no longer hold; announce a status change.
    fn expire(&mut self, now: u64, market: &Id, events: &mut Vec<Event>) {
        let mut i = 0;
        while i < self.trips.len() {
            if !self.trips[i].held && self.trips[i].until <= now {
                let trigger = self.trips.remove(i).trigger;
                events.push(Event::BreakerCleared { market: market.clone(), trigger });
            } else {
                i += 1;
            }
        }
        self.refresh(now, market, events);
    }

    fn refresh(&mut self, now: u64, market: &Id, events: &mut Vec<Event>) {
        let to = self.status_at(now);
        if to != self.status {
            events.push(Event::MarketStatusChanged { market: market.clone(), from: self.status, to });
            self.status = to;
        }
    }
}

/// `|price − anchor| / anchor`, rounded up (a move at the threshold's last digit counts);
/// saturates at the largest ratio when the move is beyond the type's range.
fn relative_move(price: Price, anchor: Price) -> Ratio {
    price.relative_change(anchor, Round::Ceil).and_then(Ratio::abs).unwrap_or(Ratio::MAX)
}

/// The fat-finger guard: whether `price` lies within `reference × (1 ± band)` (bounds rounded
/// toward the reference, so a price exactly at the band's edge passes only when exact).
pub fn within_band(price: Price, reference: Price, band: Ratio) -> bool {
    relative_move(price, reference) <= band
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{px, r};

    fn params() -> BreakerParams {
        serde_json::from_str(r#"{"price_move":{"max_move":"0.1","window_ms":60000},"cooldown_ms":1000}"#).unwrap()
    }

    fn obs(price: &str) -> Observation {
        Observation { price: Some(px(price)), oracle_ok: true, open_interest: Size::ZERO }
    }

    #[test]
    fn status_order_and_defaults() {
        assert!(Status::Active < Status::ReduceOnly && Status::ReduceOnly < Status::Halted);
        assert!(Status::Halted < Status::Settlement);
        let p = params();
        assert_eq!(p.price_move.unwrap().level, Status::Halted);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn validate_names_the_bound() {
        let mut p = params();
        p.price_band = Some(Ratio::ZERO);
        assert!(p.validate().unwrap_err().to_string().contains("breakers.price_band"));
        let mut p = params();
        p.price_move.as_mut().unwrap().level = Status::Settlement;
        assert!(p.validate().is_err());
        let mut p = params();
        p.insurance_floor = Some(InsuranceFloor { floor: Quote::ZERO, margin_multiplier: r("11") });
        assert!(p.validate().unwrap_err().to_string().contains("margin_multiplier"));
    }

    #[test]
    fn a_move_inside_the_window_trips_and_recovers_after_the_cooldown() {
        let (p, id, mut ev) = (params(), Id::from("M"), Vec::new());
        let mut b = BreakerState::default();
        b.evaluate(Some(&p), obs("100"), 0, &id, &mut ev);
        b.evaluate(Some(&p), obs("110"), 10, &id, &mut ev);
        assert!(ev.is_empty(), "exactly 10% is not over the limit");
        b.evaluate(Some(&p), obs("89"), 20, &id, &mut ev);
        assert_eq!(b.status, Status::Halted);
        assert!(
            matches!(&ev[0], Event::BreakerTripped { trigger: Trigger::PriceMove, until: 1020, value, .. } if value == "0.11")
        );
        assert_eq!(b.status_at(1019), Status::Halted);
        assert_eq!(b.status_at(1020), Status::Active, "the check sees the expiry before the evaluation");
        b.evaluate(Some(&p), obs("89"), 1020, &id, &mut ev);
        assert_eq!(b.status, Status::Active);
        assert!(matches!(ev.last(), Some(Event::MarketStatusChanged { to: Status::Active, .. })));
    }

    #[test]
    fn a_new_window_starts_after_the_old_one_ends() {
        let (p, id, mut ev) = (params(), Id::from("M"), Vec::new());
        let mut b = BreakerState::default();
        b.evaluate(Some(&p), obs("100"), 0, &id, &mut ev);
        b.evaluate(Some(&p), obs("80"), 60_000, &id, &mut ev);
        assert!(ev.is_empty(), "the window had ended: 80 opens the next one");
        assert_eq!(b.window_anchor, Some((px("80"), 60_000)));
    }

    #[test]
    fn tighter_params_are_recognized() {
        let old = params();
        let mut new = params();
        new.price_move.as_mut().unwrap().max_move = r("0.05");
        new.price_band = Some(r("0.1"));
        assert!(new.at_least_as_strict_as(&old));
        assert!(!old.at_least_as_strict_as(&new), "dropping the band loosens");
    }

    #[test]
    fn band_edges() {
        assert!(within_band(px("105"), px("100"), r("0.05")));
        assert!(!within_band(px("105.00000001"), px("100"), r("0.05")));
        assert!(within_band(px("95"), px("100"), r("0.05")));
        assert!(!within_band(Price::MAX, px("0.00000001"), r("1")), "saturates instead of overflowing");
    }
}
