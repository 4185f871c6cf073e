//! The consumer's callbacks: rebalances (noted for the control loop, with the
//! `kafka.start_from` lookback applied to new assignments), statistics (consumer lag, the
//! stall watch's input) and librdkafka's errors and logs.
//!
//! Runs on librdkafka's poll path: it must stay quick and never touch the pipeline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, TopicPartitionList};

use super::super::connectivity::Connectivity;
use crate::config::StartFrom;
use crate::metrics::Metrics;

/// A rebalance, noted by the callback (which cannot reach the pipeline) for the control loop
/// to act on before the next message.
#[derive(Debug)]
pub(super) enum Note {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Rebalances noted by the callback, taken by the control loop. The flag spares the loop a
/// lock per message: rebalances are rare, messages are not.
#[derive(Default)]
pub(super) struct Notes {
    list: Mutex<Vec<Note>>,
    pending: AtomicBool,
}

impl Notes {
    pub(super) fn push(&self, note: Note) {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(note);
        self.pending.store(true, Ordering::Release);
    }

    pub(super) fn take(&self) -> Vec<Note> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.list.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Rebalance, statistics and error callbacks.
pub struct IngestContext {
    pub(super) metrics: Arc<Metrics>,
    pub(super) notes: Arc<Notes>,
    pub(super) connectivity: Arc<Connectivity>,
    pub(super) start_from: StartFrom,
    pub(super) topic: String,
    /// Each partition's consumer lag from the latest statistics not yet taken by the control
    /// loop (`None`: no statistics since).
    pub(super) lags: Mutex<Option<Vec<(i32, i64)>>>,
    /// What containment reads to know which partitions it may act for (`persist.latch_topic`).
    pub(super) ownership: Arc<crate::contain::fence::Ownership>,
}

impl IngestContext {
    fn note(&self, note: Note) {
        self.notes.push(note);
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Messages between a partition's end and driftd's processing: the offset after the last message
/// handed to driftd or, before the first one, the fetch position, else the committed offset.
/// `None` while neither the end nor a position is known. librdkafka's own `consumer_lag` counts
/// from the committed offset, which driftd holds back to its last snapshot: it was missing for
/// the first `persist.interval` of every start and then counted messages long applied. The end
/// is the last stable offset (what a `read_committed` consumer can read) when librdkafka has it.
fn processing_lag(
    last_stable: i64,
    high_watermark: i64,
    handed_over: i64,
    fetch_position: i64,
    committed: i64,
) -> Option<i64> {
    let end = if last_stable >= 0 {
        last_stable
    } else {
        high_watermark
    };
    let position = [handed_over, fetch_position, committed]
        .into_iter()
        .find(|o| *o >= 0)?;
    (end >= 0).then(|| (end - position).max(0))
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        // librdkafka's internal pseudo-broker is no sign of a reachable cluster.
        if statistics
            .brokers
            .values()
            .any(|b| b.state == "UP" && b.source != "internal")
        {
            self.connectivity.reachable();
        }
        // The control loop, which knows which partitions this process consumes, exports the
        // lags (`driftd_consumer_lag`) and watches for stalls.
        let mut lags = Vec::new();
        if let Some(t) = statistics.topics.get(&self.topic) {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                let lag = processing_lag(
                    p.ls_offset,
                    p.hi_offset,
                    p.app_offset,
                    p.next_offset,
                    p.committed_offset,
                );
                if let (true, Some(lag)) = (*partition >= 0, lag) {
                    lags.push((*partition, lag));
                }
            }
        }
        *self.lags.lock().unwrap_or_else(PoisonError::into_inner) = Some(lags);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.connectivity.error("consumer", &error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::super::connectivity::librdkafka_log(level, fac, log_message);
    }
}

impl ConsumerContext for IngestContext {
    /// librdkafka's rebalance, with two additions: a revoke commits first (the stored offsets
    /// never pass a snapshot kept on disk), and an assignment gets the `kafka.start_from`
    /// lookback for partitions without a committed offset ([`super::start`]). Both are noted
    /// for the control loop, which restores and snapshots partition state.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let StartFrom::Lookback(lookback) = self.start_from {
                    super::super::start::look_back(
                        consumer,
                        tpl,
                        lookback,
                        crate::clock::wall_ms(),
                    );
                }
                let assigned = match cooperative {
                    true => consumer.incremental_assign(tpl),
                    false => consumer.assign(tpl),
                };
                self.ownership.assign(&partitions(tpl));
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                // Ready once their state is restored, by the control loop.
                self.note(Note::Assigned(partitions(tpl)));
                assigned
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // First: containment stops acting for them before anything else happens.
                self.ownership.revoke(&partitions(tpl));
                commit(consumer, &self.metrics, "revoke");
                self.note(Note::Revoked(partitions(tpl)));
                tracing::info!(
                    partitions = tpl.count(),
                    "partitions revoked; offsets committed"
                );
                let unassigned = match cooperative {
                    true => consumer.incremental_unassign(tpl),
                    false => consumer.unassign(),
                };
                // An incremental revoke leaves the other partitions with this consumer, which
                // stays ready for them: one replica's rebalance must not take the whole fleet
                // out of service. Not ready only once nothing is left.
                if consumer.assignment().map_or(true, |a| a.count() == 0) {
                    self.metrics.ready.set(0);
                }
                unassigned
            }
            other => {
                tracing::error!(error = %RDKafkaErrorCode::from(other), "rebalance failed");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "librdkafka refused the partition assignment");
        }
    }
}

pub(super) fn commit<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    metrics: &Metrics,
    why: &str,
) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => metrics.offset_commits.with_label_values(&["success"]).inc(),
        // Nothing stored since the last commit: nothing to do.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            metrics.offset_commits.with_label_values(&["failure"]).inc();
            tracing::warn!(error = %e, why, "offset commit failed; those events will be re-consumed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::processing_lag;

    #[test]
    fn lag_counts_from_what_was_handed_over_not_from_the_commit() {
        // 1,000 messages, 900 handed to driftd, the last commit (a snapshot) at 100.
        assert_eq!(processing_lag(1_000, 1_000, 900, 950, 100), Some(100));
    }

    #[test]
    fn before_the_first_message_the_fetch_position_then_the_commit_count() {
        assert_eq!(processing_lag(1_000, 1_000, -1001, 400, 100), Some(600));
        assert_eq!(processing_lag(1_000, 1_000, -1001, -1001, 100), Some(900));
    }

    #[test]
    fn the_last_stable_offset_is_the_end_when_known() {
        assert_eq!(processing_lag(800, 1_000, 700, 700, -1001), Some(100));
        assert_eq!(processing_lag(-1, 1_000, 700, 700, -1001), Some(300));
    }

    #[test]
    fn unknown_end_or_position_reports_nothing_and_lag_is_never_negative() {
        assert_eq!(processing_lag(-1, -1, 700, 700, 700), None);
        assert_eq!(processing_lag(1_000, 1_000, -1001, -1001, -1001), None);
        // Statistics can see a position past a stale end.
        assert_eq!(processing_lag(1_000, 1_000, 1_010, 1_010, 900), Some(0));
    }
}
