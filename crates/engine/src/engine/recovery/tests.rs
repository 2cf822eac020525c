//! Stories of liquidation and of each layer of the recovery waterfall: set up, move the price,
//! assert the events and the state; every rejection is checked to change nothing.

use crate::account::Bucket;
use crate::detection::key;
use crate::error::Reject;
use crate::event::{Event, LiquidationEnd, OrderSide};
use crate::num::{Price, Quote, Size};
use crate::testkit::{px, q, sz, Story};

const BTC: &str = "BTC-PERP";

/// BTC-PERP at 50,000 with initial 10%, maintenance 5% (liquidation ends at 7.5%) and `extra`
/// market fields; `mm` holds 10M of USDC.
fn market(extra: &str) -> Story {
    market_with_initial("0.1", extra)
}

fn market_with_initial(initial: &str, extra: &str) -> Story {
    let mut s = Story::new();
    s.ok(&format!(
        r#"{{"ts":0,"cmd":"create_market","market":"{BTC}","initial_margin":"{initial}","maintenance_margin":"0.05"{extra}}}"#
    ));
    s.price(0, BTC, "50000");
    s.deposit(0, "mm", "10000000");
    s
}

fn oracle(s: &mut Story, ts: u64, price: &str) -> Vec<Event> {
    s.ok(&format!(r#"{{"ts":{ts},"cmd":"oracle","market":"{BTC}","source":"s1","price":"{price}"}}"#))
}

fn fund(s: &mut Story, ts: u64, amount: &str) {
    s.ok(&format!(r#"{{"ts":{ts},"cmd":"fund_insurance","fund":"global","amount":"{amount}"}}"#));
}

/// The liquidation orders among `events`: (order, side, size, limit).
fn orders(events: &[Event]) -> Vec<(u64, OrderSide, Size, Price)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LiquidationOrder { order, side, size, limit, .. } => Some((*order, *side, *size, *limit)),
            _ => None,
        })
        .collect()
}

fn ended(events: &[Event]) -> Option<LiquidationEnd> {
    events.iter().find_map(|e| match e {
        Event::LiquidationEnded { reason, .. } => Some(*reason),
        _ => None,
    })
}

fn liquidation_fill(ts: u64, buyer: &str, seller: &str, size: Size, price: Price) -> String {
    format!(
        r#"{{"ts":{ts},"cmd":"fill","market":"{BTC}","buyer":"{buyer}","seller":"{seller}","size":"{size}","price":"{price}","liquidation":true}}"#
    )
}

fn in_liquidation(s: &Story, account: &str, bucket: Bucket) -> bool {
    let i = s.engine.accounts().position(|(id, _)| id == account).expect("account") as u32;
    s.engine.liquidation(key(i, bucket)).is_some()
}

/// Layer 1: the venue's book fills the engine's orders; the account is partially liquidated
/// back to the liquidation-end level and never goes bankrupt.
#[test]
fn liquidated_cleanly_by_book_orders() {
    let mut s = market("");
    s.deposit_isolated(0, "alice", "6000", BTC);
    s.fill(1, BTC, "alice", "mm", "1", "50000");
    assert!(orders(&oracle(&mut s, 2, "47000")).is_empty(), "equity 3,000 ≥ maintenance 2,350");
    // 46,000: equity 2,000 < maintenance 2,300.
    let events = oracle(&mut s, 3, "46000");
    assert!(matches!(events.iter().find(|e| matches!(e, Event::LiquidationStarted { .. })),
        Some(Event::LiquidationStarted { equity, maintenance, .. }) if *equity == q("2000") && *maintenance == q("2300")));
    let first = orders(&events);
    // Size from the shortage (liquidation end 3,450 − 2,000 = 1,450) at 7.5% less the 1%
    // insurance fee: 1,450 / (46,000 × 0.065) = 0.48494983…, rounded up. Limit = dYdX's
    // fillable price: ABR = 1 − 2,000/2,300, 46,000 − ABR × 1.5 × 2,300 = 45,550.
    assert_eq!(first, vec![(1, OrderSide::Sell, sz("0.48494984"), px("45550"))]);
    let mut ts = 4;
    let mut filled = Size::ZERO;
    let mut pending = first;
    while let Some((_, _, size, limit)) = pending.pop() {
        let events = s.ok(&liquidation_fill(ts, "mm", "alice", size, limit));
        filled = filled.checked_add(size).unwrap();
        assert!(events.iter().any(|e| matches!(e, Event::LiquidationFilled { .. })));
        if let Some(reason) = ended(&events) {
            assert_eq!(reason, LiquidationEnd::Recovered);
            break;
        }
        pending = orders(&events);
        ts += 1;
        assert!(ts < 20, "the liquidation should converge");
    }
    let h = s.health("alice", Bucket::Isolated(0));
    assert!(h.equity >= h.liquidation_end, "back at the liquidation-end level: {h:?}");
    assert!(filled < sz("1") && filled > sz("0.4"), "partial: {filled}");
    assert!(s.view().insurance_funds["global"].is_positive(), "the insurance fee went to the fund");
    assert_eq!(s.view().totals.bad_debt, Quote::ZERO);
}

/// Layer 2: a gap below bankruptcy; the insurance fund pays the deficit, then the position is
/// liquidated through the book.
#[test]
fn liquidated_into_the_fund() {
    let mut s = market("");
    fund(&mut s, 0, "100000");
    s.deposit_isolated(0, "alice", "6000", BTC);
    s.fill(1, BTC, "alice", "mm", "1", "50000");
    // 43,000: equity 6,000 − 7,000 = −1,000.
    let events = oracle(&mut s, 2, "43000");
    let paid = events.iter().find_map(|e| match e {
        Event::InsurancePaid { amount, balance, .. } => Some((*amount, *balance)),
        _ => None,
    });
    assert_eq!(paid, Some((q("1000"), q("99000"))));
    assert_eq!(s.health("alice", Bucket::Isolated(0)).equity, Quote::ZERO);
    assert_eq!(orders(&events).len(), 1, "then the book takes the position");
    let t = s.view().totals;
    assert_eq!((t.bad_debt, t.insurance_paid, t.adl_covered), (q("1000"), q("1000"), Quote::ZERO));
}

/// Layer 3, with dYdX's deleveraging vector (anchors-onchain.md §4, vector 4,
/// TestProcessDeleveraging): Carl is short 1 BTC with $54,999 of USDC, Dave long 1 BTC. With
/// no insurance, Carl's bankrupt short is closed against Dave at exactly $54,999.
#[test]
fn fund_exhausted_then_deleveraged_at_the_bankruptcy_price() {
    let mut s = market_with_initial("0.09", "");
    fund(&mut s, 0, "100");
    s.deposit(0, "carl", "4999");
    s.deposit(0, "dave", "50000");
    s.fill(1, BTC, "dave", "carl", "1", "50000");
    // Carl: 4,999 + 50,000 of leg = 54,999 of USDC against 1 BTC short.
    let events = oracle(&mut s, 2, "56000");
    let deleveraged: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Deleveraged { counterparty, size, price, .. } => Some((counterparty.to_string(), *size, *price)),
            _ => None,
        })
        .collect();
    // The fund paid its 100 first, so the bankruptcy price is 54,999 + 100.
    assert_eq!(deleveraged, vec![("dave".to_string(), sz("1"), px("55099"))]);
    assert_eq!(s.cross_health("carl").equity, Quote::ZERO);
    assert_eq!(ended(&events), Some(LiquidationEnd::Closed));
    let t = s.view().totals;
    assert_eq!((t.insurance_paid, t.adl_covered, t.bad_debt), (q("100"), q("901"), q("1001")));
    assert_eq!(s.view().markets[BTC].open_interest, Size::ZERO);
    // Dave sold at 55,099: +5,099 realized.
    assert_eq!(s.view().accounts["dave"].balances["USDC"], sz("55099"));
}

