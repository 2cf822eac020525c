//! Outputs of a run: summary.json, events.jsonl, timeseries.csv, charts (SVG and PNG) and one
//! self-contained report.html (inline SVG and CSS, no script, nothing fetched).

use crate::charts::{self, fmt_num, Chart, Kind, PALETTE, PURPLE, RED};
use crate::contract::BREAKER_STATES;
use crate::error::LabError;
use crate::sim::{Detail, PathResult, Setup};
use crate::time::format_utc;
use rayon::prelude::*;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

fn write(path: &Path, bytes: &[u8]) -> Result<(), LabError> {
    std::fs::write(path, bytes).map_err(|e| LabError::io(path, e))
}

fn r2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The summary.json of one path (docs/scenarios.md, "summary.json").
pub fn summary_json(setup: &Setup, r: &PathResult, paths: u64) -> Value {
    let s = &setup.loaded.scenario;
    json!({
        "scenario": s.name,
        "description": s.description,
        "seed": setup.seed,
        "paths": paths,
        "path": r.path,
        "window": {"start": s.start, "end": s.end, "step_ms": s.step_ms, "steps": setup.prep.steps()},
        "markets": s.markets.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        "accounts": setup.book.len() as u64 + r.new_entrants,
        "bad_debt": r2(r.bad_debt),
        "waterfall": {"insurance": r2(r.absorbed_by_insurance), "backstop": r2(r.absorbed_by_backstop), "adl": r2(r.absorbed_by_adl), "socialized": r2(r.socialized_loss)},
        "insurance_fund": {"start": r2(r.insurance_start), "min": r2(r.insurance_min), "end": r2(r.insurance_end)},
        "liquidations": {"count": r.liquidation_fills, "notional": r2(r.liquidation_notional), "accounts": r.liquidated_accounts, "orders": r.liquidation_orders},
        "adl": {"count": r.adl_count, "notional": r2(r.adl_notional), "overshoot": r2(r.adl_overshoot)},
        "socialized_loss": r2(r.socialized_loss),
        "backstop": {"start": r2(r.backstop_start), "taken_notional": r2(r.backstop_taken_notional), "pnl": r2(r.backstop_pnl)},
        "breaker_trips": r.breaker_trips,
        "peak_open_interest": r2(r.peak_open_interest),
        "conservation_error": r.conservation_error,
        "book": {"pnl": r2(r.book_pnl), "underwater_accounts": r.underwater_accounts, "unabsorbed_deficit": r2(r.unabsorbed_deficit), "peak_deficit": r2(r.peak_deficit), "peak_deficit_at": if r.peak_deficit > 0.0 { format_utc(r.peak_deficit_ts) } else { String::new() }, "liquidatable_at_end": r.liquidatable_at_end},
        "traders": {"top_ups": r.top_ups, "deleveraged": r.deleveraged_by_traders, "new_entrants": r.new_entrants},
        "rejected_commands": r.rejected_commands,
        "oracle_validity_changes": r.oracle_validity_changes,
        "notes": setup.notes,
    })
}

/// The terminal table of one path.
pub fn terminal_table(setup: &Setup, r: &PathResult) -> String {
    let mut t = String::new();
    let rows: Vec<(&str, String)> = vec![
        ("scenario", setup.loaded.scenario.name.clone()),
        ("seed / path", format!("{} / {}", setup.seed, r.path)),
        ("accounts", format!("{} (+{} new)", setup.book.len(), r.new_entrants)),
        ("peak open interest", fmt_usd(r.peak_open_interest)),
        ("liquidation starts", r.liquidated_accounts.to_string()),
        ("liquidation orders", r.liquidation_orders.to_string()),
        ("liquidation fills", format!("{} for {}", r.liquidation_fills, fmt_usd(r.liquidation_notional))),
        ("bad debt", fmt_usd(r.bad_debt)),
        (
            "insurance fund",
            format!(
                "{} -> min {} -> {}",
                fmt_usd(r.insurance_start),
                fmt_usd(r.insurance_min),
                fmt_usd(r.insurance_end)
            ),
        ),
        ("ADL", format!("{} for {} (overshoot {})", r.adl_count, fmt_usd(r.adl_notional), fmt_usd(r.adl_overshoot))),
        ("socialized loss", fmt_usd(r.socialized_loss)),
        ("backstop takeovers", fmt_usd(r.backstop_taken_notional)),
        ("breaker trips", r.breaker_trips.to_string()),
        ("underwater at end", format!("{} accounts, deficit {}", r.underwater_accounts, fmt_usd(r.unabsorbed_deficit))),
        ("book PnL", fmt_usd(r.book_pnl)),
        ("conservation error", r.conservation_error.clone()),
    ];
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(t, "  {k:<w$}  {v}");
    }
    t
}

