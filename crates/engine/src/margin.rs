//! Margin math, pure and stateless: notional tiers with a continuous deduction term,
//! open-interest scaling of the initial fraction, a volatility floor on the maintenance
//! fraction, and the liquidation price of one position.
//!
//! Everything is fixed-point ([`crate::num`]) with checked arithmetic. Every division names its
//! rounding and goes against the account: requirements and margin fractions are rounded up,
//! deductions (which lower a requirement) are rounded down, and a liquidation price is reported on
//! the conservative side (higher for a long, lower for a short). Out-of-range inputs are typed
//! errors, never panics.

use crate::error::{check_range, ParamError};
use crate::num::{
    div_wide, isqrt, mul_div, out_of_range, pow10, NumError, NumResult, Price, Quote, Ratio, Round, Size,
    NOTIONAL_TO_QUOTE, RATIO_ONE,
};
use ethnum::{I256, U256};
use serde::{Deserialize, Serialize};

/// `|size| × price` raw (16 decimals) per raw quote unit (6 decimals).
/// At most this many tiers beyond the base row.
pub const MAX_EXTRA_TIERS: usize = 32;

/// `v` must lie in `[0, 1]`.
fn unit_interval(what: &str, v: Ratio) -> NumResult<()> {
    if v < Ratio::ZERO || v > Ratio::ONE {
        return Err(out_of_range(what, v));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Notional tiers
// ---------------------------------------------------------------------------------------------

/// One notional tier beyond the base: from `notional_floor` on, these fractions apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub notional_floor: Quote,
    pub initial_margin: Ratio,
    pub maintenance_margin: Ratio,
}

/// A validated tier table with precomputed deductions. Row 0 is the base (floor 0, the market's
/// initial/maintenance fractions); extra tiers follow.
///
/// Deserializing re-validates the rows (bounds, order and the deductions themselves), so a
/// table read back from a snapshot is as trustworthy as one built with [`TierTable::new`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTierTable")]
pub struct TierTable {
    rows: Vec<TierRow>,
    /// Per row, derived from the rows: the notionals above which the row's (initial,
    /// maintenance) piece can exceed the previous row's; see [`TierTable::requirement`].
    #[serde(skip)]
    near_from: Vec<(i128, i128)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTierTable {
    rows: Vec<TierRow>,
}

impl TryFrom<RawTierTable> for TierTable {
    type Error = ParamError;
    fn try_from(raw: RawTierTable) -> Result<Self, ParamError> {
        let base = raw
            .rows
            .first()
            .filter(|r| r.floor.is_zero())
            .ok_or_else(|| ParamError::Inconsistent("tier table: row 0 must exist and have floor 0".to_string()))?;
        let extra: Vec<Tier> = raw.rows[1..]
            .iter()
            .map(|r| Tier {
                notional_floor: r.floor,
                initial_margin: r.initial_margin,
                maintenance_margin: r.maintenance_margin,
            })
            .collect();
        let table = TierTable::new(base.initial_margin, base.maintenance_margin, &extra)?;
        if table.rows != raw.rows {
            return Err(ParamError::Inconsistent(
                "tier table: deductions do not match the rates and floors".to_string(),
            ));
        }
        Ok(table)
    }
}

/// One row of a [`TierTable`]: rates from `floor` on, and the deductions that keep the
/// requirement continuous across floors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRow {
    pub floor: Quote,
    pub initial_margin: Ratio,
    pub maintenance_margin: Ratio,
    pub initial_deduction: Quote,
    pub maintenance_deduction: Quote,
}

impl TierTable {
    /// Build and validate a table.
    ///
    /// Deductions (Binance "maintenance amount"/cum, Hyperliquid "deduction"; anchors-offchain.md
    /// §1.1, §2.1): `deduction(0) = 0`, `deduction(n) = deduction(n−1) + floor(n) × (rate(n) −
    /// rate(n−1))`, each product rounded down (a smaller deduction is a larger requirement). The
    /// same construction is used for the initial and the maintenance rates.
    ///
    /// Bounds: `0 < maintenance ≤ initial ≤ 1` and `maintenance < 1` for every row; floors of the
    /// extra tiers `> 0` and strictly increasing; both rates non-decreasing from row to row; at
    /// most [`MAX_EXTRA_TIERS`] extra tiers.
    pub fn new(initial: Ratio, maintenance: Ratio, extra: &[Tier]) -> Result<TierTable, ParamError> {
        if extra.len() > MAX_EXTRA_TIERS {
            return Err(ParamError::out_of_bounds("maintenance_tiers", extra.len(), "at most 32 extra tiers"));
        }
        check_row("initial_margin", "maintenance_margin", initial, maintenance, None)?;
        let mut rows = vec![TierRow {
            floor: Quote::ZERO,
            initial_margin: initial,
            maintenance_margin: maintenance,
            initial_deduction: Quote::ZERO,
            maintenance_deduction: Quote::ZERO,
        }];
        for (i, t) in extra.iter().enumerate() {
            let prev = rows[rows.len() - 1];
            check_row(
                "maintenance_tiers.initial_margin",
                "maintenance_tiers.maintenance_margin",
                t.initial_margin,
                t.maintenance_margin,
                Some(i),
            )?;
            if t.notional_floor <= prev.floor {
                let v = format!("{} (tier {i})", t.notional_floor);
                return Err(ParamError::out_of_bounds(
                    "maintenance_tiers.notional_floor",
                    v,
                    "> 0 and strictly increasing",
                ));
            }
            if t.initial_margin < prev.initial_margin {
                let v = format!("{} (tier {i})", t.initial_margin);
                return Err(ParamError::out_of_bounds(
                    "maintenance_tiers.initial_margin",
                    v,
                    "non-decreasing from tier to tier",
                ));
            }
            if t.maintenance_margin < prev.maintenance_margin {
                let v = format!("{} (tier {i})", t.maintenance_margin);
                return Err(ParamError::out_of_bounds(
                    "maintenance_tiers.maintenance_margin",
                    v,
                    "non-decreasing from tier to tier",
                ));
            }
            let step = |rate: Ratio, prev_rate: Ratio| -> NumResult<Quote> {
                t.notional_floor.mul_ratio_floor(Ratio::from_raw(rate.raw() - prev_rate.raw()))
            };
            rows.push(TierRow {
                floor: t.notional_floor,
                initial_margin: t.initial_margin,
                maintenance_margin: t.maintenance_margin,
                initial_deduction: prev.initial_deduction.checked_add(step(t.initial_margin, prev.initial_margin)?)?,
                maintenance_deduction: prev
                    .maintenance_deduction
                    .checked_add(step(t.maintenance_margin, prev.maintenance_margin)?)?,
            });
        }
        let near_from = rows.iter().enumerate().map(|(i, row)| near_from(&rows[..i], row)).collect();
        Ok(TierTable { rows, near_from })
    }

    pub fn rows(&self) -> &[TierRow] {
        &self.rows
    }

    /// Initial requirement: `notional × rate(tier) − deduction(tier)`; see [`TierTable::maintenance`].
    pub fn initial(&self, notional: Quote) -> Result<Quote, NumError> {
        Ok(self.requirements(notional)?.0)
    }

    /// Maintenance requirement: `notional × rate(tier) − deduction(tier)`, the tier being the
    /// last whose floor ≤ notional (Binance/Hyperliquid tiered margin, anchors-offchain.md §1.1,
    /// §2.1). The rate product is rounded up (Ceil) and the deduction was rounded down when
    /// built, so the requirement is rounded against the account.
    ///
    /// Evaluated as the max over every row's linear piece (see [`TierTable::maintenance_pieces`]):
    /// with non-decreasing rates and continuous deductions this is the tier formula, and it makes
    /// the requirement identical, bit for bit, to what [`liquidation_price`] solves against. The
    /// only difference from a plain tier lookup comes from the deductions' round-down: the max
    /// may exceed it by a micro-unit per row, never fall below it. `notional` must be ≥ 0.
    pub fn maintenance(&self, notional: Quote) -> Result<Quote, NumError> {
        Ok(self.requirements(notional)?.1)
    }

    /// Both requirements, `(initial, maintenance)`, sharing the tier lookup (what a health
    /// evaluation needs for every position).
    #[inline]
    pub fn requirements(&self, notional: Quote) -> Result<(Quote, Quote), NumError> {
        let active = self.active_row(notional)?;
        Ok((
            self.requirement(notional, active, |r| (r.initial_margin, r.initial_deduction), |n| n.0)?,
            self.requirement(notional, active, |r| (r.maintenance_margin, r.maintenance_deduction), |n| n.1)?,
        ))
    }

    /// The active tier: the last row whose floor ≤ `notional` (row 0 has floor 0, so it exists
    /// for every `notional` ≥ 0).
    #[inline]
    fn active_row(&self, notional: Quote) -> Result<usize, NumError> {
        if notional.is_negative() {
            return Err(out_of_range("notional", notional));
        }
        Ok(self.rows.partition_point(|r| r.floor <= notional) - 1)
    }

    /// `max_i (⌈notional × rate_i⌉ − deduction_i)` over the rows' pieces, evaluating only the
    /// pieces that can attain the max.
    ///
    /// Why that is exact: deductions are built as `c_i = c_{i−1} + ⌊f_i·Δr_i⌋`. For a row at or
    /// below the active tier t (floor ≤ notional n), `⌈n·r_i⌉ ≥ ⌈n·r_{i−1}⌉ + ⌊n·Δr_i⌋` and
    /// `⌊n·Δr_i⌋ ≥ ⌊f_i·Δr_i⌋`, so every piece below t is at most piece t. Above t (n < f_i),
    /// piece i exceeds piece i−1 only if `⌈n·Δr_i⌉ > ⌊f_i·Δr_i⌋`, which needs
    /// `(f_i − n)·Δr_i < 1` micro-unit; a row that is not that close is at most its
    /// predecessor, so the max is attained at t or at one of those close rows. Closeness is a
    /// notional threshold per row, computed when the table is built (`near_from`), so ruling a
    /// row out costs one comparison.
    #[inline]
    fn requirement(
        &self,
        notional: Quote,
        active: usize,
        piece_of: impl Fn(&TierRow) -> (Ratio, Quote),
        near_of: impl Fn((i128, i128)) -> i128,
    ) -> Result<Quote, NumError> {
        let piece = |row: &TierRow| -> NumResult<Quote> {
            let (rate, deduction) = piece_of(row);
            notional.mul_ratio_ceil(rate)?.checked_sub(deduction)
        };
        let mut best = Quote::ZERO.max(piece(&self.rows[active])?);
        for i in active + 1..self.rows.len() {
            if notional.raw() > near_of(self.near_from[i]) {
                best = best.max(piece(&self.rows[i])?);
            }
        }
        Ok(best)
    }

    /// The linear pieces (rate, deduction) of the maintenance requirement; because rates are
    /// non-decreasing and the function is continuous, the requirement equals the max over these
    /// pieces for every notional ≥ 0 (convex piecewise-linear). Used by [`liquidation_price`].
    pub fn maintenance_pieces(&self) -> impl Iterator<Item = (Ratio, Quote)> + '_ {
        self.rows.iter().map(|r| (r.maintenance_margin, r.maintenance_deduction))
    }
}

