use std::path::PathBuf;

/// Everything that can go wrong in the journal. Messages name the file (and the byte offset
/// where it applies).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A record that is not a torn tail: refuse to start.
    #[error("{}: corrupt record at byte offset {offset}: {reason}", path.display())]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// Sequence numbers do not continue from one segment to the next.
    #[error("sequence gap: {} ends at seq {last} but {} starts at seq {first}", prev.display(), next.display())]
    Gap { prev: PathBuf, last: u64, next: PathBuf, first: u64 },
    /// A snapshot that cannot be used.
    #[error("{}: {reason}", path.display())]
    Snapshot { path: PathBuf, reason: String },
    /// The write of a batch failed; the batch is not acknowledged.
    #[error("write failed, batch not acknowledged: {0}")]
    Write(std::io::Error),
    /// The fdatasync of a batch failed; the batch is not acknowledged.
    #[error("fdatasync failed, batch not acknowledged: {0}")]
    Sync(std::io::Error),
    /// A failed batch could not be rolled back: the journal refuses further appends until it is
    /// reopened (recovery then truncates the unacknowledged tail).
    #[error("journal unusable until reopened: {0}")]
    Poisoned(String),
    /// A command line longer than a record can hold.
    #[error("command of {0} bytes is larger than the record limit")]
    TooLarge(usize),
    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> JournalError {
    let context = context.into();
    move |source| JournalError::Io { context, source }
}
