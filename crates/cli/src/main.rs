//! `ballast`: the one binary of the project: it replays command files through the engine,
//! checks journals, makes governance keys and signatures, and runs the stress lab (stress runs,
//! Monte Carlo, sweeps, comparisons).

mod keys;
mod lab;
mod replay;
mod serve;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ballast", version, about = "Ballast: the risk engine of a perpetual-futures venue")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply a file of JSON-lines commands; print one JSON event per line on stdout.
    ///
    /// Rejected commands are printed as `rejected` events with the line number and the
    /// reason, and the replay goes on. Blank lines and lines starting with `#` are skipped.
    /// Exits non-zero only when the input cannot be read (missing file, invalid UTF-8).
    Replay {
        /// The command file (one JSON object per line).
        file: PathBuf,
        /// Write the final state as JSON to this file.
        #[arg(long, value_name = "OUT.json")]
        state: Option<PathBuf>,
    },
    /// Check a data directory: every record of every journal segment and every snapshot, then
    /// replay from the newest valid snapshot and print the last sequence number and the state
    /// hash. Exits non-zero on corruption, naming the file and the byte offset.
    Verify {
        /// The data directory (journal segments and snapshots).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Run the service: the journaled engine behind an HTTP and WebSocket API, with roles by
    /// API key, Prometheus metrics and a dashboard at `/` (docs/api.md, docs/operations.md).
    /// Prints `listening on http://ADDR` once ready; stops on SIGINT or SIGTERM.
    Serve {
        /// The configuration file (TOML); without it: defaults and no API keys.
        #[arg(long, value_name = "ballast.toml")]
        config: Option<PathBuf>,
        /// The data directory (journal and snapshots); overrides the configuration's
        /// (default ./ballast-data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// The address to listen on; overrides the configuration's (default 127.0.0.1:7878;
        /// port 0 picks a free one).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Print the SHA-256 of an API key read from standard input (one line), for the `sha256`
    /// field of a `[[key]]` in ballast.toml; with --generate, make a fresh random key and print
    /// both.
    HashKey {
        #[arg(long)]
        generate: bool,
    },
    /// Make a governance key pair (ed25519, from the operating system's randomness): writes
    /// OUT.json (owner-readable only, never overwritten) and prints the public key.
    Keygen {
        #[arg(long, value_name = "OUT.json")]
        out: PathBuf,
    },
    /// Sign the `propose` (or `guardian`) command with NONCE in FILE and print the line to
    /// append: an `approve`, a `cancel` with --cancel, or the guardian command with its
    /// signature.
    Sign {
        /// A key file written by `ballast keygen`.
        #[arg(long, value_name = "KEY.json")]
        key: PathBuf,
        /// The command file holding the proposal.
        #[arg(long, value_name = "FILE.jsonl")]
        file: PathBuf,
        #[arg(long)]
        nonce: u64,
        /// Sign a cancellation of the proposal instead of an approval.
        #[arg(long)]
        cancel: bool,
        /// The `ts` of the printed line (default: the signed command's).
        #[arg(long)]
        ts: Option<u64>,
    },
    /// Run a scenario once (one path) and write summary.json, events.jsonl, timeseries.csv,
    /// charts and report.html. Exits non-zero if the conservation error is not 0.
    Stress {
        /// The scenario file (TOML; see docs/scenarios.md).
        scenario: PathBuf,
        /// Output folder (default out/stress-NAME).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Which path of the seed to run.
        #[arg(long, default_value_t = 0)]
        path: u64,
        /// Override a scenario value: PATH=VALUE (e.g. population.accounts=100000).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// Write summary.json only: no events.jsonl, time series, charts or report, and no
        /// periodic full scans of the book (batch runs and benchmarks).
        #[arg(long)]
        summary_only: bool,
    },
    /// Monte Carlo: N paths in parallel; VaR/ES of bad debt and insurance drawdown,
    /// liquidations-at-risk, bootstrap intervals, histograms.
    Mc {
        scenario: PathBuf,
        /// Number of paths (default: the scenario's `paths`).
        #[arg(long)]
        paths: Option<u64>,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        /// Worker threads (default: all cores). Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// A grid of parameter values: CSV of results and a frontier of bad debt against capital
    /// efficiency.
    Sweep {
        scenario: PathBuf,
        /// PATH=V1,V2,... (repeat for a grid).
        #[arg(long = "grid", value_name = "PATH=V1,V2")]
        grid: Vec<String>,
        /// Paths per grid point.
        #[arg(long)]
        paths: Option<u64>,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// The same scenario under several parameter sets (e.g. ADL policies), side by side.
    Compare {
        scenario: PathBuf,
        /// NAME:PATH=V;PATH=V (repeat; `base:` is the scenario as written).
        #[arg(long = "variant", value_name = "NAME:PATH=V;...")]
        variants: Vec<String>,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Replay { file, state } => replay::run(&file, state.as_deref()),
        Cmd::Verify { data_dir } => verify::run(&data_dir),
        Cmd::Serve { config, data_dir, listen } => serve::run(config.as_deref(), data_dir, listen),
        Cmd::HashKey { generate } => serve::hash_key(generate),
        Cmd::Keygen { out } => keys::keygen(&out),
        Cmd::Sign { key, file, nonce, cancel, ts } => keys::sign(&key, &file, nonce, cancel, ts),
        Cmd::Stress { scenario, out, seed, path, sets, summary_only } => {
            lab::stress(&scenario, out, seed, path, &sets, summary_only)
        }
        Cmd::Mc { scenario, paths, out, seed, threads, sets } => lab::mc(&scenario, paths, out, seed, threads, &sets),
        Cmd::Sweep { scenario, grid, paths, out, seed, sets } => lab::sweep(&scenario, &grid, paths, out, seed, &sets),
        Cmd::Compare { scenario, variants, out, seed, sets } => lab::compare(&scenario, &variants, out, seed, &sets),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
