//! The real `ballast verify` binary on a journal written through the library, before and after
//! corruption.

use ballast_engine::Engine;
use ballast_journal::{apply_line, scan, snapshot, JournaledEngine, Options, ARCHIVE};
use std::path::{Path, PathBuf};

mod common;

use common::{ballast, repo};

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-verify-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Journal the isolated-long story in batches of 2, with small segments and a snapshot
/// midway (after seq 6); return the state hash `ballast replay` reports for the same story.
fn journal_story(dir: &Path) -> String {
    journal_story_archiving(dir, false)
}

/// The isolated-long story's command lines.
fn story_lines() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("examples/isolated-long.jsonl")).unwrap();
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// [`journal_story`], moving the segments the snapshot does not need to `archive/` or not.
fn journal_story_archiving(dir: &Path, archive_segments: bool) -> String {
    let lines = story_lines();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let options =
        Options { segment_bytes: 256, snapshot_every: 0, keep_snapshots: 2, archive_segments, ..Options::default() };
    let (mut journal, _) = JournaledEngine::open(dir, options).unwrap();
    for (i, batch) in lines.chunks(2).enumerate() {
        journal.submit_batch(batch).unwrap();
        if i == 2 {
            journal.snapshot().unwrap();
        }
    }
    let out = ballast(&["replay", "examples/isolated-long.jsonl"]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    stderr.rsplit("state hash ").next().unwrap().trim().to_string()
}

fn verify(dir: &Path) -> (bool, String, String) {
    let out = ballast(&["verify", "--data-dir", dir.to_str().unwrap()]);
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_good_directory_verifies_to_the_replay_state_hash() {
    let dir = data_dir("good");
    let hash = journal_story(&dir);
    let (ok, stdout, stderr) = verify(&dir);
    assert!(ok, "{stderr}");
    let segments = scan(&dir).unwrap().segments.len();
    assert!(segments >= 3, "{segments} segments");
    assert!(stdout.contains(&format!("records checked: 12 in {segments} segments")), "{stdout}");
    assert!(stdout.contains("snapshots checked: 1 (0 corrupt)"), "{stdout}");
    assert!(stdout.contains("replayed: 6 records after"), "{stdout}");
    assert!(stdout.contains("last seq: 12"), "{stdout}");
    assert!(stdout.contains(&format!("state hash: {hash}")), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_archive_verifies_as_a_journal_of_its_own() {
    let dir = data_dir("archive");
    let hash = journal_story_archiving(&dir, true);
    let archive = dir.join(ARCHIVE);
    let archived = scan(&archive).unwrap();
    assert!(!archived.segments.is_empty() && archived.last_seq <= 6, "{archived:?}");
    assert_eq!(scan(&dir).unwrap().segments[0].first_seq, archived.last_seq + 1);
    // The data directory: the snapshot and what follows it.
    let (ok, stdout, stderr) = verify(&dir);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("replayed: 6 records after") && stdout.contains(&format!("state hash: {hash}")),
        "{stdout}"
    );
    let pointer = format!("archive: {} holds the segments before seq {}", archive.display(), archived.last_seq + 1);
    assert!(stdout.contains(&pointer), "{stdout}");
    // The archive: from an empty engine to the state at its last record.
    let mut engine = Engine::new();
    for line in &story_lines()[..archived.last_seq as usize] {
        let _ = apply_line(&mut engine, line.as_bytes(), &mut Vec::new());
    }
    let (ok, stdout, stderr) = verify(&archive);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("last seq: {}", archived.last_seq)), "{stdout}");
    assert!(stdout.contains(&format!("state hash: {}", engine.state_hash())), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corrupt_record_fails_naming_file_and_offset() {
    let dir = data_dir("bad-record");
    journal_story(&dir);
    let seg = scan(&dir).unwrap().segments[1].clone();
    let mut data = std::fs::read(&seg.path).unwrap();
    // The second record's payload: the first record is 24 bytes of header + its payload.
    let first_len = 24 + u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize;
    data[first_len + 30] ^= 0x10;
    std::fs::write(&seg.path, data).unwrap();
    let (ok, _, stderr) = verify(&dir);
    assert!(!ok);
    assert!(stderr.contains(&seg.path.display().to_string()), "{stderr}");
    assert!(stderr.contains(&format!("corrupt record at byte offset {first_len}")), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corrupt_snapshot_fails_naming_the_file_but_still_replays() {
    let dir = data_dir("bad-snapshot");
    let hash = journal_story(&dir);
    let (_, path) = snapshot::list(&dir).unwrap().pop().unwrap();
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 1;
    std::fs::write(&path, data).unwrap();
    let (ok, stdout, stderr) = verify(&dir);
    assert!(!ok);
    assert!(stderr.contains(&path.display().to_string()) && stderr.contains("CRC mismatch"), "{stderr}");
    assert!(stdout.contains("replayed: 12 records from an empty engine"), "{stdout}");
    assert!(stdout.contains(&format!("state hash: {hash}")), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_torn_tail_is_a_warning_and_verify_changes_nothing() {
    let dir = data_dir("torn");
    journal_story(&dir);
    let last = scan(&dir).unwrap().segments.pop().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&last.path).unwrap();
    file.set_len(last.len - 5).unwrap();
    let (ok, stdout, stderr) = verify(&dir);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("torn tail") && stderr.contains(&last.path.display().to_string()), "{stderr}");
    assert!(stdout.contains("last seq: 11"), "{stdout}");
    assert_eq!(std::fs::metadata(&last.path).unwrap().len(), last.len - 5, "read-only");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_directory_is_an_error() {
    let (ok, _, stderr) = verify(&data_dir("missing"));
    assert!(!ok);
    assert!(stderr.contains("is not a directory"), "{stderr}");
}
