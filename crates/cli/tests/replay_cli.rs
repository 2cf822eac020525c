//! The real `ballast replay` binary on the shipped stories and on unreadable input.

use serde_json::Value;
use std::path::PathBuf;

mod common;

use common::ballast;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Replay a story and return its events and final state.
fn replay(story: &str) -> (Vec<Value>, Value) {
    let state = temp_path(&format!("{story}.state.json"));
    let out = ballast(&["replay", &format!("examples/{story}.jsonl"), "--state", state.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let state = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    (events, state)
}

fn rejected_lines(events: &[Value]) -> Vec<u64> {
    events.iter().filter(|e| e["event"] == "rejected").map(|e| e["line"].as_u64().unwrap()).collect()
}

#[test]
fn isolated_long_story() {
    let (events, state) = replay("isolated-long");
    assert_eq!(rejected_lines(&events), [11, 17], "the oversized fill and the withdrawal are refused");
    let alice = &state["accounts"]["alice"];
    let pos = &alice["positions"][0];
    for key in ["market", "size", "entry_price", "isolated", "isolated_margin", "equity", "maintenance_requirement"] {
        assert!(pos.get(key).is_some(), "position field {key} missing: {pos}");
    }
    assert_eq!(pos["isolated"], true);
    assert_eq!(pos["size"], "0.5");
    assert_eq!(pos["entry_price"], "50000");
    assert_eq!(pos["isolated_margin"], "3500", "5,000 + 1,000 top-up − 2,500 realized");
    assert!(pos["liquidation_price"].as_str().unwrap().starts_with("43172.69"));
    for key in ["deposits", "withdrawals", "bad_debt", "socialized_loss"] {
        assert!(state["totals"].get(key).is_some(), "totals.{key} missing");
    }
    assert_eq!(state["totals"]["deposits"], "106000");
    assert!(state["insurance_funds"].is_object());
    assert_eq!(state["seq"], 10);
}

#[test]
fn cross_story_with_haircut_collateral_and_two_markets() {
    let (events, state) = replay("cross-two-markets");
    assert_eq!(rejected_lines(&events), [19, 21]);
    let carol = &state["accounts"]["carol"];
    assert_eq!(carol["balances"]["ETH"], "2");
    assert_eq!(carol["balances"]["USDC"], "-534.95", "1,000 − fees 15 + 15 + 8.25 − realized 1,500 + funding 3.30");
    assert_eq!(carol["equity"], "3902.05", "−534.95 + 0.9 × 2 × 3,300 − 3 funding owed − 1,500 PnL");
    assert_eq!(carol["positions"].as_array().unwrap().len(), 2);
}

#[test]
fn oracle_outage_story() {
    let (events, state) = replay("oracle-outage");
    assert_eq!(rejected_lines(&events), [16, 22, 28]);
    let validity: Vec<&str> =
        events.iter().filter(|e| e["event"] == "oracle_validity_changed").map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(validity, ["low_quorum", "valid", "low_quorum", "stale", "low_quorum", "valid", "uncertain", "valid"]);
    assert_eq!(state["accounts"]["dan"]["positions"][0]["size"], "60");
}

#[test]
fn replaying_twice_gives_the_same_state_hash() {
    let (_, a) = replay("cross-two-markets");
    let (_, b) = replay("cross-two-markets");
    assert_eq!(a["state_hash"], b["state_hash"]);
    assert_eq!(a["state_hash"].as_str().unwrap().len(), 64);
}

#[test]
fn state_file_folder_is_created() {
    let state = temp_path("nested/deeper/state.json");
    let out = ballast(&["replay", "examples/isolated-long.jsonl", "--state", state.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(state.exists());
}

#[test]
fn missing_file_fails_with_its_name() {
    let out = ballast(&["replay", "examples/no-such-story.jsonl"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-story.jsonl"));
}

#[test]
fn invalid_utf8_fails_naming_the_line() {
    let path = temp_path("bad-utf8.jsonl");
    std::fs::write(&path, b"{\"ts\":0,\"cmd\":\"tick\"}\n\xc3\x28\n").unwrap();
    let out = ballast(&["replay", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("UTF-8"), "{stderr}");
}

#[test]
fn malformed_lines_are_reported_and_skipped() {
    let path = temp_path("malformed.jsonl");
    std::fs::write(
        &path,
        "{\"ts\":0,\"cmd\":\"tick\"}\n{oops\n{\"ts\":1,\"cmd\":\"tick\",\"bogus\":1}\n{\"ts\":2,\"cmd\":\"tick\"}\n",
    )
    .unwrap();
    let out = ballast(&["replay", path.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rejected_lines(&lines), [2, 3]);
    assert!(lines[1]["reason"].as_str().unwrap().contains("bogus"));
    assert_eq!(
        (lines[1]["ts"].as_u64(), lines[1]["cmd"].as_str()),
        (Some(1), Some("tick")),
        "decode errors keep ts and cmd"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 accepted, 2 rejected"));
}

/// The event names of `events`, without the ones every story has.
fn recovery_events(events: &[Value]) -> Vec<String> {
    let steps = [
        "liquidation_started",
        "liquidation_order",
        "liquidation_filled",
        "insurance_paid",
        "deleveraged",
        "auto_deleveraged",
        "socialized_loss",
        "loss_charged",
        "liquidation_ended",
    ];
    events.iter().map(|e| e["event"].as_str().unwrap().to_string()).filter(|e| steps.contains(&e.as_str())).collect()
}

/// One story per layer of the waterfall; each ends with the account clear of debt and the
/// totals naming the layer that absorbed it.
#[test]
fn a_story_for_each_layer_of_the_waterfall() {
    let (events, state) = replay("liquidation-book");
    let expected = [
        "liquidation_started",
        "liquidation_order",
        "liquidation_filled",
        "liquidation_order",
        "liquidation_filled",
        "liquidation_ended",
    ];
    assert_eq!(recovery_events(&events), expected, "partial: two orders, then recovered");
    assert_eq!(state["totals"]["bad_debt"], "0");
    assert_eq!(state["insurance_funds"]["global"], "254.132367", "the two fills' insurance fees");

    let (events, state) = replay("liquidation-insurance");
    assert_eq!(events.iter().filter(|e| e["event"] == "insurance_paid").count(), 2, "the gap, then the fill");
    assert_eq!(state["totals"]["insurance_paid"], "4225", "1,000 below zero + 3,225 filled below bankruptcy");
    assert_eq!(state["insurance_funds"]["global"], "95775");

    let (events, state) = replay("liquidation-adl");
    let deleveraged: Vec<_> = events.iter().filter(|e| e["event"] == "deleveraged").collect();
    assert_eq!(deleveraged.len(), 2);
    assert_eq!((deleveraged[0]["size"].as_str(), deleveraged[1]["size"].as_str()), (Some("0.75"), Some("0.25")));
    assert!(deleveraged.iter().all(|e| e["price"] == "55099"), "54,999 of USDC + 100 from the fund");
    assert_eq!(
        (state["totals"]["insurance_paid"].as_str(), state["totals"]["adl_covered"].as_str()),
        (Some("100"), Some("901"))
    );

    let (events, state) = replay("liquidation-socialized");
    assert!(!events.iter().any(|e| e["event"] == "deleveraged"), "ADL is disabled in this market");
    let charged: Vec<_> = events.iter().filter(|e| e["event"] == "loss_charged").map(|e| e["amount"].clone()).collect();
    assert_eq!(charged, ["2112.5", "2112.5"], "mm and bob hold the open interest 3:3");
    assert_eq!(state["totals"]["socialized_loss"], "4225");
    assert_eq!(state["accounts"]["alice"]["positions"][0]["equity"], "0");
}

/// The `event` names of a replay's output, with the rejections as `rejected:<cmd>`.
fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["event"].as_str().unwrap() {
            "rejected" => format!("rejected:{}", e["cmd"].as_str().unwrap()),
            k => k.to_string(),
        })
        .collect()
}

fn has_in_order(events: &[Value], wanted: &[&str]) {
    let kinds = kinds(events);
    let mut rest = kinds.iter();
    for w in wanted {
        assert!(rest.any(|k| k == w), "{w} missing (in order) from {kinds:?}");
    }
}

#[test]
fn price_crash_halt_and_recovery_story() {
    let (events, state) = replay("breaker-price-crash");
    assert_eq!(rejected_lines(&events), [10, 14], "the fat finger and the risk-increasing fill while halted");
    has_in_order(
        &events,
        &["rejected:fill", "breaker_tripped", "market_status_changed", "rejected:fill", "filled", "withdrawn"],
    );
    has_in_order(&events, &["breaker_cleared", "market_status_changed", "filled"]);
    let trip = events.iter().find(|e| e["event"] == "breaker_tripped").unwrap();
    assert_eq!(
        (&trip["trigger"], &trip["level"], &trip["value"]),
        (&"price_move".into(), &"halted".into(), &"0.16".into())
    );
    assert_eq!(state["markets"]["BTC-PERP"]["status"], "active");
}

#[test]
fn oracle_outage_grace_period_story() {
    let (events, state) = replay("breaker-oracle-outage");
    assert_eq!(rejected_lines(&events), [13]);
    has_in_order(
        &events,
        &["oracle_validity_changed", "breaker_tripped", "market_status_changed", "rejected:fill", "filled"],
    );
    has_in_order(&events, &["breaker_cleared", "market_status_changed", "filled"]);
    assert_eq!(state["markets"]["ETH-PERP"]["liquidations_resume_at"], 90000, "60 s of grace after the feed returned");
    assert_eq!(state["accounts"]["carol"]["positions"][0]["size"], "6");
}

#[test]
fn withdrawal_bank_run_story() {
    let (events, state) = replay("withdrawal-bank-run");
    assert_eq!(rejected_lines(&events), [10, 12], "the immediate withdraw and the request above one window");
    let executed: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["event"] == "withdrawal_executed")
        .map(|e| (e["ts"].as_u64().unwrap(), e["id"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        executed,
        [(61300, 0), (61300, 1), (61300, 3), (3661300, 4)],
        "the limiter holds ben's back for an hour"
    );
    assert_eq!(state["totals"]["withdrawals"], "11000");
    assert_eq!(state["withdrawals"]["reserved"], "0");
}

#[test]
fn council_change_with_timelock_story() {
    let (events, state) = replay("governance-timelock");
    assert_eq!(rejected_lines(&events), [16, 18, 21, 25, 30, 35]);
    has_in_order(
        &events,
        &[
            "proposal_created",
            "proposal_approved",
            "rejected:execute",
            "rejected:approve",
            "proposal_approved",
            "proposal_queued",
            "rejected:execute",
            "proposal_executed",
            "rejected:fill",
        ],
    );
    has_in_order(&events, &["guardian_acted", "rejected:guardian", "proposal_executed"]);
    assert_eq!(state["markets"]["BTC-PERP"]["params"]["initial_margin"], "0.05");
    assert_eq!(state["markets"]["BTC-PERP"]["status"], "active");
}
