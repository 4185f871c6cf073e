//! Self-baseline change detection: a cohort against its own past.
//!
//! After a warm-up that learns the reference (rate `p₀`, or mean `μ₀` and sd `σ₀` of a score) and
//! the cohort's event rate, a one-sided log-likelihood-ratio CUSUM (Page, 1954) watches for a
//! shift of the configured size in the worse direction:
//! - rates: Bernoulli CUSUM, increment `x·ln(p₁/p₀) + (1−x)·ln((1−p₁)/(1−p₀))`;
//! - scores: Gaussian CUSUM, increment `(δ/σ₀²)(x − μ₀ − δ/2)` (sign flipped when worse is down).
//!
//! `S = max(0, S + increment)` alarms at `S ≥ h`. The threshold is not hand-tuned: for an
//! LLR CUSUM the in-control average run length satisfies `ARL₀ ≥ eʰ` (Lorden, 1971), so
//! `h = ln(ARL₀)` with `ARL₀` = the cohort's observed event rate × the configured false-alarm
//! period (one false alarm per week per cohort by default) keeps false alarms at or below that
//! budget. This is the baseline that alarms; the long-run EWMA of cohort state is only
//! reported. Pure: event times come from the caller.

use super::sequential;
use crate::state::window::Moments;

/// What a cohort's values are compared against once warm-up is over.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Reference {
    /// Rate `p0`, alarm on a shift to `p1`.
    Bernoulli {
        /// Reference rate.
        p0: f64,
        /// Rate the CUSUM is tuned to detect.
        p1: f64,
    },
    /// Mean `mu0` and sd `sigma`, alarm on a shift of `delta` (signed, worse direction).
    Gaussian {
        /// Reference mean.
        mu0: f64,
        /// Reference standard deviation.
        sigma: f64,
        /// Shift the CUSUM is tuned to detect.
        delta: f64,
    },
}

impl Reference {
    /// The log-likelihood-ratio increment of one value.
    pub fn increment(&self, x: f64) -> f64 {
        match *self {
            Reference::Bernoulli { p0, p1 } => {
                if x >= 0.5 {
                    (p1 / p0).ln()
                } else {
                    ((1.0 - p1) / (1.0 - p0)).ln()
                }
            }
            Reference::Gaussian { mu0, sigma, delta } => {
                delta / (sigma * sigma) * (x - mu0 - delta / 2.0)
            }
        }
    }

    /// The reference value (rate or mean).
    pub fn value(&self) -> f64 {
        match *self {
            Reference::Bernoulli { p0, .. } => p0,
            Reference::Gaussian { mu0, .. } => mu0,
        }
    }
}

/// The CUSUM threshold for an in-control average run length of `arl0` events.
pub fn threshold_for_arl(arl0: f64) -> f64 {
    arl0.max(std::f64::consts::E).ln()
}

/// How the detector is tuned.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tuning {
    /// Rate metric (0/1 values) or score.
    pub binary: bool,
    /// True when an increase is harmful.
    pub worse_up: bool,
    /// Size of the shift to detect (absolute, in the metric's units).
    pub shift: f64,
    /// Warm-up needs at least this many events...
    pub warmup_events: u64,
    /// ...and at least this much event time.
    pub warmup_ms: i64,
    /// Expected time between false alarms, in event-time milliseconds.
    pub false_alarm_period_ms: f64,
}

/// Where a self-baseline CUSUM is: learning its reference, or watching for a shift.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CusumPhase {
    /// Learning the reference.
    Warmup {
        /// Values so far.
        seen: Moments,
        /// Event time of the first value.
        first_ms: i64,
    },
    /// Watching for a shift.
    Monitoring {
        /// The learned reference.
        reference: Reference,
        /// Alarm threshold.
        threshold: f64,
        /// Current CUSUM statistic.
        statistic: f64,
        /// Values since monitoring began.
        seen: Moments,
        /// True once the statistic crossed the threshold (latched).
        alarmed: bool,
    },
}

/// A self-baseline detector for one cohort and metric.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelfBaseline {
    tuning: Tuning,
    phase: CusumPhase,
}