/// For `row` after `before`: the notionals above which its piece can exceed its predecessor's,
/// per level. Piece i can exceed piece i−1 only if `(f_i − n)·Δr_i < 1` micro-unit, that is
/// (in raw units, micro-quote × 1e-8) `gap·step < 10^8`, i.e. `gap < ⌈10^8 / step⌉`, i.e.
/// `n > f_i − ⌈10^8 / step⌉`. A zero step means identical pieces: never needed (`i128::MAX`).
fn near_from(before: &[TierRow], row: &TierRow) -> (i128, i128) {
    let Some(prev) = before.last() else { return (i128::MAX, i128::MAX) };
    let threshold = |rate: Ratio, prev_rate: Ratio| -> i128 {
        let step = i128::from(rate.raw() - prev_rate.raw());
        if step <= 0 {
            return i128::MAX;
        }
        row.floor.raw() - (i128::from(Ratio::ONE_RAW) + step - 1) / step
    };
    (threshold(row.initial_margin, prev.initial_margin), threshold(row.maintenance_margin, prev.maintenance_margin))
}

fn check_row(
    im_name: &'static str,
    mm_name: &'static str,
    im: Ratio,
    mm: Ratio,
    tier: Option<usize>,
) -> Result<(), ParamError> {
    let show = |v: Ratio| match tier {
        Some(i) => format!("{v} (tier {i})"),
        None => v.to_string(),
    };
    if mm <= Ratio::ZERO || mm >= Ratio::ONE {
        return Err(ParamError::out_of_bounds(mm_name, show(mm), "0 < maintenance_margin < 1"));
    }
    if im < mm || im > Ratio::ONE {
        return Err(ParamError::out_of_bounds(im_name, show(im), "maintenance_margin ≤ initial_margin ≤ 1"));
    }
    Ok(())
}

