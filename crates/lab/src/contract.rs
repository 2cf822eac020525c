//! The one place where the lab meets the parts of the engine's contract that are still being
//! built on main (liquidation orders, the loss waterfall, insurance funds, circuit breakers).
//!
//! The lab reads those events by their serialized `event` name and fields, as documented for
//! the liquidation layer, so it compiles against the engine with or without them. When the
//! real variants exist, [`classify`] can match them directly (one arm each) for speed; nothing
//! else in the lab changes. Likewise the liquidation fill and the pool commands are built here
//! and only here.

use ballast_engine::command::{Fill, Side};
use ballast_engine::num::{Price, Size};
use ballast_engine::{parse_line, Command, Engine, Event, TimedCommand};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// A liquidation order the engine sent to the venue's book.
#[derive(Clone, Debug, PartialEq)]
pub struct LiqOrder {
    pub order: u64,
    pub account: String,
    pub market: String,
    /// The liquidated account sells (a long being closed).
    pub sell: bool,
    pub size: Size,
    pub limit: Price,
    pub expires: u64,
}

/// Circuit-breaker states, in order of severity.
pub const BREAKER_STATES: [&str; 4] = ["active", "reduce_only", "halted", "settlement"];

/// What the lab needs to know about one event.
#[derive(Clone, Debug, PartialEq)]
pub enum LabEvent {
    /// Nothing the simulator acts on or counts.
    Quiet,
    LiquidationOrder(LiqOrder),
    LiquidationOrderExpired {
        order: u64,
    },
    LiquidationStarted {
        account: String,
    },
    LiquidationEnded,
    BackstopTakeover {
        notional: f64,
    },
    InsurancePaid {
        amount: f64,
    },
    Deleveraged {
        notional: f64,
        overshoot: f64,
    },
    SocializedLoss {
        amount: f64,
    },
    /// A market's breaker state changed (index into [`BREAKER_STATES`]).
    Breaker {
        market: String,
        state: u8,
    },
    /// An oracle's validity changed (counted for the report).
    OracleValidity {
        market: Option<String>,
        to: String,
    },
}

/// Classify an engine event. The frequent variants of today's engine are matched directly;
/// everything else goes through its JSON form by name.
pub fn classify(ev: &Event) -> LabEvent {
    match ev {
        Event::OracleUpdated { .. }
        | Event::Filled { .. }
        | Event::FundingSettled { .. }
        | Event::FundingApplied { .. }
        | Event::Deposited { .. }
        | Event::Withdrawn { .. }
        | Event::MarginTransferred { .. }
        | Event::MarketCreated { .. }
        | Event::AssetCreated { .. } => LabEvent::Quiet,
        other => match serde_json::to_value(other) {
            Ok(v) => classify_json(&v),
            Err(_) => LabEvent::Quiet,
        },
    }
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str().map(str::to_string).or_else(|| x.as_u64().map(|n| n.to_string())))
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(|x| x.as_str().and_then(|t| t.parse().ok()).or_else(|| x.as_f64()))
}

fn first_num(v: &Value, keys: &[&str]) -> f64 {
    keys.iter().find_map(|k| num(v, k)).unwrap_or(0.0)
}

fn notional(v: &Value) -> f64 {
    num(v, "notional").unwrap_or_else(|| {
        let size = num(v, "size").unwrap_or(0.0).abs();
        let price = ["price", "bankruptcy_price", "mark"].iter().find_map(|k| num(v, k)).unwrap_or(0.0);
        size * price
    })
}

/// Classify an event from its serialized form (`{"event": name, ...fields}`).
pub fn classify_json(v: &Value) -> LabEvent {
    let name = v.get("event").and_then(Value::as_str).unwrap_or("");
    match name {
        "liquidation_order" => {
            let order = v.get("order").and_then(Value::as_u64);
            let size = s(v, "size").and_then(|t| Size::parse(&t).ok());
            let limit = s(v, "limit").and_then(|t| Price::parse(&t).ok());
            match (order, size, limit, s(v, "account"), s(v, "market")) {
                (Some(order), Some(size), Some(limit), Some(account), Some(market)) => {
                    LabEvent::LiquidationOrder(LiqOrder {
                        order,
                        account,
                        market,
                        sell: s(v, "side").as_deref() != Some("buy"),
                        size,
                        limit,
                        expires: v.get("expires").and_then(Value::as_u64).unwrap_or(u64::MAX),
                    })
                }
                _ => LabEvent::Quiet,
            }
        }
        "liquidation_order_expired" | "liquidation_order_cancelled" => v
            .get("order")
            .and_then(Value::as_u64)
            .map_or(LabEvent::Quiet, |order| LabEvent::LiquidationOrderExpired { order }),
        "liquidation_started" => LabEvent::LiquidationStarted { account: s(v, "account").unwrap_or_default() },
        "liquidation_ended" => LabEvent::LiquidationEnded,
        "backstop_takeover" => LabEvent::BackstopTakeover { notional: notional(v) },
        "insurance_paid" => LabEvent::InsurancePaid { amount: first_num(v, &["amount", "paid"]) },
        "deleveraged" => LabEvent::Deleveraged { notional: notional(v), overshoot: first_num(v, &["overshoot"]) },
        "socialized_loss" => LabEvent::SocializedLoss { amount: first_num(v, &["amount", "loss"]) },
        "oracle_validity_changed" => {
            LabEvent::OracleValidity { market: s(v, "market"), to: s(v, "to").unwrap_or_default() }
        }
        n if n.contains("breaker") || n == "market_status_changed" => {
            let to = s(v, "to").or_else(|| s(v, "status")).or_else(|| s(v, "state")).unwrap_or_default();
            let state =
                BREAKER_STATES.iter().position(|b| *b == to).unwrap_or(if n.contains("tripped") { 1 } else { 0 });
            LabEvent::Breaker { market: s(v, "market").unwrap_or_default(), state: state as u8 }
        }
        _ => LabEvent::Quiet,
    }
}

