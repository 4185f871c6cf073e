//! Self-baseline change detection: a cohort against its own past.
//!
//! After a warm-up that learns the reference (rate `p₀`, or mean `μ₀` and sd `σ₀` of a score) and
//! the cohort's event rate, a one-sided log-likelihood-ratio CUSUM (Page, 1954) watches for a
//! shift of the configured size in the worse direction:
//! - rates: Bernoulli CUSUM, increment `x·ln(p₁/p₀) + (1−x)·ln((1−p₁)/(1−p₀))`;
//! - scores: Gaussian CUSUM, increment `(δ/σ₀²)(x − μ₀ − δ/2)` (sign flipped when worse is down).
//!
//! `S = max(0, S + increment)` alarms at `S ≥ h`. The threshold is the exact one (`arl`, not
//! Lorden's `ln ARL₀`, which is loose by orders of magnitude) for the chart's budget
//! ([`Budget`]: a canary cohort's share of the deployment's chart budget in events, or a control
//! cohort's share of one false "control degraded" warning per period), **for a reference off by
//! `Z` = 1.645 standard errors of its warm-up estimate in the costly direction**
//! ([`noisy_reference_threshold`]): the chart compares values with `p̂`, not with the true rate,
//! and a `p̂` below the truth moves the in-control drift towards 0, where the run length falls
//! from exponential to polynomial in `h` (with an exact `h` and no correction the review measured
//! 3.8 false alarms a week instead of 0.006). So with probability 95% over the warm-up's sampling
//! error the chart's conditional in-control ARL is at least its budget (guaranteed conditional
//! performance, Gandy & Kvaløy 2013, with the normal approximation). The warm-up is set in events
//! only, so a cohort that appears in a lifetime's middle cannot learn over drifted time. This is
//! the baseline that alarms; the long-run EWMA of cohort state is only reported. Pure: event
//! times come from the caller.

use super::arl::{self, Increments};
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

/// Standard errors a learned reference is assumed off by, in the costly direction.
pub const Z: f64 = 1.645;

/// `log2(x)` in steps of `1/steps` octave, rounded by `round`.
fn quantise(x: f64, steps: f64, round: fn(f64) -> f64) -> i64 {
    round(x.max(1e-300).log2() * steps) as i64
}

fn dequantise(q: i64, steps: f64) -> f64 {
    (q as f64 / steps).exp2()
}

/// `n` rounded down to an eighth of an octave, as [`noisy_reference_threshold`] sees it: the
/// standard error it assumes is at most 9% larger than the one at `n`.
pub fn quantised_count(n: u64) -> f64 {
    dequantise(quantise(n.max(2) as f64, N_STEPS, f64::floor), N_STEPS)
}

/// Steps per octave of a reference's event count in [`noisy_reference_threshold`].
const N_STEPS: f64 = 8.0;

