//! The one place where the lab meets the engine's liquidation contract: the events of
//! liquidation, the waterfall and the breakers, read into what the simulator acts on, and the
//! commands the venue sends back (liquidation fills, insurance and backstop funding).

use ballast_engine::command::{Fill, Side};
use ballast_engine::event::{Id, OrderClosed, OrderSide};
use ballast_engine::num::{Price, Quote, Size};
use ballast_engine::{parse_line, Command, Engine, Event, TimedCommand};
use serde_json::json;

/// A liquidation order the engine sent to the venue's book.
#[derive(Clone, Debug, PartialEq)]
pub struct LiqOrder {
    pub order: u64,
    pub account: Id,
    pub market: Id,
    /// The liquidated account sells (a long being closed).
    pub sell: bool,
    pub size: Size,
    pub limit: Price,
    pub expires: u64,
}

/// Circuit-breaker states, in order of severity.
pub const BREAKER_STATES: [&str; 4] = ["active", "reduce_only", "halted", "settlement"];

/// The account that plays the backstop vault in a scenario with one.
pub const VAULT: &str = "backstop";

/// What the lab needs to know about one event.
#[derive(Clone, Debug, PartialEq)]
pub enum LabEvent {
    /// Nothing the simulator acts on or counts.
    Quiet,
    LiquidationOrder(LiqOrder),
    /// The order left the book unfilled (expired, or its liquidation ended).
    LiquidationOrderExpired {
        order: u64,
    },
    LiquidationStarted,
    LiquidationEnded,
    BackstopTakeover {
        notional: f64,
    },
    /// A fund paid a deficit; `balance` is the fund's after.
    InsurancePaid {
        amount: f64,
        balance: f64,
    },
    /// One winner's deleveraging trade (the market's id is inline: no allocation for each of the
    /// thousands of trades a pro-rata deleveraging makes).
    Deleveraged {
        market: Id,
        notional: f64,
    },
    /// The summary of one deleveraging: the policy's overshoot.
    AdlOvershoot {
        notional: f64,
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

/// A USDC amount as `f64`: the nearest, as parsing its decimal text gives (both exact roundings of
/// raw / 10^6 while the raw value is below 2^53, i.e. under 9·10^9 USDC).
fn f(q: Quote) -> f64 {
    q.raw() as f64 / 10f64.powi(Quote::DECIMALS as i32)
}

/// Classify an engine event.
pub fn classify(ev: &Event) -> LabEvent {
    match ev {
        Event::LiquidationOrder { order, account, market, side, size, limit, expires } => {
            LabEvent::LiquidationOrder(LiqOrder {
                order: *order,
                account: account.clone(),
                market: market.clone(),
                sell: *side == OrderSide::Sell,
                size: *size,
                limit: *limit,
                expires: *expires,
            })
        }
        Event::LiquidationOrderClosed { order, reason, .. } if *reason != OrderClosed::Filled => {
            LabEvent::LiquidationOrderExpired { order: *order }
        }
        Event::LiquidationStarted { .. } => LabEvent::LiquidationStarted,
        Event::LiquidationEnded { .. } => LabEvent::LiquidationEnded,
        Event::BackstopTakeover { notional, .. } => LabEvent::BackstopTakeover { notional: f(*notional) },
        Event::InsurancePaid { amount, balance, .. } => {
            LabEvent::InsurancePaid { amount: f(*amount), balance: f(*balance) }
        }
        Event::Deleveraged { market, size, price, .. } => LabEvent::Deleveraged {
            market: market.clone(),
            notional: size.notional(*price, ballast_engine::num::Round::Ceil).map_or(0.0, f),
        },
        Event::AutoDeleveraged { overshoot_notional, .. } => {
            LabEvent::AdlOvershoot { notional: f(*overshoot_notional) }
        }
        Event::SocializedLoss { amount, .. } => LabEvent::SocializedLoss { amount: f(*amount) },
        Event::MarketStatusChanged { market, to, .. } => {
            let name = serde_json::to_value(to).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            let state = BREAKER_STATES.iter().position(|b| *b == name).unwrap_or(0);
            LabEvent::Breaker { market: market.to_string(), state: state as u8 }
        }
        Event::OracleValidityChanged { market, to, .. } => LabEvent::OracleValidity {
            market: market.as_ref().map(|m| m.to_string()),
            to: serde_json::to_value(to).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        },
        _ => LabEvent::Quiet,
    }
}

/// The venue's fill of a liquidation order (`"liquidation": true`); the taker is set by
/// [`set_fill`] before use.
pub fn liquidation_fill(ts: u64, market: &str, buyer: &str, seller: &str, size: Size, price: Price) -> TimedCommand {
    let (market, buyer, seller) = (market.to_string(), buyer.to_string(), seller.to_string());
    TimedCommand {
        ts,
        cmd: Command::Fill(Fill { market, buyer, seller, size, price, taker: Side::Buyer, liquidation: true }),
    }
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
    let (market, buyer, seller) = (market.to_string(), buyer.to_string(), seller.to_string());
    TimedCommand { ts, cmd: Command::Fill(Fill { market, buyer, seller, size, price, taker, liquidation: false }) }
}

/// `fund_insurance` for a fund.
pub fn fund_insurance(ts: u64, fund: &str, amount: &str) -> TimedCommand {
    parse_line(&json!({"ts": ts, "cmd": "fund_insurance", "fund": fund, "amount": amount}).to_string())
        .expect("a fund_insurance built from valid parts decodes")
}

/// The backstop vault: a deposit of its capital into [`VAULT`], then `set_backstop` with a loss
/// cap equal to that capital.
pub fn backstop(ts: u64, amount: &str) -> [TimedCommand; 2] {
    let lines = [
        json!({"ts": ts, "cmd": "deposit", "account": VAULT, "asset": "USDC", "amount": amount}),
        json!({"ts": ts, "cmd": "set_backstop", "account": VAULT, "loss_cap": amount}),
    ];
    lines.map(|l| parse_line(&l.to_string()).expect("backstop commands built from valid parts decode"))
}

/// What the waterfall absorbed, layer by layer, from the engine's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Waterfall {
    pub bad_debt: f64,
    pub insurance: f64,
    pub backstop: f64,
    pub adl: f64,
    pub socialized: f64,
}

pub fn waterfall(engine: &Engine) -> Waterfall {
    let t = engine.totals();
    Waterfall {
        bad_debt: f(t.bad_debt),
        insurance: f(t.insurance_paid),
        backstop: f(t.backstop_absorbed),
        adl: f(t.adl_covered),
        socialized: f(t.socialized_loss),
    }
}

/// The backstop vault's result: its equity less its capital (0 without a vault).
pub fn backstop_pnl(engine: &Engine) -> f64 {
    let Some(b) = engine.backstop() else { return 0.0 };
    let Some(vault) = engine.account(VAULT) else { return 0.0 };
    let equity = engine.health(vault, ballast_engine::account::Bucket::Cross).map_or(b.capital, |h| h.equity);
    f(equity) - f(b.capital)
}

/// The global insurance fund's balance.
pub fn insurance_balance(engine: &Engine) -> f64 {
    engine.insurance_funds().first().map_or(0.0, |fund| f(fund.balance))
}

/// The serialized name of an event (`"filled"`, `"liquidation_order"`, ...).
pub fn event_name(ev: &Event) -> String {
    serde_json::to_value(ev)
        .ok()
        .and_then(|v| v.get("event").and_then(serde_json::Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_liquidation_events() {
        let order = Event::LiquidationOrder {
            order: 7,
            account: "a1".into(),
            market: "BTC-PERP".into(),
            side: OrderSide::Sell,
            size: Size::parse("0.5").unwrap(),
            limit: Price::parse("49000.5").unwrap(),
            expires: 61000,
        };
        let LabEvent::LiquidationOrder(o) = classify(&order) else { panic!("not an order") };
        assert_eq!((o.order, o.sell, o.expires), (7, true, 61000));
        assert_eq!(o.limit.to_string(), "49000.5");
        let closed = |reason| Event::LiquidationOrderClosed {
            order: 7,
            account: "a1".into(),
            market: "BTC-PERP".into(),
            reason,
            unfilled: Size::ZERO,
        };
        assert_eq!(classify(&closed(OrderClosed::Expired)), LabEvent::LiquidationOrderExpired { order: 7 });
        assert_eq!(classify(&closed(OrderClosed::Filled)), LabEvent::Quiet);
        let adl = Event::Deleveraged {
            market: "BTC-PERP".into(),
            account: "a1".into(),
            counterparty: "w".into(),
            size: Size::parse("2").unwrap(),
            price: Price::parse("100").unwrap(),
        };
        assert_eq!(classify(&adl), LabEvent::Deleveraged { market: "BTC-PERP".into(), notional: 200.0 });
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
