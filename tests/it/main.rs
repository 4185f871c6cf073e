//! The integration-test binary: one binary, one module per area.
//!
//! Two tiers. Plain `cargo test` runs everything that needs no outside service: the CLI, the
//! daemon in process on librdkafka's mock cluster, containment against vendor-shaped servers,
//! the privacy corpus. The `e2e` feature (`scripts/test.sh` enables it) adds the tests against
//! real services — the tansu broker (`DRIFTD_TEST_BROKER`), Alertmanager
//! (`DRIFTD_TEST_ALERTMANAGER`) and the Python flagd provider — which fail, never skip, when a
//! service is missing.

mod admin;
mod approve;
#[cfg(feature = "e2e")]
mod broker_faults;
mod cli;
mod contain;
#[cfg(feature = "e2e")]
mod contain_e2e;
#[cfg(feature = "e2e")]
mod contain_restart_e2e;
mod corpus;
mod daemon;
mod dashboards;
#[cfg(feature = "e2e")]
mod dashboards_e2e;
#[cfg(feature = "e2e")]
mod deploy;
#[cfg(feature = "e2e")]
mod evidence_restart_e2e;
#[cfg(feature = "e2e")]
mod fence_e2e;
mod gate;
#[cfg(feature = "e2e")]
mod kafka_e2e;
mod memory;
mod privacy_corpus;
#[cfg(feature = "e2e")]
mod promtool_e2e;
#[cfg(feature = "e2e")]
mod replicas_e2e;
mod restart;
#[cfg(feature = "e2e")]
mod restart_e2e;
#[cfg(feature = "e2e")]
mod sasl_e2e;
mod secrets;
#[cfg(feature = "e2e")]
mod start_from_e2e;
#[cfg(feature = "e2e")]
mod state_topic_e2e;
mod stream;
mod support;
#[cfg(feature = "e2e")]
mod tansu;
#[cfg(feature = "e2e")]
mod topics_e2e;
#[cfg(feature = "e2e")]
mod ui_e2e;
