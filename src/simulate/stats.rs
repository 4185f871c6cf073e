//! The benchmark's statistics: what a lifetime's first alarm means given the drift's onset,
//! censored medians with a bootstrap standard error, the O'Brien–Fleming boundary of the
//! group-sequential comparison and the fixed-horizon sample size.
//!
//! Owns the honesty rules of `driftd simulate` (an alarm before the onset is an early false
//! alarm, never a detection; an undetected lifetime counts as a delay of ∞, not as a missing
//! value). Pure functions; must not run a detector.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::detect::sequential::normal_cdf;

/// What one method's first alarm on the drifted metric means in one lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// The alarm came before the drift started: a false alarm, whatever came after.
    Early,
    /// Events per arm from the onset (the first drifted event counts 1) to the alarm.
    Detected(u64),
    /// No alarm within the lifetime: a delay of ∞.
    Censored,
}

/// The outcome of a first alarm after `alarm` events per arm (`None`: none), the drift starting
/// at event index `onset` (0-based: events `0..onset` are undrifted).
pub fn classify(alarm: Option<u64>, onset: u64) -> Outcome {
    match alarm {
        None => Outcome::Censored,
        Some(n) if n <= onset => Outcome::Early,
        Some(n) => Outcome::Detected(n - onset),
    }
}

/// Summary of one method's outcomes over all lifetimes of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DelaySummary {
    /// Lifetimes.
    pub lifetimes: usize,
    /// Share detected (after the onset) within the lifetime.
    pub detected: f64,
    /// Share with an alarm before the onset (false alarms).
    pub early: f64,
    /// Median delay over all lifetimes, early and undetected ones counted as ∞; `None` when
    /// fewer than half were detected ("not reached").
    pub median: Option<u64>,
    /// 90th percentile, the same way.
    pub p90: Option<u64>,
    /// Bootstrap standard error of the median; `None` when a resample's median is not reached.
    pub median_se: Option<f64>,
    /// Share of lifetimes detected at exactly `floor` events (the `min_events` floor decided).
    pub at_floor: f64,
}

/// The `q` quantile (ceil-rank) of the delays, ∞ as `u64::MAX`; `None` if it is ∞.
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied().filter(|&v| v != u64::MAX)
}

/// Summarises `outcomes`: shares, censored median and p90, and the median's standard error
/// from `resamples` bootstrap resamples drawn with a fixed seed (deterministic).
pub fn summarise(outcomes: &[Outcome], floor: u64, resamples: usize) -> DelaySummary {
    let n = outcomes.len().max(1) as f64;
    let mut delays: Vec<u64> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Detected(d) => *d,
            _ => u64::MAX,
        })
        .collect();
    let share = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as f64 / n;
    let detected = share(&|o| matches!(o, Outcome::Detected(_)));
    let early = share(&|o| *o == Outcome::Early);
    let at_floor = share(&|o| *o == Outcome::Detected(floor));
    let mut rng = SmallRng::seed_from_u64(0x5eed_0014);
    let mut medians = Vec::with_capacity(resamples);
    let mut sample = vec![0u64; delays.len()];
    for _ in 0..if delays.is_empty() { 0 } else { resamples } {
        for s in sample.iter_mut() {
            *s = delays[rng.random_range(0..delays.len())];
        }
        let mid = ((0.5 * sample.len() as f64).ceil() as usize).max(1) - 1;
        medians.push(*sample.select_nth_unstable(mid).1);
    }
    let median_se = (!delays.is_empty() && medians.iter().all(|&m| m != u64::MAX)).then(|| {
        let k = medians.len().max(1) as f64;
        let mean = medians.iter().map(|&m| m as f64).sum::<f64>() / k;
        (medians
            .iter()
            .map(|&m| (m as f64 - mean).powi(2))
            .sum::<f64>()
            / (k - 1.0).max(1.0))
        .sqrt()
    });
    delays.sort_unstable();
    DelaySummary {
        lifetimes: outcomes.len(),
        detected,
        early,
        median: quantile(&delays, 0.5),
        p90: quantile(&delays, 0.9),
        median_se,
        at_floor,
    }
}

