//! The state topic's series (`persist.topic`): bytes produced, failures by operation, which
//! copy each restore used, how long reading the topic took and how many partitions are still
//! restoring.
//!
//! Owns only these families and their label sets; `ingest` decides what to count. Must not
//! talk to Kafka.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
};

use super::register;

/// The `operation` label values of `driftd_state_topic_failures_total`.
pub const OPERATIONS: [&str; 2] = ["publish", "read"];

/// The `from` label values of `driftd_state_topic_restores_total`.
pub const RESTORED_FROM: [&str; 3] = ["topic", "local", "none"];

/// The state topic's series; they exist at 0 whether a topic is configured or not.
pub struct StateTopicMetrics {
    /// Snapshot bytes produced to the state topic (acknowledged).
    pub bytes: IntCounter,
    /// Snapshots not produced, or partitions whose snapshots were not read back, by operation.
    pub failures: IntCounterVec,
    /// Partition restores with a state topic configured, by the copy used.
    pub restores: IntCounterVec,
    /// Time to read one partition's snapshots from the state topic.
    pub read_seconds: Histogram,
    /// Assigned partitions whose state is still being read from the state topic.
    pub restoring: IntGauge,
}

impl StateTopicMetrics {
    pub(super) fn new(r: &prometheus::Registry) -> StateTopicMetrics {
        let m = StateTopicMetrics {
            bytes: register(
                r,
                IntCounter::new(
                    "driftd_state_topic_bytes_total",
                    "Snapshot bytes produced to persist.topic and acknowledged.",
                )
                .expect("valid metric"),
            ),
            failures: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "driftd_state_topic_failures_total",
                        "Snapshots not produced to persist.topic (publish) and partitions whose snapshots could not be read back in time (read), by operation.",
                    ),
                    &["operation"],
                )
                .expect("valid metric"),
            ),
            restores: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "driftd_state_topic_restores_total",
                        "Partitions assigned with persist.topic set, by the snapshot restored: topic, local (the cache was as new or newer) or none.",
                    ),
                    &["from"],
                )
                .expect("valid metric"),
            ),
            read_seconds: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "driftd_state_topic_read_seconds",
                        "Time to read one partition's snapshots from persist.topic at assignment.",
                    )
                    .buckets(exponential_buckets(0.01, 4.0, 7).expect("valid buckets")),
                )
                .expect("valid metric"),
            ),
            restoring: register(
                r,
                IntGauge::new(
                    "driftd_state_topic_restoring",
                    "Partitions assigned here whose state is still being read from persist.topic; they are paused meanwhile, the others are consumed.",
                )
                .expect("valid metric"),
            ),
        };
        for op in OPERATIONS {
            m.failures.with_label_values(&[op]);
        }
        for from in RESTORED_FROM {
            m.restores.with_label_values(&[from]);
        }
        m
    }
}
