//! Oracle aggregation, guards and the mark price (DESIGN §3 Oracle).
//!
//! Each market (or collateral asset) keeps one [`OracleFeed`]: the last price of every source, a
//! weighted median over the fresh ones, a TWAP for the jump guard and a basis EMA for the mark.
//! The feed grades its price with a [`Validity`] level, and an [`AllowList`] says which levels each
//! [`Action`] accepts (Drift's ordered validity and per-action matrix). Risk-reducing actions are
//! always allowed: Mango v4 #663 locked users out of repaying on a stale oracle.
//!
//! Everything is integer arithmetic on raw fixed-point values, widened to `i128`. Time is the
//! command's `ts` in unix ms; nothing reads a clock.

use crate::error::{check_range, ParamError};
use crate::event::Id;
use crate::num::{div_round, mul_div, NumError, Price, Ratio, Round};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// Most sources a feed may hold, configured or not (bounds state size).
pub const MAX_SOURCES: usize = 32;
const MAX_WEIGHT: u32 = 1_000_000;
const DAY_MS: u64 = 86_400_000;

/// Per-market (or per-collateral-asset) oracle configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OracleConfig {
    /// Accepted sources with weights; at most [`MAX_SOURCES`], ids non-empty and unique. Empty
    /// (default): any non-empty source id is accepted with weight 1.
    pub sources: Vec<SourceConfig>,
    /// A source price older than this (`now − publish_ts > max_age_ms`) is not fresh.
    /// Default 60 000; bounds 1..=86 400 000 (one day).
    pub max_age_ms: u64,
    /// Quorum: fewer fresh sources than this is `LowQuorum`. Default 1; bounds 1..=number of
    /// listed sources (1..=[`MAX_SOURCES`] when none are listed).
    pub min_sources: u32,
    /// `(max − min) / median` over fresh sources above this is `Uncertain`. Default None (off);
    /// bounds (0, 10].
    pub max_divergence: Option<Ratio>,
    /// `|new − twap| / twap` above this is `Volatile`. Default None (off); bounds (0, 10].
    pub max_jump: Option<Ratio>,
    /// Window of the TWAP and of the mark's basis EMA. Default 300 000 (5 min, as Drift's
    /// twap5m); bounds 1..=86 400 000.
    pub twap_window_ms: u64,
    /// 0 (default): mark = oracle. Otherwise the mark stays within oracle × (1 ± band).
    /// Bounds [0, 0.5].
    pub mark_band: Ratio,
    /// Which validity levels each action accepts. Every list must contain `valid`;
    /// `increase_risk` may not contain `stale` or `missing`.
    pub allow: AllowList,
}

/// One accepted source and its weight in the median (1..=1 000 000, default 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub id: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Default for OracleConfig {
    fn default() -> Self {
        OracleConfig {
            sources: Vec::new(),
            max_age_ms: 60_000,
            min_sources: 1,
            max_divergence: None,
            max_jump: None,
            twap_window_ms: 300_000,
            mark_band: Ratio::ZERO,
            allow: AllowList::default(),
        }
    }
}

impl OracleConfig {
    /// Check every bound documented on the fields.
    pub fn validate(&self) -> Result<(), ParamError> {
        check_range("oracle.max_age_ms", self.max_age_ms, 1, DAY_MS, "1..=86400000")?;
        check_range("oracle.twap_window_ms", self.twap_window_ms, 1, DAY_MS, "1..=86400000")?;
        check_range("oracle.sources.len", self.sources.len(), 0, MAX_SOURCES, "at most 32 sources")?;
        let max_quorum = if self.sources.is_empty() { MAX_SOURCES } else { self.sources.len() };
        let max_quorum = u32::try_from(max_quorum).unwrap_or(u32::MAX);
        check_range("oracle.min_sources", self.min_sources, 1, max_quorum, "1..=number of sources (32 if unlisted)")?;
        for (i, s) in self.sources.iter().enumerate() {
            if s.id.is_empty() {
                return Err(ParamError::Inconsistent("oracle source id must not be empty".into()));
            }
            if self.sources[..i].iter().any(|o| o.id == s.id) {
                return Err(ParamError::Inconsistent(format!("oracle source '{}' is listed twice", s.id)));
            }
            check_range("oracle.sources.weight", s.weight, 1, MAX_WEIGHT, "1..=1000000")?;
        }
        let (tiny, ten) = (Ratio::from_raw(1), Ratio::from_raw(10 * Ratio::ONE_RAW));
        if let Some(d) = self.max_divergence {
            check_range("oracle.max_divergence", d, tiny, ten, "(0, 10]")?;
        }
        if let Some(j) = self.max_jump {
            check_range("oracle.max_jump", j, tiny, ten, "(0, 10]")?;
        }
        check_range("oracle.mark_band", self.mark_band, Ratio::ZERO, Ratio::from_raw(Ratio::ONE_RAW / 2), "[0, 0.5]")?;
        for (name, list) in [("increase_risk", &self.allow.increase_risk), ("liquidate", &self.allow.liquidate)] {
            if !list.contains(&Validity::Valid) {
                return Err(ParamError::Inconsistent(format!("oracle.allow.{name} must contain \"valid\"")));
            }
        }
        if self.allow.increase_risk.iter().any(|v| matches!(v, Validity::Stale | Validity::Missing)) {
            return Err(ParamError::Inconsistent(
                "oracle.allow.increase_risk may not contain \"stale\" or \"missing\"".into(),
            ));
        }
        Ok(())
    }

