//! The long-run EWMA: an exponentially weighted mean and variance in event time.
//!
//! Reported per cohort and metric (the `baseline` of `/v1/cohorts`, and
//! `driftd_cohort_baseline_rate` or `driftd_cohort_baseline_mean`) for an operator to read;
//! nothing alarms on it. The baseline that alarms is the self-baseline CUSUM in
//! `detect::cusum`, which learns its own reference.
//!
//! Weights decay with event time, not with event count, so a cohort that goes quiet keeps its
//! mean and a busy cohort does not forget faster than a slow one. Decay is applied per
//! elapsed bucket, which keeps the per-event cost to three additions. Pure: the caller supplies
//! event times.

/// Exponentially decayed count, sum and sum of squares.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ewma {
    /// Decay factor per bucket: `0.5^(bucket / half_life)`.
    decay_per_bucket: f64,
    /// Bucket whose events were last added undecayed.
    at_bucket: Option<i64>,
    weight: f64,
    sum: f64,
    sumsq: f64,
}

impl Ewma {
    /// An empty EWMA with the given bucket width and half-life, both in milliseconds of event
    /// time.
    pub fn new(bucket_ms: i64, half_life_ms: i64) -> Ewma {
        Ewma {
            decay_per_bucket: 0.5f64.powf(bucket_ms as f64 / half_life_ms as f64),
            at_bucket: None,
            weight: 0.0,
            sum: 0.0,
            sumsq: 0.0,
        }
    }

    /// Adds a value observed in `bucket`. Values of older buckets (late events) are added with
    /// the weight they would have had if they had arrived in order.
    pub fn push(&mut self, bucket: i64, x: f64) {
        let w = match self.at_bucket {
            None => {
                self.at_bucket = Some(bucket);
                1.0
            }
            Some(at) if bucket > at => {
                let f = self
                    .decay_per_bucket
                    .powi((bucket - at).min(i32::MAX as i64) as i32);
                self.weight *= f;
                self.sum *= f;
                self.sumsq *= f;
                self.at_bucket = Some(bucket);
                1.0
            }
            Some(at) => self
                .decay_per_bucket
                .powi((at - bucket).min(i32::MAX as i64) as i32),
        };
        self.weight += w;
        self.sum += w * x;
        self.sumsq += w * x * x;
    }

    /// The weighted mean, `None` before the first value.
    pub fn mean(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.sum / self.weight)
    }

    /// The weighted standard deviation, `None` before the first value.
    pub fn stddev(&self) -> Option<f64> {
        let m = self.mean()?;
        Some((self.sumsq / self.weight - m * m).max(0.0).sqrt())
    }

    /// Effective number of events behind the mean (the decayed weight).
    pub fn weight(&self) -> f64 {
        self.weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_input_gives_that_mean() {
        let mut e = Ewma::new(10, 100);
        for b in 0..50 {
            e.push(b, 0.3);
        }
        assert!((e.mean().unwrap() - 0.3).abs() < 1e-12);
        assert!(e.stddev().unwrap() < 1e-6);
    }

    #[test]
    fn weight_halves_after_one_half_life() {
        let mut e = Ewma::new(10, 100);
        e.push(0, 1.0);
        e.push(10, 0.0); // ten buckets of 10 ms = one half-life later
                         // weights: old 0.5, new 1.0 -> mean 1/3
        assert!((e.mean().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((e.weight() - 1.5).abs() < 1e-12);
    }

    #[test]
    fn late_value_gets_its_in_order_weight() {
        let mut in_order = Ewma::new(10, 100);
        in_order.push(0, 1.0);
        in_order.push(10, 0.0);
        let mut late = Ewma::new(10, 100);
        late.push(10, 0.0);
        late.push(0, 1.0);
        assert!((in_order.mean().unwrap() - late.mean().unwrap()).abs() < 1e-12);
    }
}