/// `max_i (ceil(notional × rate_i) − deduction_i)`.
#[cfg(test)]
fn max_of_pieces(notional: Quote, pieces: impl Iterator<Item = (Ratio, Quote)>) -> NumResult<Quote> {
    if notional.is_negative() {
        return Err(out_of_range("notional", notional));
    }
    let mut best = Quote::ZERO;
    for (rate, deduction) in pieces {
        best = best.max(notional.mul_ratio_ceil(rate)?.checked_sub(deduction)?);
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------------
// 2. Open-interest scaling
// ---------------------------------------------------------------------------------------------

/// dYdX v4 liquidity-tier open-interest caps (anchors-offchain.md §2.6, anchors-onchain.md §4):
/// the initial fraction grows linearly from its base to 100% between the two caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OiScaling {
    pub lower_cap: Quote,
    pub upper_cap: Quote,
}

impl OiScaling {
    /// Bounds: `0 ≤ lower_cap < upper_cap`.
    pub fn validate(&self) -> Result<(), ParamError> {
        check_range("open_interest_scaling.lower_cap", self.lower_cap, Quote::ZERO, Quote::MAX, "lower_cap ≥ 0")?;
        if self.upper_cap <= self.lower_cap {
            return Err(ParamError::out_of_bounds(
                "open_interest_scaling.upper_cap",
                self.upper_cap,
                "upper_cap > lower_cap",
            ));
        }
        Ok(())
    }

    /// `t = clamp((oi − lower)/(upper − lower), 0, 1)`, rounded up.
    pub fn utilisation(&self, open_interest: Quote) -> Result<Ratio, NumError> {
        if open_interest <= self.lower_cap {
            return Ok(Ratio::ZERO);
        }
        if open_interest >= self.upper_cap {
            return Ok(Ratio::ONE);
        }
        let over = open_interest.checked_sub(self.lower_cap)?;
        let span = self.upper_cap.checked_sub(self.lower_cap)?;
        Ok(over.ratio_to(span, Round::Ceil)?.clamp(Ratio::ZERO, Ratio::ONE))
    }
}

/// `base + (1 − base) × t`, rounded up: the IMF grows linearly from the base to 100% between the
/// caps (dYdX `liquidity_tier.go`). Both arguments must be in `[0, 1]`.
pub fn oi_scaled_fraction(base: Ratio, t: Ratio) -> Result<Ratio, NumError> {
    unit_interval("base fraction", base)?;
    unit_interval("utilisation", t)?;
    let rest = Ratio::ONE.checked_sub(base)?;
    base.checked_add(rest.mul(t, Round::Ceil)?)
}

/// The same scaling applied to a requirement already computed from tiers:
/// `req + (notional − req) × t`, rounded up. A requirement already at or above the notional is
/// returned unchanged; `t` must be in `[0, 1]`.
pub fn oi_scaled_requirement(requirement: Quote, notional: Quote, t: Ratio) -> Result<Quote, NumError> {
    unit_interval("utilisation", t)?;
    if notional <= requirement {
        return Ok(requirement);
    }
    requirement.checked_add(notional.checked_sub(requirement)?.mul_ratio_ceil(t)?)
}

// ---------------------------------------------------------------------------------------------
// 3. Volatility floor
// ---------------------------------------------------------------------------------------------

/// Parameters of the volatility floor: an EWMA of squared returns (RiskMetrics), scaled to a
/// horizon and a multiple, with rate-limited increases and a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolParams {
    /// EWMA decay per sample, in (0, 1), e.g. 0.94 (RiskMetrics).
    pub lambda: Ratio,
    /// k, in (0, 100].
    pub multiplier: Ratio,
    /// h, in 1..=100_000 samples: the margin covers k·σ·√h.
    pub horizon_samples: u32,
    /// The aggregate oracle price is sampled at most once per this many ms, so σ is per unit of
    /// time whatever the number of sources or their update rate. 1..=86_400_000, default 60,000.
    #[serde(default = "default_sample_interval")]
    pub sample_interval_ms: u64,
    /// The applied fraction may rise at most this much per hour of timestamps; (0, 1].
    pub max_increase_per_hour: Ratio,
    /// Upper bound of the applied maintenance fraction, (0, 1).
    pub cap: Ratio,
    /// The initial floor is fraction × this, in [1, 10].
    pub initial_multiplier: Ratio,
}

fn default_sample_interval() -> u64 {
    60_000
}

const MS_PER_HOUR: i128 = 3_600_000;
/// Variance scale: ratio² with 16 decimals.
const VAR_ONE: i128 = pow10(2 * Ratio::DECIMALS);

impl VolParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        let tiny = Ratio::from_raw(1);
        let below_one = Ratio::from_raw(Ratio::ONE_RAW - 1);
        check_range("volatility_margin.lambda", self.lambda, tiny, below_one, "0 < lambda < 1")?;
        let hundred = Ratio::from_int(100)?;
        check_range("volatility_margin.multiplier", self.multiplier, tiny, hundred, "0 < multiplier ≤ 100")?;
        check_range(
            "volatility_margin.horizon_samples",
            self.horizon_samples,
            1,
            100_000,
            "1 ≤ horizon_samples ≤ 100000",
        )?;
        check_range(
            "volatility_margin.sample_interval_ms",
            self.sample_interval_ms,
            1,
            86_400_000,
            "1 ≤ sample_interval_ms ≤ 86400000",
        )?;
        let max_inc = self.max_increase_per_hour;
        check_range(
            "volatility_margin.max_increase_per_hour",
            max_inc,
            tiny,
            Ratio::ONE,
            "0 < max_increase_per_hour ≤ 1",
        )?;
        check_range("volatility_margin.cap", self.cap, tiny, below_one, "0 < cap < 1")?;
        let ten = Ratio::from_int(10)?;
        check_range(
            "volatility_margin.initial_multiplier",
            self.initial_multiplier,
            Ratio::ONE,
            ten,
            "1 ≤ initial_multiplier ≤ 10",
        )
    }
}

/// Live state of the volatility floor of one market.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolState {
    /// EWMA of squared simple returns, scaled by 1e16 (ratio² with 16 decimals).
    pub variance: u128,
    pub last_price: Option<Price>,
    pub last_ts: u64,
    /// The maintenance fraction floor now applied.
    pub fraction: Ratio,
}

/// `n / d` rounded up, saturated into `u128` (`d > 0`).
fn u256_div_ceil_sat(n: U256, d: U256) -> u128 {
    let q = n / d + U256::from(u8::from(n % d != 0));
    u128::try_from(q).unwrap_or(u128::MAX)
}

