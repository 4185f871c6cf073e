//! The dead-letter producer: rejected events go to a topic with the reason in a header.
//!
//! For every reason except `pii_suspected` the record keeps the original key and bytes, so an
//! operator can inspect and re-drive it. For `pii_suspected` it carries only where the event was
//! (topic, partition, offset) and why: personal data must not be copied anywhere. This module
//! must not log payloads or keys.

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::IngestError;
use crate::config::Config;
use crate::event::{Reason, Rejection};

/// Header carrying the rejection reason code.
pub const HEADER_REASON: &str = "driftd-reason";
/// Header carrying the contract field at fault.
pub const HEADER_FIELD: &str = "driftd-field";
/// Headers carrying the source location.
pub const HEADER_SOURCE_TOPIC: &str = "driftd-source-topic";
/// Source partition header.
pub const HEADER_SOURCE_PARTITION: &str = "driftd-source-partition";
/// Source offset header.
pub const HEADER_SOURCE_OFFSET: &str = "driftd-source-offset";

/// Produces dead-letter records.
pub struct DeadLetter {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetter {
    /// A producer for `kafka.dead_letter_topic`, or `None` when dead-lettering is disabled.
    pub fn new(config: &Config) -> Result<Option<DeadLetter>, IngestError> {
        if config.kafka.dead_letter_topic.is_empty() {
            return Ok(None);
        }
        let mut cc = super::client_config(config)?;
        cc.set("enable.idempotence", "true");
        cc.set("linger.ms", "5");
        cc.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        let producer: FutureProducer = cc.create()?;
        Ok(Some(DeadLetter {
            producer,
            topic: config.kafka.dead_letter_topic.clone(),
        }))
    }

    /// Enqueues the dead-letter record for `msg`. Returns the delivery to wait for, or `None`
    /// when librdkafka refused the record outright (counted as failed by the caller).
    pub async fn send(
        &self,
        msg: &BorrowedMessage<'_>,
        rejection: &Rejection,
    ) -> Option<DeliveryFuture> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON,
                value: Some(rejection.reason.as_str()),
            })
            .insert(Header {
                key: HEADER_FIELD,
                value: Some(rejection.field),
            })
            .insert(Header {
                key: HEADER_SOURCE_TOPIC,
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: HEADER_SOURCE_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: HEADER_SOURCE_OFFSET,
                value: Some(offset.as_str()),
            });
        let stripped;
        let (key, payload): (Option<&[u8]>, Option<&[u8]>) =
            if rejection.reason == Reason::PiiSuspected {
                stripped = serde_json::json!({
                    "source_topic": msg.topic(),
                    "source_partition": msg.partition(),
                    "source_offset": msg.offset(),
                    "reason": rejection.reason.as_str(),
                })
                .to_string();
                (None, Some(stripped.as_bytes()))
            } else {
                (msg.key(), msg.payload())
            };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        match crate::kafka_produce::send(&self.producer, record).await {
            Ok(delivery) => Some(delivery),
            Err(e) => {
                tracing::error!(error = %e, partition = msg.partition(), offset = msg.offset(),
                    "dead-letter record refused by the producer");
                None
            }
        }
    }

    /// Waits for every enqueued record to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = rdkafka::producer::Producer::flush(&self.producer, timeout) {
            tracing::warn!(error = %e, "dead-letter producer did not flush in time");
        }
    }
}
