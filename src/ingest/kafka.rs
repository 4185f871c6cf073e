//! The Kafka source: a consumer-group member feeding the pipeline with at-least-once offsets.
//!
//! `enable.auto.offset.store=false`: an offset is stored only after its message was applied to
//! cohort state or its dead-letter record was acknowledged ([`super::offsets`]); librdkafka
//! commits stored offsets in the background, and driftd commits synchronously on partition
//! revoke and on shutdown. A malformed message is counted, dead-lettered and its offset advanced,
//! so it can never stall a partition. Consumer lag per partition comes from librdkafka's
//! statistics.
//!
//! This module must not know about detection or actions, and must never log message payloads
//! or keys (only topic, partition, offset and reason codes).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::dead_letter::DeadLetter;
use super::offsets::{DeliveryOutcome, OffsetTracker};
use super::IngestError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Outcome, Pipeline};
use crate::signals::Controls;

/// Rebalance, statistics and error callbacks.
pub struct IngestContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error (librdkafka keeps retrying)");
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Everything received so far has been processed (the hot path handles one message
            // at a time), so the stored offsets are exactly what is safe to commit.
            commit(consumer, &self.metrics, "revoke");
            tracing::info!(
                partitions = tpl.count(),
                "partitions revoked; offsets committed"
            );
            self.metrics.ready.set(0);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                self.metrics.ready.set(1);
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn commit<C: ConsumerContext>(consumer: &impl Consumer<C>, metrics: &Metrics, why: &str) {
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

/// What a run consumed, reported at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Events applied to cohort state during this run.
    pub applied: u64,
    /// Events rejected during this run.
    pub rejected: u64,
}

/// The Kafka consumer and its dead-letter producer.
pub struct KafkaSource {
    consumer: StreamConsumer<IngestContext>,
    dead_letter: Option<DeadLetter>,
    topic: String,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
    publish_interval: Duration,
    deadline: Duration,
}

impl KafkaSource {
    /// Creates the consumer (subscribed) and the dead-letter producer.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<KafkaSource, IngestError> {
        let k = &config.kafka;
        let mut cc = super::client_config(config)?;
        cc.set("group.id", &k.group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                k.commit_interval.as_millis().to_string(),
            )
            .set(
                "statistics.interval.ms",
                k.stats_interval.as_millis().to_string(),
            )
            .set("enable.partition.eof", "false");
        if !k.properties.contains_key("auto.offset.reset") {
            cc.set("auto.offset.reset", "earliest");
        }
        let consumer: StreamConsumer<IngestContext> = cc.create_with_context(IngestContext {
            metrics: metrics.clone(),
        })?;
        consumer.subscribe(&[k.topic.as_str()])?;
        Ok(KafkaSource {
            consumer,
            dead_letter: DeadLetter::new(config)?,
            topic: k.topic.clone(),
            metrics,
            max_in_flight: config.ingest.max_dead_letters_in_flight,
            publish_interval: config.ingest.publish_interval,
            deadline: config.shutdown.deadline,
        })
    }

    /// Consumes until shutdown is requested, then drains, commits and returns what was done.
    pub async fn run(
        self,
        pipeline: &mut Pipeline,
        mut controls: Controls,
    ) -> Result<RunSummary, IngestError> {
        let start = pipeline.totals();
        let mut tracker = OffsetTracker::default();
        let mut ready = Vec::new();
        let mut outcomes = Vec::new();
        let mut publish = tokio::time::interval(self.publish_interval);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = crate::signals::stopped(&mut controls.shutdown) => break,
                Some(config) = controls.reload.recv() => {
                    pipeline.reload(&config);
                    self.metrics.set_config_hash(&config.hash());
                }
                _ = publish.tick() => {
                    pipeline.publish();
                    tracker.release(&mut ready, &mut outcomes);
                }
                received = self.consumer.recv() => match received {
                    Ok(msg) => {
                        let delivery = self.process(pipeline, &msg).await;
                        tracker.push(msg.partition(), msg.offset(), delivery, &mut ready, &mut outcomes);
                        while tracker.len() > self.max_in_flight {
                            tracker.wait_front(&mut ready, &mut outcomes).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive error; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
            self.settle(&mut ready, &mut outcomes);
        }
        tracing::info!(held_back = tracker.len(), "shutdown: draining");
        // Half the deadline for dead-letter deliveries leaves the rest for the commit; the
        // signal watchdog ends the process if the whole deadline passes.
        let drained = tokio::time::timeout(self.deadline / 2, async {
            while !tracker.is_empty() {
                tracker.wait_front(&mut ready, &mut outcomes).await;
            }
        })
        .await;
        self.settle(&mut ready, &mut outcomes);
        pipeline.publish();
        commit(&self.consumer, &self.metrics, "shutdown");
        let end = pipeline.totals();
        let summary = RunSummary {
            applied: end.applied - start.applied,
            rejected: end.rejected - start.rejected,
        };
        if let Some(dl) = &self.dead_letter {
            dl.flush(Duration::from_secs(1));
        }
        drained.map_err(|_| IngestError::DrainTimeout(self.deadline / 2))?;
        Ok(summary)
    }

    async fn process(
        &self,
        pipeline: &mut Pipeline,
        msg: &BorrowedMessage<'_>,
    ) -> Option<rdkafka::producer::future_producer::DeliveryFuture> {
        match pipeline.process(msg.payload()) {
            Outcome::Applied => None,
            Outcome::Rejected(rejection) => {
                tracing::debug!(
                    reason = rejection.reason.as_str(),
                    field = rejection.field,
                    partition = msg.partition(),
                    offset = msg.offset(),
                    "event rejected"
                );
                let dl = self.dead_letter.as_ref()?;
                let delivery = dl.send(msg, &rejection).await;
                if delivery.is_none() {
                    self.metrics.dead_letters_failed.inc();
                }
                delivery
            }
        }
    }

    /// Stores released offsets and counts finished dead-letter deliveries.
    fn settle(&self, ready: &mut Vec<(i32, i64)>, outcomes: &mut Vec<DeliveryOutcome>) {
        for outcome in outcomes.drain(..) {
            match outcome {
                DeliveryOutcome::Delivered => self.metrics.dead_letters_delivered.inc(),
                DeliveryOutcome::Failed => {
                    self.metrics.dead_letters_failed.inc();
                    tracing::error!("dead-letter delivery failed after retries; the event is counted but its record is lost");
                }
            }
        }
        for (partition, offset) in ready.drain(..) {
            if let Err(e) = self.consumer.store_offset(&self.topic, partition, offset) {
                // The partition was revoked meanwhile; its new owner re-reads from the commit.
                tracing::debug!(error = %e, partition, offset, "offset not stored");
            }
        }
    }
}
