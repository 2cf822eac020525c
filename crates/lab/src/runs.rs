//! Monte Carlo, parameter sweeps and side-by-side comparisons.
//!
//! Paths run in parallel (rayon), each with its own generator seeded from (seed, path index),
//! and results are collected in path order before any reduction, so the output for a seed does
//! not depend on the number of threads.

use crate::charts::{self, Chart, Kind, PALETTE, PURPLE, RED};
use crate::error::LabError;
use crate::report::{self, esc, fmt_usd, inline_svg, kv_table, notes_html, page};
use crate::scenario::{self, Loaded};
use crate::sim::{self, Detail, Keep, PathResult, Setup};
use crate::stats::{self, describe, histogram};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

/// Run `f` on a pool of `threads` threads (all cores when None).
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
    match threads {
        None => Ok(f()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| LabError::Other(format!("thread pool: {e}")))?;
            Ok(pool.install(f))
        }
    }
}

/// N paths of a set-up scenario, in path order.
pub fn monte_carlo(setup: &Setup, paths: u64, tick: &(dyn Fn() + Sync)) -> Vec<PathResult> {
    (0..paths)
        .into_par_iter()
        .map(|i| {
            let r = setup.run_path(i, Keep::Result, None).0;
            tick();
            r
        })
        .collect()
}

pub const RESAMPLES: usize = 1000;

fn conservation(results: &[PathResult]) -> String {
    results.iter().map(|r| r.conservation_error.as_str()).find(|e| *e != "0").unwrap_or("0").to_string()
}

fn mean(results: &[PathResult], f: impl Fn(&PathResult) -> f64) -> f64 {
    results.iter().map(f).sum::<f64>() / results.len().max(1) as f64
}

/// summary.json of a Monte Carlo run.
pub fn mc_summary(setup: &Setup, results: &[PathResult]) -> Value {
    let s = &setup.loaded.scenario;
    let bad: Vec<f64> = results.iter().map(|r| r.bad_debt).collect();
    let dd: Vec<f64> = results.iter().map(|r| r.insurance_drawdown()).collect();
    let liq: Vec<f64> = results.iter().map(|r| r.liquidation_notional).collect();
    let loss: Vec<f64> = results.iter().map(|r| -r.book_pnl).collect();
    json!({
        "scenario": s.name,
        "seed": setup.seed,
        "paths": results.len(),
        "accounts": setup.book.len(),
        "var_convention": "nearest rank: the smallest loss with at least the level's share of paths at or below it; ES = mean of the losses from that rank on; 95% percentile-bootstrap intervals over 1000 resamples",
        "bad_debt": describe(&bad, RESAMPLES, setup.seed),
        "insurance_drawdown": describe(&dd, RESAMPLES, setup.seed ^ 1),
        "liquidations_at_risk": describe(&liq, RESAMPLES, setup.seed ^ 2),
        "book_loss": describe(&loss, RESAMPLES, setup.seed ^ 3),
        "mean": {
            "bad_debt": mean(results, |r| r.bad_debt),
            "insurance_drawdown": mean(results, |r| r.insurance_drawdown()),
            "liquidation_notional": mean(results, |r| r.liquidation_notional),
            "liquidation_fills": mean(results, |r| r.liquidation_fills as f64),
            "adl_notional": mean(results, |r| r.adl_notional),
            "socialized_loss": mean(results, |r| r.socialized_loss),
            "backstop_taken_notional": mean(results, |r| r.backstop_taken_notional),
            "breaker_trips": mean(results, |r| r.breaker_trips as f64),
            "peak_open_interest": mean(results, |r| r.peak_open_interest),
            "underwater_accounts": mean(results, |r| r.underwater_accounts as f64),
        },
        "conservation_error": conservation(results),
        "notes": setup.notes,
    })
}

