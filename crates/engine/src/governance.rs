//! Governance of risk parameters (DESIGN §3 Governance): parameter changes as proposals,
//! approved by M of N council keys with ed25519 signatures over canonical bytes, queued behind a
//! timelock (short for tightening, long for loosening, longest for council rotation); a guardian
//! key that may act at once but only to tighten.
//!
//! **Canonical bytes.** What a key signs for proposal `nonce` carrying `change`:
//!
//! ```text
//! "ballast-governance-v1" 0x00 action 0x00 nonce (8 bytes, big-endian) 0x00 canonical JSON of change
//! ```
//!
//! `action` is `approve`, `cancel` or `guardian`, so a signature for one purpose is worthless for
//! another. The canonical JSON is the engine's own serialization of the decoded [`Change`]:
//! fields in declaration order, every default filled in, numbers in their shortest decimal form.
//! However the proposal was typed, the same change gives the same bytes, and `ballast sign`
//! computes them with this very function. Nonces are strictly increasing across proposals and
//! guardian actions, so no signature can be replayed on a later proposal.

use crate::asset::AssetParams;
use crate::breaker::Status;
use crate::error::{check_range, ParamError};
use crate::insurance::FundParams;
use crate::market::MarketParams;
use crate::num::{Quote, Ratio};
use crate::withdrawal::WithdrawalParams;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The domain tag of every signed message.
pub const DOMAIN: &[u8] = b"ballast-governance-v1";
/// Most council keys.
pub const MAX_COUNCIL: usize = 16;
/// Most proposals open at once.
pub const MAX_PROPOSALS: usize = 64;
const MAX_TIMELOCK_MS: u64 = 30 * 86_400_000;

/// Bytes shown as lowercase hex in JSON (keys and signatures).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex<const N: usize>(pub [u8; N]);

/// An ed25519 public key (32 bytes, 64 hex digits).
pub type PublicKey = Hex<32>;
/// An ed25519 signature (64 bytes, 128 hex digits).
pub type Signature = Hex<64>;

impl<const N: usize> Hex<N> {
    /// Parse exactly `2 N` hex digits.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() != 2 * N {
            return Err(format!("expected {} hex digits, got {}", 2 * N, b.len()));
        }
        let digit = |c: u8| {
            (c as char).to_digit(16).map(|d| d as u8).ok_or_else(|| format!("'{}' is not a hex digit", c as char))
        };
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
        }
        Ok(Hex(out))
    }
}

impl<const N: usize> std::fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl<const N: usize> std::fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hex::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How long a queued change waits, by kind. Defaults 1 hour, 48 hours, 7 days; bounds
/// `0 ≤ tighten_ms ≤ loosen_ms ≤ rotation_ms ≤ 2,592,000,000` (30 days).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timelocks {
    pub tighten_ms: u64,
    pub loosen_ms: u64,
    pub rotation_ms: u64,
}

impl Default for Timelocks {
    fn default() -> Self {
        Timelocks { tighten_ms: 3_600_000, loosen_ms: 172_800_000, rotation_ms: 604_800_000 }
    }
}

/// The council: `threshold` of `keys` approve a change; `guardian` may tighten at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Council {
    /// 1..=16 distinct valid ed25519 public keys.
    pub keys: Vec<PublicKey>,
    /// Approvals needed: 1..=number of keys.
    pub threshold: u32,
    #[serde(default)]
    pub guardian: Option<PublicKey>,
    #[serde(default)]
    pub timelocks: Timelocks,
}

