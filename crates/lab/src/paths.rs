//! Price paths on the simulation grid: historical bars expanded intra-bar, or seeded synthetic
//! processes (GBM, jump-diffusion, GARCH(1,1) with Student-t shocks), correlated across
//! markets, plus shock overlays.

use crate::data::{intrabar_points, read_bars, read_funding};
use crate::error::LabError;
use crate::scenario::{FundingSource, Loaded, PriceSource};
use crate::time::{format_utc, parse_utc};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{ChiSquared, Distribution, Poisson, StandardNormal};

const YEAR_MS: f64 = 365.0 * 86_400_000.0;

/// Lower-triangular `L` with `L Lᵀ = c`, for positive semi-definite `c` (zero pivots allowed).
pub fn cholesky(c: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = c.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = c[i][i] - s;
                if d < -1e-9 {
                    return None;
                }
                l[i][j] = d.max(0.0).sqrt();
            } else if l[j][j] > 1e-12 {
                l[i][j] = (c[i][j] - s) / l[j][j];
            } else if (c[i][j] - s).abs() > 1e-9 {
                return None;
            }
        }
    }
    Some(l)
}

/// A funding event: the rate (`None`: let the engine compute it from the premium).
#[derive(Clone, Copy, Debug)]
pub struct FundingEvent {
    pub step: usize,
    pub rate: Option<f64>,
}

/// Everything about the paths that does not depend on the seed, computed once per scenario.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Grid times (ms): start, start + step, ..., up to end.
    pub times: Vec<u64>,
    /// Historical series on the grid, per market (None for synthetic markets).
    pub historical: Vec<Option<Vec<f64>>>,
    /// Funding events per market, sorted by step.
    pub funding: Vec<Vec<FundingEvent>>,
    /// Cholesky factor of the synthetic markets' correlation (identity when none).
    pub chol: Vec<Vec<f64>>,
    /// Shocks as (market index or all, step, factor).
    pub shocks: Vec<(Option<usize>, usize, f64)>,
    /// Notes for the report: filled bars, data windows.
    pub notes: Vec<String>,
}

impl Prepared {
    pub fn steps(&self) -> usize {
        self.times.len()
    }
}

fn step_of(times: &[u64], ts: u64) -> usize {
    times.partition_point(|&t| t < ts)
}

pub fn prepare(l: &Loaded) -> Result<Prepared, LabError> {
    let s = &l.scenario;
    let mut times = Vec::new();
    let mut t = l.start_ms;
    while t <= l.end_ms {
        times.push(t);
        t += s.step_ms;
    }
    let mut notes = Vec::new();
    let mut historical = Vec::new();
    for m in &s.markets {
        match &m.price {
            PriceSource::Csv { file, gaps } => {
                let path = l.resolve(file);
                let bars = read_bars(&path, *gaps)?;
                let first = bars.bars[0].ts;
                let last = bars.bars[bars.bars.len() - 1].ts + bars.granularity_ms;
                if first > l.start_ms || last < l.end_ms {
                    return Err(LabError::DataFile {
                        file: path.display().to_string(),
                        message: format!(
                            "covers {} .. {}, but the scenario runs {} .. {}",
                            format_utc(first),
                            format_utc(last),
                            format_utc(l.start_ms),
                            format_utc(l.end_ms)
                        ),
                    });
                }
                if bars.filled > 0 {
                    notes.push(format!("{}: {} missing bars filled with the previous close", file, bars.filled));
                }
                let pts = intrabar_points(&bars);
                historical.push(Some(interpolate(&pts, &times)));
            }
            _ => historical.push(None),
        }
    }
    let mut funding = Vec::new();
    for m in &s.markets {
        let mut ev = Vec::new();
        match &m.funding {
            FundingSource::None => {}
            FundingSource::Constant { rate, interval_ms } => {
                for (k, &t) in times.iter().enumerate().skip(1) {
                    if t / interval_ms != times[k - 1] / interval_ms {
                        ev.push(FundingEvent { step: k, rate: Some(*rate) });
                    }
                }
            }
            FundingSource::Premium { interval_ms } => {
                for (k, &t) in times.iter().enumerate().skip(1) {
                    if t / interval_ms != times[k - 1] / interval_ms {
                        ev.push(FundingEvent { step: k, rate: None });
                    }
                }
            }
            FundingSource::Csv { file } => {
                let path = l.resolve(file);
                let rates = read_funding(&path)?;
                for (ts, r) in rates {
                    if ts > l.start_ms && ts <= l.end_ms {
                        ev.push(FundingEvent { step: step_of(&times, ts).min(times.len() - 1), rate: Some(r) });
                    }
                }
                if ev.is_empty() {
                    notes.push(format!("{file}: no funding settlement falls inside the scenario window"));
                }
            }
        }
        funding.push(ev);
    }
    let n_syn = s.markets.iter().filter(|m| m.price.is_synthetic()).count();
    let chol = match &s.correlation {
        Some(c) => cholesky(c).ok_or_else(|| LabError::Scenario("correlation is not positive semi-definite".into()))?,
        None => (0..n_syn).map(|i| (0..n_syn).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect(),
    };
    let mut shocks = Vec::new();
    for sh in &s.shocks {
        let at = parse_utc(&sh.at).map_err(LabError::Scenario)?;
        let market = sh.market.as_ref().map(|id| s.markets.iter().position(|m| &m.id == id).unwrap_or(0));
        shocks.push((market, step_of(&times, at), 1.0 + sh.gap));
    }
    Ok(Prepared { times, historical, funding, chol, shocks, notes })
}

/// Linear interpolation of `pts` (sorted by time) at each of `times`; flat outside.
fn interpolate(pts: &[(u64, f64)], times: &[u64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(times.len());
    let mut j = 0;
    for &t in times {
        while j + 1 < pts.len() && pts[j + 1].0 <= t {
            j += 1;
        }
        let (t0, p0) = pts[j];
        let v = if t <= t0 || j + 1 >= pts.len() {
            p0
        } else {
            let (t1, p1) = pts[j + 1];
            p0 + (p1 - p0) * ((t - t0) as f64 / (t1 - t0) as f64)
        };
        out.push(v);
    }
    out
}

/// The first price of every market (the same on every path).
pub fn generate_first(l: &Loaded, prep: &Prepared, _rng: &mut ChaCha8Rng) -> Vec<f64> {
    l.scenario
        .markets
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let p = match (&prep.historical[i], &m.price) {
                (Some(h), _) => h[0],
                (None, PriceSource::Gbm { initial, .. })
                | (None, PriceSource::JumpDiffusion { initial, .. })
                | (None, PriceSource::Garch { initial, .. }) => *initial,
                (None, PriceSource::Csv { .. }) => 1.0,
            };
            prep.shocks.iter().filter(|(mk, st, _)| *st == 0 && mk.is_none_or(|x| x == i)).fold(p, |p, s| p * s.2)
        })
        .collect()
}

