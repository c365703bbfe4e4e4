//! What the fuzz targets share: where the repo's schemas are.

use std::path::PathBuf;

/// `schemas/avro` of this repository (its `registry.json` and `.avsc` files).
pub fn registry_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/avro"))
}
