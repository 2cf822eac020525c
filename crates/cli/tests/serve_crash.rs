//! Crash test: the real `ballast serve` under load from two clients is killed with SIGKILL at
//! random moments, 20 times. After each kill: every acknowledged command is in the journal at
//! the seq it was acknowledged with, `ballast verify` and a fresh replay of the whole journal
//! give one state hash, and the restarted service reports that same hash.
//!
//! The kill moments come from a seed printed at the start; set BALLAST_CRASH_SEED to repeat a
//! run, BALLAST_CRASH_ROUNDS to change the number of kills.
//!
//! And a graceful stop (SIGTERM): the service exits 0 once the snapshot it is writing in the
//! background is on disk.

use ballast_engine::Engine;
use ballast_journal::{apply_line, scan, ARCHIVE};

use ballast_server::auth::hash_key;
use ballast_server::client::Client;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

/// xorshift64*: enough to pick kill moments and batch sizes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Start the service; its address, and its stdout after the `listening` line (once it exits).
fn start(config: &Path, data: &Path) -> (Child, SocketAddr, std::thread::JoinHandle<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ballast serve");
    match child.stdout.take().and_then(listening) {
        Some((addr, rest)) => (child, addr, rest),
        None => {
            let _ = child.kill();
            let status = child.wait();
            panic!("ballast serve exited before listening: {status:?}");
        }
    }
}

/// Read the service's stdout up to `listening on http://ADDR`; keep draining it afterwards so
/// the service never blocks on a full pipe, into the thread's result.
fn listening(stdout: std::process::ChildStdout) -> Option<(SocketAddr, std::thread::JoinHandle<String>)> {
    let mut out = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(rest) = line.trim().strip_prefix("listening on http://") {
            let addr = rest.split(' ').next()?.parse().ok()?;
            return Some((
                addr,
                std::thread::spawn(move || out.lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")),
            ));
        }
    }
}

/// Every record of the journal — the archived segments, then the data directory's — replayed
/// from an empty engine: (seq → command, state hash).
fn fresh_replay(data: &Path) -> (Vec<Value>, String) {
    let archive = data.join(ARCHIVE);
    let parts = [
        archive.is_dir().then(|| scan(&archive).expect("a readable archive")),
        Some(scan(data).expect("a readable journal")),
    ];
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let mut commands = Vec::new();
    for part in parts.iter().flatten() {
        part.read_from(1, &mut |seq, line| {
            assert_eq!(seq, commands.len() as u64 + 1, "the archive and the data directory join up");
            commands.push(serde_json::from_slice(line).expect("journaled JSON"));
            events.clear();
            let _ = apply_line(&mut engine, line, &mut events);
            true
        })
        .unwrap();
    }
    (commands, engine.state_hash())
}

