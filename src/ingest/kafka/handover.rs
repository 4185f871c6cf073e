//! A partition's state on assignment: restored from the newer of its local snapshot and, with
//! `persist.topic`, the newest complete one in the state topic, so that a partition that moved
//! from another replica continues where that replica's last durable snapshot stopped.
//!
//! Owns the choice between the two copies, the restore phase and the state topic's set-up at
//! start. With a state topic, newly assigned partitions are paused and their snapshots read off
//! the control loop (Kafka Streams' restore phase): the partitions already held keep being
//! consumed, and the messages of a restoring partition fetched before the pause are held back
//! (`Progress::held`) and read again once it is restored. Each read is bounded by
//! `persist.topic_read_timeout` and tried again every second for up to
//! `persist.topic_restore_patience` (the local copy of a partition that moved is older than
//! the topic's, or missing: falling back to an older one means reading again what another
//! replica already did, and to none loses the partition's state, so a loaded or restarting
//! broker is worth waiting out); then the local copy is used, the failure counted
//! (`driftd_state_topic_failures_total{operation="read"}`) and logged, and the consumer goes
//! back to that copy's offset (`Progress::gap`). It must not decide when to snapshot or commit
//! (the parent module does).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;

use super::KafkaSource;
use crate::config::Config;
use crate::ingest::IngestError;
use crate::persist::topic::{StateTopic, TopicError};
use crate::persist::Snapshot;
use crate::pipeline::Pipeline;

