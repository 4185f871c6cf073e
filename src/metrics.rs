//! Prometheus metrics: every `driftd_*` series, defined once, with bounded labels.
//!
//! Owns the registry and typed handles. Hot-path counters are resolved to label-free handles at
//! start-up so counting an event costs one atomic add. Per-cohort series are written only when
//! the hot path publishes a snapshot, never per event. Labels come from closed sets (reason,
//! outcome, metric names from config) or from cohort keys, which are capped by
//! `cohorts.max_cohorts`; payload text never becomes a label because cohort keys passed the
//! privacy gate and the contract's character rules.
//!
//! Conventions: every counter whose label values are known at start-up (outcomes, reasons,
//! kinds, the configured providers) exists at 0 from the start, so `increase()` sees the first
//! failure; a name has one meaning (rates and score means are separate families); no series is
//! ever NaN — one without a value (an empty window, a test without data) is absent; a series
//! goes when its subject goes (evicted cohort, revoked partition). On Linux the `process_*`
//! series of the process collector are exported too.
//!
//! Every `driftd_*` family here is documented in the README's metrics reference; a unit test
//! (`reference_tests.rs`) fails when the two differ.

mod contain;
mod kafka;
mod publish;
mod state_topic;
pub use state_topic::StateTopicMetrics;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use prometheus::{
    exponential_buckets, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Config;
use crate::detect::{SignalKind, Source, VerdictState};
use crate::event::Reason;
use crate::privacy::PiiKind;

/// The `task` label values of `driftd_task_failures_total`: the background tasks the daemon
/// supervises.
pub const TASKS: [&str; 2] = ["containment", "admin"];

/// The `reason` label values of `driftd_snapshot_failures_total`: `crate::persist`'s reasons,
/// and `shape` for a snapshot whose state does not fit the running config.
pub const SNAPSHOT_FAILURES: [&str; 9] = [
    "read",
    "write",
    "truncated",
    "not_a_snapshot",
    "version",
    "checksum",
    "decode",
    "incompatible",
    "shape",
];

/// All metrics of one driftd process.
pub struct Metrics {
    registry: Registry,
    /// Events applied to cohort state.
    pub events_applied: IntCounter,
    /// Events rejected, any reason.
    pub events_rejected: IntCounter,
    rejected_by_reason: HashMap<Reason, IntCounter>,
    pii_by_kind: HashMap<PiiKind, IntCounter>,
    /// Events folded into the overflow cohort.
    pub events_overflow: IntCounter,
    /// Events whose Kafka message key is not their deployment.
    pub events_misrouted: IntCounter,
    /// Cohorts evicted for being idle.
    pub cohorts_evicted: IntCounter,
    /// 1 while a partition is stalled (`kafka.stall_after`).
    pub partition_stalled: IntGaugeVec,
    /// Partitions stalled now (the `/readyz` detail).
    pub partitions_stalled: IntGauge,
    /// Dead-letter records confirmed by the broker.
    pub dead_letters_delivered: IntCounter,
    /// Dead-letter records the broker did not accept (after librdkafka's own retries).
    pub dead_letters_failed: IntCounter,
    /// Time to decode and apply one event.
    pub processing_seconds: Histogram,
    /// Wall-clock age of an event when applied (live ingest only).
    pub event_age_seconds: Histogram,
    /// Consumer lag per partition.
    pub consumer_lag: IntGaugeVec,
    /// Offset commits by outcome.
    pub offset_commits: IntCounterVec,
    /// Config reloads by outcome.
    pub config_reloads: IntCounterVec,
    config_info: IntGaugeVec,
    cohorts: IntGauge,
    watermark: Gauge,
    /// The latest publication: its cohorts' and deployments' series are rendered from it at
    /// each scrape.
    published: std::sync::Mutex<Option<std::sync::Arc<crate::pipeline::Published>>>,
    /// `cohorts.segment_keys`, in config order: one `segment_<key>` label each on the cohort
    /// series.
    segment_keys: Vec<String>,
    /// The label names of the per-cohort series ([`cohort_label_names`]).
    cohort_labels: Vec<String>,
    verdict_changes: IntCounterVec,
    signals_raised: IntCounterVec,
    contained: IntGaugeVec,
    actions: IntCounterVec,
    stale_changes: IntCounterVec,
    actions_fenced: IntCounterVec,
    action_duration: HistogramVec,
    /// 1 once the consumer has an assignment and the config is loaded.
    pub ready: IntGauge,
    /// Background tasks (containment, admin server) that ended before shutdown.
    pub task_failures: IntCounterVec,
    /// State snapshots that could not be read or written, by reason.
    pub snapshot_failures: IntCounterVec,
    /// State snapshots written.
    pub snapshots_written: IntCounter,
    /// Partitions whose state was restored from a snapshot.
    pub snapshot_restores: IntCounter,
    /// Time to encode and write one partition's snapshot.
    pub snapshot_write_seconds: Histogram,
    /// 1 while the last snapshot write failed (a full or read-only disk); readiness is 503.
    pub snapshot_write_failing: IntGauge,
    /// Messages skipped because restored state already holds them.
    pub events_skipped: IntCounter,
    /// What stops Kafka consumption that driftd cannot fix by retrying, by reason
    /// ([`KAFKA_BLOCKS`]); see [`Metrics::kafka_block`].
    kafka_blocked: IntGaugeVec,
    /// The operator's instruction for each reason in `kafka_blocked`, for `/readyz`. It names
    /// topics, the SASL mechanism and user, never a secret.
    kafka_block_detail: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
    /// The state topic's series (`persist.topic`).
    pub state_topic: StateTopicMetrics,
}

/// The reasons of `driftd_kafka_blocked`: the brokers refused the credentials, a topic
/// (event or dead-letter) is missing or not writable, or containment has not read the latch
/// topic (`persist.latch_topic`) to its end.
pub const KAFKA_BLOCKS: [&str; 3] = ["authentication", "topic", "latch_topic"];

/// The `outcome` label values of `driftd_actions_total`.
pub const ACTION_OUTCOMES: [&str; 4] = ["success", "failure", "dry_run", "withdrawn"];

/// The label names of the per-cohort series: deployment, model version, arm, and
/// `segment_<key>` for each of `segment_keys` (config validation keeps these valid label names).
fn cohort_label_names(segment_keys: &[String]) -> Vec<String> {
    ["deployment", "model_version", "arm"]
        .into_iter()
        .map(str::to_string)
        .chain(segment_keys.iter().map(|k| format!("segment_{k}")))
        .collect()
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

impl Metrics {
    /// Creates and registers every metric for `config`: its hash labels `driftd_config_info`,
    /// its `cohorts.segment_keys` are the cohort series' segment labels, its action targets'
    /// providers get their `driftd_actions_total` series at 0, and `containment.retry_for`
    /// sets the top bucket of `driftd_action_duration_seconds`.
    pub fn new(config: &Config) -> Metrics {
        let config_hash = config.hash();
        let segment_keys = config.cohorts.segment_keys.clone();
        let cohort_labels = cohort_label_names(&segment_keys);
        let r = Registry::new();
        // The collector reads /proc/self: CPU, resident memory, open file descriptors, threads.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector registers once");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let int_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let events = counter_vec(
            "driftd_events_total",
            "Events consumed, by outcome (applied to cohort state, or rejected).",
            &["outcome"],
        );
        let rejected = counter_vec(
            "driftd_events_rejected_total",
            "Events rejected, by bounded reason code.",
            &["reason"],
        );
        let pii = counter_vec(
            "driftd_pii_detections_total",
            "Events rejected by the privacy gate, by the kind of personal data suspected.",
            &["kind"],
        );
        let dead_letters = counter_vec(
            "driftd_dead_letters_total",
            "Dead-letter records, by delivery outcome.",
            &["outcome"],
        );
        let build = int_gauge_vec(
            "driftd_build_info",
            "Always 1; labelled with the driftd version.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let config_info = int_gauge_vec(
            "driftd_config_info",
            "Always 1; labelled with a hash of the effective config.",
            &["hash"],
        );
        config_info.with_label_values(&[&config_hash]).set(1);
        // Label values of closed sets are created up front so every series exists from start.
        let m = Metrics {
            events_applied: events.with_label_values(&["applied"]),
            events_rejected: events.with_label_values(&["rejected"]),
            rejected_by_reason: Reason::ALL
                .iter()
                .map(|r| (*r, rejected.with_label_values(&[r.as_str()])))
                .collect(),
            pii_by_kind: PiiKind::ALL
                .iter()
                .map(|k| (*k, pii.with_label_values(&[k.as_str()])))
                .collect(),
            events_overflow: register(
                &r,
                IntCounter::new(
                    "driftd_events_overflow_total",
                    "Events folded into the overflow cohort because cohorts.max_cohorts was reached.",
                )
                .expect("valid metric"),
            ),
            events_misrouted: register(
                &r,
                IntCounter::new(
                    "driftd_events_misrouted_total",
                    "Events whose Kafka message key is not their deployment (applied; the deployment's state may be split across partitions).",
                )
                .expect("valid metric"),
            ),
            partition_stalled: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "driftd_partition_stalled",
                        "1 while the partition's consumer lag grows and no message has been received from it for kafka.stall_after.",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid metric"),
            ),
            partitions_stalled: register(
                &r,
                IntGauge::new(
                    "driftd_partitions_stalled",
                    "Partitions stalled now (see driftd_partition_stalled).",
                )
                .expect("valid metric"),
            ),
            cohorts_evicted: register(
                &r,
                IntCounter::new(
                    "driftd_cohorts_evicted_total",
                    "Cohorts evicted, with their metric series, after cohorts.idle_expiry without an event.",
                )
                .expect("valid metric"),
            ),
            dead_letters_delivered: dead_letters.with_label_values(&["delivered"]),
            dead_letters_failed: dead_letters.with_label_values(&["failed"]),
            processing_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "driftd_event_processing_seconds",
                        "Time to decode, gate and apply one event to cohort state.",
                    )
                    .buckets(exponential_buckets(1e-6, 2.0, 16).expect("valid buckets")),
                )
                .expect("valid metric"),
            ),
            event_age_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "driftd_event_age_seconds",
                        "Wall-clock time from emitted_at to the event being applied (live ingest).",
                    )
                    .buckets(exponential_buckets(0.001, 2.0, 20).expect("valid buckets")),
                )
                .expect("valid metric"),
            ),
            consumer_lag: int_gauge_vec(
                "driftd_consumer_lag",
                "Messages between the consumer position and the partition end, from librdkafka statistics.",
                &["topic", "partition"],
            ),
            offset_commits: counter_vec(
                "driftd_offset_commits_total",
                "Synchronous offset commits (rebalance, shutdown), by outcome.",
                &["outcome"],
            ),
            config_reloads: counter_vec(
                "driftd_config_reloads_total",
                "SIGHUP config reloads, by outcome.",
                &["outcome"],
            ),
            config_info,
            cohorts: register(
                &r,
                IntGauge::new("driftd_cohorts", "Cohorts tracked, the overflow cohort included.")
                    .expect("valid metric"),
            ),
            watermark: register(
                &r,
                Gauge::new(
                    "driftd_watermark_timestamp_seconds",
                    "The stream's event-time clock: the oldest partition clock (newest emitted_at applied from the partition) among the active partitions, as Unix seconds.",
                )
                .expect("valid metric"),
            ),
            published: std::sync::Mutex::new(None),
            segment_keys,
            cohort_labels,
            verdict_changes: counter_vec(
                "driftd_verdict_changes_total",
                "Verdict state changes, by source and new state.",
                &["source", "state"],
            ),
            signals_raised: counter_vec(
                "driftd_signals_total",
                "Cohort-level signals raised (sample_ratio_mismatch, telemetry_absent).",
                &["kind"],
            ),
            contained: int_gauge_vec(
                "driftd_contained",
                "1 while the deployment is contained (gate closed), 0 otherwise.",
                &["deployment"],
            ),
            actions: counter_vec(
                "driftd_actions_total",
                "Containment and alert actions, by provider and outcome (success, failure, dry_run).",
                &["provider", "outcome"],
            ),
            actions_fenced: counter_vec(
                "driftd_actions_fenced_total",
                "Actions dropped before they ran because this replica may no longer act for the deployment's partition (persist.latch_topic), by reason (epoch, not_owner, unchecked, unrecorded).",
                &["reason"],
            ),
            stale_changes: counter_vec(
                "driftd_stale_changes_total",
                "Verdict and signal changes containment did not act on because their evidence was older than containment.max_evidence_age, by kind (verdict, signal).",
                &["kind"],
            ),
            action_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "driftd_action_duration_seconds",
                        "Wall-clock time from the verdict (or request) reaching containment to the action completing, retries included, by provider and op (contain, trigger, resolve).",
                    )
                    .buckets(contain::action_buckets(&config.containment)),
                    &["provider", "op"],
                )
                .expect("valid metric"),
            ),
            ready: register(
                &r,
                IntGauge::new(
                    "driftd_ready",
                    "1 once the consumer has its partition assignment and the config is loaded.",
                )
                .expect("valid metric"),
            ),
            task_failures: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "driftd_task_failures_total",
                        "Background tasks (containment, admin) that stopped before shutdown, e.g. by a panic; readiness stays 503 after one.",
                    ),
                    &["task"],
                )
                .expect("valid metric"),
            ),
            snapshot_failures: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "driftd_snapshot_failures_total",
                        "State snapshots that could not be read (the previous one, or a clean start, is used) or written, by reason.",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            snapshots_written: register(
                &r,
                IntCounter::new(
                    "driftd_snapshots_written_total",
                    "Per-partition state snapshots written.",
                )
                .expect("valid metric"),
            ),
            snapshot_restores: register(
                &r,
                IntCounter::new(
                    "driftd_snapshot_restores_total",
                    "Partitions whose cohort and detection state was restored from a snapshot.",
                )
                .expect("valid metric"),
            ),
            snapshot_write_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "driftd_snapshot_write_seconds",
                        "Time to encode and durably write one partition's state snapshot.",
                    )
                    .buckets(exponential_buckets(0.001, 2.0, 16).expect("valid buckets")),
                )
                .expect("valid metric"),
            ),
            snapshot_write_failing: register(
                &r,
                IntGauge::new(
                    "driftd_snapshot_write_failing",
                    "1 while the last state snapshot write failed (full or read-only disk); /readyz answers 503 meanwhile.",
                )
                .expect("valid metric"),
            ),
            events_skipped: register(
                &r,
                IntCounter::new(
                    "driftd_events_skipped_total",
                    "Messages re-read after a restart and skipped because the restored state already holds them.",
                )
                .expect("valid metric"),
            ),
            kafka_blocked: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "driftd_kafka_blocked",
                        "1 while Kafka consumption is blocked by something only the operator can fix (reason: authentication, topic); /readyz answers 503 and says what to do.",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            kafka_block_detail: std::sync::Mutex::default(),
            state_topic: state_topic::StateTopicMetrics::new(&r),
            registry: r,
        };
        for reason in KAFKA_BLOCKS {
            m.kafka_blocked.with_label_values(&[reason]);
        }
        for reason in SNAPSHOT_FAILURES {
            m.snapshot_failures.with_label_values(&[reason]);
        }
        for task in TASKS {
            m.task_failures.with_label_values(&[task]);
        }
        for outcome in ["success", "failure", "restart_required"] {
            m.config_reloads.with_label_values(&[outcome]);
        }
        for outcome in ["success", "failure"] {
            m.offset_commits.with_label_values(&[outcome]);
        }
        for kind in ["verdict", "signal"] {
            m.stale_changes.with_label_values(&[kind]);
        }
        for reason in crate::contain::fence::FenceReason::ALL {
            m.actions_fenced.with_label_values(&[reason.as_str()]);
        }
        for kind in SignalKind::ALL {
            m.signals_raised.with_label_values(&[kind.as_str()]);
        }
        for source in Source::ALL {
            for state in VerdictState::ALL {
                m.verdict_changes
                    .with_label_values(&[source.as_str(), state.as_str()]);
            }
        }
        for target in &config.containment.targets {
            for outcome in ACTION_OUTCOMES {
                m.actions.with_label_values(&[target.provider(), outcome]);
            }
        }
        m
    }

    /// Counts a rejection under its reason (and PII kind).
    pub fn count_rejection(&self, reason: Reason, pii: Option<PiiKind>) {
        self.events_rejected.inc();
        self.rejected_by_reason[&reason].inc();
        if let Some(kind) = pii {
            self.pii_by_kind[&kind].inc();
        }
    }

    /// Background tasks that stopped before shutdown, all tasks together.
    pub fn task_failures_total(&self) -> u64 {
        TASKS
            .iter()
            .map(|t| self.task_failures.with_label_values(&[t]).get())
            .sum()
    }

    /// Rejections counted so far under `reason`.
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected_by_reason[&reason].get()
    }

    /// Replaces the config hash label after a successful reload.
    pub fn set_config_hash(&self, hash: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics cannot fail");
        let mut text = String::from_utf8(buf).expect("the text format is UTF-8");
        self.render_published(&mut text);
        text
    }
}
