//! Scenario tests of the engine's commands: each sets up a small market, acts, and asserts the
//! events, the state and — for every rejection — that nothing changed (`Story::rejects`).

use crate::account::Bucket;
use crate::error::Reject;
use crate::event::Event;
use crate::num::{Quote, Ratio};
use crate::oracle::Validity;
use crate::testkit::{q, to_cents, Story};

const BTC: &str = "BTC-PERP";

/// Golden: Binance isolated liquidation price for 1 BTC long/short at 50,000 with a 5,000
/// wallet in bracket 1 (MMR 0.4%): 45,180.72 and 54,780.88.
/// Source: shared/reference/anchors-offchain.md §2.1 (worked check).
#[test]
fn binance_isolated_liquidation_prices() {
    let s = Story::isolated_long_and_short(BTC, "0.008", "0.004", "50000", "5000");
    assert_eq!(to_cents(s.position("long", BTC).liquidation_price.unwrap()), "45180.72");
    assert_eq!(to_cents(s.position("short", BTC).liquidation_price.unwrap()), "54780.88");
    assert_eq!(s.position("long", BTC).isolated_margin, Some(q("5000")));
}

/// Golden: Hyperliquid liquidation price, 1 BTC at 100,000 with 10,000 isolated margin and
/// MMR 1.25% (40x): 91,139.24 long, 108,641.98 short.
/// Source: shared/reference/anchors-offchain.md §1.2 (worked check).
#[test]
fn hyperliquid_isolated_liquidation_prices() {
    let s = Story::isolated_long_and_short(BTC, "0.025", "0.0125", "100000", "10000");
    assert_eq!(to_cents(s.position("long", BTC).liquidation_price.unwrap()), "91139.24");
    assert_eq!(to_cents(s.position("short", BTC).liquidation_price.unwrap()), "108641.98");
}

/// The liquidation price is where the engine itself flips: just above it the position is
/// safe, just below it liquidatable.
#[test]
fn liquidation_price_is_where_the_account_becomes_liquidatable() {
    let mut s = Story::with_market(BTC, "0.008", "0.004", "50000");
    s.deposit_isolated(0, "long", "5000", BTC);
    s.deposit(0, "mm", "1000000");
    s.fill(1, BTC, "long", "mm", "1", "50000");
    let liq = s.position("long", BTC).liquidation_price.unwrap();
    s.price(2, BTC, &(crate::num::Price::from_raw(liq.raw() + 100)).to_string());
    assert!(!s.health("long", Bucket::Isolated(0)).is_liquidatable());
    s.price(3, BTC, &(crate::num::Price::from_raw(liq.raw() - 100)).to_string());
    assert!(s.health("long", Bucket::Isolated(0)).is_liquidatable());
}

