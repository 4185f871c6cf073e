//! At-least-once offset bookkeeping.
//!
//! An offset may be stored (and so committed) only when its message's effect is durable: applied
//! to cohort state, or, for a rejected message, accepted by the dead-letter topic. Dead-letter
//! deliveries complete asynchronously, so this tracker keeps messages in consumption order and
//! releases offsets from the front only while everything before them is done. Valid traffic
//! never waits: with nothing pending, an applied message's offset is stored at once.
//!
//! The tracker knows nothing of Kafka clients: a delivery is any future of a
//! [`DeliveryOutcome`], which keeps it testable without a broker.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::producer::future_producer::OwnedDeliveryResult;

/// Outcome of one dead-letter delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The broker acknowledged the record.
    Delivered,
    /// The broker did not accept it (librdkafka's retries included).
    Failed,
}

impl From<Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>> for DeliveryOutcome {
    fn from(result: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>) -> Self {
        match result {
            Ok(Ok(_)) => DeliveryOutcome::Delivered,
            _ => DeliveryOutcome::Failed,
        }
    }
}

/// A dead-letter delivery in flight.
pub type Pending = BoxFuture<'static, DeliveryOutcome>;

struct Held {
    partition: i32,
    offset: i64,
    delivery: Option<Pending>,
}

/// Offsets waiting for earlier dead-letter deliveries.
#[derive(Default)]
pub struct OffsetTracker {
    queue: VecDeque<Held>,
}

impl OffsetTracker {
    /// Records a processed message. Appends to `ready` the offsets that may be stored now, in
    /// consumption order, and to `outcomes` the deliveries that finished.
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        delivery: Option<Pending>,
        ready: &mut Vec<(i32, i64)>,
        outcomes: &mut Vec<DeliveryOutcome>,
    ) {
        if self.queue.is_empty() && delivery.is_none() {
            ready.push((partition, offset));
            return;
        }
        self.queue.push_back(Held {
            partition,
            offset,
            delivery,
        });
        self.release(ready, outcomes);
    }

    /// Releases the front of the queue while its deliveries have completed.
    pub fn release(&mut self, ready: &mut Vec<(i32, i64)>, outcomes: &mut Vec<DeliveryOutcome>) {
        while let Some(front) = self.queue.front_mut() {
            if let Some(d) = front.delivery.as_mut() {
                match d.now_or_never() {
                    None => return,
                    Some(outcome) => outcomes.push(outcome),
                }
            }
            let held = self.queue.pop_front().expect("front exists");
            ready.push((held.partition, held.offset));
        }
    }

    /// Waits for the oldest pending delivery, then releases what follows it.
    ///
    /// Cancel-safe: the delivery stays in the queue until it has completed, so a caller that
    /// gives up waiting (a shutdown deadline) never has an offset released early.
    pub async fn wait_front(
        &mut self,
        ready: &mut Vec<(i32, i64)>,
        outcomes: &mut Vec<DeliveryOutcome>,
    ) {
        if let Some(front) = self.queue.front_mut() {
            if let Some(d) = front.delivery.as_mut() {
                let outcome = d.await;
                front.delivery = None;
                outcomes.push(outcome);
            }
        }
        self.release(ready, outcomes);
    }

    /// Messages held back.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no offset is held back.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests;
