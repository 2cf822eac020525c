//! `ballast stress | mc | sweep | compare`: the stress lab's commands (crate ballast-lab).

use anyhow::{bail, Context, Result};
use ballast_lab::sim::Keep;
use ballast_lab::{report, runs, scenario, sim};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} ({{elapsed}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

fn out_dir(out: Option<PathBuf>, kind: &str, name: &str) -> PathBuf {
    out.unwrap_or_else(|| PathBuf::from("out").join(format!("{kind}-{name}")))
}

pub fn stress(
    file: &Path,
    out: Option<PathBuf>,
    seed: Option<u64>,
    path: u64,
    sets: &[String],
    summary_only: bool,
) -> Result<()> {
    let loaded = scenario::load(file, sets)?;
    let seed = seed.unwrap_or(loaded.scenario.seed);
    let dir = out_dir(out, "stress", &loaded.scenario.name);
    let pop = &loaded.scenario.population;
    match &pop.file {
        Some(f) if pop.accounts > 0 => {
            eprintln!("setting up {} (positions from {f} and {} accounts) ...", loaded.scenario.name, pop.accounts)
        }
        Some(f) => eprintln!("setting up {} (positions from {f}) ...", loaded.scenario.name),
        None => eprintln!("setting up {} ({} accounts) ...", loaded.scenario.name, pop.accounts),
    }
    let t0 = std::time::Instant::now();
    let mut setup = sim::setup(loaded, seed)?;
    let t_setup = t0.elapsed();
    let pb = bar(setup.prep.steps() as u64, "steps");
    let progress = |done: usize, _total: usize| pb.set_position(done as u64);
    let t1 = std::time::Instant::now();
    let events = dir.join("events.jsonl");
    let keep = if summary_only {
        Keep::Result
    } else {
        // The run streams events.jsonl into the folder as it goes.
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Keep::Events(&events)
    };
    let (result, detail) = setup.run_single(path, keep, Some(&progress));
    let t_run = t1.elapsed();
    pb.finish_and_clear();
    let t2 = std::time::Instant::now();
    if summary_only {
        report::write_summary(&dir, &setup, &result)?;
    } else {
        let detail = detail.context("the run kept no detail")?;
        report::write_stress(&dir, &setup, &result, &detail)?;
    }
    let t_out = t2.elapsed();
    println!("{}", report::terminal_table(&setup, &result));
    println!(
        "  time                setup {:.2} s · run {:.2} s ({} steps) · outputs {:.2} s",
        t_setup.as_secs_f64(),
        t_run.as_secs_f64(),
        setup.prep.steps(),
        t_out.as_secs_f64()
    );
    for n in &setup.notes {
        println!("  note: {n}");
    }
    if summary_only {
        println!("  output in {}/summary.json", dir.display());
    } else {
        println!("  outputs in {}/ (summary.json, events.jsonl, timeseries.csv, charts/, report.html)", dir.display());
    }
    if result.conservation_error != "0" {
        bail!("conservation error {} (must be 0)", result.conservation_error);
    }
    Ok(())
}

pub fn mc(
    file: &Path,
    paths: Option<u64>,
    out: Option<PathBuf>,
    seed: Option<u64>,
    threads: Option<usize>,
    sets: &[String],
) -> Result<()> {
    let loaded = scenario::load(file, sets)?;
    let seed = seed.unwrap_or(loaded.scenario.seed);
    let paths = paths.unwrap_or(u64::from(loaded.scenario.paths));
    if paths == 0 {
        bail!("--paths must be at least 1");
    }
    let dir = out_dir(out, "mc", &loaded.scenario.name);
    let setup = sim::setup(loaded, seed)?;
    let pb = bar(paths, "paths");
    let done = AtomicU64::new(0);
    let tick = || pb.set_position(done.fetch_add(1, Ordering::Relaxed) + 1);
    let start = std::time::Instant::now();
    let results = runs::with_threads(threads, || runs::monte_carlo(&setup, paths, &tick))?;
    pb.finish_and_clear();
    let elapsed = start.elapsed();
    let sample = setup.run_path(0, Keep::Detail, None).1;
    let summary = runs::write_mc(&dir, &setup, &results, sample.as_ref())?;
    let g = |k: &str, i: usize, f: &str| summary[k]["tails"][i][f]["value"].as_f64().unwrap_or(0.0);
    println!("  {} paths in {:.1} s (seed {seed})", paths, elapsed.as_secs_f64());
    println!("  {:<28} {:>14} {:>14} {:>14} {:>14}", "", "mean", "VaR 95%", "VaR 99%", "ES 97.5%");
    for (label, key) in [
        ("bad debt", "bad_debt"),
        ("insurance drawdown", "insurance_drawdown"),
        ("liquidated notional", "liquidations_at_risk"),
        ("book loss", "book_loss"),
    ] {
        println!(
            "  {:<28} {:>14} {:>14} {:>14} {:>14}",
            label,
            report::fmt_usd(summary[key]["mean"].as_f64().unwrap_or(0.0)),
            report::fmt_usd(g(key, 0, "var")),
            report::fmt_usd(g(key, 2, "var")),
            report::fmt_usd(g(key, 1, "es"))
        );
    }
    println!("  conservation error on every path: {}", summary["conservation_error"].as_str().unwrap_or("?"));
    println!("  outputs in {}/ (summary.json, paths.csv, charts/, report.html)", dir.display());
    if summary["conservation_error"] != "0" {
        bail!("conservation error (must be 0)");
    }
    Ok(())
}

pub fn sweep(
    file: &Path,
    grid: &[String],
    paths: Option<u64>,
    out: Option<PathBuf>,
    seed: Option<u64>,
    sets: &[String],
) -> Result<()> {
    if grid.is_empty() {
        bail!("give at least one --grid 'PATH=V1,V2,...'");
    }
    let grid: Vec<_> = grid.iter().map(|g| runs::parse_grid(g)).collect::<Result<_, _>>()?;
    let points: u64 = grid.iter().map(|g| g.1.len() as u64).product();
    let name = scenario::load(file, sets)?.scenario.name;
    let per = paths.unwrap_or(1);
    let pb = bar(points * per, "paths");
    let done = AtomicU64::new(0);
    let tick = || pb.set_position(done.fetch_add(1, Ordering::Relaxed) + 1);
    let res = runs::sweep(file, sets, &grid, seed, Some(per), &tick)?;
    pb.finish_and_clear();
    let dir = out_dir(out, "sweep", &name);
    runs::write_sweep(&dir, &name, &res)?;
    print!("{}", std::fs::read_to_string(dir.join("sweep.csv")).unwrap_or_default());
    for n in runs::sweep_notes(&res) {
        println!("  note: {n}");
    }
    println!("  outputs in {}/ (sweep.csv, charts/frontier.*, report.html)", dir.display());
    Ok(())
}

pub fn compare(
    file: &Path,
    variants: &[String],
    out: Option<PathBuf>,
    seed: Option<u64>,
    sets: &[String],
) -> Result<()> {
    if variants.len() < 2 {
        bail!("give at least two --variant 'NAME:PATH=V;PATH=V' (a variant with no settings is the scenario as written: 'base:')");
    }
    let variants: Vec<_> = variants.iter().map(|v| runs::parse_variant(v)).collect::<Result<_, _>>()?;
    let name = scenario::load(file, sets)?.scenario.name;
    let res = runs::compare(file, sets, &variants, seed)?;
    let dir = out_dir(out, "compare", &name);
    runs::write_compare(&dir, &res)?;
    print!("{}", std::fs::read_to_string(dir.join("compare.csv")).unwrap_or_default());
    println!("  outputs in {}/ (compare.json, compare.csv, charts/, report.html)", dir.display());
    Ok(())
}