impl Council {
    /// Check every bound documented on the fields, and that every key is a valid curve point.
    pub fn validate(&self) -> Result<(), ParamError> {
        check_range("council.keys.len", self.keys.len(), 1, MAX_COUNCIL, "1..=16")?;
        let n = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
        check_range("council.threshold", self.threshold, 1, n, "1..=number of keys")?;
        for (i, k) in self.keys.iter().chain(&self.guardian).enumerate() {
            if i < self.keys.len() && self.keys[..i].contains(k) {
                return Err(ParamError::Inconsistent(format!("council key {k} is listed twice")));
            }
            if ed25519_dalek::VerifyingKey::from_bytes(&k.0).is_err() {
                return Err(ParamError::Inconsistent(format!("{k} is not a valid ed25519 public key")));
            }
        }
        let t = self.timelocks;
        check_range("timelocks.rotation_ms", t.rotation_ms, 0, MAX_TIMELOCK_MS, "0..=2592000000 (30 days)")?;
        check_range("timelocks.loosen_ms", t.loosen_ms, 0, t.rotation_ms, "0..=rotation_ms")?;
        check_range("timelocks.tighten_ms", t.tighten_ms, 0, t.loosen_ms, "0..=loosen_ms")?;
        Ok(())
    }

    /// The timelock of a change of `kind`.
    pub fn timelock(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Tighten => self.timelocks.tighten_ms,
            Kind::Loosen => self.timelocks.loosen_ms,
            Kind::Rotation => self.timelocks.rotation_ms,
        }
    }
}

/// A parameter change: what a proposal carries and what the guardian may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Replace every parameter of a market (re-validated with `MarketParams::validate`).
    SetMarketParams { market: String, params: Box<MarketParams> },
    /// The manual status: `active`, `reduce_only` or `halted`.
    SetMarketStatus { market: String, status: Status },
    /// Multiplier of the initial requirement, 1..=10.
    SetMarginMultiplier { market: String, multiplier: Ratio },
    /// Replace every parameter of a collateral asset (re-validated).
    SetAssetParams { asset: String, params: AssetParams },
    /// Withdrawal limits (`null`: none, `withdraw` becomes immediate again).
    SetWithdrawalParams { params: Option<WithdrawalParams> },
    /// Close the withdrawal gate until `until_ts` (or reopen it earlier).
    GateWithdrawals { until_ts: u64 },
    /// Replace the payout caps of an insurance fund (re-validated).
    SetInsuranceFund { fund: String, params: FundParams },
    /// Name the backstop vault and its loss cap (as `set_backstop`).
    SetBackstop { account: String, loss_cap: Quote },
    /// Replace the council, its threshold, the guardian and the timelocks.
    SetCouncil { council: Council },
}

impl Change {
    /// The `type` name of the change.
    pub fn name(&self) -> &'static str {
        match self {
            Change::SetMarketParams { .. } => "set_market_params",
            Change::SetMarketStatus { .. } => "set_market_status",
            Change::SetMarginMultiplier { .. } => "set_margin_multiplier",
            Change::SetAssetParams { .. } => "set_asset_params",
            Change::SetWithdrawalParams { .. } => "set_withdrawal_params",
            Change::GateWithdrawals { .. } => "gate_withdrawals",
            Change::SetInsuranceFund { .. } => "set_insurance_fund",
            Change::SetBackstop { .. } => "set_backstop",
            Change::SetCouncil { .. } => "set_council",
        }
    }

    /// The bounds of the change itself (those that do not depend on the engine's state).
    pub fn validate(&self) -> Result<(), ParamError> {
        match self {
            Change::SetMarketParams { params, .. } => params.validate().map(|_| ()),
            Change::SetMarketStatus { status, .. } if *status == Status::Settlement => {
                Err(ParamError::Inconsistent("status \"settlement\" is set by settle_market only".into()))
            }
            Change::SetMarketStatus { .. } | Change::GateWithdrawals { .. } => Ok(()),
            Change::SetMarginMultiplier { multiplier, .. } => {
                crate::breaker::check_multiplier("multiplier", *multiplier)
            }
            Change::SetAssetParams { params, .. } => params.validate(),
            Change::SetWithdrawalParams { params } => params.as_ref().map_or(Ok(()), WithdrawalParams::validate),
            Change::SetInsuranceFund { params, .. } => params.validate(),
            Change::SetBackstop { loss_cap, .. } => {
                check_range("loss_cap", *loss_cap, Quote::ZERO, Quote::from_raw(i128::MAX), "loss_cap ≥ 0")
            }
            Change::SetCouncil { council } => council.validate(),
        }
    }

    /// Whether the guardian may make this kind of change at all (if it also tightens).
    pub fn guardian_may(&self) -> bool {
        matches!(
            self,
            Change::SetMarketStatus { .. } | Change::SetMarginMultiplier { .. } | Change::GateWithdrawals { .. }
        )
    }
}