/// The threshold of an LLR chart tuned from `reference` to `reference + shift` in the worse
/// direction (`shift > 0`; rates: a rate, scores: the shift in units of the reference's sd),
/// exact for an in-control ARL of at least `arl0` when the truth is `z(n)` standard errors of a
/// reference learned from `n` values worse than the reference (`z` sees `n` quantised, as
/// [`quantised_count`]; the self-baseline passes the constant [`Z`]). `None` when that truth is
/// at least half-way to the shift: the chart's in-control drift is not negative and no
/// threshold keeps the budget (the caller waits for more reference events).
///
/// Memoised ([`arl::memo`]) on quantised inputs, each rounded the conservative way where it has
/// one: `n` down to an eighth of an octave (a larger standard error), `arl0` up to a quarter
/// octave; the reference and a score's shift to a 32nd of an octave (2%, far inside their own
/// error); the key holds `z` as computed.
pub fn noisy_reference_threshold(
    binary: bool,
    worse_up: bool,
    reference: f64,
    shift: f64,
    (n, z): (u64, &dyn Fn(f64) -> f64),
    arl0: f64,
) -> Option<f64> {
    let n_key = quantise(n.max(2) as f64, N_STEPS, f64::floor);
    let n = dequantise(n_key, N_STEPS);
    let z = z(n).max(0.0);
    let z_key = z.to_bits() as i64;
    let arl_key = quantise(arl0, 4.0, f64::ceil);
    let arl0 = dequantise(arl_key, 4.0);
    let h = if binary {
        let p_key = quantise(reference, 32.0, f64::round);
        let p = dequantise(p_key, 32.0).min(1.0 - 1e-6);
        let worse = if worse_up { 1.0 } else { -1.0 };
        let truth = (p + worse * z * (p * (1.0 - p) / n).sqrt()).clamp(0.0, 1.0);
        let p1 = (p + worse * shift).clamp(1e-6, 1.0 - 1e-6);
        let key = [
            0,
            p_key,
            (worse * shift).to_bits() as i64,
            n_key,
            arl_key,
            z_key,
        ];
        arl::memo(key, || {
            let inc = Increments::bernoulli(truth, p, p1);
            solve(inc, arl0)
        })
    } else {
        let d_key = quantise(shift, 32.0, f64::round);
        let d = dequantise(d_key, 32.0);
        let key = [1, d_key, 0, n_key, arl_key, z_key];
        arl::memo(key, || {
            let inc = Increments::gaussian(z / n.sqrt(), 1.0, 0.0, 1.0, d);
            solve(inc, arl0)
        })
    };
    h.is_finite().then_some(h)
}

/// The exact threshold, or infinity (memoised as such) when none keeps the budget.
fn solve(inc: Increments, arl0: f64) -> f64 {
    if arl::has_negative_drift(inc) {
        arl::threshold_for_arl(inc, arl0)
    } else {
        f64::INFINITY
    }
}

