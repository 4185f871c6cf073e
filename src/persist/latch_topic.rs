//! The latch topic (`persist.latch_topic`): containment's [`Journal`] over Kafka.
//!
//! A compacted topic (created like the state topic, refused if it exists uncompacted) holding
//! [`Record`]s as JSON, keyed `latch/<deployment>`, `view/<deployment>`, `epoch/<event
//! partition>` and `request/<id>`; the records about event partition `p` go to latch partition
//! `p % persist.latch_topic_partitions` (those of no known partition to partition 0), so one
//! partition's claims and latch changes are ordered. Every replica tails every partition from
//! the beginning with a group-less consumer on a thread of its own and merges what it reads
//! ([`Merged`]); [`Journal::caught_up`] is the bounded read to the end that fencing needs.
//!
//! Owns the Kafka clients of that topic and nothing of containment's rules (`contain::fence`).
//! Must not log record values: they hold operator names and reasons.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
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
use crate::metrics::Metrics;

/// How long one attempt to reach the brokers waits, and the pause before the next.
const ATTEMPT_WAIT: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The `driftd_kafka_blocked` reason (and `/readyz` line) while the topic is not read yet.
const BLOCK: &str = "latch_topic";

/// How far the latch topic's opening got; containment waits for `Read`.
#[derive(Debug, Clone, PartialEq)]
enum Opening {
    /// Checking the topic or reading it to its end for the first time.
    Reading,
    /// Read to the end it had once opened: the merged view holds every latch.
    Read,
    /// The topic cannot be used (it exists uncompacted, or cannot be created).
    Refused(String),
}

/// The latch topic: producer, tail and merged view.
pub struct LatchTopic {
    producer: FutureProducer,
    /// Asks the brokers for end offsets; never assigned.
    ends: BaseConsumer,
    topic: String,
    /// The topic's partitions, once the tail found them (the configured count until then).
    partitions: AtomicI32,
    read_timeout: Duration,
    writer: String,
    merged: Arc<Mutex<Merged>>,
    /// The next offset the tail will read, per latch partition.
    positions: Arc<Mutex<HashMap<i32, i64>>>,
    changed: watch::Receiver<u64>,
    opening: watch::Receiver<Opening>,
    stop: Arc<AtomicBool>,
}

impl LatchTopic {
    /// Makes the clients and starts the tail thread, which checks (or creates) `topic`, then
    /// reads it from the beginning. Returns at once: a broker slow to answer at start (a
    /// rolling restart of both, a loaded node) must not keep the admin server from answering
    /// `/healthz`, nor crash-loop driftd. Until the topic is read, `/readyz` answers 503
    /// (`driftd_kafka_blocked{reason="latch_topic"}`) and containment waits
    /// ([`Journal::opened`]). `cc` is driftd's client config.
    pub fn start(
        cc: &ClientConfig,
        topic: &str,
        partitions: i32,
        read_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<LatchTopic>, TopicError> {
        let client = |e: rdkafka::error::KafkaError| TopicError::Client {
            setting: "persist.latch_topic",
            topic: topic.to_string(),
            reason: e.to_string(),
        };
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
        let writer = format!(
            "{:016x}",
            std::collections::hash_map::RandomState::new()
                .hash_one((std::process::id(), crate::clock::wall_ms()))
        );
        metrics.kafka_block(
            BLOCK,
            Some(format!("containment is reading the latch topic persist.latch_topic \"{topic}\" to its end; it acts and answers for every deployment once it has")),
        );
        let (tx, changed) = watch::channel(0u64);
        let (opened, opening) = watch::channel(Opening::Reading);
        let this = Arc::new(LatchTopic {
            producer,
            ends,
            topic: topic.to_string(),
            partitions: AtomicI32::new(partitions.max(1)),
            read_timeout,
            writer,
            merged: Arc::new(Mutex::new(Merged::default())),
            positions: Arc::new(Mutex::new(HashMap::new())),
            changed,
            opening,
            stop: Arc::new(AtomicBool::new(false)),
        });
        let tailer = Tailer {
            cc: cc.clone(),
            tail,
            topic: topic.to_string(),
            partitions,
            found: Arc::downgrade(&this),
            merged: this.merged.clone(),
            positions: this.positions.clone(),
            changed: tx,
            opened,
            stop: this.stop.clone(),
            metrics,
        };
        std::thread::Builder::new()
            .name("driftd-latch-tail".into())
            .spawn(move || tailer.run())
            .map_err(|e| TopicError::Client {
                setting: "persist.latch_topic",
                topic: topic.to_string(),
                reason: format!("cannot start the tail thread: {e}"),
            })?;
        Ok(this)
    }

    fn latch_partition(&self, partition: Option<i32>) -> i32 {
        partition.map_or(0, |p| p.rem_euclid(self.partitions.load(Ordering::Acquire)))
    }
}

impl Drop for LatchTopic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The tail thread's side: opens the topic, then reads it for as long as driftd runs.
struct Tailer {
    cc: ClientConfig,
    tail: BaseConsumer,
    topic: String,
    partitions: i32,
    /// Told the partition count found; weak, so dropping the topic stops the thread.
    found: std::sync::Weak<LatchTopic>,
    merged: Arc<Mutex<Merged>>,
    positions: Arc<Mutex<HashMap<i32, i64>>>,
    changed: watch::Sender<u64>,
    opened: watch::Sender<Opening>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Tailer {
    fn run(self) {
        let ends = match self.open() {
            Ok(Some(ends)) => ends,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "the latch topic cannot be used; containment does not start");
                self.metrics.kafka_block(BLOCK, Some(e.to_string()));
                self.opened.send_replace(Opening::Refused(e.to_string()));
                return;
            }
        };
        self.tail_loop(ends);
    }

