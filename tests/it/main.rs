//! The integration-test binary: one binary, one module per area.
//!
//! Tests that need the real broker read `DRIFTD_TEST_BROKER` (set by `scripts/test.sh`, which
//! starts tansu) and fail when it is missing.

mod cli;
mod contain;
mod contain_e2e;
mod corpus;
mod kafka_e2e;
mod memory;
mod privacy_corpus;
mod support;
