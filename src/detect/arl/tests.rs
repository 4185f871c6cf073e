use super::*;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The standard-normal chart `S = max(0, S + X − k)`, `X ~ N(0, 1)`.
fn standard(k: f64) -> Increments {
    Increments::Normal { mean: -k, sd: 1.0 }
}

/// Published in-control ARLs of the standardised tabular CUSUM with k = 0.5 (Montgomery,
/// *Introduction to Statistical Quality Control*, table 9.3; Lucas & Crosier 1982): h = 4 → 168,
/// h = 5 → 465. Those are for the **two-sided** scheme (an upper and a lower chart, alarm on
/// either); by symmetry each one-sided chart has twice that run length, 336 and 930, which is
/// what Siegmund's approximation `(e^{2k(h+1.166)} − 1 − 2k(h+1.166))/(2k²)` gives too
/// (338, 938).
#[test]
fn gaussian_matches_published_arls() {
    let a4 = arl(standard(0.5), 4.0);
    let a5 = arl(standard(0.5), 5.0);
    println!("one-sided ARL0(k=0.5, h=4) = {a4:.1}, (h=5) = {a5:.1}");
    assert!((a4 / 336.0 - 1.0).abs() < 0.01, "{a4}");
    assert!((a5 / 930.0 - 1.0).abs() < 0.01, "{a5}");
}

/// The discretisation converges as about `1/N²`: the extrapolated ARL on the default grid is
/// within 1% of a grid eight times finer (1% of ARL is 0.01 in a threshold), for both kinds of
/// increments. The fine grid costs `O(N·bandwidth²)` many times over, so the charts are short.
#[test]
fn grid_converges() {
    for (inc, h) in [
        (standard(0.5), 5.0),
        (Increments::bernoulli(0.05, 0.05, 0.07), 6.0),
        (Increments::bernoulli(0.02, 0.02, 0.07), 8.0),
        (Increments::gaussian(0.3, 0.3, 0.3, 0.3, -0.1), 8.0),
    ] {
        let n = inc.states(h);
        let (coarse, fine, finest) = (
            arl_on_grid(inc, h, n / 2),
            arl_on_grid(inc, h, n),
            arl_on_grid(inc, h, 8 * n),
        );
        let extrapolated = arl(inc, h);
        println!(
            "{inc:?} h={h}: N/2 {coarse:.4e}, N={n} {fine:.4e}, extrapolated {extrapolated:.4e}, 8N {finest:.4e}"
        );
        assert!(
            (extrapolated / finest - 1.0).abs() < 0.01,
            "{inc:?}: {extrapolated} vs {finest}"
        );
    }
}

/// Direct simulation of the chart (fixed seed) agrees with the Markov chain.
#[test]
fn agrees_with_monte_carlo() {
    let mut rng = SmallRng::seed_from_u64(7);
    for (p, p0, p1, h) in [(0.05, 0.05, 0.10, 4.0), (0.10, 0.05, 0.10, 6.0)] {
        let inc = Increments::bernoulli(p, p0, p1);
        let Increments::TwoPoint { up, down, .. } = inc else {
            unreachable!()
        };
        let runs = 4000;
        let mut total = 0u64;
        for _ in 0..runs {
            let mut s: f64 = 0.0;
            let mut t = 0u64;
            while s < h {
                t += 1;
                s = (s + if rng.random_bool(p) { up } else { down }).max(0.0);
            }
            total += t;
        }
        let mc = total as f64 / f64::from(runs);
        let exact = arl(inc, h);
        println!("p={p} h={h}: exact {exact:.1}, Monte Carlo {mc:.1} over {runs} runs");
        // The run length is close to geometric: sd ≈ mean, so the MC mean has a relative sd of
        // 1/√runs ≈ 1.6%; 5% is three of them.
        assert!((mc / exact - 1.0).abs() < 0.05, "exact {exact}, mc {mc}");
    }
}

#[test]
fn threshold_inverts_arl() {
    for (inc, arl0) in [
        (standard(0.5), 930.0),
        (Increments::bernoulli(0.05, 0.05, 0.07), 1e9),
        (Increments::gaussian(0.3, 0.3, 0.3, 0.3, -0.25), 1e8),
    ] {
        let h = threshold_for_arl(inc, arl0);
        let got = arl(inc, h);
        assert!(
            got >= arl0 && got < arl0 * 1.01,
            "{inc:?}: h {h}, ARL {got}"
        );
    }
    assert!((threshold_for_arl(standard(0.5), 930.0) - 5.0).abs() < 0.01);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// ARL grows with the threshold and falls as the true rate rises.
    #[test]
    fn arl_is_monotone(p0 in 0.01f64..0.3, shift in 0.005f64..0.1, h in 1.0f64..8.0) {
        let p1 = (p0 + shift).min(0.99);
        let at = |p: f64, h: f64| arl(Increments::bernoulli(p, p0, p1), h);
        prop_assert!(at(p0, h) < at(p0, h + 0.5));
        prop_assert!(at(p1, h) < at(p0, h));
        prop_assert!(at(p0, h) >= 1.0);
    }
}
