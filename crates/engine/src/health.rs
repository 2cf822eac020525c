//! Health of a bucket (the cross book or one isolated position): equity against the three
//! requirement levels, initial ≥ liquidation-end ≥ maintenance (DESIGN §3 Health; the middle
//! level is Mango v4's lesson: liquidate back to a buffer above maintenance, not to initial).
//!
//! `equity = Σ collateral × price × weight + Σ (size × mark + cash leg − funding owed)`.
//! Values are rounded down and requirements up, both against the account. Initial equity uses
//! the initial weights and counts non-settlement collateral only while its oracle allows
//! risk-increasing actions (by default: fully valid).

use crate::account::{Account, Bucket, Position};
use crate::asset::Asset;
use crate::error::Reject;
use crate::margin::{liquidation_price, oi_scaled_requirement};
use crate::market::Market;
use crate::num::{NumResult, Price, Quote, Ratio, Round};
use crate::oracle::Action;
use smallvec::SmallVec;

/// What a health computation reads besides the account: the markets and assets with their
/// prices, and the time at which oracle validity is judged.
#[derive(Clone, Copy)]
pub struct Prices<'a> {
    pub markets: &'a [Market],
    pub assets: &'a [Asset],
    pub now: u64,
}

/// Equity and requirements of one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Equity with maintenance weights: what is compared with maintenance.
    pub equity: Quote,
    /// Equity with initial weights: what is compared with the initial requirement.
    pub initial_equity: Quote,
    pub initial: Quote,
    pub liquidation_end: Quote,
    pub maintenance: Quote,
}

impl Health {
    /// Risk-increasing commands need `initial_equity ≥ initial` afterwards.
    pub fn meets_initial(&self) -> bool {
        self.initial_equity >= self.initial
    }
    /// Liquidatable when equity < maintenance.
    pub fn is_liquidatable(&self) -> bool {
        self.equity < self.maintenance
    }
    /// dYdX's rule for an account below initial: a change is acceptable if the maintenance
    /// requirement does not grow and equity/maintenance does not fall (compared by
    /// cross-multiplication, exact).
    pub fn no_riskier_than(&self, before: &Health) -> bool {
        if self.maintenance > before.maintenance {
            return false;
        }
        if self.maintenance.is_zero() {
            return true;
        }
        let lhs = ethnum::I256::from(self.equity.raw()) * ethnum::I256::from(before.maintenance.raw());
        let rhs = ethnum::I256::from(before.equity.raw()) * ethnum::I256::from(self.maintenance.raw());
        lhs >= rhs
    }
}

/// Value and requirements of one position at the market's mark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PositionRisk {
    /// The mark used (zero for a flat position in a market never priced).
    pub mark: Price,
    /// `size × mark + cash leg − funding owed`.
    pub value: Quote,
    /// `|size| × mark`, rounded up.
    pub notional: Quote,
    pub initial: Quote,
    pub liquidation_end: Quote,
    pub maintenance: Quote,
}

/// Value and requirements of `pos` in `market`.
///
/// maintenance = max(tiered maintenance, notional × volatility fraction);
/// initial = max(tiered initial, notional × volatility initial fraction), then times the
/// market's margin multiplier (breaker or governance; capped at the notional, rounded up),
/// then scaled up with open interest; liquidation-end = maintenance + share × (unscaled initial − maintenance), so
/// an open-interest surge never makes liquidation sell more.
/// A flat position (an isolated bucket holding only margin) needs no price.
pub fn position_risk(market: &Market, pos: &Position) -> Result<PositionRisk, Reject> {
    match market.mark() {
        Some(mark) => Ok(position_risk_at(market, pos, mark)?),
        None if pos.size.is_zero() => Ok(PositionRisk { value: pos.quote, ..PositionRisk::default() }),
        None => Err(Reject::NoPrice(market.id.to_string())),
    }
}

