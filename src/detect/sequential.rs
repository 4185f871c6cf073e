//! Anytime-valid canary-vs-control test of a difference of means (rates are means of 0/1).
//!
//! The statistic is a mixture likelihood ratio (mixture SPRT; Johari, Pekelis & Walsh, "Always
//! Valid Inference", 2017; Howard et al., "Time-uniform, nonparametric, nonasymptotic confidence
//! sequences", 2021) on the difference `Δ = mean(canary) − mean(control)` with plug-in variance
//! `V = s²₁/n₁ + s²₀/n₀`, in the Gaussian approximation `d ~ N(θ, V)`:
//!
//! - **One-sided test** in the metric's worse direction, `d` the worse-direction estimate. The
//!   mixing distribution is discrete: equal weights on the worse-direction effects
//!   [`GRID`] × `s/2` (`s` the metric's `mixture_scale`, default 2 × `min_effect`, so the
//!   effects are 1, 2, 3 and 5 × `min_effect`), which gives
//!   `Λ = Σ_k w_k exp(θ_k d / V − θ_k² / (2V))`. Each term is the likelihood ratio of `θ_k`
//!   against 0, a non-negative martingale with mean 1 under `θ = 0` (and a supermartingale for
//!   `θ < 0`), so their average is one too and by Ville's inequality `P(sup_t Λ_t ≥ 1/α) ≤ α`:
//!   looking after every event does not inflate the false-alarm rate. The always-valid p-value
//!   is `min_t 1/Λ_t`. The prior puts its mass where effects matter: a half-normal spends most
//!   of its mass on effects below `min_effect`, which cannot fail a canary anyway, and on a
//!   scale that does not grow with the effect, so it pays for both (see `GRID` for the choice).
//! - **Confidence bounds from the same statistic**: shifting the null to a worse-direction
//!   effect `θ₀` (`d → d − θ₀`) gives a martingale under `θ = θ₀`, and `Λ` increases with `d`,
//!   so the `θ₀` the test does not reject at level α are those above `d − c`, where `c`
//!   ([`critical_value`]) is the estimate at which `Λ` reaches `1/α`. That one-sided
//!   confidence-sequence bound excludes 0 exactly when `Λ ≥ 1/α`: the decision and its reported
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

/// The prior's effects in units of half the mixture scale (of `min_effect` by default), each
/// with weight 1/4. Why these: a canary fails only on an effect of at least `min_effect`, so no
/// mass goes below it; 1 and 2 cover the effects that are slow to detect, where speed matters
/// most (delay grows as 1/θ²); 3 and 5 catch large regressions in a few hundred events, where
/// the `min_events` floor is close anyway. Equal weights: each atom's threshold rises by
/// `ln 4` over the test that knows the effect, and an effect between atoms is served by both
/// neighbours; putting more weight on 1–2 would buy little on them (`ln` of the weight) and
/// cost the same on 3–5.
pub const GRID: [f64; 4] = [1.0, 2.0, 3.0, 5.0];

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
    /// `ln Λ`, the one-sided mixture log-likelihood ratio in the worse direction.
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

/// The prior's effects for a mixture scale `scale`: [`GRID`] × `scale / 2`.
pub fn effects(scale: f64) -> [f64; 4] {
    GRID.map(|g| g * scale / 2.0)
}

/// The prior of a segment's test ([`crate::detect`]'s segment tests): [`GRID`] and one more
/// atom at 10 × `min_effect`, each with weight 1/5. Why the extra atom: a segment with a
/// tenth of the traffic shows a 10 × `min_effect` change as a `min_effect` change in the
/// deployment's totals, the effect where the deployment-level test is slowest and a segment's
/// test matters most; without it the largest atom (5×) would fit such an effect at 75% of its
/// information. It costs the other atoms `ln(5/4)` of evidence.
pub const SEGMENT_GRID: [f64; 5] = [1.0, 2.0, 3.0, 5.0, 10.0];

