//! A partition's state on assignment: restored from the newer of its local snapshot and, with
//! `persist.topic`, the newest complete one in the state topic, so that a partition that moved
//! from another replica continues where that replica's last durable snapshot stopped.
//!
//! Owns the choice between the two copies and the state topic's set-up at start. Reading the
//! topic runs off the control loop, all newly assigned partitions at once, each bounded by
//! `persist.topic_read_timeout` and tried again for up to [`READ_PATIENCE`] (the local copy of a
//! partition that moved is older than the topic's, or missing: falling back to an older one means
//! reading again what another replica already did, and to none loses the partition's state, so a
//! loaded or restarting broker is worth waiting out); then the local copy is used, the failure
//! counted (`driftd_state_topic_failures_total{operation="read"}`) and logged, and the consumer
//! goes back to that copy's offset (`Progress::gap`). It must not decide when to
//! snapshot or commit (the parent module does).

use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// How long a partition's state is sought in the state topic before falling back to the local
/// snapshot. A loaded broker answered metadata only after 20 s and more in tests (tansu); a
/// minute stays well inside librdkafka's `max.poll.interval.ms` (5 minutes by default), past
/// which the consumer, not polled meanwhile, would leave its group.
const READ_PATIENCE: Duration = Duration::from_secs(60);

/// [`StateTopic::read`], tried again a second after each failure for up to [`READ_PATIENCE`].
fn read_retrying(topic: &StateTopic, partition: i32) -> Result<Vec<(i64, Vec<u8>)>, TopicError> {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        match topic.read(partition) {
            Err(e) if started.elapsed() < READ_PATIENCE => {
                tracing::warn!(partition, attempt, error = %e, "state topic not read; trying again");
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            result => return result,
        }
    }
}

impl KafkaSource {
    /// The newest usable snapshot in the state topic of each of `partitions` (in order;
    /// `None` when no topic is configured, it holds none, or it could not be read in time).
    pub(super) async fn read_state_topic(&mut self, partitions: &[i32]) -> Vec<Option<Snapshot>> {
        let Some(topic) = &self.state_topic else {
            return partitions.iter().map(|_| None).collect();
        };
        let reads: Vec<_> = partitions
            .iter()
            .map(|&p| {
                let topic = topic.clone();
                tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    (read_retrying(&topic, p), started.elapsed())
                })
            })
            .collect();
        let mut out = Vec::with_capacity(partitions.len());
        for (&partition, read) in partitions.iter().zip(reads) {
            let (result, took) = match read.await {
                Ok(r) => r,
                Err(e) => (
                    Err(TopicError::Read {
                        topic: topic.name().to_string(),
                        partition,
                        reason: e.to_string(),
                    }),
                    Duration::ZERO,
                ),
            };
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
                    tracing::error!(partition, error = %e, "state topic not read: restoring from the local snapshot, which may be older than the topic's newest (the messages after it are read again; check the brokers, or raise persist.topic_read_timeout)");
                    out.push(None);
                    continue;
                }
            };
            let origin =
                PathBuf::from(format!("kafka:{}/{}/{partition}", topic.name(), self.topic));
            let mut found = None;
            for (_, bytes) in candidates {
                match self.store.accept(&bytes, partition, &origin) {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => {
                        self.metrics
                            .snapshot_failures
                            .with_label_values(&[e.reason()])
                            .inc();
                        tracing::error!(partition, error = %e, "state topic snapshot not usable; trying the one before it, then the local one");
                    }
                }
            }
            out.push(found);
        }
        out
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
            self.progress.restored(partition, None, Vec::new());
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
                self.progress.restored(partition, Some(next), kept);
                self.seek(partition, next, None);
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
}
