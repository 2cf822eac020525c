//! Service benchmarks (figures in BENCHMARKS.md, "The service"). Run in release, from the
//! repository root, with a data directory on the disk to measure:
//!
//! ```sh
//! cargo run --release -p ballast-server --example bench -- inproc  DIR [COMMANDS]
//! cargo run --release -p ballast-server --example bench -- http    DIR [COMMANDS]
//! cargo run --release -p ballast-server --example bench -- http-quiet DIR [COMMANDS]  # ?events=false
//! cargo run --release -p ballast-server --example bench -- latency DIR [SECONDS] [RATE]
//! cargo run --release -p ballast-server --example bench -- restart DIR [COMMANDS]
//! cargo run --release -p ballast-server --example bench -- engine  DIR [COMMANDS]   # no journal
//! ```
//!
//! DIR is created and emptied first (and removed at the end). The workload: 1,000 funded
//! accounts in one market with one oracle price, then commands (all at ts 1000, so the price
//! stays fresh) that alternate `deposit` and `fill` between account pairs; fills alternate buyer
//! and seller, so positions stay small and every command is accepted.

use axum::serve::ListenerExt;
use ballast_journal::{JournaledEngine, Options};
use ballast_server::auth::hash_key;
use ballast_server::client::Client;
use ballast_server::config::{Config, KeyConfig};
use ballast_server::{build, Prepared};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ACCOUNTS: u64 = 1000;
const KEY: &str = "bench-venue-key";