pub fn fmt_usd(v: f64) -> String {
    format!("${}", fmt_num(v))
}

/// timeseries.csv: one row per step.
pub fn timeseries_csv(d: &Detail) -> String {
    let mut out = String::from("timestamp_utc,ts");
    for id in &d.market_ids {
        let _ = write!(out, ",{id}.fundamental,{id}.book,{id}.oracle,{id}.open_interest,{id}.breaker");
    }
    out.push_str(",insurance_fund,backstop,liquidation_fills,liquidation_notional_cum,adl_notional_cum,liquidatable_accounts,underwater_accounts,underwater_deficit\n");
    for (k, &ts) in d.times.iter().enumerate() {
        let _ = write!(out, "{},{ts}", format_utc(ts));
        for m in 0..d.market_ids.len() {
            let _ = write!(
                out,
                ",{:.8},{:.8},{:.8},{:.2},{}",
                d.fundamental[m][k],
                d.book[m][k],
                d.oracle[m].get(k).copied().unwrap_or(f64::NAN),
                d.open_interest[m][k],
                BREAKER_STATES[d.breaker[m][k] as usize % 4]
            );
        }
        let opt = |v: f64, digits: usize| if v.is_nan() { String::new() } else { format!("{v:.digits$}") };
        let _ = writeln!(
            out,
            ",{:.2},{:.2},{},{:.2},{:.2},{},{},{}",
            d.insurance[k],
            d.backstop[k],
            d.liquidation_fills[k],
            d.liquidation_notional[k],
            d.adl_notional[k],
            opt(d.liquidatable[k], 0),
            opt(d.underwater[k], 0),
            opt(d.deficit[k], 2)
        );
    }
    out
}

fn xy(times: &[u64], v: &[f64]) -> Vec<(f64, f64)> {
    times.iter().zip(v).map(|(t, y)| (*t as f64, *y)).collect()
}

