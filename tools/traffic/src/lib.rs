//! The traffic tool: a believable Banten ([`banten`]), the per-family sample generators the
//! tests build their cases from ([`qris`], [`noncash`], [`merchants`]), and how messages reach
//! the broker ([`kafka`]: topic creation and the one publish loop). `umkm-traffic`
//! (`src/main.rs`) is its command line.

pub mod banten;
pub mod contracts;
pub mod kafka;
pub mod merchants;
pub mod noncash;
pub mod qris;