pub fn paths_csv(results: &[PathResult]) -> String {
    let mut out = String::from(
        "path,bad_debt,insurance_start,insurance_min,insurance_end,liquidation_fills,liquidation_notional,liquidated_accounts,adl_count,adl_notional,adl_overshoot,socialized_loss,backstop_taken_notional,breaker_trips,peak_open_interest,book_pnl,underwater_accounts,conservation_error\n",
    );
    for r in results {
        let _ = writeln!(
            out,
            "{},{:.2},{:.2},{:.2},{:.2},{},{:.2},{},{},{:.2},{:.2},{:.2},{:.2},{},{:.2},{:.2},{},{}",
            r.path,
            r.bad_debt,
            r.insurance_start,
            r.insurance_min,
            r.insurance_end,
            r.liquidation_fills,
            r.liquidation_notional,
            r.liquidated_accounts,
            r.adl_count,
            r.adl_notional,
            r.adl_overshoot,
            r.socialized_loss,
            r.backstop_taken_notional,
            r.breaker_trips,
            r.peak_open_interest,
            r.book_pnl,
            r.underwater_accounts,
            r.conservation_error
        );
    }
    out
}

fn hist_chart(title: &str, values: &[f64], var99: f64, color: plotters::style::RGBColor) -> Chart {
    let h = histogram(values, 30);
    let mut c = Chart::new(title, "USDC", "paths").from_zero();
    let w = h.first().map(|b| b.1).unwrap_or(1.0);
    c.add("", color, Kind::Bars(w), h.iter().map(|b| (b.0, b.2 as f64)).collect());
    let top = h.iter().map(|b| b.2).max().unwrap_or(1) as f64;
    c.add(format!("VaR 99% = {}", fmt_usd(var99)), RED, Kind::Line, vec![(var99, 0.0), (var99, top)]);
    c
}

fn tail_table(name: &str, v: &Value) -> String {
    let mut t = format!(
        "<h3>{}</h3><table><tr><th>level</th><th>VaR</th><th>95% CI</th><th>ES</th><th>95% CI</th></tr>",
        esc(name)
    );
    if let Some(tails) = v.get("tails").and_then(Value::as_array) {
        for tail in tails {
            let g = |a: &str, b: &str| tail[a][b].as_f64().unwrap_or(0.0);
            let _ = write!(
                t,
                "<tr><td>{:.1}%</td><td>{}</td><td>{} .. {}</td><td>{}</td><td>{} .. {}</td></tr>",
                tail["level"].as_f64().unwrap_or(0.0) * 100.0,
                fmt_usd(g("var", "value")),
                fmt_usd(g("var", "ci_low")),
                fmt_usd(g("var", "ci_high")),
                fmt_usd(g("es", "value")),
                fmt_usd(g("es", "ci_low")),
                fmt_usd(g("es", "ci_high"))
            );
        }
    }
    let _ = write!(
        t,
        "</table><p>mean {} · std {} · max {} · share of paths above zero {:.1}%</p>",
        fmt_usd(v["mean"].as_f64().unwrap_or(0.0)),
        fmt_usd(v["std"].as_f64().unwrap_or(0.0)),
        fmt_usd(v["max"].as_f64().unwrap_or(0.0)),
        v["prob_positive"].as_f64().unwrap_or(0.0) * 100.0
    );
    t
}

