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

mod context;

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};

use super::connectivity::Connectivity;
use super::dead_letter::DeadLetter;
use super::offsets::{DeliveryOutcome, OffsetTracker, Pending};
use super::resume::Progress;
use super::stall::StallWatch;
use super::IngestError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::persist::topic::{StateTopic, TopicError};
use crate::persist::{PersistError, SnapshotStore};
use crate::pipeline::{Outcome, Pipeline};
use context::{commit, IngestContext, Note, Notes};

mod clients;
mod handover;
use clients::clients;

/// How long a rewind to a restored snapshot's offset may wait for librdkafka ([`KafkaSource::rewound`]).
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

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
    task: tokio::task::JoinHandle<Result<(), WriteError>>,
}

/// Why a snapshot is not durable: the local file, or (with `persist.topic`) its records.
enum WriteError {
    Local(PersistError),
    Topic(TopicError),
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
    /// `persist.topic`: where snapshots also go, and the next owner restores from.
    state_topic: Option<StateTopic>,
    /// Partitions whose state is being read from `state_topic` (paused meanwhile).
    restores: Vec<handover::Restore>,
    /// `persist.topic_restore_patience`.
    restore_patience: Duration,
    writes: Vec<Write>,
    /// Messages received per partition (index), skipped ones included: what the stall watch
    /// compares.
    received: Vec<u64>,
    stalls: StallWatch,
    /// `persist.latch_topic`: containment needs each deployment's partition.
    track_deployments: bool,
}

