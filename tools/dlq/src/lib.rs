//! umkm-dlq: the dead-letter topics, read and put back (docs/operations.md "The dead-letter
//! topics"). [`record`] is one dead letter as read from the topic, [`select`] picks records by
//! their `dlq.*` headers, [`summary`] counts them, [`decode`] shows a payload where its schema
//! is known, [`replay`] sends records back to their source topic, and [`kafka`] is the IO.

pub mod decode;
pub mod kafka;
pub mod record;
pub mod replay;
pub mod select;
pub mod summary;
