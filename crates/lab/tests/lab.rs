//! Scenario tests whose numbers are checked independently of the simulator.

use ballast_lab::runs;
use ballast_lab::scenario::load;
use ballast_lab::sim::{setup, Keep};
use ballast_lab::stats::{norm_inv, var};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh folder under the target's temp dir with the given files.
fn dir_with(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-lab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, text) in files {
        std::fs::write(dir.join(f), text).unwrap();
    }
    dir
}

fn load_err(name: &str, files: &[(&str, &str)]) -> String {
    let dir = dir_with(name, files);
    let err = load(&dir.join("s.toml"), &[]).and_then(|l| setup(l, 1).map(|_| ()));
    match err {
        Ok(()) => panic!("{name}: expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Bars falling linearly from `from` to `to`, one per minute from 2025-01-01T00:00Z.
fn falling_bars(from: f64, to: f64, n: usize) -> String {
    let mut s = String::from("timestamp_utc,open,high,low,close,volume\n");
    for i in 0..n {
        let o = from + (to - from) * i as f64 / n as f64;
        let c = from + (to - from) * (i + 1) as f64 / n as f64;
        s.push_str(&format!("2025-01-01T{:02}:{:02}:00Z,{o},{o},{c},{c},1\n", i / 60, i % 60));
    }
    s
}

const SINGLE_LONG: &str = r#"
name = "single-long"
start = "2025-01-01T00:00:00Z"
end = "2025-01-01T01:39:00Z"
step_ms = 15000
[[markets]]
id = "BTC-PERP"
params = { initial_margin = "0.1", maintenance_margin = "0.004" }
price = { model = "csv", file = "bars.csv" }
liquidity = { depth_1pct = 1000000000000, spread = 0.0 }
[population]
file = "positions.csv"
[liquidators]
count = 1
latency_ms = 0
capital = 10000000
"#;

/// The single-long scenario in a folder of its own (`name`: tests run in parallel).
fn single_long(name: &str) -> PathBuf {
    dir_with(
        name,
        &[
            ("s.toml", SINGLE_LONG),
            ("bars.csv", &falling_bars(50_000.0, 40_000.0, 100)),
            ("positions.csv", "account,side,size,entry_price,isolated_margin\nalice,long,1,50000,5000\n"),
        ],
    )
}

/// Binance's worked example (liquidation-price FAQ): 1 BTC long at 50,000 on 5,000 of
/// isolated margin with a 0.4% maintenance rate liquidates at 45,180.72. The lab opens the
/// position from the positions file; the engine must report exactly that price for it.
#[test]
fn the_lab_opens_a_position_whose_liquidation_price_is_the_analytic_one() {
    let dir = single_long("analytic-price");
    let s = setup(load(&dir.join("s.toml"), &[]).unwrap(), 1).unwrap();
    let view = s.engine.view().unwrap();
    let pos = &view.accounts["alice"].positions[0];
    assert!(pos.isolated);
    assert_eq!(pos.liquidation_price.unwrap().to_string(), "45180.722892");
}

/// Padding around fields and the case of the side do not matter; an unknown side is an error
/// naming the line and the column.
#[test]
fn position_fields_are_trimmed_and_sides_read_in_any_case() {
    let padded = " account , side , size , entry_price , isolated_margin \n alice , LONG , 1 , 50000 , 5000 \n";
    let dir = dir_with(
        "padded",
        &[("s.toml", SINGLE_LONG), ("bars.csv", &falling_bars(50_000.0, 40_000.0, 100)), ("positions.csv", padded)],
    );
    let view = setup(load(&dir.join("s.toml"), &[]).unwrap(), 1).unwrap().engine.view().unwrap();
    let pos = &view.accounts["alice"].positions[0];
    assert_eq!((pos.size.to_string(), pos.liquidation_price.unwrap().to_string()), ("1".into(), "45180.722892".into()));
    let err = load_err(
        "bad-side",
        &[
            ("s.toml", SINGLE_LONG),
            ("bars.csv", &falling_bars(50_000.0, 40_000.0, 100)),
            ("positions.csv", "account,side,size,entry_price,isolated_margin\nalice,up,1,50000,5000\n"),
        ],
    );
    assert!(err.contains("side 'up' is not long/short/buy/sell") && err.contains("line 2"), "{err}");
}

/// On a path falling linearly from 50,000 to 40,000, the position is liquidated at the first
/// step whose oracle price is at or below 45,180.72, and not before.
#[test]
fn a_single_isolated_long_liquidates_at_the_analytic_price() {
    let dir = single_long("liquidates-at");
    let s = setup(load(&dir.join("s.toml"), &[]).unwrap(), 1).unwrap();
    let (r, d) = s.run_path(0, Keep::Detail, None);
    let d = d.unwrap();
    assert!(r.liquidation_fills >= 1, "no liquidation: {r:?}");
    let first = d.markers.iter().find(|m| m.kind == "liquidation").expect("a liquidation fill");
    let k = d.times.iter().position(|&t| t == first.ts).unwrap();
    let lp = 45_180.722892;
    assert!(d.oracle[0][k] <= lp, "liquidated at {} above the liquidation price", d.oracle[0][k]);
    assert!(d.oracle[0][k - 1] > lp, "the previous step {} was already below {lp}", d.oracle[0][k - 1]);
    assert!((first.price - lp).abs() / lp < 0.002, "filled at {} far from {lp}", first.price);
    assert_eq!(r.conservation_error, "0");
}

/// Liquidators that reach an order only after it expired (the engine's `order_ttl_ms`, 3 s by
/// default) can never fill one: the run's notes say so, and alice's liquidation indeed goes
/// unfilled by them. Liquidators within the order's life fill it, and no note is written.
#[test]
fn liquidators_slower_than_an_order_lives_are_noted_and_fill_nothing() {
    let dir = single_long("slow-liquidators");
    let run = |latency: &str| {
        let s = setup(load(&dir.join("s.toml"), &[format!("liquidators.latency_ms={latency}")]).unwrap(), 1).unwrap();
        let (r, _) = s.run_path(0, Keep::Result, None);
        (s.notes, r)
    };
    let (notes, slow) = run("5000");
    assert!(
        notes.iter().any(|n| n.starts_with("BTC-PERP:") && n.contains("5000 ms") && n.contains("3000 ms")),
        "{notes:?}"
    );
    assert!(slow.liquidation_orders >= 1 && slow.liquidation_fills == 0, "{slow:?}");
    let (notes, fast) = run("2000");
    assert!(!notes.iter().any(|n| n.contains("order_ttl_ms")), "{notes:?}");
    assert!(fast.liquidation_fills >= 1, "{fast:?}");
    assert_eq!((slow.conservation_error.as_str(), fast.conservation_error.as_str()), ("0", "0"));
}

/// A recorded run streams events.jsonl to the file it is given, one JSON object per line in
/// sequence order; a file that cannot be written is reported, not ignored.
#[test]
fn events_are_streamed_to_their_file_and_a_failed_write_is_reported() {
    let dir = single_long("events");
    let s = setup(load(&dir.join("s.toml"), &[]).unwrap(), 1).unwrap();
    let file = dir.join("events.jsonl");
    let (r, d) = s.run_path(0, Keep::Events(&file), None);
    assert_eq!(d.unwrap().events_error, None);
    let text = std::fs::read_to_string(&file).unwrap();
    let seqs: Vec<u64> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert!(seqs.len() > r.liquidation_fills as usize && seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");
    assert!(text.contains(r#""event":"liquidation_started""#) && !text.contains("oracle_updated"));
    let unwritable = dir.join("no-such-folder").join("events.jsonl");
    let (_, d) = s.run_path(0, Keep::Events(&unwritable), None);
    let err = d.unwrap().events_error.expect("the failed write is reported");
    assert!(err.contains("no-such-folder"), "{err}");
}

/// Two markets, BTC flat and ETH falling by half, no insurance fund, no backstop vault, and
/// liquidators too slow to fill: alice's 10× ETH long goes bankrupt and is deleveraged against
/// the three shorts and the market maker.
const ADL_IN_ETH: &str = r#"
name = "adl-in-eth"
start = "2025-01-01T00:00:00Z"
end = "2025-01-01T01:39:00Z"
step_ms = 15000
[[markets]]
id = "BTC-PERP"
params = { initial_margin = "0.1", maintenance_margin = "0.05" }
price = { model = "csv", file = "btc.csv" }
liquidity = { depth_1pct = 1000000000000, spread = 0.0 }
[[markets]]
id = "ETH-PERP"
params = { initial_margin = "0.1", maintenance_margin = "0.05" }
price = { model = "csv", file = "eth.csv" }
liquidity = { depth_1pct = 1000000000000, spread = 0.0 }
[population]
file = "positions.csv"
[liquidators]
count = 1
latency_ms = 5000
capital = 10000000
[insurance]
fund = 0
backstop = 0
"#;

/// Auto-deleveraging in the second market: its chart markers sit on that market's price chart,
/// one per step however many winners it trades with, and add up to the run's ADL notional.
#[test]
fn adl_markers_sit_on_their_market_one_per_step() {
    let positions = "account,side,size,entry_price,isolated_margin,market\n\
                     alice,long,10,3000,3000,ETH-PERP\n\
                     bob,short,2,3000,3000,ETH-PERP\n\
                     carol,short,3,3000,3000,ETH-PERP\n\
                     dave,short,1,3000,3000,ETH-PERP\n\
                     erin,long,0.1,50000,5000,BTC-PERP\n";
    let dir = dir_with(
        "adl-in-eth",
        &[
            ("s.toml", ADL_IN_ETH),
            ("btc.csv", &falling_bars(50_000.0, 50_000.0, 100)),
            ("eth.csv", &falling_bars(3_000.0, 1_500.0, 100)),
            ("positions.csv", positions),
        ],
    );
    let s = setup(load(&dir.join("s.toml"), &[]).unwrap(), 1).unwrap();
    let (r, d) = s.run_path(0, Keep::Detail, None);
    let d = d.unwrap();
    assert!(r.adl_count > 1, "no deleveraging with several winners: {r:?}");
    let adl: Vec<_> = d.markers.iter().filter(|m| m.kind == "adl").collect();
    assert!(!adl.is_empty() && adl.iter().all(|m| m.market == 1), "{adl:?}");
    assert!((adl.len() as u64) < r.adl_count, "{} markers for {} trades", adl.len(), r.adl_count);
    let step = |ts: u64| d.times.iter().filter(|&&t| t <= ts).count();
    let mut steps: Vec<usize> = adl.iter().map(|m| step(m.ts)).collect();
    steps.dedup();
    assert_eq!(steps.len(), adl.len(), "two ADL markers in one step: {adl:?}");
    let sum: f64 = adl.iter().map(|m| m.notional).sum();
    assert!((sum - r.adl_notional).abs() <= 1e-9 * r.adl_notional, "{sum} against {}", r.adl_notional);
    assert_eq!(r.conservation_error, "0");
}

/// An unlevered long book under GBM: the loss over a day is V0 (1 − e^X), X ~ N((μ − σ²/2)T, σ²T),
/// so the 99% VaR is V0 (1 − exp((μ − σ²/2)T + σ√T Φ⁻¹(0.01))). The Monte Carlo VaR must be
/// within 4 standard errors of the quantile estimator.
#[test]
fn gbm_monte_carlo_var_of_an_unlevered_book_matches_the_closed_form() {
    let (mu, sigma, v0) = (0.1_f64, 0.8_f64, 1_000_000.0_f64);
    let toml = format!(
        r#"
name = "gbm-unlevered"
seed = 11
start = "2026-01-01T00:00:00Z"
end = "2026-01-02T00:00:00Z"
step_ms = 3600000
[[markets]]
id = "BTC-PERP"
params = {{ initial_margin = "0.1", maintenance_margin = "0.05", oracle = {{ max_age_ms = 7200000 }} }}
price = {{ model = "gbm", initial = 50000.0, mu = {mu}, sigma = {sigma} }}
liquidity = {{ depth_1pct = 1000000000 }}
[population]
accounts = 1
leverage = {{ dist = "fixed", value = 1.0 }}
notional = {{ dist = "fixed", value = {v0} }}
long_share = 1.0
isolated_share = 1.0
[liquidators]
count = 1
latency_ms = 0
capital = 1000000
"#
    );
    let dir = dir_with("gbm", &[("s.toml", &toml)]);
    let s = setup(load(&dir.join("s.toml"), &[]).unwrap(), 11).unwrap();
    let n = 4000u64;
    let results = runs::monte_carlo(&s, n, &|| {});
    let mut losses: Vec<f64> = results.iter().map(|r| -r.book_pnl).collect();
    losses.sort_by(f64::total_cmp);
    let t = 1.0 / 365.0;
    let (m, sd) = ((mu - 0.5 * sigma * sigma) * t, sigma * t.sqrt());
    let alpha = 0.99;
    let x = m + sd * norm_inv(1.0 - alpha);
    let closed = v0 * (1.0 - x.exp());
    // Density of the loss at the quantile: f_L(l) = φ((x − m)/sd) / (sd · V0 · e^x).
    let phi = (-(0.5) * ((x - m) / sd).powi(2)).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let density = phi / (sd * v0 * x.exp());
    let se = (alpha * (1.0 - alpha) / n as f64).sqrt() / density;
    let mc = var(&losses, alpha);
    eprintln!("MC VaR99 {mc:.0}, closed form {closed:.0}, standard error {se:.0}");
    assert!((mc - closed).abs() < 4.0 * se, "MC VaR {mc:.0} vs closed form {closed:.0} (standard error {se:.0})");
    assert!(results.iter().all(|r| r.conservation_error == "0"));
}

/// The same seed gives the same paths and the same summary on 1 and on 2 threads.
#[test]
fn monte_carlo_is_identical_across_thread_counts() {
    let l = load(&repo().join("scenarios/synthetic-mc.toml"), &["population.accounts=300".into()]).unwrap();
    let s = setup(l, 5).unwrap();
    let one = runs::with_threads(Some(1), || runs::monte_carlo(&s, 12, &|| {})).unwrap();
    let two = runs::with_threads(Some(2), || runs::monte_carlo(&s, 12, &|| {})).unwrap();
    let a = serde_json::to_string(&one).unwrap();
    let b = serde_json::to_string(&two).unwrap();
    assert_eq!(a, b);
    assert_eq!(runs::mc_summary(&s, &one).to_string(), runs::mc_summary(&s, &two).to_string());
    // Different paths differ.
    assert_ne!(serde_json::to_string(&one[0]).unwrap(), serde_json::to_string(&one[1]).unwrap());
}

/// Every shipped scenario runs (with a smaller book, to keep the test quick), conserves value
/// exactly, and has liquidators that can reach its liquidation orders.
#[test]
fn conservation_error_is_zero_on_every_shipped_scenario() {
    for name in ["black-thursday-2020", "may-19-2021", "luna-2022", "ftx-2022", "oct-10-2025", "synthetic-mc"] {
        let l = load(&repo().join(format!("scenarios/{name}.toml")), &["population.accounts=1500".into()])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut s = setup(l, 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!s.notes.iter().any(|n| n.contains("order_ttl_ms")), "{name}: {:?}", s.notes);
        s.scan_budget = 20_000; // a few full scans only: this is a debug build
        let (r, d) = s.run_path(0, Keep::Detail, None);
        assert_eq!(r.conservation_error, "0", "{name}");
        assert!(r.peak_open_interest > 0.0, "{name}");
        let d = d.unwrap();
        assert_eq!(d.book[0].len(), s.prep.steps(), "{name}");
    }
}

const GOOD: &str = r#"
name = "t"
start = "2025-01-01T00:00:00Z"
end = "2025-01-01T01:00:00Z"
[[markets]]
id = "BTC-PERP"
params = { initial_margin = "0.1", maintenance_margin = "0.05" }
price = { model = "csv", file = "bars.csv" }
liquidity = { depth_1pct = 1000000 }
[population]
accounts = 10
"#;

fn bars() -> String {
    falling_bars(50_000.0, 49_000.0, 70)
}

#[test]
fn a_good_scenario_loads() {
    let dir = dir_with("good", &[("s.toml", GOOD), ("bars.csv", &bars())]);
    let s = setup(load(&dir.join("s.toml"), &[]).unwrap(), 1).unwrap();
    assert_eq!(s.book.len(), 10);
}

#[test]
fn unknown_keys_are_refused() {
    let e = load_err("unknown-top", &[("s.toml", &format!("{GOOD}\nsede = 3\n")), ("bars.csv", &bars())]);
    assert!(e.contains("sede"), "{e}");
    let e = load_err(
        "unknown-param",
        &[
            (
                "s.toml",
                &GOOD.replace("maintenance_margin = \"0.05\"", "maintenance_margin = \"0.05\", maker_fe = \"0\""),
            ),
            ("bars.csv", &bars()),
        ],
    );
    assert!(e.contains("maker_fe"), "{e}");
    let e = load_err(
        "unknown-liq",
        &[("s.toml", &GOOD.replace("depth_1pct = 1000000", "depth_1pct = 1000000, dept = 1")), ("bars.csv", &bars())],
    );
    assert!(e.contains("dept"), "{e}");
    let e = load_err(
        "unknown-model",
        &[("s.toml", &GOOD.replace("model = \"csv\"", "model = \"brownian\"")), ("bars.csv", &bars())],
    );
    assert!(e.contains("brownian"), "{e}");
}

#[test]
fn missing_and_malformed_csv_files_name_the_file_line_and_column() {
    let e = load_err("missing", &[("s.toml", GOOD)]);
    assert!(e.contains("bars.csv") && e.contains("No such file"), "{e}");
    let mut b = bars();
    b = b.replacen("50000,50000", "50000,abc", 1);
    let e = load_err("malformed", &[("s.toml", GOOD), ("bars.csv", &b)]);
    assert!(e.contains("bars.csv") && e.contains("line 2") && e.contains("column high") && e.contains("'abc'"), "{e}");
    let e = load_err(
        "header",
        &[("s.toml", GOOD), ("bars.csv", "timestamp_utc,open,high,low\n2025-01-01T00:00:00Z,1,1,1\n")],
    );
    assert!(e.contains("missing column 'close'"), "{e}");
    let e = load_err(
        "ts",
        &[("s.toml", GOOD), ("bars.csv", &bars().replacen("2025-01-01T00:01:00Z", "2025-01-01 noon", 1))],
    );
    assert!(e.contains("line 3") && e.contains("timestamp_utc"), "{e}");
}

#[test]
fn bars_out_of_order_or_with_gaps_are_reported_and_gaps_can_be_filled() {
    let mut lines: Vec<String> = bars().lines().map(str::to_string).collect();
    lines.swap(5, 6);
    let e = load_err("order", &[("s.toml", GOOD), ("bars.csv", &(lines.join("\n") + "\n"))]);
    assert!(e.contains("out of order") && e.contains("line 7"), "{e}");
    let mut lines: Vec<String> = bars().lines().map(str::to_string).collect();
    lines.remove(10);
    lines.remove(10);
    let gappy = lines.join("\n") + "\n";
    let e = load_err("gap", &[("s.toml", GOOD), ("bars.csv", &gappy)]);
    assert!(e.contains("gap") && e.contains("2 missing") && e.contains("gaps = \"fill\""), "{e}");
    let dir = dir_with(
        "gap-fill",
        &[
            ("s.toml", &GOOD.replace("file = \"bars.csv\"", "file = \"bars.csv\", gaps = \"fill\"")),
            ("bars.csv", &gappy),
        ],
    );
    let s = setup(load(&dir.join("s.toml"), &[]).unwrap(), 1).unwrap();
    assert!(s.notes.iter().any(|n| n.contains("2 missing bars filled")), "{:?}", s.notes);
    let e = load_err("short", &[("s.toml", &GOOD.replace("01:00:00Z", "03:00:00Z")), ("bars.csv", &bars())]);
    assert!(e.contains("covers") && e.contains("scenario runs"), "{e}");
}

#[test]
fn impossible_parameters_are_refused_before_any_work() {
    let cases: [(&str, &str, &str, &str); 8] = [
        ("depth", "depth_1pct = 1000000", "depth_1pct = -5", "depth_1pct must be > 0"),
        (
            "leverage",
            "accounts = 10",
            "accounts = 10\nleverage = { dist = \"uniform\", min = 0.5, max = 3.0 }",
            "leverage must be >= 1",
        ),
        ("margin", "initial_margin = \"0.1\"", "initial_margin = \"0.01\"", "initial_margin"),
        ("window", "end = \"2025-01-01T01:00:00Z\"", "end = \"2024-01-01T01:00:00Z\"", "is not after start"),
        ("share", "accounts = 10", "accounts = 10\nlong_share = 1.5", "long_share must be in [0, 1]"),
        (
            "garch",
            "model = \"csv\", file = \"bars.csv\"",
            "model = \"garch\", initial = 1.0, mu = 0.0, sigma = 0.5, alpha = 0.5, beta = 0.6, nu = 5.0",
            "alpha + beta < 1",
        ),
        (
            "nu",
            "model = \"csv\", file = \"bars.csv\"",
            "model = \"garch\", initial = 1.0, mu = 0.0, sigma = 0.5, alpha = 0.1, beta = 0.6, nu = 2.0",
            "nu must be > 2",
        ),
        (
            "weights",
            "accounts = 10",
            "accounts = 10\nmarket_weights = { ETH-PERP = 1.0 }",
            "'ETH-PERP' is not a listed market",
        ),
    ];
    for (name, from, to, want) in cases {
        let e = load_err(name, &[("s.toml", &GOOD.replace(from, to)), ("bars.csv", &bars())]);
        assert!(e.contains(want), "{name}: {e}");
    }
    let synthetic =
        GOOD.replace("model = \"csv\", file = \"bars.csv\"", "model = \"gbm\", initial = 100.0, mu = 0.0, sigma = 0.5");
    let two = format!("correlation = [[1.0, 0.9], [0.9, 1.0]]\n{}", synthetic.replace("[population]", "[[markets]]\nid = \"ETH-PERP\"\nparams = { initial_margin = \"0.1\", maintenance_margin = \"0.05\" }\nprice = { model = \"gbm\", initial = 10.0, mu = 0.0, sigma = 0.5 }\nliquidity = { depth_1pct = 1000000 }\n[population]"));
    let dir = dir_with("corr-ok", &[("s.toml", &two)]);
    assert!(load(&dir.join("s.toml"), &[]).is_ok());
    let e = load_err(
        "corr-size",
        &[(
            "s.toml",
            &format!("correlation = [[1.0]]\n{}", two.replace("correlation = [[1.0, 0.9], [0.9, 1.0]]\n", "")),
        )],
    );
    assert!(e.contains("2x2 matrix"), "{e}");
    let e = load_err("corr-range", &[("s.toml", &two.replace("0.9", "1.5"))]);
    assert!(e.contains("correlation must be symmetric"), "{e}");
}

#[test]
fn overrides_reach_nested_values_and_keep_decimal_strings() {
    let dir = dir_with("override", &[("s.toml", GOOD), ("bars.csv", &bars())]);
    let l =
        load(&dir.join("s.toml"), &["markets.0.params.maintenance_margin=0.02".into(), "population.accounts=3".into()])
            .unwrap();
    assert_eq!(l.scenario.markets[0].params.maintenance_margin.to_string(), "0.02");
    assert_eq!(l.scenario.population.accounts, 3);
    let e = load(&dir.join("s.toml"), &["markets.5.liquidity.depth_1pct=1".into()]).unwrap_err();
    assert!(e.to_string().contains("index 5"), "{e}");
}