/// Outputs of `ballast mc`: summary.json, paths.csv, histograms and report.html.
pub fn write_mc(dir: &Path, setup: &Setup, results: &[PathResult], sample: Option<&Detail>) -> Result<Value, LabError> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let summary = mc_summary(setup, results);
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap_or_default())
        .map_err(|e| LabError::io(&dir.join("summary.json"), e))?;
    std::fs::write(dir.join("paths.csv"), paths_csv(results)).map_err(|e| LabError::io(&dir.join("paths.csv"), e))?;
    let var99 = |k: &str| summary[k]["tails"][2]["var"]["value"].as_f64().unwrap_or(0.0);
    let mut list = vec![
        (
            "hist-bad-debt".to_string(),
            hist_chart(
                "Bad debt per path",
                &results.iter().map(|r| r.bad_debt).collect::<Vec<_>>(),
                var99("bad_debt"),
                PALETTE[0],
            ),
        ),
        (
            "hist-insurance-drawdown".to_string(),
            hist_chart(
                "Insurance-fund drawdown per path",
                &results.iter().map(|r| r.insurance_drawdown()).collect::<Vec<_>>(),
                var99("insurance_drawdown"),
                PALETTE[1],
            ),
        ),
        (
            "hist-liquidations".to_string(),
            hist_chart(
                "Liquidated notional per path (liquidations-at-risk)",
                &results.iter().map(|r| r.liquidation_notional).collect::<Vec<_>>(),
                var99("liquidations_at_risk"),
                PALETTE[2],
            ),
        ),
        (
            "hist-book-loss".to_string(),
            hist_chart(
                "Loss of the book per path",
                &results.iter().map(|r| -r.book_pnl).collect::<Vec<_>>(),
                var99("book_loss"),
                PALETTE[3],
            ),
        ),
    ];
    if let Some(d) = sample {
        for (name, c) in report::run_charts(d).into_iter().filter(|(n, _)| n.starts_with("price-")) {
            let mut c = c;
            c.title = format!("{} (path 0)", c.title);
            list.push((name, c));
        }
    }
    let svgs = report::write_charts(dir, &list)?;
    let s = &setup.loaded.scenario;
    let mut body = format!(
        "<h1>Monte Carlo: {}</h1><p>{} paths, seed {}, {} accounts. {}</p>",
        esc(&s.name),
        results.len(),
        setup.seed,
        setup.book.len(),
        esc(&s.description)
    );
    let _ = write!(
        body,
        "<p class=\"story\">Across {} paths the mean bad debt was {} and the 99% VaR {} (expected shortfall {}); the insurance fund's 99% drawdown was {}; \
         the liquidated notional exceeded {} on 1% of paths (liquidations-at-risk). Conservation error on every path: {}.</p>",
        results.len(),
        fmt_usd(summary["bad_debt"]["mean"].as_f64().unwrap_or(0.0)),
        fmt_usd(var99("bad_debt")),
        fmt_usd(summary["bad_debt"]["tails"][2]["es"]["value"].as_f64().unwrap_or(0.0)),
        fmt_usd(var99("insurance_drawdown")),
        fmt_usd(var99("liquidations_at_risk")),
        summary["conservation_error"].as_str().unwrap_or("?")
    );
    for (name, key) in [
        ("Bad debt", "bad_debt"),
        ("Insurance-fund drawdown", "insurance_drawdown"),
        ("Liquidations-at-risk (liquidated notional)", "liquidations_at_risk"),
        ("Loss of the book", "book_loss"),
    ] {
        body.push_str(&tail_table(name, &summary[key]));
    }
    body.push_str("<h2>Distributions</h2>");
    for (_, svg) in &svgs {
        body.push_str(&inline_svg(svg));
    }
    body.push_str("<h2>Means</h2>");
    body.push_str(&kv_table(&summary["mean"]));
    notes_html(&mut body, &setup.notes);
    std::fs::write(dir.join("report.html"), page(&format!("Ballast Monte Carlo: {}", s.name), &body))
        .map_err(|e| LabError::io(&dir.join("report.html"), e))?;
    Ok(summary)
}

/// `path=v1,v2,...` into (path, values).
pub fn parse_grid(spec: &str) -> Result<(String, Vec<String>), LabError> {
    let (path, vals) =
        spec.split_once('=').ok_or_else(|| LabError::Scenario(format!("--grid '{spec}' is not PATH=V1,V2,...")))?;
    let vals: Vec<String> = vals.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    if vals.is_empty() {
        return Err(LabError::Scenario(format!("--grid '{spec}' has no values")));
    }
    Ok((path.trim().to_string(), vals))
}

/// Capital efficiency: the average leverage the markets allow (1 / initial margin), weighted
/// by the population's market weights.
pub fn capital_efficiency(l: &Loaded) -> f64 {
    let cdf = crate::book::market_cdf(l);
    let mut prev = 0.0;
    let mut total = 0.0;
    for (i, m) in l.scenario.markets.iter().enumerate() {
        let w = cdf[i] - prev;
        prev = cdf[i];
        total += w / crate::book::ratio_f64(m.params.initial_margin.raw());
    }
    total
}

