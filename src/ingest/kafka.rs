//! The Kafka source: a consumer-group member that receives messages, hands them to the
//! pipeline, stores their offsets at-least-once and drains at shutdown.
//!
//! `enable.auto.offset.store=false`: an offset is stored only after its message was applied to
//! cohort state or its dead-letter record was acknowledged ([`super::offsets`]); librdkafka
//! commits stored offsets in the background, and driftd commits synchronously on partition
//! revoke and on shutdown. A malformed message is counted, dead-lettered and its offset advanced,
//! so it can never stall a partition. Consumer lag per partition comes from librdkafka's
//! statistics.
//!
//! The control loop (shutdown, reload, publication ticks) belongs to [`crate::daemon`]; this
//! module only receives, acknowledges and drains. It must not know about detection or actions,
//! and must never log message payloads or keys (only topic, partition, offset and reason codes).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::connectivity::Connectivity;
use super::dead_letter::DeadLetter;
use super::offsets::{DeliveryOutcome, OffsetTracker, Pending};
use super::IngestError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Outcome, Pipeline};

/// Rebalance, statistics and error callbacks.
pub struct IngestContext {
    metrics: Arc<Metrics>,
    connectivity: Arc<Connectivity>,
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
        self.connectivity.error("consumer", &error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::connectivity::librdkafka_log(level, fac, log_message);
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

/// The receiving end of the consumer, shared with the daemon's control loop.
///
/// It is separate from [`KafkaSource`] because a received message borrows the consumer while
/// the source (mutably) acknowledges it. [`Inbox::recv`] is cancel-safe: the daemon selects on
/// it beside shutdown, reload and publication ticks, and a message is only taken when this
/// branch wins.
pub struct Inbox(Arc<StreamConsumer<IngestContext>>);

impl Inbox {
    /// The next message, or a receive error (librdkafka keeps reconnecting).
    pub async fn recv(&self) -> KafkaResult<BorrowedMessage<'_>> {
        self.0.recv().await
    }
}

/// The Kafka consumer, its dead-letter producer and the offsets not yet stored.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<IngestContext>>,
    dead_letter: Option<DeadLetter>,
    topic: String,
    metrics: Arc<Metrics>,
    tracker: OffsetTracker,
    ready: Vec<(i32, i64)>,
    outcomes: Vec<DeliveryOutcome>,
    max_in_flight: usize,
}

impl KafkaSource {
    /// Creates the consumer (subscribed) and the dead-letter producer.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<KafkaSource, IngestError> {
        let k = &config.kafka;
        let (mut cc, redact) = super::client_config(config)?;
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
        let connectivity = Arc::new(Connectivity::new(&k.brokers));
        let consumer: StreamConsumer<IngestContext> = cc
            .create_with_context(IngestContext {
                metrics: metrics.clone(),
                connectivity: connectivity.clone(),
            })
            .map_err(|e| redact.error(e))?;
        consumer
            .subscribe(&[k.topic.as_str()])
            .map_err(|e| redact.error(e))?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            dead_letter: DeadLetter::new(config, connectivity)?,
            topic: k.topic.clone(),
            metrics,
            tracker: OffsetTracker::default(),
            ready: Vec::new(),
            outcomes: Vec::new(),
            max_in_flight: config.ingest.max_dead_letters_in_flight,
        })
    }

    /// Where the daemon's control loop receives messages from.
    pub fn inbox(&self) -> Inbox {
        Inbox(self.consumer.clone())
    }

    /// Hands a received message to the pipeline and acknowledges it: its offset is stored once
    /// its effect is durable. Waits only when more dead-letter records are in flight than
    /// `ingest.max_dead_letters_in_flight` allows.
    pub async fn accept(
        &mut self,
        pipeline: &mut Pipeline,
        received: KafkaResult<BorrowedMessage<'_>>,
    ) {
        match received {
            Ok(msg) => {
                let delivery =
                    process(self.dead_letter.as_ref(), &self.metrics, pipeline, &msg).await;
                self.tracker.push(
                    msg.partition(),
                    msg.offset(),
                    delivery,
                    &mut self.ready,
                    &mut self.outcomes,
                );
                while self.tracker.len() > self.max_in_flight {
                    self.tracker
                        .wait_front(&mut self.ready, &mut self.outcomes)
                        .await;
                }
            }
            Err(e) => {
                // The error callback has usually said this already; the rate limit keeps one.
                self.consumer
                    .context()
                    .connectivity
                    .error("consumer", &e, "");
                // Each error is one queued event, so taking the next at once cannot spin. A
                // pause here made errors queue up during a broker outage (librdkafka raises
                // them faster than one per pause) and delayed the messages, rebalances and
                // statistics behind them by seconds after the broker was back.
                if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.settle();
    }

    /// Stores the offsets whose dead-letter deliveries finished since the last message (called
    /// on the daemon's publication tick, so a quiet topic still gets its offsets stored).
    pub fn tick(&mut self) {
        self.tracker.release(&mut self.ready, &mut self.outcomes);
        self.settle();
    }

    /// Waits (at most `within`) for dead-letter deliveries still in flight, stores what is
    /// safe, commits and flushes the dead-letter producer. The pipeline is published in between
    /// so the last snapshot reflects everything committed.
    pub async fn drain(
        mut self,
        pipeline: &mut Pipeline,
        within: Duration,
    ) -> Result<(), IngestError> {
        tracing::info!(held_back = self.tracker.len(), "shutdown: draining");
        let drained = tokio::time::timeout(within, async {
            while !self.tracker.is_empty() {
                self.tracker
                    .wait_front(&mut self.ready, &mut self.outcomes)
                    .await;
            }
        })
        .await;
        self.settle();
        pipeline.publish();
        commit(&*self.consumer, &self.metrics, "shutdown");
        if let Some(dl) = &self.dead_letter {
            dl.flush(Duration::from_secs(1));
        }
        drained.map_err(|_| IngestError::DrainTimeout(within))
    }

    /// Stores released offsets and counts finished dead-letter deliveries.
    fn settle(&mut self) {
        for outcome in self.outcomes.drain(..) {
            match outcome {
                DeliveryOutcome::Delivered => self.metrics.dead_letters_delivered.inc(),
                DeliveryOutcome::Failed => {
                    self.metrics.dead_letters_failed.inc();
                    tracing::error!("dead-letter delivery failed after retries; the event is counted but its record is lost");
                }
            }
        }
        for (partition, offset) in self.ready.drain(..) {
            if let Err(e) = self.consumer.store_offset(&self.topic, partition, offset) {
                // The partition was revoked meanwhile; its new owner re-reads from the commit.
                tracing::debug!(error = %e, partition, offset, "offset not stored");
            }
        }
    }
}

/// Applies one message; a rejected one is dead-lettered and its delivery returned to wait for.
/// A free function, not a method: the tracker's deliveries are not `Sync`, so the source must
/// not be borrowed across the dead-letter send.
async fn process(
    dead_letter: Option<&DeadLetter>,
    metrics: &Metrics,
    pipeline: &mut Pipeline,
    msg: &BorrowedMessage<'_>,
) -> Option<Pending> {
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
            let dl = dead_letter?;
            let delivery = dl.send(msg, &rejection).await;
            if delivery.is_none() {
                metrics.dead_letters_failed.inc();
            }
            delivery.map(|d| d.map(DeliveryOutcome::from).boxed())
        }
    }
}
