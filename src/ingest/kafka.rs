//! The Kafka source: a consumer-group member that receives messages, hands them to the
//! pipeline, stores their offsets at-least-once and drains at shutdown.
//!
//! Exactly once across restarts ([`super::resume`]): each partition's cohort and detection state
//! is snapshotted (`crate::persist`) every `persist.interval`, when the partition is revoked and
//! at shutdown, once every message processed is durable — applied, or dead-lettered and
//! acknowledged ([`super::offsets`]). `enable.auto.offset.store=false`: the offset stored (and
//! committed by librdkafka in the background, and synchronously on revoke and shutdown) is
//! never past the older of the two snapshots kept. On assignment a partition's state is
//! restored from its snapshot and the messages it already holds are skipped. A malformed message
//! is counted, dead-lettered and its offset advanced, so it can never stall a partition.
//! Consumer lag per partition comes from librdkafka's statistics.
//!
//! The control loop (shutdown, reload, publication ticks) belongs to [`crate::daemon`]; this
//! module only receives, acknowledges and drains. It must not know about detection or actions,
//! and must never log message payloads or keys (only topic, partition, offset and reason codes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
use super::resume::Progress;
use super::IngestError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::persist::{PersistError, SnapshotStore};
use crate::pipeline::{Outcome, Pipeline};

mod clients;
use clients::clients;

/// A rebalance, noted by the callback (which cannot reach the pipeline) for the control loop
/// to act on before the next message.
#[derive(Debug)]
enum Note {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Rebalances noted by the callback, taken by the control loop. The flag spares the loop a
/// lock per message: rebalances are rare, messages are not.
#[derive(Default)]
struct Notes {
    list: Mutex<Vec<Note>>,
    pending: AtomicBool,
}

impl Notes {
    fn push(&self, note: Note) {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(note);
        self.pending.store(true, Ordering::Release);
    }

