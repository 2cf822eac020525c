//! The population: accounts in flat vectors (struct of arrays), drawn once per run from the
//! scenario's distributions and/or read from a positions file.

use crate::data::read_positions;
use crate::error::LabError;
use crate::scenario::{Dist, Loaded, Population};
use ballast_engine::event::Id;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// One account per row; every account holds one position in one market.
#[derive(Clone, Debug, Default)]
pub struct Book {
    /// Inline strings (ids up to 24 bytes hold no heap pointer): reading an id while opening
    /// the book in its sorted order reads the row, not a string elsewhere on the heap.
    pub ids: Vec<Id>,
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
    pub fn with_capacity(n: usize) -> Self {
        Book {
            ids: Vec::with_capacity(n),
            market: Vec::with_capacity(n),
            long: Vec::with_capacity(n),
            size: Vec::with_capacity(n),
            entry: Vec::with_capacity(n),
            isolated: Vec::with_capacity(n),
            margin: Vec::with_capacity(n),
        }
    }
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    #[allow(clippy::too_many_arguments)]
    pub fn push(&mut self, id: Id, market: u32, long: bool, size: f64, entry: f64, isolated: bool, margin: f64) {
        self.ids.push(id);
        self.market.push(market);
        self.long.push(long);
        self.size.push(size);
        self.entry.push(entry);
        self.isolated.push(isolated);
        self.margin.push(margin);
    }

    /// Reorder the accounts by market, side and the price at which their margin runs out
    /// (entry − margin / size for a long, entry + margin / size for a short; stable, so equal
    /// keys keep their order).
    ///
    /// A memory layout choice: the engine keeps accounts in creation order, so the accounts a
    /// price step liquidates together then sit next to each other, and opening the book files
    /// its detection entries in near order instead of at random places of a million-entry
    /// index (at 10^6 accounts: the set-up about a sixth shorter, a crash's replay about a
    /// third, BENCHMARKS.md §6). The engine ranks liquidations by health and then id, so their
    /// order does not depend on it; exact ties of a deleveraging ranking and the last units of
    /// a socialized loss go by creation order, and trader behaviour picks accounts by their
    /// place in the book.
    pub fn sort_by_liquidation_price(&mut self) {
        // One integer per account that orders like (market, side, price), with the row's index
        // below it for the ties: a plain integer sort, in parallel.
        let key = |i: usize| {
            let d = self.margin[i] / self.size[i];
            let price = if self.long[i] { self.entry[i] - d } else { self.entry[i] + d };
            (u128::from(self.market[i]) << 65 | u128::from(self.long[i]) << 64 | u128::from(total_order(price)), i)
        };
        let mut keyed: Vec<(u128, usize)> = (0..self.len()).into_par_iter().map(key).collect();
        keyed.par_sort_unstable();
        let order: Vec<usize> = keyed.into_par_iter().map(|(_, i)| i).collect();
        // The columns are reordered on both cores: the ids (a third of the bytes) on one, the
        // rest on the other.
        let Book { ids, market, long, size, entry, isolated, margin } = self;
        rayon::join(
            || {
                let mut old = std::mem::take(ids);
                *ids = order.iter().map(|&i| std::mem::take(&mut old[i])).collect();
            },
            || {
                for column in [size, entry, margin] {
                    reorder(column, &order);
                }
                for column in [long, isolated] {
                    reorder(column, &order);
                }
                reorder(market, &order);
            },
        );
    }
}

/// `column` in the order of `order` (indexes into it).
fn reorder<T: Copy>(column: &mut Vec<T>, order: &[usize]) {
    *column = order.iter().map(|&i| column[i]).collect();
}

/// `x`'s bits as an unsigned integer ordered like `f64::total_cmp`.
fn total_order(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
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
    let path = p.file.as_ref().map(|file| l.resolve(file));
    let pieces = match &path {
        Some(path) => read_positions(path)?,
        None => Vec::new(),
    };
    let mut book = Book::with_capacity(pieces.iter().map(Vec::len).sum::<usize>() + p.accounts as usize);
    if let Some(path) = &path {
        for (i, row) in pieces.into_iter().flatten().enumerate() {
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
        book.push(compact_str::format_compact!("a{i}"), m, long, size, entry, isolated, margin);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_order_sorts_like_total_cmp() {
        let xs = [f64::NEG_INFINITY, -1e9, -1.5, -0.0, 0.0, 1e-300, 2.5, 45_180.72, f64::INFINITY];
        for (a, b) in xs.iter().zip(&xs[1..]) {
            assert!(total_order(*a) < total_order(*b), "{a} {b}");
            assert_eq!(a.total_cmp(b), total_order(*a).cmp(&total_order(*b)));
        }
    }

    #[test]
    fn sorting_keeps_each_row_whole_and_orders_by_where_the_margin_runs_out() {
        let mut book = Book::default();
        // (id, market, long, size, entry, isolated, margin): margin runs out at
        // long 100 − 20/1 = 80, long 100 − 5/1 = 95, short 100 + 10/2 = 105, long 50 − 1/1 = 49 (market 0).
        book.push("a".into(), 1, true, 1.0, 100.0, true, 20.0);
        book.push("b".into(), 1, true, 1.0, 100.0, false, 5.0);
        book.push("c".into(), 1, false, 2.0, 100.0, true, 10.0);
        book.push("d".into(), 0, true, 1.0, 50.0, true, 1.0);
        book.sort_by_liquidation_price();
        assert_eq!(book.ids, ["d", "c", "a", "b"]);
        assert_eq!(book.market, [0, 1, 1, 1]);
        assert_eq!(book.long, [true, false, true, true]);
        assert_eq!(book.size, [1.0, 2.0, 1.0, 1.0]);
        assert_eq!(book.entry, [50.0, 100.0, 100.0, 100.0]);
        assert_eq!(book.isolated, [true, true, true, false]);
        assert_eq!(book.margin, [1.0, 10.0, 20.0, 5.0]);
    }
}
