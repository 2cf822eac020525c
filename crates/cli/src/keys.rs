//! `ballast keygen` and `ballast sign`: governance keys and their signatures for command files.
//! The engine never sees a secret key and needs no randomness; both live here.

use anyhow::{anyhow, bail, Context, Result};
use ballast_engine::governance::{signing_bytes, Change, Hex, SignedAction};
use ballast_engine::{parse_line, Command};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// A key file: both halves as hex. Keep it private: whoever reads it can sign.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    public_key: String,
    secret_key: String,
}

/// Write a new ed25519 key pair from the operating system's randomness to `out` (which must not
/// exist; created readable by its owner only) and print the public key.
pub fn keygen(out: &Path) -> Result<()> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow!("no randomness from the operating system: {e}"))?;
    let key = SigningKey::from_bytes(&secret);
    let public_key = Hex(key.verifying_key().to_bytes()).to_string();
    let file = KeyFile { public_key: public_key.clone(), secret_key: Hex(secret).to_string() };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(out)
        .with_context(|| format!("cannot create {} (an existing key is never overwritten)", out.display()))?;
    f.write_all(&serde_json::to_vec_pretty(&file)?)?;
    println!("{public_key}");
    Ok(())
}

/// Sign the `propose` or `guardian` command with `nonce` in `file` and print the line to add
/// to the file: an `approve` (or, with `cancel`, a `cancel`) of the proposal, or the guardian
/// command with its signature filled in. `ts` defaults to the signed command's.
pub fn sign(key: &Path, file: &Path, nonce: u64, cancel: bool, ts: Option<u64>) -> Result<()> {
    let key = load(key)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (line_ts, action, change) = find(&text, nonce)?;
    let ts = ts.unwrap_or(line_ts);
    let public = Hex(key.verifying_key().to_bytes());
    let action = match (action, cancel) {
        (SignedAction::Guardian, true) => bail!("nonce {nonce} is a guardian action, not a proposal to cancel"),
        (SignedAction::Approve, true) => SignedAction::Cancel,
        (a, _) => a,
    };
    let signature = Hex(key.sign(&signing_bytes(action, nonce, &change)).to_bytes());
    let line = match action {
        SignedAction::Guardian => {
            let change = serde_json::to_string(&change)?;
            format!(r#"{{"ts":{ts},"cmd":"guardian","nonce":{nonce},"change":{change},"signature":"{signature}"}}"#)
        }
        a => {
            format!(r#"{{"ts":{ts},"cmd":"{}","nonce":{nonce},"key":"{public}","signature":"{signature}"}}"#, a.name())
        }
    };
    println!("{line}");
    Ok(())
}

fn load(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text).with_context(|| format!("{} is not a key file", path.display()))?;
    let secret = Hex::<32>::parse(&file.secret_key).map_err(|e| anyhow!("{}: secret_key: {e}", path.display()))?;
    let key = SigningKey::from_bytes(&secret.0);
    if Hex(key.verifying_key().to_bytes()).to_string() != file.public_key {
        bail!("{}: public_key does not belong to secret_key", path.display());
    }
    Ok(key)
}

/// The `propose` or `guardian` command with `nonce` in a command file.
fn find(text: &str, nonce: u64) -> Result<(u64, SignedAction, Change)> {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match parse_line(line).map(|c| (c.ts, c.cmd)) {
            Ok((ts, Command::Propose(p))) if p.nonce == nonce => return Ok((ts, SignedAction::Approve, p.change)),
            Ok((ts, Command::Guardian(g))) if g.nonce == nonce => return Ok((ts, SignedAction::Guardian, g.change)),
            _ => {}
        }
    }
    bail!("no propose or guardian command with nonce {nonce} (a guardian line parses only with a signature field of 128 hex digits: write zeros there, then sign)")
}
