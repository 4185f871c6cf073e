//! Event-time bucketed rolling windows.
//!
//! A [`Ring`] keeps one accumulator per bucket of fixed event-time width; a bucket is reused
//! once the window has moved a whole span past it. Accumulators are mergeable (they add), so
//! any window that is a whole number of buckets long, up to the span, is a fold over the ring.
//! Pure data: no clock is read here, the caller passes event times and the watermark.

/// An accumulator that can be emptied and added to another of its kind.
pub trait Mergeable: Clone {
    /// Adds `other` into `self`.
    fn merge(&mut self, other: &Self);
    /// Empties the accumulator, keeping its allocation.
    fn clear(&mut self);
}

/// Count, sum and sum of squares of a set of values: a window bucket here, an arm of a
/// canary-vs-control test in `detect::sequential`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Moments {
    /// Number of values.
    pub n: u64,
    /// Sum of values.
    pub sum: f64,
    /// Sum of squared values.
    pub sumsq: f64,
}

impl Moments {
    /// Adds one value.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sumsq += x * x;
    }

    /// Mean of the values, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// Sample standard deviation, `None` with fewer than two values.
    pub fn stddev(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        let var = (self.sumsq - self.sum * self.sum / n) / (n - 1.0);
        Some(var.max(0.0).sqrt())
    }
}

impl Mergeable for Moments {
    fn merge(&mut self, other: &Self) {
        self.n += other.n;
        self.sum += other.sum;
        self.sumsq += other.sumsq;
    }

    fn clear(&mut self) {
        *self = Moments::default();
    }
}

/// Where a value landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// The value was added to its bucket.
    Added,
    /// The value's bucket has already left the ring (older than the span).
    TooOld,
}

/// A ring of `len` buckets of `width_ms` event-time milliseconds each.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ring<T> {
    width_ms: i64,
    /// Bucket number (event time / width) each slot currently holds; `i64::MIN` = never used.
    ids: Box<[i64]>,
    slots: Box<[T]>,
}

impl<T: Mergeable> Ring<T> {
    /// A ring of `len` empty buckets, each a clone of `empty`.
    pub fn new(width_ms: i64, len: usize, empty: T) -> Ring<T> {
        assert!(
            width_ms > 0 && len > 0,
            "ring geometry is validated by config"
        );
        Ring {
            width_ms,
            ids: vec![i64::MIN; len].into_boxed_slice(),
            slots: vec![empty; len].into_boxed_slice(),
        }
    }

    /// A ring from its parts (as [`Ring::parts`] gives them); `ids` and `slots` are as long.
    pub fn from_parts(width_ms: i64, ids: Box<[i64]>, slots: Box<[T]>) -> Ring<T> {
        assert_eq!(ids.len(), slots.len(), "one bucket number per slot");
        Ring {
            width_ms,
            ids,
            slots,
        }
    }

    /// Bucket width, the bucket number each slot holds, and the slots.
    pub fn parts(&self) -> (i64, &[i64], &[T]) {
        (self.width_ms, &self.ids, &self.slots)
    }

    /// Bucket number of an event time.
    pub fn bucket_of(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.width_ms)
    }

    /// Runs `f` on the accumulator of the bucket holding event time `t_ms`.
    pub fn with_bucket(&mut self, t_ms: i64, f: impl FnOnce(&mut T)) -> Landing {
        let id = self.bucket_of(t_ms);
        let slot = id.rem_euclid(self.ids.len() as i64) as usize;
        let held = self.ids[slot];
        if held > id {
            return Landing::TooOld;
        }
        if held < id {
            self.slots[slot].clear();
            self.ids[slot] = id;
        }
        f(&mut self.slots[slot]);
        Landing::Added
    }

    /// Merges the `buckets` most recent buckets ending with the one holding `now_ms` into `into`.
    pub fn fold_last(&self, now_ms: i64, buckets: usize, into: &mut T) {
        let newest = self.bucket_of(now_ms);
        let oldest = newest - buckets.min(self.ids.len()) as i64 + 1;
        for (id, acc) in self.ids.iter().zip(self.slots.iter()) {
            if (oldest..=newest).contains(id) {
                into.merge(acc);
            }
        }
    }

    /// True when the ring has `len` buckets of `width_ms` and every bucket passes `slot_ok`:
    /// what a ring read back from a snapshot must satisfy before the hot path indexes it.
    pub fn fits(&self, width_ms: i64, len: usize, slot_ok: impl Fn(&T) -> bool) -> bool {
        self.width_ms == width_ms
            && self.ids.len() == len
            && self.slots.len() == len
            && self.slots.iter().all(slot_ok)
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false: a ring has at least one bucket.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> Ring<Moments> {
        Ring::new(10_000, 6, Moments::default())
    }

    #[test]
    fn values_land_in_their_bucket_and_windows_merge() {
        let mut r = ring();
        for (t, x) in [(0, 1.0), (9_999, 2.0), (10_000, 4.0), (55_000, 8.0)] {
            assert_eq!(r.with_bucket(t, |m| m.push(x)), Landing::Added);
        }
        let mut all = Moments::default();
        r.fold_last(55_000, 6, &mut all);
        assert_eq!((all.n, all.sum), (4, 15.0));
        let mut last2 = Moments::default();
        r.fold_last(55_000, 2, &mut last2);
        assert_eq!((last2.n, last2.sum), (1, 8.0));
    }

    #[test]
    fn buckets_expire_after_one_span() {
        let mut r = ring();
        r.with_bucket(0, |m| m.push(1.0));
        r.with_bucket(60_000, |m| m.push(2.0)); // same slot, one span later: replaces it
        let mut all = Moments::default();
        r.fold_last(60_000, 6, &mut all);
        assert_eq!((all.n, all.sum), (1, 2.0));
        assert_eq!(r.with_bucket(5_000, |m| m.push(3.0)), Landing::TooOld);
    }

    #[test]
    fn late_value_within_span_lands_in_old_bucket() {
        let mut r = ring();
        r.with_bucket(50_000, |m| m.push(1.0));
        assert_eq!(r.with_bucket(12_000, |m| m.push(1.0)), Landing::Added);
        let mut w = Moments::default();
        r.fold_last(50_000, 5, &mut w);
        assert_eq!(w.n, 2);
    }

    #[test]
    fn moments_match_closed_form() {
        let mut m = Moments::default();
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            m.push(x);
        }
        assert_eq!(m.mean(), Some(5.0));
        // sample variance of this classic set is 32/7
        assert!((m.stddev().unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn split_and_merge_equals_whole(xs in proptest::collection::vec((0i64..60_000, -1.0f64..1.0), 0..200)) {
            let mut r = ring();
            let mut whole = Moments::default();
            for (t, x) in &xs {
                r.with_bucket(*t, |m| m.push(*x));
                whole.push(*x);
            }
            let mut merged = Moments::default();
            r.fold_last(59_999, 6, &mut merged);
            prop_assert_eq!(merged.n, whole.n);
            prop_assert!((merged.sum - whole.sum).abs() < 1e-9);
            prop_assert!((merged.sumsq - whole.sumsq).abs() < 1e-9);
        }
    }
}