/// The charts of one recorded path, with file names.
pub fn run_charts(d: &Detail) -> Vec<(String, Chart)> {
    let mut out = Vec::new();
    for (m, id) in d.market_ids.iter().enumerate() {
        let mut c = Chart::new(format!("{id}: price, liquidations and ADL"), "time (UTC)", "price").time();
        c.add("path", RGBGrey, Kind::Line, xy(&d.times, &d.fundamental[m]));
        c.add("book (with impact)", PALETTE[m % 8], Kind::Line, xy(&d.times, &d.book[m]));
        let liq: Vec<(f64, f64)> = d
            .markers
            .iter()
            .filter(|k| k.market as usize == m && k.kind == "liquidation")
            .map(|k| (k.ts as f64, k.price))
            .collect();
        let adl: Vec<(f64, f64)> = d
            .markers
            .iter()
            .filter(|k| k.market as usize == m && k.kind == "adl")
            .map(|k| (k.ts as f64, k.price))
            .collect();
        c.add(format!("liquidation fills ({})", liq.len()), RED, Kind::Points(2), liq);
        let steps = if adl.len() == 1 { "step" } else { "steps" };
        c.add(format!("ADL ({} {steps})", adl.len()), PURPLE, Kind::Triangles(5), adl);
        out.push((format!("price-{}", id.to_lowercase()), c));
    }
    let mut c = Chart::new("Insurance fund and backstop vault", "time (UTC)", "USDC").time().from_zero();
    c.add("insurance fund", PALETTE[0], Kind::Line, xy(&d.times, &d.insurance));
    c.add("backstop vault", PALETTE[1], Kind::Line, xy(&d.times, &d.backstop));
    out.push(("pools".into(), c));
    let mut c = Chart::new("Open interest (notional at mark)", "time (UTC)", "USDC").time().from_zero();
    for (m, id) in d.market_ids.iter().enumerate() {
        c.add(id.clone(), PALETTE[m % 8], Kind::Line, xy(&d.times, &d.open_interest[m]));
    }
    out.push(("open-interest".into(), c));
    // Liquidation fills per minute.
    let mut per_min: Vec<(f64, f64)> = Vec::new();
    for (k, &ts) in d.times.iter().enumerate() {
        let minute = (ts / 60_000 * 60_000) as f64;
        match per_min.last_mut() {
            Some(last) if last.0 == minute => last.1 += f64::from(d.liquidation_fills[k]),
            _ => per_min.push((minute, f64::from(d.liquidation_fills[k]))),
        }
    }
    let mut c = Chart::new("Liquidation fills per minute", "time (UTC)", "fills").time().from_zero();
    c.add("", RED, Kind::Bars(60_000.0), per_min);
    out.push(("liquidations-per-minute".into(), c));
    let mut c = Chart::new("Cumulative liquidation and ADL notional", "time (UTC)", "USDC").time().from_zero();
    c.add("liquidation fills", RED, Kind::Line, xy(&d.times, &d.liquidation_notional));
    c.add("ADL", PURPLE, Kind::Line, xy(&d.times, &d.adl_notional));
    out.push(("cumulative".into(), c));
    let mut c =
        Chart::new("Circuit breakers (0 active, 1 reduce-only, 2 halted, 3 settlement)", "time (UTC)", "state").time();
    c.y_range = Some((-0.2, 3.4));
    for (m, id) in d.market_ids.iter().enumerate() {
        // Markets drawn slightly apart so that equal states stay visible.
        let v: Vec<f64> = d.breaker[m].iter().map(|b| f64::from(*b) + m as f64 * 0.03).collect();
        c.add(id.clone(), PALETTE[m % 8], Kind::Line, xy(&d.times, &v));
    }
    out.push(("breakers".into(), c));
    let sampled = |v: &[f64]| -> Vec<(f64, f64)> {
        d.times.iter().zip(v).filter(|(_, y)| !y.is_nan()).map(|(t, y)| (*t as f64, *y)).collect()
    };
    let mut c = Chart::new("Accounts below maintenance and below zero equity (full scans)", "time (UTC)", "accounts")
        .time()
        .from_zero();
    c.add("below maintenance (liquidatable)", PALETTE[1], Kind::Line, sampled(&d.liquidatable));
    c.add("below zero (bankrupt)", RED, Kind::Line, sampled(&d.underwater));
    out.push(("health".into(), c));
    let mut c = Chart::new("Deficit of the buckets below zero (what the waterfall must absorb)", "time (UTC)", "USDC")
        .time()
        .from_zero();
    c.add("", RED, Kind::Line, sampled(&d.deficit));
    out.push(("deficit".into(), c));
    out
}

#[allow(non_upper_case_globals)]
const RGBGrey: plotters::style::RGBColor = plotters::style::RGBColor(170, 170, 170);

