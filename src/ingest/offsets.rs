//! At-least-once offset bookkeeping.
//!
//! An offset may be stored (and so committed) only when its message's effect is durable: applied
//! to cohort state, or, for a rejected message, accepted by the dead-letter topic. Dead-letter
//! deliveries complete asynchronously, so this tracker keeps messages in consumption order and
//! releases offsets from the front only while everything before them is done. Valid traffic
//! never waits: with nothing pending, an applied message's offset is stored at once.

use std::collections::VecDeque;

use futures::FutureExt;
use rdkafka::producer::future_producer::DeliveryFuture;

/// Outcome of one dead-letter delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The broker acknowledged the record.
    Delivered,
    /// The broker did not accept it (librdkafka's retries included).
    Failed,
}

struct Pending {
    partition: i32,
    offset: i64,
    delivery: Option<DeliveryFuture>,
}

/// Offsets waiting for earlier dead-letter deliveries.
#[derive(Default)]
pub struct OffsetTracker {
    queue: VecDeque<Pending>,
}

impl OffsetTracker {
    /// Records a processed message. Returns offsets that may be stored now, in order.
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        delivery: Option<DeliveryFuture>,
        ready: &mut Vec<(i32, i64)>,
        outcomes: &mut Vec<DeliveryOutcome>,
    ) {
        if self.queue.is_empty() && delivery.is_none() {
            ready.push((partition, offset));
            return;
        }
        self.queue.push_back(Pending {
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
                    Some(result) => outcomes.push(classify(result)),
                }
            }
            let p = self.queue.pop_front().expect("front exists");
            ready.push((p.partition, p.offset));
        }
    }

    /// Waits for the oldest pending delivery, then releases what follows it.
    pub async fn wait_front(
        &mut self,
        ready: &mut Vec<(i32, i64)>,
        outcomes: &mut Vec<DeliveryOutcome>,
    ) {
        if let Some(front) = self.queue.front_mut() {
            if let Some(d) = front.delivery.take() {
                outcomes.push(classify(d.await));
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

fn classify(
    result: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> DeliveryOutcome {
    match result {
        Ok(Ok(_)) => DeliveryOutcome::Delivered,
        _ => DeliveryOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_messages_pass_straight_through() {
        let mut t = OffsetTracker::default();
        let (mut ready, mut outcomes) = (Vec::new(), Vec::new());
        t.push(0, 10, None, &mut ready, &mut outcomes);
        t.push(1, 3, None, &mut ready, &mut outcomes);
        assert_eq!(ready, vec![(0, 10), (1, 3)]);
        assert!(t.is_empty());
    }
}
