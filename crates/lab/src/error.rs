//! Errors of the lab: all of them are found before a run starts, except I/O on the outputs.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A scenario that cannot run: unknown key, impossible parameter, inconsistent settings.
    #[error("scenario: {0}")]
    Scenario(String),
    /// A data file with a problem at a known place.
    #[error("{file}: line {line}, column {column}: {message}")]
    Data { file: String, line: u64, column: String, message: String },
    /// A data file problem not tied to one cell (order, gaps, coverage).
    #[error("{file}: {message}")]
    DataFile { file: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The engine refused a command the lab needed to set the scenario up.
    #[error("engine refused the scenario's setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Other(String),
}

impl LabError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LabError::Io { path: path.display().to_string(), source }
    }
}
