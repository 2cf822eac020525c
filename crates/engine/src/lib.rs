//! # ballast-engine
//!
//! The deterministic risk engine of Ballast: fixed-point numbers, collateral assets with
//! haircuts, perpetual markets, cross and isolated accounts, margin with notional tiers and
//! dynamic fractions, oracle aggregation with guards, lazy funding, and the command contract.
//!
//! One entry point: [`Engine::apply`] takes a [`TimedCommand`] and either appends the events of
//! the state change or rejects the command with a [`Reject`] reason and changes nothing. No I/O,
//! no clock, no floats, no hash-map iteration in outputs.
//!
//! ```
//! use ballast_engine::{parse_line, Engine, Event, Reject};
//!
//! let mut engine = Engine::new();
//! let mut events = Vec::new();
//! for line in [
//!     r#"{"ts":0,"cmd":"create_market","market":"BTC-PERP","initial_margin":"0.1","maintenance_margin":"0.05"}"#,
//!     r#"{"ts":0,"cmd":"deposit","account":"alice","asset":"USDC","amount":"1000"}"#,
//!     r#"{"ts":0,"cmd":"deposit","account":"bob","asset":"USDC","amount":"1000"}"#,
//!     r#"{"ts":1000,"cmd":"oracle","market":"BTC-PERP","source":"s1","price":"50000"}"#,
//!     r#"{"ts":1000,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"0.1","price":"50000"}"#,
//! ] {
//!     engine.apply(&parse_line(line).unwrap(), &mut events).unwrap();
//! }
//! assert!(matches!(events.last(), Some(Event::Filled(_))));
//!
//! // 1 BTC more would need 5,500 of initial margin against 1,000 of equity: refused, and
//! // nothing changes.
//! let before = engine.state_hash();
//! let more = parse_line(r#"{"ts":2000,"cmd":"fill","market":"BTC-PERP","buyer":"alice","seller":"bob","size":"1","price":"50000"}"#).unwrap();
//! let refused = engine.apply(&more, &mut events);
//! assert!(matches!(refused, Err(Reject::InsufficientMargin { .. })));
//! assert_eq!(engine.state_hash(), before);
//! ```
//!
//! Layout: pure math in [`num`], [`margin`], [`oracle`] and [`funding`]; state in [`account`],
//! [`asset`] and [`market`]; health in [`health`]; state changes in [`engine`]; the external
//! contract in [`command`], [`event`] and [`view`].

#![forbid(unsafe_code)]

pub mod account;
pub mod adl;
pub mod asset;
pub mod breaker;
pub mod command;
pub mod detection;
pub mod engine;
pub mod error;
pub mod event;
pub mod funding;
pub mod governance;
pub mod health;
pub mod insurance;
pub mod liquidation;
pub mod margin;
pub mod market;
pub mod num;
pub mod oracle;
pub mod view;
pub mod withdrawal;

#[cfg(test)]
mod testkit;

pub use command::{parse_line, Command, ParseError, TimedCommand};
pub use engine::Engine;
pub use error::{ParamError, Reject};
pub use event::Event;
pub use view::StateView;
