//! A compact, mergeable distribution of a bounded score: equal-width bins over its range.
//!
//! Chosen over a log-scaled histogram because scores have a declared, small, signed range
//! (tone is in [-1, 1]); equal bins give an absolute quantile error of at most half a bin width
//! (0.01 for tone with the default 100 bins) at 4 bytes per bin. Pure data, no I/O.

use super::window::Mergeable;

/// Counts of values in equal-width bins over `[lo, hi]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bins {
    lo: f64,
    hi: f64,
    counts: Box<[u32]>,
}

impl Bins {
    /// An empty distribution of `bins` bins over `[lo, hi]`.
    pub fn new(lo: f64, hi: f64, bins: usize) -> Bins {
        Bins {
            lo,
            hi,
            counts: vec![0; bins].into_boxed_slice(),
        }
    }

    /// True when this distribution has `bins` bins over `[lo, hi]`.
    pub fn fits(&self, lo: f64, hi: f64, bins: usize) -> bool {
        self.lo == lo && self.hi == hi && self.counts.len() == bins
    }

    /// Records one value; values outside the range are clamped to the end bins (the decoder
    /// rejects them before they get here).
    pub fn push(&mut self, x: f64) {
        let n = self.counts.len();
        let pos = ((x - self.lo) / (self.hi - self.lo) * n as f64).floor();
        let i = if pos.is_nan() {
            0
        } else {
            (pos.max(0.0) as usize).min(n - 1)
        };
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The `q` quantile (0 ≤ q ≤ 1), interpolated linearly inside its bin; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let width = (self.hi - self.lo) / self.counts.len() as f64;
        let target = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            let c = f64::from(c);
            if c > 0.0 && seen + c >= target {
                let within = ((target - seen) / c).clamp(0.0, 1.0);
                return Some(self.lo + width * (i as f64 + within));
            }
            seen += c;
        }
        Some(self.hi)
    }
}

impl Mergeable for Bins {
    fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    fn clear(&mut self) {
        self.counts.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uniform_grid_quantiles_are_exact_to_a_bin() {
        let mut b = Bins::new(-1.0, 1.0, 100);
        for i in 0..2000 {
            b.push(-1.0 + (i as f64 + 0.5) / 1000.0);
        }
        for (q, expect) in [(0.5, 0.0), (0.9, 0.8), (0.1, -0.8), (0.99, 0.98)] {
            assert!((b.quantile(q).unwrap() - expect).abs() <= 0.02, "q{q}");
        }
        assert_eq!(b.count(), 2000);
    }

    #[test]
    fn ends_of_range_are_kept() {
        let mut b = Bins::new(-1.0, 1.0, 10);
        b.push(-1.0);
        b.push(1.0);
        assert_eq!(b.count(), 2);
        assert!(b.quantile(0.0).unwrap() >= -1.0);
        assert!(b.quantile(1.0).unwrap() <= 1.0);
        assert_eq!(Bins::new(0.0, 1.0, 4).quantile(0.5), None);
    }

    proptest! {
        #[test]
        fn quantile_error_is_within_one_bin(mut xs in proptest::collection::vec(-1.0f64..=1.0, 1..500), q in 0.0f64..=1.0) {
            let mut b = Bins::new(-1.0, 1.0, 100);
            for x in &xs { b.push(*x); }
            xs.sort_by(f64::total_cmp);
            let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1;
            let exact = xs[rank];
            prop_assert!((b.quantile(q).unwrap() - exact).abs() <= 0.02 + 1e-9, "{} vs {}", b.quantile(q).unwrap(), exact);
        }

        #[test]
        fn merge_is_addition(xs in proptest::collection::vec(-1.0f64..=1.0, 0..100), ys in proptest::collection::vec(-1.0f64..=1.0, 0..100)) {
            let (mut a, mut b, mut all) = (Bins::new(-1.0, 1.0, 50), Bins::new(-1.0, 1.0, 50), Bins::new(-1.0, 1.0, 50));
            for x in &xs { a.push(*x); all.push(*x); }
            for y in &ys { b.push(*y); all.push(*y); }
            a.merge(&b);
            prop_assert_eq!(a, all);
        }
    }
}
