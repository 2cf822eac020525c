//! The population: accounts in flat vectors (struct of arrays), drawn once per run from the
//! scenario's distributions and/or read from a positions file.

use crate::data::read_positions;
use crate::error::LabError;
use crate::scenario::{Dist, Loaded, Population};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// One account per row; every account holds one position in one market.
#[derive(Clone, Debug, Default)]
pub struct Book {
    pub ids: Vec<String>,
    pub market: Vec<u32>,
    pub long: Vec<bool>,
    /// Base units.
    pub size: Vec<f64>,
    pub entry: Vec<f64>,
    pub isolated: Vec<bool>,
    /// USDC deposited as margin (isolated margin, or cross collateral).
    pub margin: Vec<f64>,
}

impl Book {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    #[allow(clippy::too_many_arguments)]
    pub fn push(&mut self, id: String, market: u32, long: bool, size: f64, entry: f64, isolated: bool, margin: f64) {
        self.ids.push(id);
        self.market.push(market);
        self.long.push(long);
        self.size.push(size);
        self.entry.push(entry);
        self.isolated.push(isolated);
        self.margin.push(margin);
    }
}

pub fn draw(d: &Dist, rng: &mut ChaCha8Rng) -> f64 {
    match d {
        Dist::Fixed { value } => *value,
        Dist::Uniform { min, max } => min + (max - min) * rng.random::<f64>(),
        Dist::LogNormal { median, sigma, min, max } => {
            let z: f64 = rng.sample(StandardNormal);
            (median * (sigma * z).exp()).clamp(min.unwrap_or(0.0), max.unwrap_or(f64::INFINITY))
        }
    }
}

/// Cumulative market weights for drawing a market.
pub fn market_cdf(l: &Loaded) -> Vec<f64> {
    let p = &l.scenario.population;
    let w: Vec<f64> = l
        .scenario
        .markets
        .iter()
        .map(|m| if p.market_weights.is_empty() { 1.0 } else { p.market_weights.get(&m.id).copied().unwrap_or(0.0) })
        .collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

/// One generated account at `price` (entry spread by the population's dispersion).
pub fn draw_account(
    p: &Population,
    cdf: &[f64],
    prices: &[f64],
    max_leverage: &[f64],
    rng: &mut ChaCha8Rng,
) -> (u32, bool, f64, f64, bool, f64) {
    let u: f64 = rng.random();
    let m = cdf.iter().position(|c| u < *c).unwrap_or(cdf.len() - 1);
    let long = rng.random::<f64>() < p.long_share;
    let isolated = rng.random::<f64>() < p.isolated_share;
    let z: f64 = rng.sample(StandardNormal);
    let entry = prices[m] * (p.entry_dispersion * z).exp();
    let notional = draw(&p.notional, rng).max(1.0);
    let leverage = draw(&p.leverage, rng).clamp(1.0, max_leverage[m]);
    let size = notional / entry;
    // A position opened away from the current price carries its PnL from the start; the margin
    // covers a loss so that the opening fill passes the initial check.
    let upnl = if long { size * (prices[m] - entry) } else { size * (entry - prices[m]) };
    let margin = notional / leverage + (-upnl).max(0.0);
    (m as u32, long, size, entry, isolated, margin)
}

/// The run's book: the positions file (if any) then `accounts` generated ones.
pub fn build(l: &Loaded, prices: &[f64], rng: &mut ChaCha8Rng) -> Result<Book, LabError> {
    let s = &l.scenario;
    let p = &s.population;
    let mut book = Book::default();
    if let Some(file) = &p.file {
        let path = l.resolve(file);
        for (i, row) in read_positions(&path)?.into_iter().enumerate() {
            let m = match &row.market {
                Some(id) => s.markets.iter().position(|m| &m.id == id).ok_or_else(|| LabError::Data {
                    file: path.display().to_string(),
                    line: i as u64 + 2,
                    column: "market".into(),
                    message: format!("'{id}' is not a market of the scenario"),
                })?,
                None => 0,
            };
            let isolated = row.isolated_margin > 0.0;
            let margin = if isolated { row.isolated_margin } else { row.cross_margin };
            book.push(row.account, m as u32, row.long, row.size, row.entry_price, isolated, margin);
        }
    }
    let cdf = market_cdf(l);
    let max_lev = max_leverage(l);
    for i in 0..p.accounts {
        let (m, long, size, entry, isolated, margin) = draw_account(p, &cdf, prices, &max_lev, rng);
        book.push(format!("a{i}"), m, long, size, entry, isolated, margin);
    }
    Ok(book)
}

/// The highest leverage each market's base initial margin allows (with a 2% cushion).
pub fn max_leverage(l: &Loaded) -> Vec<f64> {
    l.scenario.markets.iter().map(|m| (0.98 / ratio_f64(m.params.initial_margin.raw())).max(1.0)).collect()
}

pub fn ratio_f64(raw: i64) -> f64 {
    raw as f64 / 1e8
}
