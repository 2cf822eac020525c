//! Roles by API key: who may send which command and read what, key hashing, and a token-bucket
//! rate limit per key.

use crate::config::KeyConfig;
use ballast_engine::{Command, TimedCommand};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The venue: markets, assets, deposits, withdrawals, fills, funding, ticks, insurance funds,
    /// the backstop, settlement, withdrawal limits, `init_governance` and `execute`.
    Venue,
    /// One price source: `oracle` commands whose `source` is the key's.
    Oracle,
    /// An external liquidator: `liquidate` into its own account.
    Liquidator,
    /// A trader: read its own account, request and cancel its own withdrawals.
    Trader,
    /// The guardian: signed `guardian` commands.
    Guardian,
    /// A council member: `propose`, `approve`, `cancel`, `execute`.
    Council,
    /// Read-only access to everything (dashboards, monitoring).
    Viewer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Venue => "venue",
            Role::Oracle => "oracle",
            Role::Liquidator => "liquidator",
            Role::Trader => "trader",
            Role::Guardian => "guardian",
            Role::Council => "council",
            Role::Viewer => "viewer",
        }
    }

    /// May read every account and the event stream.
    pub fn reads_all(self) -> bool {
        !matches!(self, Role::Trader | Role::Oracle)
    }
}

/// The holder of a valid key.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub account: Option<String>,
    pub source: Option<String>,
}

/// Hex SHA-256 of an API key, as stored in the configuration.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The configured keys, by hash.
#[derive(Debug, Default)]
pub struct Keys {
    by_hash: HashMap<String, Principal>,
}

impl Keys {
    pub fn new(keys: &[KeyConfig]) -> Keys {
        let by_hash = keys
            .iter()
            .map(|k| {
                let p = Principal {
                    name: k.name.clone(),
                    role: k.role,
                    account: k.account.clone(),
                    source: k.source.clone(),
                };
                (k.sha256.to_ascii_lowercase(), p)
            })
            .collect();
        Keys { by_hash }
    }

    /// The principal of a clear-text key, if it is configured.
    pub fn lookup(&self, key: &str) -> Option<&Principal> {
        self.by_hash.get(&hash_key(key))
    }
}

/// May `who` send `cmd`? `Err` says why not.
pub fn may_send(who: &Principal, cmd: &TimedCommand) -> Result<(), String> {
    let name = cmd.cmd.name();
    let role = who.role;
    let own = |account: &str, what: &str| -> Result<(), String> {
        if who.account.as_deref() == Some(account) {
            Ok(())
        } else {
            Err(format!("role {} may send {name} only for its own account, not '{account}' ({what})", role.name()))
        }
    };
    match (role, &cmd.cmd) {
        (
            Role::Venue,
            Command::CreateAsset { .. }
            | Command::CreateMarket { .. }
            | Command::Deposit(_)
            | Command::Withdraw(_)
            | Command::TransferMargin(_)
            | Command::Fill(_)
            | Command::Funding(_)
            | Command::Tick
            | Command::Liquidate(_)
            | Command::CreateInsuranceFund { .. }
            | Command::FundInsurance { .. }
            | Command::SetBackstop { .. }
            | Command::SettleMarket(_)
            | Command::ConfigureWithdrawals(_)
            | Command::RequestWithdrawal(_)
            | Command::CancelWithdrawal(_)
            | Command::InitGovernance(_)
            | Command::Execute(_),
        ) => Ok(()),
        (Role::Oracle, Command::Oracle(o)) => {
            if who.source.as_deref() == Some(o.source.as_str()) {
                Ok(())
            } else {
                Err(format!("oracle key '{}' may publish only as its own source, not '{}'", who.name, o.source))
            }
        }
        (Role::Liquidator, Command::Liquidate(l)) => own(&l.liquidator, "the liquidator"),
        (Role::Trader, Command::RequestWithdrawal(w)) => own(&w.account, "the account"),
        (Role::Trader, Command::CancelWithdrawal(w)) => own(&w.account, "the account"),
        (Role::Guardian, Command::Guardian(_)) => Ok(()),
        (Role::Council, Command::Propose(_) | Command::Approve(_) | Command::Cancel(_) | Command::Execute(_)) => Ok(()),
        _ => Err(format!("role {} may not send {name}", role.name())),
    }
}

/// May `who` read `account`?
pub fn may_read_account(who: &Principal, account: &str) -> bool {
    who.role.reads_all() || who.account.as_deref() == Some(account) && who.role == Role::Trader
}

/// A token bucket per key name.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: f64) -> RateLimiter {
        RateLimiter { rate: rate_per_sec, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one token for `key`; `Err` carries the seconds until the next token.
    pub fn take(&self, key: &str) -> Result<(), f64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_engine::parse_line;

    fn who(role: Role, account: Option<&str>, source: Option<&str>) -> Principal {
        Principal { name: "k".into(), role, account: account.map(Into::into), source: source.map(Into::into) }
    }

    #[test]
    fn hashes_are_hex_sha256() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn oracle_keys_publish_only_their_source() {
        let o = who(Role::Oracle, None, Some("s1"));
        let mine = parse_line(r#"{"ts":1,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"1"}"#).unwrap();
        let other = parse_line(r#"{"ts":1,"cmd":"oracle","market":"BTC-PERP","source":"s2","price":"1"}"#).unwrap();
        assert!(may_send(&o, &mine).is_ok());
        assert!(may_send(&o, &other).unwrap_err().contains("s2"));
        assert!(may_send(&who(Role::Venue, None, None), &mine).is_err());
    }

    #[test]
    fn traders_act_on_their_own_account_only() {
        let t = who(Role::Trader, Some("alice"), None);
        let mine = parse_line(r#"{"ts":1,"cmd":"request_withdrawal","account":"alice","amount":"1"}"#).unwrap();
        let other = parse_line(r#"{"ts":1,"cmd":"request_withdrawal","account":"bob","amount":"1"}"#).unwrap();
        let fill =
            parse_line(r#"{"ts":1,"cmd":"fill","market":"M","buyer":"alice","seller":"bob","size":"1","price":"1"}"#)
                .unwrap();
        assert!(may_send(&t, &mine).is_ok());
        assert!(may_send(&t, &other).is_err());
        assert!(may_send(&t, &fill).is_err());
        assert!(may_read_account(&t, "alice"));
        assert!(!may_read_account(&t, "bob"));
        assert!(may_read_account(&who(Role::Viewer, None, None), "bob"));
    }

    #[test]
    fn the_bucket_refuses_past_its_burst() {
        let limiter = RateLimiter::new(0.001, 2.0);
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_err());
        assert!(limiter.take("b").is_ok());
    }
}
