//! The tracker against a model: a list of messages in consumption order, each either applied or
//! waiting on a dead-letter delivery, of which exactly each partition's done prefix may be
//! stored.

use std::collections::BTreeMap;

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
    /// The offsets that may be stored, per partition: each partition's done prefix, in
    /// consumption order.
    fn storable(&self) -> BTreeMap<i32, Vec<i64>> {
        let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let mut blocked = [false; 3];
        for m in &self.messages {
            let p = m.at.0 as usize;
            blocked[p] |= matches!(m.delivery, Some(None));
            if !blocked[p] {
                out.entry(m.at.0).or_default().push(m.at.1);
            }
        }
        out
    }

    /// How many deliveries of the storable messages finished delivered and failed.
    fn reported(&self) -> [usize; 2] {
        let mut blocked = [false; 3];
        let mut counts = [0; 2];
        for m in &self.messages {
            let p = m.at.0 as usize;
            blocked[p] |= matches!(m.delivery, Some(None));
            match (blocked[p], m.delivery.flatten()) {
                (false, Some(DeliveryOutcome::Delivered)) => counts[0] += 1,
                (false, Some(DeliveryOutcome::Failed)) => counts[1] += 1,
                _ => {}
            }
        }
        counts
    }

    /// The first unreleased message of the lowest partition that has one.
    fn awaited(&self) -> Option<Option<Option<DeliveryOutcome>>> {
        let storable = self.storable();
        let done = |p: i32| storable.get(&p).map_or(0, Vec::len);
        (0..3).find_map(|p| {
            self.messages
                .iter()
                .filter(|m| m.at.0 == p)
                .nth(done(p))
                .map(|m| m.delivery)
        })
    }
}

fn by_partition(ready: &[(i32, i64)]) -> BTreeMap<i32, Vec<i64>> {
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in ready {
        out.entry(*p).or_default().push(*o);
    }
    out
}

fn counted(outcomes: &[DeliveryOutcome]) -> [usize; 2] {
    [
        outcomes
            .iter()
            .filter(|o| **o == DeliveryOutcome::Delivered)
            .count(),
        outcomes
            .iter()
            .filter(|o| **o == DeliveryOutcome::Failed)
            .count(),
    ]
}

fn is_prefix(part: &BTreeMap<i32, Vec<i64>>, whole: &BTreeMap<i32, Vec<i64>>) -> bool {
    part.iter().all(|(p, offsets)| {
        whole
            .get(p)
            .is_some_and(|w| w.len() >= offsets.len() && w[..offsets.len()] == offsets[..])
    })
}

proptest! {
    #[test]
    fn releases_exactly_each_partitions_done_prefix_in_order(ops in proptest::collection::vec(op(), 1..80)) {
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
                        prop_assert_eq!(model.awaited(), Some(Some(None)), "blocked on a finished front");
                    }
                }
                Op::Rebalance { partition, back } => {
                    observes = false;
                    let p = partition as usize;
                    model.next_offset[p] = (model.next_offset[p] - back).max(0);
                }
            }
            if observes {
                prop_assert_eq!(by_partition(&ready), model.storable());
                prop_assert_eq!(counted(&outcomes), model.reported());
            } else {
                // Nothing is released early, whatever was observed.
                prop_assert!(is_prefix(&by_partition(&ready), &model.storable()));
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
        prop_assert_eq!(by_partition(&ready), model.storable());
        prop_assert_eq!(ready.len(), model.messages.len());
        prop_assert_eq!(counted(&outcomes), model.reported());
    }
}
