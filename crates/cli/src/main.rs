//! `ballast`: the one binary of the project. For now it replays command files through the
//! engine; the stress lab and the service join it as further subcommands.

mod replay;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Replay { file, state } => replay::run(&file, state.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