impl VolState {
    /// Pure: the state after one oracle price at `now` (ms). The first price only sets
    /// `last_price`/`last_ts`; a price less than `sample_interval_ms` after the last sample is
    /// not a new sample and changes nothing.
    ///
    /// - `r² = (p − p_prev)² / p_prev²` at the 1e16 scale, computed from the prices directly
    ///   (not by squaring a rounded 8-dp ratio, so a 0.01% move registers), rounded up;
    /// - `variance' = λ·variance + (1 − λ)·r²` (RiskMetrics EWMA), rounded up;
    /// - `target = min(cap, k·√(variance'·h))`, the square root and the product rounded up;
    /// - `fraction' = target` if `target ≤ fraction` (decreases apply at once), else
    ///   `min(target, fraction + max_increase_per_hour × (now − last_ts)/3_600_000)`, the
    ///   allowance rounded down (increases are rate-limited).
    ///
    /// Wide intermediates saturate rather than fail: a variance or a root beyond the `u128`
    /// range already puts the target far above any valid cap, and an oracle update must not be
    /// rejected for being extreme. A timestamp earlier than `last_ts` allows no increase and
    /// leaves `last_ts` unchanged. Errors on a non-positive price.
    pub fn next(&self, p: &VolParams, price: Price, now: u64) -> Result<VolState, NumError> {
        if !price.is_positive() {
            return Err(out_of_range("price", price));
        }
        let mut out = VolState { last_price: Some(price), last_ts: self.last_ts.max(now), ..*self };
        let Some(prev) = self.last_price.filter(|q| q.is_positive()) else {
            out.last_ts = now;
            return Ok(out);
        };
        if now < self.last_ts.saturating_add(p.sample_interval_ms) {
            return Ok(*self);
        }
        let q = U256::from(prev.raw().unsigned_abs());
        let d = U256::from(price.raw().abs_diff(prev.raw()));
        let r2 = u256_div_ceil_sat(d * d * U256::from(VAR_ONE as u128), q * q);
        let lambda = U256::from(p.lambda.raw().clamp(0, Ratio::ONE_RAW) as u64);
        let one = U256::from(Ratio::ONE_RAW as u64);
        let ewma = lambda * U256::from(self.variance) + (one - lambda) * U256::from(r2);
        out.variance = u256_div_ceil_sat(ewma, one);

        let x = out.variance.saturating_mul(u128::from(p.horizon_samples));
        let mut root = isqrt(x);
        if root * root < x {
            root += 1;
        }
        let cap = i128::from(p.cap.raw().max(0));
        let sigma_h = i128::try_from(root).unwrap_or(i128::MAX);
        let target = mul_div(i128::from(p.multiplier.raw()), sigma_h, RATIO_ONE, Round::Ceil).unwrap_or(i128::MAX);
        let target = target.clamp(0, cap);
        let current = i128::from(self.fraction.raw());
        let fraction = if target <= current {
            target
        } else {
            let elapsed = i128::from(now.saturating_sub(self.last_ts));
            let rate = i128::from(p.max_increase_per_hour.raw().max(0));
            let allowance = mul_div(rate, elapsed, MS_PER_HOUR, Round::Floor).unwrap_or(i128::MAX);
            target.min(current.saturating_add(allowance))
        };
        // `fraction` lies between 0 and max(cap, current), both of which fit i64.
        out.fraction = Ratio::from_raw(i64::try_from(fraction).map_err(|_| NumError::Overflow)?);
        Ok(out)
    }

