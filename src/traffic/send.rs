//! Producing generated traffic to Kafka (`driftd gen`, the demo and the tests' producers).
//!
//! Owns the producer that waits for acknowledgements in batches. It must not shape the
//! traffic: that is [`super::Generator`]'s, so the files `gen --output` writes and the messages
//! it produces are the same events.

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{Generator, TrafficModel};

/// Why producing failed.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The producer could not be created.
    #[error("cannot create the kafka producer; check --brokers")]
    Producer(#[source] KafkaError),
    /// Some messages were not acknowledged by the broker.
    #[error("{failed} of {sent} messages were not acknowledged by the broker (first error: {first}); is the topic there and the broker up?")]
    Delivery {
        /// Messages that failed.
        failed: u64,
        /// Messages sent.
        sent: u64,
        /// The first error.
        first: String,
    },
}

/// A producer that waits for acknowledgements in batches.
pub struct Sender {
    producer: FutureProducer,
    topic: String,
    pending: Vec<rdkafka::producer::future_producer::DeliveryFuture>,
    sent: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Sender {
    /// A producer to `brokers` (with extra librdkafka properties) for `topic`.
    pub fn new(
        brokers: &str,
        topic: &str,
        properties: &[(&str, &str)],
    ) -> Result<Sender, TrafficError> {
        let mut cc = rdkafka::ClientConfig::new();
        cc.set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "200000");
        for (k, v) in properties {
            cc.set(*k, *v);
        }
        Ok(Sender {
            producer: cc.create().map_err(TrafficError::Producer)?,
            topic: topic.to_string(),
            pending: Vec::new(),
            sent: 0,
            failed: 0,
            first_error: None,
        })
    }

    /// Enqueues one message (optionally to a given partition), waiting when the queue is full.
    pub async fn send(
        &mut self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        partition: Option<i32>,
    ) {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        match crate::kafka_produce::send(&self.producer, record).await {
            Ok(delivery) => self.pending.push(delivery),
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e.to_string());
            }
        }
        self.sent += 1;
        if self.pending.len() >= 5_000 {
            self.settle().await;
        }
    }

    /// Waits for every pending acknowledgement.
    pub async fn settle(&mut self) {
        for d in self.pending.drain(..) {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    self.failed += 1;
                    self.first_error.get_or_insert(e.to_string());
                }
                Err(_) => {
                    self.failed += 1;
                    self.first_error.get_or_insert("producer dropped".into());
                }
            }
        }
    }

    /// Waits for everything and reports failures.
    pub async fn finish(mut self) -> Result<u64, TrafficError> {
        self.settle().await;
        match self.failed {
            0 => Ok(self.sent),
            failed => Err(TrafficError::Delivery {
                failed,
                sent: self.sent,
                first: self.first_error.unwrap_or_default(),
            }),
        }
    }
}

/// How many events `gen` produces and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Events per second (0 = as fast as possible).
    pub rate: f64,
    /// Stop after this many events.
    pub count: u64,
}

/// Produces `pace.count` events of `model` to Kafka with `emitted_at` = now.
pub async fn produce(model: TrafficModel, pace: Pace, sender: &mut Sender) {
    let mut generator = Generator::new(model, Some(pace.count));
    let started = Instant::now();
    for i in 0..pace.count {
        if pace.rate > 0.0 && i % 64 == 0 {
            let due = Duration::from_secs_f64(i as f64 / pace.rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let g = generator.next_event(crate::clock::wall_ms());
        sender
            .send(Some(g.key.as_bytes()), Some(&g.payload), None)
            .await;
    }
}
