//! ClickHouse side: the client (connection with TCP_NODELAY and timeouts, server version), the
//! schema (migrations, adoption snapshots), the dedup lookup and the INSERT. Modern-only
//! features are gated on the version the server reports at start-up:
//! - servers >= 22.8: RowBinaryWithNamesAndTypes with schema validation (the crate's default),
//!   `insert_deduplication_token` per insert, `async_insert=0` (on by default since 26.2; we
//!   batch ourselves);
//! - older servers (the 18.16 test server): plain RowBinary without validation.

mod client;
mod insert;
mod lookup;
mod schema;

pub use client::{ClickHouse, ClickHouseError, MODERN};
pub use insert::{InsertId, dedup_token};