    /// Initial floor: `fraction × initial_multiplier`, rounded up, capped at 1.
    pub fn initial_fraction(&self, p: &VolParams) -> Result<Ratio, NumError> {
        Ok(self.fraction.mul(p.initial_multiplier, Round::Ceil)?.min(Ratio::ONE))
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Liquidation price
// ---------------------------------------------------------------------------------------------

/// Liquidation price of one position with everything else held fixed.
///
/// `size`: signed position size. `others_equity`: the bucket's maintenance equity WITHOUT this
/// position's `size × price` term (but including its cash/cost leg, funding owed, collateral,
/// other positions). `others_requirement`: maintenance requirement of everything else in the
/// bucket. `pieces`: (rate, deduction) linear pieces whose max is this position's maintenance
/// requirement as a function of its notional (tier pieces, plus (vol_fraction, 0) when a
/// volatility floor applies). All rates must be in `[0, 1)`; no pieces means no requirement.
///
/// In real numbers (Binance one-way/isolated formula, anchors-offchain.md §2.1; Hyperliquid
/// `price − side·margin_available/size/(1 − l·side)`, §1.2), with `equity(p) = E0 + s·p` and
/// `requirement(p) = M0 + max_i(|s|·p·r_i − c_i)`:
/// - long (`s > 0`): safe iff `p ≥ p_i` for every piece, `p_i = (M0 − E0 − c_i)/(s(1 − r_i))`;
/// - short (`s < 0`): safe iff `p ≤ p_i`, `p_i = (E0 − M0 + c_i)/(|s|(1 + r_i))`.
///
/// The price returned is the exact boundary of the engine's own integer check, which evaluates
/// `equity = E0 + value_at(p, Floor)` against `M0 + max_i(ceil(notional(p, Ceil) × r_i) − c_i)`:
/// - long: the smallest price `P` such that the position is safe at `P` and every higher price
///   (so `P − 1e-8` is liquidatable); `None` when no positive price liquidates it; saturates at
///   `Price::MAX` when every representable price does;
/// - short: the largest price `P ≥ 0` such that it is safe at `P` and every lower price (so
///   `P + 1e-8` is liquidatable); `Some(Price::ZERO)` when it is liquidatable at any positive
///   price; `None` when no representable price liquidates it.
///
/// Because equity is rounded down and the requirement up, this boundary is never on the
/// optimistic side of the real-number `p_i` rounded to the price scale (up for a long, down
/// for a short): it is that value or up to about `1e-6 / |s|` beyond it (one micro-unit of value).
/// `None` for size 0. All intermediates are 256-bit, so nothing overflows for any `i128` input.
pub fn liquidation_price(
    size: Size,
    others_equity: Quote,
    others_requirement: Quote,
    pieces: impl IntoIterator<Item = (Ratio, Quote)>,
) -> Result<Option<Price>, NumError> {
    if size.is_zero() {
        return Ok(None);
    }
    let long = size.is_positive();
    let a = I256::from(size.raw().unsigned_abs());
    let base = I256::from(others_equity.raw()) - I256::from(others_requirement.raw());
    let boundary = |k: I256, r: I256| if long { long_boundary(a, k, r) } else { short_boundary(a, k, r) };
    let mut best: Option<I256> = None;
    for (rate, deduction) in pieces {
        if rate < Ratio::ZERO || rate >= Ratio::ONE {
            return Err(out_of_range("rate", rate));
        }
        let p = boundary(base + I256::from(deduction.raw()), I256::from(rate.raw()))?;
        best = Some(match best {
            None => p,
            Some(b) if long => b.max(p),
            Some(b) => b.min(p),
        });
    }
    let best = match best {
        Some(b) => b,
        None => boundary(base, I256::ZERO)?,
    };
    let max = I256::from(Price::MAX.raw());
    Ok(if long {
        // The largest liquidatable price is best − 1; it must be a positive price.
        if best <= I256::ONE {
            None
        } else {
            Some(Price::from_raw(i64::try_from(best.min(max)).map_err(|_| NumError::Overflow)?))
        }
    } else if best > max {
        None
    } else {
        Some(Price::from_raw(i64::try_from(best.max(I256::ZERO)).map_err(|_| NumError::Overflow)?))
    })
}

/// Long, one piece with `k = E0 − M0 + c` and raw rate `r`: the smallest raw price `P` such that
/// every price ≥ `P` is safe. With `A = |size|` raw, `V = floor(A·P/D)` (value) and
/// `N = ceil(A·P/D)` (notional), `D = 1e10`, safe ⟺ `(k + V)·1e8 ≥ N·r`.
/// - At an exact point (`A·P ≡ 0 mod D`, so `N = V`): safe ⟺ `N ≥ N0 = ceil(−k·1e8/(1e8 − r))`.
/// - Elsewhere (`N = V + 1`): safe ⟺ `N ≥ N1 = ceil((1 − k)·1e8/(1e8 − r))` ⟺ `A·P > (N1 − 1)·D`.
///
/// `N0 ≤ N1`, so every `P` with `A·P > (N1 − 1)·D` is safe, and the largest `P` below that,
/// `Pa`, is unsafe unless it is an exact point with `N ≥ N0`; then `Pa − 1` is unsafe (it is not
/// an exact point unless `A ≡ 0 mod D`, when every point is exact and `P = ceil(N0·D/A)`).
fn long_boundary(a: I256, k: I256, r: I256) -> NumResult<I256> {
    let (d, one) = (I256::from(NOTIONAL_TO_QUOTE), I256::from(RATIO_ONE));
    let den = one - r;
    let n0 = div_wide(-k * one, den, Round::Ceil)?;
    if a % d == 0 {
        return div_wide(n0 * d, a, Round::Ceil);
    }
    let n1 = div_wide((I256::ONE - k) * one, den, Round::Ceil)?;
    let pa = div_wide((n1 - 1) * d, a, Round::Floor)?;
    let prod = pa * a;
    Ok(if prod.rem_euclid(d) == 0 && prod / d >= n0 { pa } else { pa + 1 })
}

/// Short, one piece: the largest raw price `P` such that every price in `[0, P]` is safe. With
/// `N = ceil(A·P/D)` the value is `−N`, so safe ⟺ `(k − N)·1e8 ≥ N·r` ⟺
/// `N ≤ Nmax = floor(k·1e8/(1e8 + r))` ⟺ `A·P ≤ Nmax·D`: monotone, `P = floor(Nmax·D/A)`.
fn short_boundary(a: I256, k: I256, r: I256) -> NumResult<I256> {
    let (d, one) = (I256::from(NOTIONAL_TO_QUOTE), I256::from(RATIO_ONE));
    let n_max = div_wide(k * one, one + r, Round::Floor)?;
    div_wide(n_max * d, a, Round::Floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::{px, q, r, sz};

    /// The engine's own check: equity = E0 + value_at(p, Floor) against
    /// M0 + max_i(ceil(notional(p, Ceil) × r_i) − c_i).
    fn safe(size: Size, p: Price, e0: Quote, m0: Quote, pieces: &[(Ratio, Quote)]) -> bool {
        let equity = e0.checked_add(size.value_at(p, Round::Floor).unwrap()).unwrap();
        let notional = size.notional(p, Round::Ceil).unwrap();
        let own = pieces.iter().map(|&(r, c)| notional.mul_ratio_ceil(r).unwrap().checked_sub(c).unwrap()).max();
        equity >= m0.checked_add(own.unwrap_or(Quote::ZERO)).unwrap()
    }

    /// Brute-force check of a returned liquidation price against `safe`.
    fn check(size: Size, e0: Quote, m0: Quote, pieces: &[(Ratio, Quote)]) -> Option<Price> {
        let got = liquidation_price(size, e0, m0, pieces.iter().copied()).unwrap();
        let at = |raw: i64| safe(size, Price::from_raw(raw), e0, m0, pieces);
        let ctx = format!("size {size} e0 {e0} m0 {m0} pieces {pieces:?} -> {got:?}");
        match (size.is_positive(), got) {
            (true, Some(p)) if p < Price::MAX => {
                let p = p.raw();
                assert!(at(p) && at(p + 1) && !at(p - 1), "{ctx}");
                for k in [2, 10, 1000, 1_000_000, 1 << 40] {
                    assert!(at(p.saturating_add(k)), "{ctx}: unsafe at +{k}");
                }
            }
            (true, Some(_)) => assert!(!at(i64::MAX), "{ctx}"),
            (true, None) => assert!(at(1) && at(2) && at(1_000_000), "{ctx}"),
            (false, Some(p)) => {
                let p = p.raw();
                // Some(0) also stands for "liquidatable at any price", including 0 itself.
                assert!((at(p) || p == 0) && !at(p + 1), "{ctx}");
                for k in [1, 2, 10, 1000, 1_000_000, 1 << 40] {
                    assert!(p < k || at(p - k), "{ctx}: unsafe at -{k}");
                }
            }
            (false, None) => assert!(at(i64::MAX), "{ctx}"),
        }
        got
    }

    /// The real-number closed form, rounded to the price scale (for the golden figures).
    fn rational(size: Size, e0: Quote, rate: Ratio) -> Price {
        let (a, one) = (size.raw().abs(), i128::from(Ratio::ONE_RAW));
        let v = if size.is_positive() {
            mul_div(-e0.raw(), 10i128.pow(18), a * (one - i128::from(rate.raw())), Round::Ceil)
        } else {
            mul_div(e0.raw(), 10i128.pow(18), a * (one + i128::from(rate.raw())), Round::Floor)
        };
        Price::from_raw(v.unwrap() as i64)
    }

    fn cents(p: Price) -> String {
        // Round half up to 0.01 (the venues' display).
        let c = (p.raw() + 500_000) / 1_000_000;
        format!("{}.{:02}", c / 100, c % 100)
    }

    #[test]
    fn binance_isolated_liquidation_price() {
        // anchors-offchain.md §2.1 "Worked check": isolated 1 BTC @ 50,000, WB 5,000, MMR 0.4%,
        // cum 0 → long 45,180.72, short 54,780.88.
        let pieces = [(r("0.004"), Quote::ZERO)];
        let long = check(sz("1"), q("-45000"), Quote::ZERO, &pieces).unwrap();
        // Real-number value 45000/0.996 = 45180.72289157 (rounded up); the engine's integer
        // boundary sits at the next micro-unit step of value: at 45180.72289157 equity
        // 180.722891 < requirement ceil(180.72289157) = 180.722892.
        assert_eq!(rational(sz("1"), q("-45000"), r("0.004")).to_string(), "45180.72289157");
        assert!(!safe(sz("1"), px("45180.72289157"), q("-45000"), Quote::ZERO, &pieces));
        assert_eq!(long.to_string(), "45180.722892");
        assert_eq!(cents(long), "45180.72");

        let short = check(sz("-1"), q("55000"), Quote::ZERO, &pieces).unwrap();
        assert_eq!(rational(sz("-1"), q("55000"), r("0.004")).to_string(), "54780.87649402");
        assert_eq!(short.to_string(), "54780.876494");
        assert_eq!(cents(short), "54780.88");
    }

    #[test]
    fn hyperliquid_liquidation_price() {
        // anchors-offchain.md §1.2 "Worked check": 1 BTC @ 100,000, isolated margin 10,000,
        // MMR 1.25% → long 91,139.24, short 108,641.98.
        let pieces = [(r("0.0125"), Quote::ZERO)];
        let long = check(sz("1"), q("-90000"), Quote::ZERO, &pieces).unwrap();
        assert_eq!(cents(long), "91139.24");
        let short = check(sz("-1"), q("110000"), Quote::ZERO, &pieces).unwrap();
        assert_eq!(cents(short), "108641.98");
    }

    fn hl_btc() -> TierTable {
        // anchors-offchain.md §1.1: BTC 0–150M at 40x (IMR 2.5%, MMR 1.25%), >150M at 20x.
        let tier = Tier { notional_floor: q("150000000"), initial_margin: r("0.05"), maintenance_margin: r("0.025") };
        TierTable::new(r("0.025"), r("0.0125"), &[tier]).unwrap()
    }

    #[test]
    fn hyperliquid_tier_continuity() {
        // anchors-offchain.md §1.1 "Worked check": MM(200M) = 200M×2.5% − 150M×1.25% = 3.125M.
        let t = hl_btc();
        assert_eq!(t.rows()[1].maintenance_deduction, q("1875000"));
        assert_eq!(t.maintenance(q("200000000")).unwrap(), q("3125000"));
        let below = t.maintenance(q("149999999.999999")).unwrap();
        let at = t.maintenance(q("150000000")).unwrap();
        assert!(at.checked_sub(below).unwrap().abs().unwrap() <= Quote::from_raw(1), "{below} vs {at}");
        assert_eq!(t.initial(q("200000000")).unwrap(), q("6250000"));
        assert_eq!(t.maintenance(Quote::ZERO).unwrap(), Quote::ZERO);
        assert!(t.maintenance(q("-1")).is_err());
    }

    fn binance_btcusdt() -> TierTable {
        // anchors-offchain.md §2.1: BTCUSDT 125x bracket table (2021-03-18).
        let rows = [
            ("50000", "0.01", "0.005"),
            ("250000", "0.02", "0.01"),
            ("1000000", "0.05", "0.025"),
            ("10000000", "0.1", "0.05"),
            ("20000000", "0.2", "0.1"),
            ("50000000", "0.25", "0.125"),
            ("100000000", "0.33333333", "0.15"),
            ("200000000", "0.5", "0.25"),
            ("300000000", "1", "0.5"),
        ];
        let extra: Vec<Tier> = rows
            .iter()
            .map(|(f, i, m)| Tier { notional_floor: q(f), initial_margin: r(i), maintenance_margin: r(m) })
            .collect();
        TierTable::new(r("0.008"), r("0.004"), &extra).unwrap()
    }

    #[test]
    fn binance_bracket_deductions() {
        // anchors-offchain.md §2.1, "cum (maintenance amount)" column.
        let t = binance_btcusdt();
        let cum: Vec<String> = t.rows().iter().map(|r| r.maintenance_deduction.to_string()).collect();
        let want = ["0", "50", "1300", "16300", "266300", "1266300", "2516300", "5016300", "25016300", "100016300"];
        assert_eq!(cum, want);
        // 5M notional in the 1M–10M bracket: 5M × 2.5% − 16,300.
        assert_eq!(t.maintenance(q("5000000")).unwrap(), q("108700"));
        // A table survives a serde round trip and is re-validated on the way in.
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<TierTable>(&json).unwrap(), t);
        let tampered = json.replacen("\"50\"", "\"51\"", 1);
        assert!(serde_json::from_str::<TierTable>(&tampered).is_err());
    }

    proptest::proptest! {
        /// The requirement evaluates only the pieces that can attain the max; it must equal the
        /// max over every piece, in particular just below each floor where rounding matters.
        #[test]
        fn requirement_equals_the_max_over_every_piece(
            base in 1i64..5_000_000,
            steps in proptest::collection::vec((1i128..100_000_000_000, 0i64..3_000_000, 0i64..30), 0..8),
            offsets in proptest::collection::vec(-5i128..5, 1..4),
            far in 0i128..1_000_000_000_000_000,
        ) {
            // Rates grow by tiny or large steps, so near-floor rounding is exercised.
            let (mut floor, mut init, mut maint) = (0i128, base * 2, base);
            let mut extra = Vec::new();
            for (gap, d_init, d_maint) in steps {
                floor += gap;
                init = (init + d_init).min(Ratio::ONE_RAW);
                maint = (maint + d_maint).min(init).min(Ratio::ONE_RAW - 1);
                extra.push(Tier {
                    notional_floor: Quote::from_raw(floor),
                    initial_margin: Ratio::from_raw(init),
                    maintenance_margin: Ratio::from_raw(maint),
                });
            }
            let t = TierTable::new(Ratio::from_raw(base * 2), Ratio::from_raw(base), &extra).unwrap();
            let mut notionals = vec![Quote::from_raw(far), Quote::ZERO];
            for row in t.rows() {
                for o in &offsets {
                    notionals.push(Quote::from_raw((row.floor.raw() + o).max(0)));
                }
            }
            for n in notionals {
                let init_pieces = t.rows().iter().map(|r| (r.initial_margin, r.initial_deduction));
                proptest::prop_assert_eq!(t.initial(n).unwrap(), max_of_pieces(n, init_pieces).unwrap());
                proptest::prop_assert_eq!(t.maintenance(n).unwrap(), max_of_pieces(n, t.maintenance_pieces()).unwrap());
            }
        }
    }

    #[test]
    fn binance_liquidation_price_changes_tier() {
        // anchors-offchain.md §2.1 "If the result crosses a bracket boundary, recompute with that
        // bracket's MMR and cum": long 210 BTC @ 50,000 (10.5M, bracket 10M–20M), WB 1.05M. With
        // bracket 5 (5%, 266,300) the price would be 46,033.58 (9.67M notional, below 10M), so it
        // is recomputed in bracket 4 (2.5%, 16,300): 9,433,700 / 204.75 = 46,074.24.
        let t = binance_btcusdt();
        let pieces: Vec<_> = t.maintenance_pieces().collect();
        let (size, e0) = (sz("210"), q("-9450000"));
        let p = check(size, e0, Quote::ZERO, &pieces).unwrap();
        assert_eq!(cents(p), "46074.24");
        // The pieces reproduce the table's requirement exactly.
        for raw in [p.raw() - 1, p.raw(), p.raw() + 1, 5_000_000_000_000] {
            let n = size.notional(Price::from_raw(raw), Round::Ceil).unwrap();
            assert_eq!(t.maintenance(n).unwrap(), max_of_pieces(n, pieces.iter().copied()).unwrap());
        }
        // Short 3000 BTC @ 50,000 with WB 30M, in bracket 100M–200M (15%, cum 5,016,300):
        // 185,016,300 / 3450 = 53,627.91 (160.9M notional, same bracket).
        let s = check(sz("-3000"), q("180000000"), Quote::ZERO, &pieces).unwrap();
        assert_eq!(cents(s), "53627.91");
    }

    #[test]
    fn liquidation_price_matches_brute_force() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let table: Vec<_> = binance_btcusdt().maintenance_pieces().collect();
        for case in 0..3000 {
            let price = Price::from_raw((1 + rnd(9) as i64) * 10i64.pow(rnd(15) as u32 + 1) + rnd(1000) as i64);
            let size_abs = (1 + rnd(999) as i128) * 10i128.pow(rnd(18) as u32);
            let size = Size::from_raw(if rnd(2) == 0 { size_abs } else { -size_abs });
            let value = size.value_at(price, Round::Floor).unwrap();
            let notional = size.notional(price, Round::Ceil).unwrap();
            let margin = notional.mul_ratio_floor(Ratio::from_raw(rnd(150_000_000) as i64)).unwrap();
            let e0 = margin.checked_sub(value).unwrap();
            let m0 = margin.mul_ratio_floor(Ratio::from_raw(rnd(50_000_000) as i64)).unwrap();
            let mut pieces: Vec<(Ratio, Quote)> = match case % 3 {
                0 => table.clone(),
                1 => vec![(Ratio::from_raw(rnd(20_000_000) as i64), Quote::ZERO)],
                _ => (0..1 + rnd(3))
                    .map(|_| (Ratio::from_raw(rnd(100_000_000) as i64), Quote::from_raw(rnd(1_000_000_000) as i128)))
                    .collect(),
            };
            if rnd(4) == 0 {
                pieces.push((Ratio::from_raw(rnd(100_000_000) as i64), Quote::ZERO));
            }
            if rnd(10) == 0 {
                pieces.push((Ratio::from_raw(Ratio::ONE_RAW - 1), Quote::ZERO));
            }
            check(size, e0, m0, &pieces);
        }
    }

    #[test]
    fn liquidation_price_edges() {
        let pieces = [(r("0.01"), Quote::ZERO)];
        assert_eq!(liquidation_price(Size::ZERO, q("1"), Quote::ZERO, pieces), Ok(None));
        // A long with more cash than requirement at price 0 is never liquidated.
        assert_eq!(check(sz("1"), q("10"), Quote::ZERO, &pieces), None);
        // A short already underwater at price 0 is liquidatable at any price.
        assert_eq!(check(sz("-1"), q("-1"), Quote::ZERO, &pieces), Some(Price::ZERO));
        // A tiny short with huge equity: no representable price liquidates it.
        assert_eq!(check(Size::from_raw(-1), q("1000000000"), Quote::ZERO, &pieces), None);
        // A huge long owing more than any representable price covers: saturates.
        assert_eq!(check(Size::from_raw(1), q("-1000000000"), Quote::ZERO, &pieces), Some(Price::MAX));
        // No pieces: no requirement of its own.
        assert_eq!(check(sz("1"), q("-100"), Quote::ZERO, &[]), Some(px("100")));
        assert!(liquidation_price(sz("1"), q("1"), Quote::ZERO, [(Ratio::ONE, Quote::ZERO)]).is_err());
        assert!(liquidation_price(sz("1"), q("1"), Quote::ZERO, [(r("-0.1"), Quote::ZERO)]).is_err());
        // Extreme inputs do not overflow.
        let big = Quote::from_raw(i128::MAX / 2);
        assert!(liquidation_price(Size::from_raw(i128::MAX), big, big.checked_neg().unwrap(), pieces).is_ok());
    }

    #[test]
    fn dydx_open_interest_scaled_imf() {
        // anchors-onchain.md §4 "x/perpetuals/types/liquidity_tier_test.go"; anchors-offchain.md
        // §2.6: IMF 20%, caps 1M–2M.
        let oi = OiScaling { lower_cap: q("1000000"), upper_cap: q("2000000") };
        oi.validate().unwrap();
        let imf = |open: &str| oi_scaled_fraction(r("0.2"), oi.utilisation(q(open)).unwrap()).unwrap();
        assert_eq!(imf("1500000"), r("0.6"));
        let odd = imf("1234567");
        assert_eq!(odd, r("0.3876536"));
        assert_eq!(odd.raw() / 100, 387_653, "dYdX prints 38.7653% at ppm precision");
        assert_eq!(imf("2000000"), Ratio::ONE);
        assert_eq!(imf("9000000"), Ratio::ONE);
        assert_eq!(imf("999999"), r("0.2"));
        assert_eq!(imf("0"), r("0.2"));
        // Rounded up: 1/3 of the span.
        assert_eq!(oi.utilisation(q("1333333.333334")).unwrap(), r("0.33333334"));
        // The same scaling on a tiered requirement: 20,000 on 100,000 notional at t = 0.5.
        assert_eq!(oi_scaled_requirement(q("20000"), q("100000"), r("0.5")).unwrap(), q("60000"));
        assert_eq!(oi_scaled_requirement(q("20000"), q("100000"), Ratio::ZERO).unwrap(), q("20000"));
        assert!(oi_scaled_fraction(r("0.2"), r("1.1")).is_err());
    }

    fn vol_params() -> VolParams {
        VolParams {
            lambda: r("0.94"),
            multiplier: r("3"),
            horizon_samples: 1,
            sample_interval_ms: 1,
            max_increase_per_hour: r("0.01"),
            cap: r("0.5"),
            initial_multiplier: r("2"),
        }
    }

    const HOUR: u64 = 3_600_000;

    #[test]
    fn vol_constant_prices_keep_fraction_zero() {
        let p = vol_params();
        let mut s = VolState::default();
        for i in 0..100 {
            s = s.next(&p, px("100"), i * HOUR).unwrap();
        }
        assert_eq!((s.variance, s.fraction, s.last_ts), (0, Ratio::ZERO, 99 * HOUR));
    }

    #[test]
    fn vol_hand_computed_ewma() {
        // 100 → 101 (r = +1%) → 99.99 (r = −1.01/101 = −1%), λ = 0.94, k = 3, h = 1, hourly.
        let p = vol_params();
        let s0 = VolState::default().next(&p, px("100"), 0).unwrap();
        assert_eq!((s0.variance, s0.last_price, s0.fraction), (0, Some(px("100")), Ratio::ZERO));
        let s1 = s0.next(&p, px("101"), HOUR).unwrap();
        // r² = 1e-4 → 1e12 at 1e16 scale; variance = 0.06 × 1e12.
        assert_eq!(s1.variance, 60_000_000_000);
        // σ = ceil(√6e10) = 244,949 (1e-8 units); target = 3σ = 0.00734847 ≤ 1%/h allowance.
        assert_eq!(s1.fraction, r("0.00734847"));
        let s2 = s1.next(&p, px("99.99"), 2 * HOUR).unwrap();
        // 0.94 × 6e10 + 0.06 × 1e12 = 1.164e11; ceil(√1.164e11) = 341,175; × 3.
        assert_eq!(s2.variance, 116_400_000_000);
        assert_eq!(s2.fraction, r("0.01023525"));
        assert_eq!(s2.initial_fraction(&p).unwrap(), r("0.0204705"));
        // A 0.01% move registers (r² = 1e-8 → 1e8 at the 1e16 scale).
        let s3 = s0.next(&p, px("100.01"), HOUR).unwrap();
        assert_eq!(s3.variance, 6_000_000);
    }

    #[test]
    fn vol_increases_are_rate_limited_and_decreases_immediate() {
        let p = vol_params();
        let s0 = VolState::default().next(&p, px("100"), 0).unwrap();
        // +10%: r² = 1e14, variance 6e12, target 3 × ceil(√6e12) = 0.0734847, but one hour
        // allows only +0.01.
        let s1 = s0.next(&p, px("110"), HOUR).unwrap();
        assert_eq!(s1.variance, 6_000_000_000_000);
        assert_eq!(s1.fraction, r("0.01"));
        // Half an hour later, unchanged price: target 3 × ceil(√5.64e12) = 0.07124607, +0.005.
        let s2 = s1.next(&p, px("110"), HOUR + HOUR / 2).unwrap();
        assert_eq!(s2.fraction, r("0.015"));
        // A clock going backwards allows no increase.
        assert_eq!(s2.next(&p, px("110"), 0).unwrap().fraction, r("0.015"));
        // Target below the applied fraction: falls at once.
        let high = VolState { fraction: r("0.2"), ..s2 };
        let s3 = high.next(&p, px("110"), s2.last_ts + 1).unwrap();
        assert_eq!(s3.fraction, r("0.07124607").min(s3.fraction));
        assert!(s3.fraction < r("0.08"));
        // Never above the cap, even after a crash and a long wait.
        let fast = VolParams { max_increase_per_hour: Ratio::ONE, ..p };
        let s4 = s0.next(&fast, px("0.00000001"), 100 * HOUR).unwrap();
        assert_eq!(s4.fraction, fast.cap);
        let s5 = s4.next(&fast, px("90000000000"), 200 * HOUR).unwrap();
        assert_eq!(s5.fraction, fast.cap);
        assert_eq!(s5.initial_fraction(&fast).unwrap(), Ratio::ONE);
        assert!(s0.next(&p, Price::ZERO, 1).is_err());
    }

    fn bound_name(e: ParamError) -> &'static str {
        match e {
            ParamError::OutOfBounds { name, .. } => name,
            other => panic!("expected OutOfBounds, got {other}"),
        }
    }

