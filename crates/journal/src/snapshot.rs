//! Snapshot files: `snapshot-<seq, 20 digits>.bin`, the engine state after the command with
//! sequence number `seq`.
//!
//! ```text
//! offset  size  field
//!      0     8  magic  "BLSNAP\0\0"
//!      8     4  crc    CRC32 (IEEE) of the body
//!     12     …  body   postcard of (Header, Engine)
//! ```
//!
//! Written to `snapshot-<seq>.bin.tmp`, fsynced, renamed, and the directory fsynced. A load
//! checks the CRC, the header (version, seq matching the file name) and that the decoded
//! engine's state hash equals the one in the header.

use crate::error::io;
use crate::wal::sync_dir;
use crate::JournalError;
use ballast_engine::engine::Persisted;
use ballast_engine::Engine;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 8] = *b"BLSNAP\0\0";
/// The snapshot format version written by this build.
pub const VERSION: u16 = 1;
const PREFIX_LEN: usize = 12;

/// The header of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u16,
    /// The sequence number of the last command in the state.
    pub seq: u64,
    /// [`Engine::state_hash`] of the state.
    pub state_hash: String,
}

pub fn file_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.bin")
}

fn file_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".bin")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The snapshots in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))? {
        let entry = entry.map_err(io(format!("cannot read {}", dir.display())))?;
        if let Some(seq) = entry.file_name().to_str().and_then(file_seq) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Leftover temp files of interrupted snapshot writes.
pub fn temp_files(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))? {
        let entry = entry.map_err(io(format!("cannot read {}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snapshot-") && name.ends_with(".bin.tmp") {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// What a snapshot is written from: the engine itself, or a copy of its persisted state made
/// to be written on another thread. Both serialize alike.
pub trait State: Serialize {
    fn state_hash(&self) -> String;
}

impl State for Engine {
    fn state_hash(&self) -> String {
        Engine::state_hash(self)
    }
}

impl State for Persisted {
    fn state_hash(&self) -> String {
        Persisted::state_hash(self)
    }
}

/// Write the snapshot of `state` after sequence number `seq` durably; returns its path.
pub fn write(dir: &Path, seq: u64, state: &impl State) -> Result<PathBuf, JournalError> {
    let header = Header { version: VERSION, seq, state_hash: state.state_hash() };
    let body = postcard::to_stdvec(&(&header, state)).map_err(|e| JournalError::Snapshot {
        path: dir.join(file_name(seq)),
        reason: format!("cannot encode the state: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(PREFIX_LEN + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let path = dir.join(file_name(seq));
    let tmp = dir.join(format!("{}.tmp", file_name(seq)));
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("cannot rename {} to {}", tmp.display(), path.display())))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Load and check a snapshot.
pub fn load(path: &Path) -> Result<(Header, Engine), JournalError> {
    let bad = |reason: String| JournalError::Snapshot { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(io(format!("cannot read {}", path.display())))?;
    if bytes.len() < PREFIX_LEN || bytes[..8] != MAGIC {
        return Err(bad("not a snapshot file (bad magic or too short)".into()));
    }
    let stored = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let body = &bytes[PREFIX_LEN..];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(bad(format!("CRC mismatch (stored {stored:08x}, computed {computed:08x})")));
    }
    let ((header, mut engine), rest): ((Header, Engine), _) =
        postcard::take_from_bytes(body).map_err(|e| bad(format!("cannot decode: {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} trailing bytes", rest.len())));
    }
    if header.version != VERSION {
        return Err(bad(format!("unknown snapshot version {}", header.version)));
    }
    let name_seq = path.file_name().and_then(|n| n.to_str()).and_then(file_seq);
    if name_seq != Some(header.seq) {
        return Err(bad(format!("header seq {} does not match the file name", header.seq)));
    }
    engine.rebuild_index();
    let hash = engine.state_hash();
    if hash != header.state_hash {
        return Err(bad(format!("state hash {hash} differs from the header's {}", header.state_hash)));
    }
    Ok((header, engine))
}
