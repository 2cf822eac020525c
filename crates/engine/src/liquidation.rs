//! Liquidation math, pure and stateless: the size to close from a shortage, the liquidator fee
//! and its escalation, the insurance-fund fee cap, the bankruptcy quote and price, the fillable
//! (limit) price of an engine liquidation order, the insurance-fund delta of a fill, pacing, the
//! liquidator transfer price and the backstop trigger.
//!
//! Sources (../shared/reference): Drift protocol-v2 `math/liquidation.rs` (anchors-onchain.md §2),
//! dYdX v4 `x/clob/keeper/liquidations.go` (§4), Hyperliquid's partial liquidation and backstop
//! (anchors-offchain.md §1.2).
//!
//! Everything is fixed-point ([`crate::num`]) with checked arithmetic; wide intermediates are
//! 256-bit. Every division names its rounding, chosen against the liquidated account and in
//! favour of solvency: the size to close rounds up, fees charged to the account round up, the
//! insurance-fee cap (a limit that protects the account from bankruptcy) rounds down, the
//! bankruptcy quote rounds toward +∞ and the limit price of a liquidation order rounds to the
//! side where the account gets no less than the formula. Bad input is a typed error, never a
//! panic.

use crate::error::{check_range, ParamError};
use crate::num::{
    checked_mul, div_floor_exact, div_round, div_wide, mul_div, mul_wide, out_of_range, pow10, NumError, NumResult,
    Price, Quote, Ratio, Round, Size, NOTIONAL_TO_QUOTE, RATIO_ONE,
};
use ethnum::I256;
use serde::{Deserialize, Serialize};

/// `n / d` in 256 bits, rounded as asked, narrowed to `i128`.
fn div_i256(n: I256, d: I256, round: Round) -> NumResult<i128> {
    i128::try_from(div_wide(n, d, round)?).map_err(|_| NumError::Overflow)
}

fn mul(a: I256, b: I256) -> NumResult<I256> {
    mul_wide(a, b)
}

fn sub(a: I256, b: I256) -> NumResult<I256> {
    a.checked_sub(b).ok_or(NumError::Overflow)
}

// ---------------------------------------------------------------------------------------------
// 1. Parameters
// ---------------------------------------------------------------------------------------------

/// Liquidation parameters of a market. Every field has a default (serde fills missing fields),
/// and [`LiquidationParams::validate`] checks the documented bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiquidationParams {
    /// Base discount granted to whoever takes over a liquidated position (external liquidator),
    /// as a fraction of the notional. Bounds: 0 ≤ liquidator_fee ≤ max_liquidator_fee.
    /// Default 0.01 (Drift's test markets, anchors-onchain.md §2 vectors 3 and 5).
    pub liquidator_fee: Ratio,
    /// Maximum insurance-fund fee, as a fraction of the notional closed: the cap of Drift's IF
    /// fee (itself capped by [`insurance_fee_cap`]) and dYdX's `max_liquidation_fee_ppm` for
    /// book liquidations ([`insurance_fund_delta`]). Bounds: 0 ≤ insurance_fee ≤ 1.
    /// Default 0.01 (Drift vector 5; dYdX's sample config uses 0.015).
    pub insurance_fee: Ratio,
    /// Ceiling of the escalating liquidator fee (the effective ceiling is also at most the
    /// maintenance fraction, see [`liquidator_fee_at`]). Bounds: liquidator_fee ≤
    /// max_liquidator_fee ≤ 0.5. Default 0.03 = 3 × liquidator_fee (Drift's
    /// `MAX_LIQUIDATION_MULTIPLIER`).
    pub max_liquidator_fee: Ratio,
    /// Time in liquidation before the liquidator fee starts to escalate. Bounds: ≤ 86,400,000
    /// (one day). Default 600,000 ms: Drift's 1,500-slot grace period at 400 ms per slot.
    pub fee_escalation_start_ms: u64,
    /// Escalation of the liquidator fee **per second** of the whole time in liquidation once
    /// past the start. Bounds: 0 ≤ fee_escalation_per_second ≤ 0.01. Default 0.0000025: Drift's
    /// `LIQUIDATION_FEE_INCREASE_PER_SLOT` of 1e-6 per 400 ms slot.
    pub fee_escalation_per_second: Ratio,
    /// Positions with a notional at or below this close whole; larger ones are paced.
    /// Bounds: 0 ≤ partial_threshold ≤ 1e13. Default 100,000 (Hyperliquid: 100k USDC).
    pub partial_threshold: Quote,
    /// At most this fraction of a large position (of its size when the window opened) is
    /// liquidated per window. Bounds: 0 < max_fraction_per_window ≤ 1. Default 0.2
    /// (Hyperliquid: 20%).
    pub max_fraction_per_window: Ratio,
    /// Length of a pacing window (the cooldown). Bounds: 1 ≤ window_ms ≤ 86,400,000.
    /// Default 30,000 (Hyperliquid: 30 s).
    pub window_ms: u64,
    /// An engine liquidation order not filled within this time expires and is re-issued (at a
    /// fresh fillable price). Bounds: 1 ≤ order_ttl_ms ≤ 3,600,000. Default 3,000: one
    /// Hyperliquid mark/oracle update (≈3 s, anchors-offchain.md §1.4); no reference gives a TTL.
    pub order_ttl_ms: u64,
    /// The backstop vault takes over when equity < backstop_threshold × maintenance.
    /// Bounds: 0 ≤ backstop_threshold ≤ 1 (0 disables this trigger). Default 0.66666667:
    /// Hyperliquid's 2/3, rounded up so the trigger is never later than 2/3.
    pub backstop_threshold: Ratio,
    /// The backstop vault also takes over after this long in liquidation without any
    /// liquidation fill. Bounds: 1 ≤ backstop_timeout_ms ≤ 86,400,000. Default 60,000: two
    /// pacing windows; Drift's liquidation duration is about one minute (no reference gives a
    /// backstop timeout).
    pub backstop_timeout_ms: u64,
    /// dYdX `bankruptcy_adjustment_ppm` (BA) of the fillable price: how fast the order's
    /// limit moves from the oracle toward the spread as the account approaches bankruptcy.
    /// Bounds: 1 ≤ bankruptcy_adjustment ≤ 10 (dYdX requires ≥ 1). Default 1 (dYdX sample).
    pub bankruptcy_adjustment: Ratio,
    /// dYdX `spread_to_maintenance_margin_ratio_ppm` (SMMR): the largest spread of the
    /// fillable price from the oracle, as a multiple of the position's maintenance fraction.
    /// Bounds: 0 < spread_to_maintenance ≤ 10 (dYdX requires > 0). Default 1.5 (dYdX sample).
    pub spread_to_maintenance: Ratio,
}