/// Whether this engine's `fill` takes the `liquidation` flag (decided once).
fn fill_has_liquidation_flag() -> bool {
    static FLAG: OnceLock<bool> = OnceLock::new();
    *FLAG.get_or_init(|| {
        serde_json::from_value::<Fill>(
            json!({"market":"M","buyer":"a","seller":"b","size":"1","price":"1","liquidation":true}),
        )
        .is_ok()
    })
}

/// The venue's fill of a liquidation order (`"liquidation": true` when the engine knows it);
/// the taker is set by [`set_fill`] before use.
pub fn liquidation_fill(ts: u64, market: &str, buyer: &str, seller: &str, size: Size, price: Price) -> TimedCommand {
    let mut v = json!({"market": market, "buyer": buyer, "seller": seller, "size": size.to_string(), "price": price.to_string(), "taker": "buyer"});
    if fill_has_liquidation_flag() {
        v["liquidation"] = Value::Bool(true);
    }
    let fill: Fill = serde_json::from_value(v).expect("a fill built from valid parts decodes");
    TimedCommand { ts, cmd: Command::Fill(fill) }
}

/// Rewrite a fill command in place (its strings keep their capacity: no allocation once warm).
#[allow(clippy::too_many_arguments)]
pub fn set_fill(
    cmd: &mut TimedCommand,
    ts: u64,
    market: &str,
    buyer: &str,
    seller: &str,
    size: Size,
    price: Price,
    taker: Side,
) {
    cmd.ts = ts;
    if let Command::Fill(f) = &mut cmd.cmd {
        for (field, value) in [(&mut f.market, market), (&mut f.buyer, buyer), (&mut f.seller, seller)] {
            field.clear();
            field.push_str(value);
        }
        f.size = size;
        f.price = price;
        f.taker = taker;
    }
}

/// A plain fill (not a liquidation).
pub fn fill(ts: u64, market: &str, buyer: &str, seller: &str, size: Size, price: Price, taker: Side) -> TimedCommand {
    let v = json!({"market": market, "buyer": buyer, "seller": seller, "size": size.to_string(), "price": price.to_string(), "taker": taker});
    let fill: Fill = serde_json::from_value(v).expect("a fill built from valid parts decodes");
    TimedCommand { ts, cmd: Command::Fill(fill) }
}

/// `fund_insurance` for a fund; `None` when this engine has no insurance funds yet.
pub fn fund_insurance(ts: u64, fund: &str, amount: &str) -> Option<TimedCommand> {
    parse_line(&json!({"ts": ts, "cmd": "fund_insurance", "fund": fund, "amount": amount}).to_string()).ok()
}

/// Funding of the backstop vault; `None` when this engine has no such command.
pub fn fund_backstop(ts: u64, amount: &str) -> Option<TimedCommand> {
    parse_line(&json!({"ts": ts, "cmd": "fund_backstop", "amount": amount}).to_string()).ok()
}

/// Totals the engine reports beyond deposits and withdrawals (`bad_debt`, `socialized_loss`)
/// when it has them.
pub fn engine_totals(engine: &Engine) -> (Option<f64>, Option<f64>) {
    match serde_json::to_value(engine.totals()) {
        Ok(v) => (num(&v, "bad_debt"), num(&v, "socialized_loss")),
        Err(_) => (None, None),
    }
}

/// The serialized name of an event (`"filled"`, `"liquidation_order"`, ...).
pub fn event_name(ev: &Event) -> String {
    serde_json::to_value(ev)
        .ok()
        .and_then(|v| v.get("event").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_liquidation_order_of_the_contract() {
        let v: Value = serde_json::from_str(
            r#"{"event":"liquidation_order","order":7,"account":"a1","market":"BTC-PERP","side":"sell","size":"0.5","limit":"49000.5","expires":61000}"#,
        )
        .unwrap();
        let LabEvent::LiquidationOrder(o) = classify_json(&v) else { panic!("not an order") };
        assert_eq!(o.order, 7);
        assert!(o.sell);
        assert_eq!(o.size.to_string(), "0.5");
        assert_eq!(o.limit.to_string(), "49000.5");
        assert_eq!(o.expires, 61000);
        let v: Value = serde_json::from_str(r#"{"event":"liquidation_order_expired","order":7}"#).unwrap();
        assert_eq!(classify_json(&v), LabEvent::LiquidationOrderExpired { order: 7 });
        let v: Value =
            serde_json::from_str(r#"{"event":"deleveraged","size":"2","price":"100","overshoot":"5"}"#).unwrap();
        assert_eq!(classify_json(&v), LabEvent::Deleveraged { notional: 200.0, overshoot: 5.0 });
    }

    #[test]
    fn builds_fills() {
        let c = liquidation_fill(
            5,
            "BTC-PERP",
            "liq-0",
            "a1",
            Size::parse("0.5").unwrap(),
            Price::parse("49000.5").unwrap(),
        );
        assert_eq!(c.ts, 5);
        assert!(matches!(c.cmd, Command::Fill(_)));
    }
}
