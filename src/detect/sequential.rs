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
//! - **Confidence bounds from the same statistic**: shifting the null to a worse-direction
//!   effect `θ₀` (`d → d − θ₀`) gives a martingale under `θ = θ₀`, and `Λ⁺` increases with `d`,
//!   so the `θ₀` the test does not reject at level α are those above `d − c`, where `c`
//!   ([`critical_value`]) is the estimate at which `Λ⁺` reaches `1/α`. That one-sided
//!   confidence-sequence bound excludes 0 exactly when `Λ⁺ ≥ 1/α`: the decision and its reported
//!   bound cannot disagree. The bound on the other side is the mirror image (the same mixture
//!   over better-direction effects, same α), so `Δ̂ ± c` covers the difference with probability
//!   at least `1 − 2α` at all times at once.
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
    /// `Δ̂ − c`: one-sided confidence-sequence lower bound on the difference, level α.
    pub ci_low: f64,
    /// `Δ̂ + c`: one-sided confidence-sequence upper bound on the difference, level α.
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

/// `c`: the worse-direction estimate at which `ln Λ⁺` reaches `ln(1/alpha)`, for variance `v`
/// and mixture scale `tau` (`alpha < 1`). `ln Λ⁺` is convex and increasing in `d` (the log of a
/// mixture of exponentials in `d` over `θ ≥ 0`), so Newton's method converges from the start
/// below, which drops the `ln Φ ≤ 0` term: its first step lands above the root and the rest
/// descend onto it.
pub fn critical_value(v: f64, tau: f64, alpha: f64) -> f64 {
    let t2 = tau * tau;
    let vt = v + t2;
    let target = (1.0 / alpha).ln();
    let k = tau / (v * vt).sqrt();
    let mut c = (2.0 * v * vt / t2
        * (target - std::f64::consts::LN_2 + 0.5 * (vt / v).ln()).max(0.0))
    .sqrt();
    for _ in 0..60 {
        let z = c * k;
        let f = one_sided_log_lr(c, v, tau) - target;
        let density = (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let slope = c * t2 / (v * vt) + k * density / normal_cdf(z);
        let step = f / slope;
        c -= step;
        if step.abs() <= 4.0 * f64::EPSILON * c.abs() {
            break;
        }
    }
    c
}

/// `mean(canary) − mean(control)` and its plug-in variance `V` (infinite while a score arm has
/// fewer than two values).
fn estimate_and_variance(canary: &Moments, control: &Moments, binary: bool) -> (f64, f64) {
    let variance = observation_variance(canary, binary) / canary.n.max(1) as f64
        + observation_variance(control, binary) / control.n.max(1) as f64;
    (mean(canary) - mean(control), variance)
}

/// The difference, its variance and `ln Λ⁺` — what a decision needs, without the confidence
/// bounds (the hot path calls this after every event).
pub fn worse_log_lr(
    canary: &Moments,
    control: &Moments,
    binary: bool,
    worse_up: bool,
    tau: f64,
) -> (f64, f64, f64) {
    let (estimate, variance) = estimate_and_variance(canary, control, binary);
    if !variance.is_finite() || canary.n == 0 || control.n == 0 {
        return (estimate, variance, 0.0);
    }
    let d = if worse_up { estimate } else { -estimate };
    (estimate, variance, one_sided_log_lr(d, variance, tau))
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
    let (_, _, log_lr) = worse_log_lr(canary, control, binary, worse_up, tau);
    let r = critical_value(variance, tau, alpha);
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
    }

    /// The example: V = 4e-5, τ = 0.02 (refusal's default), αₘ = 0.0025 (α = 0.01 over
    /// four metrics). The critical value, found by bisection of the closed form to 1e-15, is
    /// 0.0239117766955722; an estimate of 0.02392 (0.0239 to four places) is significant and
    /// its bound excludes 0, one of 0.02390 is neither. The two-sided sequence this replaced
    /// put the bound of the significant one at −0.0012.
    #[test]
    fn the_bound_excludes_zero_exactly_when_the_test_rejects() {
        let (v, tau, alpha) = (4e-5, 0.02, 0.0025);
        let c = critical_value(v, tau, alpha);
        assert!((c - 0.023_911_776_695_572_2).abs() < 1e-12, "{c}");
        let threshold = (1.0 / alpha).ln();
        assert!(one_sided_log_lr(0.02392, v, tau) >= threshold);
        assert!(0.02392 - c > 0.0);
        assert!(one_sided_log_lr(0.02390, v, tau) < threshold);
        assert!(0.02390 - c < 0.0);
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
        /// The bound and the decision agree wherever the estimate is not within rounding of the
        /// critical value: `d − c ≥ 0 ⇔ ln Λ⁺(d) ≥ ln(1/α)`, and `c` is the root.
        #[test]
        fn critical_value_is_the_root_of_the_test(
            d in -0.2f64..0.5,
            v_exp in -9.0f64..-1.0,
            tau in 0.001f64..0.5,
            alpha in 1e-6f64..0.5,
        ) {
            let v = 10f64.powf(v_exp);
            let c = critical_value(v, tau, alpha);
            let target = (1.0 / alpha).ln();
            prop_assert!(c > 0.0 && c.is_finite(), "c = {c}");
            prop_assert!((one_sided_log_lr(c, v, tau) - target).abs() < 1e-9 * target.max(1.0));
            if (d - c).abs() > 1e-9 * c {
                prop_assert_eq!(d - c >= 0.0, one_sided_log_lr(d, v, tau) >= target);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
        /// Time-uniform coverage: over whole paths of 3,000 events per arm, checked after every
        /// event, the bounds at α = 0.05 a side (a two-sided 90% sequence) miss the true
        /// difference in at most about 10% of paths, and the harmful-side bound alone at
        /// α = 0.1 in at most about 10% (we allow 16% for 200 paths of simulation noise).
        #[test]
        fn confidence_sequence_covers_the_true_difference(seed in 0u64..1000, p0 in 0.03f64..0.2, diff in 0.0f64..0.05) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let paths = 200;
            let (mut missed, mut missed_harmful) = (0, 0);
            for _ in 0..paths {
                let (mut c, mut k) = (Moments::default(), Moments::default());
                let (mut out, mut out_harmful) = (false, false);
                for _ in 0..3000 {
                    c.push(f64::from(u8::from(rng.random_bool(p0 + diff))));
                    k.push(f64::from(u8::from(rng.random_bool(p0))));
                    if c.n >= 50 {
                        let e = evaluate(&c, &k, true, true, 0.02, 0.05);
                        out |= diff < e.ci_low || diff > e.ci_high;
                        out_harmful |= diff < evaluate(&c, &k, true, true, 0.02, 0.1).ci_low;
                        if out && out_harmful {
                            break;
                        }
                    }
                }
                missed += usize::from(out);
                missed_harmful += usize::from(out_harmful);
            }
            prop_assert!(missed as f64 / paths as f64 <= 0.16, "missed {missed}/{paths}");
            prop_assert!(
                missed_harmful as f64 / paths as f64 <= 0.16,
                "harmful side missed {missed_harmful}/{paths}"
            );
        }
    }
}