/// The fundamental price of every market at every grid step for one path (row = market).
pub fn generate(l: &Loaded, prep: &Prepared, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    let s = &l.scenario;
    let n = prep.steps();
    let dt_ms = s.step_ms as f64;
    let dt = dt_ms / YEAR_MS;
    let syn: Vec<usize> = (0..s.markets.len()).filter(|&i| prep.historical[i].is_none()).collect();
    let mut out: Vec<Vec<f64>> =
        prep.historical.iter().map(|h| h.clone().unwrap_or_else(|| Vec::with_capacity(n))).collect();
    // State of each synthetic market: log price and GARCH variance per step.
    let mut logp: Vec<f64> = Vec::with_capacity(syn.len());
    let mut var: Vec<f64> = Vec::with_capacity(syn.len());
    for &i in &syn {
        let (init, sigma) = match &s.markets[i].price {
            PriceSource::Gbm { initial, sigma, .. }
            | PriceSource::JumpDiffusion { initial, sigma, .. }
            | PriceSource::Garch { initial, sigma, .. } => (*initial, *sigma),
            PriceSource::Csv { .. } => unreachable!("synthetic only"),
        };
        logp.push(init.ln());
        var.push(sigma * sigma * dt);
        out[i].push(init);
    }
    let mut z = vec![0.0; syn.len()];
    let mut e = vec![0.0; syn.len()];
    for _ in 1..n {
        for zi in z.iter_mut() {
            *zi = rng.sample(StandardNormal);
        }
        for (a, ea) in e.iter_mut().enumerate() {
            *ea = (0..=a).map(|b| prep.chol[a][b] * z[b]).sum();
        }
        for (k, &i) in syn.iter().enumerate() {
            let r = match &s.markets[i].price {
                PriceSource::Gbm { mu, sigma, .. } => (mu - 0.5 * sigma * sigma) * dt + sigma * dt.sqrt() * e[k],
                PriceSource::JumpDiffusion { mu, sigma, jumps_per_day, jump_mean, jump_std, .. } => {
                    let lambda = jumps_per_day * dt_ms / 86_400_000.0;
                    let kappa = (jump_mean + 0.5 * jump_std * jump_std).exp() - 1.0;
                    let mut r = (mu - 0.5 * sigma * sigma) * dt - lambda * kappa + sigma * dt.sqrt() * e[k];
                    if lambda > 0.0 {
                        let jumps: f64 = Poisson::new(lambda).map(|p| p.sample(rng)).unwrap_or(0.0);
                        for _ in 0..(jumps as u64) {
                            let j: f64 = rng.sample(StandardNormal);
                            r += jump_mean + jump_std * j;
                        }
                    }
                    r
                }
                PriceSource::Garch { mu, sigma, alpha, beta, nu, .. } => {
                    let w: f64 = ChiSquared::new(*nu).map(|c| c.sample(rng)).unwrap_or(*nu);
                    let t = e[k] / (w / nu).sqrt() * ((nu - 2.0) / nu).sqrt();
                    let h = var[k];
                    let eps = h.sqrt() * t;
                    let long_run = sigma * sigma * dt;
                    var[k] = long_run * (1.0 - alpha - beta) + alpha * eps * eps + beta * h;
                    mu * dt - 0.5 * h + eps
                }
                PriceSource::Csv { .. } => 0.0,
            };
            logp[k] += r;
            out[i].push(logp[k].exp().clamp(1e-6, 1e9));
        }
    }
    // A uniform draw per path keeps the generator's position independent of the paths' content.
    let _: f64 = rng.random();
    for &(market, step, factor) in &prep.shocks {
        for (i, series) in out.iter_mut().enumerate() {
            if market.is_none_or(|m| m == i) {
                for v in series.iter_mut().skip(step) {
                    *v *= factor;
                }
            }
        }
    }
    out
}
