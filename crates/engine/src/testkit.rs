//! Shared test fixtures: a `Story` drives an engine with command lines as they appear in
//! files, and checks on every rejection that nothing changed.

use crate::account::Bucket;
use crate::command::parse_line;
use crate::error::Reject;
use crate::event::Event;
use crate::health::Health;
use crate::num::{Price, Quote, Ratio, Size};
use crate::view::{PositionView, StateView};
use crate::Engine;

pub struct Story {
    pub engine: Engine,
}

impl Story {
    pub fn new() -> Self {
        Story { engine: Engine::new() }
    }

    /// A market with one oracle source priced at `price` at ts 0.
    pub fn with_market(market: &str, initial: &str, maintenance: &str, price: &str) -> Self {
        let mut s = Story::new();
        s.ok(&format!(
            r#"{{"ts":0,"cmd":"create_market","market":"{market}","initial_margin":"{initial}","maintenance_margin":"{maintenance}"}}"#
        ));
        s.price(0, market, price);
        s
    }

    /// `long` and `short` each open 1 unit at `price` against a market maker, with `margin` of
    /// isolated collateral: the setting of the published liquidation-price examples.
    pub fn isolated_long_and_short(market: &str, initial: &str, maintenance: &str, price: &str, margin: &str) -> Self {
        let mut s = Story::with_market(market, initial, maintenance, price);
        s.deposit_isolated(0, "long", margin, market);
        s.deposit_isolated(0, "short", margin, market);
        s.deposit(0, "mm", "1000000");
        s.fill(1, market, "long", "mm", "1", price);
        s.fill(1, market, "mm", "short", "1", price);
        s
    }

    /// Apply a command line; panics with the reason if it is rejected.
    pub fn ok(&mut self, line: &str) -> Vec<Event> {
        match self.try_line(line) {
            Ok(events) => events,
            Err(e) => panic!("expected {line} to be accepted, got: {e}"),
        }
    }

    /// Apply a command line that must be rejected; checks that the state and the sequence
    /// number did not change and returns the reason.
    pub fn rejects(&mut self, line: &str) -> Reject {
        let before = self.engine.state_hash();
        let seq = self.engine.seq();
        match self.try_line(line) {
            Ok(events) => panic!("expected {line} to be rejected, got {events:?}"),
            Err(e) => {
                assert_eq!(self.engine.state_hash(), before, "a rejected command changed the state: {line}");
                assert_eq!(self.engine.seq(), seq);
                e
            }
        }
    }

    pub fn try_line(&mut self, line: &str) -> Result<Vec<Event>, Reject> {
        let cmd = parse_line(line).unwrap_or_else(|e| panic!("test line does not parse: {e}: {line}"));
        let mut events = Vec::new();
        self.engine.apply(&cmd, &mut events)?;
        assert_eq!(self.engine.conservation_error(), Ok(Quote::ZERO), "conservation broken after {line}");
        Ok(events)
    }

    pub fn deposit(&mut self, ts: u64, account: &str, amount: &str) {
        self.ok(&format!(r#"{{"ts":{ts},"cmd":"deposit","account":"{account}","asset":"USDC","amount":"{amount}"}}"#));
    }

    pub fn deposit_isolated(&mut self, ts: u64, account: &str, amount: &str, market: &str) {
        self.ok(&format!(
            r#"{{"ts":{ts},"cmd":"deposit","account":"{account}","asset":"USDC","amount":"{amount}","isolated":"{market}"}}"#
        ));
    }

    pub fn price(&mut self, ts: u64, market: &str, price: &str) {
        self.ok(&format!(r#"{{"ts":{ts},"cmd":"oracle","market":"{market}","source":"s1","price":"{price}"}}"#));
    }

    pub fn fill_line(ts: u64, market: &str, buyer: &str, seller: &str, size: &str, price: &str) -> String {
        format!(
            r#"{{"ts":{ts},"cmd":"fill","market":"{market}","buyer":"{buyer}","seller":"{seller}","size":"{size}","price":"{price}"}}"#
        )
    }

    pub fn fill(&mut self, ts: u64, market: &str, buyer: &str, seller: &str, size: &str, price: &str) -> Vec<Event> {
        self.ok(&Self::fill_line(ts, market, buyer, seller, size, price))
    }

    pub fn view(&self) -> StateView {
        self.engine.view().expect("state view")
    }

    /// The state view of `account`'s position in `market`.
    pub fn position(&self, account: &str, market: &str) -> PositionView {
        let mut view = self.view();
        let acc = view.accounts.remove(account).unwrap_or_else(|| panic!("no account {account}"));
        acc.positions.into_iter().find(|p| p.market == market).unwrap_or_else(|| panic!("{account} has no {market}"))
    }

    pub fn health(&self, account: &str, bucket: Bucket) -> Health {
        let acc = self.engine.account(account).expect("account");
        self.engine.health(acc, bucket).expect("health")
    }

    pub fn cross_health(&self, account: &str) -> Health {
        self.health(account, Bucket::Cross)
    }
}

impl Default for Story {
    fn default() -> Self {
        Self::new()
    }
}

/// Round a price to the cent, half away from zero (how venues print liquidation prices).
pub fn to_cents(p: Price) -> String {
    let raw = p.raw();
    let cents = (raw + 500_000) / 1_000_000;
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Literals for tests: a quote amount, a ratio, a price and a size from decimal strings.
pub fn q(s: &str) -> Quote {
    Quote::parse(s).unwrap()
}
pub fn r(s: &str) -> Ratio {
    Ratio::parse(s).unwrap()
}
pub fn px(s: &str) -> Price {
    Price::parse(s).unwrap()
}
pub fn sz(s: &str) -> Size {
    Size::parse(s).unwrap()
}