/// The plain-language account of one path.
pub fn narrative(setup: &Setup, r: &PathResult, d: &Detail) -> String {
    let s = &setup.loaded.scenario;
    let mut t = format!("Between {} and {}, ", s.start, s.end);
    let moves: Vec<String> = d
        .market_ids
        .iter()
        .enumerate()
        .map(|(m, id)| {
            let p = &d.book[m];
            let (first, last) = (p[0], p[p.len() - 1]);
            let (lo, hi) = p.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, &x| (a.0.min(x), a.1.max(x)));
            format!(
                "{id} went from {} to {} (low {}, {:+.1}% at the low, high {})",
                fmt_num(first),
                fmt_num(last),
                fmt_num(lo),
                (lo / first - 1.0) * 100.0,
                fmt_num(hi)
            )
        })
        .collect();
    t.push_str(&moves.join("; "));
    let _ = write!(
        t,
        ". {} accounts held positions at the start ({} more entered during the run); open interest peaked at {}. ",
        setup.book.len(),
        r.new_entrants,
        fmt_usd(r.peak_open_interest)
    );
    if r.liquidation_orders == 0 && r.liquidated_accounts == 0 && r.adl_count == 0 {
        let _ = write!(
            t,
            "No account fell below its maintenance requirement: the engine liquidated nothing and the waterfall absorbed \
             nothing. Traders topped up {} times, cut risk {} times, and the book's result was {}. ",
            r.top_ups,
            r.deleveraged_by_traders,
            fmt_usd(r.book_pnl)
        );
    } else {
        let total = r.bad_debt.max(1e-9);
        let share = |x: f64| 100.0 * x / total;
        let _ = write!(
            t,
            "The engine started {} liquidations and sent {} liquidation orders; the liquidators made {} fills against them \
             for {} of notional, and each fill pushed the book price against the liquidated side, so selling fed further \
             liquidations. The backstop vault took over {} of positions (its result: {}). Losses beyond the accounts' own \
             margin came to {} of bad debt, absorbed by the insurance fund {} ({:.0}%), the backstop vault {} ({:.0}%), \
             auto-deleveraging {} ({:.0}%; {} of winners' positions closed in {} trades, policy overshoot {}) and \
             socialized loss {} ({:.0}%). The insurance fund went from {} to {} (low {}). Circuit breakers tripped {} times. ",
            r.liquidated_accounts,
            r.liquidation_orders,
            r.liquidation_fills,
            fmt_usd(r.liquidation_notional),
            fmt_usd(r.backstop_taken_notional),
            fmt_usd(r.backstop_pnl),
            fmt_usd(r.bad_debt),
            fmt_usd(r.absorbed_by_insurance),
            share(r.absorbed_by_insurance),
            fmt_usd(r.absorbed_by_backstop),
            share(r.absorbed_by_backstop),
            fmt_usd(r.absorbed_by_adl),
            share(r.absorbed_by_adl),
            fmt_usd(r.adl_notional),
            r.adl_count,
            fmt_usd(r.adl_overshoot),
            fmt_usd(r.socialized_loss),
            share(r.socialized_loss),
            fmt_usd(r.insurance_start),
            fmt_usd(r.insurance_end),
            fmt_usd(r.insurance_min),
            r.breaker_trips
        );
        if r.unabsorbed_deficit > 0.0 {
            let _ = write!(
                t,
                "{} accounts still ended below zero ({} not yet absorbed). ",
                r.underwater_accounts,
                fmt_usd(r.unabsorbed_deficit)
            );
        }
    }
    let _ =
        write!(t, "No value was created or destroyed: the engine's conservation error is {}.", r.conservation_error);
    t
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub const CSS: &str = "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px auto;max-width:960px;color:#222}\
h1{font-size:24px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}\
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.chart svg{width:100%;height:auto}\
p.story{line-height:1.5;background:#f8f8fb;padding:12px;border-left:4px solid #669}.notes{font-size:12px;color:#555}";

/// A complete page.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n",
        esc(title)
    )
}

/// A two-column table of the summary's leaves.
pub fn kv_table(v: &Value) -> String {
    let mut rows = String::new();
    fn walk(prefix: &str, v: &Value, rows: &mut String) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "notes" || k == "description" || k == "markets" {
                        continue;
                    }
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, x, rows);
                }
            }
            Value::Number(n) => {
                let s =
                    n.as_f64().map(|f| if n.is_f64() { format!("{f:.2}") } else { n.to_string() }).unwrap_or_default();
                let _ = write!(rows, "<tr><td>{}</td><td>{}</td></tr>", esc(prefix), esc(&s));
            }
            other => {
                let s = other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string());
                let _ = write!(rows, "<tr><td>{}</td><td>{}</td></tr>", esc(prefix), esc(&s));
            }
        }
    }
    walk("", v, &mut rows);
    format!("<table><tr><th>figure</th><th>value</th></tr>{rows}</table>")
}

