//! At-least-once offset bookkeeping.
//!
//! An offset may be stored (and so committed) only when its message's effect is durable: applied
//! to cohort state, or, for a rejected message, accepted by the dead-letter topic. Dead-letter
//! deliveries complete asynchronously, so this tracker keeps each partition's messages in
//! consumption order and releases a partition's offsets from its front only while everything
//! before them on that partition is done. Valid traffic
//! never waits: with nothing pending, an applied message's offset is stored at once.
//!
//! The tracker knows nothing of Kafka clients: a delivery is any future of a
//! [`DeliveryOutcome`], which keeps it testable without a broker.

use std::collections::{BTreeMap, VecDeque};

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
    offset: i64,
    delivery: Option<Pending>,
}

/// Offsets waiting for earlier dead-letter deliveries of their own partition: one partition's
/// slow delivery never holds back another's offsets (nor, so, its state snapshots).
#[derive(Default)]
pub struct OffsetTracker {
    queues: BTreeMap<i32, VecDeque<Held>>,
    len: usize,
}

impl OffsetTracker {
    /// Records a processed message. Appends to `ready` the offsets that may be stored now, in
    /// consumption order within each partition, and to `outcomes` the deliveries that finished.
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        delivery: Option<Pending>,
        ready: &mut Vec<(i32, i64)>,
        outcomes: &mut Vec<DeliveryOutcome>,
    ) {
        let queue = self.queues.entry(partition).or_default();
        if queue.is_empty() && delivery.is_none() {
            ready.push((partition, offset));
        } else {
            queue.push_back(Held { offset, delivery });
            self.len += 1;
        }
        if self.len > 0 {
            self.release(ready, outcomes);
        }
    }

    /// Releases the front of each partition's queue while its deliveries have completed.
    pub fn release(&mut self, ready: &mut Vec<(i32, i64)>, outcomes: &mut Vec<DeliveryOutcome>) {
        for (&partition, queue) in &mut self.queues {
            while let Some(front) = queue.front_mut() {
                if let Some(d) = front.delivery.as_mut() {
                    match d.now_or_never() {
                        None => break,
                        Some(outcome) => outcomes.push(outcome),
                    }
                }
                let held = queue.pop_front().expect("front exists");
                self.len -= 1;
                ready.push((partition, held.offset));
            }
        }
    }

    /// Waits for the oldest pending delivery of the lowest partition holding one, then
    /// releases what can go.
    ///
    /// Cancel-safe: the delivery stays in the queue until it has completed, so a caller that
    /// gives up waiting (a shutdown deadline) never has an offset released early.
    pub async fn wait_front(
        &mut self,
        ready: &mut Vec<(i32, i64)>,
        outcomes: &mut Vec<DeliveryOutcome>,
    ) {
        let front = self
            .queues
            .values_mut()
            .find_map(|q| q.front_mut().filter(|h| h.delivery.is_some()));
        if let Some(front) = front {
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
        self.len
    }

    /// True when no offset is held back.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests;
