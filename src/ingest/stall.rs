//! Stalled partitions: a partition whose consumer lag grows while no message has been received
//! from it for `kafka.stall_after` (a broker-side fetch problem, a paused partition, a consumer
//! wedged on one partition). Consumer lag alone cannot tell a busy partition from a stuck one;
//! "nothing received while the lag grows" can.
//!
//! Pure: the caller passes the time, each partition's count of received messages and its lag
//! (from librdkafka's statistics), and reports the transitions this returns.

use std::collections::BTreeMap;

/// One partition's progress as last seen.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    received: u64,
    /// When `received` last moved (or the partition was first seen), in ms.
    since_ms: i64,
    /// The lag then.
    lag_then: i64,
    stalled: bool,
}

/// A partition became stalled (`true`) or moves again (`false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The partition.
    pub partition: i32,
    /// Stalled now.
    pub stalled: bool,
    /// Its consumer lag.
    pub lag: i64,
}

/// The stall state of every partition being watched.
#[derive(Debug, Clone, Default)]
pub struct StallWatch {
    after_ms: i64,
    seen: BTreeMap<i32, Seen>,
}

impl StallWatch {
    /// Partitions are stalled after `after_ms` without a message while their lag grows.
    pub fn new(after_ms: i64) -> StallWatch {
        StallWatch {
            after_ms,
            seen: BTreeMap::new(),
        }
    }

    /// Updates `partition` with its received-message count and lag (`None`: not reported yet)
    /// at `now_ms`; returns a transition when its state changed.
    pub fn observe(
        &mut self,
        partition: i32,
        received: u64,
        lag: Option<i64>,
        now_ms: i64,
    ) -> Option<Transition> {
        let lag = lag.unwrap_or(0);
        let seen = self.seen.entry(partition).or_insert(Seen {
            received,
            since_ms: now_ms,
            lag_then: lag,
            stalled: false,
        });
        if seen.received != received {
            let was = seen.stalled;
            *seen = Seen {
                received,
                since_ms: now_ms,
                lag_then: lag,
                stalled: false,
            };
            return was.then_some(Transition {
                partition,
                stalled: false,
                lag,
            });
        }
        let stalled = lag > seen.lag_then && now_ms - seen.since_ms >= self.after_ms;
        if stalled == seen.stalled {
            return None;
        }
        seen.stalled = stalled;
        Some(Transition {
            partition,
            stalled,
            lag,
        })
    }

    /// Stops watching `partition` (revoked); returns a transition if it was stalled.
    pub fn forget(&mut self, partition: i32) -> Option<Transition> {
        let seen = self.seen.remove(&partition)?;
        seen.stalled.then_some(Transition {
            partition,
            stalled: false,
            lag: 0,
        })
    }

    /// How many partitions are stalled.
    pub fn stalled(&self) -> usize {
        self.seen.values().filter(|s| s.stalled).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_when_nothing_arrives_while_the_lag_grows() {
        let mut w = StallWatch::new(60_000);
        assert_eq!(w.observe(0, 10, Some(5), 0), None);
        // Nothing received, lag the same: an idle partition, not a stall.
        assert_eq!(w.observe(0, 10, Some(5), 120_000), None);
        // The lag grows, but not yet for stall_after since the last message.
        let mut w = StallWatch::new(60_000);
        w.observe(0, 10, Some(5), 0);
        assert_eq!(w.observe(0, 10, Some(50), 59_999), None);
        assert_eq!(
            w.observe(0, 10, Some(80), 60_000),
            Some(Transition {
                partition: 0,
                stalled: true,
                lag: 80
            })
        );
        assert_eq!(w.stalled(), 1);
        assert_eq!(w.observe(0, 10, Some(90), 70_000), None, "said once");
        // A message arrives: moving again.
        assert_eq!(
            w.observe(0, 11, Some(89), 71_000),
            Some(Transition {
                partition: 0,
                stalled: false,
                lag: 89
            })
        );
        assert_eq!(w.stalled(), 0);
    }

    #[test]
    fn a_busy_partition_with_lag_is_not_stalled_and_a_revoked_one_is_forgotten() {
        let mut w = StallWatch::new(1_000);
        for t in 0..100 {
            assert_eq!(
                w.observe(3, t as u64, Some(10_000 + t * 100), t * 1_000),
                None
            );
        }
        w.observe(4, 0, Some(1), 0);
        assert!(w.observe(4, 0, Some(2), 1_000).unwrap().stalled);
        assert_eq!(w.forget(4).map(|t| t.stalled), Some(false));
        assert_eq!(w.forget(3), None);
        assert_eq!(w.stalled(), 0);
    }
}