/// Write the charts to `dir/charts/NAME.{svg,png}` and return the SVGs to inline.
pub fn write_charts(dir: &Path, list: &[(String, Chart)]) -> Result<Vec<(String, String)>, LabError> {
    let cdir = dir.join("charts");
    std::fs::create_dir_all(&cdir).map_err(|e| LabError::io(&cdir, e))?;
    // Charts are independent: drawn in parallel, returned in list order.
    list.par_iter()
        .map(|(name, c)| {
            let svg = charts::svg(c)?;
            write(&cdir.join(format!("{name}.svg")), svg.as_bytes())?;
            charts::png(c, &cdir.join(format!("{name}.png")))?;
            Ok((name.clone(), svg))
        })
        .collect()
}

pub fn inline_svg(svg: &str) -> String {
    // Drop the XML prolog if any; the <svg> element goes straight into the page.
    let start = svg.find("<svg").unwrap_or(0);
    format!("<div class=\"chart\">{}</div>\n", &svg[start..])
}

/// summary.json alone in `dir` (`ballast stress --summary-only`).
pub fn write_summary(dir: &Path, setup: &Setup, r: &PathResult) -> Result<Value, LabError> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let summary = summary_json(setup, r, 1);
    write(&dir.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap_or_default().as_bytes())?;
    Ok(summary)
}

/// All outputs of `ballast stress` in `dir`, but `events.jsonl`, which the run streams there.
pub fn write_stress(dir: &Path, setup: &Setup, r: &PathResult, d: &Detail) -> Result<Value, LabError> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let summary = summary_json(setup, r, 1);
    write(&dir.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap_or_default().as_bytes())?;
    // events.jsonl was written during the run (`Keep::Events`).
    if let Some(e) = &d.events_error {
        return Err(LabError::Other(e.clone()));
    }
    write(&dir.join("timeseries.csv"), timeseries_csv(d).as_bytes())?;
    let charts = write_charts(dir, &run_charts(d))?;
    let s = &setup.loaded.scenario;
    let mut body = format!("<h1>Stress run: {}</h1>\n<p>{}</p>\n", esc(&s.name), esc(&s.description));
    let _ = write!(body, "<h2>What happened</h2>\n<p class=\"story\">{}</p>\n", esc(&narrative(setup, r, d)));
    body.push_str("<h2>Prices, liquidations and ADL</h2>\n");
    for (name, svg) in &charts {
        if name.starts_with("price-") {
            body.push_str(&inline_svg(svg));
        }
    }
    for (title, name) in [
        ("Insurance fund and backstop", "pools"),
        ("Open interest", "open-interest"),
        ("Liquidations per minute", "liquidations-per-minute"),
        ("Liquidation and ADL volume", "cumulative"),
        ("Circuit breakers", "breakers"),
        ("Account health", "health"),
        ("Unabsorbed deficit", "deficit"),
    ] {
        let _ = writeln!(body, "<h2>{title}</h2>");
        if let Some((_, svg)) = charts.iter().find(|c| c.0 == name) {
            body.push_str(&inline_svg(svg));
        }
    }
    body.push_str("<h2>Summary</h2>\n");
    body.push_str(&kv_table(&summary));
    notes_html(&mut body, &setup.notes);
    write(&dir.join("report.html"), page(&format!("Ballast stress: {}", s.name), &body).as_bytes())?;
    Ok(summary)
}

/// The notes of several runs (a sweep's points, a comparison's variants), each distinct note
/// once in the order first met, followed by the runs it holds for when not all of them:
/// `note (at A; B)`. A run's parameters can make notes that the others lack.
pub fn merged_notes<'a>(runs: &[(String, &'a [String])]) -> Vec<String> {
    let mut distinct: Vec<&'a String> = Vec::new();
    for n in runs.iter().flat_map(|(_, notes)| notes.iter()) {
        if !distinct.contains(&n) {
            distinct.push(n);
        }
    }
    distinct
        .into_iter()
        .map(|n| {
            let at: Vec<&str> = runs.iter().filter(|(_, notes)| notes.contains(n)).map(|(r, _)| r.as_str()).collect();
            if at.len() == runs.len() {
                n.clone()
            } else {
                format!("{n} (at {})", at.join("; "))
            }
        })
        .collect()
}

pub fn notes_html(body: &mut String, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    body.push_str("<h2>Notes</h2>\n<ul class=\"notes\">");
    for n in notes {
        let _ = write!(body, "<li>{}</li>", esc(n));
    }
    body.push_str("</ul>\n");
}