    /// Weight of a source id, or None if the id is not accepted.
    fn weight_of(&self, id: &str) -> Option<u32> {
        if self.sources.is_empty() {
            (!id.is_empty()).then_some(1)
        } else {
            self.sources.iter().find(|s| s.id == id).map(|s| s.weight)
        }
    }

    /// `now − publish_ts ≤ max_age_ms`; a timestamp after `now` is not fresh (conservative).
    fn is_fresh(&self, publish_ts: u64, now: u64) -> bool {
        now.checked_sub(publish_ts).is_some_and(|age| age <= self.max_age_ms)
    }
}

/// Quality of a feed's price, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    Valid,
    Uncertain,
    LowQuorum,
    Volatile,
    Stale,
    Missing,
}

impl Validity {
    /// The name used in JSON and messages.
    pub fn name(self) -> &'static str {
        match self {
            Validity::Valid => "valid",
            Validity::Uncertain => "uncertain",
            Validity::LowQuorum => "low_quorum",
            Validity::Volatile => "volatile",
            Validity::Stale => "stale",
            Validity::Missing => "missing",
        }
    }
}

impl std::fmt::Display for Validity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a caller wants to do with the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    IncreaseRisk,
    Liquidate,
    ReduceRisk,
}

/// Per-action allow-list. `ReduceRisk` is always allowed and not configurable: risk-reducing
/// actions must work even with a stale oracle (Mango v4 #663). Serialized as lists in canonical
/// order (sorted best to worst, no duplicates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllowList {
    /// Default `["valid"]`: new risk needs a fully valid price.
    #[serde(with = "canonical")]
    pub increase_risk: Vec<Validity>,
    /// Default `["valid", "uncertain", "low_quorum"]`: a usable price, not a jump or a stale one.
    #[serde(with = "canonical")]
    pub liquidate: Vec<Validity>,
}

impl Default for AllowList {
    fn default() -> Self {
        AllowList {
            increase_risk: vec![Validity::Valid],
            liquidate: vec![Validity::Valid, Validity::Uncertain, Validity::LowQuorum],
        }
    }
}

impl AllowList {
    /// Whether `action` may use a price of validity `v`.
    pub fn allows(&self, action: Action, v: Validity) -> bool {
        match action {
            Action::IncreaseRisk => self.increase_risk.contains(&v),
            Action::Liquidate => self.liquidate.contains(&v),
            Action::ReduceRisk => true,
        }
    }
}

/// Serde for a validity list in canonical form: sorted and deduplicated both ways.
mod canonical {
    use super::Validity;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    fn canon(mut v: Vec<Validity>) -> Vec<Validity> {
        v.sort_unstable();
        v.dedup();
        v
    }
    pub fn serialize<S: Serializer>(v: &[Validity], s: S) -> Result<S::Ok, S::Error> {
        canon(v.to_vec()).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Validity>, D::Error> {
        Vec::<Validity>::deserialize(d).map(canon)
    }
}

/// Why a source price was rejected. Nothing in the feed changes on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OracleError {
    #[error("oracle source '{0}' is not in this feed's configured sources")]
    UnknownSource(String),
    #[error("oracle price {0} must be positive")]
    NonPositivePrice(Price),
    #[error("publish time {publish_ts} is later than the command time {now}; check the source's clock")]
    FuturePublishTime { publish_ts: u64, now: u64 },
    #[error("price published at {publish_ts} is {age_ms} ms old at {now}, over max_age_ms {max_age_ms}")]
    StalePrice { publish_ts: u64, now: u64, age_ms: u64, max_age_ms: u64 },
    #[error("source '{id}' published at {publish_ts}, before its previous price at {previous_ts}")]
    OutOfOrder { id: String, publish_ts: u64, previous_ts: u64 },
    #[error("feed already holds {max} sources; configure the sources list instead of ad-hoc ids")]
    TooManySources { max: usize },
    #[error("oracle arithmetic: {0}")]
    Math(#[from] NumError),
}

/// What one accepted submission changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OracleUpdate {
    /// The new aggregate.
    pub price: Price,
    /// The aggregate before this submission.
    pub previous: Option<Price>,
    pub fresh_sources: u32,
    /// Validity right after the submission.
    pub validity: Validity,
}

