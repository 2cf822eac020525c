//! The record format (version 1), little-endian:
//!
//! ```text
//! offset  size  field
//!      0     4  magic    "BLJ1" (0x42 0x4c 0x4a 0x31)
//!      4     2  version  1
//!      6     2  kind     1 = a command's JSON line
//!      8     4  len      payload length in bytes
//!     12     4  crc      CRC32 (IEEE) of bytes 0..12, bytes 16..24 and the payload
//!     16     8  seq      sequence number
//!     24   len  payload
//! ```

/// The first four bytes of every record.
pub const MAGIC: [u8; 4] = *b"BLJ1";
/// The record format version written by this build.
pub const VERSION: u16 = 1;
/// Record kind: the payload is a command's JSON line as the venue sent it.
pub const KIND_COMMAND: u16 = 1;
/// Size of the record header.
pub const HEADER_LEN: usize = 24;
/// Largest payload a record may carry (a longer length field is treated as corruption).
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Append one record to `buf`.
pub fn encode(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let start = buf.len();
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&KIND_COMMAND.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = checksum(&buf[start..]);
    buf[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&record[..12]);
    h.update(&record[16..]);
    h.finalize()
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Fewer than [`HEADER_LEN`] bytes left.
    ShortHeader(usize),
    /// A header field is wrong (magic, version, kind or an impossible length).
    Header(String),
    /// The payload runs past the end of the data.
    ShortPayload { len: usize, available: usize },
    /// The checksum does not match.
    Crc { stored: u32, computed: u32 },
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::ShortHeader(n) => write!(f, "incomplete header ({n} of {HEADER_LEN} bytes)"),
            Bad::Header(why) => write!(f, "bad header: {why}"),
            Bad::ShortPayload { len, available } => {
                write!(f, "incomplete payload ({available} of {len} bytes)")
            }
            Bad::Crc { stored, computed } => write!(f, "CRC mismatch (stored {stored:08x}, computed {computed:08x})"),
        }
    }
}

/// Decode the record at the start of `data`: its sequence number and payload.
pub fn decode(data: &[u8]) -> Result<(u64, &[u8]), Bad> {
    if data.len() < HEADER_LEN {
        return Err(Bad::ShortHeader(data.len()));
    }
    if data[..4] != MAGIC {
        return Err(Bad::Header(format!("magic {:02x?}", &data[..4])));
    }
    let version = u16::from_le_bytes([data[4], data[5]]);
    if version != VERSION {
        return Err(Bad::Header(format!("unknown version {version}")));
    }
    let kind = u16::from_le_bytes([data[6], data[7]]);
    if kind != KIND_COMMAND {
        return Err(Bad::Header(format!("unknown kind {kind}")));
    }
    let len = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(Bad::Header(format!("length {len} over the limit")));
    }
    let available = data.len() - HEADER_LEN;
    if available < len {
        return Err(Bad::ShortPayload { len, available });
    }
    let record = &data[..HEADER_LEN + len];
    let stored = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes"));
    let computed = checksum(record);
    if stored != computed {
        return Err(Bad::Crc { stored, computed });
    }
    let seq = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
    Ok((seq, &record[HEADER_LEN..]))
}

/// Whether a valid record starts anywhere after offset `from` of `data`: tells a torn tail
/// (nothing valid after the bad bytes) from corruption in the middle.
pub fn valid_record_after(data: &[u8], from: usize) -> Option<usize> {
    (from + 1..data.len().saturating_sub(HEADER_LEN - 1))
        .filter(|&i| data[i..i + 4] == MAGIC)
        .find(|&i| decode(&data[i..]).is_ok())
}
