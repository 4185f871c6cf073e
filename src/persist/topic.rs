//! The state topic (`persist.topic`): every snapshot written locally is also produced to a
//! compacted Kafka topic, so that whichever replica is assigned a partition next restores the
//! partition's state from Kafka rather than from a disk it does not have.
//!
//! Records: the bytes of the snapshot file (same header, version and checksum), cut into
//! chunks of at most [`CHUNK_BYTES`] (below the brokers' and librdkafka's default 1 MB message
//! limit), keyed `<event topic>/<partition>/<chunk>` so that compaction keeps the newest of
//! each chunk, with headers naming the write, its `next_offset` and `chunk/count`. Event
//! partition `p` goes to state partition `p % persist.topic_partitions`, so a restore reads one
//! state partition. A reader assembles only complete writes and prefers the highest
//! `next_offset`; chunks of an older, longer write that compaction keeps are never mixed in.
//!
//! Owns the topic's records, its creation or check at start and reading a partition's newest
//! complete snapshot back. It must not decide when to snapshot or which offsets to commit
//! (`ingest` does) nor decode state (`SnapshotStore::accept` does), and must not log payloads.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The largest chunk of a snapshot produced as one record (512 KiB).
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The first tail window a restore reads (see [`StateTopic::read`]): a few writes of every
/// event partition sharing the state partition, at typical sizes.
const TAIL_RECORDS: i64 = 64;

// Room for the record's key and headers under librdkafka's and the brokers' 1 MB default.
const _: () = assert!(CHUNK_BYTES + 64 * 1024 < 1_000_000);

