//! Anytime-valid canary-vs-control test of a difference of means (rates are means of 0/1).
//!
//! The statistic is a normal-mixture likelihood ratio (mixture SPRT; Johari, Pekelis & Walsh,
//! "Always Valid Inference", 2017; Robbins' normal mixture as in Howard et al., "Time-uniform,
//! nonparametric, nonasymptotic confidence sequences", 2021) on the difference
//! `Δ = mean(canary) − mean(control)` with plug-in variance `V = s²₁/n₁ + s²₀/n₀`:
//!
//! - **One-sided test** in the metric's worse direction: the mixing distribution over the
//!   worse-direction effect `θ ≥ 0` is half-normal with scale `τ`, which gives the closed form
//!   `Λ⁺ = 2·√(V/(V+τ²))·exp(d²τ²/(2V(V+τ²)))·Φ(dτ/√(V(V+τ²)))`, `d` the worse-direction
//!   estimate. `Λ⁺` is a non-negative martingale under `θ = 0` (and a supermartingale for
//!   `θ < 0`), so by Ville's inequality `P(sup_t Λ⁺_t ≥ 1/α) ≤ α`: looking after every event
//!   does not inflate the false-alarm rate. The always-valid p-value is `min_t 1/Λ⁺_t`.
//! - **Confidence sequence** (two-sided, level α): `Δ̂ ± √(2V(V+τ²)/τ² · (ln(1/α) + ½ln((V+τ²)/V)))`.
//!
//! The Gaussian form is asymptotic (CLT on each arm's mean); the A/A benchmark (`driftd
//! simulate`) measures the real false-alarm rate. Pure functions over each arm's
//! [`Moments`] (count, sum, sum of squares — the same accumulator as a window bucket); no I/O,
//! no clock.

use statrs::function::erf::erfc;

use crate::state::window::Moments;

/// Mean of an arm's values, 0 for an empty arm (whose evidence is 0 anyway).
pub fn mean(arm: &Moments) -> f64 {
    arm.mean().unwrap_or(0.0)
}

/// Variance of one observation of an arm. For 0/1 data the rate is smoothed (`(k+½)/(n+1)`) so
/// a run of all-zero events does not claim zero variance.
pub fn observation_variance(arm: &Moments, binary: bool) -> f64 {
    let n = arm.n as f64;
    if binary {
        let p = (arm.sum + 0.5) / (n + 1.0);
        p * (1.0 - p)
    } else if arm.n < 2 {
        f64::INFINITY
    } else {
        ((arm.sumsq - arm.sum * arm.sum / n) / (n - 1.0)).max(1e-9)
    }
}

/// The test's evidence at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// `mean(canary) − mean(control)`.
    pub estimate: f64,
    /// Variance of the estimate.
    pub variance: f64,
    /// `ln Λ⁺`, the one-sided mixture log-likelihood ratio in the worse direction.
    pub log_lr: f64,
    /// Lower bound of the confidence sequence on the difference.
    pub ci_low: f64,
    /// Upper bound of the confidence sequence on the difference.
    pub ci_high: f64,
}

/// Standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// `ln Λ⁺` for a worse-direction estimate `d` with variance `v` and mixture scale `tau`.
pub fn one_sided_log_lr(d: f64, v: f64, tau: f64) -> f64 {
    let t2 = tau * tau;
    let vt = v + t2;
    let phi = normal_cdf(d * tau / (v * vt).sqrt());
    std::f64::consts::LN_2 + 0.5 * (v / vt).ln() + d * d * t2 / (2.0 * v * vt) + phi.ln()
}

/// Half-width of the two-sided normal-mixture confidence sequence at level `alpha`.
pub fn cs_radius(v: f64, tau: f64, alpha: f64) -> f64 {
    let t2 = tau * tau;
    (2.0 * v * (v + t2) / t2 * ((1.0 / alpha).ln() + 0.5 * ((v + t2) / v).ln())).sqrt()
}

/// `mean(canary) − mean(control)` and its plug-in variance `V` (infinite while a score arm has
/// fewer than two values).
fn estimate_and_variance(canary: &Moments, control: &Moments, binary: bool) -> (f64, f64) {
    let variance = observation_variance(canary, binary) / canary.n.max(1) as f64
        + observation_variance(control, binary) / control.n.max(1) as f64;
    (mean(canary) - mean(control), variance)
}

/// The difference and `ln Λ⁺` only — what a decision needs, without the confidence sequence
/// (the hot path calls this after every event).
pub fn worse_log_lr(
    canary: &Moments,
    control: &Moments,
    binary: bool,
    worse_up: bool,
    tau: f64,
) -> (f64, f64) {
    let (estimate, variance) = estimate_and_variance(canary, control, binary);
    if !variance.is_finite() || canary.n == 0 || control.n == 0 {
        return (estimate, 0.0);
    }
    let d = if worse_up { estimate } else { -estimate };
    (estimate, one_sided_log_lr(d, variance, tau))
}