/// A chart's false-alarm budget.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Budget {
    /// In-control ARL in the cohort's own events: a canary cohort's share of its deployment's
    /// chart budget, set in canary events (a cohort sees at most every canary event, so its
    /// false-alarm rate per canary event is at most `1/ARL`).
    Events(f64),
    /// A control cohort: in-control ARL of the cohort's events in `period_ms` of event time (at
    /// its warm-up event rate), divided by `weight`, the chart's share of one false warning per
    /// period per deployment.
    Period {
        /// `false_alarm_period` in milliseconds.
        period_ms: f64,
        /// The chart's share.
        weight: f64,
    },
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
    /// Events the reference is learned from.
    pub warmup_events: u64,
    /// The false-alarm budget.
    pub budget: Budget,
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
        /// The values of the current run: since the statistic last left zero (none while it
        /// is zero). Their mean is Page's estimate of the shifted level, what a verdict
        /// reports; the mean since monitoring began would blend in every in-control week.
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
                // Until a threshold keeps the budget, the warm-up goes on (retried as the
                // events double): the reference's error must shrink below half the shift.
                let due = seen.n == t.warmup_events
                    || (seen.n > t.warmup_events && seen.n.is_power_of_two());
                if due {
                    // A warm-up within one millisecond: the rate is at most one per ms.
                    let elapsed = (t_ms - *first_ms).max(1) as f64;
                    let rate_per_ms = seen.n as f64 / elapsed;
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
                    let arl0 = match t.budget {
                        Budget::Events(arl0) => arl0,
                        Budget::Period { period_ms, weight } => {
                            rate_per_ms * period_ms / weight.max(1e-12)
                        }
                    };
                    let shift = match reference {
                        Reference::Bernoulli { p0, p1 } => (p1 - p0).abs(),
                        Reference::Gaussian { sigma, delta, .. } => delta.abs() / sigma,
                    };
                    let threshold = noisy_reference_threshold(
                        t.binary,
                        t.worse_up,
                        reference.value(),
                        shift,
                        (seen.n, &|_| Z),
                        arl0,
                    );
                    let Some(threshold) = threshold else {
                        return false;
                    };
                    self.phase = CusumPhase::Monitoring {
                        reference,
                        threshold,
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
                let next = *statistic + reference.increment(x);
                if next > 0.0 {
                    seen.push(x);
                    *statistic = next;
                } else {
                    *seen = Moments::default();
                    *statistic = 0.0;
                }
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
            warmup_events: 4000,
            // One false alarm a week at 100 events/s: an ARL of 6.048·10⁷ events.
            budget: Budget::Period {
                period_ms: 7.0 * 86_400_000.0,
                weight: 1.0,
            },
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

    /// The threshold is the exact one for the reference off by `Z` standard errors: its ARL at
    /// that truth meets the budget; it is above the exact one for a known reference, which is
    /// below Lorden's `ln ARL₀` (loose); and a reference too noisy for the shift gets none.
    #[test]
    fn threshold_is_exact_with_a_margin_for_the_warmup_noise() {
        let arl0 = 6.048e7;
        let h = noisy_reference_threshold(true, true, 0.05, 0.03, (4096, &|_| Z), arl0)
            .expect("a threshold");
        let known = arl::threshold_for_arl(Increments::bernoulli(0.05, 0.05, 0.08), arl0);
        let truth = 0.05 + Z * (0.05f64 * 0.95 / 4096.0).sqrt();
        let at_truth = arl::arl(Increments::bernoulli(truth, 0.05, 0.08), h);
        println!("known reference h {known:.3}, Lorden {:.3}, noisy h {h:.3}, ARL at the truth {at_truth:.3e}", arl0.ln());
        assert!(known < arl0.ln() && h > known, "{known} {h}");
        // The reference is quantised to 2%: within that, the ARL at the truth meets the budget.
        assert!(at_truth >= 0.9 * arl0, "{at_truth}");
        assert_eq!(
            noisy_reference_threshold(true, true, 0.05, 0.03, (100, &|_| Z), arl0),
            None
        );
    }

    /// Counts go down to the eighth-octave grid: powers of two stay, 4,400 (below
    /// 2^(12 + 1/8) = 4,466.7) goes to 4,096.
    #[test]
    fn counts_are_quantised_down_to_an_eighth_of_an_octave() {
        assert_eq!(quantised_count(4096), 4096.0);
        assert_eq!(quantised_count(4400), 4096.0);
        assert!((quantised_count(4467) - 4466.720).abs() < 1e-3);
        assert_eq!(quantised_count(0), 2.0);
    }

    /// The margin `z` is what the threshold is exact for: none gives the known reference's
    /// threshold (up to the reference's 2% quantisation), and the threshold grows with `z`.
    #[test]
    fn the_threshold_grows_with_the_margin() {
        let arl0 = 6.048e7;
        let at = |z: f64| noisy_reference_threshold(true, true, 0.05, 0.03, (4096, &|_| z), arl0);
        let known = arl::threshold_for_arl(Increments::bernoulli(0.05, 0.05, 0.08), arl0);
        let none = at(0.0).expect("a threshold");
        assert!((none / known - 1.0).abs() < 0.02, "{none} {known}");
        let (one, full) = (at(1.0).expect("finite"), at(Z).expect("finite"));
        assert!(none < one && one < full, "{none} {one} {full}");
    }

    proptest::proptest! {
        /// A quantised count is at most the count and within an eighth of an octave of it.
        #[test]
        fn a_quantised_count_is_within_an_eighth_octave_below(n in 2u64..1_000_000_000) {
            let q = quantised_count(n);
            proptest::prop_assert!(q <= n as f64 * (1.0 + 1e-12));
            proptest::prop_assert!(q * 2f64.powf(0.125) > n as f64 * (1.0 - 1e-12));
        }
    }

    #[test]
    fn warmup_learns_reference_then_detects_a_doubling() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut d = SelfBaseline::new(tuning());
        let mut t = 0;
        for _ in 0..5000 {
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
                // 100 events/s over a week, exact for the reference off by Z standard errors.
                let expected = noisy_reference_threshold(
                    true,
                    true,
                    reference.value(),
                    0.03,
                    (4000, &|_| Z),
                    6.048e7,
                );
                assert_eq!(Some(*threshold), expected);
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

    fn watching(reference: Reference) -> SelfBaseline {
        SelfBaseline {
            tuning: tuning(),
            phase: CusumPhase::Monitoring {
                reference,
                threshold: f64::INFINITY,
                statistic: 0.0,
                seen: Moments::default(),
                alarmed: false,
            },
        }
    }

    fn run(d: &SelfBaseline) -> (f64, Option<f64>) {
        match d.phase() {
            CusumPhase::Monitoring {
                statistic, seen, ..
            } => (*statistic, seen.mean()),
            p => panic!("not monitoring: {p:?}"),
        }
    }

    #[test]
    fn the_estimate_is_the_mean_of_the_run_since_the_statistic_left_zero() {
        let mut d = watching(Reference::Bernoulli { p0: 0.05, p1: 0.10 });
        d.push(0.0, 1);
        assert_eq!(run(&d), (0.0, None), "a 0 keeps the statistic at zero");
        d.push(1.0, 2);
        assert_eq!(run(&d), (2f64.ln(), Some(1.0)));
        d.push(0.0, 3);
        let down = (0.90f64 / 0.95).ln();
        assert_eq!(run(&d), (2f64.ln() + down, Some(0.5)));
        // ln 2 / ln(0.95 / 0.90) = 12.8: the 13th 0 in all brings it back to zero.
        for t in 4..15 {
            d.push(0.0, t);
            assert!(run(&d).0 > 0.0, "still in the run at {t}");
        }
        assert_eq!(run(&d).1, Some(1.0 / 13.0));
        d.push(0.0, 15);
        assert_eq!(run(&d), (0.0, None), "the run ended");
    }

    /// A week in control, then a doubling: the verdict's estimate is the new level, not the
    /// mean since monitoring began, which the in-control week holds near the reference.
    #[test]
    fn after_a_long_in_control_stretch_the_estimate_follows_the_shift() {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut d = watching(Reference::Bernoulli { p0: 0.05, p1: 0.10 });
        let mut all = Moments::default();
        for t in 0..50_000 {
            let x = f64::from(u8::from(rng.random_bool(0.05)));
            all.push(x);
            d.push(x, t);
        }
        for t in 50_000..51_000 {
            let x = f64::from(u8::from(rng.random_bool(0.15)));
            all.push(x);
            d.push(x, t);
        }
        let (statistic, estimate) = run(&d);
        assert!(
            statistic > 20.0,
            "the shift drives the statistic: {statistic}"
        );
        let estimate = estimate.unwrap();
        assert!((0.12..0.18).contains(&estimate), "run estimate {estimate}");
        let blended = all.mean().unwrap();
        assert!(blended < 0.06, "since monitoring began: {blended}");
    }

    proptest::proptest! {
        /// The run restarts exactly when the statistic returns to zero, and the estimate is
        /// the mean of the values since (scores as well as rates).
        #[test]
        fn the_run_is_the_values_since_the_last_zero(
            xs in proptest::collection::vec(0.0f64..1.0, 1..400),
            binary in proptest::bool::ANY,
        ) {
            let reference = if binary {
                Reference::Bernoulli { p0: 0.2, p1: 0.4 }
            } else {
                Reference::Gaussian { mu0: 0.5, sigma: 0.25, delta: 0.1 }
            };
            let mut d = watching(reference);
            let (mut statistic, mut since) = (0.0f64, Vec::new());
            for (t, &x) in xs.iter().enumerate() {
                let x = if binary { x.round() } else { x };
                d.push(x, t as i64);
                statistic += reference.increment(x);
                if statistic <= 0.0 {
                    statistic = 0.0;
                    since.clear();
                } else {
                    since.push(x);
                }
                let (s, mean) = run(&d);
                proptest::prop_assert!((s - statistic).abs() < 1e-9);
                let want = (!since.is_empty()).then(|| since.iter().sum::<f64>() / since.len() as f64);
                match (mean, want) {
                    (Some(a), Some(b)) => proptest::prop_assert!((a - b).abs() < 1e-9),
                    (a, b) => proptest::prop_assert_eq!(a, b),
                }
            }
        }
    }
}
