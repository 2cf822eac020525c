//! `ballast verify --data-dir D`: check a journal directory without changing it.

use anyhow::{bail, Context, Result};
use ballast_journal::{restore, scan, snapshot, ARCHIVE};
use std::path::Path;

pub fn run(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    // Every record: header, CRC, contiguous sequence numbers. Corruption is an error naming the
    // file and the byte offset.
    let scan = scan(dir)?;
    if let Some(torn) = &scan.torn {
        eprintln!("warning: {torn}; opening the journal will truncate it");
    }
    // Every snapshot: CRC, header, decoded state hash.
    let snapshots = snapshot::list(dir)?;
    let bad: Vec<String> =
        snapshots.iter().filter_map(|(_, path)| snapshot::load(path).err()).map(|e| e.to_string()).collect();
    let (engine, recovery) = restore(dir, &scan.segments, scan.last_seq).context("cannot replay the journal")?;
    println!("records checked: {} in {} segments", scan.records(), scan.segments.len());
    let archive = dir.join(ARCHIVE);
    if archive.is_dir() {
        println!(
            "archive: {} holds the segments before seq {} (check it with --data-dir {})",
            archive.display(),
            scan.segments.first().map_or(scan.last_seq + 1, |s| s.first_seq),
            archive.display()
        );
    }
    println!("snapshots checked: {} ({} corrupt)", snapshots.len(), bad.len());
    match &recovery.snapshot {
        Some((seq, path)) => println!("replayed: {} records after {} (seq {seq})", recovery.replayed, path.display()),
        None => println!("replayed: {} records from an empty engine", recovery.replayed),
    }
    println!("last seq: {}", scan.last_seq);
    println!("state hash: {}", engine.state_hash());
    if !bad.is_empty() {
        bail!("corrupt snapshot: {}", bad.join("; corrupt snapshot: "));
    }
    Ok(())
}