fn setup_lines() -> Vec<String> {
    let mut v = vec![
        r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.1","maintenance_margin":"0.05"}"#
            .to_string(),
        r#"{"ts":0,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"50000"}"#.to_string(),
    ];
    for a in 0..ACCOUNTS {
        v.push(format!(r#"{{"ts":0,"cmd":"deposit","account":"a{a}","asset":"USDC","amount":"1000000"}}"#));
    }
    v
}

/// The `i`-th command of the workload.
fn command(i: u64) -> String {
    let ts = 1000;
    let a = (i / 2) % ACCOUNTS;
    let b = (a + 1) % ACCOUNTS;
    if i.is_multiple_of(2) {
        format!(r#"{{"ts":{ts},"cmd":"deposit","account":"a{a}","asset":"USDC","amount":"1"}}"#)
    } else {
        let (buyer, seller) = if (i / 2 / ACCOUNTS).is_multiple_of(2) { (a, b) } else { (b, a) };
        format!(
            r#"{{"ts":{ts},"cmd":"fill","market":"BTC-PERP","buyer":"a{buyer}","seller":"a{seller}","size":"0.01","price":"50000"}}"#
        )
    }
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create the data directory");
}

fn config() -> Config {
    let mut c = Config::default();
    c.keys.push(KeyConfig {
        name: "venue".into(),
        sha256: hash_key(KEY),
        role: serde_json::from_value("venue".into()).unwrap(),
        account: None,
        source: None,
    });
    c.limits.rate_per_sec = 1e9;
    c.limits.burst = 1e9;
    c.limits.max_body_bytes = 64 << 20;
    c.limits.request_timeout_ms = 120_000;
    // No automatic snapshot during a throughput run.
    c.journal.snapshot_every = 0;
    c
}

fn open(dir: &Path, snapshot_every: u64) -> JournaledEngine {
    let options = Options { snapshot_every, ..Options::default() };
    JournaledEngine::open(dir, options).expect("open the journal").0
}

/// Durable throughput through the in-process API: 8 tasks submit batches of 1,000.
fn inproc(dir: &Path, total: u64) {
    fresh(dir);
    let mut journaled = open(dir, 0);
    let setup = setup_lines();
    journaled.submit_batch(&setup.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let (_router, handle) = build(journaled, &config());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tasks = 32u64;
    let per_task = total / tasks;
    let batch = 1000u64;
    // The command texts are made before the clock starts; decoding them (the API's validation)
    // is timed.
    let texts: Vec<Vec<Vec<String>>> = (0..tasks)
        .map(|t| {
            (0..per_task / batch).map(|k| (0..batch).map(|j| command(t * per_task + k * batch + j)).collect()).collect()
        })
        .collect();
    let start = Instant::now();
    rt.block_on(async {
        let mut joins = Vec::new();
        for batches in texts {
            let handle = handle.clone();
            joins.push(tokio::spawn(async move {
                for lines in batches {
                    let lines: Vec<Prepared> =
                        lines.into_iter().map(|l| Prepared::new(l).expect("valid command")).collect();
                    let results = handle.submit(lines).await.expect("durable");
                    if let Some(r) = results.iter().find(|r| !r.accepted) {
                        panic!("command {} was rejected: {:?}", r.seq, r.reason);
                    }
                }
            }));
        }
        for j in joins {
            j.await.unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let n = tasks * per_task;
    println!(
        "inproc: {n} commands in {secs:.2} s = {:.0} commands/s (durable, group commit, {tasks} tasks x batches of 1,000)",
        n as f64 / secs
    );
    report_commits(&handle);
}

fn report_commits(handle: &ballast_server::EngineHandle) {
    let mut out = String::new();
    handle.metrics.render(&mut out);
    let get = |name: &str| {
        out.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    let commits = get("ballast_journal_commit_seconds_count ");
    let secs = get("ballast_journal_commit_seconds_sum ");
    if commits > 0.0 {
        println!(
            "  {commits:.0} group commits, mean {:.2} ms each (write + fdatasync + apply)",
            secs / commits * 1000.0
        );
    }
}

/// Start the service in process on a loopback port; returns the address.
fn serve(dir: &Path, rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    fresh(dir);
    let mut journaled = open(dir, 0);
    let setup = setup_lines();
    journaled.submit_batch(&setup.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let (router, _handle) = build(journaled, &config());
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener.tap_io(ballast_server::no_delay), router).await.unwrap() });
        addr
    })
}

/// Over HTTP: 4 client threads post batches of 1,000 (with `quiet`, to `?events=false`).
fn http(dir: &Path, total: u64, quiet: bool) {
    let path = if quiet { "/v1/commands?events=false" } else { "/v1/commands" };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = serve(dir, &rt);
    let clients = 4u64;
    let batch = 1000u64;
    let per_client = total / clients / batch;
    // Bodies are built before the clock starts.
    let bodies: Vec<Vec<Vec<u8>>> = (0..clients)
        .map(|c| {
            (0..per_client)
                .map(|k| {
                    let first = (c * per_client + k) * batch;
                    format!("[{}]", (first..first + batch).map(command).collect::<Vec<_>>().join(",")).into_bytes()
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            std::thread::spawn(move || {
                let mut client = Client::new(addr, Some(KEY));
                for body in bodies {
                    let reply = client.post(path, &body).expect("request");
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = clients * per_client * batch;
    let what = if quiet { "http (events=false)" } else { "http" };
    println!(
        "{what}: {n} commands in {secs:.2} s = {:.0} commands/s (durable; 4 connections, batches of 1,000)",
        n as f64 / secs
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The disk's own write + fdatasync latency (200 bytes appended per sync), `n` times.
fn fdatasync_latencies(dir: &Path, n: usize) -> Vec<f64> {
    let path = dir.join("fdatasync-probe");
    let mut f = OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let buf = [b'x'; 200];
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&buf).unwrap();
            f.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    v.sort_by(f64::total_cmp);
    v
}

/// Single-command latency at a fixed offered rate (open loop: latency counts from the moment
/// each request was due, so a stall is not hidden).
fn latency(dir: &Path, seconds: u64, rate: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = serve(dir, &rt);
    let sync = fdatasync_latencies(dir, 2000);
    println!(
        "fdatasync alone (2,000 x 200 B): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&sync, 0.5),
        percentile(&sync, 0.99),
        sync[sync.len() - 1]
    );
    let threads: u64 = std::env::var("BALLAST_LATENCY_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let total = seconds * rate;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(200);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut client = Client::new(addr, Some(KEY));
                let _ = client.get("/healthz");
                let mut lat = Vec::new();
                let mut k = t;
                while k < total {
                    let due = start + interval * k as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let body = command(k);
                    let reply = client.post("/v1/commands", body.as_bytes()).expect("request");
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    lat.push(due.elapsed().as_secs_f64() * 1000.0);
                    k += threads;
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let took = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "latency at {rate}/s offered ({} single-command POSTs in {took:.1} s, {} client connections): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        lat.len(),
        threads,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat[lat.len() - 1]
    );
    let sync_after = fdatasync_latencies(dir, 2000);
    println!(
        "fdatasync alone, after the run: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&sync_after, 0.5),
        percentile(&sync_after, 0.99)
    );
}

/// Write a journal of `total` commands (snapshot every 1,000,000, so the last one is at most
/// 1,000,000 commands old), then time a restart.
fn restart(dir: &Path, total: u64) {
    fresh(dir);
    let t = Instant::now();
    {
        let mut journaled = open(dir, 1_000_000);
        let setup = setup_lines();
        journaled.submit_batch(&setup.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let batch = 10_000u64;
        let mut i = 0;
        // Stop short of a snapshot boundary, so the restart also replays a tail.
        let target = total - setup.len() as u64;
        while i < target {
            let n = batch.min(target - i);
            let lines: Vec<String> = (i..i + n).map(command).collect();
            let s = journaled.submit_batch(&lines.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            assert!(s.snapshot_error.is_none());
            i += n;
        }
        println!("wrote {} commands in {:.1} s", journaled.last_seq(), t.elapsed().as_secs_f64());
    }
    let bytes: u64 = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    println!("data directory: {:.2} GB", bytes as f64 / 1e9);
    let t = Instant::now();
    let (journaled, recovery) = JournaledEngine::open(dir, Options::default()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "restart: {secs:.2} s to recover {} commands (snapshot at seq {}, {} records replayed, every record's CRC checked)",
        journaled.last_seq(),
        recovery.snapshot.as_ref().map_or(0, |s| s.0),
        recovery.replayed
    );
}

/// The engine alone on the same workload, one thread: decode and apply, no journal.
fn engine_only(total: u64) {
    let mut engine = ballast_engine::Engine::new();
    let mut events = Vec::new();
    for line in setup_lines() {
        engine.apply(&ballast_engine::parse_line(&line).unwrap(), &mut events).unwrap();
    }
    let texts: Vec<String> = (0..total).map(command).collect();
    let start = Instant::now();
    for t in &texts {
        events.clear();
        engine.apply(&ballast_engine::parse_line(t).unwrap(), &mut events).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "engine alone: {total} commands decoded and applied in {secs:.2} s = {:.0} commands/s (one thread, no journal)",
        total as f64 / secs
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench inproc|http|http-quiet|latency|restart|engine DIR [N] [RATE]";
    let (Some(what), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let n = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match what.as_str() {
        "inproc" => inproc(&dir, n(2, 2_000_000)),
        "http" => http(&dir, n(2, 1_000_000), false),
        "http-quiet" => http(&dir, n(2, 1_000_000), true),
        "latency" => latency(&dir, n(2, 10), n(3, 5000)),
        "restart" => restart(&dir, n(2, 10_000_000)),
        "engine" => engine_only(n(2, 1_000_000)),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