/// The state topic of `config` (`None`: `persist.topic` unset), checked or created.
pub(super) fn state_topic(config: &Config) -> Result<Option<StateTopic>, IngestError> {
    let Some(name) = &config.persist.topic else {
        return Ok(None);
    };
    let (cc, redact) = crate::ingest::client_config(config)?;
    let topic = StateTopic::new(
        &cc,
        name,
        &config.kafka.topic,
        config.persist.topic_partitions,
        config.persist.topic_read_timeout,
    )?;
    match topic.ensure(&cc) {
        Ok(()) => {}
        // No broker yet: consuming waits for one anyway, and the topic is then read and
        // written like any other; only the start-up check is skipped.
        Err(TopicError::Client { reason, .. }) => {
            let reason = redact
                .error(rdkafka::error::KafkaError::ClientCreation(reason))
                .to_string();
            tracing::warn!(topic = %name, reason, "the state topic could not be checked at start (is it compacted?); going on");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Some(topic))
}

/// [`StateTopic::read`], tried again a second after each failure for up to `patience`, each try
/// allowed twice as long as the one before (from `persist.topic_read_timeout`, at most what is
/// left of the patience): a snapshot too large to read within the timeout on a loaded broker
/// would otherwise fail the same way at every try.
fn read_retrying(
    topic: &StateTopic,
    partition: i32,
    patience: Duration,
) -> Result<Vec<(i64, Vec<u8>)>, TopicError> {
    let started = Instant::now();
    let mut timeout = topic.read_timeout();
    let mut attempt = 1;
    loop {
        match topic.read(partition, timeout) {
            Err(e) if started.elapsed() < patience => {
                tracing::warn!(partition, attempt, error = %e, "state topic not read; the partition stays paused and its state is read again in a second");
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
                let left = patience.saturating_sub(started.elapsed());
                timeout = (timeout * 2).min(left).max(topic.read_timeout());
            }
            result => return result,
        }
    }
}

/// What reading one partition's state from the topic gave, and how long it took.
type Read = (Result<Vec<(i64, Vec<u8>)>, TopicError>, Duration);

/// A partition whose state is being read from the state topic, off the control loop; the
/// partition is paused meanwhile.
pub(super) struct Restore {
    partition: i32,
    task: tokio::task::JoinHandle<Read>,
}

impl KafkaSource {
    /// Newly assigned `partitions`: restored at once from their local snapshots or, with a
    /// state topic, paused while their snapshots are read from it ([`KafkaSource::restores_done`]
    /// restores them).
    pub(super) fn assigned(&mut self, partitions: Vec<i32>, pipeline: &mut Pipeline) {
        let Some(topic) = self.state_topic.clone() else {
            for p in partitions {
                self.restore(p, pipeline, None);
            }
            return;
        };
        self.pause(&partitions, true);
        for partition in partitions {
            self.progress.restoring(partition);
            let topic = topic.clone();
            let patience = self.restore_patience;
            let task = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                (
                    read_retrying(&topic, partition, patience),
                    started.elapsed(),
                )
            });
            self.restores.push(Restore { partition, task });
        }
        self.count_restoring();
    }

    /// Restores the partitions whose state has been read, sends the consumer where each
    /// resumes and resumes fetching them; true when none is left restoring.
    pub(super) async fn restores_done(&mut self, pipeline: &mut Pipeline) -> bool {
        let mut i = 0;
        let before = self.restores.len();
        while i < self.restores.len() {
            if !self.restores[i].task.is_finished() {
                i += 1;
                continue;
            }
            let Restore { partition, task } = self.restores.swap_remove(i);
            let read = task.await.unwrap_or_else(|e| {
                let failed = TopicError::Read {
                    topic: self
                        .state_topic
                        .as_ref()
                        .map_or("", |t| t.name())
                        .to_string(),
                    partition,
                    reason: e.to_string(),
                };
                (Err(failed), Duration::ZERO)
            });
            let from_topic = self.usable(partition, read);
            self.restore(partition, pipeline, from_topic);
            self.pause(&[partition], false);
        }
        if self.restores.len() != before {
            self.count_restoring();
        }
        self.restores.is_empty()
    }

    /// Forgets the reads of `partitions` (revoked before their state was read).
    pub(super) fn cancel_restores(&mut self, partitions: &[i32]) {
        self.restores.retain(|r| !partitions.contains(&r.partition));
        self.count_restoring();
    }

    fn count_restoring(&self) {
        self.metrics
            .state_topic
            .restoring
            .set(self.restores.len() as i64);
    }

    /// Pauses (or resumes) fetching `partitions`. A pause that fails only costs fetches
    /// (messages are held back anyway); a resume that fails leaves the partition stalled,
    /// which the stall watch reports.
    fn pause(&self, partitions: &[i32], pause: bool) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let done = match pause {
            true => self.consumer.pause(&tpl),
            false => self.consumer.resume(&tpl),
        };
        if let Err(e) = done {
            tracing::error!(partitions = ?partitions, pause, error = %e, "librdkafka refused to pause or resume partitions being restored");
        }
    }

    /// The newest usable snapshot of `partition` in what was read from the state topic
    /// (`None` when it holds none or could not be read in time).
    fn usable(&mut self, partition: i32, (result, took): Read) -> Option<Snapshot> {
        let topic = self.state_topic.as_ref()?;
        self.metrics
            .state_topic
            .read_seconds
            .observe(took.as_secs_f64());
        let candidates = match result {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .state_topic
                    .failures
                    .with_label_values(&["read"])
                    .inc();
                tracing::error!(partition, error = %e, "state topic not read within persist.topic_restore_patience: restoring from the local snapshot, which may be older than the topic's newest (the messages after it are read again; check the brokers, or raise persist.topic_read_timeout)");
                return None;
            }
        };
        let origin = PathBuf::from(format!("kafka:{}/{}/{partition}", topic.name(), self.topic));
        for (_, bytes) in candidates {
            match self.store.accept(&bytes, partition, &origin) {
                Ok(s) => return Some(s),
                Err(e) => {
                    self.metrics
                        .snapshot_failures
                        .with_label_values(&[e.reason()])
                        .inc();
                    tracing::error!(partition, error = %e, "state topic snapshot not usable; trying the one before it, then the local one");
                }
            }
        }
        None
    }

    /// Restores `partition`'s state from the newer of its local snapshot and `from_topic` (by
    /// `next_offset`; none: a clean start from the committed offset).
    pub(super) fn restore(
        &mut self,
        partition: i32,
        pipeline: &mut Pipeline,
        from_topic: Option<Snapshot>,
    ) {
        let loaded = self.store.load(partition);
        for e in &loaded.failures {
            self.metrics
                .snapshot_failures
                .with_label_values(&[e.reason()])
                .inc();
            tracing::error!(partition, error = %e, "state snapshot not usable; falling back to the previous one, or to a clean start from the committed offset");
        }
        let local_next = loaded.snapshot.as_ref().map(|s| s.next_offset);
        let (snapshot, kept, from) = match from_topic {
            Some(t) if local_next.is_none_or(|l| t.next_offset > l) => {
                let next = t.next_offset;
                (Some(t), vec![next], "topic")
            }
            _ => (loaded.snapshot, loaded.kept, "local"),
        };
        let topic_set = self.state_topic.is_some();
        let Some(snapshot) = snapshot else {
            if topic_set {
                self.metrics
                    .state_topic
                    .restores
                    .with_label_values(&["none"])
                    .inc();
            }
            tracing::info!(
                partition,
                "no state snapshot: starting from the committed offset"
            );
            self.restored(partition, None, Vec::new());
            return;
        };
        let (next, cohorts) = (snapshot.next_offset, snapshot.state.cohorts());
        match pipeline.import_partition(partition, snapshot.state) {
            Ok(()) => {
                self.metrics.snapshot_restores.inc();
                if topic_set {
                    self.metrics
                        .state_topic
                        .restores
                        .with_label_values(&[from])
                        .inc();
                }
                tracing::info!(
                    partition,
                    cohorts,
                    next_offset = next,
                    from,
                    written_at = %snapshot.written_at,
                    "state restored from snapshot; consumption resumes at next_offset"
                );
                self.restored(partition, Some(next), kept);
            }
            Err(e) => {
                self.metrics
                    .snapshot_failures
                    .with_label_values(&["shape"])
                    .inc();
                tracing::error!(partition, error = %e, "state snapshot does not fit; starting from the committed offset");
                self.restored(partition, None, Vec::new());
            }
        }
    }

    /// Records the restore and sends the consumer where `partition` resumes: the snapshot's
    /// `next`, or without one the first message held back while its state was read.
    fn restored(&mut self, partition: i32, next: Option<i64>, kept: Vec<i64>) {
        if let Some(to) = self.progress.restored(partition, next, kept) {
            self.seek(partition, to, None);
        }
    }
}
