//! Governance scenarios: a change end to end, the timelocks, the guardian, council rotation,
//! and every bad or hostile input (each refused by `Story::rejects`, which checks that the
//! state hash did not move).

use crate::breaker::Status;
use crate::error::Reject;
use crate::event::Event;
use crate::governance::{signing_bytes, Change, Hex, Kind, SignedAction};
use crate::testkit::{r, Story};
use ed25519_dalek::{Signer, SigningKey};

const M: &str = "BTC-PERP";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn pk(seed: u8) -> String {
    Hex(key(seed).verifying_key().to_bytes()).to_string()
}

/// `seed`'s signature of `change` (JSON) as proposal or action `nonce`.
fn sign(seed: u8, action: SignedAction, nonce: u64, change: &str) -> String {
    let change: Change = serde_json::from_str(change).unwrap();
    Hex(key(seed).sign(&signing_bytes(action, nonce, &change)).to_bytes()).to_string()
}

fn approve(ts: u64, nonce: u64, seed: u8, change: &str) -> String {
    let sig = sign(seed, SignedAction::Approve, nonce, change);
    format!(r#"{{"ts":{ts},"cmd":"approve","nonce":{nonce},"key":"{}","signature":"{sig}"}}"#, pk(seed))
}

fn propose(ts: u64, nonce: u64, change: &str) -> String {
    format!(r#"{{"ts":{ts},"cmd":"propose","nonce":{nonce},"change":{change}}}"#)
}

fn execute(ts: u64, nonce: u64) -> String {
    format!(r#"{{"ts":{ts},"cmd":"execute","nonce":{nonce}}}"#)
}

fn guardian(ts: u64, nonce: u64, seed: u8, change: &str) -> String {
    let sig = sign(seed, SignedAction::Guardian, nonce, change);
    format!(r#"{{"ts":{ts},"cmd":"guardian","nonce":{nonce},"change":{change},"signature":"{sig}"}}"#)
}

const DOUBLE_MARGIN: &str = r#"{"type":"set_margin_multiplier","market":"BTC-PERP","multiplier":"2"}"#;
const LOWER_MARGIN: &str = r#"{"type":"set_market_params","market":"BTC-PERP","params":{"initial_margin":"0.05","maintenance_margin":"0.025"}}"#;

/// A market at 100 and a council of keys 1, 2, 3 (2 of 3), guardian 9; timelocks 1 s to
/// tighten, 10 s to loosen, 100 s to rotate.
fn story() -> Story {
    let mut s = Story::with_market(M, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.ok(&format!(
        r#"{{"ts":0,"cmd":"init_governance","council":{{"keys":["{}","{}","{}"],"threshold":2,"guardian":"{}","timelocks":{{"tighten_ms":1000,"loosen_ms":10000,"rotation_ms":100000}}}}}}"#,
        pk(1),
        pk(2),
        pk(3),
        pk(9)
    ));
    s
}

fn multiplier(s: &Story) -> String {
    s.engine.market(M).unwrap().breaker.margin_multiplier.to_string()
}

#[test]
fn a_tightening_change_needs_two_approvals_and_the_short_timelock() {
    let mut s = story();
    let events = s.ok(&propose(10, 1, DOUBLE_MARGIN));
    assert!(matches!(&events[0], Event::ProposalCreated { nonce: 1, kind: Kind::Tighten, .. }));
    s.ok(&approve(20, 1, 1, DOUBLE_MARGIN));
    let e = s.rejects(&execute(5000, 1));
    assert!(matches!(e, Reject::NotEnoughApprovals { have: 1, need: 2, .. }), "fewer than M: {e}");
    let events = s.ok(&approve(30, 1, 3, DOUBLE_MARGIN));
    assert!(matches!(events[1], Event::ProposalQueued { nonce: 1, eta: 1030 }), "{events:?}");
    let e = s.rejects(&execute(1029, 1));
    assert!(matches!(e, Reject::Timelocked { eta: 1030, .. }), "{e}");
    s.ok(&execute(1030, 1));
    assert_eq!(multiplier(&s), "2");
    let e = s.rejects(&approve(1031, 1, 2, DOUBLE_MARGIN));
    assert!(matches!(e, Reject::UnknownProposal(1)), "a replayed approval of an executed proposal: {e}");
}

#[test]
fn a_loosening_change_waits_the_long_timelock_and_is_revalidated() {
    let mut s = story();
    let events = s.ok(&propose(0, 1, LOWER_MARGIN));
    assert!(matches!(&events[0], Event::ProposalCreated { kind: Kind::Loosen, .. }));
    s.ok(&approve(0, 1, 1, LOWER_MARGIN));
    s.ok(&approve(0, 1, 2, LOWER_MARGIN));
    s.rejects(&execute(9999, 1));
    s.ok(&execute(10000, 1));
    assert_eq!(s.engine.market(M).unwrap().params.initial_margin, r("0.05"));
}

/// A parameter set that lists other oracle sources retires the prices of the old ones: the
/// market's only fresh source (s1) no longer counts, so its oracle is stale until a listed
/// source publishes.
#[test]
fn new_oracle_sources_retire_the_prices_of_the_old_ones() {
    let mut s = story();
    let only_s2 = r#"{"type":"set_market_params","market":"BTC-PERP","params":{"initial_margin":"0.1","maintenance_margin":"0.05","oracle":{"sources":[{"id":"s2"}]}}}"#;
    s.ok(&propose(0, 1, only_s2));
    s.ok(&approve(0, 1, 1, only_s2));
    s.ok(&approve(0, 1, 2, only_s2));
    let events = s.ok(&execute(10_000, 1));
    let stale = |e: &Event| matches!(e, Event::OracleValidityChanged { to: crate::oracle::Validity::Stale, .. });
    assert!(events.iter().any(stale), "s1 was fresh (10 s old) but is no longer listed: {events:?}");
    let events = s.ok(r#"{"ts":10001,"cmd":"oracle","market":"BTC-PERP","source":"s2","price":"100"}"#);
    let valid = |e: &Event| matches!(e, Event::OracleValidityChanged { to: crate::oracle::Validity::Valid, .. });
    assert!(events.iter().any(valid), "{events:?}");
}

#[test]
fn out_of_bounds_parameters_and_stale_nonces_are_refused() {
    let mut s = story();
    let bad = r#"{"type":"set_market_params","market":"BTC-PERP","params":{"initial_margin":"0.01","maintenance_margin":"0.05"}}"#;
    let e = s.rejects(&propose(0, 1, bad));
    assert!(matches!(e, Reject::Params(_)), "{e}");
    let e = s.rejects(&propose(0, 1, r#"{"type":"set_margin_multiplier","market":"BTC-PERP","multiplier":"11"}"#));
    assert!(e.to_string().contains("multiplier"), "{e}");
    let e = s.rejects(&propose(0, 1, r#"{"type":"set_margin_multiplier","market":"NOPE","multiplier":"2"}"#));
    assert!(matches!(e, Reject::UnknownMarket(_)), "{e}");
    s.ok(&propose(0, 5, DOUBLE_MARGIN));
    for nonce in [5, 4] {
        let e = s.rejects(&propose(0, nonce, DOUBLE_MARGIN));
        assert!(matches!(e, Reject::StaleNonce { last: 5, .. }), "{e}");
    }
}

#[test]
fn forged_duplicated_replayed_wrong_key_and_unknown_key_approvals_are_refused() {
    let mut s = story();
    s.ok(&propose(0, 1, DOUBLE_MARGIN));
    s.ok(&propose(0, 2, LOWER_MARGIN));
    // Forged: a well-formed signature nobody made.
    let forged = format!(r#"{{"ts":1,"cmd":"approve","nonce":1,"key":"{}","signature":"{}"}}"#, pk(1), "ab".repeat(64));
    assert!(matches!(s.rejects(&forged), Reject::BadSignature { nonce: 1 }));
    // Replayed: key 1's approval of proposal 2 presented for proposal 1.
    let sig = sign(1, SignedAction::Approve, 2, LOWER_MARGIN);
    let replayed = format!(r#"{{"ts":1,"cmd":"approve","nonce":1,"key":"{}","signature":"{sig}"}}"#, pk(1));
    assert!(matches!(s.rejects(&replayed), Reject::BadSignature { .. }));
    // Wrong key: key 2's signature claimed as key 1's.
    let sig = sign(2, SignedAction::Approve, 1, DOUBLE_MARGIN);
    let wrong = format!(r#"{{"ts":1,"cmd":"approve","nonce":1,"key":"{}","signature":"{sig}"}}"#, pk(1));
    assert!(matches!(s.rejects(&wrong), Reject::BadSignature { .. }));
    // A signature made for cancelling is not an approval.
    let sig = sign(1, SignedAction::Cancel, 1, DOUBLE_MARGIN);
    let cancel_sig = format!(r#"{{"ts":1,"cmd":"approve","nonce":1,"key":"{}","signature":"{sig}"}}"#, pk(1));
    assert!(matches!(s.rejects(&cancel_sig), Reject::BadSignature { .. }));
    // Unknown key: a valid signature by a key outside the council.
    assert!(matches!(s.rejects(&approve(1, 1, 5, DOUBLE_MARGIN)), Reject::UnknownKey(_)));
    // Duplicated: the same key twice.
    s.ok(&approve(1, 1, 1, DOUBLE_MARGIN));
    assert!(matches!(s.rejects(&approve(2, 1, 1, DOUBLE_MARGIN)), Reject::DuplicateApproval { .. }));
    assert!(matches!(s.rejects(&execute(5000, 1)), Reject::NotEnoughApprovals { .. }));
    assert!(matches!(s.rejects(&execute(5000, 9)), Reject::UnknownProposal(9)));
}

#[test]
fn a_council_key_can_cancel_a_proposal() {
    let mut s = story();
    s.ok(&propose(0, 1, DOUBLE_MARGIN));
    let line = |seed: u8, signer: u8| {
        let sig = sign(signer, SignedAction::Cancel, 1, DOUBLE_MARGIN);
        format!(r#"{{"ts":1,"cmd":"cancel","nonce":1,"key":"{}","signature":"{sig}"}}"#, pk(seed))
    };
    assert!(matches!(s.rejects(&line(5, 5)), Reject::UnknownKey(_)));
    assert!(matches!(s.rejects(&line(2, 3)), Reject::BadSignature { .. }));
    let events = s.ok(&line(2, 2));
    assert!(matches!(&events[0], Event::ProposalCancelled { nonce: 1, .. }));
    assert!(matches!(s.rejects(&approve(2, 1, 1, DOUBLE_MARGIN)), Reject::UnknownProposal(1)));
}

#[test]
fn the_guardian_tightens_at_once_and_may_never_loosen() {
    let mut s = story();
    s.deposit(0, "bob", "1000");
    s.fill(1, M, "alice", "bob", "1", "100");
    let halt = r#"{"type":"set_market_status","market":"BTC-PERP","status":"halted"}"#;
    let events = s.ok(&guardian(2, 1, 9, halt));
    assert!(events.iter().any(|e| matches!(e, Event::MarketStatusChanged { to: Status::Halted, .. })));
    assert!(matches!(s.rejects(&Story::fill_line(3, M, "alice", "bob", "1", "100")), Reject::MarketStatus { .. }));
    s.fill(3, M, "bob", "alice", "1", "100");
    // Replaying the same guardian command.
    assert!(matches!(s.rejects(&guardian(4, 1, 9, halt)), Reject::StaleNonce { .. }));
    // Raising the multiplier is a tightening.
    s.ok(&guardian(4, 2, 9, DOUBLE_MARGIN));
    assert_eq!(multiplier(&s), "2");
    // Not even a tightening outside the guardian's list (a parameter set).
    let tighter = r#"{"type":"set_market_params","market":"BTC-PERP","params":{"initial_margin":"0.2","maintenance_margin":"0.1"}}"#;
    assert!(matches!(s.rejects(&guardian(5, 3, 9, tighter)), Reject::GuardianMayOnlyTighten(_)));
    // A council key is not the guardian.
    assert!(matches!(
        s.rejects(&guardian(5, 3, 1, r#"{"type":"gate_withdrawals","until_ts":100}"#)),
        Reject::BadSignature { .. }
    ));
    let events = s.ok(&guardian(5, 3, 9, r#"{"type":"gate_withdrawals","until_ts":100}"#));
    assert!(matches!(&events[0], Event::WithdrawalsGated { until: 100, .. }));
    let e = s.rejects(r#"{"ts":6,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"1"}"#);
    assert!(matches!(e, Reject::WithdrawalsGated { .. }), "{e}");
}

#[test]
fn the_guardian_is_refused_each_loosening() {
    let mut s = story();
    s.ok(&guardian(1, 1, 9, r#"{"type":"set_market_status","market":"BTC-PERP","status":"halted"}"#));
    s.ok(&guardian(1, 2, 9, DOUBLE_MARGIN));
    s.ok(&guardian(1, 3, 9, r#"{"type":"gate_withdrawals","until_ts":100}"#));
    for loosen in [
        r#"{"type":"set_market_status","market":"BTC-PERP","status":"active"}"#,
        r#"{"type":"set_margin_multiplier","market":"BTC-PERP","multiplier":"1.5"}"#,
        r#"{"type":"gate_withdrawals","until_ts":50}"#,
        r#"{"type":"set_withdrawal_params","params":null}"#,
        LOWER_MARGIN,
    ] {
        let e = s.rejects(&guardian(2, 4, 9, loosen));
        assert!(matches!(e, Reject::GuardianMayOnlyTighten(_)), "{loosen}: {e}");
    }
}

#[test]
fn council_rotation_waits_the_longest_timelock_and_retires_the_old_keys() {
    let mut s = story();
    let rotate = format!(
        r#"{{"type":"set_council","council":{{"keys":["{}","{}"],"threshold":2,"timelocks":{{"tighten_ms":1000,"loosen_ms":10000,"rotation_ms":100000}}}}}}"#,
        pk(4),
        pk(5)
    );
    assert!(matches!(&s.ok(&propose(0, 1, &rotate))[0], Event::ProposalCreated { kind: Kind::Rotation, .. }));
    s.ok(&propose(0, 2, DOUBLE_MARGIN));
    s.ok(&approve(0, 1, 1, &rotate));
    s.ok(&approve(0, 1, 2, &rotate));
    s.rejects(&execute(99_999, 1));
    let events = s.ok(&execute(100_000, 1));
    assert!(events.iter().any(|e| matches!(e, Event::ProposalCancelled { nonce: 2, .. })), "{events:?}");
    s.ok(&propose(100_000, 3, DOUBLE_MARGIN));
    assert!(matches!(s.rejects(&approve(100_000, 3, 1, DOUBLE_MARGIN)), Reject::UnknownKey(_)));
    s.ok(&approve(100_000, 3, 4, DOUBLE_MARGIN));
    // The new council has no guardian.
    assert!(matches!(s.rejects(&guardian(100_000, 4, 9, DOUBLE_MARGIN)), Reject::UnknownKey(_)));
}

#[test]
fn once_installed_parameters_change_only_through_governance() {
    let mut s = story();
    let e = s.rejects(r#"{"ts":0,"cmd":"configure_withdrawals","base_delay_ms":0,"pool_delay_ms":0,"max_delay_ms":0,"outflow_share":"0.1","outflow_window_ms":1000}"#);
    assert!(matches!(e, Reject::Governed(_)), "{e}");
    let again = format!(r#"{{"ts":0,"cmd":"init_governance","council":{{"keys":["{}"],"threshold":1}}}}"#, pk(1));
    assert!(matches!(s.rejects(&again), Reject::GovernanceAlreadyInstalled));
    let change = r#"{"type":"set_withdrawal_params","params":{"base_delay_ms":0,"pool_delay_ms":0,"max_delay_ms":0,"outflow_share":"0.1","outflow_window_ms":1000}}"#;
    assert!(matches!(&s.ok(&propose(0, 1, change))[0], Event::ProposalCreated { kind: Kind::Tighten, .. }));
    let mut s = Story::new();
    assert!(matches!(s.rejects(&propose(0, 1, DOUBLE_MARGIN)), Reject::GovernanceNotInstalled));
    let bad =
        format!(r#"{{"ts":0,"cmd":"init_governance","council":{{"keys":["{}","{}"],"threshold":3}}}}"#, pk(1), pk(2));
    assert!(matches!(s.rejects(&bad), Reject::Params(_)));
    let dup =
        format!(r#"{{"ts":0,"cmd":"init_governance","council":{{"keys":["{}","{}"],"threshold":1}}}}"#, pk(1), pk(1));
    assert!(matches!(s.rejects(&dup), Reject::Params(_)));
}

/// Insurance caps and the backstop vault are governed too: the direct commands are refused
/// once a council is installed, and a change to them waits the long timelock.
#[test]
fn insurance_caps_and_the_backstop_change_only_through_the_council() {
    let mut s = story();
    let e = s.rejects(r#"{"ts":0,"cmd":"create_insurance_fund","fund":"alts"}"#);
    assert!(matches!(e, Reject::Governed("create_insurance_fund")), "{e}");
    let e = s.rejects(r#"{"ts":0,"cmd":"set_backstop","account":"alice","loss_cap":"100"}"#);
    assert!(matches!(e, Reject::Governed("set_backstop")), "{e}");
    let caps =
        r#"{"type":"set_insurance_fund","fund":"global","params":{"max_payout_per_event":"500","window_ms":1000}}"#;
    assert!(matches!(&s.ok(&propose(0, 1, caps))[0], Event::ProposalCreated { kind: Kind::Loosen, .. }));
    s.ok(&approve(0, 1, 1, caps));
    s.ok(&approve(0, 1, 2, caps));
    s.rejects(&execute(9999, 1));
    s.ok(&execute(10000, 1));
    let global = &s.engine.insurance_funds()[0];
    assert_eq!(global.params.max_payout_per_event, Some(crate::testkit::q("500")));
    let vault = r#"{"type":"set_backstop","account":"alice","loss_cap":"100"}"#;
    s.ok(&propose(10000, 2, vault));
    s.ok(&approve(10000, 2, 1, vault));
    s.ok(&approve(10000, 2, 3, vault));
    s.ok(&execute(20000, 2));
    assert_eq!(s.engine.backstop().map(|b| b.loss_cap), Some(crate::testkit::q("100")));
    let bad = r#"{"type":"set_insurance_fund","fund":"global","params":{"max_payout_per_event":"0"}}"#;
    assert!(matches!(s.rejects(&propose(20000, 3, bad)), Reject::Params(_)));
}
