//! Scenario tests of the circuit breakers: each trigger, recovery, and every exemption.

use crate::breaker::{Status, Trigger};
use crate::error::Reject;
use crate::event::Event;
use crate::testkit::{q, Story};

const M: &str = "BTC-PERP";

/// A market at 100 with the given `breakers` object (oracle `max_age_ms` 10 s), and two funded
/// traders with a 10-unit position between them (alice long, bob short).
fn story(breakers: &str) -> Story {
    let mut s = Story::new();
    s.ok(&format!(
        r#"{{"ts":0,"cmd":"create_market","market":"{M}","initial_margin":"0.1","maintenance_margin":"0.05","oracle":{{"max_age_ms":10000}},"breakers":{breakers}}}"#
    ));
    s.price(0, M, "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "1000");
    s.fill(1, M, "alice", "bob", "10", "100");
    s
}

fn tripped(events: &[Event]) -> Vec<(Trigger, Status)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::BreakerTripped { trigger, level, .. } => Some((*trigger, *level)),
            _ => None,
        })
        .collect()
}

fn status_changes(events: &[Event]) -> Vec<Status> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MarketStatusChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

fn status(s: &Story) -> Status {
    s.engine.market(M).unwrap().breaker.status
}

#[test]
fn a_price_crash_halts_the_market_and_it_recovers_after_the_cooldown() {
    let mut s = story(r#"{"price_move":{"max_move":"0.1","window_ms":60000},"cooldown_ms":30000}"#);
    let events = s.ok(r#"{"ts":2000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"85"}"#);
    assert_eq!(tripped(&events), [(Trigger::PriceMove, Status::Halted)]);
    assert_eq!(status_changes(&events), [Status::Halted]);
    assert!(
        matches!(&events[1], Event::BreakerTripped { value, limit, until: 32000, .. } if value == "0.15" && limit == "0.1")
    );
    // Halted: new risk is refused on either side, risk reduction goes through.
    let e = s.rejects(&Story::fill_line(3000, M, "alice", "bob", "1", "85"));
    assert!(matches!(e, Reject::MarketStatus { status: Status::Halted, .. }), "{e}");
    s.fill(3000, M, "bob", "alice", "2", "85");
    // Top-ups and withdrawals that keep the account healthy are not breaker business.
    s.deposit(4000, "alice", "100");
    s.ok(r#"{"ts":4000,"cmd":"withdraw","account":"bob","asset":"USDC","amount":"100"}"#);
    // Still halted just before the cooldown ends, recovered at its end.
    s.rejects(&Story::fill_line(31999, M, "alice", "bob", "1", "85"));
    s.price(31999, M, "85");
    let events = s.ok(r#"{"ts":32000,"cmd":"tick"}"#);
    assert!(matches!(&events[0], Event::BreakerCleared { trigger: Trigger::PriceMove, .. }));
    assert_eq!(status_changes(&events), [Status::Active]);
    s.fill(32001, M, "alice", "bob", "1", "85");
}

#[test]
fn the_oracle_breaker_holds_reduce_only_and_a_grace_period_before_liquidations() {
    let mut s = story(r#"{"oracle":{"grace_ms":20000},"cooldown_ms":0,"price_band":"0.05"}"#);
    assert!(s.engine.liquidation_allowed(M, 1).unwrap());
    // No price for more than max_age_ms: stale.
    let events = s.ok(r#"{"ts":15000,"cmd":"tick"}"#);
    assert_eq!(tripped(&events), [(Trigger::Oracle, Status::ReduceOnly)]);
    assert_eq!(status(&s), Status::ReduceOnly);
    // Mango's lesson: with a stale oracle an account can still cut risk, even at a price the
    // stale reference would call out of band.
    s.fill(16000, M, "bob", "alice", "4", "120");
    let e = s.rejects(&Story::fill_line(16000, M, "alice", "bob", "1", "100"));
    assert!(matches!(e, Reject::MarketStatus { .. } | Reject::OracleNotValidFor { .. }), "{e}");
    // The feed comes back: the market reopens at once (cooldown 0), liquidations wait 20 s.
    let events = s.ok(r#"{"ts":40000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"101"}"#);
    assert_eq!(status_changes(&events), [Status::Active]);
    assert!(!s.engine.liquidation_allowed(M, 40000).unwrap());
    assert!(!s.engine.liquidation_allowed(M, 59999).unwrap());
    assert!(s.engine.liquidation_allowed(M, 60000).unwrap());
}

#[test]
fn the_price_band_refuses_fat_fingers_against_a_valid_oracle() {
    let mut s = story(r#"{"price_band":"0.05"}"#);
    let e = s.rejects(&Story::fill_line(2, M, "alice", "bob", "1", "106"));
    assert!(matches!(e, Reject::PriceOutsideBand { .. }), "{e}");
    // Even a risk-reducing fill: the reference is trustworthy, the price is a mistake.
    let e = s.rejects(&Story::fill_line(2, M, "bob", "alice", "1", "94"));
    assert!(matches!(e, Reject::PriceOutsideBand { .. }), "{e}");
    s.fill(2, M, "alice", "bob", "1", "105");
    s.fill(2, M, "bob", "alice", "1", "95");
}

#[test]
fn the_insurance_floor_turns_the_market_reduce_only_with_a_margin_multiplier() {
    let mut s = story(r#"{"insurance_floor":{"floor":"1000","margin_multiplier":"2"},"cooldown_ms":5000}"#);
    assert_eq!(s.position("alice", M).initial_requirement, q("100"));
    let before = s.engine.state_hash();
    let mut events = Vec::new();
    s.engine.observe_insurance_balance(M, q("1000"), 2, &mut events).unwrap();
    assert!(events.is_empty(), "at the floor is not below it");
    assert_eq!(s.engine.state_hash(), before);
    s.engine.observe_insurance_balance(M, q("999.99"), 2, &mut events).unwrap();
    assert_eq!(tripped(&events), [(Trigger::InsuranceFloor, Status::ReduceOnly)]);
    assert_eq!(s.position("alice", M).initial_requirement, q("200"), "initial margin doubled");
    assert_eq!(s.position("alice", M).maintenance_requirement, q("50"), "maintenance untouched: nobody is liquidated");
    // Held while the fund stays low, then cleared a cooldown after it is back above the floor.
    s.price(10000, M, "100");
    assert_eq!(status(&s), Status::ReduceOnly);
    events.clear();
    s.engine.observe_insurance_balance(M, q("5000"), 10000, &mut events).unwrap();
    s.ok(r#"{"ts":14999,"cmd":"tick"}"#);
    assert_eq!(status(&s), Status::ReduceOnly);
    let events = s.ok(r#"{"ts":15000,"cmd":"tick"}"#);
    assert_eq!(status_changes(&events), [Status::Active]);
    assert_eq!(s.position("alice", M).initial_requirement, q("100"));
}

#[test]
fn open_interest_is_capped_and_reaching_the_cap_trips_reduce_only() {
    let mut s = story(r#"{"open_interest_cap":"15","cooldown_ms":0}"#);
    let e = s.rejects(&Story::fill_line(2, M, "alice", "bob", "6", "100"));
    assert!(matches!(e, Reject::OpenInterestCap { .. }), "{e}");
    let events = s.fill(2, M, "alice", "bob", "5", "100");
    assert_eq!(tripped(&events), [(Trigger::OpenInterest, Status::ReduceOnly)]);
    let events = s.fill(3, M, "bob", "alice", "1", "100");
    assert_eq!(status_changes(&events), [Status::Active], "below the cap again");
}

#[test]
fn liquidation_volume_over_the_window_halts_and_paces_liquidations() {
    let mut s = story(r#"{"liquidation_volume":{"max_notional":"10000","window_ms":60000},"cooldown_ms":30000}"#);
    let mut events = Vec::new();
    s.engine.record_liquidation(M, q("6000"), 5, &mut events).unwrap();
    assert!(events.is_empty());
    s.engine.record_liquidation(M, q("4000.000001"), 6, &mut events).unwrap();
    assert_eq!(tripped(&events), [(Trigger::LiquidationVolume, Status::Halted)]);
    assert_eq!(status_changes(&events), [Status::Halted]);
    assert!(!s.engine.liquidation_allowed(M, 30005).unwrap());
    assert!(s.engine.liquidation_allowed(M, 30006).unwrap());
    s.ok(r#"{"ts":30006,"cmd":"tick"}"#);
    assert_eq!(status(&s), Status::Active);
}

#[test]
fn settlement_closes_every_position_at_the_final_price_even_outside_the_band() {
    let mut s = story(r#"{"price_band":"0.05","price_move":{"max_move":"0.1","window_ms":60000}}"#);
    s.deposit_isolated(1, "carol", "500", M);
    s.fill(2, M, "carol", "bob", "0.3", "100");
    s.ok(r#"{"ts":3,"cmd":"funding","market":"BTC-PERP","rate":"0.001"}"#);
    // Drift's lesson: a crash has halted the market and the final price is far outside the
    // band; settlement goes through anyway.
    s.price(4, M, "50");
    assert_eq!(status(&s), Status::Halted);
    let events = s.ok(r#"{"ts":5,"cmd":"settle_market","market":"BTC-PERP","price":"33.33333333"}"#);
    let settled: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::PositionSettled { account, size, realized_pnl, isolated, .. } => {
                Some((account.to_string(), size.to_string(), realized_pnl.to_string(), *isolated))
            }
            _ => None,
        })
        .collect();
    let expected: [(String, String, String, bool); 3] = [
        ("alice".into(), "10".into(), "-666.666667".into(), false),
        ("bob".into(), "-10.3".into(), "686.666666".into(), false),
        ("carol".into(), "0.3".into(), "-20.000001".into(), true),
    ];
    assert_eq!(settled, expected);
    let rounding = events.iter().find_map(|e| match e {
        Event::MarketSettled { positions: 3, rounding, .. } => Some(*rounding),
        _ => None,
    });
    assert_eq!(rounding, Some(q("0.000002")), "bob pays 343.333334 (rounded up), the longs get 333.333333 + 9.999999");
    assert_eq!(status_changes(&events), [Status::Settlement]);
    let view = s.view();
    assert_eq!(view.markets[M].open_interest.to_string(), "0");
    assert_eq!(
        view.accounts["alice"].balances["USDC"].to_string(),
        "332.333333",
        "1000 − 666.666667 − funding 10 × 0.1"
    );
    // Nothing trades any more, and the market cannot be settled twice; withdrawals work.
    let e = s.rejects(&Story::fill_line(6, M, "alice", "bob", "1", "50"));
    assert!(matches!(e, Reject::MarketSettled(_)), "{e}");
    let e = s.rejects(r#"{"ts":6,"cmd":"settle_market","market":"BTC-PERP","price":"50"}"#);
    assert!(matches!(e, Reject::MarketSettled(_)), "{e}");
    s.ok(r#"{"ts":7,"cmd":"withdraw","account":"carol","asset":"USDC","amount":"479","isolated":"BTC-PERP"}"#);
}

#[test]
fn breaker_parameters_are_validated_at_listing() {
    let mut s = Story::new();
    let e = s.rejects(r#"{"ts":0,"cmd":"create_market","market":"X","initial_margin":"0.1","maintenance_margin":"0.05","breakers":{"price_band":"2"}}"#);
    assert!(e.to_string().contains("breakers.price_band"), "{e}");
    let e = s.rejects(r#"{"ts":0,"cmd":"create_market","market":"X","initial_margin":"0.1","maintenance_margin":"0.05","breakers":{"price_move":{"max_move":"0.1","window_ms":0}}}"#);
    assert!(e.to_string().contains("window_ms"), "{e}");
}
