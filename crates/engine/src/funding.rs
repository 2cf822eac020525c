//! Funding: the rate for one period and its parameters. The cumulative index lives on the
//! market; positions settle against it lazily (see `account::Position::funding_owed`).

use crate::error::{check_range, ParamError};
use crate::num::{NumResult, Price, Ratio, Round};
use serde::{Deserialize, Serialize};

/// How a funding rate is computed from a premium when the venue does not give one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FundingParams {
    /// Interest component per period. Bounds: |interest_rate| ≤ 0.01. Default 0.0001 (0.01%).
    pub interest_rate: Ratio,
    /// The premium may pull the rate this far from the interest rate before the premium itself
    /// takes over. Bounds: 0 ≤ interest_band ≤ 0.01. Default 0.0005 (0.05%).
    pub interest_band: Ratio,
    /// Absolute cap on any rate, given or computed. Bounds: 0 < max_rate ≤ 0.1. Default 0.0075.
    pub max_rate: Ratio,
}

impl Default for FundingParams {
    fn default() -> Self {
        FundingParams {
            interest_rate: Ratio::from_raw(10_000),
            interest_band: Ratio::from_raw(50_000),
            max_rate: Ratio::from_raw(750_000),
        }
    }
}

impl FundingParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        let one_pct = Ratio::from_raw(1_000_000);
        check_range(
            "funding.interest_rate",
            self.interest_rate,
            Ratio::from_raw(-1_000_000),
            one_pct,
            "|interest_rate| ≤ 0.01",
        )?;
        check_range("funding.interest_band", self.interest_band, Ratio::ZERO, one_pct, "0 ≤ interest_band ≤ 0.01")?;
        check_range(
            "funding.max_rate",
            self.max_rate,
            Ratio::from_raw(1),
            Ratio::from_raw(10_000_000),
            "0 < max_rate ≤ 0.1",
        )
    }

    /// Rate from a premium, Binance's form: `clamp(P + clamp(I − P, −band, band), −max, max)`
    /// (source: Binance USDⓈ-M funding-rate FAQ). Exact: only additions and clamps.
    pub fn rate_from_premium(&self, premium: Ratio) -> NumResult<Ratio> {
        let pull =
            self.interest_rate.checked_sub(premium)?.clamp(self.interest_band.checked_neg()?, self.interest_band);
        Ok(premium.checked_add(pull)?.clamp(self.max_rate.checked_neg()?, self.max_rate))
    }
}

/// Premium of the mark over the index, `(mark − index) / index`, rounded toward −∞.
pub fn premium(mark: Price, index: Price) -> NumResult<Ratio> {
    mark.relative_change(index, Round::Floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Ratio {
        Ratio::parse(s).unwrap()
    }

    #[test]
    fn premium_inside_the_band_gives_the_interest_rate() {
        let p = FundingParams::default();
        assert_eq!(p.rate_from_premium(r("0.0003")).unwrap(), r("0.0001"));
        assert_eq!(p.rate_from_premium(r("-0.0003")).unwrap(), r("0.0001"));
    }

    #[test]
    fn premium_outside_the_band_passes_through_less_the_band() {
        let p = FundingParams::default();
        assert_eq!(p.rate_from_premium(r("0.002")).unwrap(), r("0.0015"));
        assert_eq!(p.rate_from_premium(r("-0.002")).unwrap(), r("-0.0015"));
    }

    #[test]
    fn rate_is_clamped_to_the_cap() {
        let p = FundingParams::default();
        assert_eq!(p.rate_from_premium(r("0.05")).unwrap(), r("0.0075"));
        assert_eq!(p.rate_from_premium(r("-0.05")).unwrap(), r("-0.0075"));
    }

    #[test]
    fn validate_names_the_bad_parameter() {
        let p = FundingParams { max_rate: Ratio::ZERO, ..FundingParams::default() };
        assert!(p.validate().unwrap_err().to_string().contains("funding.max_rate"));
    }
}
