//! Event-time clocks, one per Kafka partition, and the stream's clock derived from them.
//!
//! Owns the rule that decides whether an event is `late`, and what "now" means for a cohort's
//! windows. A deployment's events share one partition (the message key is the deployment), so
//! each partition's clock is the largest `emitted_at` applied from it: one producer whose clock
//! runs ahead, or one event dated far in the future that got past the `future` check, moves
//! only its own partition's clock and makes no other partition's events late.
//!
//! The stream's watermark (what `/v1/cohorts` and `driftd_watermark_timestamp_seconds` show) is
//! the minimum over the active partitions: those whose clock is within `idle_after` (the
//! window span) of the newest. A partition further behind holds nothing a window still covers,
//! and counting it would hold the stream's clock back for as long as it stays quiet.
//!
//! It also owns the `future` rule: an event dated more than `ingest.max_future_skew` ahead of
//! a reference clock is refused before it can move any clock. The daemon's reference is the
//! wall clock (the caller reads it); a replay's is the newest event applied so far, where two
//! refused events in a row that agree with each other (within the skew) are a gap in the
//! recording, not a bad clock: the second is admitted, so a recording with a quiet hour loses
//! one event there instead of everything after it.
//!
//! Pure: no I/O, no wall clock.

/// The event was older than its partition's clock minus the allowed lateness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late;

/// The clock of every partition that has applied an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermarks {
    /// (partition, largest `emitted_at` applied from it), sorted by partition: a consumer holds
    /// a handful of partitions, so a sorted vector beats a map on the hot path.
    clocks: Vec<(i32, i64)>,
    idle_after_ms: i64,
}

impl Watermarks {
    /// No clock yet; a partition more than `idle_after_ms` behind the newest is not active.
    pub fn new(idle_after_ms: i64) -> Watermarks {
        Watermarks {
            clocks: Vec::new(),
            idle_after_ms,
        }
    }

    /// The clock of `partition`, if it has applied an event.
    pub fn get(&self, partition: i32) -> Option<i64> {
        self.clocks
            .binary_search_by_key(&partition, |c| c.0)
            .ok()
            .map(|i| self.clocks[i].1)
    }

    /// Admits an event at `t_ms` read from `partition` unless it is older than that
    /// partition's clock minus `lateness_ms`, and moves the clock.
    pub fn admit(&mut self, partition: i32, t_ms: i64, lateness_ms: i64) -> Result<(), Late> {
        match self.clocks.binary_search_by_key(&partition, |c| c.0) {
            Ok(i) => {
                let clock = &mut self.clocks[i].1;
                if t_ms < clock.saturating_sub(lateness_ms) {
                    return Err(Late);
                }
                *clock = (*clock).max(t_ms);
            }
            Err(i) => self.clocks.insert(i, (partition, t_ms)),
        }
        Ok(())
    }

    /// Puts back a saved clock of `partition` (a restored snapshot): the later of the two wins.
    pub fn restore(&mut self, partition: i32, t_ms: i64) {
        match self.clocks.binary_search_by_key(&partition, |c| c.0) {
            Ok(i) => self.clocks[i].1 = self.clocks[i].1.max(t_ms),
            Err(i) => self.clocks.insert(i, (partition, t_ms)),
        }
    }

    /// The newest clock of any partition.
    pub fn newest(&self) -> Option<i64> {
        self.clocks.iter().map(|c| c.1).max()
    }

    /// The stream's watermark: the oldest clock among the active partitions.
    pub fn stream(&self) -> Option<i64> {
        let newest = self.newest()?;
        self.clocks
            .iter()
            .map(|c| c.1)
            .filter(|&t| t >= newest.saturating_sub(self.idle_after_ms))
            .min()
    }
}

/// The `future` rule: how far ahead of the reference clock an event may be dated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Future {
    skew_ms: i64,
    /// A replay's last refused event, if the event before this one was refused.
    candidate: Option<i64>,
}

impl Future {
    /// Events more than `skew_ms` ahead of the reference are refused.
    pub fn new(skew_ms: i64) -> Future {
        Future {
            skew_ms,
            candidate: None,
        }
    }

    /// Changes the skew (hot-reloadable).
    pub fn set_skew_ms(&mut self, skew_ms: i64) {
        self.skew_ms = skew_ms;
    }

    /// The daemon's rule: is an event at `t_ms` within the skew of the wall clock `now_ms`?
    pub fn admit_live(&self, t_ms: i64, now_ms: i64) -> bool {
        t_ms <= now_ms.saturating_add(self.skew_ms)
    }