/// How long the start-up check and creation may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong with the state topic; the messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The topic exists but would not be compacted: old snapshots would pile up, or be deleted
    /// while they are still the newest.
    #[error("{setting} \"{topic}\" exists with cleanup.policy={policy}; it must be compacted: set cleanup.policy=compact on it, or name another topic (driftd creates a missing one compacted)")]
    NotCompacted {
        /// The setting naming the topic.
        setting: &'static str,
        /// The topic.
        topic: String,
        /// Its cleanup policy.
        policy: String,
    },
    /// The topic is missing and could not be created.
    #[error("{setting} \"{topic}\" does not exist and could not be created ({reason}): create it with cleanup.policy=compact, or grant driftd's credentials topic creation")]
    Create {
        /// The setting naming the topic.
        setting: &'static str,
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// A client could not be made or the brokers did not answer.
    #[error("{setting} \"{topic}\": {reason}")]
    Client {
        /// The setting naming the topic.
        setting: &'static str,
        /// The topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// A snapshot's records were not acknowledged.
    #[error("snapshot of partition {partition} not produced to persist.topic \"{topic}\": {reason}; retried at the next persist.interval, offsets are not committed past it")]
    Publish {
        /// The topic.
        topic: String,
        /// The event partition.
        partition: i32,
        /// The producer's error.
        reason: String,
    },
    /// A partition's snapshots could not be read back in time.
    #[error("partition {partition}'s snapshot not read from persist.topic \"{topic}\": {reason}")]
    Read {
        /// The topic.
        topic: String,
        /// The event partition.
        partition: i32,
        /// What failed.
        reason: String,
    },
}

/// The state topic's producer and reader settings.
#[derive(Clone)]
pub struct StateTopic {
    producer: FutureProducer,
    reader: ClientConfig,
    topic: String,
    source: String,
    partitions: i32,
    read_timeout: Duration,
    writer: u64,
}

/// One write being put together from its chunks.
struct Assembly {
    next: i64,
    chunks: Vec<Option<Vec<u8>>>,
    last_offset: i64,
}

impl StateTopic {
    /// The state topic `topic` for the snapshots of event topic `source`, with clients made
    /// from `cc` (driftd's client settings).
    pub fn new(
        cc: &ClientConfig,
        topic: &str,
        source: &str,
        partitions: i32,
        read_timeout: Duration,
    ) -> Result<StateTopic, TopicError> {
        let client = |e: rdkafka::error::KafkaError| TopicError::Client {
            setting: "persist.topic",
            topic: topic.to_string(),
            reason: e.to_string(),
        };
        let mut pc = cc.clone();
        pc.set("message.max.bytes", (CHUNK_BYTES + 64 * 1024).to_string());
        let producer: FutureProducer = pc.create().map_err(client)?;
        let mut reader = cc.clone();
        // Assigned, never subscribed: the group id only satisfies librdkafka, nothing joins
        // or commits under it, and the replica's static member id must not be shared.
        reader
            .remove("group.instance.id")
            .set("group.id", format!("driftd-state-reader-{source}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        Ok(StateTopic {
            producer,
            reader,
            topic: topic.to_string(),
            source: source.to_string(),
            partitions,
            read_timeout,
            writer: std::collections::hash_map::RandomState::new()
                .hash_one((std::process::id(), crate::clock::wall_ms())),
        })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.topic
    }

    /// Checks at start that the topic exists and is compacted, creating it when missing (see
    /// [`ensure_compacted`]).
    pub fn ensure(&self, cc: &ClientConfig) -> Result<(), TopicError> {
        ensure_compacted(cc, "persist.topic", &self.topic, self.partitions)
    }

    /// `persist.topic_read_timeout`: how long the first read of a partition may take.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// The state partition holding event partition `partition`'s snapshots.
    fn state_partition(&self, partition: i32) -> i32 {
        partition.rem_euclid(self.partitions)
    }

    /// Produces snapshot `bytes` of `partition` at `next` and waits for every chunk to be
    /// acknowledged; returns the bytes produced.
    pub async fn publish(
        &self,
        partition: i32,
        next: i64,
        bytes: &[u8],
    ) -> Result<u64, TopicError> {
        let write = format!(
            "{:016x}-{next}",
            self.writer ^ crate::clock::wall_ms() as u64
        );
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
        let count = chunks.len().max(1);
        let next_text = next.to_string();
        let sends = chunks.iter().enumerate().map(|(i, chunk)| {
            let key = format!("{}/{partition}/{i}", self.source);
            let at = format!("{i}/{count}");
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "driftd-write",
                    value: Some(write.as_str()),
                })
                .insert(Header {
                    key: "driftd-next",
                    value: Some(next_text.as_str()),
                })
                .insert(Header {
                    key: "driftd-chunk",
                    value: Some(at.as_str()),
                });
            let topic = self.topic.as_str();
            let partition = self.state_partition(partition);
            let producer = &self.producer;
            async move {
                let record = FutureRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload(*chunk)
                    .headers(headers);
                producer
                    .send(record, Duration::from_secs(5))
                    .await
                    .map_err(|(e, _)| e.to_string())
            }
        });
        futures::future::try_join_all(sends)
            .await
            .map_err(|reason| TopicError::Publish {
                topic: self.topic.clone(),
                partition,
                reason,
            })?;
        Ok(bytes.len() as u64)
    }

    /// Reads `partition`'s complete snapshots from the topic, best first (highest
    /// `next_offset`, then the latest written), at most two. Blocking, bounded by `timeout`
    /// (`persist.topic_read_timeout`, longer when tried again). Empty when the topic holds
    /// none.
    ///
    /// Reads from the end, not the beginning: until the broker compacts it (Kafka never
    /// compacts the active segment, tansu not at all), the partition holds every snapshot ever
    /// written, and reading all of them at each assignment would grow without bound. The tail
    /// window starts at [`TAIL_RECORDS`] records and doubles until it holds a complete write.
    pub fn read(
        &self,
        partition: i32,
        timeout: Duration,
    ) -> Result<Vec<(i64, Vec<u8>)>, TopicError> {
        let failed = |reason: String| TopicError::Read {
            topic: self.topic.clone(),
            partition,
            reason,
        };
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = self.reader.create().map_err(|e| failed(e.to_string()))?;
        let sp = self.state_partition(partition);
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, sp, timeout)
            .map_err(|e| failed(format!("end offsets not known: {e}")))?;
        let mut window = TAIL_RECORDS;
        loop {
            let from = (high - window).max(low);
            let complete = self.read_range(&consumer, partition, from, high, deadline)?;
            if !complete.is_empty() || from == low {
                return Ok(complete);
            }
            window = window.saturating_mul(2);
        }
    }

    /// The complete writes of `partition` among the state partition's records
    /// `from..high`, best first, at most two.
    fn read_range(
        &self,
        consumer: &BaseConsumer,
        partition: i32,
        from: i64,
        high: i64,
        deadline: Instant,
    ) -> Result<Vec<(i64, Vec<u8>)>, TopicError> {
        let failed = |reason: String| TopicError::Read {
            topic: self.topic.clone(),
            partition,
            reason,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            self.state_partition(partition),
            Offset::Offset(from),
        )
        .map_err(|e| failed(e.to_string()))?;
        consumer.assign(&tpl).map_err(|e| failed(e.to_string()))?;
        let prefix = format!("{}/{partition}/", self.source);
        let mut open: HashMap<String, Assembly> = HashMap::new();
        let mut complete: Vec<(i64, i64, Vec<u8>)> = Vec::new();
        let mut position = from;
        while position < high {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(failed(format!(
                    "not read to its end in time ({} of the last {} records; persist.topic_read_timeout, doubled at each try)",
                    position - from,
                    high - from
                )));
            };
            let msg = match consumer.poll(left.min(Duration::from_millis(200))) {
                None => continue,
                Some(Err(e)) => return Err(failed(e.to_string())),
                Some(Ok(m)) => m,
            };
            position = msg.offset() + 1;
            let Some(chunk) = msg
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.strip_prefix(&prefix))
            else {
                continue;
            };
            let Some(meta) = msg.headers().and_then(|h| Meta::of(h, chunk)) else {
                continue;
            };
            let write = meta.write.clone();
            let a = open.entry(meta.write).or_insert_with(|| Assembly {
                next: meta.next,
                chunks: vec![None; meta.count],
                last_offset: msg.offset(),
            });
            if a.chunks.len() != meta.count || meta.index >= meta.count {
                continue;
            }
            a.chunks[meta.index] = Some(msg.payload().unwrap_or_default().to_vec());
            a.last_offset = msg.offset();
            if a.chunks.iter().all(Option::is_some) {
                let done = open.remove(&write).expect("the assembly just completed");
                let bytes = done.chunks.into_iter().flatten().flatten().collect();
                complete.push((done.next, done.last_offset, bytes));
                complete.sort_by_key(|c| std::cmp::Reverse((c.0, c.1)));
                complete.truncate(2);
            }
        }
        Ok(complete
            .into_iter()
            .map(|(next, _, bytes)| (next, bytes))
            .collect())
    }
}

