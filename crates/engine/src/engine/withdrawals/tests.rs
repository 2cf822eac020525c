//! Scenario tests of delayed withdrawals: reservation, delay, execution, the limiter, the gate,
//! cancellation, and every refusal (with `Story::rejects` checking nothing changed).

use crate::error::Reject;
use crate::event::Event;
use crate::testkit::{q, Story};

const M: &str = "BTC-PERP";
/// 1 s base delay, +100 s for the whole pool (capped at 50 s); 10% of the pool per hour.
const LIMITS: &str = r#"{"ts":0,"cmd":"configure_withdrawals","base_delay_ms":1000,"pool_delay_ms":100000,"max_delay_ms":50000,"outflow_share":"0.1","outflow_window_ms":3600000}"#;

/// A market at 100, limits configured, a pool of 10,000: alice 1,000, bob 9,000.
fn story() -> Story {
    let mut s = Story::with_market(M, "0.1", "0.05", "100");
    s.ok(LIMITS);
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "9000");
    s
}

fn request(ts: u64, account: &str, amount: &str) -> String {
    format!(r#"{{"ts":{ts},"cmd":"request_withdrawal","account":"{account}","amount":"{amount}"}}"#)
}

fn executed(events: &[Event]) -> Vec<u64> {
    events.iter().filter_map(|e| if let Event::WithdrawalExecuted { id, .. } = e { Some(*id) } else { None }).collect()
}

#[test]
fn a_request_reserves_the_amount_and_executes_after_its_delay() {
    let mut s = story();
    let events = s.ok(&request(10, "alice", "100"));
    // 100 of a 10,000 pool: 1 s + 1% of 100 s.
    assert!(matches!(&events[0], Event::WithdrawalRequested { id: 0, unlock_ts: 2010, .. }), "{events:?}");
    assert_eq!(s.cross_health("alice").equity, q("900"), "reserved: no longer backs anything");
    let e = s.rejects(&request(10, "alice", "900.000001"));
    assert!(matches!(e, Reject::InsufficientBalance { .. }), "the reserved amount cannot be requested twice: {e}");
    assert!(s.ok(r#"{"ts":2009,"cmd":"tick"}"#).is_empty());
    let events = s.ok(r#"{"ts":2010,"cmd":"tick"}"#);
    assert_eq!(executed(&events), [0]);
    assert_eq!(s.engine.totals().withdrawals, q("100"));
    assert_eq!(s.view().withdrawals.reserved, q("0"));
}

#[test]
fn reserved_amounts_do_not_count_as_margin() {
    let mut s = story();
    s.ok(&request(1, "alice", "900"));
    // 100 left: a 10-unit position (initial 100) still fits, 11 units do not.
    let e = s.rejects(&Story::fill_line(2, M, "alice", "bob", "11", "100"));
    assert!(matches!(e, Reject::InsufficientMargin { .. }), "{e}");
    s.fill(2, M, "alice", "bob", "10", "100");
}

#[test]
fn a_withdrawal_that_would_breach_margin_is_refused() {
    let mut s = story();
    s.fill(1, M, "alice", "bob", "50", "100");
    let e = s.rejects(&request(2, "alice", "500.000001"));
    assert!(matches!(e, Reject::InsufficientMargin { .. }), "{e}");
    s.ok(&request(2, "alice", "500"));
}

#[test]
fn conservative_prices_value_a_long_at_the_lower_twap() {
    let mut s = story();
    s.fill(1, M, "alice", "bob", "50", "100");
    // The oracle jumps to 110 one minute in: the 5-minute TWAP is 102, the mark 110.
    s.price(60_000, M, "110");
    assert_eq!(s.view().markets[M].twap.unwrap().to_string(), "102");
    // At the mark, 950 could go (equity 1,500, initial 550); at the TWAP the long is worth 400
    // less, so only 550.
    let e = s.rejects(&request(60_000, "alice", "550.000001"));
    assert!(e.to_string().contains("at conservative prices"), "{e}");
    s.ok(&request(60_000, "alice", "550"));
}

#[test]
fn an_unlocked_withdrawal_that_no_longer_fits_the_margin_is_cancelled_and_refunded() {
    let mut s = story();
    s.fill(1, M, "alice", "bob", "50", "100");
    s.ok(&request(2, "alice", "400"));
    // During the delay the price falls: without the 400 alice would be below initial.
    s.price(100, M, "95");
    let events = s.ok(r#"{"ts":60000,"cmd":"tick"}"#);
    assert!(
        matches!(&events[..], [Event::WithdrawalCancelled { id: 0, reason, .. }] if reason == "margin"),
        "{events:?}"
    );
    assert_eq!(s.view().accounts["alice"].balances["USDC"].to_string(), "1000");
}

#[test]
fn the_limiter_lets_a_share_of_the_pool_out_per_window_and_refuses_more_than_a_window() {
    let mut s = story();
    let e = s.rejects(&request(1, "bob", "1000.000001"));
    assert!(matches!(e, Reject::OutflowLimit { .. }), "{e}");
    // A bank run: 600 + 300 + 200 + 50 requested; the limit is 1,000 an hour.
    for (account, amount) in [("bob", "600"), ("bob", "300"), ("alice", "200"), ("alice", "50")] {
        s.ok(&request(1, account, amount));
    }
    let events = s.ok(r#"{"ts":60000,"cmd":"tick"}"#);
    assert_eq!(executed(&events), [0, 1, 3], "the 200 does not fit the 100 left; the 50 does");
    assert_eq!(s.view().withdrawals.outflow_room, Some(q("50")));
    assert!(executed(&s.ok(r#"{"ts":3600000,"cmd":"tick"}"#)).is_empty(), "the first outflows are still in the window");
    assert_eq!(executed(&s.ok(r#"{"ts":3660000,"cmd":"tick"}"#)), [2]);
}

#[test]
fn a_request_can_be_cancelled_only_by_its_account() {
    let mut s = story();
    s.ok(&request(1, "alice", "300"));
    let e = s.rejects(r#"{"ts":2,"cmd":"cancel_withdrawal","account":"bob","id":0}"#);
    assert!(matches!(e, Reject::UnknownWithdrawal { .. }), "{e}");
    let e = s.rejects(r#"{"ts":2,"cmd":"cancel_withdrawal","account":"alice","id":7}"#);
    assert!(matches!(e, Reject::UnknownWithdrawal { .. }), "{e}");
    let events = s.ok(r#"{"ts":2,"cmd":"cancel_withdrawal","account":"alice","id":0}"#);
    assert!(matches!(&events[0], Event::WithdrawalCancelled { reason, .. } if reason == "requested"));
    assert_eq!(s.cross_health("alice").equity, q("1000"));
    s.rejects(r#"{"ts":3,"cmd":"cancel_withdrawal","account":"alice","id":0}"#);
}

#[test]
fn the_gate_holds_requests_executions_and_immediate_withdrawals() {
    let mut s = story();
    s.ok(&request(1, "alice", "100"));
    let mut events = Vec::new();
    s.engine.gate_withdrawals(50_000, "bad debt", &mut events);
    assert!(matches!(&events[0], Event::WithdrawalsGated { until: 50000, .. }));
    let e = s.rejects(&request(2, "alice", "100"));
    assert!(matches!(e, Reject::WithdrawalsGated { until: 50000, .. }), "{e}");
    assert!(executed(&s.ok(r#"{"ts":49999,"cmd":"tick"}"#)).is_empty(), "unlocked but gated");
    assert_eq!(executed(&s.ok(r#"{"ts":50000,"cmd":"tick"}"#)), [0]);
    // Without limits the immediate path is gated too.
    let mut s = Story::with_market(M, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.engine.gate_withdrawals(10, "bad debt", &mut events);
    let e = s.rejects(r#"{"ts":5,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"1"}"#);
    assert!(matches!(e, Reject::WithdrawalsGated { .. }), "{e}");
    s.ok(r#"{"ts":10,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"1"}"#);
}

#[test]
fn usdc_leaves_only_through_requests_once_limits_are_configured() {
    let mut s = story();
    let e = s.rejects(r#"{"ts":1,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"1"}"#);
    assert!(matches!(e, Reject::UseRequestWithdrawal), "{e}");
    let mut s = Story::with_market(M, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    let e = s.rejects(&request(1, "alice", "1"));
    assert!(matches!(e, Reject::WithdrawalsNotConfigured), "{e}");
    let e = s.rejects(r#"{"ts":1,"cmd":"configure_withdrawals","base_delay_ms":1000,"pool_delay_ms":0,"max_delay_ms":10,"outflow_share":"0.1","outflow_window_ms":1}"#);
    assert!(e.to_string().contains("base_delay_ms"), "{e}");
}

#[test]
fn isolated_margin_can_be_requested_and_the_emptied_bucket_is_removed() {
    let mut s = story();
    s.deposit_isolated(1, "carol", "500", M);
    s.ok(r#"{"ts":2,"cmd":"request_withdrawal","account":"carol","amount":"500","isolated":"BTC-PERP"}"#);
    s.ok(r#"{"ts":60000,"cmd":"tick"}"#);
    assert!(s.engine.account("carol").unwrap().isolated.is_empty());
}