fn position_risk_at(market: &Market, pos: &Position, mark: Price) -> NumResult<PositionRisk> {
    let (size_value, notional) = pos.size.value_floor_and_notional_ceil(mark)?;
    let value = size_value.checked_add(pos.quote)?.checked_sub(pos.funding_owed(market.funding_index)?)?;
    let (mut initial, mut maintenance) = market.tiers.requirements(notional)?;
    if let Some(vol) = &market.params.volatility_margin {
        initial = initial.max(notional.mul_ratio_ceil(market.vol.initial_fraction(vol)?)?);
        maintenance = maintenance.max(notional.mul_ratio_ceil(market.vol.fraction)?);
    }
    let buffer = initial.checked_sub(maintenance)?.mul_ratio_ceil(market.params.liquidation_end_share)?;
    let liquidation_end = maintenance.checked_add(buffer)?;
    // A breaker or governance multiplier raises only the initial level (never above the
    // notional), so it blocks new risk without liquidating anyone.
    let multiplier = market.initial_multiplier();
    if multiplier > Ratio::ONE {
        initial = initial.max(initial.mul_ratio_ceil(multiplier)?.min(notional));
    }
    if let Some(oi) = &market.params.open_interest_scaling {
        let t = oi.utilisation(market.open_interest_notional(mark)?)?;
        initial = oi_scaled_requirement(initial, notional, t)?;
    }
    Ok(PositionRisk { mark, value, notional, initial, liquidation_end, maintenance })
}

/// A change being checked before it is applied: one position of the bucket replaced, and the
/// bucket's cash moved. Lets a command judge its outcome without copying the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patch {
    pub market: u32,
    pub position: Position,
    pub cash_delta: Quote,
}

/// The open positions of `bucket`, with `patch` applied when given.
pub fn bucket_positions<'a>(
    account: &'a Account,
    bucket: Bucket,
    patch: Option<&'a Patch>,
) -> impl Iterator<Item = (u32, Position)> + 'a {
    let cross = match bucket {
        Bucket::Cross => account.cross.as_slice(),
        Bucket::Isolated(_) => &[],
    };
    let isolated = match bucket {
        Bucket::Isolated(m) => account.isolated(m).map(|i| (m, i.position)),
        Bucket::Cross => None,
    };
    let listed = cross.iter().copied().chain(isolated);
    let present = |pt: &Patch| match bucket {
        Bucket::Cross => account.cross_position(pt.market).is_some(),
        Bucket::Isolated(m) => m == pt.market,
    };
    let added = patch.filter(|pt| !present(pt)).map(|pt| (pt.market, pt.position));
    listed
        .map(move |(m, pos)| match patch {
            Some(pt) if pt.market == m => (m, pt.position),
            _ => (m, pos),
        })
        .chain(added)
        .filter(|(_, pos)| !pos.size.is_zero())
}

/// Health of `bucket` of `account`.
pub fn bucket_health(account: &Account, bucket: Bucket, prices: Prices<'_>) -> Result<Health, Reject> {
    bucket_health_each(account, bucket, None, None, prices, |_, _, _| {})
}

/// Each open position of a bucket with its market and risk.
pub type PositionRisks = SmallVec<[(u32, Position, PositionRisk); 2]>;

/// Health of a bucket together with each open position's risk (what a liquidation step
/// needs), computed in one pass.
pub fn bucket_health_and_risks(
    account: &Account,
    bucket: Bucket,
    prices: Prices<'_>,
) -> Result<(Health, PositionRisks), Reject> {
    let mut risks = SmallVec::new();
    let h = bucket_health_each(account, bucket, None, None, prices, |m, pos, r| risks.push((m, *pos, *r)))?;
    Ok((h, risks))
}

