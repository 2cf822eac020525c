//! Perpetual markets: risk parameters (validated) and live state (oracle, funding index,
//! open interest, volatility margin).

use crate::adl::{AdlParams, SocialChannel};
use crate::breaker::{BreakerParams, BreakerState};
use crate::error::{check_range, ParamError};
use crate::event::Id;
use crate::funding::FundingParams;
use crate::liquidation::LiquidationParams;
use crate::margin::{OiScaling, Tier, TierTable, VolParams, VolState};
use crate::num::{FundingIndex, NumResult, Price, Quote, Ratio, Round, Size};
use crate::oracle::{OracleConfig, OracleFeed, Validity};
use serde::{Deserialize, Serialize};

/// Everything `create_market` accepts besides the market id. Defaults: no tiers beyond the
/// base fractions, liquidation ends half-way between maintenance and initial, no fees, no
/// open-interest scaling, no volatility margin, the default oracle and funding parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketParams {
    /// Initial margin fraction of the first tier. Bounds: maintenance_margin ≤ initial_margin ≤ 1.
    pub initial_margin: Ratio,
    /// Maintenance margin fraction of the first tier. Bounds: 0 < maintenance_margin < 1.
    pub maintenance_margin: Ratio,
    /// Further notional tiers, each with its floor; requirements stay continuous across tiers.
    #[serde(default)]
    pub maintenance_tiers: Vec<Tier>,
    /// Where the liquidation-end level sits between maintenance (0) and initial (1).
    /// Bounds: 0 ≤ liquidation_end_share ≤ 1. Default 0.5.
    #[serde(default = "half")]
    pub liquidation_end_share: Ratio,
    /// Fee on the maker side's notional, to the fee pool. Bounds: 0 ≤ maker_fee ≤ 0.05.
    #[serde(default)]
    pub maker_fee: Ratio,
    /// Fee on the taker side's notional, to the fee pool. Bounds: 0 ≤ taker_fee ≤ 0.05.
    #[serde(default)]
    pub taker_fee: Ratio,
    /// Scale the initial fraction up with open interest (dYdX liquidity tiers).
    #[serde(default)]
    pub open_interest_scaling: Option<OiScaling>,
    /// Raise margin fractions with the EWMA volatility of oracle returns.
    #[serde(default)]
    pub volatility_margin: Option<VolParams>,
    #[serde(default)]
    pub oracle: OracleConfig,
    #[serde(default)]
    pub funding: FundingParams,
    /// Pacing, fees, backstop trigger and fillable price of liquidations.
    #[serde(default)]
    pub liquidation: LiquidationParams,
    /// Auto-deleveraging policy of the waterfall.
    #[serde(default)]
    pub adl: AdlParams,
    /// Who pays what the waterfall could not cover. Default `open_interest`.
    #[serde(default)]
    pub socialized_loss: SocialChannel,
    /// Insurance fund (created by `create_insurance_fund`) that pays first for this market's
    /// isolated positions and receives its fees; the global fund backs it. Default: the global
    /// fund alone.
    #[serde(default)]
    pub insurance_segment: Option<Id>,
    /// Share of this market's trading fees paid to its insurance fund instead of the fee pool.
    /// Bounds: 0 ≤ insurance_fee_share ≤ 1. Default 0.
    #[serde(default)]
    pub insurance_fee_share: Ratio,
    /// Circuit breakers and the fill price band (off when absent); see [`crate::breaker`].
    #[serde(default)]
    pub breakers: Option<Box<BreakerParams>>,
}

fn half() -> Ratio {
    Ratio::from_raw(Ratio::ONE_RAW / 2)
}

const MAX_FEE: Ratio = Ratio::from_raw(5_000_000);