impl KafkaSource {
    /// Creates the consumer (subscribed) and the dead-letter producer.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<KafkaSource, IngestError> {
        let k = &config.kafka;
        let notes = Arc::new(Notes::default());
        let connectivity = Arc::new(Connectivity::new(k, metrics.clone()));
        let (consumer, dead_letter, redact) = clients(config, &metrics, &notes, connectivity)?;
        let state_topic = handover::state_topic(config)?;
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
            state_topic,
            restores: Vec::new(),
            restore_patience: config.persist.topic_restore_patience,
            writes: Vec::new(),
            received: Vec::new(),
            stalls: StallWatch::new(k.stall_after.as_millis() as i64),
            track_deployments: config.persist.latch_topic.is_some(),
        })
    }

    /// Which partitions the consumer holds and where each deployment's events come from, for
    /// containment's fencing.
    pub fn ownership(&self) -> Arc<crate::contain::fence::Ownership> {
        self.consumer.context().ownership.clone()
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
        if let Ok(msg) = &received {
            let p = msg.partition().max(0) as usize;
            if self.received.len() <= p {
                self.received.resize(p + 1, 0);
            }
            self.received[p] += 1;
        }
        match received {
            // Its partition's state is still being read: fetched before the pause, read again
            // once restored. Only looked up while some restore is in progress.
            Ok(msg)
                if !self.restores.is_empty()
                    && self.progress.held(msg.partition(), msg.offset()) => {}
            Ok(msg) if self.rewound(msg.partition(), msg.offset()) => {}
            Ok(msg) if !self.progress.admit(msg.partition(), msg.offset()) => {
                self.metrics.events_skipped.inc();
            }
            Ok(msg) => {
                if self.track_deployments {
                    // The message key is the deployment (never logged).
                    if let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) {
                        self.consumer.context().ownership.seen(key, msg.partition());
                    }
                }
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

    /// Drops the first message of a restored partition when it lies past the snapshot's offset
    /// (fetched before the restore's seek took effect, from a committed offset past the
    /// snapshot: [`Progress::gap`]) and seeks again; true when it did. A seek that fails leaves
    /// the message to be processed.
    fn rewound(&mut self, partition: i32, offset: i64) -> bool {
        match self.progress.gap(partition, offset) {
            Some(next) => self.seek(partition, next, Some(offset)),
            None => false,
        }
    }

    /// Sends the consumer to `next` on `partition`, where its restored state ends; `past` is
    /// the offset of a message already received beyond it. False when librdkafka refused: the
    /// messages between the committed offset and `next`, if that is past it, are then not in
    /// the state.
    fn seek(&self, partition: i32, next: i64, past: Option<i64>) -> bool {
        let seek = self.consumer.seek(
            &self.topic,
            partition,
            rdkafka::Offset::Offset(next),
            SEEK_TIMEOUT,
        );
        match (seek, past) {
            (Ok(()), None) => true,
            (Ok(()), Some(past)) => {
                tracing::warn!(partition, received = past, next, "consumption goes back to the restored snapshot: the committed offset was past it (another replica's progress, or a state_dir restored from a backup); the messages in between are read again");
                true
            }
            (Err(e), _) => {
                tracing::error!(partition, next, error = %e, "could not send the consumer to the restored snapshot's offset: messages between the committed offset and it may be missing from the state");
                false
            }
        }
    }

    /// Acts on rebalances, notes the dead-letter deliveries that finished and the snapshot
    /// writes that completed (called on the daemon's publication tick, so a quiet topic gets
    /// its partitions restored and its offsets stored too).
    pub async fn tick(&mut self, pipeline: &mut Pipeline) {
        self.rebalanced(pipeline).await;
        self.tracker.release(&mut self.ready, &mut self.outcomes);
        self.settle();
        self.finish_writes(false).await;
        self.watch_stalls();
    }

    /// Forgets `partition`'s progress, stall state and series (revoked, or left by a
    /// reconnect). With a state topic its state goes too: the next owner restores the newest
    /// from the topic, and if that is this process again, so does it.
    fn revoked(&mut self, partition: i32, pipeline: &mut Pipeline) {
        self.progress.revoked(partition);
        if self.state_topic.is_some() {
            self.progress.forget(partition);
            pipeline.forget_partition(partition);
        }
        self.stalls.forget(partition);
        self.metrics.forget_partition(&self.topic, partition);
        self.metrics
            .partitions_stalled
            .set(self.stalls.stalled() as i64);
    }

    /// Exports the lags of the partitions consumed now and reports those whose lag grows while
    /// nothing is received from them.
    fn watch_stalls(&mut self) {
        let Some(lags) = self
            .consumer
            .context()
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        // Statistics may still list a partition revoked since: its series are gone already.
        let lags: Vec<(i32, i64)> = lags
            .into_iter()
            .filter(|(p, _)| self.progress.active(*p))
            .collect();
        self.metrics.set_consumer_lags(&self.topic, &lags);
        let now = crate::clock::wall_ms();
        for (partition, lag) in lags {
            let received = self.received.get(partition as usize).copied();
            let transition = self
                .stalls
                .observe(partition, received.unwrap_or(0), Some(lag), now);
            self.metrics.set_partition_stalled(
                &self.topic,
                partition,
                transition.map(|t| t.stalled),
            );
            let Some(t) = transition else { continue };
            match t.stalled {
                true => tracing::error!(partition, lag = t.lag, "partition stalled: its lag grows and nothing has been received from it for kafka.stall_after; check the broker (leader, fetch errors) and this consumer's log"),
                false => tracing::info!(partition, lag = t.lag, "partition consuming again"),
            }
        }
        self.metrics
            .partitions_stalled
            .set(self.stalls.stalled() as i64);
    }

    /// Starts a snapshot of every assigned partition that changed since its last one and has
    /// nothing pending: the partition's state is copied here, encoded and written off this
    /// task (`persist.interval`).
    pub fn persist(&mut self, pipeline: &Pipeline) {
        for (partition, next) in self.progress.due() {
            let started = Instant::now();
            // Only the copy of the state is taken on this task; encoding (most of the cost:
            // seconds at 10,000 cohorts, `benches/snapshot.rs`) and the write are not.
            let state = pipeline.export_partition(partition);
            let store = self.store.clone();
            let topic = self.state_topic.clone();
            let metrics = self.metrics.clone();
            let task = tokio::spawn(async move {
                let bytes = tokio::task::spawn_blocking(move || {
                    let bytes = store.encode(partition, next, state);
                    store.write(partition, &bytes).map(|()| bytes)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(PersistError::Write {
                        path: std::path::PathBuf::from("snapshot task"),
                        source: std::io::Error::other(e.to_string()),
                    })
                })
                .map_err(WriteError::Local)?;
                // Durable only once the topic holds it too: the next owner restores from there.
                if let Some(topic) = topic {
                    let produced = topic
                        .publish(partition, next, &bytes)
                        .await
                        .map_err(WriteError::Topic)?;
                    metrics.state_topic.bytes.inc_by(produced);
                }
                Ok(())
            });
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
                Err(WriteError::Local(PersistError::Write {
                    path: self.store.dir().to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                }))
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
                Err(WriteError::Local(e)) => {
                    self.metrics
                        .snapshot_failures
                        .with_label_values(&[e.reason()])
                        .inc();
                    self.metrics.snapshot_write_failing.set(1);
                    self.progress.write_failed(w.partition);
                    tracing::error!(partition = w.partition, error = %e, "state snapshot not written; consuming goes on, offsets are not committed past the last snapshot");
                }
                Err(WriteError::Topic(e)) => {
                    self.metrics
                        .state_topic
                        .failures
                        .with_label_values(&["publish"])
                        .inc();
                    self.progress.write_failed(w.partition);
                    tracing::error!(partition = w.partition, error = %e, "state snapshot written locally but not to the state topic; consuming goes on, offsets are not committed past the last snapshot in both");
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
    /// partitions from their snapshots (the state topic's or the local one, whichever is
    /// newer; the state topic is read off this loop, [`handover`]), snapshots revoked ones.
    /// Ready once no assigned partition is left restoring: a replica that gains partitions
    /// stays ready for those it had.
    async fn rebalanced(&mut self, pipeline: &mut Pipeline) {
        if !self.restores.is_empty() && self.restores_done(pipeline).await {
            self.metrics.ready.set(1);
        }
        for note in self.notes.take() {
            match note {
                Note::Assigned(partitions) => {
                    let new: Vec<i32> = partitions
                        .into_iter()
                        .filter(|&p| self.progress.assigned(p))
                        .collect();
                    self.assigned(new, pipeline);
                    if self.restores.is_empty() {
                        self.metrics.ready.set(1);
                    }
                }
                Note::Revoked(partitions) => {
                    self.cancel_restores(&partitions);
                    self.persist(pipeline);
                    self.finish_writes(true).await;
                    for p in partitions {
                        self.revoked(p, pipeline);
                    }
                }
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
        let drained = self.await_dead_letters(within).await;
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

    /// Waits (at most `within`) for every dead-letter delivery in flight and settles what
    /// finished; `Err` when some are still in flight.
    async fn await_dead_letters(
        &mut self,
        within: Duration,
    ) -> Result<(), tokio::time::error::Elapsed> {
        let drained = tokio::time::timeout(within, async {
            while !self.tracker.is_empty() {
                self.tracker
                    .wait_front(&mut self.ready, &mut self.outcomes)
                    .await;
            }
        })
        .await;
        self.settle();
        drained
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
    match pipeline.process_keyed(msg.partition(), msg.key(), msg.payload()) {
        Outcome::Applied => None,
        Outcome::Misrouted => {
            // The first and every 100,000th at warn, the rest at debug: a keyless producer
            // makes every message misrouted, and the counter carries the rate. Never the key.
            if metrics.events_misrouted.get() % 100_000 == 1 {
                tracing::warn!(
                    partition = msg.partition(),
                    offset = msg.offset(),
                    "event's message key is not its deployment: applied, but its deployment's events are spread over partitions, which replicas would split; key messages by deployment (driftd_events_misrouted_total counts them)"
                );
            } else {
                tracing::debug!(
                    partition = msg.partition(),
                    offset = msg.offset(),
                    "misrouted event"
                );
            }
            None
        }
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