fn verify_hash(data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ballast")).arg("verify").arg("--data-dir").arg(data).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ballast verify failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().find_map(|l| l.strip_prefix("state hash: ")).expect("a state hash line").to_string()
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_command() {
    let seed = std::env::var("BALLAST_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    let rounds: u64 = std::env::var("BALLAST_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    eprintln!("crash test seed {seed} ({rounds} rounds)");
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("ballast-crash-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data: PathBuf = dir.join("data");
    let config = dir.join("ballast.toml");
    // Small segments and frequent snapshots, so kills land around rolls and snapshots too.
    std::fs::write(
        &config,
        format!(
            "[journal]\nsnapshot_every = 700\nsegment_bytes = 65536\n\n[[key]]\nname = \"venue\"\nsha256 = \"{}\"\nrole = \"venue\"\n",
            hash_key("crash-venue")
        ),
    )
    .unwrap();

    // (seq, command) of every acknowledged command.
    let acked: Arc<Mutex<Vec<(u64, Value)>>> = Arc::default();
    let mut total_kills = 0;
    // The state hash of a fresh replay of the journal after the last kill.
    let mut expected: Option<String> = None;
    for round in 0..rounds {
        let (mut child, addr, _) = start(&config, &data);
        if let Some(replayed) = &expected {
            // The restarted service reports the state of a fresh replay of the journal.
            let reply = Client::new(addr, Some("crash-venue")).get("/v1/state/hash").unwrap();
            assert_eq!(reply.json()["state_hash"].as_str(), Some(replayed.as_str()), "round {round}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2u64)
            .map(|c| {
                let (acked, stop) = (acked.clone(), stop.clone());
                let mut rng = Rng(seed ^ (round * 2 + c + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                std::thread::spawn(move || {
                    let mut client = Client::new(addr, Some("crash-venue"));
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let size = 1 + rng.below(20);
                        let batch: Vec<Value> = (0..size)
                            .map(|_| {
                                n += 1;
                                let account = format!("r{round}c{c}n{}", n % 50);
                                // Some withdrawals exceed the balance: refused, but journaled too.
                                let cmd = if rng.below(5) == 0 { "withdraw" } else { "deposit" };
                                serde_json::json!({"ts": 0, "cmd": cmd, "account": account, "asset": "USDC", "amount": format!("{}", 1 + rng.below(9))})
                            })
                            .collect();
                        let Ok(reply) = client.post("/v1/commands", Value::from(batch.clone()).to_string().as_bytes()) else {
                            return; // killed
                        };
                        assert_eq!(reply.status, 200, "{}", reply.text());
                        let results = reply.json()["results"].as_array().cloned().unwrap_or_default();
                        assert_eq!(results.len(), batch.len());
                        let mut acked = acked.lock().unwrap();
                        for (r, cmd) in results.iter().zip(batch) {
                            acked.push((r["seq"].as_u64().unwrap(), cmd));
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        total_kills += 1;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        // Every acknowledged command is journaled at its seq; verify and a fresh replay agree.
        let (journal, replayed) = fresh_replay(&data);
        for (seq, cmd) in acked.lock().unwrap().iter() {
            let at = journal.get(*seq as usize - 1);
            assert_eq!(at, Some(cmd), "acknowledged seq {seq} is missing or different after kill {total_kills}");
        }
        assert_eq!(verify_hash(&data), replayed, "round {round}");
        expected = Some(replayed);
    }
    let acked = acked.lock().unwrap().len();
    eprintln!("{total_kills} kills, {acked} acknowledged commands, all present");
    assert_eq!(total_kills, rounds);
    assert!(acked > 0, "the clients got no acknowledgement at all");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_finishes_the_snapshot_being_written() {
    let dir = std::env::temp_dir().join(format!("ballast-stop-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (data, config) = (dir.join("data"), dir.join("ballast.toml"));
    std::fs::write(
        &config,
        format!(
            "[journal]\nsnapshot_every = 100\n\n[[key]]\nname = \"venue\"\nsha256 = \"{}\"\nrole = \"venue\"\n",
            hash_key("stop-venue")
        ),
    )
    .unwrap();
    let (mut child, addr, stdout) = start(&config, &data);
    let mut client = Client::new(addr, Some("stop-venue"));
    for b in 0..10 {
        let batch: Vec<Value> = (0..10)
            .map(|i| serde_json::json!({"ts": 0, "cmd": "deposit", "account": format!("a{b}{i}"), "asset": "USDC", "amount": "1"}))
            .collect();
        let reply = client.post("/v1/commands", Value::from(batch).to_string().as_bytes()).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // The tenth group commit (seq 91–100) started the snapshot at seq 100 in the background;
    // stop at once, most likely while it is being written.
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the child's pid has no memory effects in this process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = (0..6000)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            child.try_wait().unwrap()
        })
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("ballast serve did not stop within 60 s of SIGTERM")
        });
    assert!(status.success(), "{status:?}");
    assert_eq!(stdout.join().unwrap(), "stopped: last seq 100");
    let names: Vec<String> =
        std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n == "snapshot-00000000000000000100.bin"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "a half-written snapshot: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
