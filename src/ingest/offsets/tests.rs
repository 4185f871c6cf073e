//! The tracker against a model: a list of messages in consumption order, each either applied or
//! waiting on a dead-letter delivery, of which exactly the done prefix may be stored.

use futures::channel::oneshot;
use proptest::prelude::*;

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

/// Regression: `wait_front` took the delivery out of the queue before awaiting it, so a caller
/// that stopped waiting (the shutdown deadline) left an entry that the next release treated as
/// delivered, storing an offset whose dead-letter record was never acknowledged.
#[test]
fn wait_front_cancelled_keeps_the_offset_held() {
    let mut t = OffsetTracker::default();
    let (mut ready, mut outcomes) = (Vec::new(), Vec::new());
    let (tx, rx) = oneshot::channel();
    t.push(0, 1, Some(pending(rx)), &mut ready, &mut outcomes);
    assert!(t
        .wait_front(&mut ready, &mut outcomes)
        .now_or_never()
        .is_none());
    t.release(&mut ready, &mut outcomes);
    assert!(ready.is_empty(), "released before the delivery finished");
    tx.send(DeliveryOutcome::Delivered).unwrap();
    t.wait_front(&mut ready, &mut outcomes)
        .now_or_never()
        .expect("delivery done");
    assert_eq!(ready, vec![(0, 1)]);
    assert_eq!(outcomes, vec![DeliveryOutcome::Delivered]);
}

fn pending(rx: oneshot::Receiver<DeliveryOutcome>) -> Pending {
    // A dropped sender is a delivery librdkafka gave up on.
    rx.map(|r| r.unwrap_or(DeliveryOutcome::Failed)).boxed()
}

#[derive(Debug, Clone)]
enum Op {
    /// A message received on `partition`: applied, or rejected with a dead-letter record.
    Push { partition: i32, dead_letter: bool },
    /// The `nth` unfinished delivery finishes (`None`: the producer dropped it).
    Finish {
        nth: usize,
        outcome: Option<DeliveryOutcome>,
    },
    /// The publication tick.
    Release,
    /// Back-pressure or drain, polled once: a caller that gives up is a deadline passing.
    WaitFront,
    /// The partition was revoked and assigned again: consumption restarts at an earlier offset.
    Rebalance { partition: i32, back: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        Just(Some(DeliveryOutcome::Delivered)),
        Just(Some(DeliveryOutcome::Failed)),
        Just(None),
    ];
    prop_oneof![
        4 => (0..3i32, any::<bool>()).prop_map(|(partition, dead_letter)| Op::Push { partition, dead_letter }),
        3 => (any::<usize>(), outcome).prop_map(|(nth, outcome)| Op::Finish { nth, outcome }),
        1 => Just(Op::Release),
        1 => Just(Op::WaitFront),
        1 => (0..3i32, 0..5i64).prop_map(|(partition, back)| Op::Rebalance { partition, back }),
    ]
}

/// One message as the model sees it.
struct Message {
    at: (i32, i64),
    /// `None`: applied. `Some(None)`: delivery unfinished. `Some(Some(o))`: finished with `o`.
    delivery: Option<Option<DeliveryOutcome>>,
    sender: Option<oneshot::Sender<DeliveryOutcome>>,
}

struct Model {
    messages: Vec<Message>,
    next_offset: [i64; 3],
}

impl Model {
    /// The offsets that may be stored: the done prefix, in consumption order.
    fn storable(&self) -> Vec<(i32, i64)> {
        self.messages
            .iter()
            .take_while(|m| !matches!(m.delivery, Some(None)))
            .map(|m| m.at)
            .collect()
    }

    /// The delivery outcomes of that prefix, in order.
    fn reported(&self) -> Vec<DeliveryOutcome> {
        self.messages
            .iter()
            .take_while(|m| !matches!(m.delivery, Some(None)))
            .filter_map(|m| m.delivery.flatten())
            .collect()
    }
}

proptest! {
    #[test]
    fn releases_exactly_the_done_prefix_in_order(ops in proptest::collection::vec(op(), 1..80)) {
        let mut t = OffsetTracker::default();
        let (mut ready, mut outcomes) = (Vec::new(), Vec::new());
        let mut model = Model { messages: Vec::new(), next_offset: [0; 3] };
        for op in ops {
            let mut observes = true;
            match op {
                Op::Push { partition, dead_letter } => {
                    let offset = model.next_offset[partition as usize];
                    model.next_offset[partition as usize] += 1;
                    let (sender, delivery) = if dead_letter {
                        let (tx, rx) = oneshot::channel();
                        (Some(tx), Some(pending(rx)))
                    } else {
                        (None, None)
                    };
                    model.messages.push(Message {
                        at: (partition, offset),
                        delivery: dead_letter.then_some(None),
                        sender,
                    });
                    t.push(partition, offset, delivery, &mut ready, &mut outcomes);
                }
                Op::Finish { nth, outcome } => {
                    observes = false;
                    let unfinished: Vec<usize> = (0..model.messages.len())
                        .filter(|&i| matches!(model.messages[i].delivery, Some(None)))
                        .collect();
                    if let Some(&i) = unfinished.get(nth % unfinished.len().max(1)) {
                        let m = &mut model.messages[i];
                        let sender = m.sender.take().expect("unfinished has a sender");
                        match outcome {
                            Some(o) => sender.send(o).unwrap(),
                            None => drop(sender),
                        }
                        m.delivery = Some(Some(outcome.unwrap_or(DeliveryOutcome::Failed)));
                    }
                }
                Op::Release => t.release(&mut ready, &mut outcomes),
                Op::WaitFront => {
                    if t.wait_front(&mut ready, &mut outcomes).now_or_never().is_none() {
                        // Gave up waiting (a deadline): fine only if the front is unfinished.
                        observes = false;
                        let front = model.messages.get(ready.len()).map(|m| m.delivery);
                        prop_assert_eq!(front, Some(Some(None)), "blocked on a finished front");
                    }
                }
                Op::Rebalance { partition, back } => {
                    observes = false;
                    let p = partition as usize;
                    model.next_offset[p] = (model.next_offset[p] - back).max(0);
                }
            }
            if observes {
                prop_assert_eq!(&ready, &model.storable());
                prop_assert_eq!(&outcomes, &model.reported());
            } else {
                // Nothing is released early, whatever was observed.
                prop_assert!(ready.len() <= model.storable().len());
                prop_assert_eq!(&ready[..], &model.storable()[..ready.len()]);
            }
            let unreleased = model.messages.len() - ready.len();
            prop_assert!(t.len() <= unreleased);
        }
        // Every delivery finishes: everything is released, each outcome reported once.
        for m in &mut model.messages {
            if let Some(tx) = m.sender.take() {
                tx.send(DeliveryOutcome::Delivered).unwrap();
                m.delivery = Some(Some(DeliveryOutcome::Delivered));
            }
        }
        while !t.is_empty() {
            t.wait_front(&mut ready, &mut outcomes).now_or_never().expect("all finished");
        }
        t.release(&mut ready, &mut outcomes);
        prop_assert_eq!(&ready, &model.storable());
        prop_assert_eq!(ready.len(), model.messages.len());
        prop_assert_eq!(&outcomes, &model.reported());
    }
}
