//! An engine behind the file journal: recovery, durable batches, snapshots.

use crate::error::io;
use crate::wal::{read_segments, FileJournal, Segment, ARCHIVE};
use crate::{snapshot, CommandLog, JournalError};
use ballast_engine::{parse_line, Engine, Event, ParseError, Reject, TimedCommand};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Settings of a [`JournaledEngine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Roll to a new segment once the current one holds this many bytes (checked between
    /// batches, so a segment can exceed it by one batch).
    pub segment_bytes: u64,
    /// Write a snapshot after this many journaled commands (0: only on demand).
    pub snapshot_every: u64,
    /// How many snapshots to keep (at least 1).
    pub keep_snapshots: usize,
    /// After each snapshot, move the segments that only hold records at or before the oldest
    /// kept snapshot into `archive/` ([`crate::ARCHIVE`]): recovery never needs them, and
    /// it reads every segment left in the data directory, so this keeps a restart's time
    /// bounded however long the service runs. The history stays on disk.
    pub archive_segments: bool,
    /// Write the automatic snapshots (`snapshot_every`) on a thread of their own, from a copy
    /// of the state: the batch that falls due pays for the copy only, not for encoding,
    /// hashing and syncing the file (see [`JournaledEngine::snapshot_in_background`]).
    pub background_snapshots: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            snapshot_every: 1_000_000,
            keep_snapshots: 2,
            archive_segments: true,
            background_snapshots: false,
        }
    }
}

/// What [`JournaledEngine::open`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The snapshot the state was loaded from (`None`: from an empty engine).
    pub snapshot: Option<(u64, PathBuf)>,
    /// Records replayed after the snapshot.
    pub replayed: u64,
    /// The last journaled sequence number.
    pub last_seq: u64,
    /// Repairs and fallbacks: a truncated torn tail, a skipped corrupt snapshot.
    pub warnings: Vec<String>,
}

/// The outcome of one command of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The line is not a command: not journaled, no sequence number.
    Invalid(ParseError),
    /// Journaled and applied.
    Accepted { seq: u64, events: Vec<Event> },
    /// Journaled and refused by the engine (a replay refuses it again, state unchanged).
    Rejected { seq: u64, reason: Reject },
}

/// The reply to a durable batch.
#[derive(Debug)]
pub struct Submitted {
    /// Sequence numbers of the journaled commands.
    pub seqs: Range<u64>,
    /// One outcome per submitted line, in order.
    pub outcomes: Vec<Outcome>,
    /// The sequence number of the snapshot this batch wrote, or collected once written in the
    /// background.
    pub snapshot: Option<u64>,
    /// An automatic snapshot was due and failed (the batch itself is durable).
    pub snapshot_error: Option<JournalError>,
}

/// The engine with its journal and snapshots in one data directory.
#[derive(Debug)]
pub struct JournaledEngine {
    pub(crate) journal: FileJournal,
    engine: Engine,
    options: Options,
    snapshot_seq: u64,
    /// The seq of the last automatic snapshot started, written or failed.
    tried_seq: u64,
    /// The snapshot being written in the background, at most one.
    pending: Option<Pending>,
}

/// A snapshot of the state after `seq`, being written by `thread`.
#[derive(Debug)]
struct Pending {
    seq: u64,
    thread: std::thread::JoinHandle<Result<PathBuf, JournalError>>,
}

/// Apply one journaled line to `engine` (what a replay does for every record). A line that does
/// not parse changes nothing, like a rejected command.
pub fn apply_line(engine: &mut Engine, line: &[u8], events: &mut Vec<Event>) -> Result<(), String> {
    let line = std::str::from_utf8(line).map_err(|e| e.to_string())?;
    let cmd = parse_line(line).map_err(|e| e.to_string())?;
    engine.apply(&cmd, events).map_err(|e| e.to_string())
}

/// Load the newest usable snapshot in `dir` and replay `segments` after it. Corrupt snapshots
/// are skipped with a warning; a snapshot ahead of the journal, or a journal that does not reach
/// back to the snapshot, is an error.
pub fn restore(dir: &Path, segments: &[Segment], last_seq: u64) -> Result<(Engine, Recovery), JournalError> {
    let mut recovery = Recovery { last_seq, ..Recovery::default() };
    let mut engine = Engine::new();
    for (seq, path) in snapshot::list(dir)?.into_iter().rev() {
        match snapshot::load(&path) {
            Ok((header, loaded)) => {
                if header.seq > last_seq {
                    return Err(JournalError::Snapshot {
                        path,
                        reason: format!("snapshot at seq {} is ahead of the journal (last seq {last_seq})", header.seq),
                    });
                }
                engine = loaded;
                recovery.snapshot = Some((seq, path));
                break;
            }
            Err(e) => recovery.warnings.push(format!("skipping snapshot: {e}")),
        }
    }
    let from = recovery.snapshot.as_ref().map_or(0, |(seq, _)| *seq) + 1;
    if let Some(first) = segments.first().filter(|s| s.first_seq > from) {
        let archive = dir.join(ARCHIVE);
        let hint = match archive.is_dir() {
            true => format!(" (archived segments are in {}: move the ones needed back)", archive.display()),
            false => String::new(),
        };
        return Err(JournalError::Snapshot {
            path: first.path.clone(),
            reason: format!(
                "the journal starts at seq {} but the state needs the records from seq {from}{hint}",
                first.first_seq
            ),
        });
    }
    let mut events = Vec::new();
    let mut replayed = 0;
    read_segments(segments, from, &mut |_, line| {
        events.clear();
        let _ = apply_line(&mut engine, line, &mut events);
        replayed += 1;
        true
    })?;
    recovery.replayed = replayed;
    Ok((engine, recovery))
}

impl JournaledEngine {
    /// Open the data directory `dir` (created if missing) and recover: truncate a torn tail,
    /// load the newest valid snapshot, replay the journal after it.
    pub fn open(dir: &Path, options: Options) -> Result<(Self, Recovery), JournalError> {
        let (journal, mut warnings) = FileJournal::open(dir, options.segment_bytes)?;
        for tmp in snapshot::temp_files(dir)? {
            std::fs::remove_file(&tmp).map_err(io(format!("cannot remove {}", tmp.display())))?;
            warnings.push(format!("removed the unfinished snapshot {}", tmp.display()));
        }
        let (engine, mut recovery) = restore(dir, journal.segments(), journal.last_seq())?;
        warnings.append(&mut recovery.warnings);
        recovery.warnings = warnings;
        let snapshot_seq = recovery.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
        Ok((JournaledEngine { journal, engine, options, snapshot_seq, tried_seq: 0, pending: None }, recovery))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn journal(&self) -> &FileJournal {
        &self.journal
    }

    /// The last journaled sequence number.
    pub fn last_seq(&self) -> u64 {
        self.journal.last_seq()
    }

    /// Journal the commands of `lines` (one write, one fdatasync), then apply them. Lines that
    /// do not parse are answered [`Outcome::Invalid`] and not journaled. On `Err` nothing was
    /// journaled or applied.
    pub fn submit_batch(&mut self, lines: &[&str]) -> Result<Submitted, JournalError> {
        let parsed: Vec<Result<TimedCommand, ParseError>> = lines.iter().map(|l| parse_line(l)).collect();
        self.submit_decoded(lines, parsed)
    }

    /// [`JournaledEngine::submit_batch`] for lines the caller has already decoded:
    /// `parsed[i]` must be `parse_line(lines[i])` (a replay decodes the journaled line again, so
    /// anything else would make the recovered state differ). Saves decoding every line twice.
    ///
    /// # Panics
    /// If the two slices differ in length.
    pub fn submit_decoded(
        &mut self,
        lines: &[&str],
        parsed: Vec<Result<TimedCommand, ParseError>>,
    ) -> Result<Submitted, JournalError> {
        assert_eq!(lines.len(), parsed.len(), "one decoded command per line");
        let valid: Vec<&str> = lines.iter().zip(&parsed).filter(|(_, p)| p.is_ok()).map(|(l, _)| *l).collect();
        let seqs = self.journal.append_batch(&valid)?;
        let mut seq = seqs.start;
        let outcomes = parsed
            .into_iter()
            .map(|p| match p {
                Err(e) => Outcome::Invalid(e),
                Ok(cmd) => {
                    let mut events = Vec::new();
                    let outcome = match self.engine.apply(&cmd, &mut events) {
                        Ok(()) => Outcome::Accepted { seq, events },
                        Err(reason) => Outcome::Rejected { seq, reason },
                    };
                    seq += 1;
                    outcome
                }
            })
            .collect();
        let (snapshot, snapshot_error) = match self.snapshot_if_due() {
            Ok(seq) => (seq, None),
            Err(e) => (None, Some(e)),
        };
        Ok(Submitted { seqs, outcomes, snapshot, snapshot_error })
    }

    /// The automatic snapshot: once the previous one is done and `snapshot_every` commands
    /// have been journaled since the last one written or tried, write one (in the background
    /// with [`Options::background_snapshots`]). A failed one is tried again only after another
    /// `snapshot_every` commands: trying on every batch would copy or write the whole state on
    /// every batch while, say, the disk has room for the journal's appends but not for a
    /// snapshot. Returns the sequence number of a snapshot written or collected.
    fn snapshot_if_due(&mut self) -> Result<Option<u64>, JournalError> {
        let collected = self.finish_snapshot(false)?.map(|_| self.snapshot_seq);
        let every = self.options.snapshot_every;
        let since = self.last_seq() - self.snapshot_seq.max(self.tried_seq);
        if self.pending.is_some() || every == 0 || since < every {
            return Ok(collected);
        }
        self.tried_seq = self.last_seq();
        match self.options.background_snapshots {
            true => self.snapshot_in_background().map(|()| collected),
            false => self.snapshot().map(|_| Some(self.snapshot_seq)),
        }
    }

    /// Write a snapshot of the current state now (after any still being written in the
    /// background), drop all but the newest `keep_snapshots`, and archive the segments no kept
    /// snapshot needs (see [`Options::archive_segments`]).
    pub fn snapshot(&mut self) -> Result<PathBuf, JournalError> {
        self.finish_snapshot(true)?;
        let seq = self.last_seq();
        let path = snapshot::write(self.journal.dir(), seq, &self.engine)?;
        self.snapshot_seq = seq;
        self.prune()?;
        Ok(path)
    }

    /// Start writing a snapshot of the current state on a thread of its own, after any
    /// still being written. The caller waits only for a copy of the persisted state
    /// ([`Engine::persisted`]; at 10⁶ accounts about a third of a snapshot written in
    /// place); the copy is hashed, encoded, written, synced and dropped on that thread. Old
    /// snapshots are dropped and segments archived when it is collected: by the next batch
    /// after it is done, [`JournaledEngine::wait_for_snapshot`], or when `self` is dropped.
    /// Until then recovery uses the snapshots already on disk.
    pub fn snapshot_in_background(&mut self) -> Result<(), JournalError> {
        self.finish_snapshot(true)?;
        let (dir, seq, state) = (self.journal.dir().to_path_buf(), self.last_seq(), self.engine.persisted());
        let thread = std::thread::Builder::new()
            .name("ballast-snapshot".into())
            .spawn(move || snapshot::write(&dir, seq, &state))
            .map_err(io("cannot start the snapshot thread"))?;
        self.pending = Some(Pending { seq, thread });
        Ok(())
    }

    /// Wait for the snapshot being written in the background, if any, and collect it; its
    /// path, or `None` when none was being written.
    pub fn wait_for_snapshot(&mut self) -> Result<Option<PathBuf>, JournalError> {
        self.finish_snapshot(true)
    }

    /// Collect the background snapshot if it is done (or, with `wait`, once it is): on
    /// success it becomes the latest snapshot and the old ones are pruned.
    fn finish_snapshot(&mut self, wait: bool) -> Result<Option<PathBuf>, JournalError> {
        if !self.pending.as_ref().is_some_and(|p| wait || p.thread.is_finished()) {
            return Ok(None);
        }
        let Pending { seq, thread } = self.pending.take().expect("checked above");
        let path = thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        self.snapshot_seq = seq;
        self.prune()?;
        Ok(Some(path))
    }

    /// Drop all but the newest `keep_snapshots` snapshots and archive the segments no kept
    /// snapshot needs.
    fn prune(&mut self) -> Result<(), JournalError> {
        let all = snapshot::list(self.journal.dir())?;
        let keep = self.options.keep_snapshots.max(1);
        let (old, kept) = all.split_at(all.len().saturating_sub(keep));
        for (_, old) in old {
            std::fs::remove_file(old).map_err(io(format!("cannot remove {}", old.display())))?;
        }
        if let (true, Some(&(oldest, _))) = (self.options.archive_segments, kept.first()) {
            self.journal.archive_through(oldest)?;
        }
        Ok(())
    }
}

impl Drop for JournaledEngine {
    /// A snapshot still being written is finished, so that shutting down does not leave it
    /// half-written (recovery would remove it and replay more). Its errors have no one to
    /// go to here: the commands are durable either way.
    fn drop(&mut self) {
        let _ = self.finish_snapshot(true);
    }
}