    /// Checks (or creates) the topic, assigns every partition from the beginning and returns
    /// each one's end offset now; `None` if driftd stopped first. Brokers that do not answer
    /// are waited for, said on `/readyz`; only a topic that cannot serve is an error.
    fn open(&self) -> Result<Option<HashMap<i32, i64>>, TopicError> {
        let mut attempts = 0u32;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            match self.try_open() {
                Ok(ends) => return Ok(Some(ends)),
                Err(e @ TopicError::Client { .. }) => {
                    attempts += 1;
                    // Said at the first failure, then every minute or so: not once a second.
                    if attempts == 1 || attempts % 10 == 0 {
                        tracing::warn!(topic = %self.topic, attempts, error = %e, "the latch topic cannot be read yet; containment waits for it and tries again");
                    }
                    self.metrics.kafka_block(
                        BLOCK,
                        Some(format!("containment waits for the latch topic: {e}; check that the brokers answer")),
                    );
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_open(&self) -> Result<HashMap<i32, i64>, TopicError> {
        let client = |e: rdkafka::error::KafkaError| TopicError::Client {
            setting: "persist.latch_topic",
            topic: self.topic.clone(),
            reason: e.to_string(),
        };
        ensure_compacted(
            &self.cc,
            "persist.latch_topic",
            &self.topic,
            self.partitions,
        )?;
        let metadata = self
            .tail
            .fetch_metadata(Some(&self.topic), ATTEMPT_WAIT)
            .map_err(client)?;
        let count = metadata
            .topics()
            .first()
            .map_or(self.partitions, |t| t.partitions().len() as i32)
            .max(1);
        let mut ends = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            let (low, high) = self
                .tail
                .fetch_watermarks(&self.topic, p, ATTEMPT_WAIT)
                .map_err(client)?;
            if high > low {
                ends.insert(p, high);
            }
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)
                .map_err(client)?;
        }
        self.tail.assign(&tpl).map_err(client)?;
        if let Some(topic) = self.found.upgrade() {
            topic.partitions.store(count, Ordering::Release);
        }
        Ok(ends)
    }

    /// Reads the topic into the merged view until driftd stops; says `Read` once every
    /// partition was read to `ends`, the end it had when opened.
    fn tail_loop(&self, mut ends: HashMap<i32, i64>) {
        let mut n = 0u64;
        let mut read = false;
        while !self.stop.load(Ordering::Acquire) {
            if !read && ends.is_empty() {
                read = true;
                self.metrics.kafka_block(BLOCK, None);
                self.opened.send_replace(Opening::Read);
                tracing::info!(topic = %self.topic, records = n, "latch topic read to its end; containment acts and answers for every deployment");
            }
            let Some(received) = self.tail.poll(Duration::from_millis(100)) else {
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
                let mut m = self.merged.lock().unwrap_or_else(PoisonError::into_inner);
                if !m.apply(key, msg.payload()) {
                    tracing::warn!(
                        partition = msg.partition(),
                        offset = msg.offset(),
                        "latch topic record not understood; skipped"
                    );
                }
            }
            self.positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(msg.partition(), msg.offset() + 1);
            if ends
                .get(&msg.partition())
                .is_some_and(|end| msg.offset() + 1 >= *end)
            {
                ends.remove(&msg.partition());
            }
            n += 1;
            self.changed.send_replace(n);
        }
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

    fn opened(&self) -> BoxFuture<'static, Result<(), String>> {
        let mut opening = self.opening.clone();
        async move {
            let state = opening
                .wait_for(|o| *o != Opening::Reading)
                .await
                .map(|o| o.clone())
                .map_err(|_| "the latch topic's tail thread ended".to_string())?;
            match state {
                Opening::Refused(why) => Err(why),
                _ => Ok(()),
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
