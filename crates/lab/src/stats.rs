//! Tail statistics of Monte Carlo losses: VaR and expected shortfall with a stated convention,
//! bootstrap confidence intervals, histograms. Deterministic: the bootstrap has its own seed.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// VaR at level `alpha` (e.g. 0.99): the empirical quantile by the nearest-rank convention,
/// the smallest loss L in the sample with at least `alpha` of the sample ≤ L.
pub fn var(sorted: &[f64], alpha: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let n = sorted.len();
    let rank = ((alpha * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// Expected shortfall at `alpha`: the mean of the losses at or beyond the VaR rank (the worst
/// `n - rank + 1` outcomes).
pub fn es(sorted: &[f64], alpha: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let n = sorted.len();
    let rank = ((alpha * n as f64).ceil() as usize).clamp(1, n);
    let tail = &sorted[rank - 1..];
    tail.iter().sum::<f64>() / tail.len() as f64
}

#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    pub value: f64,
    /// 95% percentile-bootstrap interval.
    pub ci_low: f64,
    pub ci_high: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Tail {
    pub level: f64,
    pub var: Estimate,
    pub es: Estimate,
}

#[derive(Clone, Debug, Serialize)]
pub struct Distribution {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Share of paths with a value above zero.
    pub prob_positive: f64,
    pub tails: Vec<Tail>,
}

pub const LEVELS: [f64; 3] = [0.95, 0.975, 0.99];

/// Summary of a sample of losses (positive = bad), with `resamples` bootstrap draws.
pub fn describe(values: &[f64], resamples: usize, seed: u64) -> Distribution {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut boot: Vec<Vec<(f64, f64)>> = vec![Vec::with_capacity(resamples); LEVELS.len()];
    let mut sample = vec![0.0; values.len()];
    if !values.is_empty() {
        for _ in 0..resamples {
            for x in sample.iter_mut() {
                *x = sorted[rng.random_range(0..sorted.len())];
            }
            sample.sort_by(f64::total_cmp);
            for (j, &a) in LEVELS.iter().enumerate() {
                boot[j].push((var(&sample, a), es(&sample, a)));
            }
        }
    }
    let tails = LEVELS
        .iter()
        .enumerate()
        .map(|(j, &a)| {
            let mut v: Vec<f64> = boot[j].iter().map(|x| x.0).collect();
            let mut e: Vec<f64> = boot[j].iter().map(|x| x.1).collect();
            v.sort_by(f64::total_cmp);
            e.sort_by(f64::total_cmp);
            let ci = |s: &[f64], point: f64| {
                if s.is_empty() {
                    (point, point)
                } else {
                    (var(s, 0.025), var(s, 0.975))
                }
            };
            let (vv, ee) = (var(&sorted, a), es(&sorted, a));
            let (vl, vh) = ci(&v, vv);
            let (el, eh) = ci(&e, ee);
            Tail {
                level: a,
                var: Estimate { value: vv, ci_low: vl, ci_high: vh },
                es: Estimate { value: ee, ci_low: el, ci_high: eh },
            }
        })
        .collect();
    Distribution {
        mean,
        std,
        min: sorted.first().copied().unwrap_or(0.0),
        max: sorted.last().copied().unwrap_or(0.0),
        prob_positive: values.iter().filter(|v| **v > 0.0).count() as f64 / n,
        tails,
    }
}

/// `bins` equal-width bins over [min, max]: (left edge, width, count).
pub fn histogram(values: &[f64], bins: usize) -> Vec<(f64, f64, u64)> {
    if values.is_empty() || bins == 0 {
        return Vec::new();
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let width = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 };
    let mut counts = vec![0u64; bins];
    for &v in values {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    counts.into_iter().enumerate().map(|(i, c)| (lo + i as f64 * width, width, c)).collect()
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9).
#[allow(clippy::excessive_precision)]
pub fn norm_inv(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let pl = 0.02425;
    if p < pl {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - pl {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -norm_inv(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_conventions() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(var(&v, 0.95), 95.0);
        assert_eq!(var(&v, 0.99), 99.0);
        assert_eq!(es(&v, 0.99), 99.5);
        assert_eq!(es(&v, 0.95), (95..=100).map(f64::from).sum::<f64>() / 6.0);
        assert!((norm_inv(0.99) - 2.326_347_874).abs() < 1e-8);
        assert!((norm_inv(0.01) + 2.326_347_874).abs() < 1e-8);
    }

    #[test]
    fn bootstrap_is_deterministic_and_brackets_the_estimate() {
        let v: Vec<f64> = (0..500).map(|i| ((i * 7919) % 1000) as f64).collect();
        let a = describe(&v, 200, 1);
        let b = describe(&v, 200, 1);
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        for t in &a.tails {
            assert!(t.var.ci_low <= t.var.value && t.var.value <= t.var.ci_high, "{t:?}");
        }
    }
}
