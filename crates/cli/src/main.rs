//! `ballast`: the one binary of the project. For now it replays command files through the
//! engine; the stress lab and the service join it as further subcommands.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Replay { file, state } => replay::run(&file, state.as_deref()),
        Cmd::Verify { data_dir } => verify::run(&data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
