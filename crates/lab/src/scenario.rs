//! Scenario files (TOML): every key is checked (unknown keys are errors), every parameter is
//! validated before any work starts. docs/scenarios.md is the reference.

use crate::error::LabError;
use crate::time::parse_utc;
use ballast_engine::market::MarketParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Run seed; path `i` uses a generator seeded from (seed, i).
    #[serde(default)]
    pub seed: u64,
    /// First and last instant simulated (UTC, ISO 8601).
    pub start: String,
    pub end: String,
    /// Simulation step: one oracle update per market per step.
    #[serde(default = "d_step")]
    pub step_ms: u64,
    /// Default number of Monte Carlo paths for `ballast mc` (overridden by --paths).
    #[serde(default = "d_paths")]
    pub paths: u32,
    pub markets: Vec<MarketSpec>,
    /// Correlation of the shocks of the synthetic markets, in the order they are listed.
    #[serde(default)]
    pub correlation: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    pub shocks: Vec<Shock>,
    pub population: Population,
    #[serde(default)]
    pub liquidators: Liquidators,
    #[serde(default)]
    pub traders: Traders,
    #[serde(default)]
    pub insurance: Insurance,
}

fn d_step() -> u64 {
    15_000
}
fn d_paths() -> u32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSpec {
    pub id: String,
    /// Passed through to `create_market` (decimal strings, the engine's own bounds).
    pub params: MarketParams,
    pub price: PriceSource,
    #[serde(default)]
    pub funding: FundingSource,
    pub liquidity: Liquidity,
    #[serde(default)]
    pub oracle: OracleBehaviour,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapPolicy {
    /// A missing bar is an error naming the file, the line and the missing time.
    #[default]
    Refuse,
    /// A missing bar repeats the previous close (flat), and the run says how many it filled.
    Fill,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceSource {
    /// OHLC bars `timestamp_utc,open,high,low,close,volume`, expanded into an intra-bar path.
    Csv {
        file: String,
        #[serde(default)]
        gaps: GapPolicy,
    },
    /// Geometric Brownian motion; `mu` and `sigma` per year (365 days).
    Gbm { initial: f64, mu: f64, sigma: f64 },
    /// Merton jump-diffusion: GBM plus Poisson jumps (`jumps_per_day`) of log-size N(jump_mean, jump_std).
    JumpDiffusion { initial: f64, mu: f64, sigma: f64, jumps_per_day: f64, jump_mean: f64, jump_std: f64 },
    /// GARCH(1,1) log returns with Student-t shocks of `nu` degrees of freedom; `sigma` is the
    /// long-run volatility per year, `alpha` and `beta` the GARCH coefficients.
    Garch { initial: f64, mu: f64, sigma: f64, alpha: f64, beta: f64, nu: f64 },
}

impl PriceSource {
    pub fn is_synthetic(&self) -> bool {
        !matches!(self, PriceSource::Csv { .. })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum FundingSource {
    /// No funding periods.
    #[default]
    None,
    /// A fixed rate every `interval_ms` (default 8 h), aligned on the epoch.
    Constant {
        rate: f64,
        #[serde(default = "d_funding_interval")]
        interval_ms: u64,
    },
    /// Realised rates `timestamp_utc,funding_rate`, applied at their timestamps.
    Csv { file: String },
    /// Every `interval_ms`, the engine computes the rate from the mark's premium over the oracle.
    Premium {
        #[serde(default = "d_funding_interval")]
        interval_ms: u64,
    },
}

fn d_funding_interval() -> u64 {
    8 * 3_600_000
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Liquidity {
    /// Notional (USDC) that moves the book price by 1% (linear impact).
    pub depth_1pct: f64,
    /// Half-life of the price impact (ms): impact decays exponentially towards the path.
    #[serde(default = "d_half_life")]
    pub impact_half_life_ms: u64,
    /// Full bid-ask spread as a fraction of the price.
    #[serde(default = "d_spread")]
    pub spread: f64,
}

fn d_half_life() -> u64 {
    300_000
}
fn d_spread() -> f64 {
    0.0005
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleBehaviour {
    /// The oracle reports the book price of `delay_ms` ago (rounded down to whole steps).
    #[serde(default)]
    pub delay_ms: u64,
    /// Relative noise (standard deviation) of each source's report.
    #[serde(default)]
    pub noise: f64,
    /// Number of sources (`s0`, `s1`, ...), each submitting once per step.
    #[serde(default = "d_sources")]
    pub sources: u32,
    /// A source that stops reporting in a window.
    #[serde(default)]
    pub stale: Option<SourceWindow>,
    /// A source that reports `factor` × the price in a window.
    #[serde(default)]
    pub manipulated: Option<Manipulation>,
}

fn d_sources() -> u32 {
    1
}

impl Default for OracleBehaviour {
    fn default() -> Self {
        OracleBehaviour { delay_ms: 0, noise: 0.0, sources: 1, stale: None, manipulated: None }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceWindow {
    pub source: u32,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manipulation {
    pub source: u32,
    pub from: String,
    pub to: String,
    pub factor: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shock {
    /// Market id; every market when absent.
    #[serde(default)]
    pub market: Option<String>,
    pub at: String,
    /// Relative gap applied from `at` on (−0.1: the price drops by 10% at once).
    pub gap: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    Fixed {
        value: f64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    /// Log-normal with the given median and log-standard deviation, clamped to [min, max].
    LogNormal {
        median: f64,
        sigma: f64,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
}

impl Dist {
    fn bounds(&self) -> (f64, f64) {
        match self {
            Dist::Fixed { value } => (*value, *value),
            Dist::Uniform { min, max } => (*min, *max),
            Dist::LogNormal { min, max, .. } => (min.unwrap_or(0.0), max.unwrap_or(f64::INFINITY)),
        }
    }
    /// Smallest value the distribution can produce.
    pub fn lower(&self) -> f64 {
        self.bounds().0
    }
    fn check(&self, name: &str) -> Result<(), String> {
        let ok = |x: f64| x.is_finite();
        match self {
            Dist::Fixed { value } if !ok(*value) => Err(format!("{name}.value must be a finite number")),
            Dist::Uniform { min, max } if !(ok(*min) && ok(*max) && min <= max) => {
                Err(format!("{name}: uniform needs finite min <= max, got {min}..{max}"))
            }
            Dist::LogNormal { median, sigma, min, max } => {
                if !(ok(*median) && *median > 0.0) {
                    return Err(format!("{name}.median must be > 0, got {median}"));
                }
                if !(ok(*sigma) && *sigma >= 0.0) {
                    return Err(format!("{name}.sigma must be >= 0, got {sigma}"));
                }
                if let (Some(a), Some(b)) = (min, max) {
                    if a > b {
                        return Err(format!("{name}: min {a} is above max {b}"));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    /// Largest value (infinite when unbounded).
    pub fn upper(&self) -> f64 {
        self.bounds().1
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// A CSV of positions (`account,side,size,entry_price,isolated_margin`, optional `market`
    /// and `cross_margin`); when given, the generated accounts below are added to it.
    #[serde(default)]
    pub file: Option<String>,
    /// Number of generated accounts.
    #[serde(default)]
    pub accounts: u32,
    /// Share of generated accounts per market (default: equal).
    #[serde(default)]
    pub market_weights: BTreeMap<String, f64>,
    /// Leverage = notional / margin at entry (>= 1; capped by the market's initial margin).
    #[serde(default = "d_leverage")]
    pub leverage: Dist,
    /// Entry notional in USDC.
    #[serde(default = "d_notional")]
    pub notional: Dist,
    /// Share of long positions.
    #[serde(default = "d_half")]
    pub long_share: f64,
    /// Share of isolated-margin accounts (the rest trade from the cross book).
    #[serde(default = "d_half")]
    pub isolated_share: f64,
    /// Entry prices spread around the first price: entry = price × exp(N(0, entry_dispersion)).
    #[serde(default)]
    pub entry_dispersion: f64,
}

fn d_leverage() -> Dist {
    Dist::LogNormal { median: 5.0, sigma: 0.6, min: Some(1.0), max: Some(50.0) }
}
fn d_notional() -> Dist {
    Dist::LogNormal { median: 5_000.0, sigma: 1.2, min: Some(10.0), max: Some(5_000_000.0) }
}
fn d_half() -> f64 {
    0.5
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Liquidators {
    pub count: u32,
    /// Delay between a liquidation order and the earliest fill (ms).
    pub latency_ms: u64,
    /// USDC each liquidator holds (its cross account is margin-checked by the engine like any other).
    pub capital: f64,
}

impl Default for Liquidators {
    fn default() -> Self {
        Liquidators { count: 5, latency_ms: 1_000, capital: 10_000_000.0 }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traders {
    #[serde(default)]
    pub top_up: Option<TopUp>,
    #[serde(default)]
    pub deleverage: Option<Deleverage>,
    #[serde(default)]
    pub new_entrants: Option<NewEntrants>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    /// Accounts looked at per step (sampled at random).
    pub checks_per_step: u32,
    /// An account whose equity is within `trigger` × maintenance of its maintenance requirement
    /// tops up with this probability.
    pub probability: f64,
    #[serde(default = "d_trigger")]
    pub trigger: f64,
    /// Added margin as a fraction of the position's notional.
    pub fraction: f64,
}

fn d_trigger() -> f64 {
    1.5
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deleverage {
    pub checks_per_step: u32,
    /// Probability that a sampled account at risk (as for top-ups) cuts its position.
    pub probability: f64,
    #[serde(default = "d_trigger")]
    pub trigger: f64,
    /// Share of the position closed.
    pub fraction: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntrants {
    /// Poisson rate of new accounts per hour, drawn from the population distributions.
    pub per_hour: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Insurance {
    /// USDC in the global insurance fund at start.
    #[serde(default)]
    pub fund: f64,
    /// USDC in the backstop vault at start.
    #[serde(default)]
    pub backstop: f64,
}

/// A scenario with its resolved times and the folder its relative file names start from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub scenario: Scenario,
    pub base_dir: PathBuf,
    pub start_ms: u64,
    pub end_ms: u64,
    pub source: PathBuf,
}

impl Loaded {
    pub fn resolve(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Read a scenario file and apply `--set path=value` overrides.
pub fn load(path: &Path, overrides: &[String]) -> Result<Loaded, LabError> {
    let text = std::fs::read_to_string(path).map_err(|e| LabError::io(path, e))?;
    let mut value: toml::Table =
        toml::from_str(&text).map_err(|e| LabError::Scenario(format!("{}: {}", path.display(), e.message())))?;
    for o in overrides {
        apply_override(&mut value, o)?;
    }
    // Without overrides, decode the text itself so that errors point at the line and column.
    let scenario: Scenario = if overrides.is_empty() {
        toml::from_str(&text)
            .map_err(|e| LabError::Scenario(format!("{}: {}", path.display(), e.to_string().trim_end())))?
    } else {
        Scenario::deserialize(toml::Value::Table(value))
            .map_err(|e| LabError::Scenario(format!("{} (after --set overrides): {}", path.display(), e.message())))?
    };
    // Relative data files are looked up from the repository root when the scenario lives in
    // `scenarios/`, otherwise from the scenario's own folder.
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if dir.file_name().is_some_and(|n| n == "scenarios") {
        dir.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        dir
    };
    let loaded = validate(scenario, base_dir, path.to_path_buf())?;
    Ok(loaded)
}

/// Set one dotted path (`markets.0.liquidity.depth_1pct=2e6`) in the raw TOML table. A value
/// that parses as TOML is taken as such, except that it stays a string where the file has a
/// string (so decimal parameters can be given without quotes).
pub fn apply_override(table: &mut toml::Table, spec: &str) -> Result<(), LabError> {
    let (path, raw) =
        spec.split_once('=').ok_or_else(|| LabError::Scenario(format!("override '{spec}' is not PATH=VALUE")))?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    let raw = raw.trim();
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut cur: &mut toml::Value = {
        let first = keys[0];
        if keys.len() == 1 {
            let keep_string = matches!(table.get(first), Some(toml::Value::String(_)));
            table.insert(first.to_string(), coerce(parsed, keep_string, raw));
            return Ok(());
        }
        table.entry(first.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()))
    };
    for (i, key) in keys.iter().enumerate().skip(1) {
        let last = i + 1 == keys.len();
        let next: &mut toml::Value = match cur {
            toml::Value::Array(items) => {
                let idx: usize = key.parse().map_err(|_| {
                    LabError::Scenario(format!("override '{path}': '{key}' must be an index into a list"))
                })?;
                let len = items.len();
                items.get_mut(idx).ok_or_else(|| {
                    LabError::Scenario(format!("override '{path}': index {idx} is past the {len} items"))
                })?
            }
            toml::Value::Table(t) => {
                if last {
                    let keep_string = matches!(t.get(*key), Some(toml::Value::String(_)));
                    t.insert(key.to_string(), coerce(parsed, keep_string, raw));
                    return Ok(());
                }
                t.entry(key.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            _ => return Err(LabError::Scenario(format!("override '{path}': '{key}' is inside a plain value"))),
        };
        if last {
            let keep_string = matches!(next, toml::Value::String(_));
            *next = coerce(parsed, keep_string, raw);
            return Ok(());
        }
        cur = next;
    }
    Ok(())
}

fn coerce(v: toml::Value, keep_string: bool, raw: &str) -> toml::Value {
    if keep_string && !matches!(v, toml::Value::String(_)) {
        toml::Value::String(raw.to_string())
    } else {
        v
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, LabError> {
    Err(LabError::Scenario(msg.into()))
}

fn time(field: &str, s: &str) -> Result<u64, LabError> {
    parse_utc(s).map_err(|e| LabError::Scenario(format!("{field}: {e}")))
}

fn validate(s: Scenario, base_dir: PathBuf, source: PathBuf) -> Result<Loaded, LabError> {
    let start_ms = time("start", &s.start)?;
    let end_ms = time("end", &s.end)?;
    if end_ms <= start_ms {
        return err(format!("end {} is not after start {}", s.end, s.start));
    }
    if s.step_ms == 0 {
        return err("step_ms must be > 0");
    }
    let steps = (end_ms - start_ms) / s.step_ms;
    if steps > 5_000_000 {
        return err(format!("{steps} steps of {} ms is too many (at most 5,000,000)", s.step_ms));
    }
    if s.paths == 0 {
        return err("paths must be >= 1");
    }
    if s.markets.is_empty() {
        return err("a scenario needs at least one [[markets]] entry");
    }
    let mut ids = std::collections::BTreeSet::new();
    for m in &s.markets {
        if !ids.insert(m.id.as_str()) {
            return err(format!("market '{}' is listed twice", m.id));
        }
        let ctx = format!("markets '{}'", m.id);
        m.params.validate().map_err(|e| LabError::Scenario(format!("{ctx}.params: {e}")))?;
        match &m.price {
            PriceSource::Csv { .. } => {}
            PriceSource::Gbm { initial, mu, sigma } => check_diffusion(&ctx, *initial, *mu, *sigma)?,
            PriceSource::JumpDiffusion { initial, mu, sigma, jumps_per_day, jump_mean, jump_std } => {
                check_diffusion(&ctx, *initial, *mu, *sigma)?;
                if !(jumps_per_day.is_finite() && *jumps_per_day >= 0.0) {
                    return err(format!("{ctx}.price.jumps_per_day must be >= 0, got {jumps_per_day}"));
                }
                if !(jump_mean.is_finite() && jump_std.is_finite() && *jump_std >= 0.0) {
                    return err(format!("{ctx}.price: jump_mean must be finite and jump_std >= 0"));
                }
            }
            PriceSource::Garch { initial, mu, sigma, alpha, beta, nu } => {
                check_diffusion(&ctx, *initial, *mu, *sigma)?;
                if !(*alpha >= 0.0 && *beta >= 0.0 && alpha + beta < 1.0) {
                    return err(format!(
                        "{ctx}.price: GARCH needs alpha >= 0, beta >= 0 and alpha + beta < 1 (got {alpha} + {beta})"
                    ));
                }
                if !(nu.is_finite() && *nu > 2.0) {
                    return err(format!("{ctx}.price.nu must be > 2 (Student-t with finite variance), got {nu}"));
                }
            }
        }
        match &m.funding {
            FundingSource::Constant { rate, interval_ms } => {
                if !rate.is_finite() || rate.abs() > 0.1 {
                    return err(format!("{ctx}.funding.rate must be within ±0.1, got {rate}"));
                }
                if *interval_ms == 0 {
                    return err(format!("{ctx}.funding.interval_ms must be > 0"));
                }
            }
            FundingSource::Premium { interval_ms } if *interval_ms == 0 => {
                return err(format!("{ctx}.funding.interval_ms must be > 0"));
            }
            _ => {}
        }
        let l = &m.liquidity;
        if !(l.depth_1pct.is_finite() && l.depth_1pct > 0.0) {
            return err(format!(
                "{ctx}.liquidity.depth_1pct must be > 0 (USDC to move the price 1%), got {}",
                l.depth_1pct
            ));
        }
        if !(l.spread.is_finite() && (0.0..0.5).contains(&l.spread)) {
            return err(format!("{ctx}.liquidity.spread must be in [0, 0.5), got {}", l.spread));
        }
        if l.impact_half_life_ms == 0 {
            return err(format!("{ctx}.liquidity.impact_half_life_ms must be > 0"));
        }
        let o = &m.oracle;
        if o.sources == 0 || o.sources > 32 {
            return err(format!("{ctx}.oracle.sources must be 1..=32, got {}", o.sources));
        }
        if !(o.noise.is_finite() && (0.0..0.5).contains(&o.noise)) {
            return err(format!("{ctx}.oracle.noise must be in [0, 0.5), got {}", o.noise));
        }
        if o.delay_ms > 3_600_000 {
            return err(format!("{ctx}.oracle.delay_ms must be at most one hour, got {}", o.delay_ms));
        }
        if let Some(w) = &o.stale {
            if w.source >= o.sources {
                return err(format!("{ctx}.oracle.stale.source {} is not one of the {} sources", w.source, o.sources));
            }
            window(&format!("{ctx}.oracle.stale"), &w.from, &w.to)?;
        }
        if let Some(w) = &o.manipulated {
            if w.source >= o.sources {
                return err(format!(
                    "{ctx}.oracle.manipulated.source {} is not one of the {} sources",
                    w.source, o.sources
                ));
            }
            if !(w.factor.is_finite() && w.factor > 0.0) {
                return err(format!("{ctx}.oracle.manipulated.factor must be > 0, got {}", w.factor));
            }
            window(&format!("{ctx}.oracle.manipulated"), &w.from, &w.to)?;
        }
    }
    let synthetic = s.markets.iter().filter(|m| m.price.is_synthetic()).count();
    if let Some(c) = &s.correlation {
        if c.len() != synthetic || c.iter().any(|r| r.len() != synthetic) {
            return err(format!(
                "correlation must be a {synthetic}x{synthetic} matrix (one row per synthetic market, in order)"
            ));
        }
        for (i, row) in c.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                if !v.is_finite() || v.abs() > 1.0 || (c[j][i] - v).abs() > 1e-12 || (i == j && (v - 1.0).abs() > 1e-12)
                {
                    return err("correlation must be symmetric with ones on the diagonal and entries in [-1, 1]");
                }
            }
        }
        if crate::paths::cholesky(c).is_none() {
            return err("correlation matrix is not positive semi-definite");
        }
    }
    for (i, sh) in s.shocks.iter().enumerate() {
        if let Some(m) = &sh.market {
            if !ids.contains(m.as_str()) {
                return err(format!("shocks[{i}].market '{m}' is not a listed market"));
            }
        }
        let at = time(&format!("shocks[{i}].at"), &sh.at)?;
        if at < start_ms || at > end_ms {
            return err(format!("shocks[{i}].at {} is outside the scenario window", sh.at));
        }
        if !(sh.gap.is_finite() && sh.gap > -1.0) {
            return err(format!("shocks[{i}].gap must be > -1 (a fraction), got {}", sh.gap));
        }
    }
    let p = &s.population;
    if p.file.is_none() && p.accounts == 0 {
        return err("population: give a positions file or a number of accounts");
    }
    if p.accounts > 10_000_000 {
        return err(format!("population.accounts {} is above the 10,000,000 supported", p.accounts));
    }
    p.leverage.check("population.leverage").map_err(LabError::Scenario)?;
    p.notional.check("population.notional").map_err(LabError::Scenario)?;
    if p.leverage.lower() < 1.0 {
        return err(format!(
            "population.leverage must be >= 1 everywhere (lowest possible value {})",
            p.leverage.lower()
        ));
    }
    if p.notional.lower() < 0.0 {
        return err("population.notional must be >= 0");
    }
    for (name, v) in [("long_share", p.long_share), ("isolated_share", p.isolated_share)] {
        if !(0.0..=1.0).contains(&v) {
            return err(format!("population.{name} must be in [0, 1], got {v}"));
        }
    }
    if !(p.entry_dispersion.is_finite() && (0.0..1.0).contains(&p.entry_dispersion)) {
        return err(format!("population.entry_dispersion must be in [0, 1), got {}", p.entry_dispersion));
    }
    for (m, w) in &p.market_weights {
        if !ids.contains(m.as_str()) {
            return err(format!("population.market_weights: '{m}' is not a listed market"));
        }
        if !(w.is_finite() && *w >= 0.0) {
            return err(format!("population.market_weights.{m} must be >= 0"));
        }
    }
    if !p.market_weights.is_empty() && p.market_weights.values().sum::<f64>() <= 0.0 {
        return err("population.market_weights must not all be zero");
    }
    let l = &s.liquidators;
    if !(l.capital.is_finite() && l.capital >= 0.0) {
        return err("liquidators.capital must be >= 0");
    }
    let t = &s.traders;
    if let Some(u) = &t.top_up {
        prob("traders.top_up.probability", u.probability)?;
        if !(u.fraction.is_finite() && u.fraction > 0.0 && u.trigger.is_finite() && u.trigger >= 1.0) {
            return err("traders.top_up: fraction must be > 0 and trigger >= 1");
        }
    }
    if let Some(d) = &t.deleverage {
        prob("traders.deleverage.probability", d.probability)?;
        if !(d.fraction > 0.0 && d.fraction <= 1.0 && d.trigger.is_finite() && d.trigger >= 1.0) {
            return err("traders.deleverage: fraction must be in (0, 1] and trigger >= 1");
        }
    }
    if let Some(n) = &t.new_entrants {
        if !(n.per_hour.is_finite() && n.per_hour >= 0.0) {
            return err("traders.new_entrants.per_hour must be >= 0");
        }
    }
    let i = &s.insurance;
    if !(i.fund.is_finite() && i.fund >= 0.0 && i.backstop.is_finite() && i.backstop >= 0.0) {
        return err("insurance.fund and insurance.backstop must be >= 0");
    }
    Ok(Loaded { scenario: s, base_dir, start_ms, end_ms, source })
}

fn check_diffusion(ctx: &str, initial: f64, mu: f64, sigma: f64) -> Result<(), LabError> {
    if !(initial.is_finite() && initial > 0.0 && initial <= 1e9) {
        return err(format!("{ctx}.price.initial must be in (0, 1e9], got {initial}"));
    }
    if !mu.is_finite() || mu.abs() > 100.0 {
        return err(format!("{ctx}.price.mu must be a finite yearly drift, got {mu}"));
    }
    if !(sigma.is_finite() && (0.0..=100.0).contains(&sigma)) {
        return err(format!("{ctx}.price.sigma must be in [0, 100] per year, got {sigma}"));
    }
    Ok(())
}

fn prob(name: &str, p: f64) -> Result<(), LabError> {
    if !(0.0..=1.0).contains(&p) {
        return err(format!("{name} must be in [0, 1], got {p}"));
    }
    Ok(())
}

fn window(ctx: &str, from: &str, to: &str) -> Result<(u64, u64), LabError> {
    let (a, b) = (time(&format!("{ctx}.from"), from)?, time(&format!("{ctx}.to"), to)?);
    if b < a {
        return err(format!("{ctx}: to is before from"));
    }
    Ok((a, b))
}
