//! Shared runtime of the umkm-pulse consumers. A service implements [`family::Family`] and
//! calls [`main_for`]; this crate does the rest.
//!
//! Reading order, in the direction an event travels: [`service`] (start-up) → [`kafka`]
//! (`Received`) → [`pipeline`] (decode → family → batch → dead letters / dedup → insert →
//! commit) → [`clickhouse`] (lookup, INSERT, schema). Around them: [`config`], [`retry`],
//! [`metrics`], [`admin`] (health), [`progress`] (the group's lag and stalls), [`registry`],
//! [`faults`] (fault injection for tests), [`cli`].

pub mod admin;
pub mod cli;
pub mod clickhouse;
pub mod config;
pub mod family;
pub mod faults;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod registry;
pub mod retry;
pub mod security;
pub mod service;
pub mod untrusted;

pub use service::{EXIT_UNFLUSHED, main_for, run_service, shutdown_signal};