/// The last price of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcePrice {
    /// Inline for ids up to 24 bytes: a feed is copied on every submission.
    id: Id,
    price: Price,
    publish_ts: u64,
}

/// Oracle state for one market or asset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleFeed {
    /// Last price per source, sorted by id (so submission order never matters). Only sources
    /// the config lists: a new config drops the others ([`OracleFeed::forget_unlisted`]).
    sources: Vec<SourcePrice>,
    price: Option<Price>,
    twap: Option<Price>,
    twap_ts: u64,
    /// Set when the last aggregation jumped past `max_jump`.
    volatile: bool,
    /// Set when the fresh sources diverged past `max_divergence` at the last aggregation.
    uncertain: bool,
    /// Time-weighted EMA of `trade − oracle`, in price units (may be negative).
    basis_ema: Option<Price>,
    basis_ts: u64,
    last_trade: Option<Price>,
}

/// Result of aggregating the fresh sources.
struct Aggregate {
    median: Price,
    fresh: u32,
    /// `(max − min) / median` as a raw ratio, rounded up.
    divergence: i128,
}

impl OracleFeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the prices of sources `cfg` does not list: called when a feed's config is
    /// replaced, so that unlisted sources neither count as fresh nor crowd out listed ones.
    /// The aggregate price stands until the next submission.
    pub fn forget_unlisted(&mut self, cfg: &OracleConfig) {
        self.sources.retain(|s| cfg.weight_of(&s.id).is_some());
    }

    /// Take one source's price at `now`. `publish_ts` is the source's own timestamp. Atomic: on
    /// `Err` nothing changes. On success stores the price, re-aggregates over fresh sources, sets
    /// or clears the jump and divergence flags, advances the TWAP and reports the change.
    pub fn submit(
        &mut self,
        cfg: &OracleConfig,
        source: &str,
        price: Price,
        publish_ts: u64,
        now: u64,
    ) -> Result<OracleUpdate, OracleError> {
        if cfg.weight_of(source).is_none() {
            return Err(OracleError::UnknownSource(source.to_string()));
        }
        if !price.is_positive() {
            return Err(OracleError::NonPositivePrice(price));
        }
        let age_ms = now.checked_sub(publish_ts).ok_or(OracleError::FuturePublishTime { publish_ts, now })?;
        if age_ms > cfg.max_age_ms {
            return Err(OracleError::StalePrice { publish_ts, now, age_ms, max_age_ms: cfg.max_age_ms });
        }
        let mut next = self.clone();
        let entry = SourcePrice { id: Id::from(source), price, publish_ts };
        match next.sources.binary_search_by(|s| s.id.as_str().cmp(source)) {
            Ok(i) if publish_ts < next.sources[i].publish_ts => {
                let previous_ts = next.sources[i].publish_ts;
                return Err(OracleError::OutOfOrder { id: source.to_string(), publish_ts, previous_ts });
            }
            Ok(i) => next.sources[i] = entry,
            Err(_) if next.sources.len() >= MAX_SOURCES => {
                return Err(OracleError::TooManySources { max: MAX_SOURCES });
            }
            Err(i) => next.sources.insert(i, entry),
        }
        // The just-submitted source is fresh, so there is always an aggregate.
        let agg = next.aggregate(cfg, now)?.ok_or(NumError::DivisionByZero)?;
        let p = i128::from(agg.median.raw());
        next.uncertain = cfg.max_divergence.is_some_and(|m| agg.divergence > i128::from(m.raw()));
        // Jump guard against the TWAP before this update: |new − twap| / twap, rounded up so a
        // jump at the threshold's last digit counts.
        next.volatile = match (self.twap, cfg.max_jump) {
            (Some(t), Some(m)) => {
                let t = i128::from(t.raw());
                let jump = div_round((p - t).abs() * i128::from(Ratio::ONE_RAW), t, Round::Ceil)?;
                jump > i128::from(m.raw())
            }
            _ => false,
        };
        // TWAP (Drift's integer form), rounded down; the first price sets it.
        next.twap = Some(match self.twap {
            None => agg.median,
            Some(t) => {
                let elapsed = now.saturating_sub(self.twap_ts);
                Price::try_from_raw(blend(i128::from(t.raw()), p, elapsed, cfg.twap_window_ms, Round::Floor)?)?
            }
        });
        next.twap_ts = self.twap_ts.max(now);
        next.price = Some(agg.median);
        let update = OracleUpdate {
            price: agg.median,
            previous: self.price,
            fresh_sources: agg.fresh,
            validity: next.validity(cfg, now),
        };
        *self = next;
        Ok(update)
    }

    /// Lower weighted median of the fresh, accepted sources: sort by (price, id) and take the
    /// first price whose cumulative weight × 2 ≥ total weight. Exact, no rounding. Also the
    /// divergence `(max − min) / median`, rounded up (conservative: flags at the boundary).
    fn aggregate(&self, cfg: &OracleConfig, now: u64) -> Result<Option<Aggregate>, NumError> {
        let mut fresh: SmallVec<[(Price, &str, u64); 8]> = self
            .sources
            .iter()
            .filter(|s| cfg.is_fresh(s.publish_ts, now))
            .filter_map(|s| cfg.weight_of(&s.id).map(|w| (s.price, s.id.as_str(), u64::from(w))))
            .collect();
        fresh.sort_unstable();
        let (Some(lo), Some(hi)) = (fresh.first(), fresh.last()) else {
            return Ok(None);
        };
        let total: u64 = fresh.iter().map(|f| f.2).sum();
        let mut cum = 0u64;
        let median = fresh.iter().find(|f| {
            cum += f.2;
            cum * 2 >= total
        });
        let median = median.map_or(hi.0, |f| f.0);
        let spread = i128::from(hi.0.raw()) - i128::from(lo.0.raw());
        let divergence = div_round(spread * i128::from(Ratio::ONE_RAW), i128::from(median.raw()), Round::Ceil)?;
        let fresh = u32::try_from(fresh.len()).map_err(|_| NumError::Overflow)?;
        Ok(Some(Aggregate { median, fresh, divergence }))
    }

    /// The last aggregated price (None before the first submit).
    pub fn price(&self) -> Option<Price> {
        self.price
    }

    /// The TWAP kept for the jump guard (None before the first submit).
    pub fn twap(&self) -> Option<Price> {
        self.twap
    }

    /// Validity at `now`, worst first: `Missing` if never priced; `Stale` if no source is fresh
    /// at `now`; `LowQuorum` if fresh sources < `min_sources`; `Volatile` / `Uncertain` from the
    /// flags of the last aggregation; else `Valid`. Staleness changes with time alone.
    pub fn validity(&self, cfg: &OracleConfig, now: u64) -> Validity {
        if self.price.is_none() {
            return Validity::Missing;
        }
        // Every stored source is listed (see `sources`).
        let fresh = self.sources.iter().filter(|s| cfg.is_fresh(s.publish_ts, now)).count();
        if fresh == 0 {
            Validity::Stale
        } else if fresh < cfg.min_sources as usize {
            Validity::LowQuorum
        } else if self.volatile {
            Validity::Volatile
        } else if self.uncertain {
            Validity::Uncertain
        } else {
            Validity::Valid
        }
    }

    /// Record a trade price for the mark. Updates the basis EMA (time-weighted like the TWAP:
    /// `ema' = (ema × (W − dt) + (trade − oracle) × dt) / W`, rounded toward zero so the premium
    /// is never overstated; the first sample sets it). Before any oracle price only the last
    /// trade is kept. Atomic. A non-positive trade price is `OutOfRange`.
    pub fn on_trade(&mut self, cfg: &OracleConfig, trade_price: Price, now: u64) -> Result<(), NumError> {
        if !trade_price.is_positive() {
            return Err(NumError::OutOfRange(trade_price.to_string()));
        }
        let mut ema = self.basis_ema;
        if let Some(o) = self.price {
            let basis = i128::from(trade_price.raw()) - i128::from(o.raw());
            let v = match self.basis_ema {
                None => basis,
                Some(e) => {
                    let (e, w, elapsed) = (i128::from(e.raw()), cfg.twap_window_ms, now.saturating_sub(self.basis_ts));
                    let down = blend(e, basis, elapsed, w, Round::Floor)?;
                    // Exact value < 0 exactly when the floor is < 0: then round up instead.
                    if down < 0 {
                        blend(e, basis, elapsed, w, Round::Ceil)?
                    } else {
                        down
                    }
                }
            };
            ema = Some(Price::try_from_raw(v)?);
        }
        self.basis_ema = ema;
        self.basis_ts = self.basis_ts.max(now);
        self.last_trade = Some(trade_price);
        Ok(())
    }

    /// Mark price. With `mark_band` 0 it is exactly the oracle. Otherwise the median of three
    /// candidates (Hyperliquid's design): the oracle; oracle + basis EMA; the last trade (the
    /// oracle when none) — clamped to `[oracle × (1 − band), oracle × (1 + band)]` with the lower
    /// bound rounded up and the upper rounded down (toward the oracle). None before the first
    /// oracle price.
    pub fn mark(&self, cfg: &OracleConfig) -> Option<Price> {
        let o = self.price?;
        if cfg.mark_band.is_zero() {
            return Some(o);
        }
        let or = i128::from(o.raw());
        let one = i128::from(Ratio::ONE_RAW);
        let band = i128::from(cfg.mark_band.raw());
        let mut c = [
            or,
            or + self.basis_ema.map_or(0, |e| i128::from(e.raw())),
            i128::from(self.last_trade.unwrap_or(o).raw()),
        ];
        c.sort_unstable();
        // Cannot fail: the divisor is nonzero and the products are far inside i128.
        let a = div_round(or * (one - band), one, Round::Ceil).ok()?;
        let b = div_round(or * (one + band), one, Round::Floor).ok()?;
        // Ordered and positive even for an unvalidated band (clamp panics if lo > hi).
        let lo = a.min(b).max(1);
        let hi = a.max(b).min(i128::from(i64::MAX)).max(lo);
        Price::try_from_raw(c[1].clamp(lo, hi)).ok()
    }
}