    fn take(&self) -> Vec<Note> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.list.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Rebalance, statistics and error callbacks.
pub struct IngestContext {
    metrics: Arc<Metrics>,
    notes: Arc<Notes>,
    connectivity: Arc<Connectivity>,
}

impl IngestContext {
    fn note(&self, note: Note) {
        self.notes.push(note);
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
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
            // The stored offsets never pass a snapshot kept on disk: safe to commit.
            commit(consumer, &self.metrics, "revoke");
            self.note(Note::Revoked(partitions(tpl)));
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
                // Ready once their state is restored, by the control loop.
                self.note(Note::Assigned(partitions(tpl)));
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

/// A snapshot being written off the control loop.
struct Write {
    partition: i32,
    next: i64,
    started: Instant,
    task: tokio::task::JoinHandle<Result<(), PersistError>>,
}

/// The Kafka consumer, its dead-letter producer, the offsets not yet durable and the state
/// snapshots of its partitions.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<IngestContext>>,
    dead_letter: Option<DeadLetter>,
    topic: String,
    metrics: Arc<Metrics>,
    tracker: OffsetTracker,
    ready: Vec<(i32, i64)>,
    outcomes: Vec<DeliveryOutcome>,
    max_in_flight: usize,
    notes: Arc<Notes>,
    progress: Progress,
    store: SnapshotStore,
    writes: Vec<Write>,
}

impl KafkaSource {
    /// Creates the consumer (subscribed) and the dead-letter producer.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<KafkaSource, IngestError> {
        let k = &config.kafka;
        let notes = Arc::new(Notes::default());
        let connectivity = Arc::new(Connectivity::new(k, metrics.clone()));
        let (consumer, dead_letter, redact) = clients(config, &metrics, &notes, connectivity)?;
        consumer
            .subscribe(&[k.topic.as_str()])
            .map_err(|e| redact.error(e))?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            dead_letter,
            topic: k.topic.clone(),
            metrics,
            tracker: OffsetTracker::default(),
            ready: Vec::new(),
            outcomes: Vec::new(),
            max_in_flight: config.ingest.max_dead_letters_in_flight,
            notes,
            progress: Progress::default(),
            store: SnapshotStore::new(
                &config.snapshot_dir(),
                &k.topic,
                &config.state_fingerprint(),
            ),
            writes: Vec::new(),
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
        self.rebalanced(pipeline).await;
        match received {
            Ok(msg) if !self.progress.admit(msg.partition(), msg.offset()) => {
                self.metrics.events_skipped.inc();
            }
            Ok(msg) => {
                let delivery =
                    process(self.dead_letter.as_ref(), &self.metrics, pipeline, &msg).await;
                self.progress.processed(msg.partition(), msg.offset());
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

    /// Acts on rebalances, notes the dead-letter deliveries that finished and the snapshot
    /// writes that completed (called on the daemon's publication tick, so a quiet topic gets
    /// its partitions restored and its offsets stored too).
    pub async fn tick(&mut self, pipeline: &mut Pipeline) {
        self.rebalanced(pipeline).await;
        self.tracker.release(&mut self.ready, &mut self.outcomes);
        self.settle();
        self.finish_writes(false).await;
    }

    /// Starts a snapshot of every assigned partition that changed since its last one and has
    /// nothing pending; the file is written off this task (`persist.interval`).
    pub fn persist(&mut self, pipeline: &Pipeline) {
        for (partition, next) in self.progress.due() {
            let started = Instant::now();
            let bytes = self
                .store
                .encode(partition, next, pipeline.export_partition(partition));
            let store = self.store.clone();
            let task = tokio::task::spawn_blocking(move || store.write(partition, &bytes));
            self.progress.writing(partition, next);
            self.writes.push(Write {
                partition,
                next,
                started,
                task,
            });
        }
    }

    /// Handles finished snapshot writes (all of them, waiting, when `wait`): a written one
    /// moves the partition's commit ceiling; a failed one is counted, logged, makes `/readyz`
    /// 503 and is retried at the next interval.
    async fn finish_writes(&mut self, wait: bool) {
        let mut i = 0;
        while i < self.writes.len() {
            if !wait && !self.writes[i].task.is_finished() {
                i += 1;
                continue;
            }
            let w = self.writes.swap_remove(i);
            let result = w.task.await.unwrap_or_else(|e| {
                Err(PersistError::Write {
                    path: self.store.dir().to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
            match result {
                Ok(()) => {
                    self.metrics.snapshots_written.inc();
                    self.metrics
                        .snapshot_write_seconds
                        .observe(w.started.elapsed().as_secs_f64());
                    self.metrics.snapshot_write_failing.set(0);
                    if let Some(ceiling) = self.progress.written(w.partition, w.next) {
                        self.store_ceiling(w.partition, ceiling);
                    }
                }
                Err(e) => {
                    self.metrics
                        .snapshot_failures
                        .with_label_values(&[e.reason()])
                        .inc();
                    self.metrics.snapshot_write_failing.set(1);
                    self.progress.write_failed(w.partition);
                    tracing::error!(partition = w.partition, error = %e, "state snapshot not written; consuming goes on, offsets are not committed past the last snapshot");
                }
            }
        }
    }

    /// Stores `ceiling` (the offset after the last message the older kept snapshot holds) as
    /// the partition's offset to commit.
    fn store_ceiling(&self, partition: i32, ceiling: i64) {
        if !self.progress.active(partition) {
            return;
        }
        // librdkafka commits the stored offset + 1.
        if let Err(e) = self
            .consumer
            .store_offset(&self.topic, partition, ceiling - 1)
        {
            tracing::debug!(error = %e, partition, "offset not stored");
        }
    }

    /// Acts on the rebalances noted since the last message: restores newly assigned
    /// partitions from their snapshots, snapshots revoked ones.
    async fn rebalanced(&mut self, pipeline: &mut Pipeline) {
        for note in self.notes.take() {
            match note {
                Note::Assigned(partitions) => {
                    for p in partitions {
                        if self.progress.assigned(p) {
                            self.restore(p, pipeline);
                        }
                    }
                    self.metrics.ready.set(1);
                }
                Note::Revoked(partitions) => {
                    self.persist(pipeline);
                    self.finish_writes(true).await;
                    for p in partitions {
                        self.progress.revoked(p);
                    }
                }
            }
        }
    }

    /// Restores `partition`'s state from its newest usable snapshot (none: a clean start from
    /// the committed offset).
    fn restore(&mut self, partition: i32, pipeline: &mut Pipeline) {
        let loaded = self.store.load(partition);
        for e in &loaded.failures {
            self.metrics
                .snapshot_failures
                .with_label_values(&[e.reason()])
                .inc();
            tracing::error!(partition, error = %e, "state snapshot not usable; falling back to the previous one, or to a clean start from the committed offset");
        }
        let Some(snapshot) = loaded.snapshot else {
            tracing::info!(
                partition,
                "no state snapshot: starting from the committed offset"
            );
            self.progress.restored(partition, None, Vec::new());
            return;
        };
        let (next, cohorts) = (snapshot.next_offset, snapshot.state.cohorts());
        match pipeline.import_partition(partition, snapshot.state) {
            Ok(()) => {
                self.metrics.snapshot_restores.inc();
                tracing::info!(
                    partition,
                    cohorts,
                    next_offset = next,
                    written_at = %snapshot.written_at,
                    "state restored from snapshot; messages before next_offset are skipped"
                );
                self.progress.restored(partition, Some(next), loaded.kept);
            }
            Err(e) => {
                self.metrics
                    .snapshot_failures
                    .with_label_values(&["shape"])
                    .inc();
                tracing::error!(partition, error = %e, "state snapshot does not fit; starting from the committed offset");
                self.progress.restored(partition, None, Vec::new());
            }
        }
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
        // The final snapshots, and a second round for the partitions whose older kept snapshot
        // is now behind (`Progress::due`), so that both hold the final state and the commit
        // reaches the end: a restart re-reads nothing.
        let written = tokio::time::timeout(within, async {
            self.persist(pipeline);
            self.finish_writes(true).await;
            self.persist(pipeline);
            self.finish_writes(true).await;
        })
        .await;
        if written.is_err() {
            tracing::error!("shutdown: state snapshots not written in time; the next start re-reads from the last snapshot");
        }
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
            self.progress.durable(partition, offset);
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
    match pipeline.process(msg.partition(), msg.payload()) {
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
