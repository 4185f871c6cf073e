//! The dead-letter producer: rejected events go to a topic with the reason in a header.
//!
//! A record keeps the original key and bytes, so an operator can inspect and re-drive it, only
//! when every byte of them passed the privacy gate: the decoder scans the strings of an event it
//! could parse, but a rejected event may never have been scanned (too large, not JSON), may hide
//! a value behind a duplicate key, or carry personal data in a number or in the message key. So
//! the raw key and payload are scanned here as text; a hit, or a `pii_suspected` rejection,
//! leaves only where the event was (topic, partition, offset) and why, and the header
//! `driftd-payload: withheld`. Personal data must not be copied anywhere. This module must not
//! log payloads or keys.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientContext;

use super::connectivity::Connectivity;
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
/// Header saying whether the record carries the original bytes (`original`) or only their
/// location (`withheld`).
pub const HEADER_PAYLOAD: &str = "driftd-payload";

/// True when the key and payload may be copied: a `pii_suspected` rejection never, anything
/// else only when its raw bytes, read as text, pass the privacy gate.
fn may_copy(reason: Reason, key: Option<&[u8]>, payload: Option<&[u8]>) -> bool {
    let clean = |bytes: Option<&[u8]>| {
        bytes.is_none_or(|b| crate::privacy::scan(&String::from_utf8_lossy(b)).is_none())
    };
    reason != Reason::PiiSuspected && clean(key) && clean(payload)
}

/// The dead-letter producer's callbacks: its errors and logs join the consumer's in one
/// rate-limited report of the brokers' reachability.
pub struct DeadLetterContext {
    connectivity: Arc<Connectivity>,
}

impl ClientContext for DeadLetterContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.connectivity
            .error("dead-letter producer", &error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::connectivity::librdkafka_log(level, fac, log_message);
    }
}

/// Produces dead-letter records.
pub struct DeadLetter {
    producer: FutureProducer<DeadLetterContext>,
    topic: String,
}

impl DeadLetter {
    /// A producer for `kafka.dead_letter_topic`, or `None` when dead-lettering is disabled.
    /// Its errors are reported to `connectivity`.
    pub fn new(
        config: &Config,
        connectivity: Arc<Connectivity>,
    ) -> Result<Option<DeadLetter>, IngestError> {
        if config.kafka.dead_letter_topic.is_empty() {
            return Ok(None);
        }
        let (mut cc, redact) = super::client_config(config)?;
        cc.set("enable.idempotence", "true");
        cc.set("linger.ms", "5");
        cc.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        let producer: FutureProducer<DeadLetterContext> = cc
            .create_with_context(DeadLetterContext { connectivity })
            .map_err(|e| redact.error(e))?;
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
        let copy = may_copy(rejection.reason, msg.key(), msg.payload());
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
            })
            .insert(Header {
                key: HEADER_PAYLOAD,
                value: Some(if copy { "original" } else { "withheld" }),
            });
        let stripped;
        let (key, payload): (Option<&[u8]>, Option<&[u8]>) = if !copy {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: every rejection but `pii_suspected` copied the original bytes, scanned or
    /// not. Each way personal data hid from the decoder's scan now withholds them.
    #[test]
    fn bytes_are_copied_only_when_every_byte_passed_the_gate() {
        let clean = br#"{"schema_version":1,"event_id":"e1","signals":{"tone":3.0}}"#;
        assert!(may_copy(
            Reason::OutOfRange,
            Some(b"support-bot"),
            Some(clean)
        ));
        let oversized = format!(
            r#"{{"pad":"{}","note":"jane.doe@example.com"}}"#,
            "z".repeat(70_000)
        );
        for (what, reason, key, payload) in [
            (
                "never scanned: too large",
                Reason::TooLarge,
                &b"svc"[..],
                oversized.as_bytes(),
            ),
            (
                "not JSON",
                Reason::InvalidJson,
                b"svc",
                b"{call +1 (415) 555-0134",
            ),
            (
                "hidden behind a duplicate key",
                Reason::UnknownField,
                b"svc",
                br#"{"event_id":"jane.doe@example.com","event_id":"e1","x":1}"#,
            ),
            (
                "a phone number as a number",
                Reason::OutOfRange,
                b"svc",
                br#"{"signals":{"tone":14155550134}}"#,
            ),
            (
                "in the message key",
                Reason::InvalidJson,
                b"jane.doe@example.com",
                b"{",
            ),
            (
                "a pii_suspected rejection",
                Reason::PiiSuspected,
                b"svc",
                clean,
            ),
        ] {
            assert!(!may_copy(reason, Some(key), Some(payload)), "{what}");
        }
    }
}