#[test]
fn deleveraging_without_insurance_matches_dydx() {
    let mut s = market_with_initial("0.09", "");
    s.deposit(0, "carl", "4999");
    s.deposit(0, "dave", "50000");
    s.fill(1, BTC, "dave", "carl", "1", "50000");
    let events = oracle(&mut s, 2, "56000");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Deleveraged { price, size, .. } if *price == px("54999") && *size == sz("1"))));
    assert_eq!(s.view().accounts["dave"].balances["USDC"], sz("54999"), "50,000 + 4,999");
}

/// Layer 4: ADL disabled; the book fills below bankruptcy, the fund is empty, so the deficit is
/// socialized over open interest, split exactly.
#[test]
fn adl_disabled_then_socialized() {
    let mut s = market(r#","adl":{"enabled":false},"socialized_loss":"open_interest""#);
    s.deposit_isolated(0, "alice", "6000", BTC);
    s.deposit(0, "bob", "100000");
    s.fill(1, BTC, "alice", "mm", "1", "50000");
    s.fill(1, BTC, "bob", "mm", "3", "50000");
    let events = oracle(&mut s, 2, "43000");
    assert!(!events.iter().any(|e| matches!(e, Event::Deleveraged { .. } | Event::InsurancePaid { .. })));
    let (_, _, size, limit) = orders(&events)[0];
    assert_eq!(size, sz("1"), "bankrupt: the whole position");
    let events = s.ok(&liquidation_fill(3, "mm", "alice", size, limit));
    let social = events.iter().find_map(|e| match e {
        Event::SocializedLoss { amount, payers, unresolved, .. } => Some((*amount, *payers, *unresolved)),
        _ => None,
    });
    let (amount, payers, unresolved) = social.expect("socialized");
    // Filled at `limit` for 1 BTC: 6,000 + (limit − 50,000) is the deficit.
    let deficit = q("6000").checked_add(sz("1").value_at(limit, crate::num::Round::Floor).unwrap()).unwrap();
    assert_eq!(amount, deficit.checked_sub(q("50000")).unwrap().checked_neg().unwrap());
    assert_eq!((payers, unresolved), (2, Quote::ZERO), "bob and mm hold the open interest");
    let charged: Quote = events
        .iter()
        .filter_map(|e| match e {
            Event::LossCharged { amount, .. } => Some(*amount),
            _ => None,
        })
        .fold(Quote::ZERO, |a, b| a.checked_add(b).unwrap());
    assert_eq!(charged, amount, "the parts sum exactly");
    assert_eq!(s.health("alice", Bucket::Isolated(0)).equity, Quote::ZERO);
    assert_eq!(s.view().totals.socialized_loss, amount);
}

/// The backstop vault takes over below 2/3 of maintenance, within its loss cap; past the cap
/// it does not, and the waterfall goes on.
#[test]
fn backstop_vault_takes_over_within_its_loss_cap() {
    let mut s = market("");
    s.deposit(0, "vault", "1000000");
    s.ok(r#"{"ts":0,"cmd":"set_backstop","account":"vault","loss_cap":"500"}"#);
    s.deposit_isolated(0, "alice", "6000", BTC);
    s.deposit_isolated(0, "bob", "6000", BTC);
    s.fill(1, BTC, "alice", "mm", "1", "50000");
    s.fill(1, BTC, "bob", "mm", "1", "50000");
    // 45,000: equity 1,000 < 2/3 × 2,250: both due; alice is first (ties by id).
    let events = oracle(&mut s, 2, "45000");
    let takeovers: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::BackstopTakeover { account, absorbed, .. } => Some((account.to_string(), *absorbed)),
            _ => None,
        })
        .collect();
    assert_eq!(takeovers, vec![("alice".into(), Quote::ZERO), ("bob".into(), Quote::ZERO)]);
    assert_eq!(s.position("vault", BTC).size, sz("2"));
    assert!(!in_liquidation(&s, "alice", Bucket::Isolated(0)));
    // The vault now holds 2 BTC bought at 50,000 with 2,000 of margin: at 44,000 it has lost
    // 2,000 − … beyond its 500 cap, so the next bankrupt account goes to the waterfall.
    s.deposit_isolated(3, "carol", "6000", BTC);
    s.fill(3, BTC, "carol", "mm", "1", "45000");
    let events = oracle(&mut s, 4, "38000");
    assert!(!events.iter().any(|e| matches!(e, Event::BackstopTakeover { .. })));
    assert!(events.iter().any(|e| matches!(e, Event::Deleveraged { .. })), "ADL against mm instead");
    assert!(s.view().backstop.unwrap().loss > q("500"));
}

