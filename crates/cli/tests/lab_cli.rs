//! The real `ballast stress | mc | sweep | compare` on a shipped scenario with a small book.

mod common;

use common::ballast;
use std::path::PathBuf;

fn out(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ballast-lab-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn stress_writes_every_output_and_conserves() {
    let dir = out("stress");
    let o = ballast(&[
        "stress",
        "scenarios/synthetic-mc.toml",
        "--out",
        dir.to_str().unwrap(),
        "--seed",
        "3",
        "--set",
        "population.accounts=400",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("conservation error") && t.contains("bad debt"), "{t}");
    for f in [
        "summary.json",
        "events.jsonl",
        "timeseries.csv",
        "report.html",
        "charts/price-btc-perp.png",
        "charts/price-btc-perp.svg",
        "charts/pools.svg",
    ] {
        assert!(dir.join(f).exists(), "missing {f}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["conservation_error"], "0");
    assert_eq!(summary["seed"], 3);
    for key in [
        "bad_debt",
        "insurance_fund",
        "liquidations",
        "adl",
        "socialized_loss",
        "backstop",
        "breaker_trips",
        "peak_open_interest",
    ] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && !html.contains("http://cdn") && !html.contains("<script src"),
        "report is not self-contained"
    );
    let rows = std::fs::read_to_string(dir.join("timeseries.csv")).unwrap().lines().count();
    assert_eq!(rows, 1442, "header + one row per step of a day at 60 s");
}

#[test]
fn mc_sweep_and_compare_run() {
    let dir = out("mc");
    let o = ballast(&[
        "mc",
        "scenarios/synthetic-mc.toml",
        "--paths",
        "6",
        "--threads",
        "2",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "population.accounts=200",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["paths"], 6);
    assert_eq!(summary["bad_debt"]["tails"].as_array().unwrap().len(), 3);
    assert!(dir.join("charts/hist-bad-debt.png").exists());

    let dir = out("sweep");
    let o = ballast(&[
        "sweep",
        "scenarios/synthetic-mc.toml",
        "--grid",
        "markets.0.params.initial_margin=0.02,0.1",
        "--grid",
        "liquidators.latency_ms=1000,5000",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "population.accounts=200",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(dir.join("sweep.csv")).unwrap().lines().count(), 5);
    assert!(dir.join("charts/frontier.svg").exists());
    // The liquidators at 5,000 ms miss every order: the report's notes say so, for those points only.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let missed: Vec<&str> = html.split("<li>").filter(|n| n.contains("liquidation.order_ttl_ms")).collect();
    assert_eq!(missed.len(), 2, "one note per market: {html}");
    for n in missed {
        assert!(n.contains("(at markets.0.params.initial_margin=0.02, liquidators.latency_ms=5000; "), "{n}");
        assert!(!n.contains("latency_ms=1000"), "{n}");
    }

    let dir = out("compare");
    let o = ballast(&[
        "compare",
        "scenarios/synthetic-mc.toml",
        "--variant",
        "base:",
        "--variant",
        "thin:markets.0.liquidity.depth_1pct=1e6",
        "--variant",
        "slow:liquidators.latency_ms=5000",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "population.accounts=200",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read_to_string(dir.join("compare.csv")).unwrap().starts_with("metric,base,thin,slow"));
    // Only the slow variant's liquidators miss the orders: one note per market, naming it alone.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let missed: Vec<&str> = html.split("<li>").filter(|n| n.contains("liquidation.order_ttl_ms")).collect();
    assert_eq!(missed.len(), 2, "one note per market: {html}");
    assert!(missed.iter().all(|n| n.contains("(at slow)</li>")), "{missed:?}");
}

#[test]
fn a_bad_scenario_fails_before_any_work_with_a_clear_message() {
    let dir = out("bad");
    let o = ballast(&[
        "stress",
        "scenarios/synthetic-mc.toml",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "markets.0.liquidity.depth_1pct=-1",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("depth_1pct must be > 0"), "{}", text(&o));
    assert!(!dir.exists(), "no output should be written");
    let o = ballast(&["stress", "scenarios/nope.toml"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nope.toml"), "{}", text(&o));
}