/// Time-weighted blend `(old × (W − dt) + new × dt) / W` with `dt = min(elapsed, W)`, computed as
/// `old + (new − old) × dt / W` (the same value, as `old` is an integer) so only the step is
/// rounded, in the direction asked, and the product cannot overflow (256-bit `mul_div`).
fn blend(old: i128, new: i128, elapsed: u64, w: u64, round: Round) -> Result<i128, NumError> {
    let diff = new.checked_sub(old).ok_or(NumError::Overflow)?;
    let step = mul_div(diff, i128::from(elapsed.min(w)), i128::from(w), round)?;
    old.checked_add(step).ok_or(NumError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Validity::*;

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }
    fn r(s: &str) -> Ratio {
        Ratio::parse(s).unwrap()
    }
    fn cfg_with(weights: &[u32]) -> OracleConfig {
        let src = |(i, w): (usize, &u32)| SourceConfig { id: format!("s{i}"), weight: *w };
        OracleConfig { sources: weights.iter().enumerate().map(src).collect(), ..OracleConfig::default() }
    }
    /// Submit `prices[i]` from source `s{i}` at `now`, in the order given by `order`.
    fn feed_in(cfg: &OracleConfig, prices: &[&str], order: &[usize], now: u64) -> OracleFeed {
        let mut f = OracleFeed::new();
        for &i in order {
            f.submit(cfg, &format!("s{i}"), p(prices[i]), now, now).unwrap();
        }
        f
    }
    fn median(weights: &[u32], prices: &[&str]) -> Price {
        let order: Vec<usize> = (0..prices.len()).collect();
        feed_in(&cfg_with(weights), prices, &order, 1).price().unwrap()
    }

    #[test]
    fn a_new_config_forgets_the_sources_it_does_not_list() {
        let three = OracleConfig { min_sources: 2, ..cfg_with(&[1, 1, 1]) };
        let mut f = feed_in(&three, &["100", "101", "102"], &[0, 1, 2], 10);
        assert_eq!(f.validity(&three, 10), Valid);
        // The venue drops s1 and s2: s0 alone is below the quorum of 2.
        let one_listed = OracleConfig { min_sources: 1, ..cfg_with(&[1]) };
        let quorum_two = OracleConfig { min_sources: 2, ..one_listed.clone() };
        f.forget_unlisted(&quorum_two);
        assert_eq!(f.validity(&quorum_two, 10), LowQuorum, "the unlisted sources no longer count");
        assert_eq!(f.validity(&one_listed, 10), Valid);
        assert_eq!(f.price(), Some(p("101")), "the aggregate stands until the next submission");
        f.submit(&one_listed, "s0", p("99"), 11, 11).unwrap();
        assert_eq!(f.price(), Some(p("99")));
    }

    #[test]
    fn weighted_median_one_two_three_five_sources() {
        assert_eq!(median(&[1], &["100"]), p("100"));
        assert_eq!(median(&[1, 1], &["101", "100"]), p("100"), "even total: the lower median");
        assert_eq!(median(&[1, 1, 1], &["100", "300", "101"]), p("101"));
        assert_eq!(median(&[1; 5], &["5", "1", "4", "2", "3"]), p("3"));
        assert_eq!(median(&[1, 2, 1], &["10", "20", "30"]), p("20"));
        // Cumulative 2 of 4 reaches exactly half: the lower median.
        assert_eq!(median(&[2, 1, 1], &["10", "20", "30"]), p("10"));
        assert_eq!(median(&[1, 1, 3], &["10", "20", "30"]), p("30"));
        // A heavy source (10 of 14) dominates four light ones that agree with each other.
        assert_eq!(median(&[1, 1, 1, 1, 10], &["120", "121", "122", "123", "90"]), p("90"));
        assert_eq!(median(&[3, 1, 1, 1, 1], &["10", "20", "30", "40", "50"]), p("20"));
    }

    #[test]
    fn submission_and_config_order_do_not_matter() {
        let prices = ["100", "103", "99", "101"];
        let cfg = cfg_with(&[2, 1, 1, 3]);
        let mut rev_cfg = cfg.clone();
        rev_cfg.sources.reverse();
        let a = feed_in(&cfg, &prices, &[0, 1, 2, 3], 7);
        let b = feed_in(&rev_cfg, &prices, &[3, 1, 0, 2], 7);
        assert_eq!(a.sources, b.sources);
        assert_eq!((a.price(), b.price()), (Some(p("101")), Some(p("101"))));
        assert_eq!(a.validity(&cfg, 7), b.validity(&rev_cfg, 7));
    }

    #[test]
    fn staleness_with_time_alone() {
        let cfg = OracleConfig { min_sources: 2, ..cfg_with(&[1, 1]) };
        let mut f = OracleFeed::new();
        assert_eq!(f.validity(&cfg, 0), Missing);
        f.submit(&cfg, "s0", p("100"), 1_000, 1_000).unwrap();
        let u = f.submit(&cfg, "s1", p("100"), 5_000, 5_000).unwrap();
        assert_eq!((u.fresh_sources, u.validity), (2, Valid));
        assert_eq!(f.validity(&cfg, 61_000), Valid, "age exactly max_age_ms is fresh");
        assert_eq!(f.validity(&cfg, 61_001), LowQuorum, "s0 ages out at max_age_ms + 1");
        assert_eq!(f.validity(&cfg, 65_001), Stale);
        assert_eq!(f.price(), Some(p("100")), "the last price is kept");
        // The next aggregation ignores the aged-out source.
        let u = f.submit(&cfg, "s1", p("200"), 65_002, 65_002).unwrap();
        assert_eq!((u.price, u.previous, u.fresh_sources, u.validity), (p("200"), Some(p("100")), 1, LowQuorum));
    }

    #[test]
    fn quorum_counts_fresh_sources() {
        let cfg = OracleConfig { min_sources: 3, ..cfg_with(&[1, 1, 1]) };
        let mut f = OracleFeed::new();
        let mut submit = |id| f.submit(&cfg, id, p("1"), 0, 0).unwrap().validity;
        assert_eq!([submit("s0"), submit("s1"), submit("s2")], [LowQuorum, LowQuorum, Valid]);
    }

    #[test]
    fn divergence_flag() {
        let cfg = OracleConfig { max_divergence: Some(r("0.02")), ..cfg_with(&[1, 1]) };
        // (102 − 100) / 100 = 2%: not strictly above.
        assert_eq!(feed_in(&cfg, &["100", "102"], &[0, 1], 1).validity(&cfg, 1), Valid);
        // 0.0200000001 rounds up past the limit (floor would not).
        let mut f = feed_in(&cfg, &["100", "102.00000001"], &[0, 1], 1);
        assert_eq!(f.validity(&cfg, 1), Uncertain);
        assert!(cfg.allow.allows(Action::Liquidate, Uncertain) && !cfg.allow.allows(Action::IncreaseRisk, Uncertain));
        // The next aggregation without the outlier clears it.
        assert_eq!(f.submit(&cfg, "s1", p("101"), 2, 2).unwrap().validity, Valid);
    }

    #[test]
    fn jump_flag_against_twap_and_clearing() {
        let cfg = OracleConfig { max_jump: Some(r("0.1")), ..OracleConfig::default() };
        let mut f = OracleFeed::new();
        f.submit(&cfg, "a", p("100"), 0, 0).unwrap();
        assert_eq!(f.submit(&cfg, "a", p("110"), 0, 0).unwrap().validity, Valid, "+10% is not above 10%");
        let u = f.submit(&cfg, "a", p("111"), 0, 0).unwrap();
        assert_eq!((u.validity, u.price), (Volatile, p("111")), "flagged, still stored");
        assert_eq!(f.twap(), Some(p("100")), "dt = 0: the TWAP did not move");
        // A normal update a full window later (TWAP before it still 100) clears the flag.
        assert_eq!(f.submit(&cfg, "a", p("105"), 300_000, 300_000).unwrap().validity, Valid);
    }

    #[test]
    fn twap_hand_computed() {
        let cfg = OracleConfig::default(); // W = 300 000
        let mut f = OracleFeed::new();
        f.submit(&cfg, "a", p("100"), 0, 0).unwrap();
        assert_eq!(f.twap(), Some(p("100")));
        // (100 × 240 000 + 110 × 60 000) / 300 000 = 102
        f.submit(&cfg, "a", p("110"), 60_000, 60_000).unwrap();
        assert_eq!(f.twap(), Some(p("102")));
        // dt is capped at W: the TWAP becomes the price.
        f.submit(&cfg, "a", p("90"), 1_000_000, 1_000_000).unwrap();
        assert_eq!(f.twap(), Some(p("90")));
        // Floor: W = 3, raw (100 × 2 + 101 × 1) / 3 = 100.33 → 100.
        let cfg = OracleConfig { twap_window_ms: 3, ..OracleConfig::default() };
        let mut f = OracleFeed::new();
        f.submit(&cfg, "a", Price::from_raw(100), 0, 0).unwrap();
        f.submit(&cfg, "a", Price::from_raw(101), 1, 1).unwrap();
        assert_eq!(f.twap(), Some(Price::from_raw(100)));
    }

    #[test]
    fn every_error_leaves_the_feed_unchanged() {
        let cfg = cfg_with(&[1, 1]);
        let mut f = OracleFeed::new();
        f.submit(&cfg, "s0", p("100"), 50_000, 50_000).unwrap();
        f.on_trade(&cfg, p("101"), 50_000).unwrap();
        let before = f.clone();
        let now = 70_000;
        let mut reject = |id: &str, px: &str, ts: u64| {
            let e = f.submit(&cfg, id, p(px), ts, now).unwrap_err();
            assert_eq!(f, before, "{e}");
            e
        };
        assert_eq!(reject("x", "1", now), OracleError::UnknownSource("x".into()));
        assert_eq!(reject("s1", "0", now), OracleError::NonPositivePrice(Price::ZERO));
        assert!(matches!(reject("s1", "1", now + 1), OracleError::FuturePublishTime { .. }));
        assert!(matches!(reject("s1", "1", now - 60_001), OracleError::StalePrice { age_ms: 60_001, .. }));
        assert!(matches!(reject("s0", "1", 49_999), OracleError::OutOfOrder { previous_ts: 50_000, .. }));
        assert!(f.on_trade(&cfg, p("-1"), now).is_err());
        assert_eq!(f, before);
        // Unlisted sources: any non-empty id, but the state is bounded.
        let open = OracleConfig::default();
        let mut f = OracleFeed::new();
        for i in 0..MAX_SOURCES {
            f.submit(&open, &format!("s{i:02}"), p("1"), 0, 0).unwrap();
        }
        let before = f.clone();
        assert_eq!(f.submit(&open, "late", p("1"), 0, 0), Err(OracleError::TooManySources { max: 32 }));
        assert_eq!(f.submit(&open, "", p("1"), 0, 0), Err(OracleError::UnknownSource(String::new())));
        assert_eq!(f, before);
        // OracleError::Math is not reachable from inputs: every product is formed in i128.
    }

    #[test]
    fn allow_list_defaults() {
        let a = AllowList::default();
        let all = [Valid, Uncertain, LowQuorum, Volatile, Stale, Missing];
        for v in all {
            assert_eq!(a.allows(Action::IncreaseRisk, v), v == Valid, "{v:?}");
            assert_eq!(a.allows(Action::Liquidate, v), matches!(v, Valid | Uncertain | LowQuorum), "{v:?}");
            assert!(a.allows(Action::ReduceRisk, v));
        }
        assert!(all.windows(2).all(|w| w[0] < w[1]), "ordered best to worst");
    }

    #[test]
    fn mark_equals_oracle_with_zero_band() {
        let cfg = OracleConfig::default();
        let mut f = OracleFeed::new();
        f.on_trade(&cfg, p("150"), 0).unwrap();
        assert_eq!(f.mark(&cfg), None);
        f.submit(&cfg, "a", p("100"), 0, 0).unwrap();
        f.on_trade(&cfg, p("150"), 0).unwrap();
        assert_eq!(f.mark(&cfg), Some(p("100")));
    }

    #[test]
    fn mark_median_and_clamp() {
        let cfg = OracleConfig { mark_band: r("0.05"), ..OracleConfig::default() };
        let mut f = OracleFeed::new();
        f.submit(&cfg, "a", p("100"), 0, 0).unwrap();
        assert_eq!(f.mark(&cfg), Some(p("100")), "no trade: every candidate is the oracle");
        // Basis 2: candidates 100, 102, 102 → 102.
        f.on_trade(&cfg, p("102"), 0).unwrap();
        assert_eq!(f.mark(&cfg), Some(p("102")));
        // Trade 101 after 60 s: ema = (2 × 240 000 + 1 × 60 000) / 300 000 = 1.8; 100, 101.8, 101 → 101.
        f.on_trade(&cfg, p("101"), 60_000).unwrap();
        assert_eq!(f.mark(&cfg), Some(p("101")));
        // A full window later at 120: ema = 20; 100, 120, 120 → clamped to 105.
        f.on_trade(&cfg, p("120"), 400_000).unwrap();
        assert_eq!(f.mark(&cfg), Some(p("105")));
        // And down to 95.
        f.on_trade(&cfg, p("0.5"), 800_000).unwrap();
        assert_eq!(f.mark(&cfg), Some(p("95")));
        // Bounds round toward the oracle: raw 3 × 0.95 = 2.85 → 3.
        let mut f = OracleFeed::new();
        f.submit(&cfg, "a", Price::from_raw(3), 0, 0).unwrap();
        f.on_trade(&cfg, Price::from_raw(1), 0).unwrap();
        assert_eq!(f.mark(&cfg), Some(Price::from_raw(3)));
    }

    #[test]
    fn basis_ema_rounds_toward_zero() {
        let cfg = OracleConfig { twap_window_ms: 3, ..OracleConfig::default() };
        let mut f = OracleFeed::new();
        f.submit(&cfg, "a", p("100"), 0, 0).unwrap();
        f.on_trade(&cfg, p("99.99999998"), 0).unwrap();
        assert_eq!(f.basis_ema, Some(Price::from_raw(-2)));
        // (−2 × 2 + 0 × 1) / 3 = −1.33 → −1, not −2.
        f.on_trade(&cfg, p("100"), 1).unwrap();
        assert_eq!(f.basis_ema, Some(Price::from_raw(-1)));
    }

    #[test]
    fn unvalidated_config_errors_instead_of_panicking() {
        let bad = OracleConfig { twap_window_ms: 0, mark_band: r("-0.5"), ..OracleConfig::default() };
        let mut f = OracleFeed::new();
        f.submit(&bad, "a", p("100"), 0, 0).unwrap();
        let before = f.clone();
        assert_eq!(f.submit(&bad, "a", p("100"), 1, 1), Err(OracleError::Math(NumError::DivisionByZero)));
        assert_eq!(f, before);
        f.on_trade(&bad, p("300"), 1).unwrap();
        assert_eq!(f.mark(&bad), Some(p("150")));
    }

    #[test]
    fn validate_rejects_each_bad_bound() {
        const TEN: i64 = 10 * Ratio::ONE_RAW;
        type Mutate = fn(&mut OracleConfig);
        // Each case starts from two listed sources; the key must appear in the error message.
        let bad: [(&str, Mutate); 22] = [
            ("max_age_ms", |c| c.max_age_ms = 0),
            ("max_age_ms", |c| c.max_age_ms = DAY_MS + 1),
            ("min_sources", |c| c.min_sources = 0),
            ("min_sources", |c| c.min_sources = 3),
            ("min_sources", |c| (c.sources, c.min_sources) = (vec![], 33)),
            ("empty", |c| c.sources[0].id.clear()),
            ("twice", |c| c.sources[1].id = "s0".into()),
            ("weight", |c| c.sources[0].weight = 0),
            ("weight", |c| c.sources[0].weight = 1_000_001),
            ("at most 32", |c| c.sources = cfg_with(&[1; 33]).sources),
            ("max_divergence", |c| c.max_divergence = Some(Ratio::ZERO)),
            ("max_divergence", |c| c.max_divergence = Some(Ratio::from_raw(TEN + 1))),
            ("max_jump", |c| c.max_jump = Some(Ratio::ZERO)),
            ("max_jump", |c| c.max_jump = Some(Ratio::from_raw(TEN + 1))),
            ("twap_window_ms", |c| c.twap_window_ms = 0),
            ("twap_window_ms", |c| c.twap_window_ms = DAY_MS + 1),
            ("mark_band", |c| c.mark_band = Ratio::from_raw(-1)),
            ("mark_band", |c| c.mark_band = Ratio::from_raw(50_000_001)),
            ("increase_risk", |c| c.allow.increase_risk = vec![Uncertain]),
            ("liquidate", |c| c.allow.liquidate = vec![]),
            ("increase_risk", |c| c.allow.increase_risk.push(Stale)),
            ("increase_risk", |c| c.allow.increase_risk.push(Missing)),
        ];
        for (key, mutate) in bad {
            let mut c = cfg_with(&[1, 1]);
            assert_eq!(c.validate(), Ok(()));
            mutate(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e} should mention {key}");
        }
        let mut ok =
            OracleConfig { max_jump: Some(r("10")), mark_band: r("0.5"), min_sources: 2, ..cfg_with(&[1, 1_000_000]) };
        ok.allow.liquidate.push(Stale);
        assert_eq!(ok.validate(), Ok(()));
        ok.sources.clear();
        ok.min_sources = 32;
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(OracleConfig::default().validate(), Ok(()));
    }

    #[test]
    fn serde_defaults_and_round_trip() {
        let c: OracleConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, OracleConfig::default());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["allow"]["liquidate"], serde_json::json!(["valid", "uncertain", "low_quorum"]));
        assert_eq!(json["max_divergence"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<OracleConfig>(json).unwrap(), c);
        // Lists come back canonical, weight defaults to 1, unknown fields are rejected.
        let text = r#"{"sources":[{"id":"b"}],"max_jump":"0.2","allow":{"liquidate":["volatile","valid","valid"]}}"#;
        let c: OracleConfig = serde_json::from_str(text).unwrap();
        assert_eq!((c.sources[0].weight, c.max_jump), (1, Some(r("0.2"))));
        assert_eq!(
            (c.allow.liquidate.as_slice(), c.allow.increase_risk.as_slice()),
            (&[Valid, Volatile][..], &[Valid][..])
        );
        assert_eq!(serde_json::from_str::<OracleConfig>(&serde_json::to_string(&c).unwrap()).unwrap(), c);
        assert!(serde_json::from_str::<OracleConfig>(r#"{"max_age":1}"#).is_err());
        let mut f = OracleFeed::new();
        f.submit(&c, "b", p("100"), 5, 5).unwrap();
        assert_eq!(serde_json::from_str::<OracleFeed>(&serde_json::to_string(&f).unwrap()).unwrap(), f);
    }
}
