//! Segmented write-ahead log: `wal-<first seq, 20 digits>.log` files of [`record`]s.

use crate::error::io;
use crate::record::{self, Bad, MAX_PAYLOAD};
use crate::{CommandLog, JournalError};
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One segment file and what a scan found valid in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    /// The sequence number in the file name: the first record's.
    pub first_seq: u64,
    /// Number of valid records.
    pub records: u64,
    /// Length of the valid records in bytes. The file is longer when the last segment has a
    /// torn tail or space written ahead as zeros (see [`PREALLOCATE`]).
    pub len: u64,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.records
    }
}

/// A torn tail found at the end of the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    pub path: PathBuf,
    /// Where the valid records end.
    pub offset: u64,
    /// The file's length (bytes past `offset` are the torn write).
    pub file_len: u64,
    pub reason: String,
}

impl std::fmt::Display for Torn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: torn tail at byte offset {} ({}; {} bytes)",
            self.path.display(),
            self.offset,
            self.reason,
            self.file_len - self.offset
        )
    }
}

/// The result of checking every record of every segment of a directory (read-only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Segments in sequence order.
    pub segments: Vec<Segment>,
    pub torn: Option<Torn>,
    /// The last valid sequence number (0 when there is none).
    pub last_seq: u64,
}

impl Scan {
    /// Number of valid records.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Visit the valid records with a sequence number `>= from` (see [`CommandLog::read_from`]).
    pub fn read_from(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), JournalError> {
        read_segments(&self.segments, from, visit)
    }
}

/// The file name of the segment whose first record has sequence number `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&seq| seq > 0)
}

/// Check every record of every segment in `dir` without changing anything: CRCs, headers,
/// contiguous sequence numbers within and across segments. Zeros after the last record of the
/// last segment are space written ahead ([`PREALLOCATE`]), a clean end. A bad record at the very
/// end of the last segment (nothing valid after it) is reported as [`Scan::torn`]; anywhere else
/// it is an error naming the file and the byte offset.
pub fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))? {
        let entry = entry.map_err(io(format!("cannot read {}", dir.display())))?;
        if let Some(seq) = entry.file_name().to_str().and_then(segment_seq) {
            names.push((seq, entry.path()));
        }
    }
    names.sort();
    let mut scan = Scan::default();
    let count = names.len();
    for (i, (first_seq, path)) in names.into_iter().enumerate() {
        if let Some(prev) = scan.segments.last() {
            if first_seq != prev.end_seq() {
                let last = prev.end_seq() - 1;
                return Err(JournalError::Gap { prev: prev.path.clone(), last, next: path, first: first_seq });
            }
        }
        let data = std::fs::read(&path).map_err(io(format!("cannot read {}", path.display())))?;
        let is_last = i + 1 == count;
        let mut seg = Segment { path, first_seq, records: 0, len: 0 };
        let mut off = 0usize;
        while off < data.len() {
            match record::decode(&data[off..]) {
                Ok((seq, payload)) => {
                    let expected = seg.end_seq();
                    if seq != expected {
                        let reason = format!("sequence number {seq}, expected {expected}");
                        return Err(JournalError::Corrupt { path: seg.path, offset: off as u64, reason });
                    }
                    seg.records += 1;
                    off += record::HEADER_LEN + payload.len();
                }
                Err(_) if is_last && data[off..].iter().all(|&b| b == 0) => break,
                Err(bad) => {
                    let after = record::valid_record_after(&data, off);
                    if is_last && after.is_none() {
                        let reason = bad.to_string();
                        scan.torn = Some(Torn {
                            path: seg.path.clone(),
                            offset: off as u64,
                            file_len: data.len() as u64,
                            reason,
                        });
                        break;
                    }
                    let reason = match after {
                        Some(at) => format!("{bad}; a valid record follows at byte offset {at}"),
                        None => format!("{bad}; not the last segment"),
                    };
                    return Err(JournalError::Corrupt { path: seg.path, offset: off as u64, reason });
                }
            }
        }
        seg.len = off as u64;
        scan.segments.push(seg);
    }
    scan.last_seq = scan.segments.last().map_or(0, |s| s.end_seq() - 1);
    Ok(scan)
}

pub(crate) fn read_segments(
    segments: &[Segment],
    from: u64,
    visit: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<(), JournalError> {
    for seg in segments.iter().filter(|s| s.end_seq() > from) {
        let mut data = std::fs::read(&seg.path).map_err(io(format!("cannot read {}", seg.path.display())))?;
        data.truncate(seg.len as usize);
        let mut off = 0;
        while off < data.len() {
            let (seq, payload) = record::decode(&data[off..]).map_err(|bad: Bad| JournalError::Corrupt {
                path: seg.path.clone(),
                offset: off as u64,
                reason: format!("{bad} (changed since it was checked)"),
            })?;
            if seq >= from && !visit(seq, payload) {
                return Ok(());
            }
            off += record::HEADER_LEN + payload.len();
        }
    }
    Ok(())
}

/// Fsync a directory, so that a file created or renamed in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("cannot fsync the directory {}", dir.display())))
}