impl SelfBaseline {
    /// A detector in warm-up.
    pub fn new(tuning: Tuning) -> SelfBaseline {
        SelfBaseline {
            tuning,
            phase: CusumPhase::Warmup {
                seen: Moments::default(),
                first_ms: i64::MAX,
            },
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &CusumPhase {
        &self.phase
    }

    /// Feeds one value at event time `t_ms`. Returns true when this value raised the alarm.
    pub fn push(&mut self, x: f64, t_ms: i64) -> bool {
        let t = self.tuning;
        match &mut self.phase {
            CusumPhase::Warmup { seen, first_ms } => {
                seen.push(x);
                *first_ms = (*first_ms).min(t_ms);
                let elapsed = t_ms - *first_ms;
                if seen.n >= t.warmup_events && elapsed >= t.warmup_ms && elapsed > 0 {
                    let rate_per_ms = seen.n as f64 / elapsed as f64;
                    let reference = if t.binary {
                        let p0 = ((seen.sum + 0.5) / (seen.n as f64 + 1.0)).clamp(1e-6, 1.0 - 1e-6);
                        let p1 = if t.worse_up {
                            p0 + t.shift
                        } else {
                            p0 - t.shift
                        };
                        Reference::Bernoulli {
                            p0,
                            p1: p1.clamp(1e-6, 1.0 - 1e-6),
                        }
                    } else {
                        let sigma = sequential::observation_variance(seen, false)
                            .sqrt()
                            .max(1e-3);
                        let delta = if t.worse_up { t.shift } else { -t.shift };
                        Reference::Gaussian {
                            mu0: sequential::mean(seen),
                            sigma,
                            delta,
                        }
                    };
                    self.phase = CusumPhase::Monitoring {
                        reference,
                        threshold: threshold_for_arl(rate_per_ms * t.false_alarm_period_ms),
                        statistic: 0.0,
                        seen: Moments::default(),
                        alarmed: false,
                    };
                }
                false
            }
            CusumPhase::Monitoring {
                reference,
                threshold,
                statistic,
                seen,
                alarmed,
            } => {
                seen.push(x);
                *statistic = (*statistic + reference.increment(x)).max(0.0);
                if !*alarmed && *statistic >= *threshold {
                    *alarmed = true;
                    return true;
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn tuning() -> Tuning {
        Tuning {
            binary: true,
            worse_up: true,
            shift: 0.03,
            warmup_events: 1000,
            warmup_ms: 10_000,
            false_alarm_period_ms: 7.0 * 86_400_000.0,
        }
    }

    #[test]
    fn increments_match_closed_form() {
        let r = Reference::Bernoulli { p0: 0.05, p1: 0.10 };
        assert!((r.increment(1.0) - 2f64.ln()).abs() < 1e-12);
        assert!((r.increment(0.0) - (0.90f64 / 0.95).ln()).abs() < 1e-12);
        let g = Reference::Gaussian {
            mu0: 0.3,
            sigma: 0.3,
            delta: -0.15,
        };
        // (δ/σ²)(x − μ₀ − δ/2) at x = 0.3: (−0.15/0.09)(0.075) = −0.125
        assert!((g.increment(0.3) + 0.125).abs() < 1e-12);
    }

    #[test]
    fn threshold_is_log_of_arl() {
        // 100 events/s for a week = 60,480,000 events → h = ln(6.048e7) ≈ 17.918
        assert!((threshold_for_arl(6.048e7) - 17.917_8).abs() < 1e-3);
    }

    #[test]
    fn warmup_learns_reference_then_detects_a_doubling() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut d = SelfBaseline::new(tuning());
        let mut t = 0;
        for _ in 0..2000 {
            t += 10;
            assert!(!d.push(f64::from(u8::from(rng.random_bool(0.05))), t));
        }
        match d.phase() {
            CusumPhase::Monitoring {
                reference,
                threshold,
                ..
            } => {
                assert!((reference.value() - 0.05).abs() < 0.015);
                // 100 events/s over a week
                assert!((threshold - 17.9).abs() < 0.1, "{threshold}");
            }
            p => panic!("still warming up: {p:?}"),
        }
        let mut alarm_after = None;
        for i in 0..20_000 {
            t += 10;
            if d.push(f64::from(u8::from(rng.random_bool(0.10))), t) {
                alarm_after = Some(i);
                break;
            }
        }
        let n = alarm_after.expect("a doubling is detected");
        assert!(n < 3000, "detected after {n} events");
    }

    #[test]
    fn no_alarm_in_control_over_many_events() {
        let mut rng = SmallRng::seed_from_u64(4);
        let mut d = SelfBaseline::new(tuning());
        for i in 0..300_000i64 {
            assert!(
                !d.push(f64::from(u8::from(rng.random_bool(0.05))), i * 10),
                "false alarm at {i}"
            );
        }
    }
}
