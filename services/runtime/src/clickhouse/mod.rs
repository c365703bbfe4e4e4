//! ClickHouse side: the client (connection with TCP_NODELAY and timeouts, server version), the
//! schema (migrations, adoption snapshots), the dedup lookup, the rollups' repair and the fenced INSERT ([`Fence`]:
//! rows in RowBinary as external data, declared with the table's own column types read once).
//! Modern-only features are gated on the version the server reports at start-up: servers from
//! 22.8 on get `insert_deduplication_token` per insert and `async_insert=0` (on by default
//! since 26.2; we batch ourselves), and column comments.

mod client;
mod external;
mod fence;
mod insert;
mod lookup;
mod rollups;
mod rowbinary;
mod schema;

pub use client::{ClickHouse, ClickHouseError, MODERN};
pub use fence::{FENCED_CODE, Fence, fence_condition, fenced_insert_sql};
pub use insert::{InsertId, dedup_token};
pub use lookup::FoundAt;
pub use rollups::RepairReport;