/// An external liquidator: the refusals change nothing; the transfer is at the mark less the
/// discount; a second one in the same window is refused.
#[test]
fn external_liquidator_and_its_refusals() {
    let mut s = market(r#","liquidation":{"partial_threshold":"0","max_fraction_per_window":"0.2"}"#);
    s.deposit_isolated(0, "alice", "6000", BTC);
    s.deposit(0, "liq", "100000");
    s.deposit(0, "poor", "10");
    s.fill(1, BTC, "alice", "mm", "1", "50000");
    let take = |ts: u64, who: &str, limit: &str| {
        format!(
            r#"{{"ts":{ts},"cmd":"liquidate","liquidator":"{who}","account":"alice","market":"{BTC}","size":"1"{limit}}}"#
        )
    };
    assert!(matches!(s.rejects(&take(2, "liq", "")), Reject::NotLiquidatable { .. }));
    oracle(&mut s, 3, "46000");
    assert!(matches!(s.rejects(&take(4, "poor", "")), Reject::InsufficientMargin { .. }));
    // The discount is 1%: 45,540 is above a 45,500 limit.
    assert!(matches!(s.rejects(&take(4, "liq", r#","limit":"45500""#)), Reject::LimitBroken { .. }));
    let events = s.ok(&take(4, "liq", r#","limit":"45540""#));
    let done = events.iter().find_map(|e| match e {
        Event::Liquidated { size, price, discount, .. } => Some((*size, *price, *discount)),
        _ => None,
    });
    // 20% of the position per window (pacing), at 46,000 × 0.99.
    assert_eq!(done, Some((sz("0.2"), px("45540"), crate::testkit::r("0.01"))));
    assert_eq!(s.position("liq", BTC).size, sz("0.2"));
    assert!(matches!(s.rejects(&take(5, "liq", "")), Reject::Cooldown { .. }));
}

#[test]
fn liquidation_fills_are_bounded_by_their_order() {
    let mut s = market("");
    s.deposit_isolated(0, "alice", "6000", BTC);
    s.fill(1, BTC, "alice", "mm", "1", "50000");
    let (_, _, size, limit) = orders(&oracle(&mut s, 2, "46000"))[0];
    let more = size.checked_add(Size::from_raw(1)).unwrap();
    assert!(matches!(s.rejects(&liquidation_fill(3, "mm", "alice", more, limit)), Reject::LiquidationFill(_)));
    assert!(matches!(s.rejects(&liquidation_fill(3, "alice", "mm", size, limit)), Reject::LiquidationFill(_)));
    let worse = Price::from_raw(limit.raw() - 1);
    assert!(matches!(s.rejects(&liquidation_fill(3, "mm", "alice", size, worse)), Reject::LimitBroken { .. }));
    // No order at all: a plain account.
    s.deposit(3, "bob", "100000");
    assert!(matches!(s.rejects(&liquidation_fill(3, "mm", "bob", size, limit)), Reject::LiquidationFill(_)));
    // An unfilled order expires (3 s) and is re-issued at a fresh limit.
    let events = s.ok(r#"{"ts":3002,"cmd":"tick"}"#);
    assert!(events.iter().any(|e| matches!(e, Event::LiquidationOrderClosed { .. })));
    assert_eq!(orders(&events).len(), 1);
}

/// The index finds exactly what a full scan finds, after every price step of a crash and a
/// recovery, over a book of cross and isolated longs and shorts with several leverages.
#[test]
fn detection_finds_what_a_full_scan_finds() {
    let mut s = market("");
    for i in 0..40u32 {
        let id = format!("t{i}");
        let margin = 2_600 + 700 * (i % 13);
        if i % 2 == 0 {
            s.deposit_isolated(0, &id, &margin.to_string(), BTC);
        } else {
            s.deposit(0, &id, &margin.to_string());
        }
    }
    for i in 0..40u32 {
        let id = format!("t{i}");
        let size = format!("0.{:02}", 10 + i % 9 * 5);
        if i % 3 == 0 {
            s.fill(1, BTC, "mm", &id, &size, "50000");
        } else {
            s.fill(1, BTC, &id, "mm", &size, "50000");
        }
    }
    let mut started = 0;
    for (ts, p) in (2..).zip(["49000", "47000", "44000", "40000", "36000", "45000", "52000", "58000", "61000", "66000"])
    {
        let events = oracle(&mut s, ts, p);
        started += events.iter().filter(|e| matches!(e, Event::LiquidationStarted { .. })).count();
        let liquidating: Vec<u64> = s.engine.liquidations().map(|(k, _)| k).collect();
        for k in s.engine.scan_liquidatable() {
            assert!(liquidating.contains(&k), "at {p}: bucket {k} is below maintenance but was not found");
        }
    }
    assert!(started >= 5, "the path liquidates some buckets: {started}");
}

/// An isolated market with its own segment fund: its fees feed the segment, its deficit is paid
/// by the segment first (within its per-event cap), then by the global fund.
#[test]
fn segment_fund_pays_first_within_its_cap_then_the_global_fund() {
    let mut s = Story::new();
    s.ok(r#"{"ts":0,"cmd":"create_insurance_fund","fund":"btc","max_payout_per_event":"300"}"#);
    s.ok(&format!(
        r#"{{"ts":0,"cmd":"create_market","market":"{BTC}","initial_margin":"0.1","maintenance_margin":"0.05","taker_fee":"0.001","insurance_segment":"btc","insurance_fee_share":"0.5"}}"#
    ));
    s.price(0, BTC, "50000");
    s.deposit(0, "mm", "10000000");
    s.ok(r#"{"ts":0,"cmd":"fund_insurance","fund":"global","amount":"5000"}"#);
    s.deposit_isolated(0, "alice", "6100", BTC);
    s.fill(1, BTC, "alice", "mm", "1", "50000");
    // The buyer took liquidity: a 50 fee, half to the segment.
    assert_eq!(s.view().insurance_funds["btc"], q("25"));
    assert_eq!(s.view().fee_pool, q("25"));
    s.ok(r#"{"ts":1,"cmd":"fund_insurance","fund":"btc","amount":"975"}"#);
    // 43,000: equity 6,050 − 7,000 = −950: the segment pays its cap of 300, the global 650.
    let events = oracle(&mut s, 2, "43000");
    let paid: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::InsurancePaid { fund, amount, .. } => Some((fund.to_string(), *amount)),
            _ => None,
        })
        .collect();
    assert_eq!(paid, vec![("btc".to_string(), q("300")), ("global".to_string(), q("650"))]);
    let funds = s.view().insurance_funds;
    assert_eq!((funds["btc"], funds["global"]), (q("700"), q("4350")));
    assert!(matches!(
        s.rejects(r#"{"ts":3,"cmd":"fund_insurance","fund":"eth","amount":"1"}"#),
        Reject::UnknownFund(_)
    ));
}

/// One crash, processed most underwater first; exact ties by account id (not by the order the
/// accounts were created), including ids that share their first 16 bytes; ratios closer than
/// 2^-32 still ordered exactly.
#[test]
fn a_crash_is_processed_most_underwater_first_then_by_id() {
    let mut s = market("");
    // (id, margin): 20 BTC each; equal margins give exactly equal ratios.
    let book = [
        ("zed", "104000"),
        ("a-very-long-account-id-2", "104000"),
        ("bob", "104000"),
        ("a-very-long-account-id-1", "104000"),
        ("deep", "100500"),
        // 0.000001 USDC more than the tie group: at 46,000 its ratio is above theirs by 2.2e-11,
        // less than 2^-32, so only the exact comparison tells them apart.
        ("near", "104000.000001"),
    ];
    for (id, margin) in book {
        s.deposit(0, id, margin);
    }
    for (id, _) in book {
        s.fill(1, BTC, id, "mm", "20", "50000");
    }
    let events = oracle(&mut s, 2, "46000");
    // Orders only, nothing filled: the positions are as they were at the crash.
    let (near, bob) = (s.cross_health("near"), s.cross_health("bob"));
    assert_eq!(super::scaled_ratio(&near), super::scaled_ratio(&bob), "the test needs a near-tie");
    assert!(near.equity > bob.equity);
    let started: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::LiquidationStarted { account, .. } => Some(account.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        ["deep", "a-very-long-account-id-1", "a-very-long-account-id-2", "bob", "zed", "near"],
        "most underwater first, exact ties by id"
    );
}

/// The processing order sorts first on the ratio clamped to 64 bits (scaled by 2^32): ratios
/// below −2^31 all share the lowest key, and the exact comparison must still order them, ties
/// by id.
#[test]
fn ratios_beyond_the_clamped_sort_key_still_order_exactly() {
    let mut s = market("");
    for id in ["carol", "bob", "alice"] {
        s.deposit(0, id, "1");
    }
    let e = &s.engine;
    let item = |id: &str, equity: i128| {
        let health = crate::health::Health {
            equity: Quote::from_raw(equity),
            maintenance: Quote::from_raw(1),
            ..Default::default()
        };
        let k = key(e.account_idx(id).expect("deposited"), Bucket::Cross);
        (health, k, super::id_prefix(&crate::event::Id::from(id)))
    };
    // Ratios −3·10^12, −5·10^12 and −5·10^12: each far below −2^31.
    let items = [item("carol", -3_000_000_000_000), item("bob", -5_000_000_000_000), item("alice", -5_000_000_000_000)];
    assert!(items.iter().all(|(h, _, _)| super::scaled_ratio(h) < i128::from(i64::MIN)), "the test needs clamped keys");
    assert_eq!(e.most_underwater_first(&items), [2, 1, 0], "alice and bob (tied, by id), then carol");
}

/// A liquidation that falls due through time alone is stepped by the first command after its
/// deadline, whatever that command is: here the pacing window reopens before the order's long
/// TTL, and an unrelated deposit issues the next order.
#[test]
fn a_reopened_pacing_window_is_acted_on_by_any_later_command() {
    let mut s = market(
        r#","liquidation":{"partial_threshold":"0","max_fraction_per_window":"0.1","window_ms":1000,"order_ttl_ms":60000}"#,
    );
    s.deposit_isolated(0, "alice", "6000", BTC);
    s.fill(1, BTC, "alice", "mm", "1", "50000");
    let (_, _, size, limit) = orders(&oracle(&mut s, 2, "46000"))[0];
    assert_eq!(size, sz("0.1"), "paced to a tenth of the position per window");
    // Filled at once: the window's allowance is used up, so no new order until it reopens.
    let events = s.ok(&liquidation_fill(3, "mm", "alice", size, limit));
    assert!(orders(&events).is_empty());
    assert!(orders(&s.ok(r#"{"ts":500,"cmd":"deposit","account":"carol","asset":"USDC","amount":"1"}"#)).is_empty());
    // At 1,002 the window reopens, long before the first order's TTL would have run out.
    let events = s.ok(r#"{"ts":1500,"cmd":"deposit","account":"carol","asset":"USDC","amount":"1"}"#);
    assert_eq!(orders(&events).len(), 1, "the next paced order: {events:?}");
}
