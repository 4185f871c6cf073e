//! Eviction of idle cohorts: a cohort with no event for `cohorts.idle_expiry` of its
//! partition's event time leaves the table, so cohorts that come and go (retired canary
//! versions, segments that appear once) do not hold memory, metric series and places under
//! `cohorts.max_cohorts` for good.
//!
//! Runs on the hot path, when a partition's clock enters a new bucket, and only over that
//! partition's cohorts: eviction is then a function of each partition's events alone, so a
//! restored snapshot and a replay evict exactly where an uninterrupted run did. The caller
//! takes the [`Evicted`] record to move detection state in step.
//! The overflow cohort is never evicted. Pure: no I/O, no wall clock.

use super::{Cohort, CohortKey, CohortTable};

/// What one eviction removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Evicted {
    /// For each table index before the eviction, its index after (or `None`: evicted). Indices
    /// keep their order.
    pub map: Vec<Option<usize>>,
    /// The keys of the evicted cohorts.
    pub keys: Vec<CohortKey>,
}

impl CohortTable {
    /// Evicts the cohorts of `partition` idle for longer than the idle expiry at the
    /// partition's clock. The record is kept for [`CohortTable::take_evicted`].
    pub(super) fn expire(&mut self, partition: i32) {
        let Some(now) = self.watermarks.get(partition) else {
            return;
        };
        let idle_ms = self.idle_expiry_ms;
        let overflow = self.overflow;
        let idle = |i: usize, c: &Cohort| {
            Some(i) != overflow
                && c.partition == partition
                && now.saturating_sub(c.last_event_ms) > idle_ms
        };
        self.remove_where(idle);
    }

    /// Removes every cohort read from `partition`: the partition moved to another replica,
    /// which restores its state from the state topic, so what this process holds goes stale.
    /// The record is kept for [`CohortTable::take_evicted`].
    pub fn forget_partition(&mut self, partition: i32) {
        let overflow = self.overflow;
        self.remove_where(|i, c| Some(i) != overflow && c.partition == partition);
    }

    fn remove_where(&mut self, idle: impl Fn(usize, &Cohort) -> bool) {
        let overflow = self.overflow;
        if !self.cohorts.iter().enumerate().any(|(i, c)| idle(i, c)) {
            return;
        }
        let mut map = Vec::with_capacity(self.cohorts.len());
        let mut keys = Vec::new();
        let mut kept = Vec::with_capacity(self.cohorts.len());
        for (i, c) in std::mem::take(&mut self.cohorts).into_iter().enumerate() {
            if idle(i, &c) {
                self.index.remove(&c.key);
                keys.push(c.key);
                map.push(None);
            } else {
                map.push(Some(kept.len()));
                kept.push(c);
            }
        }
        self.cohorts = kept;
        for i in self.index.values_mut() {
            *i = map[*i].expect("indexed cohorts are kept or removed from the index");
        }
        self.overflow = overflow.and_then(|o| map[o]);
        // Two evictions between takes (two partitions' clocks moving before the caller looks)
        // compose.
        self.evicted = Some(match self.evicted.take() {
            None => Evicted { map, keys },
            Some(mut first) => {
                for m in &mut first.map {
                    *m = m.and_then(|i| map[i]);
                }
                first.keys.extend(keys);
                first
            }
        });
    }

    /// What was evicted since the last call.
    pub fn take_evicted(&mut self) -> Option<Evicted> {
        self.evicted.take()
    }
}

/// `items` (one per table index before an eviction) moved to their indices after it.
pub fn compact<T>(items: &mut Vec<T>, map: &[Option<usize>]) {
    let mut i = 0;
    items.retain(|_| {
        let keep = map.get(i).is_none_or(Option::is_some);
        i += 1;
        keep
    });
}
