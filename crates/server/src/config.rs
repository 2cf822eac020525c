//! The service's configuration file (`ballast.toml`): where to listen, the data directory,
//! limits and the API keys (stored as SHA-256 hashes, never in clear). Risk parameters are not
//! configuration: they are engine state, changed by journaled commands.

use crate::auth::Role;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The default listen address (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "ballast-data";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub journal: JournalConfig,
    /// API keys; an empty list refuses every request that needs a key.
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyConfig>,
}

/// Request limits.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most commands in one POST.
    pub max_batch: usize,
    /// A request that takes longer is answered 503 (the command may still become durable; the
    /// client can check with GET /v1/events).
    pub request_timeout_ms: u64,
    /// Token bucket per key: sustained requests per second.
    pub rate_per_sec: f64,
    /// Token bucket per key: burst size.
    pub burst: f64,
    /// How many events the in-memory ring keeps for GET /v1/events and the WebSocket.
    pub event_ring: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 << 20,
            max_batch: 10_000,
            request_timeout_ms: 10_000,
            rate_per_sec: 10_000.0,
            burst: 20_000.0,
            event_ring: 100_000,
        }
    }
}

/// Journal settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Write a snapshot after this many commands (0: never automatically).
    pub snapshot_every: u64,
    /// Roll to a new segment after this many bytes.
    pub segment_bytes: u64,
    /// Snapshots to keep.
    pub keep_snapshots: usize,
    /// Move segments no kept snapshot needs into `archive/` after each snapshot.
    pub archive_segments: bool,
    /// Write automatic snapshots on a thread of their own from a copy of the state, so that
    /// commands wait for the copy only (on by default here; the library's default is off).
    pub background_snapshots: bool,
}

impl Default for JournalConfig {
    fn default() -> Self {
        let o = ballast_journal::Options::default();
        JournalConfig {
            snapshot_every: o.snapshot_every,
            segment_bytes: o.segment_bytes,
            keep_snapshots: o.keep_snapshots,
            archive_segments: o.archive_segments,
            background_snapshots: true,
        }
    }
}

impl JournalConfig {
    pub fn options(&self) -> ballast_journal::Options {
        ballast_journal::Options {
            segment_bytes: self.segment_bytes,
            snapshot_every: self.snapshot_every,
            keep_snapshots: self.keep_snapshots.max(1),
            archive_segments: self.archive_segments,
            background_snapshots: self.background_snapshots,
        }
    }
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A name for logs and metrics (never the key itself).
    pub name: String,
    /// Hex SHA-256 of the key (`ballast hash-key`).
    pub sha256: String,
    pub role: Role,
    /// trader: the account it owns; liquidator: the account it liquidates into.
    #[serde(default)]
    pub account: Option<String>,
    /// oracle: the source name it may publish as.
    #[serde(default)]
    pub source: Option<String>,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("key '{name}': {message}")]
    Key { name: String, message: String },
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("a valid default address")
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            data_dir: default_data_dir(),
            limits: Limits::default(),
            journal: JournalConfig::default(),
            keys: Vec::new(),
        }
    }
}

impl Config {
    /// Read and check a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
            other => other,
        })
    }

    /// Parse and check a configuration from TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<config>"), message: e.to_string() })?;
        config.check()?;
        Ok(config)
    }

    /// Check the keys: well-formed hashes, no duplicates, the scope each role needs.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for k in &self.keys {
            let err = |message: String| ConfigError::Key { name: k.name.clone(), message };
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err("sha256 must be 64 hex digits (see `ballast hash-key`)".into()));
            }
            if !seen.insert(k.sha256.to_ascii_lowercase()) {
                return Err(err("the same key hash appears twice".into()));
            }
            match k.role {
                Role::Trader | Role::Liquidator if k.account.is_none() => {
                    return Err(err(format!("role {} needs `account`", k.role.name())));
                }
                Role::Oracle if k.source.is_none() => return Err(err("role oracle needs `source`".into())),
                _ => {}
            }
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_batch == 0 || self.limits.event_ring == 0 {
            return Err(ConfigError::Parse {
                path: PathBuf::from("<config>"),
                message: "limits.max_body_bytes, limits.max_batch and limits.event_ring must be positive".into(),
            });
        }
        if !(self.limits.rate_per_sec > 0.0 && self.limits.burst >= 1.0) {
            return Err(ConfigError::Parse {
                path: PathBuf::from("<config>"),
                message: "limits.rate_per_sec must be positive and limits.burst at least 1".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full configuration of docs/operations.md parses, once the guide's elided key hashes
    /// (`"…"`) are replaced by well-formed ones, and its journal values are the defaults it
    /// claims: the guide shows what the service accepts.
    #[test]
    fn the_operators_guide_configuration_parses() {
        let guide =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md")).unwrap();
        let block = guide.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
        let mut n = 0;
        let text: String = block
            .lines()
            .map(|line| match line.strip_prefix("sha256 = ") {
                Some(_) => {
                    n += 1;
                    format!("sha256 = \"{n:064x}\"")
                }
                None => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::parse(&text).unwrap();
        assert!(n >= 3 && config.keys.len() == n);
        let options = config.journal.options();
        let library = ballast_journal::Options::default();
        assert_eq!(
            options,
            ballast_journal::Options { segment_bytes: 64 << 20, background_snapshots: true, ..library }
        );
        assert!(options.archive_segments && Config::parse("").unwrap().journal.options().background_snapshots);
        let off = Config::parse("[journal]\narchive_segments = false\nbackground_snapshots = false\n").unwrap();
        assert!(!off.journal.options().archive_segments && !off.journal.options().background_snapshots);
    }
}
