//! The `[ingest]` section: limits applied to each message before it reaches cohort state.
//!
//! Owns the section's schema, defaults and validation. It must not read messages: `ingest` and
//! `pipeline` apply these limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, WindowConfig};

/// Per-message limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Messages larger than this many bytes are rejected as `too_large` before parsing.
    pub max_message_bytes: usize,
    /// Events whose `emitted_at` is older than their partition's event-time clock minus this
    /// are rejected as `late`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Events whose `emitted_at` is more than this ahead of the wall clock (in `driftd replay`:
    /// of the newest event applied so far) are rejected as `future`, before they can move any
    /// event-time clock.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// How often the hot path publishes its cohort snapshot to the admin server and metrics.
    #[serde(with = "humantime_serde")]
    pub publish_interval: Duration,
    /// Dead-letter deliveries allowed in flight before consumption waits for them.
    pub max_dead_letters_in_flight: usize,
    /// How the consumer group hands out partitions. A `partition.assignment.strategy` in
    /// `kafka.properties` wins over it.
    pub assignment: Assignment,
}

/// The consumer group's rebalance protocol.
///
/// Eager is the default because tansu 0.6.0, the broker the tests run against, does not
/// complete cooperative rebalances with `group.instance.id` set: the leader's second join round
/// (which hands out the revoked partitions) keeps the generation and the other member is never
/// asked to rejoin, so those partitions stay unowned (`examples/coop_rebalance.rs` checks a
/// broker without driftd; plain members complete). Commits are not the obstacle: librdkafka's fetch
/// and group logs of `kafka_e2e::sigterm_part_way…`, which had failed 3 of 3 times under
/// cooperative-sticky, show it. The process stopped with SIGTERM commits exactly what
/// it applied in either mode (tansu's first 5 MiB fetch response held one partition only, so all
/// it applied came from that one), and the test fails the same way in eager mode when tansu is
/// short of CPU (each 5 MiB fetch then took 10–12 s, and the restarted process could not read
/// the rest within the test's 120 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Incremental rebalances: a member joining or leaving moves only the partitions that must
    /// move, and every other member keeps consuming (and stays ready) meanwhile.
    CooperativeSticky,
    /// Stop-the-world rebalances (`range,roundrobin`): every member gives up every partition
    /// and is assigned again.
    #[default]
    Eager,
}

impl Assignment {
    /// librdkafka's `partition.assignment.strategy` value.
    pub fn strategy(self) -> &'static str {
        match self {
            Assignment::CooperativeSticky => "cooperative-sticky",
            Assignment::Eager => "range,roundrobin",
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_message_bytes: 64 * 1024,
            allowed_lateness: Duration::from_secs(120),
            max_future_skew: Duration::from_secs(300),
            publish_interval: Duration::from_secs(1),
            max_dead_letters_in_flight: 1000,
            assignment: Assignment::default(),
        }
    }
}

impl IngestConfig {
    /// The `[ingest]` rules. Lateness is judged against the window span, so it needs `windows`.
    pub(super) fn validate(&self, windows: &WindowConfig) -> Result<(), ConfigError> {
        if !(256..=16 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(invalid(
                "ingest.max_message_bytes",
                "must be between 256 and 16777216",
            ));
        }
        if self.allowed_lateness >= windows.span {
            return Err(invalid(
                "ingest.allowed_lateness",
                "must be shorter than windows.span, or late events could not land in a bucket",
            ));
        }
        if self.max_future_skew < Duration::from_secs(1) {
            return Err(invalid(
                "ingest.max_future_skew",
                "must be at least 1s: producers' clocks are never exactly in step with driftd's",
            ));
        }
        if self.publish_interval < Duration::from_millis(50) {
            return Err(invalid("ingest.publish_interval", "must be at least 50ms"));
        }
        if self.max_dead_letters_in_flight == 0 {
            return Err(invalid(
                "ingest.max_dead_letters_in_flight",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
