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
use rdkafka::ClientContext;

/// Pause before retrying a record refused with `QueueFull`: long enough for librdkafka's
/// background thread to hand a batch to the broker, short enough not to stall a fast producer.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Enqueues `record`, retrying while the producer's queue is full. Returns the delivery to wait
/// for, or the error with which librdkafka refused the record for any other reason.
pub async fn send<K, P, C>(
    producer: &FutureProducer<C>,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    C: ClientContext + 'static,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(properties: &[(&str, &str)]) -> FutureProducer {
        let mut cc = rdkafka::ClientConfig::new();
        // Nothing listens on port 1: records wait in the queue until they time out.
        cc.set("bootstrap.servers", "127.0.0.1:1");
        for (k, v) in properties {
            cc.set(*k, *v);
        }
        cc.create().expect("producer")
    }

    #[tokio::test]
    async fn a_record_refused_for_a_full_queue_is_enqueued_once_the_queue_drains() {
        let producer = producer(&[
            ("queue.buffering.max.messages", "1"),
            ("message.timeout.ms", "300"),
        ]);
        let first = send(&producer, FutureRecord::<(), _>::to("t").payload("a"))
            .await
            .expect("the queue has room");
        let started = tokio::time::Instant::now();
        let second = tokio::time::timeout(
            Duration::from_secs(10),
            send(&producer, FutureRecord::<(), _>::to("t").payload("b")),
        )
        .await
        .expect("the first record times out and frees the queue");
        assert!(second.is_ok(), "{:?}", second.err());
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "the second record waited for the first to leave the queue"
        );
        let (e, _) = first
            .await
            .expect("delivery reported")
            .expect_err("no broker");
        assert_eq!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageTimedOut)
        );
    }

    #[tokio::test]
    async fn any_other_refusal_goes_back_to_the_caller() {
        let producer = producer(&[("message.max.bytes", "1000")]);
        let big = vec![0u8; 10_000];
        let Err(e) = send(&producer, FutureRecord::<(), _>::to("t").payload(&big)).await else {
            panic!("a record over message.max.bytes is refused");
        };
        assert_eq!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge)
        );
    }
}
