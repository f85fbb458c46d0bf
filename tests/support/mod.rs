//! What the tests and benchmarks share: fixtures from `tests/data`, AdmissionReviews
//! through the pure handler (`review`), and the real server over TLS (`server`).
//!
//! Every target declares it `pub mod support;`: the helpers are its public items, so a
//! target that uses only some of them is not told the others are dead.

pub mod pods;
pub mod review;
pub mod server;

use serde_json::Value;

/// Reads `tests/data/<path>`, e.g. `pod-create.json` or `wire/malformed.json`.
pub fn fixture(path: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("failed to read {path}: {e}"))
}

/// A fixture as JSON.
pub fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).expect("fixture is JSON")
}
