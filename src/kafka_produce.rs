//! Enqueueing one record on a librdkafka producer, waiting while its local queue is full.
//!
//! librdkafka refuses a record with `QueueFull` when its in-memory queue is at
//! `queue.buffering.max.messages`; the queue drains as the broker acknowledges, so the record is
//! retried after a short pause rather than dropped. Every producer in driftd (the dead-letter
//! producer, the synthetic traffic sender) enqueues through [`send`]. This module owns that wait
//! only: it must not know what is produced, and it must not count, log or decide about any other
//! failure — those go back to the caller.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// Pause before retrying a record refused with `QueueFull`: long enough for librdkafka's
/// background thread to hand a batch to the broker, short enough not to stall a fast producer.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Enqueues `record`, retrying while the producer's queue is full. Returns the delivery to wait
/// for, or the error with which librdkafka refused the record for any other reason.
pub async fn send<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