/// A chunk's headers.
struct Meta {
    write: String,
    next: i64,
    index: usize,
    count: usize,
}

impl Meta {
    fn of(headers: &rdkafka::message::BorrowedHeaders, key_chunk: &str) -> Option<Meta> {
        let text = |name| std::str::from_utf8(header(headers, name)?).ok();
        let (index, count) = text("driftd-chunk")?.split_once('/')?;
        let index: usize = index.parse().ok()?;
        (key_chunk.parse::<usize>().ok()? == index).then_some(())?;
        Some(Meta {
            write: text("driftd-write")?.to_string(),
            next: text("driftd-next")?.parse().ok()?,
            index,
            count: count.parse().ok().filter(|c| (1..=1_000_000).contains(c))?,
        })
    }
}

fn header<'a>(headers: &'a rdkafka::message::BorrowedHeaders, name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.key == name).and_then(|h| h.value)
}

/// Checks at start that `topic` (named by `setting`) exists and is compacted, creating it when missing (with
/// `partitions` partitions, `cleanup.policy=compact`, `retention.ms=-1`).
/// A broker that does not describe topic configs is trusted, with a warning.
pub fn ensure_compacted(
    cc: &ClientConfig,
    setting: &'static str,
    topic: &str,
    partitions: i32,
) -> Result<(), TopicError> {
    let name = topic.to_string();
    let client = |reason: String| TopicError::Client {
        setting,
        topic: name.clone(),
        reason,
    };
    let admin: AdminClient<DefaultClientContext> =
        cc.create().map_err(|e| client(e.to_string()))?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(|e| client(format!("no broker answered: {e}")))?;
    let exists = metadata
        .topics()
        .first()
        .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
    let options = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    if !exists {
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact")
            .set("retention.ms", "-1");
        let created = futures::executor::block_on(admin.create_topics([&new], &options));
        let result = match created {
            Ok(mut r) => r.pop().map(|r| r.map(|_| ()).map_err(|(_, c)| c)),
            Err(e) => Some(Err(e
                .rdkafka_error_code()
                .unwrap_or(RDKafkaErrorCode::Fail))),
        };
        return match result {
            Some(Ok(())) | Some(Err(RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(setting, topic, partitions, "topic created (compacted)");
                Ok(())
            }
            other => Err(TopicError::Create {
                setting,
                topic: name,
                reason: other.map_or("no answer".into(), |r| format!("{r:?}")),
            }),
        };
    }
    let described = futures::executor::block_on(
        admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options),
    );
    let policy = match described.map(|mut r| r.pop()) {
        Ok(Some(Ok(resource))) => resource.get("cleanup.policy").and_then(|e| e.value.clone()),
        other => {
            tracing::warn!(setting, topic, answer = ?other.err(), "the brokers did not describe the topic's config; make sure it is compacted (cleanup.policy=compact)");
            return Ok(());
        }
    };
    match policy {
        Some(p) if !p.split(',').any(|s| s.trim() == "compact") => Err(TopicError::NotCompacted {
            setting,
            topic: name,
            policy: p,
        }),
        _ => Ok(()),
    }
}
