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
//! Layout: pure math in [`num`], [`margin`], [`oracle`] and [`funding`]; state in [`account`],
//! [`asset`] and [`market`]; health in [`health`]; state changes in [`engine`]; the external
//! contract in [`command`], [`event`] and [`view`].

#![forbid(unsafe_code)]

pub mod account;
pub mod asset;
pub mod command;
pub mod engine;
pub mod error;
pub mod event;
pub mod funding;
pub mod health;
pub mod margin;
pub mod market;
pub mod num;
pub mod oracle;
pub mod view;

#[cfg(test)]
mod testkit;

pub use command::{parse_line, Command, ParseError, TimedCommand};
pub use engine::Engine;
pub use error::{ParamError, Reject};
pub use event::Event;
pub use view::StateView;