    /// A replay's rule: is an event at `t_ms` within the skew of `newest_ms` (the newest event
    /// applied so far; none yet admits anything), or the second of two refused events in a row
    /// that agree with each other?
    pub fn admit_replay(&mut self, t_ms: i64, newest_ms: Option<i64>) -> bool {
        let within = newest_ms.is_none_or(|n| t_ms <= n.saturating_add(self.skew_ms));
        let gap = self
            .candidate
            .is_some_and(|c| t_ms.abs_diff(c) <= self.skew_ms.unsigned_abs());
        self.candidate = match within || gap {
            true => None,
            false => Some(t_ms),
        };
        within || gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn live_refuses_only_beyond_the_skew_of_the_wall_clock() {
        let f = Future::new(300_000);
        assert!(f.admit_live(1_300_000, 1_000_000));
        assert!(!f.admit_live(1_300_001, 1_000_000));
        assert!(!f.admit_live(i64::MAX, 1_000_000));
        assert!(f.admit_live(i64::MIN, 1_000_000));
    }

    #[test]
    fn replay_refuses_a_lone_outlier_and_crosses_a_gap_losing_one_event() {
        let mut f = Future::new(300_000);
        assert!(f.admit_replay(1_000, None), "nothing to judge the first by");
        assert!(f.admit_replay(2_000, Some(1_000)));
        // Year 9999, alone: refused; the stream goes on.
        assert!(!f.admit_replay(253_402_300_799_000, Some(2_000)));
        assert!(f.admit_replay(3_000, Some(2_000)));
        // Two outliers that do not agree: both refused.
        assert!(!f.admit_replay(253_402_300_799_000, Some(3_000)));
        assert!(!f.admit_replay(100_000_000, Some(3_000)));
        // A quiet hour in the recording: the first event after it is refused, the second,
        // close to it, is admitted (and with it the stream's clock moves on).
        assert!(!f.admit_replay(3_603_000, Some(3_000)));
        assert!(f.admit_replay(3_604_000, Some(3_000)));
        assert!(f.admit_replay(3_605_000, Some(3_604_000)));
    }

    #[test]
    fn one_partition_far_ahead_makes_no_other_partitions_event_late() {
        let mut w = Watermarks::new(3_600_000);
        w.admit(0, 1_000_000, 120_000).unwrap();
        w.admit(1, 1_000_000, 120_000).unwrap();
        // Year 9999 on partition 1.
        w.admit(1, 253_402_300_799_000, 120_000).unwrap();
        assert_eq!(w.admit(0, 1_000_500, 120_000), Ok(()));
        assert_eq!(w.admit(1, 1_000_500, 120_000), Err(Late));
        assert_eq!(w.get(0), Some(1_000_500));
        // Partition 0 is idle next to partition 1's clock: the stream follows partition 1.
        assert_eq!(w.stream(), Some(253_402_300_799_000));
    }

    #[test]
    fn the_stream_watermark_is_the_oldest_active_partition() {
        let mut w = Watermarks::new(60_000);
        assert_eq!(w.stream(), None);
        w.admit(3, 100_000, 0).unwrap();
        w.admit(1, 130_000, 0).unwrap();
        assert_eq!(w.stream(), Some(100_000));
        assert_eq!(w.newest(), Some(130_000));
        // Partition 3 falls more than idle_after behind: no longer active.
        w.admit(1, 160_001, 0).unwrap();
        assert_eq!(w.stream(), Some(160_001));
        // It speaks again: active again.
        w.admit(3, 150_000, 0).unwrap();
        assert_eq!(w.stream(), Some(150_000));
    }

    #[test]
    fn restore_keeps_the_later_clock() {
        let mut w = Watermarks::new(60_000);
        w.admit(2, 50_000, 0).unwrap();
        w.restore(2, 40_000);
        w.restore(5, 70_000);
        assert_eq!((w.get(2), w.get(5)), (Some(50_000), Some(70_000)));
    }

    proptest! {
        /// Lateness is judged per partition exactly as a single-partition clock would judge the
        /// events of that partition alone, whatever the other partitions do.
        #[test]
        fn each_partition_is_judged_as_if_alone(
            events in prop::collection::vec((0i32..4, 0i64..10_000_000), 1..300),
            lateness in 0i64..1_000_000,
        ) {
            let mut all = Watermarks::new(i64::MAX);
            let mut alone: Vec<Watermarks> = (0..4).map(|_| Watermarks::new(i64::MAX)).collect();
            for (p, t) in events {
                let got = all.admit(p, t, lateness);
                let want = alone[p as usize].admit(0, t, lateness);
                prop_assert_eq!(got, want);
            }
            let newest = all.newest();
            let stream = all.stream();
            prop_assert!(stream <= newest);
            for p in 0..4 {
                prop_assert_eq!(all.get(p), alone[p as usize].get(0));
                if let (Some(c), Some(s)) = (all.get(p), stream) {
                    prop_assert!(s <= c, "the stream is never ahead of an active partition");
                }
            }
        }
    }
}