/// An injected failure for the next append (tests only).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Write only the first `written` bytes of the batch, then fail.
    Write { written: usize },
    /// Write the batch, then fail the fdatasync.
    Sync,
    /// Fail the fdatasync and the truncation that rolls the batch back.
    SyncAndTruncate,
}

/// How far ahead of the records the current segment is written with zeros, at most (capped by
/// the segment size).
///
/// A batch then overwrites blocks the file already has: its `fdatasync` flushes the data alone,
/// where an append must also persist the file's new size (and, on ext4, allocate the blocks).
/// On the benchmark machine's disk the median `fdatasync` of a 200-byte write is 0.10–0.12 ms
/// this way against 0.16–0.22 ms appending, in the quieter runs of BENCHMARKS.md §5.
/// PostgreSQL writes its WAL segments full of zeros before use for the same reason. The zeros
/// are written with the batch that needs them, under the same `fdatasync`, once per mebibyte; a
/// finished segment is cut back to its records before the next one starts.
pub const PREALLOCATE: u64 = 1 << 20;

/// The subdirectory of the data directory that archived segments move to
/// ([`FileJournal::archive_through`]). Recovery and [`scan`] never read it; `ballast verify
/// --data-dir DIR/archive` checks it as a journal of its own.
pub const ARCHIVE: &str = "archive";

/// The file journal: the default [`CommandLog`].
#[derive(Debug)]
pub struct FileJournal {
    dir: PathBuf,
    segment_bytes: u64,
    /// All segments; the last one is open in `file`.
    segments: Vec<Segment>,
    file: File,
    /// The length of `file`: its records, then zeros (see [`PREALLOCATE`]).
    allocated: u64,
    buf: Vec<u8>,
    poisoned: Option<String>,
    #[cfg(test)]
    pub(crate) fault: Option<Fault>,
}