/// Evaluates the test. `worse_up` orients the one-sided test; `binary` selects the variance.
pub fn evaluate(
    canary: &Moments,
    control: &Moments,
    binary: bool,
    worse_up: bool,
    tau: f64,
    alpha: f64,
) -> Evidence {
    let (estimate, variance) = estimate_and_variance(canary, control, binary);
    if !variance.is_finite() || canary.n == 0 || control.n == 0 {
        return Evidence {
            estimate,
            variance,
            log_lr: 0.0,
            ci_low: f64::NEG_INFINITY,
            ci_high: f64::INFINITY,
        };
    }
    let (_, log_lr) = worse_log_lr(canary, control, binary, worse_up, tau);
    let r = cs_radius(variance, tau, alpha);
    Evidence {
        estimate,
        variance,
        log_lr,
        ci_low: estimate - r,
        ci_high: estimate + r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// The mixture integral computed independently, by the trapezoid rule over θ ≥ 0:
    /// ∫ exp((θd − θ²/2)/v) · 2φ(θ/τ)/τ dθ.
    fn mixture_by_quadrature(d: f64, v: f64, tau: f64) -> f64 {
        let upper = 20.0 * tau + 10.0 * d.abs();
        let steps = 200_000;
        let h = upper / steps as f64;
        let f = |t: f64| {
            let prior = 2.0 * (-t * t / (2.0 * tau * tau)).exp()
                / (tau * (2.0 * std::f64::consts::PI).sqrt());
            ((t * d - t * t / 2.0) / v).exp() * prior
        };
        (0..=steps)
            .map(|i| {
                let w = if i == 0 || i == steps { 0.5 } else { 1.0 };
                w * f(i as f64 * h)
            })
            .sum::<f64>()
            * h
    }

    #[test]
    fn closed_form_matches_quadrature() {
        for (d, v, tau) in [
            (0.0, 1e-4, 0.02),
            (0.02, 3e-5, 0.02),
            (-0.01, 3e-5, 0.02),
            (0.05, 1e-4, 0.1),
            (0.2, 0.01, 0.05),
        ] {
            let closed = one_sided_log_lr(d, v, tau);
            let numeric = mixture_by_quadrature(d, v, tau).ln();
            assert!(
                (closed - numeric).abs() < 1e-6,
                "d={d} v={v} tau={tau}: {closed} vs {numeric}"
            );
        }
    }

    #[test]
    fn known_values() {
        // d = 0: Φ(0) = ½ cancels the 2, leaving √(V/(V+τ²)).
        assert!((one_sided_log_lr(0.0, 1.0, 1.0) - 0.5f64.sqrt().ln()).abs() < 1e-12);
        // Φ(1.959963985) = 0.975 (standard table).
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-9);
        // Radius at V = τ² = 1, α = 0.05: √(2·2·(ln 20 + ½ ln 2)).
        let expect = (4.0 * (20f64.ln() + 0.5 * 2f64.ln())).sqrt();
        assert!((cs_radius(1.0, 1.0, 0.05) - expect).abs() < 1e-12);
    }

    #[test]
    fn evidence_orients_with_worse_direction() {
        let mut canary = Moments::default();
        let mut control = Moments::default();
        for i in 0..2000 {
            canary.push(f64::from(u8::from(i % 10 == 0)));
            control.push(f64::from(u8::from(i % 20 == 0)));
        }
        let up = evaluate(&canary, &control, true, true, 0.02, 0.01);
        let down = evaluate(&canary, &control, true, false, 0.02, 0.01);
        assert!((up.estimate - 0.05).abs() < 1e-12);
        assert!(
            up.log_lr > 10.0,
            "a 5-point rise over 2000 events is overwhelming: {}",
            up.log_lr
        );
        assert!(down.log_lr < 0.0, "no evidence of a fall");
        assert!(up.ci_low > 0.0 && up.ci_high > up.ci_low);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
        /// Time-uniform coverage: over whole paths of 3,000 events per arm, checked after every
        /// event, the α = 0.1 sequence misses the true difference in at most about 10% of paths
        /// (we allow 16% for 200 paths of simulation noise).
        #[test]
        fn confidence_sequence_covers_the_true_difference(seed in 0u64..1000, p0 in 0.03f64..0.2, diff in 0.0f64..0.05) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let paths = 200;
            let mut missed = 0;
            for _ in 0..paths {
                let (mut c, mut k) = (Moments::default(), Moments::default());
                for _ in 0..3000 {
                    c.push(f64::from(u8::from(rng.random_bool(p0 + diff))));
                    k.push(f64::from(u8::from(rng.random_bool(p0))));
                    if c.n >= 50 {
                        let e = evaluate(&c, &k, true, true, 0.02, 0.1);
                        if diff < e.ci_low || diff > e.ci_high {
                            missed += 1;
                            break;
                        }
                    }
                }
            }
            prop_assert!(missed as f64 / paths as f64 <= 0.16, "missed {missed}/{paths}");
        }
    }
}
