//! # ballast-journal
//!
//! The durable journal of Ballast. The journal, not the engine's memory, is the source of truth:
//! state = newest valid snapshot + replay of every journaled command with a higher sequence
//! number.
//!
//! - [`FileJournal`] (the default [`CommandLog`]): segmented append-only files
//!   `wal-<first seq>.log` in a data directory. Each record is a 24-byte header (magic, format
//!   version, kind, length, CRC32, sequence number) followed by the command's JSON line, exactly
//!   as the venue sent it. Group commit: [`CommandLog::append_batch`] writes a whole batch with
//!   one write and one `fdatasync`, and returns only after the sync succeeded. The last segment
//!   runs ahead of its records with zeros ([`PREALLOCATE`]), so that sync flushes data only.
//!   Segments no kept snapshot needs move to `archive/` ([`ARCHIVE`]), so that a restart reads a
//!   bounded journal.
//! - [`snapshot`]: `snapshot-<seq>.bin` files (postcard of a header and the [`Engine`]), written
//!   to a temp file, fsynced, renamed, and the directory fsynced.
//! - [`JournaledEngine`]: an engine behind a journal. [`JournaledEngine::open`] recovers (and
//!   reports what it repaired in a [`Recovery`]); [`JournaledEngine::submit_batch`] journals a
//!   batch durably, then applies it.
//!
//! ```
//! use ballast_journal::{JournaledEngine, Options, Outcome};
//!
//! let dir = std::env::temp_dir().join(format!("ballast-journal-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let (mut journaled, _) = JournaledEngine::open(&dir, Options::default()).unwrap();
//! let batch = [
//!     r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.1","maintenance_margin":"0.05"}"#,
//!     r#"{"ts":0,"cmd":"deposit","account":"alice","asset":"USDC","amount":"1000"}"#,
//! ];
//! // Returns once both commands are durable (one write, one fdatasync).
//! let submitted = journaled.submit_batch(&batch).unwrap();
//! assert!(submitted.outcomes.iter().all(|o| matches!(o, Outcome::Accepted { .. })));
//! let hash = journaled.engine().state_hash();
//! drop(journaled);
//!
//! // A restart recovers the same state from the journal.
//! let (recovered, report) = JournaledEngine::open(&dir, Options::default()).unwrap();
//! assert_eq!(recovered.engine().state_hash(), hash);
//! assert_eq!(report.last_seq, 2);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! Recovery rules: a torn tail of the last segment (incomplete header, incomplete payload or a
//! bad CRC with no valid record after it) is truncated with a warning; a bad record anywhere
//! else, or a gap in the sequence numbers, refuses to start with an error naming the file and
//! the byte offset. See docs/architecture.md, "Journal".
//!
//! [`Engine`]: ballast_engine::Engine

#![forbid(unsafe_code)]

mod error;
pub mod record;
pub mod snapshot;
mod store;
mod wal;

#[cfg(test)]
mod tests;

pub use error::JournalError;
pub use store::{apply_line, restore, JournaledEngine, Options, Outcome, Recovery, Submitted};
pub use wal::{scan, FileJournal, Scan, Segment, Torn, ARCHIVE, PREALLOCATE};

use std::ops::Range;

/// An append-only log of command lines with contiguous sequence numbers starting at 1.
///
/// The file journal is the default; a replicated log (for example a NATS JetStream stream) can
/// implement the same trait.
pub trait CommandLog {
    /// Append a batch of command lines. On `Ok` every line of the batch is durable and the
    /// returned range holds their sequence numbers, in order. On `Err` none of them is
    /// acknowledged and the log is as it was before the call.
    fn append_batch(&mut self, lines: &[&str]) -> Result<Range<u64>, JournalError>;

    /// Visit every record with a sequence number `>= from`, in order, until `visit` returns
    /// `false` (a [`FileJournal`] visits what is left after archiving,
    /// [`FileJournal::archive_through`]).
    fn read_from(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), JournalError>;

    /// The sequence number of the last durable record (0 when the log is empty).
    fn last_seq(&self) -> u64;
}