/// `ln w_k + ln Λ_k(d)` of each atom of `grid` (in units of `scale / 2`), `Λ_k` the likelihood
/// ratio of effect `θ_k` against 0.
fn atom_log_lrs<const N: usize>(grid: [f64; N], d: f64, v: f64, scale: f64) -> [f64; N] {
    let ln_w = -(N as f64).ln();
    grid.map(|g| g * scale / 2.0)
        .map(|t| ln_w + t * d / v - t * t / (2.0 * v))
}

/// `ln Σ exp(x_k)` without overflow, and the softmax weights of the terms.
fn log_sum_exp<const N: usize>(x: [f64; N]) -> (f64, [f64; N]) {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = x.map(|x| (x - max).exp());
    let sum: f64 = e.iter().sum();
    (max + sum.ln(), e.map(|e| e / sum))
}

/// `ln Λ` for a worse-direction estimate `d` with variance `v` and mixture scale `scale`.
pub fn mixture_log_lr(d: f64, v: f64, scale: f64) -> f64 {
    mixture_log_lr_on(GRID, d, v, scale)
}

/// `ln Λ` of the equal-weight mixture over `grid` × `scale / 2`.
pub fn mixture_log_lr_on<const N: usize>(grid: [f64; N], d: f64, v: f64, scale: f64) -> f64 {
    log_sum_exp(atom_log_lrs(grid, d, v, scale)).0
}

/// `c`: the worse-direction estimate at which `ln Λ` reaches `ln(1/alpha)`, for variance `v`
/// and mixture scale `scale` (`alpha < 1`). `ln Λ` is convex and increasing in `d` (the log of
/// a positive mixture of exponentials in `d`), so Newton's method started above the root
/// descends onto it without overshooting. The start: each atom alone is below the mixture, so
/// the estimate at which one atom's term reaches the target is above the root.
pub fn critical_value(v: f64, scale: f64, alpha: f64) -> f64 {
    critical_value_on(GRID, v, scale, (1.0 / alpha).ln())
}

/// [`critical_value`] for the mixture over `grid` and any target `ln Λ` (`target`).
pub fn critical_value_on<const N: usize>(grid: [f64; N], v: f64, scale: f64, target: f64) -> f64 {
    let ln_w = -(N as f64).ln();
    let effects = grid.map(|g| g * scale / 2.0);
    let mut c = effects
        .iter()
        .map(|t| (v * (target - ln_w) + t * t / 2.0) / t)
        .fold(f64::INFINITY, f64::min);
    for _ in 0..100 {
        let (log_lr, post) = log_sum_exp(atom_log_lrs(grid, c, v, scale));
        let slope: f64 = post.iter().zip(effects).map(|(p, t)| p * t / v).sum();
        let step = (log_lr - target) / slope;
        c -= step;
        if step.abs() <= 4.0 * f64::EPSILON * c.abs() {
            break;
        }
    }
    c
}

/// `mean(canary) − mean(control)` and its plug-in variance `V` (infinite while a score arm has
/// fewer than two values).
pub fn estimate_and_variance(canary: &Moments, control: &Moments, binary: bool) -> (f64, f64) {
    let variance = observation_variance(canary, binary) / canary.n.max(1) as f64
        + observation_variance(control, binary) / control.n.max(1) as f64;
    (mean(canary) - mean(control), variance)
}

/// The difference, its variance and `ln Λ` — what a decision needs, without the confidence
/// bounds (the hot path calls this after every event).
pub fn worse_log_lr(
    canary: &Moments,
    control: &Moments,
    binary: bool,
    worse_up: bool,
    scale: f64,
) -> (f64, f64, f64) {
    worse_log_lr_on(GRID, canary, control, binary, worse_up, scale)
}

