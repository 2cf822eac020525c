//! `ballast serve` and `ballast hash-key`.

use anyhow::{bail, Context, Result};
use ballast_server::auth::hash_key as sha256_hex;
use ballast_server::Config;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub fn run(config: Option<&Path>, data_dir: Option<PathBuf>, listen: Option<SocketAddr>) -> Result<()> {
    let mut config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(addr) = listen {
        config.listen = addr;
    }
    if config.keys.is_empty() {
        eprintln!("ballast serve: warning: no API keys configured; every request that needs a key is refused (see docs/operations.md)");
    }
    ballast_server::run(config)?;
    Ok(())
}

pub fn hash_key(generate: bool) -> Result<()> {
    if generate {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        println!("key:    {key}");
        println!("sha256: {}", sha256_hex(&key));
        return Ok(());
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the key from standard input")?;
    let key = line.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        bail!("no key on standard input (e.g. `printf %s \"$KEY\" | ballast hash-key`)");
    }
    println!("{}", sha256_hex(key));
    Ok(())
}