/// `P(max_{k ≤ looks} S_k ≥ b)` for a random walk `S` of standard normal steps: the chance that
/// cumulative data crosses a boundary constant on the score scale at any of `looks` equally
/// spaced looks. The density of `S_k` on `S < b` is carried forward on a grid (Armitage,
/// McPherson & Rowe's recursion), with the normal kernel cut at ±9.
fn crossing_probability(b: f64, looks: usize) -> f64 {
    let lo = -9.0 * (looks as f64).sqrt() - 9.0;
    // Cells of about 0.04 that end exactly at b: the midpoint rule then sees the density's
    // cut where it is.
    let points = ((b - lo) / 0.04).ceil() as usize;
    let h = (b - lo) / points as f64;
    let xs: Vec<f64> = (0..points).map(|j| lo + (j as f64 + 0.5) * h).collect();
    let phi = |x: f64| (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mut density: Vec<f64> = xs.iter().map(|&x| phi(x)).collect();
    let mut crossed = 1.0 - normal_cdf(b);
    let reach = (9.0 / h) as usize;
    for _ in 1..looks {
        crossed += xs
            .iter()
            .zip(&density)
            .map(|(&y, &f)| f * h * (1.0 - normal_cdf(b - y)))
            .sum::<f64>();
        density = (0..points)
            .map(|i| {
                let from = i.saturating_sub(reach);
                let to = (i + reach).min(points - 1);
                (from..=to)
                    .map(|j| density[j] * phi(xs[i] - xs[j]) * h)
                    .sum()
            })
            .collect();
    }
    crossed
}

/// The O'Brien–Fleming constant `C` of a one-sided group-sequential test with `looks` equally
/// spaced looks at overall level `alpha`: reject at look `k` when the cumulative z-statistic is
/// at least `C·√(looks/k)`. Found by bisection of [`crossing_probability`] between the
/// single-look and the Bonferroni critical values.
pub fn obrien_fleming(looks: usize, alpha: f64) -> f64 {
    let looks = looks.max(1);
    let z = |p: f64| Normal::standard().inverse_cdf(1.0 - p);
    let root = (looks as f64).sqrt();
    let (mut lo, mut hi) = (z(alpha) / root, z(alpha / looks as f64));
    for _ in 0..30 {
        let c = (lo + hi) / 2.0;
        if crossing_probability(c * root, looks) > alpha {
            lo = c;
        } else {
            hi = c;
        }
    }
    (lo + hi) / 2.0
}

/// Events per arm a single fixed-horizon test needs to detect a change of a mean from `mu0` to
/// `mu1` with power `power` at one-sided level `alpha`: the two-proportion z-test for rates
/// (`sd` `None`; pooled variance under the null), the z-test with per-event standard deviation
/// `sd` otherwise.
pub fn fixed_horizon_n(mu0: f64, mu1: f64, sd: Option<f64>, alpha: f64, power: f64) -> u64 {
    let z = |p: f64| Normal::standard().inverse_cdf(p);
    let (za, zb) = (z(1.0 - alpha), z(power));
    let delta = (mu1 - mu0).abs();
    let n = match sd {
        None => {
            let pbar = (mu0 + mu1) / 2.0;
            let null = (2.0 * pbar * (1.0 - pbar)).sqrt();
            let alt = (mu0 * (1.0 - mu0) + mu1 * (1.0 - mu1)).sqrt();
            ((za * null + zb * alt) / delta).powi(2)
        }
        Some(sd) => 2.0 * ((za + zb) * sd / delta).powi(2),
    };
    n.ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_before_the_onset_is_early_and_delays_count_from_the_onset() {
        assert_eq!(classify(Some(100), 25_000), Outcome::Early);
        assert_eq!(classify(Some(25_000), 25_000), Outcome::Early);
        assert_eq!(classify(Some(25_001), 25_000), Outcome::Detected(1));
        assert_eq!(classify(Some(25_600), 25_000), Outcome::Detected(600));
        assert_eq!(classify(Some(300), 0), Outcome::Detected(300));
        assert_eq!(classify(None, 0), Outcome::Censored);
    }

    /// Ten lifetimes: delays 100..=500 in five, two early, three undetected. Over all ten
    /// (early and undetected = ∞) the median is the 5th smallest, 500, and p90 is ∞; the
    /// median of the detected ones alone (300) would flatter. With four detected of ten the
    /// median is not reached, and neither is any resample's often enough to give an SE.
    #[test]
    fn medians_cover_every_lifetime_with_undetected_ones_censored() {
        let mut o: Vec<Outcome> = (1..=5).map(|k| Outcome::Detected(100 * k)).collect();
        o.extend([Outcome::Early, Outcome::Early]);
        o.extend([Outcome::Censored; 3]);
        let s = summarise(&o, 300, 200);
        assert_eq!(s.median, Some(500));
        assert_eq!(s.p90, None);
        assert!((s.detected - 0.5).abs() < 1e-12 && (s.early - 0.2).abs() < 1e-12);
        assert!((s.at_floor - 0.1).abs() < 1e-12);
        assert_eq!(s.median_se, None, "some resamples' medians are ∞");
        o[4] = Outcome::Censored;
        assert_eq!(summarise(&o, 300, 200).median, None, "not reached");
        // A scenario run with no lifetimes (`--runs 0`, to time the A/A alone) has no median.
        assert_eq!(summarise(&[], 300, 200).median, None);
    }

    /// All detected at 1..=1000: the median is 500; the bootstrap SE of a median of a uniform
    /// sample of 1,000 is about `√(1/(4n))/f = 0.0158 × 1000 ≈ 16` (density f = 1/1000), and
    /// the same seed gives the same SE.
    #[test]
    fn the_median_has_a_bootstrap_standard_error() {
        let o: Vec<Outcome> = (1..=1000).map(Outcome::Detected).collect();
        let s = summarise(&o, 0, 400);
        assert_eq!(s.median, Some(500));
        assert_eq!(s.p90, Some(900));
        let se = s.median_se.expect("finite");
        assert!((10.0..24.0).contains(&se), "{se}");
        assert_eq!(summarise(&o, 0, 400).median_se, Some(se));
    }

    /// One look is the plain one-sided test; five looks at one-sided 0.025 match the
    /// two-sided 0.05 O'Brien–Fleming constant of Jennison & Turnbull's table 2.3 (2.040; the
    /// chance of crossing both ways is negligible), two looks 1.977.
    #[test]
    fn obrien_fleming_constants_match_the_tables() {
        assert!((obrien_fleming(1, 0.025) - 1.959_964).abs() < 1e-3);
        let two = obrien_fleming(2, 0.025);
        println!("C(2) = {two}, C(5) = {}", obrien_fleming(5, 0.025));
        assert!((two - 1.977).abs() < 2e-3, "{two}");
        assert!((obrien_fleming(5, 0.025) - 2.040).abs() < 2e-3);
    }

    /// 5% → 7% at one-sided 0.0025 and 90% power: z = 2.8070 and 1.2816, pooled
    /// `√(2·0.06·0.94) = 0.33586`, `√(0.0475 + 0.0651) = 0.33556`, so
    /// `n = ((2.8070·0.33586 + 1.2816·0.33556)/0.02)² = 4,711.4` → 4,712.
    #[test]
    fn fixed_horizon_sample_size_by_hand() {
        let n = fixed_horizon_n(0.05, 0.07, None, 0.0025, 0.9);
        assert_eq!(n, 4_712);
        // Means: 2·((2.8070 + 1.2816)·0.3/0.075)² = 535.0.
        let t = fixed_horizon_n(0.3, 0.225, Some(0.3), 0.0025, 0.9);
        assert_eq!(t, 535);
    }
}