    #[test]
    fn validation_names_the_parameter() {
        let t =
            |f: &str, i: &str, m: &str| Tier { notional_floor: q(f), initial_margin: r(i), maintenance_margin: r(m) };
        let err = |im: &str, mm: &str, extra: &[Tier]| bound_name(TierTable::new(r(im), r(mm), extra).unwrap_err());
        assert_eq!(err("0.1", "0", &[]), "maintenance_margin");
        assert_eq!(err("1", "1", &[]), "maintenance_margin");
        assert_eq!(err("0.04", "0.05", &[]), "initial_margin");
        assert_eq!(err("1.01", "0.05", &[]), "initial_margin");
        assert!(TierTable::new(Ratio::ONE, r("0.5"), &[]).is_ok());
        assert_eq!(err("0.1", "0.05", &[t("0", "0.2", "0.1")]), "maintenance_tiers.notional_floor");
        assert_eq!(
            err("0.1", "0.05", &[t("10", "0.2", "0.1"), t("10", "0.3", "0.2")]),
            "maintenance_tiers.notional_floor"
        );
        assert_eq!(err("0.1", "0.05", &[t("10", "0.09", "0.05")]), "maintenance_tiers.initial_margin");
        assert_eq!(err("0.1", "0.05", &[t("10", "0.1", "0.04")]), "maintenance_tiers.maintenance_margin");
        assert_eq!(err("0.1", "0.05", &[t("10", "0.1", "0.2")]), "maintenance_tiers.initial_margin");
        assert_eq!(err("0.1", "0.05", &[t("10", "0.5", "1")]), "maintenance_tiers.maintenance_margin");
        let many: Vec<Tier> = (1..=33).map(|i| t(&i.to_string(), "0.1", "0.05")).collect();
        assert_eq!(err("0.1", "0.05", &many), "maintenance_tiers");
        assert!(TierTable::new(r("0.1"), r("0.05"), &many[..32]).is_ok());

        let oi = |lo: &str, hi: &str| OiScaling { lower_cap: q(lo), upper_cap: q(hi) }.validate();
        assert_eq!(bound_name(oi("-1", "5").unwrap_err()), "open_interest_scaling.lower_cap");
        assert_eq!(bound_name(oi("5", "5").unwrap_err()), "open_interest_scaling.upper_cap");
        assert!(oi("0", "5").is_ok());

        let base = vol_params();
        base.validate().unwrap();
        let cases: [(VolParams, &str); 12] = [
            (VolParams { lambda: Ratio::ZERO, ..base }, "volatility_margin.lambda"),
            (VolParams { lambda: Ratio::ONE, ..base }, "volatility_margin.lambda"),
            (VolParams { multiplier: Ratio::ZERO, ..base }, "volatility_margin.multiplier"),
            (VolParams { multiplier: r("100.00000001"), ..base }, "volatility_margin.multiplier"),
            (VolParams { horizon_samples: 0, ..base }, "volatility_margin.horizon_samples"),
            (VolParams { horizon_samples: 100_001, ..base }, "volatility_margin.horizon_samples"),
            (VolParams { max_increase_per_hour: Ratio::ZERO, ..base }, "volatility_margin.max_increase_per_hour"),
            (VolParams { max_increase_per_hour: r("1.00000001"), ..base }, "volatility_margin.max_increase_per_hour"),
            (VolParams { cap: Ratio::ZERO, ..base }, "volatility_margin.cap"),
            (VolParams { cap: Ratio::ONE, ..base }, "volatility_margin.cap"),
            (VolParams { initial_multiplier: r("0.99999999"), ..base }, "volatility_margin.initial_multiplier"),
            (VolParams { initial_multiplier: r("10.00000001"), ..base }, "volatility_margin.initial_multiplier"),
        ];
        for (p, name) in cases {
            assert_eq!(bound_name(p.validate().unwrap_err()), name);
        }
    }
}