impl Default for LiquidationParams {
    fn default() -> Self {
        LiquidationParams {
            liquidator_fee: Ratio::from_raw(1_000_000),
            insurance_fee: Ratio::from_raw(1_000_000),
            max_liquidator_fee: Ratio::from_raw(3_000_000),
            fee_escalation_start_ms: 600_000,
            fee_escalation_per_second: Ratio::from_raw(250),
            partial_threshold: Quote::from_raw(100_000 * Quote::ONE_RAW),
            max_fraction_per_window: Ratio::from_raw(20_000_000),
            window_ms: 30_000,
            order_ttl_ms: 3_000,
            backstop_threshold: Ratio::from_raw(66_666_667),
            backstop_timeout_ms: 60_000,
            bankruptcy_adjustment: Ratio::ONE,
            spread_to_maintenance: Ratio::from_raw(150_000_000),
        }
    }
}

const DAY_MS: u64 = 86_400_000;

impl LiquidationParams {
    /// Check every bound documented on the fields; the error names the parameter.
    pub fn validate(&self) -> Result<(), ParamError> {
        let r = Ratio::from_raw;
        check_range(
            "liquidation.liquidator_fee",
            self.liquidator_fee,
            Ratio::ZERO,
            r(10_000_000),
            "0 ≤ liquidator_fee ≤ 0.1",
        )?;
        check_range(
            "liquidation.max_liquidator_fee",
            self.max_liquidator_fee,
            self.liquidator_fee,
            r(50_000_000),
            "liquidator_fee ≤ max_liquidator_fee ≤ 0.5",
        )?;
        check_range("liquidation.insurance_fee", self.insurance_fee, Ratio::ZERO, Ratio::ONE, "0 ≤ insurance_fee ≤ 1")?;
        check_range(
            "liquidation.fee_escalation_start_ms",
            self.fee_escalation_start_ms,
            0,
            DAY_MS,
            "fee_escalation_start_ms ≤ 86400000",
        )?;
        check_range(
            "liquidation.fee_escalation_per_second",
            self.fee_escalation_per_second,
            Ratio::ZERO,
            r(1_000_000),
            "0 ≤ fee_escalation_per_second ≤ 0.01",
        )?;
        check_range(
            "liquidation.partial_threshold",
            self.partial_threshold,
            Quote::ZERO,
            Quote::from_raw(pow10(13) * Quote::ONE_RAW),
            "0 ≤ partial_threshold ≤ 1e13",
        )?;
        check_range(
            "liquidation.max_fraction_per_window",
            self.max_fraction_per_window,
            r(1),
            Ratio::ONE,
            "0 < max_fraction_per_window ≤ 1",
        )?;
        check_range("liquidation.window_ms", self.window_ms, 1, DAY_MS, "1 ≤ window_ms ≤ 86400000")?;
        check_range("liquidation.order_ttl_ms", self.order_ttl_ms, 1, 3_600_000, "1 ≤ order_ttl_ms ≤ 3600000")?;
        check_range(
            "liquidation.backstop_threshold",
            self.backstop_threshold,
            Ratio::ZERO,
            Ratio::ONE,
            "0 ≤ backstop_threshold ≤ 1",
        )?;
        check_range(
            "liquidation.backstop_timeout_ms",
            self.backstop_timeout_ms,
            1,
            DAY_MS,
            "1 ≤ backstop_timeout_ms ≤ 86400000",
        )?;
        check_range(
            "liquidation.bankruptcy_adjustment",
            self.bankruptcy_adjustment,
            Ratio::ONE,
            r(1_000_000_000),
            "1 ≤ bankruptcy_adjustment ≤ 10",
        )?;
        check_range(
            "liquidation.spread_to_maintenance",
            self.spread_to_maintenance,
            r(1),
            r(1_000_000_000),
            "0 < spread_to_maintenance ≤ 10",
        )
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Size to close
// ---------------------------------------------------------------------------------------------

/// The size to close so that the account's shortage disappears, in closed form (Drift
/// `calculate_base_asset_amount_to_cover_margin_shortage`, anchors-onchain.md §2):
///
/// `size = shortage / (P·(MR − liquidator_fee) − P·insurance_fee)`
///
/// - `shortage`: the liquidation-end requirement minus equity (what must be restored);
/// - `price`: the price the position is valued at (mark); must be positive;
/// - `margin_fraction`: the liquidation-end fraction of this position, i.e. the requirement
///   that closing one unit frees, per unit of notional. With notional tiers pass the marginal
///   fraction of the lowest tier the close can reach: a smaller fraction gives a larger size,
///   so the result stays "never less" than needed; the engine may re-run after each fill;
/// - the two fees are what closing one unit costs the account, per unit of notional.
///
/// Each unit closed raises `equity − requirement` by `P·(MR − liquidator_fee − insurance_fee)`.
/// Rounded **up** to the size scale (1e-8): closing this much restores the level, and one
/// unit of 1e-8 less would not. Computed exactly (Drift floors each product; we do not).
///
/// Returns `Some(0)` when there is no shortage, and `None` when the denominator is ≤ 0: closing
/// cannot help (the fees eat the freed requirement), so the caller closes everything.
/// Negative fractions or fees are errors.
pub fn base_to_cover(
    shortage: Quote,
    price: Price,
    margin_fraction: Ratio,
    liquidator_fee: Ratio,
    insurance_fee: Ratio,
) -> NumResult<Option<Size>> {
    if !price.is_positive() {
        return Err(out_of_range("price", price));
    }
    for (what, v) in
        [("margin_fraction", margin_fraction), ("liquidator_fee", liquidator_fee), ("insurance_fee", insurance_fee)]
    {
        if v.is_negative() {
            return Err(out_of_range(what, v));
        }
    }
    if !shortage.is_positive() {
        return Ok(Some(Size::ZERO));
    }
    let k = i128::from(margin_fraction.raw()) - i128::from(liquidator_fee.raw()) - i128::from(insurance_fee.raw());
    if k <= 0 {
        return Ok(None);
    }
    // size_raw = shortage_raw·1e6⁻¹ / (price_raw·1e8⁻¹ · k·1e8⁻¹) · 1e8 = shortage_raw·1e18 / (price_raw·k);
    let d = i128::from(price.raw()).checked_mul(k).ok_or(NumError::Overflow)?;
    Ok(Some(Size::from_raw(mul_div(shortage.raw(), pow10(18), d, Round::Ceil)?)))
}

// ---------------------------------------------------------------------------------------------
// 3. Fees
// ---------------------------------------------------------------------------------------------

/// The liquidator fee after `elapsed_ms` in liquidation (Drift `get_liquidation_fee`,
/// anchors-onchain.md §2):
///
/// - before `fee_escalation_start_ms`: `liquidator_fee`;
/// - from then on: `liquidator_fee + fee_escalation_per_second × elapsed_ms / 1000`, where the
///   escalation counts the **whole** time in liquidation, not only the time past the start (as
///   Drift does: its fee jumps at the end of the grace period; the golden 10,000 slots → 3%
///   needs this);
/// - always capped at `min(max_liquidator_fee, maintenance_fraction)`: a discount beyond the
///   maintenance fraction would itself push a just-liquidatable account into bankruptcy. (Drift
///   applies its cap only after the grace period; the difference matters only when the base fee
///   exceeds the maintenance fraction, a misconfiguration.)
///
/// Time unit: Drift counts 400 ms slots; 1e-6 per slot is 2.5e-6 per second, and the 1,500-slot
/// grace period is 600,000 ms. The escalation is rounded **up** to 1e-8 (the fee is a debit of
/// the account; Drift floors whole slots instead — the two differ by less than 1e-8).
pub fn liquidator_fee_at(params: &LiquidationParams, maintenance_fraction: Ratio, elapsed_ms: u64) -> Ratio {
    let cap = params.max_liquidator_fee.min(maintenance_fraction).max(Ratio::ZERO);
    let base = i128::from(params.liquidator_fee.raw().max(0));
    let fee = if elapsed_ms < params.fee_escalation_start_ms {
        base
    } else {
        // rate (< 2^63) × ms (< 2^64) < 2^127: exact in i128.
        let step = i128::from(params.fee_escalation_per_second.raw().max(0)) * i128::from(elapsed_ms);
        base.saturating_add(step.div_euclid(1000) + i128::from(step.rem_euclid(1000) != 0))
    };
    // min with a non-negative i64 cap: fits.
    Ratio::from_raw(fee.min(i128::from(cap.raw())) as i64)
}

/// The insurance-fund fee of an external liquidation, capped so that the fee itself cannot make
/// the account bankrupt (Drift `calculate_perp_if_fee`, anchors-onchain.md §2):
///
/// `if_fee = min(max_insurance_fee, 0.95 × (MR − liquidator_fee − shortage / (|base|·P)))`,
/// and 0 when the slack in parentheses is ≤ 0 (never negative).
///
/// `margin_fraction` is the same liquidation-end fraction as in [`base_to_cover`]; `base` the
/// position's size (sign ignored); `price` the mark. Computed exactly and rounded **down** to
/// 1e-8: it is an upper limit that protects the account. A zero base gives 0.
pub fn insurance_fee_cap(
    shortage: Quote,
    base: Size,
    price: Price,
    margin_fraction: Ratio,
    liquidator_fee: Ratio,
    max_insurance_fee: Ratio,
) -> NumResult<Ratio> {
    if !price.is_positive() {
        return Err(out_of_range("price", price));
    }
    if base.is_zero() || max_insurance_fee <= Ratio::ZERO {
        return Ok(Ratio::ZERO);
    }
    // shortage/(b·P) as a raw ratio is shortage_raw·1e18/(b_raw·p_raw), so
    // slack_raw = ((MR − lf)·b·p − shortage·1e18) / (b·p), and if_fee = ⌊95·slack / 100⌋.
    let bp = mul(I256::from(base.raw().checked_abs().ok_or(NumError::Overflow)?), I256::from(price.raw()))?;
    let spread = I256::from(i128::from(margin_fraction.raw()) - i128::from(liquidator_fee.raw()));
    let slack = sub(mul(spread, bp)?, mul(I256::from(shortage.raw()), I256::from(pow10(18)))?)?;
    if slack <= 0 {
        return Ok(Ratio::ZERO);
    }
    let fee = div_i256(mul(slack, I256::from(95))?, mul(bp, I256::from(100))?, Round::Floor)?;
    Ratio::try_from_raw(fee.min(i128::from(max_insurance_fee.raw())))
}

// ---------------------------------------------------------------------------------------------
// 4. Bankruptcy
// ---------------------------------------------------------------------------------------------

/// The quote the account receives (positive) or pays (negative) for closing part of a position
/// such that its equity ends exactly at its proportional share — the dYdX bankruptcy price in
/// quote (`GetBankruptcyPriceInQuoteQuantums`, anchors-onchain.md §4):
///
/// `quote = −DNNV − TNC·|DMMR|/TMMR`
///
/// In our terms:
/// - `closed_value` = the signed value at the mark of the part being closed (`closed_size ×
///   mark`, positive for a long, negative for a short); dYdX's DNNV, the change of the net
///   notional value, is its negation;
/// - `equity` = the account's equity (dYdX TNC), negative when bankrupt;
/// - `closed_maintenance` = the maintenance requirement that closing this part removes
///   (|DMMR|, before minus after), in `[0, total_maintenance]`;
/// - `total_maintenance` = the account's maintenance requirement (TMMR), positive.
///
/// So `quote = closed_value − equity × closed_maintenance / total_maintenance`: closing the
/// whole book there leaves equity 0; closing a part leaves the rest with its share of the
/// equity. Rounded toward **+∞** (the account never gets less), so a close at this quote never
/// needs the insurance fund. We use the mark where dYdX uses the oracle.
pub fn bankruptcy_quote(
    closed_value: Quote,
    equity: Quote,
    closed_maintenance: Quote,
    total_maintenance: Quote,
) -> NumResult<Quote> {
    if !total_maintenance.is_positive() {
        return Err(out_of_range("total_maintenance", total_maintenance));
    }
    if closed_maintenance.is_negative() || closed_maintenance > total_maintenance {
        return Err(out_of_range("closed_maintenance", closed_maintenance));
    }
    // V − ⌊E·m/M⌋ = ⌈V − E·m/M⌉ (the product in 256 bits only when it overflows 128).
    let share = mul_div(equity.raw(), closed_maintenance.raw(), total_maintenance.raw(), Round::Floor)?;
    closed_value.checked_sub(Quote::from_raw(share))
}

/// The bankruptcy price per unit for closing `closed` (signed: positive = part of a long,
/// negative = part of a short) at `bankruptcy_quote` ([`bankruptcy_quote`]): `quote / closed`.
///
/// Rounded so that a close at this price is never worse for the account than the quote: up
/// for a long (it sells and receives `price × size`), down for a short (it buys back and pays).
/// The result may be ≤ 0 when the account could close at any price and stay solvent (the
/// caller then has no bankruptcy to resolve). `closed = 0` is an error.
pub fn bankruptcy_price(bankruptcy_quote: Quote, closed: Size) -> NumResult<Price> {
    if closed.is_zero() {
        return Err(NumError::DivisionByZero);
    }
    let round = if closed.is_positive() { Round::Ceil } else { Round::Floor };
    bankruptcy_quote.per_unit(closed, round)
}

// ---------------------------------------------------------------------------------------------
// 5. Book liquidation: fillable price and insurance-fund delta
// ---------------------------------------------------------------------------------------------

/// The limit price of an engine liquidation order (dYdX `GetFillablePrice`, anchors-onchain.md
/// §4):
///
/// `fillable = (PNNV − ABR·SMMR·PMMR) / PS`, `ABR = clamp(BA·(1 − TNC/TMMR), 0, 1)`
///
/// - `position_value` (PNNV) = the position's signed value at the mark;
/// - `position_size` (PS) = its signed size, non-zero;
/// - `position_maintenance` (PMMR) = its maintenance requirement;
/// - `equity` (TNC) and `total_maintenance` (TMMR, positive) = the account's;
/// - BA and SMMR from `params` (`bankruptcy_adjustment`, `spread_to_maintenance`).
///
/// A healthy-ish account (equity near maintenance) gets a limit near the mark; as equity falls
/// toward 0, the limit moves away from the mark by up to `SMMR × maintenance fraction`, so the
/// order can cross the spread.
///
/// Rounding: the exact rational is rounded to 1e-8 **up for a long** (the order sells: its
/// limit is the lowest acceptable price) and **down for a short** (the order buys: the highest
/// acceptable price), so the order never accepts a price worse for the account than the
/// formula — which bounds what the insurance fund may have to cover. dYdX rounds its subticks
/// the same way (up when liquidating a long, down for a short).
pub fn fillable_price(
    params: &LiquidationParams,
    position_value: Quote,
    position_size: Size,
    position_maintenance: Quote,
    equity: Quote,
    total_maintenance: Quote,
) -> NumResult<Price> {
    if position_size.is_zero() {
        return Err(NumError::DivisionByZero);
    }
    if !total_maintenance.is_positive() {
        return Err(out_of_range("total_maintenance", total_maintenance));
    }
    if position_maintenance.is_negative() {
        return Err(out_of_range("position_maintenance", position_maintenance));
    }
    let round = if position_size.is_positive() { Round::Ceil } else { Round::Floor };
    let f = Fillable {
        ba: i128::from(params.bankruptcy_adjustment.raw()),
        smmr: i128::from(params.spread_to_maintenance.raw()),
        pnnv: position_value.raw(),
        ps: position_size.raw(),
        pmmr: position_maintenance.raw(),
        tnc: equity.raw(),
        tmmr: total_maintenance.raw(),
        round,
    };
    Price::try_from_raw(match f.narrow() {
        Some(raw) => raw,
        None => f.wide()?,
    })
}

/// The raw inputs of [`fillable_price`] (names as in its formula) and the rounding of the price.
#[derive(Clone, Copy, Debug)]
struct Fillable {
    ba: i128,
    smmr: i128,
    pnnv: i128,
    ps: i128,
    pmmr: i128,
    tnc: i128,
    tmmr: i128,
    round: Round,
}

impl Fillable {
    /// The price in 128 bits, `None` where an intermediate overflows. With
    /// `X = PNNV·1e10 = q·PS + r` (floor division) and `Y = a·SMMR·PMMR·100`, the price is
    /// `q + (r·b − Y) / (b·PS)` exactly — the same rational as [`Self::wide`], split so that no
    /// term carries the `1e8 · 1e10` scale factors at once.
    fn narrow(&self) -> Option<i128> {
        let (tmmr, mut pmmr) = (self.tmmr, self.pmmr);
        let a = checked_mul(self.ba, tmmr.checked_sub(self.tnc)?)?;
        let b = checked_mul(RATIO_ONE, tmmr)?;
        let (a, b) = if a <= 0 {
            (0, 1)
        } else if a >= b {
            (1, 1)
        } else if pmmr == tmmr {
            // One position carries the whole requirement: PMMR / TMMR cancels out of a·PMMR / b,
            // which keeps the product below 2^127 for accounts of any ordinary size.
            pmmr = 1;
            (a, RATIO_ONE)
        } else {
            (a, b)
        };
        let ps = self.ps;
        let x = checked_mul(self.pnnv, NOTIONAL_TO_QUOTE)?;
        let (q, _) = div_floor_exact(x, ps).ok()?;
        let r = x.checked_sub(checked_mul(q, ps)?)?;
        let y = checked_mul(checked_mul(checked_mul(a, self.smmr)?, pmmr)?, NOTIONAL_TO_QUOTE / RATIO_ONE)?;
        let fraction = div_round(checked_mul(r, b)?.checked_sub(y)?, checked_mul(b, ps)?, self.round).ok()?;
        q.checked_add(fraction)
    }

    /// The price in 256 bits.
    fn wide(&self) -> NumResult<i128> {
        // ABR = a / b with b = 1e8·TMMR (BA is a raw ratio), clamped to [0, 1].
        let tmmr = I256::from(self.tmmr);
        let gap = sub(tmmr, I256::from(self.tnc))?;
        let (a, b) = {
            let a = mul(I256::from(self.ba), gap)?;
            let b = mul(I256::from(RATIO_ONE), tmmr)?;
            if a <= 0 {
                (I256::ZERO, I256::ONE)
            } else if a >= b {
                (I256::ONE, I256::ONE)
            } else {
                (a, b)
            }
        };
        // price_raw = (PNNV·b·1e8 − a·SMMR·PMMR)·1e10 / (b·1e8·PS), all raw.
        let b1 = mul(b, I256::from(RATIO_ONE))?;
        let spread = mul(mul(a, I256::from(self.smmr))?, I256::from(self.pmmr))?;
        let num = mul(sub(mul(I256::from(self.pnnv), b1)?, spread)?, I256::from(NOTIONAL_TO_QUOTE))?;
        let den = mul(b1, I256::from(self.ps))?;
        div_i256(num, den, self.round)
    }
}

/// The insurance-fund delta of a liquidation fill (dYdX `GetLiquidationInsuranceFundDelta`,
/// anchors-onchain.md §4): with `Δ = fill_quote − bankruptcy_quote` (both signed as the account
/// sees them: positive = received):
/// - `Δ ≤ 0`: the fill is worse than bankruptcy; the fund pays `−Δ` (returned negative);
/// - `Δ > 0`: the fund receives `min(max_fee × |fill_quote|, Δ)` (returned positive); the rest of
///   `Δ` stays with the account.
///
/// The fee `max_fee × |fill_quote|` is rounded **up** (a debit of the account); it is capped by
/// `Δ`, so the account never ends below its bankruptcy share.
pub fn insurance_fund_delta(fill_quote: Quote, bankruptcy_quote: Quote, max_fee: Ratio) -> NumResult<Quote> {
    if max_fee.is_negative() {
        return Err(out_of_range("max_fee", max_fee));
    }
    let delta = fill_quote.checked_sub(bankruptcy_quote)?;
    if !delta.is_positive() {
        return Ok(delta);
    }
    Ok(fill_quote.abs()?.mul_ratio_ceil(max_fee)?.min(delta))
}

// ---------------------------------------------------------------------------------------------
// 6. Pacing, takeover price, backstop
// ---------------------------------------------------------------------------------------------

/// The most that may be liquidated now (DESIGN §3, Hyperliquid 20% / 30 s, anchors-offchain.md
/// §1.2):
/// - a position with `notional ≤ partial_threshold` closes whole: `position_size_abs`;
/// - a larger one closes at most `max_fraction_per_window × window_open` per window, minus what
///   was already closed in the window: `min(position, allowance − closed_in_window)`, never
///   negative.
///
/// `window_open` is the position's size when the current window opened (the caller opens a
/// window at the first liquidation and a new one `window_ms` later; for a fresh window pass the
/// current size). The allowance is rounded **up** to 1e-8: in favour of solvency, and a large
/// position always makes progress. (Hyperliquid sends the whole position during its cooldown;
/// we pace every window instead, as DESIGN §3 asks.) Signs are ignored; infallible.
pub fn paced_size(
    position_size_abs: Size,
    notional: Quote,
    params: &LiquidationParams,
    closed_in_window: Size,
    window_open: Size,
) -> Size {
    let position = position_size_abs.raw().unsigned_abs();
    if notional.raw().unsigned_abs() <= params.partial_threshold.raw().unsigned_abs() {
        return Size::from_raw(position.min(i128::MAX as u128) as i128);
    }
    let frac = params.max_fraction_per_window.raw().clamp(0, Ratio::ONE_RAW);
    let open = I256::from(window_open.raw().unsigned_abs());
    // ⌈open × frac / 1e8⌉ ≤ open, which fits i128 when open does.
    let allowance = (open * I256::from(frac) + I256::from(RATIO_ONE - 1)) / I256::from(RATIO_ONE);
    let left = allowance - I256::from(closed_in_window.raw().unsigned_abs());
    let left = u128::try_from(left.max(I256::ZERO)).unwrap_or(u128::MAX);
    Size::from_raw(position.min(left).min(i128::MAX as u128) as i128)
}

/// The price at which an external liquidator takes a position over: `mark × (1 − discount)` for a
/// long (the account sells; rounded down) and `mark × (1 + discount)` for a short (the account
/// buys back; rounded up) — Drift's transfer price (anchors-onchain.md §2), rounded against the
/// account. `discount` is [`liquidator_fee_at`]; it must lie in `[0, 1]`.
pub fn transfer_price(mark: Price, position: Size, discount: Ratio) -> NumResult<Price> {
    if discount.is_negative() || discount > Ratio::ONE {
        return Err(out_of_range("discount", discount));
    }
    if position.is_positive() {
        mark.scale(Ratio::ONE.checked_sub(discount)?, Round::Floor)
    } else {
        mark.scale(Ratio::ONE.checked_add(discount)?, Round::Ceil)
    }
}

/// Whether the backstop vault takes over now: `equity < backstop_threshold × maintenance` (the
/// product rounded up, so the trigger is never late) or `since_last_liquidation_ms ≥
/// backstop_timeout_ms` (no liquidation fill for that long). Hyperliquid's rule is the first
/// (anchors-offchain.md §1.2); the timeout is DESIGN §3's.
pub fn backstop_due(
    equity: Quote,
    maintenance: Quote,
    params: &LiquidationParams,
    since_last_liquidation_ms: u64,
) -> NumResult<bool> {
    if since_last_liquidation_ms >= params.backstop_timeout_ms {
        return Ok(true);
    }
    Ok(equity < maintenance.mul_ratio_ceil(params.backstop_threshold)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::{px, q, r, sz};

    #[test]
    fn drift_base_to_cover_margin_shortage() {
        // anchors-onchain.md §2, vector 1 (Drift math/liquidation/tests.rs
        // calculate_base_asset_amount_to_cover_margin_shortage): shortage $10, MR 10%, P $100.
        let cover = |lf: &str, iff: &str| base_to_cover(q("10"), px("100"), r("0.1"), r(lf), r(iff)).unwrap();
        assert_eq!(cover("0", "0"), Some(sz("1")));
        // 10/9 = 1.111111111…, rounded up at 8 dp (Drift floors to 1.111111111 at 9 dp).
        assert_eq!(cover("0.01", "0"), Some(sz("1.11111112")));
        assert_eq!(cover("0.01", "0.01"), Some(sz("1.25")));
    }

    #[test]
    fn base_to_cover_edges() {
        // Fees eat the whole freed requirement: closing cannot help.
        assert_eq!(base_to_cover(q("10"), px("100"), r("0.1"), r("0.1"), Ratio::ZERO), Ok(None));
        assert_eq!(base_to_cover(q("10"), px("100"), r("0.1"), r("0.05"), r("0.06")), Ok(None));
        // No shortage: nothing to close.
        assert_eq!(base_to_cover(Quote::ZERO, px("100"), r("0.1"), Ratio::ZERO, Ratio::ZERO), Ok(Some(Size::ZERO)));
        assert_eq!(base_to_cover(q("-5"), px("100"), r("0.1"), Ratio::ZERO, Ratio::ZERO), Ok(Some(Size::ZERO)));
        assert!(base_to_cover(q("10"), Price::ZERO, r("0.1"), Ratio::ZERO, Ratio::ZERO).is_err());
        assert!(base_to_cover(q("10"), px("100"), r("0.1"), r("-0.01"), Ratio::ZERO).is_err());
        // Extreme but valid inputs go through the wide path.
        let huge =
            base_to_cover(Quote::from_raw(i128::MAX / 4), Price::from_raw(1), Ratio::ONE, Ratio::ZERO, Ratio::ZERO);
        assert_eq!(huge, Err(NumError::Overflow));
        assert_eq!(
            base_to_cover(Quote::from_raw(1), Price::MAX, Ratio::from_raw(1), Ratio::ZERO, Ratio::ZERO),
            Ok(Some(Size::from_raw(1)))
        );
    }

    #[test]
    fn drift_liquidation_fee_escalation() {
        // anchors-onchain.md §2, vector 2 (Drift get_liquidation_fee): base 2%, max 5%.
        // Slots → ms at 400 ms per slot; +1e-6 per slot = 2.5e-6 per second after 1,500 slots.
        let p = LiquidationParams {
            liquidator_fee: r("0.02"),
            max_liquidator_fee: r("0.05"),
            fee_escalation_start_ms: 1_500 * 400,
            fee_escalation_per_second: r("0.0000025"),
            ..LiquidationParams::default()
        };
        p.validate().unwrap();
        let mm = r("0.1");
        assert_eq!(liquidator_fee_at(&p, mm, 10 * 400), r("0.02"));
        assert_eq!(liquidator_fee_at(&p, mm, 10_000 * 400), r("0.03"));
        assert_eq!(liquidator_fee_at(&p, mm, 100_000 * 400), r("0.05"));
        // The grace period: base fee up to its last millisecond, then the whole elapsed time counts.
        assert_eq!(liquidator_fee_at(&p, mm, 599_999), r("0.02"));
        assert_eq!(liquidator_fee_at(&p, mm, 600_000), r("0.0215"));
        // Capped at the maintenance fraction when that is lower.
        assert_eq!(liquidator_fee_at(&p, r("0.04"), 100_000 * 400), r("0.04"));
        // One millisecond of escalation (2.5e-9) rounds up to 1e-8.
        assert_eq!(liquidator_fee_at(&p, mm, 600_001), r("0.02150001"));
        // Never overflows.
        assert_eq!(liquidator_fee_at(&p, mm, u64::MAX), r("0.05"));
    }

    #[test]
    fn drift_insurance_fee_cap() {
        // anchors-onchain.md §2, vector 3 (Drift calculate_perp_if_fee): 10 base @ $100, MR 5%,
        // liquidator fee 1%, max IF fee 5%.
        let cap = |shortage: &str| {
            insurance_fee_cap(q(shortage), sz("10"), px("100"), r("0.05"), r("0.01"), r("0.05")).unwrap()
        };
        assert_eq!(cap("20"), r("0.019"));
        assert_eq!(cap("1"), r("0.03705"));
        assert_eq!(cap("1000"), Ratio::ZERO);
        // The maximum binds when the slack is large; a short position is the same.
        assert_eq!(cap("0"), r("0.038"));
        assert_eq!(
            insurance_fee_cap(Quote::ZERO, sz("-10"), px("100"), r("0.05"), r("0.01"), r("0.02")).unwrap(),
            r("0.02")
        );
        // Slack exactly 0 and MR below the liquidator fee: 0.
        assert_eq!(cap("40"), Ratio::ZERO);
        assert_eq!(
            insurance_fee_cap(q("1"), sz("10"), px("100"), r("0.01"), r("0.02"), r("0.05")).unwrap(),
            Ratio::ZERO
        );
        // Rounded down: 0.95 × (0.04 − 1/3000) = 0.03768333…
        assert_eq!(
            insurance_fee_cap(q("1"), sz("30"), px("100"), r("0.05"), r("0.01"), r("0.05")).unwrap(),
            r("0.03768333")
        );
        assert_eq!(insurance_fee_cap(q("1"), Size::ZERO, px("100"), r("0.05"), r("0.01"), r("0.05")), Ok(Ratio::ZERO));
    }

    /// dYdX test setup (anchors-onchain.md §4): BTC $50,000, IM 20%, MM 10%.
    const BTC: &str = "50000";

    /// (closed value, equity, closed maintenance, total maintenance) of a BTC position with `usdc`
    /// of cash, closing `closed` of it.
    fn dydx(size: &str, usdc: &str, closed: &str) -> (Quote, Quote, Quote, Quote) {
        let mark = px(BTC);
        let value = sz(size).value_at(mark, Round::Floor).unwrap();
        let equity = q(usdc).checked_add(value).unwrap();
        let maint = |s: &str| sz(s).notional(mark, Round::Ceil).unwrap().mul_ratio_ceil(r("0.1")).unwrap();
        let closed_value = sz(closed).value_at(mark, Round::Floor).unwrap();
        (closed_value, equity, maint(closed), maint(size))
    }

    #[test]
    fn dydx_bankruptcy_quote() {
        // anchors-onchain.md §4, vector 1 (dYdX TestGetBankruptcyPriceInQuoteQuantums).
        let quote = |(v, e, m, t): (Quote, Quote, Quote, Quote)| bankruptcy_quote(v, e, m, t).unwrap();
        assert_eq!(quote(dydx("0.1", "-4501", "0.1")), q("4501"));
        assert_eq!(quote(dydx("-0.1", "5499", "-0.1")), q("-5499"));
        assert_eq!(quote(dydx("0.1", "-5000", "0.05")), q("2500"));
        // Bankrupt account (equity −100): the close needs more than the market value.
        assert_eq!(quote(dydx("0.1", "-5100", "0.1")), q("5100"));
        // Rounded toward +∞: a third of the maintenance of an account with equity 1 micro-dollar.
        assert_eq!(bankruptcy_quote(q("10"), Quote::from_raw(1), q("1"), q("3")).unwrap(), q("10"));
        assert_eq!(bankruptcy_quote(q("10"), Quote::from_raw(-1), q("1"), q("3")).unwrap(), q("10.000001"));
        assert!(bankruptcy_quote(q("10"), q("1"), q("4"), q("3")).is_err());
        assert!(bankruptcy_quote(q("10"), q("1"), q("-1"), q("3")).is_err());
        assert!(bankruptcy_quote(q("10"), q("1"), Quote::ZERO, Quote::ZERO).is_err());
    }

    #[test]
    fn dydx_bankruptcy_price_and_deleveraging_at_it() {
        let (v, e, m, t) = dydx("0.1", "-4501", "0.1");
        assert_eq!(bankruptcy_price(bankruptcy_quote(v, e, m, t).unwrap(), sz("0.1")).unwrap(), px("45010"));
        // anchors-onchain.md §4, vector 4 (dYdX TestProcessDeleveraging): Carl is short 1 BTC
        // with $54,999 (TNC $4,999); Dave long 1 BTC with $50,000. Both close at $54,999.
        let (v, e, m, t) = dydx("-1", "54999", "-1");
        assert_eq!(e, q("4999"));
        let carl = bankruptcy_quote(v, e, m, t).unwrap();
        assert_eq!(carl, q("-54999"));
        let p = bankruptcy_price(carl, sz("-1")).unwrap();
        assert_eq!(p, px("54999"));
        // Dave sells his 1 BTC to Carl at that price: his USDC becomes 50,000 + 54,999.
        let dave = q("50000").checked_add(sz("1").value_at(p, Round::Floor).unwrap()).unwrap();
        assert_eq!(dave, q("104999"));
        // Carl ends at exactly zero equity.
        assert_eq!(q("54999").checked_add(sz("-1").value_at(p, Round::Floor).unwrap()).unwrap(), Quote::ZERO);
        // Rounding per side: a long sells no cheaper, a short buys no dearer than the quote.
        assert_eq!(bankruptcy_price(q("10"), sz("3")).unwrap(), px("3.33333334"));
        assert_eq!(bankruptcy_price(q("-10"), sz("-3")).unwrap(), px("3.33333333"));
        assert_eq!(bankruptcy_price(q("10"), Size::ZERO), Err(NumError::DivisionByZero));
    }

    #[test]
    fn dydx_fillable_price() {
        // anchors-onchain.md §4, vector 2 (dYdX TestGetFillablePrice): 0.1 long, USDC −4,501, so
        // TNC $499 and MMR $500.
        let fill = |size: &str, usdc: &str, ba: &str, smmr: &str| {
            let p = LiquidationParams {
                bankruptcy_adjustment: r(ba),
                spread_to_maintenance: r(smmr),
                ..LiquidationParams::default()
            };
            let (v, e, m, t) = dydx(size, usdc, size);
            fillable_price(&p, v, sz(size), m, e, t).unwrap()
        };
        assert_eq!(fill("0.1", "-4501", "1", "0.1"), px("49999"));
        assert_eq!(fill("0.1", "-4501", "2", "0.1"), px("49998"));
        assert_eq!(fill("0.1", "-4501", "1", "0.2"), px("49998"));
        assert_eq!(fill("-0.1", "5499", "1", "0.1"), px("50001"));
        // ABR clamps: at or above maintenance the limit is the mark; bankrupt, the full spread.
        assert_eq!(fill("0.1", "-4500", "1", "0.1"), px("50000"));
        assert_eq!(fill("0.1", "-4000", "1", "0.1"), px("50000"));
        assert_eq!(fill("0.1", "-5000", "1", "0.1"), px("49500"));
        assert_eq!(fill("0.1", "-6000", "1", "1.5"), px("42500"));
        assert_eq!(fill("-0.1", "4000", "1", "1.5"), px("57500"));
        // Rounding: up for a long (sell limit), down for a short (buy limit).
        let p = LiquidationParams::default();
        let long = fillable_price(&p, q("10"), sz("3"), Quote::ZERO, q("1"), q("1")).unwrap();
        assert_eq!(long, px("3.33333334"));
        let short = fillable_price(&p, q("-10"), sz("-3"), Quote::ZERO, q("1"), q("1")).unwrap();
        assert_eq!(short, px("3.33333333"));
        assert!(fillable_price(&p, q("10"), Size::ZERO, q("1"), q("1"), q("1")).is_err());
        assert!(fillable_price(&p, q("10"), sz("1"), q("1"), q("1"), Quote::ZERO).is_err());
    }

    #[test]
    fn dydx_insurance_fund_delta() {
        // anchors-onchain.md §4, vector 3 (dYdX TestGetLiquidationInsuranceFundDelta): 0.1 long,
        // USDC −5,100 (bankruptcy $5,100), sold at $56,100 (quote $5,610).
        let (v, e, m, t) = dydx("0.1", "-5100", "0.1");
        let bankrupt = bankruptcy_quote(v, e, m, t).unwrap();
        assert_eq!(bankrupt, q("5100"));
        let fill = sz("0.1").value_at(px("56100"), Round::Floor).unwrap();
        assert_eq!(fill, q("5610"));
        assert_eq!(insurance_fund_delta(fill, bankrupt, r("0.005")).unwrap(), q("28.05"));
        assert_eq!(insurance_fund_delta(fill, bankrupt, r("0.025")).unwrap(), q("140.25"));
        assert_eq!(insurance_fund_delta(fill, bankrupt, Ratio::ONE).unwrap(), q("510"));
        // Worse than bankruptcy: the fund pays the difference.
        assert_eq!(insurance_fund_delta(q("5000"), bankrupt, Ratio::ONE).unwrap(), q("-100"));
        // A short buying back below its bankruptcy quote leaves a surplus (−5,000 vs −5,499).
        assert_eq!(insurance_fund_delta(q("-5000"), q("-5499"), r("0.05")).unwrap(), q("250"));
        // The fee rounds up.
        assert_eq!(insurance_fund_delta(q("0.000003"), Quote::ZERO, r("0.5")).unwrap(), q("0.000002"));
        assert!(insurance_fund_delta(q("1"), Quote::ZERO, r("-0.1")).is_err());
    }

    #[test]
    fn pacing() {
        let p = LiquidationParams::default();
        // Small positions close whole (notional ≤ 100,000).
        assert_eq!(paced_size(sz("2"), q("100000"), &p, Size::ZERO, sz("2")), sz("2"));
        // Large: 20% of the size at window start, minus what the window already closed.
        assert_eq!(paced_size(sz("10"), q("500000"), &p, Size::ZERO, sz("10")), sz("2"));
        assert_eq!(paced_size(sz("9"), q("450000"), &p, sz("1"), sz("10")), sz("1"));
        assert_eq!(paced_size(sz("8"), q("400000"), &p, sz("2"), sz("10")), Size::ZERO);
        assert_eq!(paced_size(sz("8"), q("400000"), &p, sz("3"), sz("10")), Size::ZERO);
        // Rounded up: 20% of 1e-8 × 7 is 1.4e-8 → 2e-8.
        assert_eq!(paced_size(Size::from_raw(7), q("200000"), &p, Size::ZERO, Size::from_raw(7)), Size::from_raw(2));
        // Never more than the position, and extreme sizes do not overflow.
        assert_eq!(paced_size(sz("1"), q("200000"), &p, Size::ZERO, sz("100")), sz("1"));
        let max = Size::from_raw(i128::MAX);
        assert_eq!(paced_size(max, Quote::MAX, &p, Size::ZERO, max), Size::from_raw(i128::MAX / 5 + 1));
        assert_eq!(paced_size(Size::from_raw(i128::MIN), Quote::ZERO, &p, Size::ZERO, max), max);
    }

    #[test]
    fn takeover_price_and_backstop() {
        assert_eq!(transfer_price(px("100"), sz("1"), r("0.01")).unwrap(), px("99"));
        assert_eq!(transfer_price(px("100"), sz("-1"), r("0.01")).unwrap(), px("101"));
        assert_eq!(transfer_price(Price::from_raw(3), sz("1"), r("0.5")).unwrap(), Price::from_raw(1));
        assert_eq!(transfer_price(Price::from_raw(3), sz("-1"), r("0.5")).unwrap(), Price::from_raw(5));
        assert!(transfer_price(px("100"), sz("1"), r("1.1")).is_err());

        let p = LiquidationParams::default();
        // 2/3 of 300 is 200.000001 with the threshold 0.66666667.
        assert!(!backstop_due(q("200.000001"), q("300"), &p, 0).unwrap());
        assert!(backstop_due(q("200"), q("300"), &p, 0).unwrap());
        assert!(!backstop_due(q("250"), q("300"), &p, 59_999).unwrap());
        assert!(backstop_due(q("250"), q("300"), &p, 60_000).unwrap());
    }

    fn bound_name(e: ParamError) -> &'static str {
        match e {
            ParamError::OutOfBounds { name, .. } => name,
            other => panic!("expected OutOfBounds, got {other}"),
        }
    }

    #[test]
    fn params_defaults_bounds_and_serde() {
        let d = LiquidationParams::default();
        d.validate().unwrap();
        assert_eq!(d.fee_escalation_per_second.to_string(), "0.0000025");
        assert_eq!(d.backstop_threshold.to_string(), "0.66666667");
        // Missing fields take their defaults; unknown fields are rejected.
        let p: LiquidationParams = serde_json::from_str(r#"{"window_ms": 10000}"#).unwrap();
        assert_eq!(p, LiquidationParams { window_ms: 10_000, ..d });
        assert!(serde_json::from_str::<LiquidationParams>(r#"{"windows_ms": 1}"#).is_err());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<LiquidationParams>(&json).unwrap(), d);

        let cases: Vec<(LiquidationParams, &str)> = vec![
            (LiquidationParams { liquidator_fee: r("-0.01"), ..d }, "liquidation.liquidator_fee"),
            (LiquidationParams { liquidator_fee: r("0.11"), ..d }, "liquidation.liquidator_fee"),
            (LiquidationParams { max_liquidator_fee: r("0.005"), ..d }, "liquidation.max_liquidator_fee"),
            (LiquidationParams { max_liquidator_fee: r("0.51"), ..d }, "liquidation.max_liquidator_fee"),
            (LiquidationParams { insurance_fee: r("1.01"), ..d }, "liquidation.insurance_fee"),
            (LiquidationParams { insurance_fee: r("-0.01"), ..d }, "liquidation.insurance_fee"),
            (LiquidationParams { fee_escalation_start_ms: DAY_MS + 1, ..d }, "liquidation.fee_escalation_start_ms"),
            (LiquidationParams { fee_escalation_per_second: r("0.011"), ..d }, "liquidation.fee_escalation_per_second"),
            (LiquidationParams { fee_escalation_per_second: r("-0.01"), ..d }, "liquidation.fee_escalation_per_second"),
            (LiquidationParams { partial_threshold: q("-1"), ..d }, "liquidation.partial_threshold"),
            (LiquidationParams { partial_threshold: q("10000000000000.000001"), ..d }, "liquidation.partial_threshold"),
            (LiquidationParams { max_fraction_per_window: Ratio::ZERO, ..d }, "liquidation.max_fraction_per_window"),
            (
                LiquidationParams { max_fraction_per_window: r("1.00000001"), ..d },
                "liquidation.max_fraction_per_window",
            ),
            (LiquidationParams { window_ms: 0, ..d }, "liquidation.window_ms"),
            (LiquidationParams { window_ms: DAY_MS + 1, ..d }, "liquidation.window_ms"),
            (LiquidationParams { order_ttl_ms: 0, ..d }, "liquidation.order_ttl_ms"),
            (LiquidationParams { order_ttl_ms: 3_600_001, ..d }, "liquidation.order_ttl_ms"),
            (LiquidationParams { backstop_threshold: r("1.00000001"), ..d }, "liquidation.backstop_threshold"),
            (LiquidationParams { backstop_threshold: r("-0.1"), ..d }, "liquidation.backstop_threshold"),
            (LiquidationParams { backstop_timeout_ms: 0, ..d }, "liquidation.backstop_timeout_ms"),
            (LiquidationParams { backstop_timeout_ms: DAY_MS + 1, ..d }, "liquidation.backstop_timeout_ms"),
            (LiquidationParams { bankruptcy_adjustment: r("0.99999999"), ..d }, "liquidation.bankruptcy_adjustment"),
            (LiquidationParams { bankruptcy_adjustment: r("10.00000001"), ..d }, "liquidation.bankruptcy_adjustment"),
            (LiquidationParams { spread_to_maintenance: Ratio::ZERO, ..d }, "liquidation.spread_to_maintenance"),
            (LiquidationParams { spread_to_maintenance: r("10.00000001"), ..d }, "liquidation.spread_to_maintenance"),
        ];
        for (p, name) in cases {
            assert_eq!(bound_name(p.validate().unwrap_err()), name);
        }
    }

    proptest::proptest! {
        /// The 128-bit fillable price is the 256-bit one wherever it applies, and it applies to
        /// accounts of ordinary size.
        #[test]
        fn fillable_price_narrow_matches_wide(
            value in -10_000_000_000_000_000i128..10_000_000_000_000_000,
            size in proptest::prop_oneof![1i128..1_000_000_000_000, -1_000_000_000_000i128..-1],
            position_mm in 1i128..1_000_000_000_000,
            extra_mm in proptest::prop_oneof![proptest::strategy::Just(0i128), 0i128..1_000_000_000_000],
            equity in -1_000_000_000_000i128..1_000_000_000_000,
            ba in 0i64..=200_000_000,
            smmr in 0i64..=200_000_000,
        ) {
            let total = position_mm + extra_mm;
            for round in [Round::Floor, Round::Ceil] {
                let f = Fillable {
                    ba: i128::from(ba),
                    smmr: i128::from(smmr),
                    pnnv: value,
                    ps: size,
                    pmmr: position_mm,
                    tnc: equity,
                    tmmr: total,
                    round,
                };
                let (wide, narrow) = (f.wide().unwrap(), f.narrow());
                // Ordinary sizes stay in 128 bits: any account with one position, small
                // accounts with several.
                if (extra_mm == 0 && value.abs() < 100_000_000_000_000)
                    || (value.abs() < 1_000_000_000_000 && total < 10_000_000_000)
                {
                    proptest::prop_assert!(narrow.is_some(), "128 bits suffice");
                }
                if let Some(narrow) = narrow {
                    proptest::prop_assert_eq!(narrow, wide);
                }
            }
        }

        /// Closing the computed size restores the level, and one unit (1e-8) less would not.
        #[test]
        fn base_to_cover_is_the_least_sufficient_size(
            shortage in 1i128..1_000_000_000_000_000,
            price in 1i64..1_000_000_000_000_000,
            mr in 1i64..100_000_000,
            lf in 0i64..5_000_000,
            iff in 0i64..5_000_000,
        ) {
            let got = base_to_cover(Quote::from_raw(shortage), Price::from_raw(price), Ratio::from_raw(mr),
                Ratio::from_raw(lf), Ratio::from_raw(iff)).unwrap();
            let k = i128::from(mr - lf - iff);
            match got {
                None => proptest::prop_assert!(k <= 0),
                Some(s) => {
                    // freed(s) = s·P·k in raw 1e-8·1e-8·1e-8 units vs shortage·1e18 (same scale).
                    let freed = |s: i128| I256::from(s) * I256::from(price) * I256::from(k);
                    let need = I256::from(shortage) * I256::from(pow10(18));
                    proptest::prop_assert!(freed(s.raw()) >= need);
                    proptest::prop_assert!(freed(s.raw() - 1) < need);
                }
            }
        }

        /// Closing a part at the bankruptcy quote leaves the account at least its proportional
        /// share of equity, and less than one micro-unit above it.
        #[test]
        fn closing_at_the_bankruptcy_quote_keeps_the_share(
            value in -1_000_000_000_000_000i128..1_000_000_000_000_000,
            equity in -1_000_000_000_000i128..1_000_000_000_000,
            total in 1i128..1_000_000_000_000,
            part in 0u32..=1000,
        ) {
            let closed = total * i128::from(part) / 1000;
            let quote = bankruptcy_quote(Quote::from_raw(value), Quote::from_raw(equity),
                Quote::from_raw(closed), Quote::from_raw(total)).unwrap();
            // After the close: equity − value + quote ≥ equity·(total − closed)/total.
            let after = I256::from(equity - value + quote.raw()) * I256::from(total);
            let share = I256::from(equity) * I256::from(total - closed);
            proptest::prop_assert!(after >= share);
            proptest::prop_assert!(after - share < I256::from(total));
        }
    }
}
