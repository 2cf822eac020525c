//! Collateral assets. The settlement asset (USDC) is built in, valued at exactly 1 and weighted
//! 1; every other asset is valued at its oracle price times a haircut weight.

use crate::error::{check_range, ParamError};
use crate::num::{Ratio, Size};
use crate::oracle::{OracleConfig, OracleFeed, Validity};
use serde::{Deserialize, Serialize};

/// The settlement asset: margin, PnL, fees and funding are all paid in it.
pub const SETTLEMENT: &str = "USDC";

/// Risk parameters of a non-settlement collateral asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetParams {
    /// Weight for initial health (the larger haircut). Bounds: 0 ≤ initial_weight ≤ maintenance_weight.
    pub initial_weight: Ratio,
    /// Weight for maintenance health. Bounds: maintenance_weight ≤ 1.
    pub maintenance_weight: Ratio,
    /// Cap on the total deposited amount; none by default.
    #[serde(default)]
    pub deposit_cap: Option<Size>,
    /// How the asset's price is aggregated; defaults as for markets.
    #[serde(default)]
    pub oracle: OracleConfig,
}

impl AssetParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        check_range(
            "maintenance_weight",
            self.maintenance_weight,
            Ratio::ZERO,
            Ratio::ONE,
            "0 ≤ maintenance_weight ≤ 1",
        )?;
        check_range(
            "initial_weight",
            self.initial_weight,
            Ratio::ZERO,
            self.maintenance_weight,
            "0 ≤ initial_weight ≤ maintenance_weight (the initial haircut is the larger one)",
        )?;
        if let Some(cap) = self.deposit_cap {
            if !cap.is_positive() {
                return Err(ParamError::out_of_bounds("deposit_cap", cap, "deposit_cap > 0"));
            }
        }
        if !self.oracle.mark_band.is_zero() {
            return Err(ParamError::out_of_bounds(
                "oracle.mark_band",
                self.oracle.mark_band,
                "collateral has no mark price: 0",
            ));
        }
        self.oracle.validate()
    }

    /// True when `self` is at least as strict as `old`: weights no higher, a deposit cap no
    /// larger (or newly set), the same oracle configuration. Governance uses it to pick the
    /// short timelock; anything else is a loosening.
    pub fn at_least_as_strict_as(&self, old: &AssetParams) -> bool {
        let cap_ok = match (self.deposit_cap, old.deposit_cap) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(n), Some(o)) => n <= o,
        };
        cap_ok
            && self.initial_weight <= old.initial_weight
            && self.maintenance_weight <= old.maintenance_weight
            && self.oracle == old.oracle
    }
}

/// A collateral asset and its live state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: crate::event::Id,
    pub params: AssetParams,
    pub feed: OracleFeed,
    /// The validity last announced in an event, to report changes once.
    pub reported_validity: Validity,
    /// Σ balances of this asset over all accounts = deposits − withdrawals.
    pub deposits: Size,
    pub withdrawals: Size,
}

impl Asset {
    pub fn new(id: crate::event::Id, params: AssetParams) -> Self {
        Asset {
            id,
            params,
            feed: OracleFeed::new(),
            reported_validity: Validity::Missing,
            deposits: Size::ZERO,
            withdrawals: Size::ZERO,
        }
    }
}
