//! `ballast hash-key` and `ballast serve`'s refusals, on the real binary.

use std::io::Write;
use std::process::{Command, Stdio};

mod common;

#[test]
fn hash_key_prints_the_sha256_of_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // SHA-256("abc"), FIPS 180-2 appendix B.1: the trailing newline is not part of the key.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn a_generated_key_hashes_to_the_printed_hash() {
    let out = common::ballast(&["hash-key", "--generate"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text.lines().find_map(|l| l.strip_prefix("key:")).unwrap().trim().to_string();
    let hash = text.lines().find_map(|l| l.strip_prefix("sha256:")).unwrap().trim().to_string();
    assert_eq!(key.len(), 48);
    assert_eq!(ballast_server::auth::hash_key(&key), hash);
}

#[test]
fn serve_refuses_a_bad_configuration_and_names_the_problem() {
    let dir = std::env::temp_dir().join(format!("ballast-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[[key]]\nname = \"t\"\nsha256 = \"abc\"\nrole = \"venue\"\n", "64 hex digits"),
        (&format!("[[key]]\nname = \"t\"\nsha256 = \"{}\"\nrole = \"trader\"\n", "a".repeat(64)), "needs `account`"),
        ("listen = \"127.0.0.1:0\"\nport = 1\n", "port"),
    ];
    for (i, (toml, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = common::ballast(&[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--data-dir",
            dir.join("data").to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