/// How a change moves risk, which picks its timelock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Tighten,
    Loosen,
    Rotation,
}

/// What a signature authorizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedAction {
    Approve,
    Cancel,
    Guardian,
}

impl SignedAction {
    pub fn name(self) -> &'static str {
        match self {
            SignedAction::Approve => "approve",
            SignedAction::Cancel => "cancel",
            SignedAction::Guardian => "guardian",
        }
    }
}

/// The canonical bytes a key signs (see the module documentation).
pub fn signing_bytes(action: SignedAction, nonce: u64, change: &Change) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(DOMAIN);
    out.push(0);
    out.extend_from_slice(action.name().as_bytes());
    out.push(0);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.push(0);
    out.extend(serde_json::to_vec(change).expect("a change serializes"));
    out
}

/// Whether `signature` is `key`'s ed25519 signature of `message` (strict verification: no
/// malleable or small-order forms).
pub fn verify(key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&key.0) else { return false };
    vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature.0)).is_ok()
}

/// One open proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub nonce: u64,
    pub change: Change,
    pub proposed_ts: u64,
    /// Indices of the council keys that approved, sorted.
    pub approvals: Vec<u32>,
    /// When the threshold was reached (the timelock runs from here).
    pub queued_ts: Option<u64>,
}

/// The governance state: the council (None until `init_governance`), the last nonce used and
/// the open proposals in nonce order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    pub council: Option<Council>,
    pub last_nonce: u64,
    pub proposals: Vec<Proposal>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::r;

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let k = PublicKey::parse(&"0a".repeat(32)).unwrap();
        assert_eq!(k.to_string(), "0a".repeat(32));
        assert!(PublicKey::parse("0a").is_err());
        assert!(PublicKey::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn canonical_bytes_do_not_depend_on_how_the_change_was_typed() {
        let a: Change =
            serde_json::from_str(r#"{"type":"set_margin_multiplier","market":"M","multiplier":"1.50"}"#).unwrap();
        let b: Change =
            serde_json::from_str(r#"{"multiplier":"1.5","market":"M","type":"set_margin_multiplier"}"#).unwrap();
        assert_eq!(signing_bytes(SignedAction::Approve, 7, &a), signing_bytes(SignedAction::Approve, 7, &b));
        assert_ne!(signing_bytes(SignedAction::Approve, 7, &a), signing_bytes(SignedAction::Cancel, 7, &a));
        assert_ne!(signing_bytes(SignedAction::Approve, 7, &a), signing_bytes(SignedAction::Approve, 8, &a));
        let bytes = signing_bytes(SignedAction::Approve, 1, &a);
        assert!(bytes.starts_with(b"ballast-governance-v1\0approve\0\0\0\0\0\0\0\0\x01\0{\"type\""));
    }

    #[test]
    fn bounds_of_changes() {
        let c = Change::SetMarginMultiplier { market: "M".into(), multiplier: r("10.00000001") };
        assert!(c.validate().unwrap_err().to_string().contains("multiplier"));
        let c = Change::SetMarketStatus { market: "M".into(), status: Status::Settlement };
        assert!(c.validate().is_err());
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        let bad_key =
            Council { keys: vec![Hex(not_a_point)], threshold: 1, guardian: None, timelocks: Timelocks::default() };
        assert!(bad_key.validate().unwrap_err().to_string().contains("not a valid ed25519 public key"));
        assert!(serde_json::from_str::<Change>(r#"{"type":"gate_withdrawals","until_ts":1,"extra":2}"#).is_err());
    }
}
