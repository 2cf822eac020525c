//! `ballast`: the one binary of the project. For now it replays command files through the
//! engine, checks journals, and makes governance keys and signatures; the stress lab and the
//! service join it as further subcommands.

mod keys;
mod replay;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Replay { file, state } => replay::run(&file, state.as_deref()),
        Cmd::Verify { data_dir } => verify::run(&data_dir),
        Cmd::Keygen { out } => keys::keygen(&out),
        Cmd::Sign { key, file, nonce, cancel, ts } => keys::sign(&key, &file, nonce, cancel, ts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