/// [`worse_log_lr`] for the mixture over `grid`.
pub fn worse_log_lr_on<const N: usize>(
    grid: [f64; N],
    canary: &Moments,
    control: &Moments,
    binary: bool,
    worse_up: bool,
    scale: f64,
) -> (f64, f64, f64) {
    let (estimate, variance) = estimate_and_variance(canary, control, binary);
    if !variance.is_finite() || canary.n == 0 || control.n == 0 {
        return (estimate, variance, 0.0);
    }
    let d = if worse_up { estimate } else { -estimate };
    (
        estimate,
        variance,
        mixture_log_lr_on(grid, d, variance, scale),
    )
}

/// Evaluates the test. `worse_up` orients the one-sided test; `binary` selects the variance.
pub fn evaluate(
    canary: &Moments,
    control: &Moments,
    binary: bool,
    worse_up: bool,
    scale: f64,
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
    let (_, _, log_lr) = worse_log_lr(canary, control, binary, worse_up, scale);
    let r = critical_value(variance, scale, alpha);
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

    /// `ln Σ w_k Λ_k` over effects `grid` × `unit` with weights `weights` (adding up to 1).
    fn weighted_log_lr(grid: &[f64], weights: &[f64], d: f64, v: f64, unit: f64) -> f64 {
        let terms: Vec<f64> = grid
            .iter()
            .zip(weights)
            .map(|(g, w)| {
                let t = g * unit;
                w.ln() + t * d / v - t * t / (2.0 * v)
            })
            .collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + terms.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
    }

    /// Measurement (release, under a minute):
    /// `cargo test --release --lib mixture_prior_sweep -- --ignored --nocapture`.
    /// The canary-vs-control decision alone (refusal, `min_effect` 0.01, αₘ = 0.0023, the
    /// `min_events` floor of 300, the estimate beyond `min_effect`) under candidate priors, on
    /// the same 2,000 streams per drift from the start (seed `90,000 + r`), beside the SPRT
    /// that knows the effect (same floor). Prints each prior's median events per arm and its
    /// ratio to the oracle's. How [`GRID`] and its equal weights were checked.
    #[test]
    #[ignore = "measurement: cargo test --release --lib mixture_prior_sweep -- --ignored --nocapture"]
    fn mixture_prior_sweep() {
        let priors: [(&str, &[f64], &[f64]); 8] = [
            ("{1,2,3,5} equal", &GRID, &[0.25; 4]),
            ("{1,2,3,5} .2/.3/.2/.3", &GRID, &[0.2, 0.3, 0.2, 0.3]),
            ("{1,2,3,5} .3/.2/.2/.3", &GRID, &[0.3, 0.2, 0.2, 0.3]),
            (
                "{1,2,3,5} .25/.25/.15/.35",
                &GRID,
                &[0.25, 0.25, 0.15, 0.35],
            ),
            ("{1,2,3,5} .2/.25/.2/.35", &GRID, &[0.2, 0.25, 0.2, 0.35]),
            ("{1,2,5} equal", &[1.0, 2.0, 5.0], &[1.0 / 3.0; 3]),
            ("{1.5,2,3,5} equal", &[1.5, 2.0, 3.0, 5.0], &[0.25; 4]),
            ("{1,2,3.5,5} equal", &[1.0, 2.0, 3.5, 5.0], &[0.25; 4]),
        ];
        let (min_effect, alpha, floor) = (0.01, 0.01 * 0.92 / 4.0, 300u64);
        let threshold = (1.0f64 / alpha).ln();
        let runs = 2000u64;
        for to in [0.065, 0.07, 0.08, 0.10] {
            let effect = to - 0.05;
            let delays: Vec<Vec<u64>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..2u64)
                    .map(|w| {
                        s.spawn(move || {
                            (w..runs)
                                .step_by(2)
                                .map(|r| {
                                    let mut rng = SmallRng::seed_from_u64(90_000 + r);
                                    let mut first = vec![u64::MAX; priors.len() + 1];
                                    let (mut canary, mut control) =
                                        (Moments::default(), Moments::default());
                                    for n in 1..=50_000u64 {
                                        canary.push(f64::from(u8::from(rng.random_bool(to))));
                                        control.push(f64::from(u8::from(rng.random_bool(0.05))));
                                        if n < floor {
                                            continue;
                                        }
                                        let (d, v) = estimate_and_variance(&canary, &control, true);
                                        for (k, (_, grid, weights)) in priors.iter().enumerate() {
                                            if first[k] == u64::MAX
                                                && d >= min_effect
                                                && weighted_log_lr(grid, weights, d, v, min_effect)
                                                    >= threshold
                                            {
                                                first[k] = n;
                                            }
                                        }
                                        let oracle = effect * d / v - effect * effect / (2.0 * v);
                                        if first[priors.len()] == u64::MAX && oracle >= threshold {
                                            first[priors.len()] = n;
                                        }
                                        if first.iter().all(|&f| f != u64::MAX) {
                                            break;
                                        }
                                    }
                                    first
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap())
                    .collect()
            });
            let median = |k: usize| {
                let mut v: Vec<u64> = delays.iter().map(|f| f[k]).collect();
                v.sort_unstable();
                v[v.len() / 2]
            };
            let oracle = median(priors.len());
            println!("refusal 5% -> {:.1}%: oracle median {oracle}", to * 100.0);
            for (k, (name, _, _)) in priors.iter().enumerate() {
                let m = median(k);
                println!("  {name:<28} {m:>6}  x{:.3}", m as f64 / oracle as f64);
            }
        }
    }

    /// By hand, d = 0.02, V = 1e-4, scale 0.02 (effects 0.01, 0.02, 0.03, 0.05): the
    /// exponents `θd/V − θ²/(2V)` are 1.5, 2, 1.5 and −2.5, so
    /// `Λ = (2e^1.5 + e^2 + e^−2.5)/4 = 16.434519/4 = 4.108630`, `ln Λ = 1.413090`. At d = 0 the
    /// exponents are −0.5, −2, −4.5, −12.5: `Λ = 0.188245`, `ln Λ = −1.670013`.
    #[test]
    fn known_values() {
        assert!((mixture_log_lr(0.02, 1e-4, 0.02) - 1.413_089_593_255).abs() < 1e-9);
        let at_zero = ((-0.5f64).exp() + (-2f64).exp() + (-4.5f64).exp() + (-12.5f64).exp()) / 4.0;
        assert!((mixture_log_lr(0.0, 1e-4, 0.02) - at_zero.ln()).abs() < 1e-12);
        assert!((at_zero.ln() + 1.670_013).abs() < 1e-6);
        assert_eq!(effects(0.02), [0.01, 0.02, 0.03, 0.05]);
        // A huge estimate does not overflow: the largest atom dominates, `ln(1/4) + θd/V − θ²/2V`.
        let big = mixture_log_lr(10.0, 1e-6, 0.02);
        assert!((big - (0.05 * 10.0 / 1e-6 - 0.0025 / 2e-6 - 4f64.ln())).abs() < 1e-6);
        // Φ(1.959963985) = 0.975 (standard table).
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-9);
    }

    /// The example: V = 4e-5, scale 0.02 (refusal's default), αₘ = 0.0025 (α = 0.01
    /// over four metrics). The critical value, by 200 bisections of `ln Λ` in 40-digit
    /// arithmetic, is 0.0235623924096495; an estimate of 0.02357 is significant and its bound
    /// excludes 0, one of 0.02355 is neither. The two-sided half-normal sequence of the first
    /// version put the bound of an estimate of 0.0239 at −0.0012.
    #[test]
    fn the_bound_excludes_zero_exactly_when_the_test_rejects() {
        let (v, scale, alpha) = (4e-5, 0.02, 0.0025);
        let c = critical_value(v, scale, alpha);
        assert!((c - 0.023_562_392_409_649_5).abs() < 1e-12, "{c}");
        let threshold = (1.0 / alpha).ln();
        assert!(mixture_log_lr(0.02357, v, scale) >= threshold);
        assert!(0.02357 - c > 0.0);
        assert!(mixture_log_lr(0.02355, v, scale) < threshold);
        assert!(0.02355 - c < 0.0);
    }

    /// Under `θ = 0` the statistic is a martingale with mean 1: on streams of per-event
    /// differences `N(0, σ²)` (`V = σ²/n`, the exact Gaussian case), the average of `Λ_n` over
    /// 40,000 paths is 1 at every look within simulation noise (its standard error at n = 200
    /// is about 0.02), and the share of paths whose `Λ` ever reaches `1/α` stays under α
    /// (Ville). Fixed seed: the test is deterministic.
    #[test]
    fn the_mixture_is_a_martingale_under_the_null() {
        let mut rng = SmallRng::seed_from_u64(14);
        let normal = rand_distr::Normal::new(0.0, 1.0).expect("unit normal");
        let (sigma2, scale, alpha) = (0.1f64, 0.02, 0.05f64);
        let looks = [25usize, 100, 200];
        let paths = 40_000;
        let mut sums = [0.0; 3];
        let mut crossed = 0;
        for _ in 0..paths {
            let mut s = 0.0;
            let mut hit = false;
            for n in 1..=200 {
                s += sigma2.sqrt() * rng.sample::<f64, _>(normal);
                let (d, v) = (s / n as f64, sigma2 / n as f64);
                let log_lr = mixture_log_lr(d, v, scale);
                hit |= log_lr >= (1.0 / alpha).ln();
                if let Some(k) = looks.iter().position(|&l| l == n) {
                    sums[k] += log_lr.exp();
                }
            }
            crossed += usize::from(hit);
        }
        for (n, sum) in looks.iter().zip(sums) {
            let m = sum / paths as f64;
            println!("E[Λ_{n}] ≈ {m:.4}");
            assert!((m - 1.0).abs() < 0.1, "E[Λ_{n}] = {m}");
        }
        let share = crossed as f64 / paths as f64;
        println!("P(sup Λ ≥ 1/α) ≈ {share:.4} (α = {alpha})");
        assert!(share <= alpha, "{share}");
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
        /// critical value: `d − c ≥ 0 ⇔ ln Λ(d) ≥ ln(1/α)`, and `c` is the root.
        #[test]
        fn critical_value_is_the_root_of_the_test(
            d in -0.2f64..0.5,
            v_exp in -9.0f64..-1.0,
            scale in 0.001f64..0.5,
            alpha in 1e-6f64..0.5,
        ) {
            let v = 10f64.powf(v_exp);
            let c = critical_value(v, scale, alpha);
            let target = (1.0 / alpha).ln();
            prop_assert!(c > 0.0 && c.is_finite(), "c = {c}");
            // The root to the last few bits: the slope (up to `θ/V`, 10⁹ here) makes `ln Λ(c)`
            // itself only as exact as `c` times that slope.
            prop_assert!(mixture_log_lr(c * (1.0 - 1e-13), v, scale) < target);
            prop_assert!(mixture_log_lr(c * (1.0 + 1e-13), v, scale) >= target);
            if (d - c).abs() > 1e-9 * c {
                prop_assert_eq!(d - c >= 0.0, mixture_log_lr(d, v, scale) >= target);
            }
        }

        /// The bound `d − c` moves the right way: up with the estimate (the statistic increases
        /// with `d`), down with more variance and with a stricter α (the critical value grows
        /// with both).
        #[test]
        fn the_bound_is_monotone(
            d in -0.2f64..0.5,
            step in 1e-4f64..0.05,
            v_exp in -8.0f64..-2.0,
            widen in 1.01f64..4.0,
            scale in 0.002f64..0.2,
            alpha in 1e-5f64..0.2,
        ) {
            let v = 10f64.powf(v_exp);
            let c = critical_value(v, scale, alpha);
            prop_assert!(mixture_log_lr(d + step, v, scale) > mixture_log_lr(d, v, scale));
            prop_assert!(critical_value(v * widen, scale, alpha) > c);
            prop_assert!(critical_value(v, scale, alpha / widen) > c);
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
