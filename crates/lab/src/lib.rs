//! # ballast-lab
//!
//! The stress lab of Ballast: scenario files, historical and synthetic price paths, a
//! population of accounts, a venue model (liquidity, liquidators, oracle behaviour, traders)
//! that drives the real engine, Monte Carlo, sweeps, comparisons and the reports.
//!
//! Floating point is used here for analytics and for the models; the engine only ever sees
//! fixed-point commands built from them.
//!
//! Tail statistics follow stated conventions, e.g. VaR by nearest rank and expected shortfall
//! as the mean from that rank on:
//!
//! ```
//! use ballast_lab::stats::{es, var};
//!
//! let losses: Vec<f64> = (1..=100).map(f64::from).collect(); // sorted
//! assert_eq!(var(&losses, 0.99), 99.0);
//! assert_eq!(es(&losses, 0.99), 99.5);
//! ```

pub mod book;
pub mod charts;
pub mod contract;
pub mod data;
pub mod error;
pub mod paths;
pub mod report;
pub mod runs;
pub mod scenario;
pub mod sim;
pub mod stats;
pub mod time;

pub use error::LabError;