impl MarketParams {
    /// Check every bound; returns the tier table the parameters describe.
    pub fn validate(&self) -> Result<TierTable, ParamError> {
        let tiers = TierTable::new(self.initial_margin, self.maintenance_margin, &self.maintenance_tiers)?;
        check_range(
            "liquidation_end_share",
            self.liquidation_end_share,
            Ratio::ZERO,
            Ratio::ONE,
            "0 ≤ liquidation_end_share ≤ 1",
        )?;
        check_range("maker_fee", self.maker_fee, Ratio::ZERO, MAX_FEE, "0 ≤ maker_fee ≤ 0.05")?;
        check_range("taker_fee", self.taker_fee, Ratio::ZERO, MAX_FEE, "0 ≤ taker_fee ≤ 0.05")?;
        if let Some(oi) = &self.open_interest_scaling {
            oi.validate()?;
        }
        if let Some(vol) = &self.volatility_margin {
            vol.validate()?;
        }
        self.oracle.validate()?;
        self.funding.validate()?;
        self.liquidation.validate()?;
        self.adl.validate()?;
        check_range(
            "insurance_fee_share",
            self.insurance_fee_share,
            Ratio::ZERO,
            Ratio::ONE,
            "0 ≤ insurance_fee_share ≤ 1",
        )?;
        if let Some(b) = &self.breakers {
            b.validate()?;
        }
        Ok(tiers)
    }

    /// True when `self` is at least as strict as `old`: base margin fractions no lower,
    /// breakers at least as strict ([`BreakerParams::at_least_as_strict_as`]; adding breakers
    /// tightens, removing them loosens), and every other parameter unchanged. Governance uses it
    /// to pick the short timelock; anything else counts as a loosening (the long timelock).
    pub fn at_least_as_strict_as(&self, old: &MarketParams) -> bool {
        let mut rest = self.clone();
        rest.initial_margin = old.initial_margin;
        rest.maintenance_margin = old.maintenance_margin;
        rest.breakers = old.breakers.clone();
        let breakers_ok = match (&self.breakers, &old.breakers) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(n), Some(o)) => n.at_least_as_strict_as(o),
        };
        rest == *old
            && breakers_ok
            && self.initial_margin >= old.initial_margin
            && self.maintenance_margin >= old.maintenance_margin
    }
}

/// A perpetual market and its live state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market {
    pub id: Id,
    pub params: MarketParams,
    pub tiers: TierTable,
    pub feed: OracleFeed,
    /// The validity last announced in an event, to report changes once.
    pub reported_validity: Validity,
    pub vol: VolState,
    /// Cumulative funding per unit of long position (longs pay when it rises).
    pub funding_index: FundingIndex,
    /// Funding settled by positions and not yet claimed by their counterparties. Payers settle
    /// rounded up and receivers rounded down, so once everyone has settled it holds the dust.
    pub funding_pool: Quote,
    /// Σ long sizes (= Σ short sizes).
    pub open_interest: Size,
    /// Status, trips and the governance margin multiplier.
    pub breaker: BreakerState,
}

impl Market {
    pub fn new(id: Id, params: MarketParams, tiers: TierTable) -> Self {
        Market {
            id,
            params,
            tiers,
            feed: OracleFeed::new(),
            reported_validity: Validity::Missing,
            vol: VolState::default(),
            funding_index: FundingIndex::ZERO,
            funding_pool: Quote::ZERO,
            open_interest: Size::ZERO,
            breaker: BreakerState::default(),
        }
    }

    /// The mark price, if the market has ever been priced.
    pub fn mark(&self) -> Option<Price> {
        self.feed.mark(&self.params.oracle)
    }

    /// Validity of the oracle at `now`.
    pub fn validity(&self, now: u64) -> Validity {
        self.feed.validity(&self.params.oracle, now)
    }

    /// The largest maintenance fraction the market can apply now: its top tier's, or the
    /// volatility fraction when that is higher. Bounds how fast a short's requirement grows.
    pub fn max_maintenance_fraction(&self) -> Ratio {
        let tiers = self.tiers.maintenance_pieces().map(|(f, _)| f).max().unwrap_or(Ratio::ZERO);
        match self.params.volatility_margin {
            Some(_) => tiers.max(self.vol.fraction),
            None => tiers,
        }
    }

    /// Multiplier of the initial requirement (1 unless governance or the insurance breaker
    /// raised it).
    pub fn initial_multiplier(&self) -> Ratio {
        self.breaker.initial_multiplier(self.params.breakers.as_deref())
    }

    /// Open interest in quote at `mark` (rounded up: it only ever raises requirements).
    pub fn open_interest_notional(&self, mark: Price) -> NumResult<Quote> {
        self.open_interest.notional(mark, Round::Ceil)
    }
}