impl FileJournal {
    /// Open (or create) the journal in `dir`, rolling to a new segment once the current one
    /// holds `segment_bytes`. A torn tail of the last segment is truncated; the returned
    /// warnings say so.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, Vec<String>), JournalError> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let scan = scan(dir)?;
        let mut warnings = Vec::new();
        let mut segments = scan.segments;
        let (file, allocated) = match segments.last() {
            None => {
                let (file, seg) = create_segment(dir, 1)?;
                segments.push(seg);
                (file, 0)
            }
            Some(last) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&last.path)
                    .map_err(io(format!("cannot open {}", last.path.display())))?;
                if let Some(torn) = &scan.torn {
                    file.set_len(torn.offset)
                        .and_then(|()| file.sync_all())
                        .map_err(io(format!("cannot truncate {}", torn.path.display())))?;
                    warnings.push(format!("truncated {torn}"));
                }
                let allocated =
                    file.metadata().map_err(io(format!("cannot read the length of {}", last.path.display())))?.len();
                (file, allocated)
            }
        };
        let journal = FileJournal {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            segments,
            file,
            allocated,
            buf: Vec::new(),
            poisoned: None,
            #[cfg(test)]
            fault: None,
        };
        Ok((journal, warnings))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first sequence number still in the journal.
    pub fn first_seq(&self) -> u64 {
        self.segments[0].first_seq
    }

    fn current(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a journal always has a segment")
    }

    /// Move the finished segments whose records all have a sequence number at or below `seq`
    /// into [`ARCHIVE`], oldest first and one durable move at a time (a crash midway leaves a
    /// contiguous run of segments in each directory); the current segment always stays. Returns
    /// how many moved.
    pub fn archive_through(&mut self, seq: u64) -> Result<usize, JournalError> {
        let finished = self.segments.len() - 1;
        let count = self.segments[..finished].iter().take_while(|s| s.end_seq() <= seq + 1).count();
        if count == 0 {
            return Ok(0);
        }
        let archive = self.dir.join(ARCHIVE);
        std::fs::create_dir_all(&archive).map_err(io(format!("cannot create {}", archive.display())))?;
        for _ in 0..count {
            let from = self.segments[0].path.clone();
            let to = archive.join(from.file_name().expect("a segment has a file name"));
            std::fs::rename(&from, &to).map_err(io(format!(
                "cannot move {} to {}",
                from.display(),
                archive.display()
            )))?;
            // Each move is durable before the next starts: without a journal of its own (ext4
            // without one, for instance), a file system may persist renames out of order, and a
            // later segment gone with an earlier one left would be a gap.
            sync_dir(&archive)?;
            sync_dir(&self.dir)?;
            self.segments.remove(0);
        }
        Ok(count)
    }

    /// Start the next segment, once the current one is cut back to its records (so that only
    /// the last segment ever ends in zeros).
    fn roll(&mut self) -> Result<(), JournalError> {
        let len = self.current().len;
        if self.allocated > len {
            let path = self.current().path.display().to_string();
            self.file
                .set_len(len)
                .and_then(|()| self.file.sync_data())
                .map_err(io(format!("cannot cut {path} to its records")))?;
        }
        let next = self.last_seq() + 1;
        let (file, seg) = create_segment(&self.dir, next)?;
        self.file = file;
        self.allocated = 0;
        self.segments.push(seg);
        Ok(())
    }

    /// Make the current segment's file run past a batch of `bytes` at its end, with zeros, so
    /// that this batch or the ones after it land on written blocks (see [`PREALLOCATE`]). A
    /// batch larger than that extends the file itself. Not synced here: the batch's
    /// `fdatasync` covers it.
    fn preallocate(&mut self, bytes: u64) -> Result<(), JournalError> {
        let end = self.current().len + bytes;
        if end <= self.allocated {
            return Ok(());
        }
        let target = end.max((self.allocated + PREALLOCATE).min(self.segment_bytes));
        if target > end {
            let zeros = vec![0u8; (target - end) as usize];
            self.file.write_all_at(&zeros, end).map_err(JournalError::Write)?;
        }
        self.allocated = target;
        Ok(())
    }

    /// Write and sync `self.buf` at the end of the current segment.
    fn write_and_sync(&mut self) -> Result<(), JournalError> {
        self.preallocate(self.buf.len() as u64)?;
        let at = self.segments.last().expect("a segment").len;
        #[cfg(test)]
        match self.fault.take() {
            Some(Fault::Write { written }) => {
                self.file.write_all_at(&self.buf[..written.min(self.buf.len())], at).map_err(JournalError::Write)?;
                return Err(JournalError::Write(std::io::Error::other("injected write failure")));
            }
            Some(fault @ (Fault::Sync | Fault::SyncAndTruncate)) => {
                self.file.write_all_at(&self.buf, at).map_err(JournalError::Write)?;
                self.fault = matches!(fault, Fault::SyncAndTruncate).then_some(fault);
                return Err(JournalError::Sync(std::io::Error::other("injected fdatasync failure")));
            }
            None => {}
        }
        self.file.write_all_at(&self.buf, at).map_err(JournalError::Write)?;
        self.file.sync_data().map_err(JournalError::Sync)
    }

    /// Cut the current segment back to its last durable length after a failed batch.
    fn roll_back(&mut self) -> Result<(), String> {
        let len = self.segments.last().expect("a segment").len;
        #[cfg(test)]
        if let Some(Fault::SyncAndTruncate) = self.fault.take() {
            return Err(format!("cannot truncate {} to {len} bytes: injected failure", self.current().path.display()));
        }
        self.allocated = len;
        self.file.set_len(len).and_then(|()| self.file.sync_data()).map_err(|e| {
            format!("cannot truncate {} to {len} bytes after a failed batch: {e}", self.current().path.display())
        })
    }
}

fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, Segment), JournalError> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|f| f.sync_all().map(|()| f))
        .map_err(io(format!("cannot create {}", path.display())))?;
    sync_dir(dir)?;
    Ok((file, Segment { path, first_seq, records: 0, len: 0 }))
}

impl CommandLog for FileJournal {
    fn append_batch(&mut self, lines: &[&str]) -> Result<Range<u64>, JournalError> {
        if let Some(why) = &self.poisoned {
            return Err(JournalError::Poisoned(why.clone()));
        }
        let first = self.last_seq() + 1;
        if lines.is_empty() {
            return Ok(first..first);
        }
        if let Some(line) = lines.iter().find(|l| l.len() > MAX_PAYLOAD) {
            return Err(JournalError::TooLarge(line.len()));
        }
        let current = self.segments.last().expect("a segment");
        if current.len >= self.segment_bytes && current.records > 0 {
            self.roll()?;
        }
        self.buf.clear();
        for (i, line) in lines.iter().enumerate() {
            record::encode(&mut self.buf, first + i as u64, line.as_bytes());
        }
        if let Err(e) = self.write_and_sync() {
            if let Err(why) = self.roll_back() {
                self.poisoned = Some(why.clone());
                return Err(JournalError::Poisoned(format!("{e}; then {why}")));
            }
            return Err(e);
        }
        let written = self.buf.len() as u64;
        let seg = self.current();
        seg.len += written;
        seg.records += lines.len() as u64;
        Ok(first..first + lines.len() as u64)
    }

    fn read_from(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), JournalError> {
        read_segments(&self.segments, from, visit)
    }

    fn last_seq(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.end_seq() - 1)
    }
}