/// Health of `bucket` of `account` — as it would be with `patch` applied, when given — handing
/// each open position's risk to `each` on the way (what detection files is built in the same
/// pass). With `oracles`, every market with a position must first have an oracle valid for that
/// action (see [`check_oracle`]).
pub fn bucket_health_each(
    account: &Account,
    bucket: Bucket,
    patch: Option<&Patch>,
    oracles: Option<Action>,
    prices: Prices<'_>,
    mut each: impl FnMut(u32, &Position, &PositionRisk),
) -> Result<Health, Reject> {
    let cash = account.cash(bucket).checked_add(patch.map_or(Quote::ZERO, |p| p.cash_delta))?;
    let mut h = Health { equity: cash, initial_equity: cash, ..Health::default() };
    // Kept apart from `add`, which stays small enough to be inlined into both loops.
    let oracle_ok = |m: u32| match oracles {
        Some(action) => check_oracle(&prices.markets[m as usize], prices.now, action),
        None => Ok(()),
    };
    let mut add = |m: u32, pos: &Position| -> Result<(), Reject> {
        let r = position_risk(&prices.markets[m as usize], pos)?;
        each(m, pos, &r);
        h.equity = h.equity.checked_add(r.value)?;
        h.initial_equity = h.initial_equity.checked_add(r.value)?;
        h.initial = h.initial.checked_add(r.initial)?;
        h.liquidation_end = h.liquidation_end.checked_add(r.liquidation_end)?;
        h.maintenance = h.maintenance.checked_add(r.maintenance)?;
        Ok(())
    };
    match (patch, bucket) {
        // The common case reads the positions in place (no copies through the iterator).
        (None, Bucket::Cross) => {
            for (m, pos) in account.cross.iter().filter(|(_, p)| !p.size.is_zero()) {
                oracle_ok(*m)?;
                add(*m, pos)?;
            }
        }
        _ => {
            for (m, pos) in bucket_positions(account, bucket, patch) {
                oracle_ok(m)?;
                add(m, &pos)?;
            }
        }
    }
    if bucket != Bucket::Cross {
        return Ok(h);
    }
    for (a, amount) in &account.collateral {
        let asset = &prices.assets[*a as usize];
        let Some(price) = asset.feed.price() else { continue };
        let value = amount.value_at(price, Round::Floor)?;
        h.equity = h.equity.checked_add(value.mul_ratio_floor(asset.params.maintenance_weight)?)?;
        if asset.params.oracle.allow.allows(Action::IncreaseRisk, asset.feed.validity(&asset.params.oracle, prices.now))
        {
            h.initial_equity = h.initial_equity.checked_add(value.mul_ratio_floor(asset.params.initial_weight)?)?;
        }
    }
    Ok(h)
}

/// Check that `market`'s oracle is valid enough for `action`.
pub fn check_oracle(market: &Market, now: u64, action: Action) -> Result<(), Reject> {
    let validity = market.validity(now);
    if market.params.oracle.allow.allows(action, validity) {
        return Ok(());
    }
    let action = match action {
        Action::IncreaseRisk => "risk-increasing actions",
        Action::Liquidate => "liquidation",
        Action::ReduceRisk => "risk-reducing actions",
    };
    Err(Reject::OracleNotValidFor { market: market.id.to_string(), validity, action })
}

/// Liquidation price of position `pos` in `market`, whose bucket has health `h`: the mark at
/// which the bucket's equity meets maintenance with every other price held fixed. `None` when
/// flat or when no positive price liquidates it.
pub fn position_liquidation_price(market: &Market, pos: &Position, h: &Health) -> Result<Option<Price>, Reject> {
    if pos.size.is_zero() {
        return Ok(None);
    }
    let r = position_risk(market, pos)?;
    let own_value = pos.size.value_at(r.mark, Round::Floor)?;
    let others_equity = h.equity.checked_sub(own_value)?;
    let others_requirement = h.maintenance.checked_sub(r.maintenance)?;
    let vol_piece = market.params.volatility_margin.map(|_| (market.vol.fraction, Quote::ZERO));
    let pieces = market.tiers.maintenance_pieces().chain(vol_piece.filter(|(f, _)| *f > Ratio::ZERO));
    Ok(liquidation_price(pos.size, others_equity, others_requirement, pieces)?)
}