/// A cross position's liquidation price holds every other price fixed: moving only that
/// market's mark across it flips the whole cross book between safe and liquidatable.
#[test]
fn cross_liquidation_price_with_two_markets_and_haircut_collateral() {
    let mut s = Story::new();
    s.ok(r#"{"ts":0,"cmd":"create_asset","asset":"ETH","initial_weight":"0.8","maintenance_weight":"0.9"}"#);
    s.ok(r#"{"ts":0,"cmd":"oracle","asset":"ETH","source":"s1","price":"3000"}"#);
    for m in [BTC, "ETH-PERP"] {
        s.ok(&format!(
            r#"{{"ts":0,"cmd":"create_market","market":"{m}","initial_margin":"0.05","maintenance_margin":"0.025"}}"#
        ));
    }
    s.price(0, BTC, "60000");
    s.price(0, "ETH-PERP", "3000");
    s.ok(r#"{"ts":0,"cmd":"deposit","account":"carol","asset":"ETH","amount":"2"}"#);
    s.deposit(0, "carol", "1000");
    s.deposit(0, "mm", "1000000");
    s.fill(1, BTC, "carol", "mm", "0.5", "60000");
    s.fill(1, "ETH-PERP", "mm", "carol", "10", "3000");
    let btc_liq = s.position("carol", BTC).liquidation_price.unwrap();
    let eth_liq = s.position("carol", "ETH-PERP").liquidation_price.unwrap();
    assert!(
        btc_liq < crate::num::Price::parse("60000").unwrap() && eth_liq > crate::num::Price::parse("3000").unwrap()
    );
    let nudge = |p: crate::num::Price, d: i64| crate::num::Price::from_raw(p.raw() + d).to_string();
    s.price(2, BTC, &btc_liq.to_string());
    assert!(!s.cross_health("carol").is_liquidatable(), "safe at the liquidation price itself");
    s.price(3, BTC, &nudge(btc_liq, -1_000_000));
    assert!(s.cross_health("carol").is_liquidatable(), "liquidatable a cent below it");
    s.price(4, BTC, "60000");
    s.price(5, "ETH-PERP", &eth_liq.to_string());
    assert!(!s.cross_health("carol").is_liquidatable());
    s.price(6, "ETH-PERP", &nudge(eth_liq, 1_000_000));
    assert!(s.cross_health("carol").is_liquidatable());
}

/// Golden: Binance BTCUSDT brackets as `maintenance_tiers`; a 2,000,000 notional sits in the
/// 1M–10M bracket (MMR 2.5%, maintenance amount 16,300; IMR 5%).
/// Source: shared/reference/anchors-offchain.md §2.1 (bracket table).
#[test]
fn binance_brackets_through_create_market() {
    let mut s = Story::new();
    s.ok(r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.008","maintenance_margin":"0.004","maintenance_tiers":[
        {"notional_floor":"50000","initial_margin":"0.01","maintenance_margin":"0.005"},
        {"notional_floor":"250000","initial_margin":"0.02","maintenance_margin":"0.01"},
        {"notional_floor":"1000000","initial_margin":"0.05","maintenance_margin":"0.025"},
        {"notional_floor":"10000000","initial_margin":"0.1","maintenance_margin":"0.05"}]}"#
        .replace('\n', "")
        .as_str());
    s.price(0, BTC, "50000");
    s.deposit(0, "alice", "100000");
    s.deposit(0, "mm", "10000000");
    s.fill(1, BTC, "alice", "mm", "40", "50000");
    let p = s.position("alice", BTC);
    assert_eq!(p.notional, q("2000000"));
    assert_eq!(p.maintenance_requirement, q("33700"), "2,000,000 × 2.5% − 16,300");
    assert_eq!(p.initial_requirement, q("67400"), "2,000,000 × 5% − 32,600 (initial deductions 100, 2,600, 32,600)");
    let tiers = &s.view().markets[BTC].tiers;
    let deductions: Vec<String> = tiers.iter().map(|t| t.maintenance_deduction.to_string()).collect();
    assert_eq!(deductions, ["0", "50", "1300", "16300", "266300"]);
}

/// Golden: dYdX open-interest-scaled initial margin: base 20%, caps 1M–2M of open interest;
/// at 1.5M the fraction is 60%, at 2M and above 100%.
/// Source: shared/reference/anchors-onchain.md §4 (liquidity_tier_test.go vectors).
#[test]
fn open_interest_scales_initial_margin() {
    let mut s = Story::new();
    s.ok(r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.2","maintenance_margin":"0.1","open_interest_scaling":{"lower_cap":"1000000","upper_cap":"2000000"}}"#);
    s.price(0, BTC, "1000");
    s.deposit(0, "alice", "3000000");
    s.deposit(0, "bob", "3000000");
    s.fill(1, BTC, "alice", "bob", "1000", "1000");
    assert_eq!(s.position("alice", BTC).initial_requirement, q("200000"), "below the lower cap: the base 20%");
    s.fill(2, BTC, "alice", "bob", "500", "1000");
    assert_eq!(s.position("alice", BTC).initial_requirement, q("900000"), "OI 1.5M: 60% of 1.5M");
    s.fill(3, BTC, "alice", "bob", "600", "1000");
    assert_eq!(s.position("alice", BTC).initial_requirement, q("2100000"), "OI 2.1M: 100%");
    assert_eq!(s.position("alice", BTC).maintenance_requirement, q("210000"), "maintenance is never scaled");
}

/// BTC-PERP at 10,000; alice holds 10,000 in her cross book and a 1 BTC isolated long on 1,000
/// of margin, bought from `mm`.
fn alice_cross_and_isolated() -> Story {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "10000");
    s.deposit(0, "alice", "10000");
    s.deposit_isolated(0, "alice", "1000", BTC);
    s.deposit(0, "mm", "1000000");
    s.fill(1, BTC, "alice", "mm", "1", "10000");
    s
}

#[test]
fn isolated_position_can_lose_only_its_own_collateral() {
    let mut s = alice_cross_and_isolated();
    // At 8,000 the isolated position is 1,000 underwater. With no insurance, the waterfall
    // deleverages the winning short at the bankruptcy price; the cross book pays nothing.
    let events = s.ok(r#"{"ts":2,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"8000"}"#);
    let started = events.iter().find_map(|e| match e {
        Event::LiquidationStarted { equity, isolated: Some(_), .. } => Some(*equity),
        _ => None,
    });
    assert_eq!(started, Some(q("-1000")), "the isolated position is underwater");
    assert_eq!(s.health("alice", Bucket::Isolated(0)).equity, Quote::ZERO, "deleveraged to zero equity");
    let cross = s.cross_health("alice");
    assert_eq!(cross.equity, q("10000"), "the cross book does not see the isolated loss");
    // The deleveraging recorded bad debt, which gates withdrawals for a minute (dYdX's rule);
    // after that the whole cross balance can leave.
    let gated = s.rejects(r#"{"ts":3,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"10000"}"#);
    assert!(gated.to_string().contains("gated"), "{gated}");
    s.ok(r#"{"ts":60002,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"10000"}"#);
}

#[test]
fn fills_go_to_the_isolated_position_when_the_account_isolated_that_market() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "mm", "100000");
    s.ok(r#"{"ts":1,"cmd":"transfer_margin","account":"alice","market":"BTC-PERP","amount":"400","to":"isolated"}"#);
    s.fill(2, BTC, "alice", "mm", "10", "100");
    let p = s.position("alice", BTC);
    assert!(p.isolated);
    assert_eq!(p.isolated_margin, Some(q("400")));
    assert_eq!(s.cross_health("alice").equity, q("600"));
    // Taking 350 back would leave 50 against an initial requirement of 100.
    let e = s.rejects(
        r#"{"ts":3,"cmd":"transfer_margin","account":"alice","market":"BTC-PERP","amount":"350","to":"cross"}"#,
    );
    assert!(matches!(e, Reject::InsufficientMargin { .. }), "{e}");
    s.ok(r#"{"ts":3,"cmd":"transfer_margin","account":"alice","market":"BTC-PERP","amount":"300","to":"cross"}"#);
    // Closing the position and taking the rest back returns the market to the cross book.
    s.fill(4, BTC, "mm", "alice", "10", "100");
    s.ok(r#"{"ts":5,"cmd":"transfer_margin","account":"alice","market":"BTC-PERP","amount":"100","to":"cross"}"#);
    s.fill(6, BTC, "alice", "mm", "1", "100");
    assert!(!s.position("alice", BTC).isolated);
}

#[test]
fn cannot_isolate_a_market_with_a_cross_position() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "mm", "100000");
    s.fill(1, BTC, "alice", "mm", "1", "100");
    let e =
        s.rejects(r#"{"ts":2,"cmd":"deposit","account":"alice","asset":"USDC","amount":"10","isolated":"BTC-PERP"}"#);
    assert!(matches!(e, Reject::Conflict(_)), "{e}");
    let e = s.rejects(
        r#"{"ts":2,"cmd":"transfer_margin","account":"alice","market":"BTC-PERP","amount":"10","to":"isolated"}"#,
    );
    assert!(matches!(e, Reject::Conflict(_)), "{e}");
}

/// dYdX's rule: below initial, an account may only reduce risk, and only without worsening
/// equity / maintenance.
#[test]
fn an_undercollateralized_account_may_only_reduce_risk() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "mm", "100000");
    s.fill(1, BTC, "alice", "mm", "80", "100");
    s.price(2, BTC, "97");
    let h = s.cross_health("alice");
    assert_eq!((h.equity, h.initial, h.maintenance), (q("760"), q("776"), q("388")));
    let e = s.rejects(&Story::fill_line(3, BTC, "alice", "mm", "1", "97"));
    assert!(matches!(e, Reject::InsufficientMargin { .. }), "{e}");
    // Selling 1 at a price far below the mark reduces size but worsens equity/maintenance.
    let e = s.rejects(&Story::fill_line(3, BTC, "mm", "alice", "1", "50"));
    assert!(matches!(e, Reject::NotRiskReducing { .. }), "{e}");
    // At the mark it improves the ratio (760/383.15 > 760/388) while still below initial.
    s.fill(3, BTC, "mm", "alice", "1", "97");
    assert!(!s.cross_health("alice").meets_initial());
}

#[test]
fn fees_and_rounding_go_to_the_fee_pool() {
    let mut s = Story::new();
    s.ok(r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.1","maintenance_margin":"0.05","taker_fee":"0.001","maker_fee":"0.0002"}"#);
    s.price(0, BTC, "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "1000");
    let events = s.ok(r#"{"ts":1,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"2","price":"100","taker":"buyer"}"#);
    let Event::Filled(f) = &events[0] else { panic!("{events:?}") };
    assert_eq!((f.buyer_fee, f.seller_fee), (q("0.2"), q("0.04")));
    assert_eq!(s.engine.fee_pool(), q("0.24"));
    // 0.00000003 × 12345.67891234 = 0.0003703703673702: the buyer pays 0.000371, the seller
    // gets 0.00037 and the micro-unit in between goes to the pool.
    let events = s.fill(2, BTC, "alice", "bob", "0.00000003", "12345.67891234");
    let Event::Filled(f) = &events[0] else { panic!("{events:?}") };
    assert_eq!((f.notional, f.rounding), (q("0.000371"), q("0.000001")));
    // Fees on a sub-cent notional still round up to a micro-unit.
    assert_eq!((f.buyer_fee, f.seller_fee), (q("0.000001"), q("0.000001")));
    assert_eq!(s.engine.fee_pool(), q("0.240003"));
}

#[test]
fn funding_accrues_on_the_index_and_settles_lazily() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "1000");
    s.fill(1, BTC, "alice", "bob", "10", "100");
    let events = s.ok(r#"{"ts":2,"cmd":"funding","market":"BTC-PERP","rate":"0.001"}"#);
    assert!(matches!(&events[0], Event::FundingApplied { funding_index, .. } if funding_index.to_string() == "0.1"));
    assert_eq!(s.position("alice", BTC).funding_owed, q("1"), "the long owes 10 × 0.1");
    assert_eq!(s.position("bob", BTC).funding_owed, q("-1"));
    assert_eq!(s.cross_health("alice").equity, q("999"), "owed funding counts before it settles");
    let events = s.fill(3, BTC, "alice", "bob", "1", "100");
    assert!(events.iter().any(|e| matches!(e, Event::FundingSettled { amount, .. } if *amount == q("1"))));
    assert!(events.iter().any(|e| matches!(e, Event::FundingSettled { amount, .. } if *amount == q("-1"))));
    assert_eq!(s.view().markets[BTC].funding_pool, Quote::ZERO, "both sides settled: the pool is empty again");
    assert_eq!(s.position("alice", BTC).funding_owed, Quote::ZERO);
}

#[test]
fn funding_rate_from_premium_and_its_limits() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    // Premium 0.2% → rate 0.2% + clamp(0.01% − 0.2%, ±0.05%) = 0.15% (Binance's formula).
    let events = s.ok(r#"{"ts":1,"cmd":"funding","market":"BTC-PERP","premium":"0.002"}"#);
    assert!(matches!(&events[0], Event::FundingApplied { rate, .. } if *rate == Ratio::parse("0.0015").unwrap()));
    // No rate, no premium: mark = oracle here, so the premium is 0 and the rate the interest rate.
    let events = s.ok(r#"{"ts":2,"cmd":"funding","market":"BTC-PERP"}"#);
    assert!(matches!(&events[0], Event::FundingApplied { rate, .. } if *rate == Ratio::parse("0.0001").unwrap()));
    let e = s.rejects(r#"{"ts":3,"cmd":"funding","market":"BTC-PERP","rate":"0.5"}"#);
    assert!(matches!(e, Reject::FundingRateTooLarge { .. }), "{e}");
    let e = s.rejects(r#"{"ts":3,"cmd":"funding","market":"BTC-PERP","rate":"0.001","premium":"0.001"}"#);
    assert!(matches!(e, Reject::Conflict(_)), "{e}");
}

#[test]
fn haircut_collateral_counts_at_its_weights_and_only_while_priced_validly_for_initial() {
    let mut s = Story::new();
    s.ok(r#"{"ts":0,"cmd":"create_asset","asset":"ETH","initial_weight":"0.8","maintenance_weight":"0.9"}"#);
    s.ok(r#"{"ts":0,"cmd":"oracle","asset":"ETH","source":"s1","price":"2000"}"#);
    s.ok(r#"{"ts":0,"cmd":"deposit","account":"carol","asset":"ETH","amount":"1.5"}"#);
    let h = s.cross_health("carol");
    assert_eq!((h.equity, h.initial_equity), (q("2700"), q("2400")));
    let events = s.ok(r#"{"ts":61000,"cmd":"tick"}"#);
    assert!(matches!(&events[0], Event::OracleValidityChanged { to: Validity::Stale, .. }));
    let h = s.cross_health("carol");
    assert_eq!((h.equity, h.initial_equity), (q("2700"), Quote::ZERO), "a stale price backs no new risk");
}

#[test]
fn deposit_caps_and_collateral_rules() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.ok(r#"{"ts":0,"cmd":"create_asset","asset":"ETH","initial_weight":"0.8","maintenance_weight":"0.9","deposit_cap":"1"}"#);
    s.ok(r#"{"ts":0,"cmd":"deposit","account":"carol","asset":"ETH","amount":"0.6"}"#);
    let e = s.rejects(r#"{"ts":0,"cmd":"deposit","account":"dave","asset":"ETH","amount":"0.5"}"#);
    assert!(matches!(e, Reject::DepositCap { .. }), "{e}");
    let e =
        s.rejects(r#"{"ts":0,"cmd":"deposit","account":"carol","asset":"ETH","amount":"0.1","isolated":"BTC-PERP"}"#);
    assert!(matches!(e, Reject::Conflict(_)), "{e}");
    let e = s.rejects(r#"{"ts":0,"cmd":"withdraw","account":"carol","asset":"ETH","amount":"0.7"}"#);
    assert!(matches!(e, Reject::InsufficientBalance { .. }), "{e}");
    let e = s.rejects(r#"{"ts":0,"cmd":"deposit","account":"carol","asset":"USDC","amount":"0.0000001"}"#);
    assert!(matches!(e, Reject::InvalidNumber { field: "amount", .. }), "USDC has 6 decimals: {e}");
    assert!(e.to_string().contains("more than 6 decimals"), "{e}");
    s.ok(r#"{"ts":0,"cmd":"withdraw","account":"carol","asset":"ETH","amount":"0.6"}"#);
    assert!(s.engine.account("carol").unwrap().collateral.is_empty());
}

#[test]
fn an_emptied_isolated_bucket_returns_the_market_to_the_cross_book_after_funding() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit_isolated(0, "alice", "100", BTC);
    s.deposit(0, "mm", "100000");
    s.fill(1, BTC, "alice", "mm", "1", "100");
    s.ok(r#"{"ts":2,"cmd":"funding","market":"BTC-PERP","rate":"0.001"}"#);
    s.fill(3, BTC, "mm", "alice", "1", "100");
    let margin = s.engine.account("alice").unwrap().isolated(0).unwrap().margin;
    assert_eq!(margin, q("99.9"), "100 less 0.1 of funding");
    s.ok(r#"{"ts":4,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"99.9","isolated":"BTC-PERP"}"#);
    assert!(s.engine.account("alice").unwrap().isolated.is_empty());
    s.fill(5, BTC, "alice", "mm", "1", "100");
    assert!(!s.position("alice", BTC).isolated);
}

#[test]
fn new_risk_needs_every_market_of_the_cross_book_priced() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.ok(r#"{"ts":0,"cmd":"create_market","market":"ETH-PERP","initial_margin":"0.1","maintenance_margin":"0.05","oracle":{"max_age_ms":600000}}"#);
    s.price(0, "ETH-PERP", "10");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "mm", "100000");
    s.fill(1, BTC, "alice", "mm", "1", "100");
    s.ok(r#"{"ts":70000,"cmd":"oracle","market":"ETH-PERP","source":"s1","price":"10"}"#);
    // ETH-PERP is fresh, but alice's BTC-PERP position is priced by a stale oracle.
    let e = s.rejects(&Story::fill_line(70001, "ETH-PERP", "alice", "mm", "1", "10"));
    assert!(matches!(&e, Reject::OracleNotValidFor { market, .. } if market == BTC), "{e}");
    // Once BTC-PERP is priced again, the same fill goes through.
    s.price(70002, BTC, "100");
    s.fill(70003, "ETH-PERP", "alice", "mm", "1", "10");
}

#[test]
fn funding_needs_a_price_that_is_not_stale() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.ok(r#"{"ts":70000,"cmd":"tick"}"#);
    let e = s.rejects(r#"{"ts":70000,"cmd":"funding","market":"BTC-PERP","rate":"0.0001"}"#);
    assert!(matches!(e, Reject::OracleNotValidFor { validity: Validity::Stale, action: "funding", .. }), "{e}");
}

#[test]
fn stale_oracle_blocks_new_risk_but_not_risk_reduction() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "1000");
    s.fill(1, BTC, "alice", "bob", "5", "100");
    s.ok(r#"{"ts":70000,"cmd":"tick"}"#);
    let e = s.rejects(&Story::fill_line(70001, BTC, "alice", "bob", "1", "100"));
    assert!(matches!(e, Reject::OracleNotValidFor { validity: Validity::Stale, .. }), "{e}");
    assert!(e.to_string().contains("stale"), "{e}");
    s.fill(70001, BTC, "bob", "alice", "5", "100");
    // Alice is flat now: her withdrawal needs no price (Mango v4's lesson on stale oracles).
    s.ok(r#"{"ts":70002,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"1"}"#);
}

#[test]
fn volatility_margin_rises_at_a_limited_rate_after_a_shock() {
    let mut s = Story::new();
    s.ok(r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.01","maintenance_margin":"0.005","volatility_margin":{"lambda":"0.94","multiplier":"3","horizon_samples":1,"max_increase_per_hour":"0.01","cap":"0.5","initial_multiplier":"2"}}"#);
    s.price(0, BTC, "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "1000");
    s.fill(0, BTC, "alice", "bob", "1", "100");
    // A 10% move: target 3 × √(0.06 × 0.01) ≈ 7.3%, but one hour allows only +1%.
    let events = s.ok(r#"{"ts":3600000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"110"}"#);
    let changed = events.iter().find_map(|e| match e {
        Event::VolatilityMarginChanged { from, to, .. } => Some((*from, *to)),
        _ => None,
    });
    assert_eq!(changed, Some((Ratio::ZERO, Ratio::parse("0.01").unwrap())));
    let p = s.position("alice", BTC);
    assert_eq!(p.maintenance_requirement, q("1.1"), "max(0.5% tier, 1% volatility) of 110");
    assert_eq!(p.initial_requirement, q("2.2"), "the initial floor is twice the maintenance floor");
}

// ---- bad input: every rejection leaves the state unchanged (checked by `rejects`) ----------

#[test]
fn unknown_names_are_rejected() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "1000");
    assert!(matches!(
        s.rejects(&Story::fill_line(1, "ETH-PERP", "alice", "bob", "1", "100")),
        Reject::UnknownMarket(_)
    ));
    assert!(matches!(s.rejects(&Story::fill_line(1, BTC, "zed", "bob", "1", "100")), Reject::UnknownAccount(_)));
    assert!(matches!(
        s.rejects(r#"{"ts":1,"cmd":"deposit","account":"alice","asset":"DOGE","amount":"1"}"#),
        Reject::UnknownAsset(_)
    ));
    assert!(matches!(
        s.rejects(r#"{"ts":1,"cmd":"withdraw","account":"zed","asset":"USDC","amount":"1"}"#),
        Reject::UnknownAccount(_)
    ));
    assert!(matches!(
        s.rejects(r#"{"ts":1,"cmd":"oracle","market":"ETH-PERP","source":"s1","price":"1"}"#),
        Reject::UnknownMarket(_)
    ));
    assert!(matches!(
        s.rejects(r#"{"ts":1,"cmd":"deposit","account":"bad name","asset":"USDC","amount":"1"}"#),
        Reject::InvalidId(_)
    ));
}

#[test]
fn non_positive_sizes_prices_and_amounts_are_rejected() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "1000");
    for line in [
        Story::fill_line(1, BTC, "alice", "bob", "0", "100"),
        Story::fill_line(1, BTC, "alice", "bob", "-1", "100"),
        Story::fill_line(1, BTC, "alice", "bob", "1", "0"),
        Story::fill_line(1, BTC, "alice", "bob", "1", "-100"),
        r#"{"ts":1,"cmd":"deposit","account":"alice","asset":"USDC","amount":"0"}"#.to_string(),
        r#"{"ts":1,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"-5"}"#.to_string(),
        r#"{"ts":1,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"0"}"#.to_string(),
    ] {
        assert!(matches!(s.rejects(&line), Reject::NotPositive { .. }), "{line}");
    }
}

#[test]
fn overflow_is_a_rejection_not_a_wrap() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "1000");
    s.deposit(0, "bob", "1000");
    let e = s.rejects(&Story::fill_line(1, BTC, "alice", "bob", "1000000000000000000000000000", "1000000000"));
    assert!(matches!(e, Reject::Math(_)), "{e}");
}

#[test]
fn time_must_not_go_backwards() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.ok(r#"{"ts":1000,"cmd":"tick"}"#);
    let e = s.rejects(r#"{"ts":999,"cmd":"tick"}"#);
    assert_eq!(e, Reject::TimeWentBackwards { ts: 999, last: 1000 });
    s.ok(r#"{"ts":1000,"cmd":"tick"}"#);
}

#[test]
fn stale_and_out_of_order_oracle_prices_are_rejected() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.ok(r#"{"ts":100000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"101","publish_ts":90000}"#);
    let e =
        s.rejects(r#"{"ts":100000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"102","publish_ts":80000}"#);
    assert!(matches!(e, Reject::Oracle(_)), "out of order: {e}");
    let e =
        s.rejects(r#"{"ts":100000,"cmd":"oracle","market":"BTC-PERP","source":"s2","price":"102","publish_ts":1000}"#);
    assert!(matches!(e, Reject::Oracle(_)), "stale: {e}");
    let e = s.rejects(r#"{"ts":100000,"cmd":"oracle","market":"BTC-PERP","asset":"ETH","source":"s1","price":"1"}"#);
    assert!(matches!(e, Reject::Conflict(_)), "{e}");
}

#[test]
fn self_trades_and_margin_violations_are_rejected() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    s.deposit(0, "alice", "100");
    s.deposit(0, "bob", "100000");
    assert!(matches!(s.rejects(&Story::fill_line(1, BTC, "alice", "alice", "1", "100")), Reject::SelfTrade(_)));
    let e = s.rejects(&Story::fill_line(1, BTC, "alice", "bob", "11", "100"));
    assert!(e.to_string().contains("equity 100 below its initial requirement 110"), "{e}");
    s.fill(1, BTC, "alice", "bob", "10", "100");
    let e = s.rejects(r#"{"ts":2,"cmd":"withdraw","account":"alice","asset":"USDC","amount":"1"}"#);
    assert!(matches!(e, Reject::InsufficientMargin { .. }), "{e}");
}

#[test]
fn duplicate_and_invalid_listings_are_rejected() {
    let mut s = Story::with_market(BTC, "0.1", "0.05", "100");
    let dup =
        r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.1","maintenance_margin":"0.05"}"#;
    assert!(matches!(s.rejects(dup), Reject::AlreadyExists { .. }));
    let inverted =
        r#"{"ts":0,"cmd":"create_market","market":"ETH-PERP","initial_margin":"0.05","maintenance_margin":"0.1"}"#;
    let e = s.rejects(inverted);
    assert!(matches!(e, Reject::Params(_)), "{e}");
    let usdc = r#"{"ts":0,"cmd":"create_asset","asset":"USDC","initial_weight":"1","maintenance_weight":"1"}"#;
    assert!(matches!(s.rejects(usdc), Reject::AlreadyExists { .. }));
    let weights = r#"{"ts":0,"cmd":"create_asset","asset":"ETH","initial_weight":"0.95","maintenance_weight":"0.9"}"#;
    assert!(s.rejects(weights).to_string().contains("initial_weight"));
}

/// The per-item views a service reads are exactly the entries of the whole state view.
#[test]
fn single_account_and_market_views_match_the_state_view() {
    let mut s = alice_cross_and_isolated();
    s.price(2, BTC, "9000");
    let view = s.view();
    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }
    for id in ["alice", "mm"] {
        assert_eq!(json(&s.engine.account_state(id).unwrap()), json(&view.accounts.get(id)), "{id}");
    }
    assert!(s.engine.account_state("nobody").unwrap().is_none());
    assert_eq!(json(&s.engine.market_state(BTC)), json(&view.markets.get(BTC)));
    assert!(s.engine.market_state("ETH-PERP").is_none());
    assert_eq!(json(&s.engine.markets_state()), json(&view.markets));
    assert_eq!(json(&s.engine.insurance_state().unwrap()), json(&(view.insurance_funds, view.backstop)));
}

/// Reserving room for accounts changes nothing a command can see: the same story with and
/// without it ends in the same state and events, and the index stays consistent.
#[test]
fn reserving_accounts_changes_no_outcome() {
    let story = |reserve: bool| {
        let mut s = Story::isolated_long_and_short(BTC, "0.008", "0.004", "50000", "5000");
        let before = s.engine.state_hash();
        if reserve {
            s.engine.reserve_accounts(1000);
            assert_eq!(s.engine.state_hash(), before);
        }
        s.deposit_isolated(1, "late", "1000", BTC);
        let events = s.ok(r#"{"ts":2,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"40000"}"#);
        assert!(events.iter().any(|e| matches!(e, Event::LiquidationStarted { .. })));
        assert!(s.engine.detection_index_is_consistent());
        (s.engine.state_hash(), events)
    };
    assert_eq!(story(true), story(false));
}
