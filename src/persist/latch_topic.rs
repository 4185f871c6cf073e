//! The latch topic (`persist.latch_topic`): containment's [`Journal`] over Kafka.
//!
//! A compacted topic (created like the state topic, refused if it exists uncompacted) holding
//! [`Record`]s as JSON, keyed `latch/<deployment>`, `epoch/<event partition>` and
//! `request/<id>`; the records about event partition `p` go to latch partition
//! `p % persist.latch_topic_partitions` (those of no known partition to partition 0), so one
//! partition's claims and latch changes are ordered. Every replica tails every partition from
//! the beginning with a group-less consumer on a thread of its own and merges what it reads
//! ([`Merged`]); [`Journal::caught_up`] is the bounded read to the end that fencing needs.
//!
//! Owns the Kafka clients of that topic and nothing of containment's rules (`contain::fence`).
//! Must not log record values: they hold operator names and reasons.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::topic::{ensure_compacted, TopicError};
use crate::contain::fence::{request_key, Journal, Merged, Record};

/// How long start-up waits for a broker that does not answer yet.
const START_WAIT: Duration = Duration::from_secs(60);

/// The latch topic: producer, tail and merged view.
pub struct LatchTopic {
    producer: FutureProducer,
    /// Asks the brokers for end offsets; never assigned.
    ends: BaseConsumer,
    topic: String,
    partitions: i32,
    read_timeout: Duration,
    writer: String,
    merged: Arc<Mutex<Merged>>,
    /// The next offset the tail will read, per latch partition.
    positions: Arc<Mutex<HashMap<i32, i64>>>,
    changed: watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
}

impl LatchTopic {
    /// Checks (or creates) `topic`, then starts tailing it. `cc` is driftd's client config.
    pub fn start(
        cc: &ClientConfig,
        topic: &str,
        partitions: i32,
        read_timeout: Duration,
    ) -> Result<Arc<LatchTopic>, TopicError> {
        let client = |e: rdkafka::error::KafkaError| TopicError::Client {
            setting: "persist.latch_topic",
            topic: topic.to_string(),
            reason: e.to_string(),
        };
        // Containment cannot start without the topic's partitions, but a broker slow to answer
        // at start (a rolling restart of both, a loaded node) should not crash-loop driftd:
        // waited out for a minute, then refused.
        let started = Instant::now();
        loop {
            match ensure_compacted(cc, "persist.latch_topic", topic, partitions) {
                Err(e @ TopicError::Client { .. }) if started.elapsed() < START_WAIT => {
                    tracing::warn!(topic, error = %e, "the latch topic could not be checked yet; trying again");
                    std::thread::sleep(Duration::from_secs(1));
                }
                result => break result?,
            }
        }
        let mut pc = cc.clone();
        pc.set("linger.ms", "0");
        let producer: FutureProducer = pc.create().map_err(client)?;
        let mut rc = cc.clone();
        // Assigned, never subscribed: the group id only satisfies librdkafka; nothing joins or
        // commits under it.
        rc.remove("group.instance.id")
            .set("group.id", format!("driftd-latch-reader-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50");
        let ends: BaseConsumer = rc.create().map_err(client)?;
        let tail: BaseConsumer = rc.create().map_err(client)?;
        let metadata = tail
            .fetch_metadata(Some(topic), START_WAIT)
            .map_err(client)?;
        let count = metadata
            .topics()
            .first()
            .map_or(partitions, |t| t.partitions().len() as i32)
            .max(1);
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(client)?;
        }
        tail.assign(&tpl).map_err(client)?;
        let writer = format!(
            "{:016x}",
            std::collections::hash_map::RandomState::new()
                .hash_one((std::process::id(), crate::clock::wall_ms()))
        );
        let merged = Arc::new(Mutex::new(Merged::default()));
        let positions = Arc::new(Mutex::new(HashMap::new()));
        let (tx, changed) = watch::channel(0u64);
        let stop = Arc::new(AtomicBool::new(false));
        let (m, pos, halt) = (merged.clone(), positions.clone(), stop.clone());
        std::thread::Builder::new()
            .name("driftd-latch-tail".into())
            .spawn(move || tail_loop(&tail, &m, &pos, &tx, &halt))
            .map_err(|e| TopicError::Client {
                setting: "persist.latch_topic",
                topic: topic.to_string(),
                reason: format!("cannot start the tail thread: {e}"),
            })?;
        Ok(Arc::new(LatchTopic {
            producer,
            ends,
            topic: topic.to_string(),
            partitions: count,
            read_timeout,
            writer,
            merged,
            positions,
            changed,
            stop,
        }))
    }

    fn latch_partition(&self, partition: Option<i32>) -> i32 {
        partition.map_or(0, |p| p.rem_euclid(self.partitions))
    }
}

impl Drop for LatchTopic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn tail_loop(
    tail: &BaseConsumer,
    merged: &Mutex<Merged>,
    positions: &Mutex<HashMap<i32, i64>>,
    changed: &watch::Sender<u64>,
    stop: &AtomicBool,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let Some(received) = tail.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = match received {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "latch topic tail: receive error (librdkafka retries)");
                continue;
            }
        };
        let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
        if let Some(key) = key {
            let mut m = merged.lock().unwrap_or_else(PoisonError::into_inner);
            if !m.apply(key, msg.payload()) {
                tracing::warn!(
                    partition = msg.partition(),
                    offset = msg.offset(),
                    "latch topic record not understood; skipped"
                );
            }
        }
        positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(msg.partition(), msg.offset() + 1);
        n += 1;
        changed.send_replace(n);
    }
}

impl Journal for Arc<LatchTopic> {
    fn writer(&self) -> &str {
        &self.writer
    }

    fn produce(
        &self,
        record: Result<Record, (Option<i32>, String)>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let (partition, key, value) = match &record {
            Ok(r) => (
                r.partition(),
                r.key(),
                Some(serde_json::to_vec(r).expect("records serialise")),
            ),
            Err((partition, id)) => (*partition, request_key(id), None),
        };
        let this = self.clone();
        async move {
            let mut fr = FutureRecord::<String, Vec<u8>>::to(&this.topic)
                .partition(this.latch_partition(partition))
                .key(&key);
            if let Some(v) = &value {
                fr = fr.payload(v);
            }
            this.producer
                .send(fr, Duration::from_secs(5))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e.to_string())
        }
        .boxed()
    }

    fn caught_up(&self, partition: Option<i32>) -> BoxFuture<'static, Result<(), String>> {
        let this = self.clone();
        async move {
            let lp = this.latch_partition(partition);
            let started = Instant::now();
            let t = this.clone();
            let (_, high) = tokio::task::spawn_blocking(move || {
                t.ends.fetch_watermarks(&t.topic, lp, t.read_timeout)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("end offset not known: {e}"))?;
            loop {
                let at = this
                    .positions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&lp)
                    .copied()
                    .unwrap_or(0);
                if at >= high {
                    return Ok(());
                }
                if started.elapsed() > this.read_timeout {
                    return Err(format!(
                        "latch partition {lp} not read to its end ({at} of {high}) within persist.latch_read_timeout"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        .boxed()
    }

    fn merged(&self) -> MutexGuard<'_, Merged> {
        self.merged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }
}