pub struct SweepPoint {
    pub settings: Vec<(String, String)>,
    pub efficiency: f64,
    pub results: Vec<PathResult>,
    /// The set-up's notes at this point (its parameters can make notes the others lack).
    pub notes: Vec<String>,
}

/// Every combination of the grid: load, set up and run `paths` paths each (the scenario is
/// validated for every point before any run starts).
pub fn sweep(
    scenario: &Path,
    base: &[String],
    grid: &[(String, Vec<String>)],
    seed: Option<u64>,
    paths: Option<u64>,
    tick: &(dyn Fn() + Sync),
) -> Result<Vec<SweepPoint>, LabError> {
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (path, vals) in grid {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                vals.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((path.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    let mut loaded = Vec::new();
    for c in &combos {
        let mut sets = base.to_vec();
        sets.extend(c.iter().map(|(p, v)| format!("{p}={v}")));
        loaded.push(scenario::load(scenario, &sets)?);
    }
    let mut out = Vec::new();
    for (c, l) in combos.into_iter().zip(loaded) {
        let efficiency = capital_efficiency(&l);
        let n = paths.unwrap_or(u64::from(l.scenario.paths));
        let seed = seed.unwrap_or(l.scenario.seed);
        let setup = sim::setup(l, seed)?;
        let results = monte_carlo(&setup, n, tick);
        out.push(SweepPoint { settings: c, efficiency, results, notes: setup.notes.clone() });
    }
    Ok(out)
}

pub fn write_sweep(dir: &Path, name: &str, points: &[SweepPoint]) -> Result<(), LabError> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let mut csv = String::new();
    if let Some(p) = points.first() {
        for (k, _) in &p.settings {
            let _ = write!(csv, "{k},");
        }
    }
    csv.push_str("capital_efficiency,paths,bad_debt_mean,bad_debt_var99,bad_debt_es99,insurance_drawdown_var99,liquidation_notional_mean,liquidations_at_risk_99,adl_notional_mean,underwater_accounts_mean,conservation_error\n");
    let mut rows = Vec::new();
    for p in points {
        let mut bad: Vec<f64> = p.results.iter().map(|r| r.bad_debt).collect();
        bad.sort_by(f64::total_cmp);
        let mut dd: Vec<f64> = p.results.iter().map(|r| r.insurance_drawdown()).collect();
        dd.sort_by(f64::total_cmp);
        let mut liq: Vec<f64> = p.results.iter().map(|r| r.liquidation_notional).collect();
        liq.sort_by(f64::total_cmp);
        let row = (
            p.efficiency,
            mean(&p.results, |r| r.bad_debt),
            stats::var(&bad, 0.99),
            stats::es(&bad, 0.99),
            stats::var(&dd, 0.99),
            mean(&p.results, |r| r.liquidation_notional),
            stats::var(&liq, 0.99),
            mean(&p.results, |r| r.adl_notional),
            mean(&p.results, |r| r.underwater_accounts as f64),
        );
        for (_, v) in &p.settings {
            let _ = write!(csv, "{},", v.replace(',', ";"));
        }
        let _ = writeln!(
            csv,
            "{:.4},{},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{}",
            row.0,
            p.results.len(),
            row.1,
            row.2,
            row.3,
            row.4,
            row.5,
            row.6,
            row.7,
            row.8,
            conservation(&p.results)
        );
        rows.push(row);
    }
    std::fs::write(dir.join("sweep.csv"), &csv).map_err(|e| LabError::io(&dir.join("sweep.csv"), e))?;
    let mut c = Chart::new(
        "Frontier: bad debt against capital efficiency",
        "average leverage allowed (1 / initial margin)",
        "bad debt (USDC)",
    )
    .from_zero();
    c.add("mean bad debt", PALETTE[0], Kind::Points(5), rows.iter().map(|r| (r.0, r.1)).collect());
    c.add("99% VaR of bad debt", RED, Kind::Triangles(6), rows.iter().map(|r| (r.0, r.2)).collect());
    let mut frontier: Vec<(f64, f64)> = rows.iter().map(|r| (r.0, r.1)).collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    // The efficient frontier: for each leverage, the lowest bad debt among points allowing at least that much.
    let mut best = f64::INFINITY;
    let mut front: Vec<(f64, f64)> = Vec::new();
    for p in frontier.iter().rev() {
        if p.1 < best {
            best = p.1;
            front.push(*p);
        }
    }
    front.reverse();
    c.add("frontier", PURPLE, Kind::Line, front);
    let svgs = report::write_charts(dir, &[("frontier".to_string(), c)])?;
    let mut body = format!("<h1>Sweep: {}</h1><p>{} grid points.</p>", esc(name), points.len());
    for (_, svg) in &svgs {
        body.push_str(&inline_svg(svg));
    }
    body.push_str("<h2>Results</h2><table><tr>");
    for h in csv.lines().next().unwrap_or("").split(',') {
        let _ = write!(body, "<th>{}</th>", esc(h));
    }
    body.push_str("</tr>");
    for line in csv.lines().skip(1) {
        body.push_str("<tr>");
        for cell in line.split(',') {
            let _ = write!(body, "<td>{}</td>", esc(cell));
        }
        body.push_str("</tr>");
    }
    body.push_str("</table>");
    notes_html(&mut body, &sweep_notes(points));
    std::fs::write(dir.join("report.html"), page(&format!("Ballast sweep: {name}"), &body))
        .map_err(|e| LabError::io(&dir.join("report.html"), e))?;
    Ok(())
}

/// The grid's notes (see [`report::merged_notes`]), each point named by its settings
/// (`PATH=V, PATH=V`).
pub fn sweep_notes(points: &[SweepPoint]) -> Vec<String> {
    let runs: Vec<(String, &[String])> = points
        .iter()
        .map(|p| (p.settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "), &p.notes[..]))
        .collect();
    report::merged_notes(&runs)
}

/// A named variant: `NAME:PATH=V;PATH=V`.
pub fn parse_variant(spec: &str) -> Result<(String, Vec<String>), LabError> {
    let (name, sets) = spec
        .split_once(':')
        .ok_or_else(|| LabError::Scenario(format!("--variant '{spec}' is not NAME:PATH=V;PATH=V")))?;
    let sets: Vec<String> = sets.split(';').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    Ok((name.trim().to_string(), sets))
}

pub struct Variant {
    pub name: String,
    pub setup: Setup,
    pub result: PathResult,
    pub detail: Detail,
}

/// Run path 0 of every variant with recording (all loaded and validated first).
pub fn compare(
    scenario: &Path,
    base: &[String],
    variants: &[(String, Vec<String>)],
    seed: Option<u64>,
) -> Result<Vec<Variant>, LabError> {
    let mut loaded = Vec::new();
    for (name, sets) in variants {
        let mut all = base.to_vec();
        all.extend(sets.iter().cloned());
        loaded.push((name.clone(), scenario::load(scenario, &all)?));
    }
    let mut out = Vec::new();
    for (name, l) in loaded {
        let seed = seed.unwrap_or(l.scenario.seed);
        let mut setup = sim::setup(l, seed)?;
        let (result, detail) = setup.run_single(0, Keep::Detail, None);
        out.push(Variant { name, setup, result, detail: detail.unwrap_or_default() });
    }
    Ok(out)
}

pub fn write_compare(dir: &Path, variants: &[Variant]) -> Result<Value, LabError> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let summaries: Vec<Value> = variants.iter().map(|v| report::summary_json(&v.setup, &v.result, 1)).collect();
    let out = json!({"variants": variants.iter().map(|v| v.name.clone()).collect::<Vec<_>>(), "summaries": summaries});
    std::fs::write(dir.join("compare.json"), serde_json::to_string_pretty(&out).unwrap_or_default())
        .map_err(|e| LabError::io(&dir.join("compare.json"), e))?;
    type Metric = (&'static str, fn(&PathResult) -> f64);
    let metrics: [Metric; 10] = [
        ("bad debt", |r| r.bad_debt),
        ("insurance drawdown", |r| r.insurance_drawdown()),
        ("liquidation fills", |r| r.liquidation_fills as f64),
        ("liquidated notional", |r| r.liquidation_notional),
        ("ADL notional", |r| r.adl_notional),
        ("ADL overshoot", |r| r.adl_overshoot),
        ("socialized loss", |r| r.socialized_loss),
        ("backstop takeovers", |r| r.backstop_taken_notional),
        ("breaker trips", |r| r.breaker_trips as f64),
        ("underwater accounts at end", |r| r.underwater_accounts as f64),
    ];
    let mut csv = String::from("metric");
    for v in variants {
        let _ = write!(csv, ",{}", v.name);
    }
    csv.push('\n');
    let mut table = String::from("<table><tr><th>metric</th>");
    for v in variants {
        let _ = write!(table, "<th>{}</th>", esc(&v.name));
    }
    table.push_str("</tr>");
    for (name, f) in metrics {
        let _ = write!(csv, "{name}");
        let _ = write!(table, "<tr><td>{name}</td>");
        for v in variants {
            let x = f(&v.result);
            let _ = write!(csv, ",{x:.2}");
            let _ = write!(table, "<td>{}</td>", charts::fmt_num(x));
        }
        csv.push('\n');
        table.push_str("</tr>");
    }
    table.push_str("</table>");
    std::fs::write(dir.join("compare.csv"), &csv).map_err(|e| LabError::io(&dir.join("compare.csv"), e))?;
    let xy = |d: &Detail, v: &[f64]| d.times.iter().zip(v).map(|(t, y)| (*t as f64, *y)).collect::<Vec<_>>();
    let mut list = Vec::new();
    let mut c = Chart::new("Insurance fund", "time (UTC)", "USDC").time().from_zero();
    for (i, v) in variants.iter().enumerate() {
        c.add(v.name.clone(), PALETTE[i % 8], Kind::Line, xy(&v.detail, &v.detail.insurance));
    }
    list.push(("insurance".to_string(), c));
    let mut c = Chart::new("Cumulative liquidated notional", "time (UTC)", "USDC").time().from_zero();
    for (i, v) in variants.iter().enumerate() {
        c.add(v.name.clone(), PALETTE[i % 8], Kind::Line, xy(&v.detail, &v.detail.liquidation_notional));
    }
    list.push(("liquidations".to_string(), c));
    let mut c = Chart::new("Cumulative ADL notional", "time (UTC)", "USDC").time().from_zero();
    for (i, v) in variants.iter().enumerate() {
        c.add(v.name.clone(), PALETTE[i % 8], Kind::Line, xy(&v.detail, &v.detail.adl_notional));
    }
    list.push(("adl".to_string(), c));
    if let Some(first) = variants.first() {
        let id = first.detail.market_ids.first().cloned().unwrap_or_default();
        let mut c = Chart::new(format!("{id}: book price"), "time (UTC)", "price").time();
        for (i, v) in variants.iter().enumerate() {
            if let Some(p) = v.detail.book.first() {
                c.add(v.name.clone(), PALETTE[i % 8], Kind::Line, xy(&v.detail, p));
            }
        }
        list.push(("price".to_string(), c));
    }
    let svgs = report::write_charts(dir, &list)?;
    let title = variants.first().map(|v| v.setup.loaded.scenario.name.clone()).unwrap_or_default();
    let mut body = format!(
        "<h1>Comparison: {}</h1><p>The same scenario, seed and path under {} parameter sets.</p>",
        esc(&title),
        variants.len()
    );
    body.push_str(&table);
    for (_, svg) in &svgs {
        body.push_str(&inline_svg(svg));
    }
    body.push_str("<h2>What happened in each</h2>");
    for v in variants {
        let _ = write!(
            body,
            "<h3>{}</h3><p class=\"story\">{}</p>",
            esc(&v.name),
            esc(&report::narrative(&v.setup, &v.result, &v.detail))
        );
    }
    let runs: Vec<(String, &[String])> = variants.iter().map(|v| (v.name.clone(), &v.setup.notes[..])).collect();
    notes_html(&mut body, &report::merged_notes(&runs));
    std::fs::write(dir.join("report.html"), page(&format!("Ballast comparison: {title}"), &body))
        .map_err(|e| LabError::io(&dir.join("report.html"), e))?;
    Ok(out)
}
